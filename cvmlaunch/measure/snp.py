"""SEV-SNP launch digest (GCTX.LD): the SHA-384 chain over one PAGE_INFO per 4 KiB page.

SNP ABI 56860, SNP_LAUNCH_UPDATE: LD' = SHA-384(PAGE_INFO(LD, CONTENTS, TYPE, GPA)), where
CONTENTS is SHA-384 of the page for NORMAL and VMSA pages and 48 zero bytes otherwise.
`extend` is that one step; the per-plan engine here and the sweep over many configurations
(measure/sweep.py) both chain through it, so the rule is written once.
"""

from __future__ import annotations

from hashlib import sha384

from cvmlaunch.abi.snp import (
    LD_SIZE,
    PAGE_INFO,
    PAGE_INFO_SIZE,
    PAGE_SIZE,
    ZERO_CONTENTS,
    PageType,
)
from cvmlaunch.firmware.ovmf import OvmfImage
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.ops import LaunchPlan, PageOp
from cvmlaunch.plan.step import Step, StepKind


class SnpDigests(NamedTuple):
    """The final launch digest and the digest right after the firmware pages."""

    launch_digest: bytes
    firmware_digest: bytes


def snp_digest(plan: LaunchPlan, trace: list[Step] | None = None) -> SnpDigests:
    """The launch digest of `plan`; appends one Step per page to `trace` if given."""
    ld = bytes(LD_SIZE)
    after_firmware = ld
    for op in plan.ops:
        if op.kind is StepKind.FIRMWARE and plan.firmware_digest is not None:
            ld = plan.firmware_digest
            if trace is not None:
                label = "firmware (precomputed digest)"
                step = op.step(len(trace), op.gpa, op.size, contents=ZERO_CONTENTS, digest=ld)
                trace.append(step._replace(label=label))
        else:
            ld = update(ld, op, trace)
        if op.kind is StepKind.FIRMWARE:
            after_firmware = ld
    return SnpDigests(ld, after_firmware)


def firmware_pages_digest(image: OvmfImage) -> bytes:
    """The launch digest after `image`'s pages, which every SNP launch of it starts with (a
    profile's firmware.digest)."""
    op = PageOp(StepKind.FIRMWARE, image.gpa, image.size, PageType.NORMAL, image.data, "firmware")
    return update(bytes(LD_SIZE), op, None)


def update(ld: bytes, op: PageOp, trace: list[Step] | None) -> bytes:
    """Extend `ld` with every 4 KiB page of `op`, in ascending GPA order."""
    # The hot loop of every SNP measurement: 512 iterations for a 2 MiB image.
    page_type = op.page_type
    raw = op.data if op.data is not None else b""
    data = memoryview(raw)
    measured = page_type.measures_contents and op.data is not None
    contents = ZERO_CONTENTS
    for offset in range(0, op.size, PAGE_SIZE):
        if measured:
            # A quarter of an OVMF image is erased flash: one digest serves every such page.
            if raw.startswith(_ERASED_PAGE, offset):
                contents = _ERASED_CONTENTS
            else:
                contents = sha384(data[offset : offset + PAGE_SIZE]).digest()
        gpa = op.gpa + offset
        ld = extend(ld, contents, page_type, gpa)
        if trace is not None:
            trace.append(op.step(len(trace), gpa, PAGE_SIZE, contents=contents, digest=ld))
    return ld


_ERASED_PAGE = b"\xff" * PAGE_SIZE
_ERASED_CONTENTS = sha384(_ERASED_PAGE).digest()
_pack = PAGE_INFO.pack  # bound once: `extend` runs once per page of every measurement


def extend(ld: bytes, contents: bytes, page_type: PageType, gpa: int) -> bytes:
    """LD after measuring one 4 KiB page at `gpa` whose CONTENTS field is `contents`."""
    return sha384(_pack(ld, contents, PAGE_INFO_SIZE, page_type, 0, 0, 0, 0, 0, gpa)).digest()
