"""cvmlaunch: expected launch measurements of confidential VMs, computed from a guest profile.

    from cvmlaunch import load_profile, build_plan, measure
    plan = build_plan(load_profile(Path("profiles/debian-ovmf-qemu-snp.toml")).to_spec())
    print(measure(plan).digest.hex())

The profile layer (pydantic) is imported on first use, so `import cvmlaunch` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cvmlaunch.errors import (
    CvmlaunchError,
    FieldProblem,
    FirmwareError,
    InputError,
    ProfileError,
)
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    PageOrder,
    RawDataTail,
    SevLaunchSecretInputs,
    TdConfig,
    Technology,
    Vmm,
)
from cvmlaunch.measure import Measurement, Step, measure
from cvmlaunch.plan import LaunchPlan, PageOp, Plan, TdPageOp, TdPlan, build_plan

if TYPE_CHECKING:
    from cvmlaunch.guest.profile import Profile, load_profile, parse_profile

__version__ = "0.1.0"

_LAZY = {"Profile", "load_profile", "parse_profile"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from cvmlaunch.guest import profile

        return getattr(profile, name)
    raise AttributeError(f"module 'cvmlaunch' has no attribute {name!r}")


__all__ = [
    "BootFile",
    "CpuSpec",
    "CvmlaunchError",
    "DirectBoot",
    "FieldProblem",
    "FirmwareError",
    "GuestSpec",
    "InputError",
    "LaunchPlan",
    "Measurement",
    "PageOp",
    "PageOrder",
    "Plan",
    "Profile",
    "ProfileError",
    "RawDataTail",
    "SevLaunchSecretInputs",
    "Step",
    "TdConfig",
    "TdPageOp",
    "TdPlan",
    "Technology",
    "Vmm",
    "build_plan",
    "load_profile",
    "measure",
    "parse_profile",
]
