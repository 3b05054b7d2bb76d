"""`cvmlaunch qemu`: the QEMU arguments that boot exactly the measured guest."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(m: argparse.ArgumentParser) -> None:
    m.description = (
        "Print the QEMU arguments (after the binary) that boot exactly the guest the profile "
        "measures, for the QEMU version it names ([qemu] version) or --qemu-version."
    )
    m.add_argument("profile", nargs="?", type=Path, help="guest profile (TOML)")
    m.add_argument("--qemu-version", metavar="X.Y", help="the QEMU that boots it")
    m.add_argument(
        "--format",
        choices=("shell", "json", "qmp"),
        default="shell",
        help="one shell-quoted line (default), a JSON array, or QMP object-add of the "
        "confidential-guest object",
    )
    m.add_argument(
        "--json", action="store_true", help="one JSON object: argv, object, qemu_version"
    )
    m.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import shlex

    from cvmlaunch.cli.common import EXIT_OK, json_text
    from cvmlaunch.guest.flags import default_profile
    from cvmlaunch.guest.profile import load_profile
    from cvmlaunch.guest.qemu import confidential_object, qemu_args, qemu_version_of

    spec = load_profile(args.profile or default_profile()).to_spec()
    version = qemu_version_of(spec, args.qemu_version)
    signed = None
    if spec.id_block is not None:  # signed (or checked) over the digest, once for both forms
        from cvmlaunch.measure.idblock import signed_for

        found = signed_for(spec)
        signed = None if found is None else found.parts
    argv = qemu_args(spec, version=version, id_block=signed)
    obj = confidential_object(spec, version=version, id_block=signed)
    if args.json:
        print(json_text({"argv": argv, "object": obj, "qemu_version": version}))
    elif args.format == "json":
        print(json.dumps(argv))
    elif args.format == "qmp":
        print(json.dumps({"execute": "object-add", "arguments": obj}))
    else:
        print(shlex.join(argv))
    return EXIT_OK
