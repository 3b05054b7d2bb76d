"""`matrix`, `solve` and `diff` on the command line: lists and ranges, output forms, ready
profiles that reproduce the digest, exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path
from typing import Any

from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan
from cvmlaunch.profile import load_profile, parse_profile
from tests.conftest import CliRunner

ROOT = Path(__file__).parent.parent
SNP_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
TDX_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"


def _measurement(path: Path, **changes: Any) -> str:
    spec = load_profile(path).to_spec()._replace(**changes)
    return measure(build_plan(spec)).digest.hex()


def test_matrix_json_rows_equal_measure(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("matrix", SNP_PROFILE, "--vcpus", "1-3,8", "--vcpu-type", "EPYC-v4,EPYC-Genoa",
            "--vmm", "qemu,gce", "--guest-features", "0x1,0x21", "--json")  # fmt: skip
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    assert len(rows) == 4 * 2 * 2 * 2
    from cvmlaunch.spec import CpuSpec, Vmm

    for row in rows[::5]:
        cpu = CpuSpec.from_name(row["cpu"])
        expected = _measurement(
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
    assert table[1]["measurement"] == _measurement(default, vcpus=2)
    r = cli("matrix", "--vcpus", "4")
    assert r.code == 0 and r.out.split()[0] == _measurement(default)


def test_matrix_tdx_axes(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("matrix", TDX_PROFILE, "--tdx-page-order", "page,section", "--json")
    rows = json.loads(r.out)["rows"]
    from cvmlaunch.spec import PageOrder, TdConfig

    td = load_profile(TDX_PROFILE).to_spec().td or TdConfig()
    assert [row["page_order"] for row in rows] == ["page", "section"]
    assert rows[1]["measurement"] == _measurement(
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


def test_solve_prints_ready_profiles_that_reproduce_the_digest(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    from cvmlaunch.spec import CpuSpec, Vmm

    target = _measurement(SNP_PROFILE, vcpus=13, cpu=CpuSpec.from_name("EPYC-Genoa"),
                          vmm=Vmm.QEMU, guest_features=0x21)  # fmt: skip
    r = cli("solve", "--measurement", target, SNP_PROFILE, "--json")
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    assert solution["config"]["vcpus"] == 13 and solution["config"]["guest_features"] == "0x21"
    assert "EPYC-Genoa" in solution["cpu_models"]
    # The printed profile is ready to use: it loads and measures to the target.
    spec = parse_profile(tomllib.loads(solution["profile"])).to_spec()
    assert measure(build_plan(spec)).digest.hex() == target


def test_solve_constraints_and_no_solution(cli: CliRunner, debian_ovmf: Path) -> None:
    target = _measurement(SNP_PROFILE, vcpus=2)
    assert cli("solve", "--measurement", target, SNP_PROFILE, "--vcpus", "2").code == 0
    r = cli("solve", "--measurement", target, SNP_PROFILE, "--vcpus", "3")
    assert r.code == 1 and r.out.startswith("0 configuration(s)")
    r = cli("solve", "--measurement", "00" * 48, SNP_PROFILE, "--max-vcpus", "4", "--json")
    assert r.code == 1 and json.loads(r.out)["solutions"] == []


def test_solve_flags_only(cli: CliRunner, debian_ovmf: Path) -> None:
    from cvmlaunch.spec import Vmm

    target = _measurement(SNP_PROFILE, vcpus=5, vmm=Vmm.EC2, cpu=None)
    r = cli("solve", "--measurement", target, "--technology", "sev-snp",
            "--firmware", debian_ovmf, "--json")  # fmt: skip
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    assert solution["config"] | {"cpu": None} == {
        "vcpus": 5, "cpu": None, "cpu_signature": None, "vmm": "ec2", "guest_features": "0x1",
    }  # fmt: skip


def test_diff_traces_names_the_cpu_model(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(cli("measure", SNP_PROFILE, "--trace", "--json").out)
    b.write_text(cli("measure", SNP_PROFILE, "--vcpu-type", "EPYC-v4", "--trace", "--json").out)
    r = cli("diff", a, b, "--json")
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    assert doc["same"] is False and doc["divergence"]["step"] == 543
    cause = doc["divergence"]["causes"][0]
    assert cause["field"] == "cpu.name" and "EPYC-Milan vs EPYC-v4" in cause["meaning"]
    assert cli("diff", a, SNP_PROFILE).code == 0  # a saved trace against its profile


def test_diff_record_against_profile(cli: CliRunner, debian_ovmf: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    assert cli("launch", SNP_PROFILE, "--backend", "sim", "--record", record).code == 0
    assert cli("diff", record, SNP_PROFILE).code == 0
    r = cli("diff", record, ROOT / "profiles" / "ec2-snp.toml")
    assert r.code == 1 and "vmm" in r.out


def test_diff_unusable_inputs(cli: CliRunner, debian_ovmf: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    for args in (
        (junk, SNP_PROFILE),
        (other, SNP_PROFILE),
        (tmp_path / "absent.json", SNP_PROFILE),
    ):
        r = cli("diff", *args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
