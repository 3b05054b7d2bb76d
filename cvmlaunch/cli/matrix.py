"""`cvmlaunch matrix`: reference measurements over lists and ranges of configurations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvmlaunch.cli.common import EXIT_OK, json_text
from cvmlaunch.guest.flags import (
    add_guest_arguments,
    default_base,
    refuse_launch_secret,
    spec_from_args,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "The table of reference values: one measurement per combination of the listed "
        "values, e.g. --vcpus 1-64 --vcpu-type EPYC-Milan,EPYC-Genoa --vmm qemu,ec2."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    add_guest_arguments(p, multi=True)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object on stdout")
    out.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.space import MATRIX_FLAGS, axes_from_lists, matrix
    from cvmlaunch.measure.sweep import point_doc, point_text

    refuse_launch_secret(args, "matrix")
    lists = {flag: getattr(args, _dest(flag)) for flag in MATRIX_FLAGS}
    for flag, values in lists.items():  # the base spec takes each list's first value
        if values is not None:
            setattr(args, _dest(flag), values[0])
    default_base(args)
    base = spec_from_args(args)
    axes = axes_from_lists(base, lists)
    rows = matrix(base, axes, cloud_cpu=True)  # EC2 and GCE do not measure the CPU
    docs = [point_doc(row.spec) | {"measurement": row.measurement.hex()} for row in rows]
    if args.json:
        print(json_text({"technology": str(base.technology), "rows": docs}))
    elif args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(docs[0]) if docs else [])
        writer.writeheader()
        writer.writerows(docs)
    else:
        for row in rows:
            print(f"{row.measurement.hex()}  {point_text(row.spec)}")
    return EXIT_OK


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")
