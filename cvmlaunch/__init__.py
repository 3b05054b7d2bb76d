"""cvmlaunch: expected launch measurements of confidential VMs, computed from a guest profile.

    from cvmlaunch import load_profile, build_plan, measure
    plan = build_plan(load_profile(Path("profiles/debian-ovmf-qemu-snp.toml")).to_spec())
    print(measure(plan).digest.hex())

Every public name is imported from its module on first use, so `import cvmlaunch` (which
every `cvmlaunch.*` import runs first) loads nothing: a command loads only what it uses.
"""

from __future__ import annotations

import sys
from types import ModuleType

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on `import cvmlaunch`
if TYPE_CHECKING:
    from typing import Any

    from cvmlaunch.errors import (
        CvmlaunchError,
        FieldProblem,
        FirmwareError,
        InputError,
        ProfileError,
    )
    from cvmlaunch.guest.profile import Profile, load_profile, parse_profile
    from cvmlaunch.guest.spec import (
        BootFile,
        CpuSpec,
        DirectBoot,
        GuestSpec,
        IdBlockConfig,
        PageOrder,
        RawDataTail,
        SevLaunchSecretInputs,
        TdConfig,
        Technology,
        Vmm,
    )
    from cvmlaunch.measure import Measurement, Step, measure
    from cvmlaunch.plan import LaunchPlan, PageOp, Plan, TdPageOp, TdPlan, build_plan

__version__ = "0.1.0"

# Public name -> the module that defines it (`measure`: see _Package).
_SOURCES = {
    **dict.fromkeys(
        ("CvmlaunchError", "FieldProblem", "FirmwareError", "InputError", "ProfileError"),
        "cvmlaunch.errors",
    ),
    **dict.fromkeys(("Profile", "load_profile", "parse_profile"), "cvmlaunch.guest.profile"),
    **dict.fromkeys(
        (
            *("BootFile", "CpuSpec", "DirectBoot", "GuestSpec", "PageOrder", "RawDataTail"),
            *("IdBlockConfig", "SevLaunchSecretInputs", "TdConfig", "Technology", "Vmm"),
        ),
        "cvmlaunch.guest.spec",
    ),
    **dict.fromkeys(("Measurement", "Step"), "cvmlaunch.measure"),
    **dict.fromkeys(
        ("LaunchPlan", "PageOp", "Plan", "TdPageOp", "TdPlan", "build_plan"), "cvmlaunch.plan"
    ),
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'cvmlaunch' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(source), name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(ModuleType):
    """`cvmlaunch.measure` is the function, as when this package imported it eagerly, though
    the import system binds the subpackage of that name here when it first loads it."""

    @property
    def measure(self) -> Any:
        from cvmlaunch.measure import measure

        return measure

    @measure.setter
    def measure(self, _subpackage: ModuleType) -> None:
        pass


sys.modules[__name__].__class__ = _Package


__all__ = [
    "BootFile",
    "CpuSpec",
    "CvmlaunchError",
    "DirectBoot",
    "FieldProblem",
    "FirmwareError",
    "GuestSpec",
    "IdBlockConfig",
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
