"""`matrix`, `solve` and `diff` on the command line: lists and ranges, output forms, ready
profiles that reproduce the digest, exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.guest.profile import load_profile, parse_profile
from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan
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
    from cvmlaunch.guest.spec import CpuSpec, Vmm

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
    from cvmlaunch.guest.spec import PageOrder, TdConfig

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
    from cvmlaunch.guest.spec import CpuSpec, Vmm

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
    from cvmlaunch.guest.spec import Vmm

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


# ---- regressions found by review --------------------------------------------------------


def test_diff_precomputed_firmware_digest(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    default = ROOT / "cvmlaunch" / "data" / "default.toml"
    digest = json.loads(cli("measure", "--json").out)["firmware_digest"]
    fw = 'path = "/usr/share/ovmf/OVMF.fd"'
    text = default.read_text().replace(fw, f'{fw}\ndigest = "{digest}"')
    assert digest in text
    pre = tmp_path / "pre.toml"
    pre.write_text(text)
    assert cli("diff", pre, default).code == 0  # the same measurement, however computed
    pre.write_text(text.replace("vcpus = 4", "vcpus = 2"))
    r = cli("diff", pre, default, "--json")
    assert r.code == 1
    assert json.loads(r.out)["divergence"]["causes"][0]["field"] == "vcpus"


def test_diff_record_vs_trace_names_the_cmdline(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    profile = ROOT / "profiles" / "direct-boot-snp.toml"
    record, trace = tmp_path / "record.json", tmp_path / "trace.json"
    assert cli("launch", profile, "--backend", "sim", "--record", record).code == 0
    trace.write_text(cli("measure", profile, "--append", "quiet", "--trace", "--json").out)
    r = cli("diff", record, trace, "--json")
    assert r.code == 1
    causes = json.loads(r.out)["divergence"]["causes"]
    assert [c["field"] for c in causes] == ["boot.cmdline"]


def test_diff_reads_a_profile_by_content(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "guest.profile"
    copy.write_text(SNP_PROFILE.read_text())
    assert cli("diff", copy, SNP_PROFILE).code == 0


def test_solve_profiles_load_from_anywhere(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("fw.fd").write_bytes(debian_ovmf.read_bytes())
    target = _measurement(TDX_PROFILE)
    r = cli("solve", "--measurement", target, "--technology", "tdx", "--firmware", "fw.fd",
            "--append", "x", "--json")  # fmt: skip
    assert r.code == 2 and "--append" in r.err  # TDX has no measured direct boot
    r = cli("solve", "--measurement", target, "--technology", "tdx", "--firmware", "fw.fd",
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    assert solution["any"] == ["memory_mib", "raw_data_tail"]
    monkeypatch.chdir(ROOT)  # elsewhere: the printed firmware path is absolute
    spec = parse_profile(tomllib.loads(solution["profile"])).to_spec()
    assert measure(build_plan(spec)).digest.hex() == target


def test_solve_cmdline_with_control_characters(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = ROOT / "profiles" / "direct-boot-snp.toml"
    cmdline = 'console=ttyS0 a\x7fb "quoted"\ttab'
    spec = load_profile(profile).to_spec()
    assert spec.boot is not None
    target = _measurement(profile, boot=spec.boot._replace(cmdline=cmdline))
    r = cli("solve", "--measurement", target, profile, "--append", cmdline, "--vcpus", "1",
            "--max-vcpus", "4", "--json")  # fmt: skip
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    again = parse_profile(tomllib.loads(solution["profile"])).to_spec()
    assert again.boot is not None and again.boot.cmdline == cmdline


def test_solve_and_matrix_unusable_input(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    tik = tmp_path / "tik.bin"
    tik.write_bytes(bytes(16))
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"schema_version = 1 # \xff\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    for args, words in (
        (("solve", "--measurement", "00", SNP_PROFILE), "48 bytes"),
        (("solve", "--measurement", "00" * 48, SNP_PROFILE, "--tik", tik), "--tik"),
        (("matrix", SNP_PROFILE, "--tik", tik), "--tik"),
        (("matrix", SNP_PROFILE, "--vcpus", "1-99999"), "more than"),
        (("explain", bad), "not valid TOML"),
        (("diff", deep, SNP_PROFILE), "nested too deeply"),
        (("measure", SNP_PROFILE, "--append", "\udcff"), "--append"),
    ):
        r = cli(*args)
        assert r.code == 2 and words in r.err, (args, r)
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_diff_trace_with_a_non_numeric_signature(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    doc = json.loads(cli("measure", SNP_PROFILE, "--trace", "--json").out)
    doc["inputs"]["cpu"]["signature"] = "zz"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    r = cli("diff", edited, SNP_PROFILE)
    assert r.code == 2 and "cpu.signature" in r.err
