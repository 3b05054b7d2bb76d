"""What measurements over many configurations are checked against: each configuration built
and measured on its own, in the product order the sweep documents."""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import GuestSpec
from cvmlaunch.measure import measure
from cvmlaunch.measure.sweep import Axes, Config, Row
from cvmlaunch.plan import build_plan


def alone(base: GuestSpec, config: Config) -> bytes:
    """The digest of one configuration, built and measured on its own."""
    return measure(build_plan(config.spec(base))).digest


def assert_each_row_measured_alone(base: GuestSpec, rows: list[Row]) -> None:
    for row in rows:
        assert row.measurement.hex() == alone(base, row.config).hex(), row.config


def in_product_order(axes: Axes) -> list[Config]:
    """The configurations of `axes` in the order the sweep documents."""
    return [
        Config(vcpus, cpu, vmm, features, order, tail, memory)
        for vmm, cpu, features, vcpus, order, tail, memory in product(
            axes.vmms,
            axes.cpus,
            axes.guest_features,
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
