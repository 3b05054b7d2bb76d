"""What a launch hands the kernel, step by step, derived from the plan (the expectation).

The executor's transcript (`kvm.MapCall`s) and these steps have the same shape, so the first
step where they differ names where a mismatching launch went wrong.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from cvmlaunch.abi.kvm import PAGE_SHIFT
from cvmlaunch.plan.ops import LaunchPlan, OpKind, Plan, TdAction, TdPlan


class Step(NamedTuple):
    """One map_memory call: range, page type (or TDX action), and the source's SHA-256."""

    gpa: int
    pages: int
    page_type: str
    source: memoryview | None
    label: str

    def source_sha256(self) -> bytes | None:
        return hashlib.sha256(self.source).digest() if self.source is not None else None


def plan_steps(plan: Plan) -> list[Step]:
    """The map_memory calls `plan` asks for, in order (VMSAs and PAGE.AUG sections excluded)."""
    if isinstance(plan, TdPlan):
        return [
            Step(
                op.gpa,
                op.size >> PAGE_SHIFT,
                "page-add+extend" if op.action is TdAction.PAGE_ADD_EXTEND else "page-add",
                _full(op.data, op.size),
                op.label,
            )
            for op in plan.ops
            if op.action is not TdAction.PAGE_AUG
        ]
    return _sev_steps(plan)


def _sev_steps(plan: LaunchPlan) -> list[Step]:
    steps = []
    for op in plan.ops:
        if op.kind is OpKind.VMSA:
            continue
        data = memoryview(op.data) if op.data is not None else None
        steps.append(Step(op.gpa, op.size >> PAGE_SHIFT, op.page_type.name, data, op.label))
    return steps


def _full(prefix: memoryview | None, size: int) -> memoryview | None:
    """A TD section's initial contents: `prefix`, then zeros up to `size`."""
    if prefix is None:
        return None
    if len(prefix) == size:
        return prefix
    data = bytearray(size)
    data[: len(prefix)] = prefix
    return memoryview(data)
