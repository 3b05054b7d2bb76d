"""`audit --event-log`: a TDX quote's CC event log must replay to the RTMRs the quote signs.

Real pairs from the same boot: go-tdx-guest's COS-113 quote with its CCEL (binary, with and
without the ACPI table in front) and dstack's quote with its JSON event list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvmlaunch.attest import audit
from cvmlaunch.attest.eventlog import parse_ccel, replay
from cvmlaunch.errors import AttestationError
from tests.conftest import VECTORS, CliRunner

LOGS = VECTORS / "eventlog"
COS_QUOTE = LOGS / "go-tdx-guest" / "cos-113-tdx-quote.dat"
COS_LOG = LOGS / "go-tdx-guest" / "ccel_data.dat"
COS_TABLE = LOGS / "go-tdx-guest" / "ccel_table.dat"
DSTACK_QUOTE = LOGS / "dstack" / "tdx-lite-quote.bin"
DSTACK_LOG = LOGS / "dstack" / "tdx-lite-getquote.json"
GENOA = VECTORS / "attestation" / "snp" / "oak_genoa_report_v5.bin"
NOW = "2026-06-20T00:00:00Z"


def _event_log_checks(out: str) -> dict[str, bool]:
    doc = json.loads(out)
    return {c["name"]: c["ok"] for c in doc["checks"] if c["name"].startswith("event_log.")}


@pytest.fixture
def cos_with_table(tmp_path: Path) -> Path:
    path = tmp_path / "ccel-with-table.bin"
    path.write_bytes(COS_TABLE.read_bytes() + COS_LOG.read_bytes())
    return path


@pytest.mark.parametrize("which", ["cos-log", "cos-table+log", "dstack-json"])
def test_a_real_log_replays_to_its_quote(which: str, cos_with_table: Path, cli: CliRunner) -> None:
    quote, log = {
        "cos-log": (COS_QUOTE, COS_LOG),
        "cos-table+log": (COS_QUOTE, cos_with_table),
        "dstack-json": (DSTACK_QUOTE, DSTACK_LOG),
    }[which]
    r = cli("audit", "--report", quote, "--event-log", log, "--now", NOW, "--allow-no-claims",
            "--json")  # fmt: skip
    assert r.code == 0, r.out
    assert _event_log_checks(r.out) == {f"event_log.rtmr{n}": True for n in range(4)}
    doc = json.loads(r.out)
    events = doc["report"]["event_log"]["events"]
    assert events and all(e["rtmr"] in (0, 1, 2, 3) for e in events)
    # The last event of each register leaves it at the value the quote signs.
    last = {e["rtmr"]: e["rtmr_after"] for e in events}
    replayed = doc["report"]["event_log"]["replayed"]
    for register, value in last.items():
        assert replayed[register] == value
    assert replayed == doc["report"]["body"]["rtmrs"]


def test_an_altered_event_fails_at_its_rtmr(tmp_path: Path, cli: CliRunner) -> None:
    log = parse_ccel(COS_LOG.read_bytes(), allow_padding=True)
    victim = next(step for step in log.events if step.rtmr == 1)
    assert victim.file_offset is not None and victim.contents is not None
    data = bytearray(COS_LOG.read_bytes())
    at = data.find(victim.contents, victim.file_offset)
    assert at > 0
    data[at] ^= 0x01
    altered = tmp_path / "altered.bin"
    altered.write_bytes(bytes(data))
    r = cli("audit", "--report", COS_QUOTE, "--event-log", altered, "--now", NOW,
            "--allow-no-claims", "--json")  # fmt: skip
    assert r.code == 1
    assert _event_log_checks(r.out) == {
        "event_log.rtmr0": True, "event_log.rtmr1": False,
        "event_log.rtmr2": True, "event_log.rtmr3": True,
    }  # fmt: skip
    assert replay(parse_ccel(bytes(data), allow_padding=True))[1] != replay(log)[1]


def test_another_tds_log_fails(cli: CliRunner) -> None:
    r = cli("audit", "--report", DSTACK_QUOTE, "--event-log", COS_LOG, "--now", NOW,
            "--allow-no-claims", "--json")  # fmt: skip
    assert r.code == 1
    assert not any(_event_log_checks(r.out).values())


def test_unusable_logs_are_one_line_exit_2(tmp_path: Path, cli: CliRunner) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(range(256)) * 64)
    cases = [
        (("--report", COS_QUOTE, "--event-log", "/dev/zero"),
         "--event-log /dev/zero: a character"),
        (("--report", COS_QUOTE, "--event-log", tmp_path / "absent"), "--event-log "),
        (("--report", COS_QUOTE, "--event-log", junk), "event log"),
        (("--report", GENOA, "--event-log", COS_LOG),
         "--event-log: replays against a TDX quote's RTMRs; an SEV-SNP report has none"),
    ]  # fmt: skip
    for args, words in cases:
        r = cli("audit", *args, "--now", NOW)
        assert r.code == 2, (args, r)
        assert r.out == "" and len(r.err.splitlines()) == 1 and words in r.err, r.err


def test_the_api_refuses_a_log_with_an_snp_report() -> None:
    with pytest.raises(AttestationError, match="this is an SEV-SNP report"):
        audit(GENOA.read_bytes(), event_log=COS_LOG.read_bytes())
