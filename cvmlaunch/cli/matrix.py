"""`cvmlaunch matrix`: reference measurements over lists and ranges of configurations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvmlaunch.cli.common import EXIT_OK, json_text
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.flags import (
    add_guest_arguments,
    default_base,
    refuse_launch_secret,
    spec_from_args,
)
from cvmlaunch.guest.spec import CpuSpec, PageOrder, RawDataTail, Technology


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


# The flags `matrix` takes as lists.
_MATRIX_AXES = (
    *("vcpus", "vcpu_type", "vcpu_sig", "vmm", "guest_features"),
    *("tdx_page_order", "raw_data_tail", "memory_mib"),
)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.space import matrix
    from cvmlaunch.measure.sweep import Axes

    refuse_launch_secret(args, "matrix")
    lists = {name: getattr(args, name) for name in _MATRIX_AXES}
    for name, values in lists.items():  # the base spec takes each list's first value
        if values is not None:
            setattr(args, name, values[0])
    default_base(args)
    base = spec_from_args(args)
    cpus: tuple[CpuSpec | None, ...] = (base.cpu,)
    if lists["vcpu_type"] is not None:
        cpus = tuple(_cpu_named(name) for name in lists["vcpu_type"])
    elif lists["vcpu_sig"] is not None:
        cpus = tuple(CpuSpec(sig) for sig in lists["vcpu_sig"])
    axes = Axes(
        vcpus=tuple(lists["vcpus"] or (base.vcpus,)),
        cpus=cpus,
        vmms=tuple(lists["vmm"] or (base.vmm,)),
        # SEV_FEATURES exist for SNP only (an SEV-ES VMSA holds 0).
        guest_features=tuple(
            lists["guest_features"]
            or ((base.guest_features,) if base.technology is Technology.SEV_SNP else (0,))
        ),
        # Empty: the base's value (the engine refuses TDX axes for other guests).
        page_orders=tuple(PageOrder(o) for o in lists["tdx_page_order"] or ()),
        raw_data_tails=tuple(RawDataTail(t) for t in lists["raw_data_tail"] or ()),
        memory_mibs=tuple(lists["memory_mib"] or ()),
    )
    rows = matrix(base, axes)
    docs = [row.config.doc() | {"measurement": row.measurement.hex()} for row in rows]
    if args.json:
        print(json_text({"technology": str(base.technology), "rows": docs}))
    elif args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(docs[0]) if docs else [])
        writer.writeheader()
        writer.writerows(docs)
    else:
        for row in rows:
            print(f"{row.measurement.hex()}  {row.config.text()}")
    return EXIT_OK


def _cpu_named(name: str) -> CpuSpec:
    try:
        return CpuSpec.from_name(name)
    except ProfileError as e:
        raise ProfileError([FieldProblem("--vcpu-type", p.reason) for p in e.problems]) from None
