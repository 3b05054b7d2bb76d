"""`cvmlaunch launch`: create the VM, populate and measure it, and compare."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text
from cvmlaunch.guest.flags import default_profile


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Create the VM through /dev/kvm (or the emulated kernel), populate and measure the "
        "initial image with map_memory, finalize, and compare the platform's measurement "
        "with the expected one. Exit 0 on match or unattested, 1 on mismatch or failure."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    p.add_argument(
        "--backend",
        choices=["auto", "kvm", "sim", "rehearsal"],
        default="auto",
        help="auto: kvm when this kernel offers the profile's VM type, else sim",
    )
    p.add_argument(
        "--sim-host",
        choices=["snp", "tdx", "rfc"],
        help="host the emulated kernel plays (default: snp, or tdx for a TD)",
    )
    p.add_argument("--record", type=Path, help="write the launch record (JSON) here")
    p.add_argument("--json", action="store_true", help="print the launch record")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import hashlib

    from cvmlaunch.guest.profile import load_profile, read_profile
    from cvmlaunch.launch import Backend, Verdict, launch
    from cvmlaunch.launch.record import dumps
    from cvmlaunch.outputs import check_output, write_output
    from cvmlaunch.plan import build_plan

    path = args.profile if args.profile is not None else default_profile()
    data = read_profile(path)  # once: the record's SHA-256 is of the bytes launched
    spec = load_profile(path, data).to_spec()
    inputs = [path, *spec.files()]
    if args.record is not None:
        check_output(args.record, name="--record", inputs=inputs)
    record = launch(build_plan(spec), Backend(args.backend), sim_host=args.sim_host)
    doc = {"profile": {"path": str(path), "sha256": hashlib.sha256(data).hexdigest()}} | record.doc
    if args.record is not None:
        write_output(args.record, dumps(doc).encode(), name="--record", inputs=inputs)
    if args.json:
        print(json_text(doc))
    else:
        print(f"verdict:   {record.verdict} (backend {record.backend}: {record.reason})")
        print(f"expected:  {record.expected.hex()}")
        print(f"reported:  {record.reported.hex() if record.reported else '-'}")
        divergence = record.doc.get("divergence")
        if isinstance(divergence, dict):
            print(f"diverged:  {_divergence_text(divergence)}")
    return EXIT_MISMATCH if record.verdict is Verdict.MISMATCH else EXIT_OK


def _divergence_text(divergence: dict[str, object]) -> str:
    """Where a mismatched launch first left the plan, and why, on one line."""
    where = f"step {divergence['step']}"
    if "label" in divergence:
        where += f" ({divergence['label']})"
    reason = divergence.get("reason")
    if reason is None:
        reason = f"the plan has {divergence['expected']}, the kernel got {divergence['actual']}"
    return f"{where}: {reason}"
