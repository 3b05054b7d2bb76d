"""LaunchPlan construction: firmware + guest spec -> ordered page operations."""

from __future__ import annotations

from cvmlaunch.guest.spec import GuestSpec, Technology
from cvmlaunch.plan.ops import KernelHashes, LaunchPlan, PageOp, Plan, TdPageOp, TdPlan
from cvmlaunch.plan.sev import build_sev_plan
from cvmlaunch.plan.step import StepKind


def build_plan(spec: GuestSpec, firmware: bytes | None = None) -> Plan:
    """The plan for `spec` (a LaunchPlan, or a TdPlan for tdx); `firmware` gives the image
    bytes instead of reading the file."""
    spec = spec.check()  # a plain string where an enum belongs is converted, not mismeasured
    if spec.technology is Technology.TDX:
        # Imported here: the TDVF parser and TD HOB writer stay out of every other start-up.
        from cvmlaunch.plan.tdx import build_td_plan

        return build_td_plan(spec, firmware)
    if spec.igvm is not None:
        from cvmlaunch.plan.igvm import build_igvm_plan

        return build_igvm_plan(spec, firmware)
    return build_sev_plan(spec, firmware)


__all__ = [
    "KernelHashes",
    "LaunchPlan",
    "PageOp",
    "Plan",
    "StepKind",
    "TdPageOp",
    "TdPlan",
    "build_plan",
    "build_sev_plan",
]
