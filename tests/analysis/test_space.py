"""The configuration-space analysis (cvmlaunch.analysis.space): matrix, solve, search_axes
and fold.

The contract is that every row of `matrix` equals building and measuring that one
configuration, however the sweep shares work between rows (tests/measure/test_sweep.py
tests the sharing itself); `solve` must find the configuration behind digests computed
independently, by the reference tool sev-snp-measure.
"""

from __future__ import annotations

import hashlib
import random
from itertools import product
from pathlib import Path
from typing import NamedTuple

import pytest
from sevsnpmeasure import guest as ref_guest
from sevsnpmeasure import vcpu_types as ref_vcpu_types
from sevsnpmeasure import vmm_types as ref_vmm_types
from sevsnpmeasure.sev_mode import SevMode as RefSevMode

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature, models_with_signature
from cvmlaunch.analysis import space
from cvmlaunch.analysis.space import (
    SNP_GUEST_FEATURES,
    TDX_MEMORY_MIBS,
    matrix,
    search_axes,
    solve,
)
from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    PageOrder,
    RawDataTail,
    Technology,
    Vmm,
)
from cvmlaunch.measure import measure
from cvmlaunch.measure.sweep import Axes, point
from cvmlaunch.plan import build_plan
from tests.conftest import SNP_VECTORS
from tests.sweep_checks import alone, assert_each_row_measured_alone, in_product_order
from tests.tdvf_images import FOUR_GIB, build_image

AMDSEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"  # the fixture build with a kernel hashes area
FAKE_KERNEL = SNP_VECTORS / "fake-kernel.bin"
TEST_INITRD = SNP_VECTORS / "test-initrd.cpio"
ALL_VMMS = (Vmm.QEMU, Vmm.EC2, Vmm.GCE)
THREE_CPUS = tuple(CpuSpec.from_name(n) for n in ("EPYC-v4", "EPYC-Milan", "EPYC-Turin"))


# --------------------------------------------------------------------------------------------
# matrix equals per-configuration measurement


def test_snp_matrix_every_row(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    axes = Axes(tuple(range(1, 9)), THREE_CPUS, ALL_VMMS, SNP_GUEST_FEATURES)
    rows = matrix(base, axes)
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert_each_row_measured_alone(rows)
    by_config = {row.spec: row.measurement for row in rows}
    # Every vCPU count, CPU (under QEMU), VMM and feature set gives its own digest ...
    qemu = [m for c, m in by_config.items() if c.vmm is Vmm.QEMU]
    assert len(set(qemu)) == len(qemu)
    # ... but the clouds do not measure the CPU: the same digest for every model.
    for row in rows:
        if row.spec.vmm is not Vmm.QEMU:
            assert by_config[row.spec._replace(cpu=THREE_CPUS[0])] == row.measurement


def test_snp_matrix_direct_boot_sample() -> None:
    cmdline = "console=ttyS0 root=/dev/vda1"
    boot = DirectBoot(
        BootFile(sha256=hashlib.sha256(FAKE_KERNEL.read_bytes()).digest()),
        BootFile(path=TEST_INITRD),
        cmdline,
    )
    base = GuestSpec(Technology.SEV_SNP, AMDSEV, boot=boot)
    axes = Axes((7, 1, 64, 2), THREE_CPUS[:2], ALL_VMMS, (0x1, 0x21, 0x3))
    rows = matrix(base, axes)
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert_each_row_measured_alone(random.Random(0xB007).sample(rows, 16))
    # The kernel hashes really enter: without them every digest differs.
    plain = matrix(base._replace(boot=None), axes)
    assert all(a.measurement != b.measurement for a, b in zip(rows, plain, strict=True))


@pytest.mark.parametrize("firmware", ["debian", "amdsev-boot"])
def test_sev_es_matrix_sample(firmware: str, debian_ovmf: Path) -> None:
    if firmware == "debian":
        base = GuestSpec(Technology.SEV_ES, debian_ovmf)
    else:
        boot = DirectBoot(BootFile(path=FAKE_KERNEL), None, "quiet")
        base = GuestSpec(Technology.SEV_ES, AMDSEV, boot=boot)
    axes = Axes((5, 1, 64, 2), THREE_CPUS, ALL_VMMS, (0,))
    rows = matrix(base, axes)
    assert [row.spec for row in rows] == in_product_order(base, axes)
    assert_each_row_measured_alone(random.Random(0x5E5).sample(rows, 14))
    assert len({row.measurement for row in rows if row.spec.vmm is Vmm.QEMU}) == 4 * 3


def test_sev_matrix_is_one_digest(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV, debian_ovmf)
    rows = matrix(base, Axes((1, 4), (None, THREE_CPUS[0]), ALL_VMMS, (0,)))
    assert len(rows) == 2 * 2 * 3
    assert {row.measurement for row in rows} == {alone(rows[0].spec)}


def test_snp_precomputed_firmware_digest(debian_ovmf: Path) -> None:
    """A published firmware digest replaces the firmware pages; the rows stay the same."""
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf, cpu=THREE_CPUS[0])
    firmware_digest = measure(build_plan(base)).firmware_digest
    axes = Axes((1, 3), THREE_CPUS[1:], ALL_VMMS, (0x1,))
    pinned = matrix(base._replace(firmware_digest=firmware_digest), axes)
    unpinned = matrix(base, axes)
    assert [r.measurement for r in pinned] == [r.measurement for r in unpinned]
    assert [r.spec._replace(firmware_digest=None) for r in pinned] == [r.spec for r in unpinned]
    # The precomputed digest is used, not recomputed: a different one changes every row.
    other = base._replace(firmware_digest=bytes(48))
    assert all(
        a.measurement != b.measurement for a, b in zip(matrix(other, axes), pinned, strict=True)
    )
    assert_each_row_measured_alone(matrix(other, axes)[:3])


def test_tdx_matrix_every_row(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.TDX, debian_ovmf)
    axes = Axes((1,), (None,), (Vmm.QEMU,), (0,), tuple(PageOrder), tuple(RawDataTail))
    axes = axes._replace(memory_mibs=(1024, 2048, 4096))
    rows = matrix(base, axes)
    expected = [
        point(base, 1, None, Vmm.QEMU, 0, page_order=order, raw_data_tail=tail, memory_mib=memory)
        for order, tail, memory in product(PageOrder, RawDataTail, (1024, 2048, 4096))
    ]
    assert [row.spec for row in rows] == expected
    assert_each_row_measured_alone(rows)
    # The page order changes MRTD; OVMF's TD HOB is added, not extended, so memory does not.
    assert len({row.measurement for row in rows}) == 2


def synthetic_tdvf(tmp_path: Path) -> Path:
    """A TDVF image whose MRTD depends on every TDX axis: a short, measured BFV (so the
    raw-data tail matters) and an extended TD_HOB (so the memory size does)."""
    size = 0x100000
    sections = [
        dict(data_offset=0x10000, raw_size=0x3E800, gpa=FOUR_GIB - 0x40000, mem_size=0x40000,
             type=0, attributes=1),
        dict(data_offset=0, raw_size=0, gpa=0x800000, mem_size=0x2000, type=2, attributes=1),
        dict(data_offset=0, raw_size=0, gpa=0x810000, mem_size=0x10000, type=3, attributes=0),
    ]  # fmt: skip
    params = {
        "size": size,
        "seed": 6,
        "locator": "ovmf",
        "descriptor_offset": size - 0x1000 + 0x20,
        "sections": sections,
    }
    path = tmp_path / "tdvf-extended-hob.bin"
    path.write_bytes(build_image(params))
    return path


def test_tdx_matrix_synthetic_every_axis(tmp_path: Path) -> None:
    base = GuestSpec(Technology.TDX, synthetic_tdvf(tmp_path))
    axes = search_axes(base)._replace(memory_mibs=(512, 3072, 4096))
    rows = matrix(base, axes)
    assert len(rows) == 2 * 2 * 3
    assert_each_row_measured_alone(rows)
    assert len({row.measurement for row in rows}) == len(rows)


# --------------------------------------------------------------------------------------------
# Empty and unusable spaces


def test_matrix_of_an_empty_axis_is_empty(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    assert matrix(base, Axes((), THREE_CPUS, ALL_VMMS, (1,))) == []
    assert matrix(base, Axes((1,), THREE_CPUS, (), (1,))) == []


def test_matrix_refuses_unusable_configurations(debian_ovmf: Path) -> None:
    snp = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    with pytest.raises(ProfileError, match="cpu: required with vmm 'qemu'"):
        matrix(snp, Axes((1,), (None,), ALL_VMMS, (1,)))
    with pytest.raises(ProfileError, match=r"bit 0 \(SNPActive\) must be set"):
        matrix(snp, Axes((1,), THREE_CPUS, ALL_VMMS, (1, 0x20)))
    with pytest.raises(ProfileError, match=r"vcpus: expected 1\.\.4096"):
        matrix(snp, Axes((1, 0), THREE_CPUS, ALL_VMMS, (1,)))
    with pytest.raises(ProfileError, match="memory_mibs: varies tdx guests only"):
        matrix(snp, Axes((1,), THREE_CPUS, ALL_VMMS, (1,), memory_mibs=(1024,)))
    tdx = GuestSpec(Technology.TDX, debian_ovmf)
    with pytest.raises(ProfileError, match="tdx guests are launched by qemu, not ec2"):
        matrix(tdx, Axes((1,), (None,), ALL_VMMS, (0,)))


# --------------------------------------------------------------------------------------------
# solve against the reference tool


REFERENCE_MODELS = sorted(set(ref_vcpu_types.CPU_SIGS) & set(CPU_MODELS))
_REF_VMMS = {
    Vmm.QEMU: ref_vmm_types.VMMType.QEMU,
    Vmm.EC2: ref_vmm_types.VMMType.ec2,
    Vmm.GCE: ref_vmm_types.VMMType.gce,
}


class Case(NamedTuple):
    """A configuration whose digest sev-snp-measure computes; `cmdline` None: no boot."""

    vcpus: int
    model: str
    vmm: Vmm
    guest_features: int
    cmdline: str | None

    def label(self, index: int) -> str:
        boot = "noboot" if self.cmdline is None else f"boot{len(self.cmdline)}B"
        parts = (index, self.vmm, self.model, self.vcpus, self.guest_features, boot)
        return "{:02d}-{}-{}-{}vcpu-gf{:#x}-{}".format(*parts)


def draw_cases(count: int = 48, seed: int = 0x501FE) -> list[Case]:
    """`count` cases; 48 = 3 VMMs x 16 models puts every model under every VMM once."""
    rng = random.Random(seed)
    models = list(REFERENCE_MODELS)
    rng.shuffle(models)
    cases = []
    for i in range(count):
        vcpus = (1, 64)[i] if i < 2 else rng.choice((rng.randint(1, 64), rng.randint(1, 8)))
        cmdline = None
        if i % 7 == 3:  # 7 is prime to 3: every VMM boots a kernel
            cmdline = rng.choice(("", "console=ttyS0", "root=/dev/vda1 ro quiet " * 4))
        features = rng.choice(SNP_GUEST_FEATURES)
        cases.append(Case(vcpus, models[i % len(models)], ALL_VMMS[i % 3], features, cmdline))
    return cases


CASES = draw_cases()


def reference_digest(case: Case, firmware: Path) -> bytes:
    """sev-snp-measure's digest, called as its command line calls it (see test_differential)."""
    booted = case.cmdline is not None
    digest = ref_guest.calc_launch_digest(
        RefSevMode.SEV_SNP,
        case.vcpus,
        ref_vcpu_types.CPU_SIGS[case.model],
        str(firmware),
        str(FAKE_KERNEL) if booted else None,
        str(TEST_INITRD) if booted else None,
        case.cmdline,
        case.guest_features,
        snp_ovmf_hash_str="",
        vmm_type=_REF_VMMS[case.vmm],
    )
    assert isinstance(digest, bytes)
    return digest


def test_cases_cover_models_and_vmms() -> None:
    assert len(REFERENCE_MODELS) >= 16
    assert {(c.model, c.vmm) for c in CASES} == set(product(REFERENCE_MODELS, ALL_VMMS))
    assert {1, 64} <= {c.vcpus for c in CASES}
    assert {c.guest_features for c in CASES} == set(SNP_GUEST_FEATURES)
    assert {c.vmm for c in CASES if c.cmdline is not None} == set(ALL_VMMS)


@pytest.mark.reference
@pytest.mark.parametrize("case", [pytest.param(c, id=c.label(i)) for i, c in enumerate(CASES)])
def test_solve_recovers_reference_configuration(case: Case, debian_ovmf: Path) -> None:
    if case.cmdline is None:
        base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    else:
        boot = DirectBoot(BootFile(path=FAKE_KERNEL), BootFile(path=TEST_INITRD), case.cmdline)
        base = GuestSpec(Technology.SEV_SNP, AMDSEV, boot=boot)
    target = reference_digest(case, base.firmware)
    found = solve(target, base, search_axes(base, max_vcpus=64))
    signature = cpu_signature(*CPU_MODELS[case.model])
    truth = (case.vcpus, case.vmm, case.guest_features)
    assert [(c.vcpus, c.vmm, c.guest_features) for c in found] == [truth]
    (config,) = found
    if case.vmm is Vmm.QEMU:
        assert config.cpu is not None and config.cpu.signature == signature
        assert case.model in models_with_signature(config.cpu.signature)
    else:
        assert config.cpu is None  # the clouds do not measure the CPU
    assert alone(config) == target


# --------------------------------------------------------------------------------------------
# solve


def test_solve_finds_every_configuration_with_the_digest(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    axes = Axes((1, 2, 3), THREE_CPUS, ALL_VMMS, SNP_GUEST_FEATURES)
    for row in matrix(base, axes):
        found = solve(row.measurement, base, axes)
        cloud = row.spec.vmm is not Vmm.QEMU
        assert found == [row.spec._replace(cpu=None) if cloud else row.spec]


def test_solve_reports_synonyms_by_first_model(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf, vcpus=4, cpu=CpuSpec.from_name("EPYC-v4"))
    found = solve(measure(build_plan(base)).digest, base, search_axes(base))
    assert found == [point(base, 4, CpuSpec(0x800F12, "EPYC"), Vmm.QEMU, 0x1)]
    assert models_with_signature(0x800F12) == (
        "EPYC", "EPYC-v1", "EPYC-v2", "EPYC-IBPB", "EPYC-v3", "EPYC-v4", "EPYC-v5",
    )  # fmt: skip
    assert models_with_signature(0x12345678) == ()


def test_solve_with_fixed_fields_narrows(debian_ovmf: Path) -> None:
    genoa = CpuSpec.from_name("EPYC-Genoa-v2")
    truth = GuestSpec(Technology.SEV_SNP, debian_ovmf, vcpus=6, cpu=genoa, guest_features=0x21)
    target = measure(build_plan(truth)).digest
    expected = point(truth, 6, CpuSpec(genoa.signature, "EPYC-Genoa"), Vmm.QEMU, 0x21)
    everything = search_axes(truth)
    assert solve(target, truth, everything) == [expected]
    narrowed = search_axes(truth, fixed=frozenset({"vcpus", "vmm", "cpu", "guest_features"}))
    assert narrowed == Axes((6,), (genoa,), (Vmm.QEMU,), (0x21,))
    assert solve(target, truth, narrowed) == [expected._replace(cpu=genoa)]
    # Fixing a field to a value the guest did not have leaves nothing to find.
    for wrong in (
        truth._replace(vcpus=7),
        truth._replace(vmm=Vmm.GCE),
        truth._replace(guest_features=0x1),
        truth._replace(cpu=CpuSpec.from_name("EPYC-Turin")),
    ):
        fixed = frozenset({"vcpus", "vmm", "guest_features", "cpu"})
        assert solve(target, wrong, search_axes(wrong, fixed=fixed)) == []


def test_solve_of_a_digest_nobody_produces(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    axes = search_axes(base, max_vcpus=16)
    assert solve(bytes(48), base, axes) == []
    assert solve(hashlib.sha384(b"no guest").digest(), base, axes) == []
    assert solve(b"short", base, axes) == []


def test_solve_sev_es_and_sev(debian_ovmf: Path) -> None:
    es = GuestSpec(Technology.SEV_ES, debian_ovmf, vcpus=3, vmm=Vmm.GCE)
    found = solve(measure(build_plan(es)).digest, es, search_axes(es))
    assert found == [point(es, 3, None, Vmm.GCE, 0)]
    sev = GuestSpec(Technology.SEV, debian_ovmf)
    found = solve(measure(build_plan(sev)).digest, sev, search_axes(sev))
    assert found == [point(sev, 1, None, Vmm.QEMU, 0)]


def test_tdx_solve_debian_ovmf(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.TDX, debian_ovmf)
    truth = point(
        base, 1, None, Vmm.QEMU, 0,
        page_order=PageOrder.SECTION, raw_data_tail=RawDataTail.IMAGE, memory_mib=4096,
    )  # fmt: skip
    target = alone(truth)
    found = solve(target, base, search_axes(base))
    assert truth in found
    assert {c.td_config.page_order for c in found} == {PageOrder.SECTION}
    # OVMF neither has a short section nor extends its TD HOB: tail and memory are not
    # measured, so every value of them is a solution.
    assert {(c.td_config.raw_data_tail, c.memory_mib) for c in found} == set(
        product(RawDataTail, TDX_MEMORY_MIBS)
    )
    for config in found[::7]:
        assert alone(config) == target


def test_tdx_solve_recovers_every_axis(tmp_path: Path) -> None:
    base = GuestSpec(Technology.TDX, synthetic_tdvf(tmp_path))
    truth = point(
        base, 1, None, Vmm.QEMU, 0,
        page_order=PageOrder.SECTION, raw_data_tail=RawDataTail.ZERO, memory_mib=3072,
    )  # fmt: skip
    assert solve(alone(truth), base, search_axes(base)) == [truth]
    truth = point(truth, 1, None, Vmm.QEMU, 0, page_order=PageOrder.PAGE)
    truth = point(truth, 1, None, Vmm.QEMU, 0, raw_data_tail=RawDataTail.IMAGE)
    assert solve(alone(truth), base, search_axes(base)) == [truth]


# --------------------------------------------------------------------------------------------
# search_axes


def test_search_axes_sev_snp(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    axes = search_axes(base, max_vcpus=64)
    assert axes.vcpus == tuple(range(1, 65))
    assert axes.cpus == tuple(
        CpuSpec.from_name(n)
        for n in ("EPYC", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa", "EPYC-Turin")
    )
    assert {cpu_signature(*fms) for fms in CPU_MODELS.values()} == {
        c.signature for c in axes.cpus if c is not None
    }
    assert axes.vmms == ALL_VMMS
    assert axes.guest_features == (0x1, 0x21)
    assert (axes.page_orders, axes.raw_data_tails, axes.memory_mibs) == ((), (), ())
    # Only clouds: nothing measures the CPU.
    gce = search_axes(base._replace(vmm=Vmm.GCE), fixed=frozenset({"vmm"}))
    assert (gce.vmms, gce.cpus) == ((Vmm.GCE,), (None,))
    # A fixed missing CPU rules QEMU out.
    assert search_axes(base, fixed=frozenset({"cpu"})).vmms == (Vmm.EC2, Vmm.GCE)


def test_search_axes_other_technologies(debian_ovmf: Path) -> None:
    es = search_axes(GuestSpec(Technology.SEV_ES, debian_ovmf), max_vcpus=8)
    assert (es.vcpus, es.vmms, es.guest_features) == (tuple(range(1, 9)), ALL_VMMS, (0,))
    assert len(es.cpus) == 5
    sev = search_axes(GuestSpec(Technology.SEV, debian_ovmf, vcpus=2))
    assert sev == Axes((2,), (None,), (Vmm.QEMU,), (0,))
    tdx_base = GuestSpec(Technology.TDX, debian_ovmf, memory_mib=1536)
    tdx = search_axes(tdx_base)
    assert tdx == Axes(
        (1,), (None,), (Vmm.QEMU,), (0,), tuple(PageOrder), tuple(RawDataTail), TDX_MEMORY_MIBS
    )
    fixed = search_axes(tdx_base, fixed=frozenset({"memory_mib", "page_order"}))
    assert (fixed.page_orders, fixed.memory_mibs) == ((PageOrder.PAGE,), (1536,))
    assert fixed.raw_data_tails == tuple(RawDataTail)


def test_search_axes_refuses_unknown_names(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    with pytest.raises(ProfileError, match="fixed: unknown field 'vcpu'"):
        search_axes(base, fixed=frozenset({"vcpu"}))
    with pytest.raises(ProfileError, match=r"max_vcpus: expected 1\.\.4096, got 0"):
        search_axes(base, max_vcpus=0)


def test_point_applies_td_fields_one_by_one(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.TDX, debian_ovmf, memory_mib=1024)
    base = base._replace(td=base.td_config._replace(raw_data_tail=RawDataTail.ZERO))
    spec = point(base, 2, None, Vmm.QEMU, 0, page_order=PageOrder.SECTION)
    assert spec.td_config == base.td_config._replace(page_order=PageOrder.SECTION)
    assert (spec.vcpus, spec.memory_mib) == (2, 1024)
    assert point(base, 2, None, Vmm.QEMU, 0, memory_mib=4096).memory_mib == 4096


def test_fold_collapses_only_complete_axes() -> None:
    axes = Axes(
        vcpus=(1,), cpus=(None,), vmms=(Vmm.QEMU,), guest_features=(0,),
        page_orders=(PageOrder.PAGE, PageOrder.SECTION),
        raw_data_tails=(RawDataTail.IMAGE, RawDataTail.ZERO), memory_mibs=(1024, 2048),
    )  # fmt: skip

    base = GuestSpec(Technology.TDX, Path("tdvf.fd"), memory_mib=2048)

    def td(order: PageOrder, tail: RawDataTail | None, mib: int | None) -> GuestSpec:
        return point(
            base, 1, None, Vmm.QEMU, 0, page_order=order, raw_data_tail=tail, memory_mib=mib
        )

    # Section order: every tail and memory size; page order: one tail, both sizes.
    configs = [td(PageOrder.SECTION, t, m) for t in RawDataTail for m in (1024, 2048)]
    configs += [td(PageOrder.PAGE, RawDataTail.ZERO, m) for m in (1024, 2048)]
    folded = space.fold(configs, axes, base)
    assert folded == [
        space.Solution(td(PageOrder.SECTION, None, None), ("memory_mib", "raw_data_tail")),
        space.Solution(td(PageOrder.PAGE, RawDataTail.ZERO, None), ("memory_mib",)),
    ]
    # One memory size missing: nothing folds on it.
    partial = space.fold(configs[:1], axes, base)
    assert partial == [space.Solution(configs[0], ())]


def test_solve_tdx_folds_what_debian_ovmf_does_not_measure(debian_ovmf: Path) -> None:
    from cvmlaunch.guest.profile import load_profile

    base = load_profile(
        Path(__file__).parents[2] / "profiles" / "debian-ovmf-qemu-tdx.toml"
    ).to_spec()
    section = base.td_config._replace(page_order=PageOrder.SECTION)
    target = measure(build_plan(base._replace(td=section))).digest
    axes = space.search_axes(base)
    (solution,) = space.fold(space.solve(target, base, axes), axes, base)
    assert solution.spec.td_config.page_order is PageOrder.SECTION
    assert solution.free == ("memory_mib", "raw_data_tail")


# --------------------------------------------------------------------------------------------
# GCE on Genoa: the VMSAs at another GPA


def test_search_axes_try_gce_genoa_vmsa_gpa(debian_ovmf: Path) -> None:
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    assert search_axes(base).vmsa_gpas == (0xFFFFFFFFF000, 0xFFFFFFFFFF000)
    # Fixed by --vmsa-gpa, or with no GCE among the VMMs searched: the base's alone.
    assert search_axes(base, fixed=frozenset({"vmsa_gpa"})).vmsa_gpas == ()
    assert search_axes(base, fixed=frozenset({"vmm"})).vmsa_gpas == ()
    assert search_axes(GuestSpec(Technology.SEV_ES, debian_ovmf)).vmsa_gpas == ()


@pytest.mark.reference
@pytest.mark.parametrize(("vcpus", "features"), [(1, 0x1), (5, 0x21)])
def test_solve_recovers_a_gce_genoa_guest(
    vcpus: int, features: int, debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference tool measures GCE's Genoa digest once told the VMSA GPA (it always uses
    the Milan one): solve finds it, and reports the GPA."""
    from sevsnpmeasure.gctx import GCTX

    genoa_gpa = 0xFFFFFFFFFF000  # 52-bit physical addresses: gce-tcb-verifier
    case = Case(vcpus, "EPYC-Genoa", Vmm.GCE, features, None)
    milan = reference_digest(case, debian_ovmf)
    monkeypatch.setattr(GCTX, "VMSA_GPA", genoa_gpa)
    target = reference_digest(case, debian_ovmf)
    assert target != milan
    base = GuestSpec(Technology.SEV_SNP, debian_ovmf)
    (found,) = solve(target, base, search_axes(base, max_vcpus=8))
    assert (found.vcpus, found.vmm, found.guest_features) == (vcpus, Vmm.GCE, features)
    assert (found.cpu, found.vmsa_gpa) == (None, genoa_gpa)
    assert alone(found) == target
    assert solve(milan, base, search_axes(base, max_vcpus=8))[0].vmsa_gpa == base.vmsa_gpa


# --------------------------------------------------------------------------------------------
# Fields that do not enter the digest


def test_sev_solutions_hold_any_vcpus_cpu_and_vmm(debian_ovmf: Path) -> None:
    # Plain SEV measures the firmware alone (no VMSA): its digest is the image's SHA-256.
    target = hashlib.sha256(debian_ovmf.read_bytes()).digest()
    sev = GuestSpec(Technology.SEV, debian_ovmf, vcpus=3)
    axes = search_axes(sev)
    (solution,) = space.fold(solve(target, sev, axes), axes, sev)
    assert solution == space.Solution(point(sev, 3, None, Vmm.QEMU, 0), ("vcpus", "cpu", "vmm"))
    fixed = frozenset({"vcpus"})
    axes = search_axes(sev, fixed=fixed)
    (solution,) = space.fold(solve(target, sev, axes), axes, sev, fixed=fixed)
    assert solution.free == ("cpu", "vmm")
    # SEV-ES and SNP measure one VMSA per vCPU: nothing is free there.
    es = GuestSpec(Technology.SEV_ES, debian_ovmf, vcpus=3, vmm=Vmm.GCE)
    axes = search_axes(es, max_vcpus=4)
    found = space.fold(solve(measure(build_plan(es)).digest, es, axes), axes, es)
    assert [s.free for s in found] == [()]
