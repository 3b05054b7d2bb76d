"""`cvmlaunch solve`: every configuration that reproduces an observed measurement."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch import log
from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.argtypes import hex_bytes_any, integer
from cvmlaunch.guest.flags import (
    add_guest_arguments,
    default_base,
    refuse_launch_secret,
    spec_from_args,
)
from cvmlaunch.guest.spec import Technology

_log = log.get_logger("cvmlaunch.cli")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Find every configuration that reproduces an observed measurement: vCPU counts, CPU "
        "models, VMM flavours, guest features (SNP); page order, raw-data tail and memory "
        "size (TDX). Firmware, kernel, initrd and command line come from the profile or "
        "flags; any guest flag given fixes that field. Exit 0 if found, 1 if not."
    )
    p.add_argument("--measurement", type=hex_bytes_any, required=True, metavar="HEX")
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    add_guest_arguments(p)
    p.add_argument("--max-vcpus", type=integer, default=64, metavar="N", help="default 64")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.abi.cpu import models_with_signature
    from cvmlaunch.analysis.space import fixed_fields, fold, placeholders, search_axes, solve
    from cvmlaunch.guest.fields import BY_FLAG
    from cvmlaunch.guest.profile import profile_document, toml_text
    from cvmlaunch.measure.sweep import point_doc, point_text

    fixed = fixed_fields([f for f in BY_FLAG if getattr(args, _dest(f)) is not None])
    refuse_launch_secret(args, "solve")
    default_base(args)
    if args.profile is None:
        # Flags alone: placeholders for what the search varies anyway.
        for flag, value in placeholders(args.technology, fixed).items():
            setattr(args, _dest(flag), value)
    base = spec_from_args(args)
    size = 32 if base.technology in (Technology.SEV, Technology.SEV_ES) else 48
    if len(args.measurement) != size:
        reason = f"a {base.technology} launch digest is {size} bytes ({2 * size} hex digits)"
        raise ProfileError([FieldProblem("--measurement", reason)])
    if args.max_vcpus < 1:
        raise ProfileError([FieldProblem("--max-vcpus", "expected at least 1")])
    axes = search_axes(base, fixed=fixed, max_vcpus=args.max_vcpus)
    found = fold(solve(args.measurement, base, axes), axes, base, fixed=fixed)
    _log.info("solve.done", solutions=len(found), fixed=sorted(fixed))
    solutions = []
    for spec, free in found:
        # A free field is written with the profile's value: any value of its axis does.
        models = models_with_signature(spec.cpu.signature) if spec.cpu is not None else ()
        text = toml_text(profile_document(spec, f"reproduces {args.measurement.hex()}"))
        solutions.append((spec, free, models, text))
    if args.json:
        doc = {
            "measurement": args.measurement.hex(),
            "fixed": sorted(fixed),
            "solutions": [
                {
                    "config": point_doc(spec, free),
                    "any": list(free),
                    "cpu_models": list(models),
                    "profile": text,
                }
                for spec, free, models, text in solutions
            ],
        }
        print(json_text(doc))
    else:
        print(f"{len(solutions)} configuration(s) reproduce {args.measurement.hex()}")
        for spec, free, models, text in solutions:
            also = f" (also {', '.join(models[1:])})" if len(models) > 1 else ""
            anything = f"; any {', '.join(free)} (not in the digest)" if free else ""
            print(f"\n# {point_text(spec, free)}{also}{anything}")
            print(text, end="")
    return EXIT_OK if solutions else EXIT_MISMATCH


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")
