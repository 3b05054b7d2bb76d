"""LaunchPlan construction: firmware + guest spec -> ordered page operations."""

from cvmlaunch.plan.ops import KernelHashes, LaunchPlan, OpKind, PageOp
from cvmlaunch.plan.sev import build_plan

__all__ = ["KernelHashes", "LaunchPlan", "OpKind", "PageOp", "build_plan"]
