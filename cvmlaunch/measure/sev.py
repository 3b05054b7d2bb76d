"""SEV and SEV-ES launch digest, and the LAUNCH_MEASURE value the SEV firmware reports.

SEV API 55766, LAUNCH_UPDATE_DATA / LAUNCH_UPDATE_VMSA: the firmware hashes the bytes of
every update into one running SHA-256 (GCTX.LD), with no GPA or page structure.
LAUNCH_MEASURE (section 6.5) reports HMAC-SHA256(TIK, 0x04 || API_MAJOR || API_MINOR ||
BUILD || POLICY || LD || MNONCE) followed by MNONCE.
`sev_stream` leaves that SHA-256 open, so that the sweep (measure/sweep.py) can copy it
after a prefix many configurations share instead of hashing the prefix again.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cvmlaunch.guest.spec import SevLaunchSecretInputs
from cvmlaunch.measure.sha256 import Sha256From
from cvmlaunch.plan.ops import LaunchPlan
from cvmlaunch.plan.step import Step, StepKind

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)

if TYPE_CHECKING:
    from hashlib import _Hash

_MEASURE_CONTEXT = 0x04
_MEASURE_HEADER = struct.Struct("<BBBBI")


def sev_digest(plan: LaunchPlan, trace: list[Step] | None = None) -> bytes:
    """SHA-256 over the data of every operation of `plan`, in order."""
    return sev_stream(plan, trace).digest()


def sev_stream(plan: LaunchPlan, trace: list[Step] | None = None) -> _Hash | Sha256From:
    """The running SHA-256 after every operation of `plan`, still open: the sweep copies
    the state after a shared prefix and extends it per configuration. A described firmware
    gives the state after its image, from which the rest is hashed."""
    described = plan.spec.firmware_descriptor
    ld: _Hash | Sha256From = hashlib.sha256()
    if described is not None and described.sha256_chaining is not None:
        ld = Sha256From(described.sha256_chaining, described.size)
    for op in plan.ops:
        if op.data is None or (described is not None and op.kind is StepKind.FIRMWARE):
            continue
        ld.update(op.data)
        if trace is not None:
            contents = hashlib.sha256(op.data).digest()
            digest = ld.copy().digest()
            trace.append(op.step(len(trace), op.gpa, op.size, contents=contents, digest=digest))
    return ld


def launch_measure(ld: bytes, policy: int, secret: SevLaunchSecretInputs) -> bytes:
    """The 32-byte MEASURE HMAC the platform returns from LAUNCH_MEASURE."""
    message = _MEASURE_HEADER.pack(
        _MEASURE_CONTEXT, secret.api_major, secret.api_minor, secret.build, policy
    )
    return hmac.digest(secret.tik, message + ld + secret.mnonce, "sha256")
