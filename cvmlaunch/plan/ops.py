"""The LaunchPlan: the ordered page operations of a launch, shared by measure and launch.

One plan drives both the expected digest (`measure/`) and the executor that hands the same
pages to the kernel, so the two cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from cvmlaunch.abi.snp import PageType
from cvmlaunch.abi.vmsa import SaveArea
from cvmlaunch.firmware.ovmf import OvmfImage
from cvmlaunch.spec import GuestSpec


class OpKind(StrEnum):
    """What a page operation puts into the guest, in terms a user recognises."""

    FIRMWARE = "firmware"
    SEV_METADATA = "sev-metadata"
    KERNEL_HASHES = "kernel-hashes"
    VMSA = "vmsa"


class PageOp(NamedTuple):
    """One launch update: `size` bytes at `gpa` of `page_type`, with contents when measured.

    `data` is exactly `size` bytes for NORMAL and VMSA operations and None otherwise (the
    platform measures only the type and GPA of zero, unmeasured, secrets and CPUID pages).
    """

    kind: OpKind
    gpa: int
    size: int
    page_type: PageType
    data: bytes | None
    label: str
    section: int | None = None
    vcpu: int | None = None
    state: SaveArea | None = None


class KernelHashes(NamedTuple):
    """SHA-256 digests of the measured direct-boot inputs, and the table they form."""

    kernel: bytes
    initrd: bytes
    cmdline: bytes
    table: bytes


class LaunchPlan(NamedTuple):
    """Everything a launch does to guest memory before the guest runs, in order.

    For sev-snp, `firmware_digest` (when given) is the precomputed launch digest after the
    firmware pages: it replaces measuring the FIRMWARE operation.
    """

    spec: GuestSpec
    firmware: OvmfImage
    firmware_sha256: bytes
    ops: tuple[PageOp, ...]
    kernel_hashes: KernelHashes | None
    firmware_digest: bytes | None
