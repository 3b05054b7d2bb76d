"""The guest flags of `solve` and `matrix` read as a search space: the fields a flag fixes,
the placeholders of a guest given by flags alone, and matrix axes from value lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.analysis.space import (
    FIELDS,
    MATRIX_FLAGS,
    axes_from_lists,
    fixed_fields,
    placeholders,
)
from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.fields import BY_FLAG
from cvmlaunch.guest.spec import CpuSpec, GuestSpec, PageOrder, RawDataTail, Technology, Vmm

SNP = GuestSpec(Technology.SEV_SNP, Path("/fw.fd"), vcpus=4, cpu=CpuSpec.from_name("EPYC-v4"),
                guest_features=0x21)  # fmt: skip
SEV_ES = GuestSpec(Technology.SEV_ES, Path("/fw.fd"), vcpus=2, cpu=CpuSpec(0xA00F11))
TDX = GuestSpec(Technology.TDX, Path("/fw.fd"), memory_mib=4096)


@pytest.mark.parametrize(
    ("given", "fixed"),
    [
        ((), set()),
        (("--vcpus",), {"vcpus"}),
        (("--vcpu-type",), {"cpu"}),
        (("--vcpu-sig",), {"cpu"}),
        (("--vcpu-family", "--vcpu-model", "--vcpu-stepping"), {"cpu"}),
        (("--vmm", "--guest-features"), {"vmm", "guest_features"}),
        (("--tdx-page-order", "--raw-data-tail"), {"page_order", "raw_data_tail"}),
        (("--memory-mib",), {"memory_mib"}),
        (("--vmsa-gpa",), {"vmsa_gpa"}),  # GCE's Genoa GPA is searched too
        # Flags of fields the search never varies fix nothing.
        (("--firmware", "--append", "--kernel", "--xfam"), set()),
    ],
)
def test_fixed_fields(given: tuple[str, ...], fixed: set[str]) -> None:
    assert fixed_fields(given) == fixed


def test_every_searched_field_has_a_flag_that_fixes_it() -> None:
    assert fixed_fields(list(BY_FLAG)) == set(FIELDS)


@pytest.mark.parametrize(
    ("technology", "fixed", "expected"),
    [
        ("sev-snp", frozenset(), {"--vcpus": 1, "--vcpu-type": "EPYC-v4"}),
        ("sev-es", frozenset(), {"--vcpus": 1, "--vcpu-type": "EPYC-v4"}),
        ("sev-snp", frozenset({"cpu"}), {"--vcpus": 1}),
        ("sev-snp", frozenset({"vcpus", "cpu"}), {}),
        ("sev-es", frozenset({"vcpus"}), {"--vcpu-type": "EPYC-v4"}),
        # No VMSAs, so no CPU in the digest.
        ("sev", frozenset(), {"--vcpus": 1}),
        ("tdx", frozenset(), {"--vcpus": 1}),
        (None, frozenset(), {"--vcpus": 1}),
    ],
)
def test_placeholders(technology: str | None, fixed: frozenset[str], expected: object) -> None:
    assert placeholders(technology, fixed) == expected


def test_axes_without_lists_hold_the_base() -> None:
    axes = axes_from_lists(SNP, {})
    assert axes.vcpus == (4,) and axes.cpus == (SNP.cpu,) and axes.vmms == (Vmm.QEMU,)
    assert axes.guest_features == (0x21,)
    assert not axes.page_orders and not axes.raw_data_tails and not axes.memory_mibs
    assert axes_from_lists(SNP, dict.fromkeys(MATRIX_FLAGS)) == axes
    # Only an SNP VMSA holds SEV_FEATURES.
    assert axes_from_lists(SEV_ES, {}).guest_features == (0,)


def test_axes_from_lists() -> None:
    lists: dict[str, Any] = {
        "--vcpus": [1, 2, 3],
        "--vcpu-type": ["EPYC-Milan", "EPYC-Genoa"],
        "--vmm": [Vmm.QEMU, Vmm.EC2],
        "--guest-features": [1, 0x21],
    }
    axes = axes_from_lists(SNP, lists)
    assert axes.vcpus == (1, 2, 3)
    assert axes.cpus == (CpuSpec.from_name("EPYC-Milan"), CpuSpec.from_name("EPYC-Genoa"))
    assert axes.vmms == (Vmm.QEMU, Vmm.EC2) and axes.guest_features == (1, 0x21)
    assert axes_from_lists(SEV_ES, {"--vcpu-sig": [0xA00F11, 0xB00F21]}).cpus == (
        CpuSpec(0xA00F11),
        CpuSpec(0xB00F21),
    )


def test_tdx_axes_from_lists() -> None:
    lists: dict[str, Any] = {
        "--tdx-page-order": ["section", "page"],
        "--raw-data-tail": ["zero"],
        "--memory-mib": [1024, 2048],
    }
    axes = axes_from_lists(TDX, lists)
    assert axes.page_orders == (PageOrder.SECTION, PageOrder.PAGE)
    assert axes.raw_data_tails == (RawDataTail.ZERO,) and axes.memory_mibs == (1024, 2048)
    assert axes.guest_features == (0,) and axes.vcpus == (1,)


def test_unknown_cpu_model_and_flag_are_named() -> None:
    with pytest.raises(ProfileError) as e:
        axes_from_lists(SNP, {"--vcpu-type": ["EPYC-Milan", "EPYC-Nonesuch"]})
    (problem,) = e.value.problems
    assert problem.field == "--vcpu-type" and "EPYC-Nonesuch" in problem.reason
    with pytest.raises(ProfileError) as e:
        axes_from_lists(SNP, {"--firmware": ["/a", "/b"]})
    assert [p.field for p in e.value.problems] == ["--firmware"]
