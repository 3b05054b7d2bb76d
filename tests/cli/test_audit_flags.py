"""`cvmlaunch audit` flags: a number its report or quote field cannot hold is an input error
(exit 2, one line naming the flag and the range), not a failed check."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cvmlaunch.attest import Expectations, audit
from cvmlaunch.attest.amd import gather
from cvmlaunch.errors import AttestationError
from tests.conftest import VECTORS, CliRunner

SNP = VECTORS / "attestation" / "snp"
TDX = VECTORS / "attestation" / "tdx"
NOW = "2025-09-01T00:00:00Z"
GENOA = ("--report", SNP / "oak_genoa_report_v5.bin", "--vcek", SNP / "oak_genoa_vcek.der")
# The trustee report carries GUEST_SVN 4, VMPL 0 and POLICY 0x3001f.
TRUSTEE = (
    *("--report", SNP / "trustee_milan_vcek_report.bin"),
    *("--vcek", SNP / "trustee_milan_vcek.der"),
)


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--expect-vmpl", "5", "expected 0..3 (a VMPL), got 5"),
        ("--expect-vmpl", "4", "expected 0..3 (a VMPL)"),
        ("--expect-vmpl", "-1", "expected 0..3 (a VMPL)"),
        ("--min-guest-svn", "99999999999", "expected 0..0xffffffff (a 32-bit GUEST_SVN)"),
        ("--min-guest-svn", "0x100000000", "expected 0..0xffffffff (a 32-bit GUEST_SVN)"),
        ("--min-guest-svn", "-1", "expected 0..0xffffffff"),
        ("--expect-policy", "0x10000000000000000", "expected 0..0xffffffffffffffff"),
        ("--expect-policy=-0x30000", "", "(a 64-bit POLICY)"),
        ("--min-tcb", "snp=256", "COMPONENT=0..255"),
    ],
)
def test_out_of_range_numbers_are_input_errors(
    cli: CliRunner, flag: str, value: str, words: str
) -> None:
    given = (flag, value) if value else (flag,)  # "--flag=-0x1": a value that starts with "-"
    r = cli("audit", *TRUSTEE, "--now", NOW, *given)
    assert r.code == 2, r
    assert r.out == "" and len(r.err.splitlines()) == 1 and "Traceback" not in r.err
    assert flag.partition("=")[0] in r.err and words in r.err, r.err


@pytest.mark.parametrize(
    ("flag", "value", "ok"),
    [
        ("--expect-vmpl", "0", True),
        ("--expect-vmpl", "3", False),  # the largest VMPL: a check, which fails
        ("--min-guest-svn", "4", True),
        ("--min-guest-svn", "0xffffffff", False),
        ("--expect-policy", "0x3001f", True),
        ("--expect-policy", "0xffffffffffffffff", False),
    ],
)
def test_in_range_numbers_are_checks(cli: CliRunner, flag: str, value: str, ok: bool) -> None:
    r = cli("audit", *TRUSTEE, "--now", NOW, flag, value)
    assert r.code == (0 if ok else 1), r
    assert r.err == ""


@pytest.mark.parametrize(
    ("field", "expect"),
    [
        ("vmpl", Expectations(vmpl=4)),
        ("min_guest_svn", Expectations(min_guest_svn=1 << 32)),
        ("policy", Expectations(policy=-1)),
        ("policy", Expectations(policy=1 << 64)),
    ],
)
def test_library_refuses_out_of_range_snp_expectations(field: str, expect: Expectations) -> None:
    data = (SNP / "oak_genoa_report_v5.bin").read_bytes()
    certs = gather(vcek=SNP / "oak_genoa_vcek.der")
    now = datetime(2025, 9, 1, tzinfo=UTC)
    with pytest.raises(AttestationError, match=f"^{field}: expected 0\\.\\."):
        audit(data, certs=certs, expect=expect, now=now)


@pytest.mark.parametrize(
    ("field", "expect"),
    [("td_attributes", Expectations(td_attributes=1 << 64)), ("xfam", Expectations(xfam=-1))],
)
def test_library_refuses_out_of_range_tdx_expectations(field: str, expect: Expectations) -> None:
    data = (TDX / "dcapqvl_tdx_quote_v4.dat").read_bytes()
    now = datetime(2026, 6, 20, tzinfo=UTC)
    with pytest.raises(AttestationError, match=f"^{field}: expected 0\\.\\."):
        audit(data, expect=expect, now=now)
