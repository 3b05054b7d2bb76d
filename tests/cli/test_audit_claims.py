"""An audit that compares nothing says so: genuine evidence with no claim checked (no profile,
no expectation) is verdict "no-claims", a visible line and `claims_checked: 0`, and exit 1
unless `--allow-no-claims`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cvmlaunch.attest import Expectations, audit
from cvmlaunch.attest.amd import gather
from tests.conftest import VECTORS, CliRunner

SNP = VECTORS / "attestation" / "snp"
TDX = VECTORS / "attestation" / "tdx"
NOW, TDX_NOW = "2025-09-01T00:00:00Z", "2026-06-20T00:00:00Z"
GENOA = (
    *("--report", SNP / "oak_genoa_report_v5.bin", "--vcek", SNP / "oak_genoa_vcek.der"),
    *("--now", NOW),
)
DEBUG_MILAN = (
    *("--report", SNP / "gosevguest_milan_report_v2.bin"),
    *("--vcek", SNP / "gosevguest_milan_vcek.der", "--now", NOW),
)
DCAP = ("--report", TDX / "dcapqvl_tdx_quote_v4.dat", "--now", TDX_NOW)
NO_CLAIMS_LINE = "no claims checked: nothing was expected of this guest"


@pytest.mark.parametrize("evidence", [GENOA, DCAP], ids=["snp", "tdx"])
def test_no_claims_is_said_and_exits_1(cli: CliRunner, evidence: tuple[str, ...]) -> None:
    r = cli("audit", *evidence)
    assert r.code == 1 and r.err == "", r
    lines = r.out.splitlines()
    assert not any(line.startswith("  FAIL") for line in lines)  # every check passed
    assert lines[-2].startswith(NO_CLAIMS_LINE) and "--allow-no-claims" in lines[-2]
    assert lines[-1].startswith("verdict: no-claims (")
    r = cli("audit", *evidence, "--json")
    doc = json.loads(r.out)
    assert r.code == 1 and doc["verdict"] == "no-claims" and doc["claims_checked"] == 0
    assert all(c["ok"] for c in doc["checks"])


@pytest.mark.parametrize("evidence", [GENOA, DCAP], ids=["snp", "tdx"])
def test_allow_no_claims_exits_0_and_still_says_it(
    cli: CliRunner, evidence: tuple[str, ...]
) -> None:
    r = cli("audit", *evidence, "--allow-no-claims")
    assert r.code == 0 and r.err == "", r
    lines = r.out.splitlines()
    assert lines[-2] == f"{NO_CLAIMS_LINE} (accepted: --allow-no-claims)"
    assert lines[-1].startswith("verdict: no-claims (")
    r = cli("audit", *evidence, "--allow-no-claims", "--json")
    doc = json.loads(r.out)
    assert r.code == 0 and (doc["verdict"], doc["claims_checked"]) == ("no-claims", 0)


def test_allow_debug_is_no_claim(cli: CliRunner) -> None:
    r = cli("audit", *DEBUG_MILAN, "--allow-debug", "--json")
    assert r.code == 1 and json.loads(r.out)["claims_checked"] == 0
    assert cli("audit", *DEBUG_MILAN, "--allow-debug", "--allow-no-claims").code == 0


def test_a_failed_check_still_fails_with_allow_no_claims(cli: CliRunner) -> None:
    r = cli("audit", *DEBUG_MILAN, "--allow-no-claims")
    assert r.code == 1
    assert "FAIL  guest.debug" in r.out and NO_CLAIMS_LINE in r.out
    assert r.out.splitlines()[-1].startswith("verdict: fail")


@pytest.mark.parametrize(
    ("flags", "count"),
    [
        (("--expect-policy", "0x30000"), 1),
        (("--expect-policy", "0x30000", "--min-tcb", "bl=1"), 5),  # four TCB values
        (("--min-guest-svn", "0"), 1),
    ],
)
def test_claims_are_counted_and_pass(cli: CliRunner, flags: tuple[str, ...], count: int) -> None:
    r = cli("audit", *GENOA, *flags, "--json")
    doc = json.loads(r.out)
    assert (r.code, doc["verdict"], doc["claims_checked"]) == (0, "pass", count), r
    r = cli("audit", *GENOA, *flags)
    assert r.code == 0 and NO_CLAIMS_LINE not in r.out
    assert r.out.splitlines()[-1].startswith("verdict: pass (")


def test_tdx_claims_are_counted(cli: CliRunner) -> None:
    report = json.loads(cli("audit", *DCAP, "--json").out)["report"]
    mrtd = report["body"]["mrtd"]
    r = cli("audit", *DCAP, "--expect-measurement", mrtd, "--json")
    doc = json.loads(r.out)
    assert (r.code, doc["verdict"], doc["claims_checked"]) == (0, "pass", 1), r


def test_help_documents_the_choice(cli: CliRunner) -> None:
    r = cli("audit", "--help")
    text = " ".join(r.out.split())
    assert "--allow-no-claims" in text
    assert "the verdict is 'no-claims' and the exit status 1, unless --allow-no-claims" in text


def test_library_result_says_no_claims() -> None:
    data = (SNP / "oak_genoa_report_v5.bin").read_bytes()
    certs = gather(vcek=SNP / "oak_genoa_vcek.der")
    now = datetime(2025, 9, 1, tzinfo=UTC)
    bare = audit(data, certs=certs, now=now)
    assert (bare.passed, bare.verdict, bare.claims_checked) == (True, "no-claims", 0)
    assert bare.doc()["claims_checked"] == 0
    assert bare.text().splitlines()[-2].startswith(NO_CLAIMS_LINE)
    claimed = audit(data, certs=certs, expect=Expectations(policy=0x30000), now=now)
    assert (claimed.verdict, claimed.claims_checked) == ("pass", 1)
    assert NO_CLAIMS_LINE not in claimed.text()
    wrong = audit(data, certs=certs, expect=Expectations(policy=0x30001), now=now)
    assert (wrong.verdict, wrong.claims_checked) == ("fail", 1)
