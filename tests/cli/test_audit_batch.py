"""`cvmlaunch audit --reports`: many reports in one process. Each result equals the audit of
that report alone; hostile directory entries are skipped (logged) or refused as that
report's error; exit 0 only when every report passes; what stops the run is one line."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VECTORS, CliResult, CliRunner

SNP = VECTORS / "attestation" / "snp"
TDX = VECTORS / "attestation" / "tdx"
NOW = "2025-09-01T00:00:00Z"
TDX_NOW = "2025-06-19T14:00:00Z"
SNP_FIXTURES = {
    "oak_genoa_report_v5.bin": ("--vcek", "oak_genoa_vcek.der"),
    "oak_turin_report_v5.bin": ("--vcek", "oak_turin_vcek.der"),
    "gosevguest_milan_report_v2.bin": ("--vcek", "gosevguest_milan_vcek.der"),
    "trustee_milan_vcek_report.bin": ("--vcek", "trustee_milan_vcek.der"),
    "trustee_milan_vlek_report.bin": ("--vlek", "trustee_milan_vlek.der"),
    "virtee_milan_report.hex": ("--vcek", "virtee_milan_vcek.der"),
}
TDX_FIXTURES = sorted(TDX.glob("*.dat"))
DCAP = TDX / "dcapqvl_tdx_quote_v4.dat"
OK_FLAGS = ("--allow-no-claims", "--allow-debug")
VCEK_BASE64 = base64.b64encode((SNP / "oak_genoa_vcek.der").read_bytes()).decode()


def one_line_error(r: CliResult, *words: str) -> None:
    assert r.code == 2, r
    assert r.out == "" and "Traceback" not in r.err
    assert len(r.err.splitlines()) == 1 and r.err.startswith("cvmlaunch"), r.err
    for w in words:
        assert w in r.err, r.err


def batch_docs(r: CliResult) -> list[dict[str, Any]]:
    doc = json.loads(r.out)
    assert set(doc) == {"reports", "summary"}
    reports: list[dict[str, Any]] = doc["reports"]
    return reports


def single_doc(cli: CliRunner, *args: str | Path) -> dict[str, Any]:
    r = cli("audit", *args, "--json", *OK_FLAGS)
    assert r.code in (0, 1), r
    doc: dict[str, Any] = json.loads(r.out)
    return doc


def without_name(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "name"}


# ---- the same result as each report alone -------------------------------------------------


def test_jsonl_results_equal_single_audits_for_every_fixture(
    cli: CliRunner, tmp_path: Path
) -> None:
    records, expected = [], []
    for report, (flag, vek) in sorted(SNP_FIXTURES.items()):
        data = (SNP / report).read_bytes()
        text = data.decode() if report.endswith(".hex") else base64.b64encode(data).decode()
        certs = base64.b64encode((SNP / vek).read_bytes()).decode()
        records.append({"report": text, "certs": [certs], "name": report})
        expected.append(single_doc(cli, "--report", SNP / report, flag, SNP / vek, "--now", NOW))
    for quote in TDX_FIXTURES:
        records.append({"report": quote.read_bytes().hex(), "name": quote.name})
        expected.append(single_doc(cli, "--report", quote, "--now", NOW))
    path = tmp_path / "fleet.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    r = cli("audit", "--reports", path, "--now", NOW, "--json", *OK_FLAGS)
    docs = batch_docs(r)
    assert [d["name"] for d in docs] == [r["name"] for r in records]
    assert [without_name(d) for d in docs] == expected
    verdicts = [d["verdict"] for d in expected]
    assert r.code == (0 if all(v in ("pass", "no-claims") for v in verdicts) else 1)


def test_directory_results_equal_single_audits(cli: CliRunner, tmp_path: Path) -> None:
    for quote in TDX_FIXTURES:
        (tmp_path / quote.name).write_bytes(quote.read_bytes())
    r = cli("audit", "--reports", tmp_path, "--now", TDX_NOW, "--json", *OK_FLAGS)
    docs = batch_docs(r)
    assert [Path(d["name"]).name for d in docs] == [q.name for q in TDX_FIXTURES]
    for doc, quote in zip(docs, TDX_FIXTURES, strict=True):
        assert without_name(doc) == single_doc(cli, "--report", quote, "--now", TDX_NOW)


def test_directory_of_snp_reports_shares_the_command_lines_vcek(
    cli: CliRunner, tmp_path: Path
) -> None:
    report = SNP / "oak_genoa_report_v5.bin"
    vcek = ("--vcek", SNP / "oak_genoa_vcek.der")
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(report.read_bytes())
    (tmp_path / "c.b64").write_bytes(base64.b64encode(report.read_bytes()))
    r = cli("audit", "--reports", tmp_path, *vcek, "--now", NOW, "--expect-policy", "0x30000")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert len(lines) == 4 and all(": pass (sev-snp;" in line for line in lines[:3])
    assert lines[3] == "3 reports: 3 passed, 0 failed, 0 not audited"
    single = cli("audit", "--report", report, *vcek, "--now", NOW, "--expect-policy", "0x30000")
    assert single.code == 0


def test_text_lines_name_the_failed_checks(cli: CliRunner, tmp_path: Path) -> None:
    changed = bytearray(DCAP.read_bytes())
    changed[0x30 + 0x88] ^= 1  # in the TD report body's MRTD: signed, so the signature fails
    (tmp_path / "a-good.dat").write_bytes(DCAP.read_bytes())
    (tmp_path / "b-changed.dat").write_bytes(bytes(changed))
    r = cli("audit", "--reports", tmp_path, "--now", TDX_NOW, "--allow-no-claims")
    assert r.code == 1, r
    good, bad, summary = r.out.splitlines()
    assert good.endswith("a-good.dat: no-claims (tdx; 18 checks)")
    assert "b-changed.dat: fail (tdx; 18 checks, failed: quote.signature)" in bad
    assert summary == "2 reports: 1 passed, 1 failed, 0 not audited"


# ---- exit status ---------------------------------------------------------------------------


def test_exit_0_only_when_every_report_passes(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "q.dat").write_bytes(DCAP.read_bytes())
    assert cli("audit", "--reports", tmp_path, "--now", TDX_NOW, *OK_FLAGS).code == 0
    # Nothing expected and no --allow-no-claims: as a single audit, not a pass.
    assert cli("audit", "--reports", tmp_path, "--now", TDX_NOW).code == 1
    (tmp_path / "r.dat").write_bytes(b"\0" * 100)  # not evidence: listed, fails the run
    r = cli("audit", "--reports", tmp_path, "--now", TDX_NOW, *OK_FLAGS)
    assert r.code == 1
    assert r.out.splitlines()[-1] == "2 reports: 1 passed, 0 failed, 1 not audited"


# ---- hostile directory entries --------------------------------------------------------------


def test_hostile_entries_are_skipped_or_refused_in_one_line(
    cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "1-quote.dat").write_bytes(DCAP.read_bytes())
    os.mkfifo(tmp_path / "2-fifo")  # nobody writes it: reading it would block forever
    (tmp_path / "3-zero").symlink_to("/dev/zero")  # endless
    with (tmp_path / "4-huge").open("wb") as f:
        f.truncate(64 << 20)  # sparse: large without using the disk
    (tmp_path / "5-dir").mkdir()
    (tmp_path / "6-quote.dat").write_bytes(DCAP.read_bytes())
    r = cli("-v", "audit", "--reports", tmp_path, "--now", TDX_NOW, *OK_FLAGS)
    assert r.code == 1, r
    lines = r.out.splitlines()
    assert len(lines) == 4, lines
    assert lines[0].endswith("1-quote.dat: no-claims (tdx; 18 checks)")
    assert "4-huge: error: --reports" in lines[1] and "larger than 1 MiB" in lines[1]
    assert lines[2].endswith("6-quote.dat: no-claims (tdx; 18 checks)")
    assert lines[3] == "3 reports: 2 passed, 0 failed, 1 not audited"
    skipped = [line for line in r.err.splitlines() if "audit.report_skipped" in line]
    assert len(skipped) == 3
    assert all(n in r.err for n in ("2-fifo", "3-zero", "5-dir"))


def test_a_directory_of_nothing_auditable_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    one_line_error(cli("audit", "--reports", tmp_path), "no reports")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "missing"])
def test_unreadable_batch_paths_are_one_line(cli: CliRunner, tmp_path: Path, target: str) -> None:
    path = Path(target)
    if target == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    elif target == "missing":
        path = tmp_path / "missing"
    one_line_error(cli("audit", "--reports", path), "--reports", str(path))


# ---- JSON lines ------------------------------------------------------------------------------


def test_jsonl_records_that_cannot_be_audited_are_listed(cli: CliRunner, tmp_path: Path) -> None:
    good = {"report": base64.b64encode(DCAP.read_bytes()).decode()}
    lines = [
        json.dumps(good),
        "",  # blank lines are not records
        "not json",
        json.dumps({"report": 5}),
        json.dumps({**good, "vcek": "x"}),  # a key we do not know is refused, not ignored
        json.dumps({**good, "certs": VCEK_BASE64}),  # certificates for a TDX quote
        json.dumps({**good, "event_log": "!!"}),
        json.dumps({**good, "name": "last"}),
    ]
    path = tmp_path / "fleet.jsonl"
    path.write_text("\n".join(lines) + "\n")
    r = cli("audit", "--reports", path, "--now", TDX_NOW, "--json", *OK_FLAGS)
    assert r.code == 1, r
    docs = batch_docs(r)
    assert [d["verdict"] for d in docs] == ["no-claims", *["error"] * 5, "no-claims"]
    errors = [d["error"] for d in docs if d["verdict"] == "error"]
    assert "not a JSON object" in errors[0]
    assert '"report" must be base64 or hex text' in errors[1]
    assert "unknown key 'vcek'" in errors[2]
    assert "carries its own" in errors[3]
    assert '"event_log": not base64' in errors[4]
    assert docs[-1]["name"] == "last" and docs[0]["name"] == f"{path}:1"
    assert json.loads(r.out)["summary"] == {"passed": 2, "failed": 0, "not_audited": 5}


def test_a_report_given_as_a_batch_is_one_line(cli: CliRunner) -> None:
    one_line_error(
        cli("audit", "--reports", SNP / "oak_genoa_report_v5.bin"),
        "neither a directory nor a JSON-lines file",
    )


@pytest.mark.parametrize("form", ["ccel-base64", "dstack-json"])
def test_jsonl_event_logs_equal_single_audits(cli: CliRunner, tmp_path: Path, form: str) -> None:
    """A quote with its event log as one record: the result equals `--report --event-log`
    (one check per RTMR)."""
    logs = VECTORS / "eventlog"
    if form == "ccel-base64":
        quote, log = (
            logs / "go-tdx-guest" / "cos-113-tdx-quote.dat",
            logs / "go-tdx-guest" / "ccel_data.dat",
        )
        value: object = base64.b64encode(log.read_bytes()).decode()
    else:
        quote, log = (
            logs / "dstack" / "tdx-lite-quote.bin",
            logs / "dstack" / "tdx-lite-getquote.json",
        )
        value = json.loads(log.read_text())
    now = "2026-06-20T00:00:00Z"
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"report": quote.read_bytes().hex(), "event_log": value}) + "\n")
    r = cli("audit", "--reports", path, "--now", now, "--json", *OK_FLAGS)
    (doc,) = batch_docs(r)
    single = single_doc(cli, "--report", quote, "--event-log", log, "--now", now)
    assert without_name(doc) == single
    names = [c["name"] for c in single["checks"]]
    assert [n for n in names if n.startswith("event_log.")] == [
        f"event_log.rtmr{n}" for n in range(4)
    ]


# ---- flags ----------------------------------------------------------------------------------


def test_report_and_reports_exclude_each_other(cli: CliRunner, tmp_path: Path) -> None:
    one_line_error(
        cli("audit", "--report", DCAP, "--reports", tmp_path), "not allowed with argument"
    )
    one_line_error(cli("audit"), "--report", "--reports")


def test_event_log_flag_is_refused_with_reports(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "q.dat").write_bytes(DCAP.read_bytes())
    log = tmp_path.parent / "log.bin"
    log.write_bytes(b"x")
    one_line_error(
        cli("audit", "--reports", tmp_path, "--event-log", log), "--event-log", "JSON-lines"
    )
