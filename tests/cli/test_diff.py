"""`diff` on the command line: traces, launch records and profiles, exit codes and one-line
errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CliRunner

ROOT = Path(__file__).parents[2]
SNP_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"


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


def test_diff_trace_with_a_non_numeric_signature(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    doc = json.loads(cli("measure", SNP_PROFILE, "--trace", "--json").out)
    doc["inputs"]["cpu"]["signature"] = "zz"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    r = cli("diff", edited, SNP_PROFILE)
    assert r.code == 2 and "cpu.signature" in r.err
