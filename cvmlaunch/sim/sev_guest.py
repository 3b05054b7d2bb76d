"""The SEV firmware's context of one guest: its state, policy and the launch digest it
accumulates (GCTX.LD for SNP; the SHA-256 stream and LAUNCH_MEASURE's HMAC for SEV/SEV-ES).

It knows nothing of the VM that holds it, so that the VM and the firmware commands that
create and drive it (psp.py) each import it without importing each other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from enum import Enum

from cvmlaunch.abi.idblock import IdAuth, IdBlock
from cvmlaunch.abi.kvm import VmType
from cvmlaunch.abi.snp import (
    LD_SIZE,
    PAGE_INFO,
    PAGE_INFO_SIZE,
    ZERO_CONTENTS,
    PageType,
    SevFeature,
)

# The firmware the emulated PSP runs (reported inside LAUNCH_MEASURE's HMAC).
API_MAJOR, API_MINOR, BUILD = 1, 55, 0
_MEASURE_CONTEXT = 0x04
_MEASURE_HEADER = struct.Struct("<BBBBI")
_MNONCE_SIZE = 16


class GuestState(Enum):
    """The firmware's guest states (SEV API "Guest States"; SNP has no LSECRET)."""

    INIT = "init"  # after KVM_SEV_INIT2, before LAUNCH_START
    LUPDATE = "launching"
    LSECRET = "measured"
    RUNNING = "running"


class SevGuest:
    """The firmware's guest context of one VM, and the launch digest it accumulates."""

    def __init__(self, vm_type: VmType, vmsa_features: int, handle: int) -> None:
        self.snp = vm_type is VmType.SNP
        self.es = vm_type is not VmType.SEV
        self.vmsa_features = vmsa_features | (1 << SevFeature.SNP_ACTIVE if self.snp else 0)
        self.handle = handle
        self.state = GuestState.INIT
        self.policy = 0
        self.host_data = bytes(32)  # SNP: from SNP_LAUNCH_FINISH, reported as HOST_DATA
        # SNP: the ID block SNP_LAUNCH_FINISH accepted (its key digests, FAMILY_ID, IMAGE_ID
        # and GUEST_SVN are reported).
        self.id_block: IdBlock | None = None
        self.id_auth: IdAuth | None = None
        self.fd: int | None = None  # the /dev/sev fd LAUNCH_START recorded
        self.ld = bytes(LD_SIZE)  # SNP: GCTX.LD
        self.sha256 = hashlib.sha256()  # SEV, SEV-ES: the running launch digest
        self.digest: bytes | None = None
        # Secrets an attestation verifier would share with the platform owner.
        self._tik = secrets.token_bytes(16)
        self._mnonce = secrets.token_bytes(_MNONCE_SIZE)

    def snp_measure(self, page_type: PageType, gpa: int, page: bytes) -> None:
        """Extend GCTX.LD with the PAGE_INFO of one page."""
        contents = hashlib.sha384(page).digest() if page_type.measures_contents else ZERO_CONTENTS
        info = PAGE_INFO.pack(self.ld, contents, PAGE_INFO_SIZE, page_type, 0, 0, 0, 0, 0, gpa)
        self.ld = hashlib.sha384(info).digest()

    def measure_blob(self) -> bytes:
        """LAUNCH_MEASURE's output: HMAC-SHA256(TIK, context ‖ versions ‖ policy ‖ LD ‖
        MNONCE), then MNONCE."""
        header = _MEASURE_HEADER.pack(_MEASURE_CONTEXT, API_MAJOR, API_MINOR, BUILD, self.policy)
        message = header + self.sha256.digest() + self._mnonce
        return hmac.digest(self._tik, message, "sha256") + self._mnonce
