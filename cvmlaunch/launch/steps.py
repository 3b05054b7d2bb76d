"""What a launch hands the kernel, step by step, derived from the plan (the expectation).

Each step is one map_memory call: its range, page type (or TDX action) and source. The
executor's transcript (`kvm.MapCall`s) has the same shape, so the first step where they
differ names where a mismatching launch went wrong.
"""

from __future__ import annotations

from cvmlaunch.abi.kvm import PAGE_SIZE
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
    # A step's size is what the platform measures: an SEV/SEV-ES kernel hashes table is 176
    # bytes (QEMU's PaddedSevHashTable), in one page (Step.pages rounds up), handed over
    # and measured as those bytes alone (executor.py: a partial page).
    ops = [op for op in plan.ops if op.kind is not StepKind.VMSA]
    return [
        Step(
            n,
            StepKind(op.kind),
            op.label,
            op.gpa,
            op.size,
            op.page_type,
            section=op.section,
            source=memoryview(op.data) if op.data is not None else None,
        )
        for n, op in enumerate(ops)
    ]


def partial(step: Step) -> bool:
    """Whether `step` measures part of a page (an SEV/SEV-ES kernel hashes table)."""
    return step.size % PAGE_SIZE != 0 or step.gpa % PAGE_SIZE != 0


def whole_pages(step: Step) -> Step:
    """`step` as the pages it lies in, its source padded with zeros around it: what a VM
    that populates whole pages (a rehearsal) is handed."""
    if not partial(step):
        return step
    start = step.gpa - step.gpa % PAGE_SIZE
    end = -(-(step.gpa + step.size) // PAGE_SIZE) * PAGE_SIZE
    source = None
    if step.source is not None:
        padded = bytearray(end - start)
        padded[step.gpa - start : step.gpa - start + step.size] = step.source
        source = memoryview(padded)
    return step._replace(gpa=start, size=end - start, source=source)


def _full(prefix: memoryview | None, size: int) -> memoryview | None:
    """A TD section's initial contents: `prefix`, then zeros up to `size`."""
    if prefix is None:
        return None
    if len(prefix) == size:
        return prefix
    data = bytearray(size)
    data[: len(prefix)] = prefix
    return memoryview(data)
