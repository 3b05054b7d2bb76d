"""`cvmlaunch explain`: the measurement as runs of steps, with inputs and causes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cvmlaunch.cli.common import EXIT_OK, json_text
from cvmlaunch.guest.flags import default_profile

if TYPE_CHECKING:
    from cvmlaunch.guest.spec import GuestSpec
    from cvmlaunch.plan.ops import LaunchPlan


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Tell the measurement as a story: every measured step grouped into runs, each with "
        "its inputs, the profile fields that cause it, and the running digest at its end."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument(
        "--dump-vmsa",
        type=Path,
        metavar="DIR",
        help="sev-es, sev-snp: write each vCPU's measured VMSA page to DIR/vmsa<N>.bin, as "
        "sev-snp-measure --dump-vmsa does (DIR must exist)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.explain import explain
    from cvmlaunch.guest.profile import load_profile
    from cvmlaunch.plan import build_plan
    from cvmlaunch.plan.ops import LaunchPlan

    path = args.profile if args.profile is not None else default_profile()
    spec = load_profile(path).to_spec()
    inputs = [path, *spec.files()]
    if args.dump_vmsa is not None:
        _check_dump(args.dump_vmsa, spec, inputs)  # before the work
    plan = build_plan(spec)
    story = explain(plan)
    if args.dump_vmsa is not None and isinstance(plan, LaunchPlan):  # (a TD was refused)
        from cvmlaunch.outputs import write_output

        for name, page in _vmsa_pages(plan):
            write_output(args.dump_vmsa / name, page, name="--dump-vmsa", inputs=inputs)
    print(json_text(story.doc()) if args.json else story.text())
    return EXIT_OK


def _vmsa_file(vcpu: int) -> str:
    """sev-snp-measure's name for the VMSA page of `vcpu` (vmsa0.bin is the BSP's)."""
    return f"vmsa{vcpu}.bin"


def _check_dump(folder: Path, spec: GuestSpec, inputs: list[Path]) -> None:
    """Refuse --dump-vmsa for a guest without VMSAs, or a DIR that is not a directory, or a
    file in it that may not be replaced: before anything is measured or written."""
    import os

    from cvmlaunch.errors import FieldProblem, OutputError, ProfileError
    from cvmlaunch.guest.spec import Technology
    from cvmlaunch.outputs import check_output

    if spec.technology not in (Technology.SEV_ES, Technology.SEV_SNP):
        reason = f"only sev-es and sev-snp guests start from a VMSA, not {spec.technology}"
        raise ProfileError([FieldProblem("--dump-vmsa", reason)])
    if "\0" in str(folder):
        raise OutputError(f"--dump-vmsa {folder}", "a path cannot contain a NUL character")
    if not os.path.isdir(folder):
        what = "not a directory" if os.path.lexists(folder) else "no such directory"
        raise OutputError(f"--dump-vmsa {folder}", f"{what}; expected an existing directory")
    for vcpu in range(spec.vcpus):
        check_output(folder / _vmsa_file(vcpu), name="--dump-vmsa", inputs=inputs)


def _vmsa_pages(plan: LaunchPlan) -> list[tuple[str, bytes]]:
    """Each vCPU's VMSA page as measured, with its file name."""
    from cvmlaunch.plan.step import StepKind

    return [
        (_vmsa_file(op.vcpu), op.data)
        for op in plan.ops
        if op.kind is StepKind.VMSA and op.vcpu is not None and op.data is not None
    ]
