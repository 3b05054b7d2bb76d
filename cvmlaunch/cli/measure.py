"""`cvmlaunch measure`: the launch measurement the platform will report."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch import log
from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text
from cvmlaunch.guest.argtypes import hex_bytes_any
from cvmlaunch.guest.flags import add_guest_arguments, spec_from_args

_log = log.get_logger("cvmlaunch.cli")


def add_arguments(m: argparse.ArgumentParser) -> None:
    m.description = (
        "Compute the launch measurement the platform will report. Flags override the "
        "profile; with neither, the embedded default profile is measured."
    )
    m.add_argument("profile", nargs="?", type=Path, help="guest profile (TOML)")
    add_guest_arguments(m)
    o = m.add_argument_group("output")
    o.add_argument("--expect", type=hex_bytes_any, metavar="HEX", help="exit 1 unless equal")
    o.add_argument("--json", action="store_true", help="one JSON object on stdout")
    o.add_argument("--trace", action="store_true", help="every measured step")
    m.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.measure import measure
    from cvmlaunch.plan import build_plan

    spec = spec_from_args(args)
    plan = build_plan(spec)
    result = measure(plan, trace=args.trace)
    _log.info("measure.done", technology=str(spec.technology), measurement=result.digest.hex())
    match = None if args.expect is None else args.expect == result.digest
    if args.json:
        from cvmlaunch.measure.document import measurement_json

        doc = measurement_json(plan, result)
        if args.expect is not None:
            doc.update(expected=args.expect.hex(), match=match)
        print(json_text(doc))
    else:
        from cvmlaunch.cli.render import measurement_text

        print(measurement_text(plan, result, args.expect))
    return EXIT_MISMATCH if match is False else EXIT_OK
