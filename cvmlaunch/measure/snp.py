"""SEV-SNP launch digest (GCTX.LD): the SHA-384 chain over one PAGE_INFO per 4 KiB page.

SNP ABI 56860, SNP_LAUNCH_UPDATE: LD' = SHA-384(PAGE_INFO(LD, CONTENTS, TYPE, GPA)), where
CONTENTS is SHA-384 of the page for NORMAL and VMSA pages and 48 zero bytes otherwise.
"""

from __future__ import annotations

from hashlib import sha384

from cvmlaunch.abi.snp import LD_SIZE, PAGE_SIZE, ZERO_CONTENTS, PageType, page_info
from cvmlaunch.measure.trace import TraceStep
from cvmlaunch.plan.ops import LaunchPlan, OpKind, PageOp


def snp_digest(plan: LaunchPlan, trace: list[TraceStep] | None = None) -> bytes:
    """The launch digest of `plan`; appends one TraceStep per page to `trace` if given."""
    ld = bytes(LD_SIZE)
    for op in plan.ops:
        if op.kind is OpKind.FIRMWARE and plan.firmware_digest is not None:
            ld = plan.firmware_digest
            if trace is not None:
                trace.append(
                    TraceStep(
                        len(trace),
                        op.kind,
                        "firmware (precomputed digest)",
                        op.gpa,
                        op.size,
                        op.page_type,
                        ZERO_CONTENTS,
                        ld,
                    )
                )
            continue
        ld = update(ld, op, trace)
    return ld


def firmware_digest(plan: LaunchPlan) -> bytes:
    """The launch digest after the firmware pages alone (the precomputable prefix)."""
    ld = bytes(LD_SIZE)
    for op in plan.ops:
        if op.kind is OpKind.FIRMWARE:
            ld = update(ld, op, None)
    return ld


def update(ld: bytes, op: PageOp, trace: list[TraceStep] | None) -> bytes:
    """Extend `ld` with every 4 KiB page of `op`, in ascending GPA order."""
    data = memoryview(op.data) if op.data is not None else None
    measured = op.page_type.measures_contents
    for offset in range(0, op.size, PAGE_SIZE):
        if measured and data is not None:
            contents = sha384(data[offset : offset + PAGE_SIZE]).digest()
        else:
            contents = ZERO_CONTENTS
        gpa = op.gpa + offset
        ld = sha384(page_info(ld, contents, op.page_type, gpa)).digest()
        if trace is not None:
            trace.append(
                TraceStep(
                    len(trace), op.kind, op.label, gpa, PAGE_SIZE, op.page_type, contents, ld
                )
            )
    return ld
