"""`solve` for a TD's RTMRs through the library: the boot sweep against the one-guest path
(plan_boot_inputs) over generated configurations, and solutions that hold the truth and
only configurations that give the target."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cvmlaunch.analysis import space
from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.profile import parse_profile
from cvmlaunch.guest.spec import GuestSpec, Technology
from cvmlaunch.measure.rtmr import (
    EDK2_ERAS,
    boot_events,
    edk2_era,
    plan_boot_inputs,
    rewrites_header,
    rtmrs,
)
from cvmlaunch.measure.sweep import Axes, boot_sweep
from cvmlaunch.plan.tdx import build_td_plan
from tests.conftest import DEBIAN_OVMF, TDX_VECTORS

KERNEL = TDX_VECTORS / "vmlinuz-6.1.0-56-amd64"
EDK2_TAGS = [y * 100 + m for y in range(2023, 2027) for m in (2, 5, 8, 11)]
QEMUS = ["7.2", "8.2.2", "9.1", "10.0", "10.1.1", "10.2", "10.2.1", "11.0"]
MEMORY = [512, 1024, 1536, 2048, 2560, 3072, 4096]


def td(
    tmp: Path, *, edk2: int, qemu: str, memory: int, initrd: bytes | None, cmdline: str
) -> GuestSpec:
    boot = f'[boot]\nkernel = "{KERNEL}"\ncmdline = {json.dumps(cmdline)}\n'
    if initrd is not None:
        path = tmp / f"initrd-{len(initrd)}-{initrd[:1].hex()}"
        path.write_bytes(initrd)
        boot += f'initrd = "{path}"\n'
    text = (
        f'schema_version = 1\ntechnology = "tdx"\nvcpus = 2\nmemory_mib = {memory}\n'
        f'[firmware]\npath = "{DEBIAN_OVMF}"\n{boot}[tdx]\nedk2 = {edk2}\nqemu = "{qemu}"\n'
    )
    return parse_profile(tomllib.loads(text)).to_spec()


def one_by_one(spec: GuestSpec) -> tuple[bytes | None, ...]:
    return rtmrs(boot_events(plan_boot_inputs(build_td_plan(spec))))


@pytest.fixture(autouse=True)
def _firmware(debian_ovmf: Path) -> None:
    """Every test here plans TDs of Debian's OVMF."""


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    truth=st.tuples(st.sampled_from(EDK2_TAGS), st.sampled_from(QEMUS), st.sampled_from(MEMORY)),
    start=st.tuples(st.sampled_from(EDK2_TAGS), st.sampled_from(QEMUS), st.sampled_from(MEMORY)),
    initrd=st.one_of(st.none(), st.binary(max_size=64).map(lambda b: b * 4096)),
    cmdline=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
# An empty initrd: QEMU still writes its address, which moves with the memory size.
@example(truth=(202302, "7.2", 1024), start=(202302, "7.2", 512), initrd=b"", cmdline="")
def test_solutions_hold_the_truth_and_only_configurations_that_give_the_target(
    tmp_path: Path,
    truth: tuple[int, str, int],
    start: tuple[int, str, int],
    initrd: bytes | None,
    cmdline: str,
) -> None:
    edk2, qemu, memory = truth
    real = td(tmp_path, edk2=edk2, qemu=qemu, memory=memory, initrd=initrd, cmdline=cmdline)
    target = one_by_one(real)
    base = td(tmp_path, edk2=start[0], qemu=start[1], memory=start[2], initrd=initrd,
              cmdline=cmdline)  # fmt: skip
    axes = space.search_axes(base, mrtd=False, boot=True)._replace(memory_mibs=tuple(MEMORY))
    assert len(axes.edk2s) == len(EDK2_ERAS) and len(axes.qemus) == 2
    assert target[1] is not None and target[2] is not None
    wanted = {1: target[1], 2: target[2]}
    found = space.solve(None, base, axes, wanted)
    # The truth is among them, as its era, QEMU kind and memory size...
    kinds = {(edk2_era(s.td_config.edk2 or 0), rewrites_header(s.td_config.qemu), s.memory_mib)
             for s in found}  # fmt: skip
    assert (edk2_era(edk2), rewrites_header(qemu), memory) in kinds
    # ...and each solution gives the target on the one-guest path.
    for spec in found:
        assert one_by_one(spec)[1:3] == target[1:3]
    # The sweep's every row is what the one-guest path gives.
    for row in boot_sweep(base, axes._replace(memory_mibs=(memory, 1024))):
        assert row.rtmrs == one_by_one(row.spec)


def test_memory_folds_into_the_sizes_that_give_the_digest(tmp_path: Path) -> None:
    # QEMU < 10.2 writes the initrd's address into the kernel's header: below 2 GiB of RAM
    # each size moves it, from 2 GiB up q35's low-memory split does not.
    base = td(tmp_path, edk2=202411, qemu="8.2", memory=4096, initrd=bytes(1 << 20),
              cmdline="console=ttyS0")  # fmt: skip
    axes = space.search_axes(base, mrtd=False, boot=True)
    target = one_by_one(base)[1]
    assert target is not None
    found = space.solve(None, base, axes, {1: target})
    folded = space.fold(found, axes, base)
    high = tuple(m for m in space.TDX_MEMORY_MIBS if m >= 2048)
    assert [(s.spec.td_config.edk2, s.memory_mibs) for s in folded] == [
        (202411, high),
        (202508, high),
    ]


def test_rtmr0_without_acpi_digests_is_refused_naming_it(tmp_path: Path) -> None:
    base = td(tmp_path, edk2=202411, qemu="10.2", memory=2048, initrd=None, cmdline="")
    axes = space.search_axes(base, mrtd=False, boot=True)
    with pytest.raises(ProfileError) as error:
        space.solve(None, base, axes, {0: bytes(48)})
    assert "rtmr0: not predictable" in str(error.value) and "tdx.acpi" in str(error.value)


def test_a_guest_of_another_technology_has_no_boot_sweep(tmp_path: Path) -> None:
    base = td(tmp_path, edk2=202411, qemu="10.2", memory=2048, initrd=None, cmdline="")
    snp = base._replace(technology=Technology.SEV_SNP, td=None)
    with pytest.raises(ProfileError, match="RTMRs are a TD's"):
        list(boot_sweep(snp, Axes((2,), (None,), (base.vmm,), (0,))))
