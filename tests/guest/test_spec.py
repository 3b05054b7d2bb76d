"""GuestSpec through the API: a value of the wrong type is converted or refused, never
mismeasured; every problem is reported at once, as a CvmlaunchError."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvmlaunch.errors import CvmlaunchError, ProfileError
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    PageOrder,
    RawDataTail,
    TdConfig,
    Technology,
    Vmm,
    cpu_from_forms,
)
from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan

EPYC_V4 = CpuSpec.from_name("EPYC-v4")


def _problems(spec: GuestSpec) -> dict[str, str]:
    with pytest.raises(ProfileError) as e:
        spec.check()
    return {p.field: p.reason for p in e.value.problems}


@pytest.mark.debian_ovmf
@pytest.mark.parametrize(
    ("as_string", "as_enum"),
    [
        ({"technology": "sev-snp"}, {"technology": Technology.SEV_SNP}),
        ({"technology": "sev-es"}, {"technology": Technology.SEV_ES}),
        ({"vmm": "ec2"}, {"vmm": Vmm.EC2}),
        ({"vmm": "gce"}, {"vmm": Vmm.GCE}),
    ],
)
def test_enum_value_strings_measure_as_the_enum(
    debian_ovmf: Path, as_string: dict[str, str], as_enum: dict[str, object]
) -> None:
    base = dict(technology=Technology.SEV_SNP, firmware=debian_ovmf, vcpus=2, cpu=EPYC_V4)
    # Before, "sev-snp" measured as a 32-byte SEV-ES digest and "ec2" as qemu.
    by_string = measure(build_plan(GuestSpec(**{**base, **as_string})))  # type: ignore[arg-type]
    by_enum = measure(build_plan(GuestSpec(**{**base, **as_enum})))  # type: ignore[arg-type]
    assert by_string.digest == by_enum.digest
    assert by_string.technology is by_enum.technology
    assert len(by_string.digest) == (32 if by_enum.technology is Technology.SEV_ES else 48)


@pytest.mark.debian_ovmf
def test_td_enum_strings_measure_as_the_enum(debian_ovmf: Path) -> None:
    def mrtd(td: TdConfig) -> bytes:
        return measure(build_plan(GuestSpec(Technology.TDX, debian_ovmf, td=td))).digest

    section = mrtd(TdConfig(page_order=PageOrder.SECTION))
    assert section != mrtd(TdConfig(page_order=PageOrder.PAGE))
    # Before, "section" gave an MRTD that was neither order.
    assert mrtd(TdConfig(page_order="section")) == section  # type: ignore[arg-type]
    zero = mrtd(TdConfig(raw_data_tail=RawDataTail.ZERO))
    assert mrtd(TdConfig(raw_data_tail="zero")) == zero  # type: ignore[arg-type]


def test_strings_converted_by_check() -> None:
    spec = GuestSpec("tdx", "/fw.fd", td=TdConfig(page_order="section")).check()  # type: ignore[arg-type]
    assert spec.technology is Technology.TDX
    assert spec.firmware == Path("/fw.fd")
    assert spec.td is not None and spec.td.page_order is PageOrder.SECTION


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"technology": "snp"}, "technology"),
        ({"technology": 3}, "technology"),
        ({"vmm": "azure"}, "vmm"),
        ({"vmm": None}, "vmm"),
        ({"vcpus": True}, "vcpus"),
        ({"vcpus": "4"}, "vcpus"),
        ({"vcpus": 4.0}, "vcpus"),
        ({"guest_features": "33"}, "snp.guest_features"),
        ({"snp_policy": False}, "snp.policy"),
        ({"host_data": "00" * 32}, "snp.host_data"),
        ({"firmware": 7}, "firmware.path"),
        ({"firmware_sha256": "ab" * 32}, "firmware.sha256"),
        ({"cpu": "EPYC-v4"}, "cpu"),
        ({"boot": DirectBoot(BootFile(sha256="ab" * 32))}, "boot.kernel"),  # type: ignore[arg-type]
        ({"boot": DirectBoot(BootFile(Path("/k")), cmdline=b"x")}, "boot.cmdline"),  # type: ignore[arg-type]
        ({"memory_mib": 1.5}, "memory_mib"),
    ],
)
def test_wrong_types_are_refused_by_name(changes: dict[str, object], field: str) -> None:
    spec = GuestSpec(Technology.SEV_SNP, Path("/fw.fd"), vcpus=2, cpu=EPYC_V4)
    assert field in _problems(spec._replace(**changes))  # type: ignore[arg-type]


def test_wrong_td_types_are_refused_by_name() -> None:
    bad = TdConfig(attributes="0", page_order="diagonal", mrowner="00" * 48)  # type: ignore[arg-type]
    found = _problems(GuestSpec(Technology.TDX, Path("/fw.fd"), td=bad))
    assert {"tdx.attributes", "tdx.page_order", "tdx.mrowner"} <= set(found)
    assert "'page', 'section'" in found["tdx.page_order"]


def test_every_problem_at_once() -> None:
    spec = GuestSpec(
        "sev-snp",  # type: ignore[arg-type]
        Path("/fw.fd"),
        vcpus=True,
        vmm="azure",  # type: ignore[arg-type]
        guest_features=0,
        snp_policy=0x10000,
        td=TdConfig(),
    )
    found = _problems(spec)
    assert {"vcpus", "vmm", "snp.guest_features", "snp.policy", "tdx"} <= set(found)


def test_parts_of_another_technology_are_refused() -> None:
    tdx = GuestSpec(Technology.TDX, Path("/fw.fd"), cpu=EPYC_V4, firmware_digest=bytes(48))
    found = _problems(tdx)
    assert found["cpu"] == "applies to sev, sev-es, sev-snp guests, not tdx"
    assert found["firmware.digest"] == "applies to sev-snp guests, not tdx"


def test_cpu_errors_are_cvmlaunch_errors() -> None:
    with pytest.raises(CvmlaunchError, match="unknown CPU model 'nope'"):
        CpuSpec.from_name("nope")
    with pytest.raises(CvmlaunchError, match="out of range"):
        CpuSpec.from_family_model_stepping(300, 0, 0)
    with pytest.raises(ProfileError) as e:
        CpuSpec.from_name(5)  # type: ignore[arg-type]
    assert e.value.problems[0].field == "cpu.name"


def test_cpu_forms_one_rule_for_profile_and_flags() -> None:
    assert cpu_from_forms(None, None, (25, 1, 1)) == CpuSpec(0xA00F11)
    assert cpu_from_forms(None, None, (None, None, None)) is None
    flags = ("--vcpu-type", "--vcpu-sig", "--vcpu-family", "--vcpu-model", "--vcpu-stepping")
    with pytest.raises(ProfileError) as e:
        cpu_from_forms("EPYC", None, (None, 1, None), flags)
    assert e.value.problems[0].field == "--vcpu-model"
    assert "exactly one of --vcpu-type" in e.value.problems[0].reason
    with pytest.raises(ProfileError) as e:
        cpu_from_forms(None, None, (None, 1, None))
    assert e.value.problems[0] == ("cpu.model", "goes together with cpu.family and cpu.stepping")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"firmware": Path("/fw\0.fd")}, "firmware.path"),
        ({"firmware": "/fw\0.fd"}, "firmware.path"),
        ({"boot": DirectBoot(BootFile(Path("/k\0")))}, "boot.kernel"),
    ],
)
def test_nul_in_a_path_is_refused_by_name(changes: dict[str, object], field: str) -> None:
    spec = GuestSpec(Technology.SEV_SNP, Path("/fw.fd"), vcpus=2, cpu=EPYC_V4)
    found = _problems(spec._replace(**changes))  # type: ignore[arg-type]
    assert found[field] == "a path cannot contain a NUL character"
