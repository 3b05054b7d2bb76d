"""`matrix` on the command line: lists and ranges, output forms, exit codes and one-line
errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from cvmlaunch.guest.profile import load_profile
from tests.conftest import CliRunner
from tests.sweep_checks import profile_measurement

ROOT = Path(__file__).parents[2]
SNP_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
TDX_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"


def test_matrix_json_rows_equal_measure(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("matrix", SNP_PROFILE, "--vcpus", "1-3,8", "--vcpu-type", "EPYC-v4,EPYC-Genoa",
            "--vmm", "qemu,gce", "--guest-features", "0x1,0x21", "--json")  # fmt: skip
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    assert len(rows) == 4 * 2 * 2 * 2
    from cvmlaunch.guest.spec import CpuSpec, Vmm

    for row in rows[::5]:
        cpu = CpuSpec.from_name(row["cpu"])
        expected = profile_measurement(
            SNP_PROFILE, vcpus=row["vcpus"], cpu=cpu, vmm=Vmm(row["vmm"]),
            guest_features=int(row["guest_features"], 16),
        )  # fmt: skip
        assert row["measurement"] == expected, row


def test_matrix_csv_and_text(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("matrix", "--vcpus", "1-2", "--csv")  # the embedded default guest
    assert r.code == 0, r.err
    table = list(csv.DictReader(io.StringIO(r.out)))
    assert [row["vcpus"] for row in table] == ["1", "2"]
    default = ROOT / "cvmlaunch" / "data" / "default.toml"
    assert table[1]["measurement"] == profile_measurement(default, vcpus=2)
    r = cli("matrix", "--vcpus", "4")
    assert r.code == 0 and r.out.split()[0] == profile_measurement(default)


def test_matrix_tdx_axes(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("matrix", TDX_PROFILE, "--tdx-page-order", "page,section", "--json")
    rows = json.loads(r.out)["rows"]
    from cvmlaunch.guest.spec import PageOrder, TdConfig

    td = load_profile(TDX_PROFILE).to_spec().td or TdConfig()
    assert [row["page_order"] for row in rows] == ["page", "section"]
    assert rows[1]["measurement"] == profile_measurement(
        TDX_PROFILE, td=td._replace(page_order=PageOrder.SECTION)
    )


def test_matrix_bad_lists_are_one_line_errors(cli: CliRunner, debian_ovmf: Path) -> None:
    for args, words in (
        (("--vcpus", "8-1"), "LOW <= HIGH"),
        (("--vcpu-type", "EPYC,Nehalem"), "unknown CPU model 'Nehalem'"),
        (("--vmm", "qemu,xen"), "expected one of"),
        (("--tdx-page-order", "page"), "tdx"),
    ):
        r = cli("matrix", SNP_PROFILE, *args)
        assert r.code == 2 and words in r.err and len(r.err.strip().splitlines()) == 1, (args, r)
