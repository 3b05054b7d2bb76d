"""`audit --reference`: a published document (every format `publish` writes) as the source of
expectations, against real evidence. dstack's real TD is reproduced from its published values
(firmware descriptor, boot digests, ACPI digests), published in each TD format and audited
with its quote and log; a real SEV-SNP report against documents holding its values. A changed
value fails, naming its check; a document (or folder of documents) of many configurations is
matched by the measurement the evidence reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.abi.snp_report import tcb_parts
from cvmlaunch.attest import read_evidence
from cvmlaunch.attest.snp import parse_snp_report
from cvmlaunch.guest.spec import Technology
from cvmlaunch.outputs import write_output_folder
from cvmlaunch.publish import PublishOptions, Reference, codec, one_per_configuration
from tests.conftest import CliRunner
from tests.published_td import QUOTE, published_dstack_profile

ROOT = Path(__file__).parents[2]
LOG = ROOT / "tests" / "vectors" / "eventlog" / "dstack" / "tdx-lite-getquote.json"
SNP = ROOT / "tests" / "vectors" / "attestation" / "snp"
REPORT, VCEK = SNP / "trustee_milan_vcek_report.bin", SNP / "trustee_milan_vcek.der"
NOW = "2025-09-01T00:00:00Z"
TD_FORMATS = ("json", "rvps", "go-tdx-guest", "corim")
SNP_FORMATS = ("json", "rvps", "go-sev-guest", "corim")


def published(cli: CliRunner, profile: Path, name: str) -> Path:
    out = profile.with_suffix(f".{name}")
    r = cli("publish", profile, "--format", name, "-o", out)
    assert r.code == 0, r.err
    return out


@pytest.mark.parametrize("name", TD_FORMATS)
def test_a_real_td_passes_against_what_was_published_about_it(
    name: str, cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    document = published(cli, published_dstack_profile(cli, tmp_path, debian_ovmf), name)
    r = cli("audit", "--report", QUOTE, "--reference", document, "--event-log", LOG, "--json")
    assert r.code == 0, r.out + r.err
    result = json.loads(r.out)
    assert result["verdict"] == "pass"
    checked = {c["name"] for c in result["checks"]}
    assert {"td.mrtd", "td.rtmr1", "td.rtmr2"} <= checked
    if name in ("json", "go-tdx-guest", "corim"):  # RVPS publishes only what Trustee queries
        assert {"td.rtmr0", "td.mrconfigid", "td.attributes"} <= checked


@pytest.mark.parametrize("name", TD_FORMATS)
def test_another_command_line_fails_at_rtmr2(
    name: str, cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    other = published_dstack_profile(cli, tmp_path, debian_ovmf, load_options_sha384="ab" * 48)
    r = cli("audit", "--report", QUOTE, "--reference", published(cli, other, name), "--json")
    assert r.code == 1
    failed = {c["name"] for c in json.loads(r.out)["checks"] if not c["ok"]}
    assert failed == {"td.rtmr2"}, failed


def snp_reference(**changes: Any) -> Reference:
    """The claims of the real Milan report (Trustee's fixture), as a verifier would publish
    them for that guest: its measurement, POLICY, HOST_DATA and its reported TCB as the
    minimum."""
    report = parse_snp_report(read_evidence(REPORT.read_bytes()).data)
    expect: dict[str, Any] = {
        "measurement": report.measurement,
        "policy": report.policy,
        "host_data": report.host_data,
        "min_tcb": tcb_parts(report.reported_tcb, "Milan"),
    }
    return Reference(Technology.SEV_SNP, expect | changes, {"cpu": "EPYC-Milan"}, {})


def write(folder: Path, name: str, references: list[Reference]) -> Path:
    path = folder / f"refs.{name}"
    path.write_bytes(codec(name).write(references, PublishOptions()))
    return path


def audit_snp(cli: CliRunner, document: Path) -> tuple[int, set[str]]:
    r = cli("audit", "--report", REPORT, "--vcek", VCEK, "--now", NOW, "--reference", document,
            "--json")  # fmt: skip
    assert r.code in (0, 1), r.err
    return r.code, {c["name"] for c in json.loads(r.out)["checks"] if not c["ok"]}


@pytest.mark.parametrize("name", SNP_FORMATS)
def test_a_real_snp_report_against_documents_of_its_values(
    name: str, cli: CliRunner, tmp_path: Path
) -> None:
    if name == "rvps":  # its POLICY fields are the ABI minimum and two bits, not the word
        reference = snp_reference()
        reference = reference._replace(expect={k: v for k, v in reference.expect.items()
                                               if k != "policy"})  # fmt: skip
    else:
        reference = snp_reference()
    assert audit_snp(cli, write(tmp_path, name, [reference])) == (0, set())
    changed = reference._replace(expect={**reference.expect, "measurement": bytes(48)})
    code, failed = audit_snp(cli, write(tmp_path, name, [changed]))
    assert code == 1 and failed == {"guest.measurement"}


def test_the_configuration_with_the_reported_measurement_is_the_one_checked(
    cli: CliRunner, tmp_path: Path
) -> None:
    real = snp_reference()
    others = [
        snp_reference(measurement=bytes([n]) * 48, host_data=bytes([n]) * 32) for n in (1, 2)
    ]
    document = write(tmp_path, "json", [others[0], real, others[1]])
    assert audit_snp(cli, document) == (0, set())
    # None reports it: the first is checked, and its measurement fails.
    code, failed = audit_snp(cli, write(tmp_path, "json", others))
    assert code == 1 and failed == {"guest.measurement", "guest.host_data"}


def test_what_cannot_be_a_reference_is_one_line_exit_2(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("not a document\n")
    tdx_doc = published(cli, published_dstack_profile(cli, tmp_path, debian_ovmf), "json")
    profile = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
    cases = [
        (["--reference", junk], "--reference: not a document of any of"),
        (["--reference", tdx_doc], "publishes no sev-snp values"),
        (["--reference", tdx_doc, "--profile", profile], "--profile or --reference"),
        (["--reference", tmp_path / "absent"], "--reference"),
    ]
    for args, words in cases:
        r = cli("audit", "--report", REPORT, "--vcek", VCEK, "--now", NOW, *args)
        assert r.code == 2 and words in r.err and len(r.err.splitlines()) == 1, r.err


def test_a_batch_checks_each_report_against_its_own_configuration(
    cli: CliRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "a.bin").write_bytes(REPORT.read_bytes())
    (folder / "b.bin").write_bytes(REPORT.read_bytes())
    document = write(tmp_path, "json", [snp_reference(measurement=bytes(48)), snp_reference()])
    r = cli("audit", "--reports", folder, "--vcek", VCEK, "--now", NOW, "--reference",
            document, "--json")  # fmt: skip
    assert r.code == 0, r.out + r.err
    assert [d["verdict"] for d in json.loads(r.out)["reports"]] == ["pass", "pass"]


def test_a_folder_of_documents_one_per_configuration(cli: CliRunner, tmp_path: Path) -> None:
    real = snp_reference()
    others = [snp_reference(measurement=bytes([n]) * 48) for n in (1, 2)]
    folder = tmp_path / "published"
    for refs in ([others[0], real, others[1]], others):
        documents, index = one_per_configuration("go-sev-guest", refs, PublishOptions())
        write_output_folder(folder, documents, index, name="--output-dir")
        expected = (0, set()) if real in refs else (1, {"guest.measurement"})
        assert audit_snp(cli, folder) == expected
    # Any format, and files of several: each file read, the index aside.
    (folder / "more.json").write_bytes(codec("json").write([real], PublishOptions()))
    assert audit_snp(cli, folder) == (0, set())
    (folder / "notes.txt").write_text("not a document\n")
    r = cli("audit", "--report", REPORT, "--vcek", VCEK, "--now", NOW, "--reference", folder)
    assert r.code == 2 and r.out == ""
    assert r.err.startswith(f"cvmlaunch: error: --reference: {folder / 'notes.txt'}: ")
    assert "not a document of any of" in r.err and len(r.err.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("audit", "--report", REPORT, "--vcek", VCEK, "--now", NOW, "--reference", empty)
    assert r.code == 2 and r.err == (
        f"cvmlaunch: error: --reference: {empty} holds no reference document\n"
    )
