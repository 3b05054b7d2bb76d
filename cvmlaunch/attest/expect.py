"""What a report or quote must say: the expectations an audit validates against.

They come from a profile (the measurement computed by `measure/`, the launch parameters it
fixes) and/or from flags. A field left as None is not checked; `allow_debug` is the only
claim checked by default, because a debuggable guest's memory is open to the host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from cvmlaunch.errors import AttestationError
from cvmlaunch.guest.spec import GuestSpec, Technology

REPORT_DATA_SIZE = 64
TEE_TCB_SVN_SIZE = 16
# TCB_VERSION components (AMD SEV-SNP ABI 56860, TCB_VERSION); fmc exists from Turin on.
SNP_TCB_COMPONENTS = ("fmc", "bl", "tee", "snp", "ucode")


class Expectations(NamedTuple):
    """Expected claims. SNP MEASUREMENT and TDX MRTD share `measurement`."""

    measurement: bytes | None = None
    report_data: bytes | None = None
    allow_debug: bool = False
    # SEV-SNP
    policy: int | None = None
    host_data: bytes | None = None
    vmpl: int | None = None
    min_tcb: Mapping[str, int] | None = None
    # SEV-SNP ID block (SNP_LAUNCH_FINISH): who signed the launch, and what they named it.
    family_id: bytes | None = None
    image_id: bytes | None = None
    id_key_digest: bytes | None = None
    author_key_digest: bytes | None = None
    min_guest_svn: int | None = None
    # TDX
    td_attributes: int | None = None
    xfam: int | None = None
    mrconfigid: bytes | None = None
    mrowner: bytes | None = None
    mrownerconfig: bytes | None = None
    rtmrs: Mapping[int, bytes] | None = None
    mrseam: bytes | None = None
    min_tee_tcb_svn: bytes | None = None


# The expectations only one kind of evidence carries a claim for.
_ONLY_FOR = {
    "SEV-SNP": (
        *("policy", "host_data", "vmpl", "min_tcb", "family_id", "image_id"),
        *("id_key_digest", "author_key_digest", "min_guest_svn"),
    ),
    "TDX": (
        *("td_attributes", "xfam", "mrconfigid", "mrowner", "mrownerconfig"),
        *("rtmrs", "mrseam", "min_tee_tcb_svn"),
    ),
}


def refuse_others(expect: Expectations, evidence: str) -> None:
    """AttestationError if `expect` sets a field that `evidence` ("SEV-SNP" or "TDX") has
    no claim for: a check that cannot run must not pass silently."""
    for kind, fields in _ONLY_FOR.items():
        for field in fields:
            if kind != evidence and getattr(expect, field) is not None:
                article = "an" if kind.startswith("S") else "a"
                raise AttestationError(
                    f"{field}: {article} {kind} expectation; {evidence} evidence has no such claim"
                )


def report_data(value: bytes) -> bytes:
    """REPORT_DATA/REPORTDATA as the guest supplies it: up to 64 bytes, zero-padded (a
    32-byte nonce or hash is the common case)."""
    if len(value) > REPORT_DATA_SIZE:
        raise AttestationError(f"report data: expected at most 64 bytes, got {len(value)}")
    return value.ljust(REPORT_DATA_SIZE, b"\0")


def parse_snp_min_tcb(text: str) -> dict[str, int]:
    """`bl=3,tee=0,snp=8,ucode=115` (any subset; `fmc=` for Turin) as component minimums."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if (
            not eq
            or name not in SNP_TCB_COMPONENTS
            or not re.fullmatch("[0-9]{1,3}", value)
            or int(value) > 255
        ):
            raise AttestationError(
                f"--min-tcb: expected COMPONENT=0..255 with COMPONENT one of "
                f"{', '.join(SNP_TCB_COMPONENTS)}, got {part!r}"
            )
        if name in out:
            raise AttestationError(f"--min-tcb: {name} given twice; give each component once")
        out[name] = int(value)
    if not out:
        raise AttestationError("--min-tcb: no component given")
    return out


def parse_tee_tcb_svn(text: str) -> bytes:
    """A TDX TEE_TCB_SVN minimum: 16 bytes as 32 hex digits, compared byte by byte."""
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        value = b""
    if len(value) != TEE_TCB_SVN_SIZE:
        raise AttestationError(f"--min-tcb: expected TEE_TCB_SVN as 32 hex digits, got {text!r}")
    return value


def for_spec(spec: GuestSpec, measurement: bytes) -> Expectations:
    """What a guest launched from `spec` must report: its launch `measurement` (from
    `measure/`), and the launch parameters the platform puts in the report."""
    if spec.technology in (Technology.SEV_SNP, Technology.TDX):
        return Expectations(measurement, **spec.expectations())
    raise AttestationError(f"a {spec.technology} guest has no attestation report to audit")
