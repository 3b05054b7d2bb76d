"""What a launch hands the kernel, step by step, derived from the plan (the expectation).

Each step is one map_memory call: its range, page type (or TDX action) and source. The
executor's transcript (`kvm.MapCall`s) has the same shape, so the first step where they
differ names where a mismatching launch went wrong.
"""

from __future__ import annotations

from cvmlaunch.abi.kvm import PAGE_SHIFT
from cvmlaunch.plan.ops import LaunchPlan, Plan, TdPlan
from cvmlaunch.plan.step import Step, StepKind, TdAction


def plan_steps(plan: Plan) -> list[Step]:
    """The map_memory calls `plan` asks for, in order (VMSAs and PAGE.AUG sections excluded)."""
    if isinstance(plan, TdPlan):
        return [
            Step(
                n,
                StepKind.TD_SECTION,
                op.label,
                op.gpa,
                op.size,
                action=op.action,
                section=op.section,
                source=_full(op.data, op.size),
            )
            for n, op in enumerate(o for o in plan.ops if o.action is not TdAction.PAGE_AUG)
        ]
    return _sev_steps(plan)


def _sev_steps(plan: LaunchPlan) -> list[Step]:
    ops = [op for op in plan.ops if op.kind is not StepKind.VMSA]
    return [
        Step(
            n,
            StepKind(op.kind),
            op.label,
            op.gpa,
            # Whole pages: map_memory populates pages.
            op.size >> PAGE_SHIFT << PAGE_SHIFT,
            op.page_type,
            section=op.section,
            source=memoryview(op.data) if op.data is not None else None,
        )
        for n, op in enumerate(ops)
    ]


def _full(prefix: memoryview | None, size: int) -> memoryview | None:
    """A TD section's initial contents: `prefix`, then zeros up to `size`."""
    if prefix is None:
        return None
    if len(prefix) == size:
        return prefix
    data = bytearray(size)
    data[: len(prefix)] = prefix
    return memoryview(data)
