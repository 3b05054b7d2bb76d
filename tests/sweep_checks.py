"""What measurements over many configurations are checked against: each configuration built
and measured on its own, in the product order the sweep documents."""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import GuestSpec
from cvmlaunch.measure import measure
from cvmlaunch.measure.sweep import Axes, Row, point
from cvmlaunch.plan import build_plan


def alone(spec: GuestSpec) -> bytes:
    """The digest of one guest, built and measured on its own."""
    return measure(build_plan(spec)).digest


def assert_each_row_measured_alone(rows: list[Row]) -> None:
    for row in rows:
        assert row.measurement.hex() == alone(row.spec).hex(), row.spec


def in_product_order(base: GuestSpec, axes: Axes) -> list[GuestSpec]:
    """The guests of `axes` applied to `base`, in the order the sweep documents."""
    return [
        point(
            base,
            vcpus,
            cpu,
            vmm,
            features,
            page_order=order,
            raw_data_tail=tail,
            memory_mib=memory,
            vmsa_gpa=gpa,
        )
        for vmm, cpu, features, gpa, vcpus, order, tail, memory in product(
            axes.vmms,
            axes.cpus,
            axes.guest_features,
            axes.vmsa_gpas or (None,),
            axes.vcpus,
            axes.page_orders or (None,),
            axes.raw_data_tails or (None,),
            axes.memory_mibs or (None,),
        )
    ]


def profile_measurement(path: Path, **changes: Any) -> str:
    """The digest (hex) of the profile at `path` with `changes` to its spec."""
    spec = load_profile(path).to_spec()._replace(**changes)
    return measure(build_plan(spec)).digest.hex()
