"""The measure-layer sweep (cvmlaunch.measure.sweep): launch digests of many configurations.

Two contracts. Every row equals measuring its configuration alone, `measure(build_plan(...))`,
for configurations drawn at random over the axes (vCPUs 1..64, CPU signatures, the three
VMMs, SNP guest features; TDX page orders, raw-data tails and memory sizes over generated
TDVF images). And what the configurations share is measured once: the firmware pages once,
the SEV metadata pages once per VMM, one VMSA page per vCPU count per distinct initial vCPU
state, one MRTD per distinct set of measured records — counted at the functions that work
goes through, so a lost cache shows as extra calls even though the digests stay right.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature
from cvmlaunch.abi.snp import PAGE_SIZE
from cvmlaunch.errors import ProfileError
from cvmlaunch.guest import files
from cvmlaunch.guest.spec import CpuSpec, GuestSpec, PageOrder, RawDataTail, Technology, Vmm
from cvmlaunch.measure import measure, snp
from cvmlaunch.measure import sweep as sweep_module
from cvmlaunch.measure.sev import sev_stream
from cvmlaunch.measure.snp import snp_digest
from cvmlaunch.measure.sweep import Axes, Row, point, sweep
from cvmlaunch.plan import LaunchPlan, build_plan, build_sev_plan
from cvmlaunch.plan.step import StepKind
from cvmlaunch.plan.vmsa import save_area
from tests.sweep_checks import alone, assert_each_row_measured_alone, in_product_order
from tests.tdvf_images import build_image, random_params

ALL_VMMS = (Vmm.QEMU, Vmm.EC2, Vmm.GCE)
SNP_FEATURES = (0x1, 0x21)
MEMORY_MIBS = (512, 1024, 2048, 3072, 4096, 8192)


class Counter:
    """Wraps functions, counting their calls by name."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        self.calls.setdefault(name, 0)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return real(*args, **kwargs)

        return wrapper


def sev_plan(spec: GuestSpec) -> LaunchPlan:
    plan = build_plan(spec)
    assert isinstance(plan, LaunchPlan)
    return plan


def pages(base: GuestSpec, vmm: Vmm, *kinds: StepKind) -> int:
    """How many 4 KiB pages of `kinds` a plan for `vmm` holds."""
    spec = base._replace(vmm=vmm, cpu=CpuSpec.from_name("EPYC-v4") if vmm is Vmm.QEMU else None)
    return sum(op.size // PAGE_SIZE for op in sev_plan(spec).ops if op.kind in kinds)


# --------------------------------------------------------------------------------------------
# Every row equals its configuration measured alone


def draw_vmsa_axes(rng: random.Random, technology: Technology) -> Axes:
    """vCPU counts in 1..64 (unsorted), CPUs by model name (synonyms possible) and by a
    random family/model/stepping, every VMM, and (SNP) both feature sets in either order."""
    vcpus = tuple(rng.sample(range(1, 65), 3))
    names = rng.sample(sorted(CPU_MODELS), 2)
    family, model, stepping = rng.choice((0x17, 0x19, 0x1A)), rng.randrange(256), rng.randrange(16)
    cpus = (
        *(CpuSpec.from_name(n) for n in names),
        CpuSpec(cpu_signature(family, model, stepping)),
    )
    features = tuple(rng.sample(SNP_FEATURES, 2)) if technology is Technology.SEV_SNP else (0,)
    return Axes(vcpus, cpus, tuple(rng.sample(ALL_VMMS, 3)), features)


@pytest.mark.parametrize("seed", range(3))
def test_snp_rows_equal_measuring_alone(seed: int, debian_ovmf: Path) -> None:
    axes = draw_vmsa_axes(random.Random(seed), Technology.SEV_SNP)
    if seed == 0:
        axes = axes._replace(vcpus=(64, *axes.vcpus, 1))  # both extremes, top first
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    rows = list(sweep(base, axes))
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert_each_row_measured_alone(rows)


@pytest.mark.parametrize("seed", range(2))
def test_sev_es_rows_equal_measuring_alone(seed: int, debian_ovmf: Path) -> None:
    axes = draw_vmsa_axes(random.Random(0xE5 + seed), Technology.SEV_ES)
    base = GuestSpec(Technology.SEV_ES, debian_ovmf)
    rows = list(sweep(base, axes))
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert_each_row_measured_alone(rows)
    # The VMSAs are measured: under QEMU every vCPU count and CPU has its own digest.
    qemu = [row.measurement for row in rows if row.spec.vmm is Vmm.QEMU]
    assert len(set(qemu)) == len(qemu)


def test_sev_rows_are_one_measurement(debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = GuestSpec(Technology.SEV, debian_ovmf)
    axes = Axes((1, 5), (None,), ALL_VMMS, (0,))
    counter = Counter()
    monkeypatch.setattr(sweep_module, "measure", counter.wrap("measure", measure))
    rows = list(sweep(base, axes))
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert {row.measurement for row in rows} == {alone(rows[-1].spec)}
    assert counter.calls == {"measure": 1}


def generated_tdvf(tmp_path: Path, seed: int) -> Path:
    """A random TDVF image whose TD HOB, if it has one, is extended, so that the memory
    size enters MRTD as well as the page order and (for a short section) the raw-data tail."""
    params = random_params(random.Random(seed), seed)
    for section in params["sections"]:
        if section["type"] == 2:  # TD_HOB
            section["attributes"] = 1  # MR.EXTEND
    path = tmp_path / f"tdvf-{seed}.bin"
    path.write_bytes(build_image(params))
    return path


def draw_td_axes(rng: random.Random) -> Axes:
    return Axes(
        (1,),
        (None,),
        (Vmm.QEMU,),
        (0,),
        tuple(rng.sample(tuple(PageOrder), 2)),
        tuple(rng.sample(tuple(RawDataTail), 2)),
        tuple(rng.sample(MEMORY_MIBS, 3)),
    )


@pytest.mark.parametrize("seed", [3, 4, 5, 9])
def test_tdx_rows_equal_measuring_alone(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = GuestSpec(Technology.TDX, generated_tdvf(tmp_path, seed))
    axes = draw_td_axes(random.Random(seed))
    counter = Counter()
    monkeypatch.setattr(sweep_module, "measure", counter.wrap("measure", measure))
    rows = list(sweep(base, axes))
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert_each_row_measured_alone(rows)
    # Plans with the same measured records are measured once: one measurement per MRTD,
    # and (these images extend their TD HOB) the memory size does make MRTDs differ.
    digests = {row.measurement for row in rows}
    assert counter.calls == {"measure": len(digests)}
    assert len(digests) > len(
        {(row.spec.td_config.page_order, row.spec.td_config.raw_data_tail) for row in rows}
    )


def test_tdx_debian_ovmf_measures_once_per_page_order(
    debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = GuestSpec(Technology.TDX, debian_ovmf)
    axes = draw_td_axes(random.Random(0x7D))
    counter = Counter()
    monkeypatch.setattr(sweep_module, "measure", counter.wrap("measure", measure))
    rows = list(sweep(base, axes))
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert_each_row_measured_alone(rows[::3])
    # OVMF adds its TD HOB without extending it and has no short section: only the page
    # order enters MRTD, so the twelve plans are measured twice.
    assert counter.calls == {"measure": 2}
    assert len({row.measurement for row in rows}) == 2


# --------------------------------------------------------------------------------------------
# What the configurations share is measured once


@pytest.mark.parametrize("pinned", [False, True], ids=["firmware", "firmware-digest"])
def test_snp_shared_pages_are_measured_once(
    pinned: bool, debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    if pinned:  # a published digest after the firmware pages stands for them
        spec = base._replace(cpu=CpuSpec.from_name("EPYC-v4"))
        base = base._replace(firmware_digest=measure(build_plan(spec)).firmware_digest)
    # EPYC and EPYC-v4 share a signature: one chain for both.
    cpus = tuple(CpuSpec.from_name(n) for n in ("EPYC", "EPYC-v4", "EPYC-Milan"))
    axes = Axes((3, 64, 10), cpus, ALL_VMMS, SNP_FEATURES)
    unpatched = list(sweep(base, axes))
    assert_each_row_measured_alone(unpatched[::37])

    counter = Counter()
    extend = counter.wrap("extend", snp.extend)
    for module in (snp, sweep_module):  # the per-plan engine's pages and the sweep's VMSAs
        monkeypatch.setattr(module, "extend", extend)
    read = counter.wrap("read", files.read_firmware)
    for module in (files, sweep_module):
        monkeypatch.setattr(module, "read_firmware", read)
    monkeypatch.setattr(sweep_module, "build_sev_plan", counter.wrap("plan", build_sev_plan))
    monkeypatch.setattr(sweep_module, "save_area", counter.wrap("vmsa", save_area))
    assert list(sweep(base, axes)) == unpatched
    calls = dict(counter.calls)

    # Initial vCPU states: QEMU 2 signatures x 2 feature sets, EC2 and GCE 2 feature sets.
    states = 2 * 2 + 2 + 2
    firmware = 0 if pinned else pages(base, Vmm.QEMU, StepKind.FIRMWARE)
    between = [k for k in StepKind if k not in (StepKind.FIRMWARE, StepKind.VMSA)]
    metadata = sum(pages(base, vmm, *between) for vmm in ALL_VMMS)
    assert calls == {
        "extend": firmware + metadata + states * 64,  # 64: the longest chain
        "read": 1,
        "plan": len(ALL_VMMS),
        "vmsa": 2 * states,  # a BSP and an AP save area each
    }


def test_sev_es_prefix_is_hashed_once_per_vmm(
    debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = GuestSpec(Technology.SEV_ES, debian_ovmf)
    cpus = tuple(CpuSpec.from_name(n) for n in ("EPYC-Rome", "EPYC-Genoa"))
    axes = Axes((1, 2, 33), cpus, ALL_VMMS, (0,))
    unpatched = list(sweep(base, axes))
    assert_each_row_measured_alone(unpatched[::4])

    counter = Counter()
    monkeypatch.setattr(sweep_module, "sev_stream", counter.wrap("stream", sev_stream))
    monkeypatch.setattr(sweep_module, "save_area", counter.wrap("vmsa", save_area))
    assert list(sweep(base, axes)) == unpatched
    states = 2 + 1 + 1  # QEMU per signature; EC2 and GCE put no signature in the VMSA
    assert counter.calls == {"stream": len(ALL_VMMS), "vmsa": 2 * states}


def test_snp_digest_extends_once_per_page(
    debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-plan engine chains through the same `extend` the sweep uses."""
    spec = GuestSpec(Technology.SEV_SNP, debian_ovmf, vcpus=3, cpu=CpuSpec.from_name("EPYC"))
    plan = sev_plan(spec)
    expected = snp_digest(plan)
    counter = Counter()
    monkeypatch.setattr(snp, "extend", counter.wrap("extend", snp.extend))
    assert snp_digest(plan) == expected
    assert counter.calls == {"extend": sum(op.size // PAGE_SIZE for op in plan.ops)}


# --------------------------------------------------------------------------------------------
# Clouds and the CPU


def test_cloud_cpu_gives_each_cloud_row_once(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    cpus = tuple(CpuSpec.from_name(n) for n in ("EPYC-Milan", "EPYC-Turin"))
    axes = Axes((1, 4), cpus, ALL_VMMS, (0x1,))
    every = list(sweep(base, axes))
    # EC2 and GCE put no CPU in the VMSA: their digest is the same for every CPU ...
    by_config = {row.spec: row.measurement for row in every}
    for row in every:
        if row.spec.vmm is not Vmm.QEMU:
            assert by_config[row.spec._replace(cpu=cpus[0])] == row.measurement
    # ... so with cloud_cpu they come once each, with cpu None; QEMU keeps a row per CPU.
    expected = [
        row if row.spec.vmm is Vmm.QEMU else Row(row.spec._replace(cpu=None), row.measurement)
        for row in every
        if row.spec.vmm is Vmm.QEMU or row.spec.cpu == cpus[0]
    ]
    assert list(sweep(base, axes, cloud_cpu=True)) == expected


def test_config_spec_applies_td_fields_one_by_one(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.TDX, debian_ovmf, memory_mib=1024)
    base = base._replace(td=base.td_config._replace(raw_data_tail=RawDataTail.ZERO))
    spec = point(base, 2, None, Vmm.QEMU, 0, page_order=PageOrder.SECTION)
    assert spec.td_config == base.td_config._replace(page_order=PageOrder.SECTION)
    assert (spec.vcpus, spec.memory_mib) == (2, 1024)
    assert point(base, 2, None, Vmm.QEMU, 0, memory_mib=4096).memory_mib == 4096


# --------------------------------------------------------------------------------------------
# The VMSA GPA (SNP)


def test_snp_rows_over_vmsa_gpas_equal_measuring_alone(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    gpas = (0xFFFFFFFFFF000, base.vmsa_gpa, 0x7FFF000)
    axes = Axes((3, 1), (CpuSpec.from_name("EPYC-Genoa"),), ALL_VMMS, (0x1,), vmsa_gpas=gpas)
    rows = list(sweep(base, axes))
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert [row.spec.vmsa_gpa for row in rows[:6]] == [g for g in gpas for _ in (3, 1)]
    assert_each_row_measured_alone(rows)
    # The GPA enters every VMSA's PAGE_INFO: each gives its own digest.
    assert len({row.measurement for row in rows}) == len(rows)
    # Without the axis, the base's GPA alone.
    assert [r.spec.vmsa_gpa for r in sweep(base, axes._replace(vmsa_gpas=()))] == [
        base.vmsa_gpa
    ] * 6


def test_vmsa_gpas_vary_snp_guests_only(debian_ovmf: Path) -> None:
    es = GuestSpec(Technology.SEV_ES, debian_ovmf)
    axes = Axes((1,), (CpuSpec.from_name("EPYC-v4"),), (Vmm.QEMU,), (0,), vmsa_gpas=(0x1000,))
    with pytest.raises(ProfileError, match="vmsa_gpas: varies sev-snp guests only, not sev-es"):
        list(sweep(es, axes))
