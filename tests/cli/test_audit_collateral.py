"""`audit --collateral`: a TDX quote's TCB status from Intel's collateral (dcap-qvl's real
samples) and an SEV-SNP report's revocation from AMD's CRL, in the result like every other
check; without collateral the result says the status was not evaluated."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding

from cvmlaunch.attest import Auditor, Collateral, read_evidence
from cvmlaunch.attest import amd_crl as crl_module
from cvmlaunch.attest.amd import gather
from cvmlaunch.attest.amd_crl import load_amd_crl
from cvmlaunch.attest.roots import amd_chain
from tests.attest_fakes import amd_name, fake_ark, rsa_key
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[2]
DCAP = ROOT / "tests" / "vectors" / "attestation" / "collateral" / "dcap-qvl"
QUOTE, COLLATERAL = DCAP / "tdx_quote", DCAP / "tdx_quote_collateral.json"
INSIDE = "2025-06-19T11:16:03Z"  # an hour after the TCB info's issueDate
AFTER = "2025-08-01T00:00:00Z"  # past its nextUpdate
SNP = ROOT / "tests" / "vectors" / "attestation" / "snp"
REPORT, VCEK = SNP / "trustee_milan_vcek_report.bin", SNP / "trustee_milan_vcek.der"


def tdx(cli: CliRunner, *args: str | Path) -> tuple[int, dict[str, Any]]:
    r = cli("audit", "--report", QUOTE, "--allow-no-claims", "--json", *args)
    assert r.code in (0, 1), r.err
    return r.code, json.loads(r.out)


def test_a_current_platform_is_up_to_date(cli: CliRunner) -> None:
    code, doc = tdx(cli, "--collateral", COLLATERAL, "--now", INSIDE)
    assert code == 0 and doc["tcb_status"] == {"evaluated": True, "status": "UpToDate"}
    names = {c["name"] for c in doc["checks"]}
    assert {"collateral.tcb_info.signature", "collateral.qe_identity.signature", "pck.revoked",
            "tcb.status", "qe.identity", "collateral.tcb_info.fmspc"} <= names  # fmt: skip
    text = cli("audit", "--report", QUOTE, "--allow-no-claims", "--collateral", COLLATERAL,
               "--now", INSIDE).out  # fmt: skip
    assert "TCB status: UpToDate" in text.splitlines()


def test_stale_collateral_fails_its_own_check(cli: CliRunner) -> None:
    code, doc = tdx(cli, "--collateral", COLLATERAL, "--now", AFTER)
    failed = {c["name"] for c in doc["checks"] if not c["ok"]}
    assert code == 1 and "collateral.tcb_info.validity" in failed
    assert doc["tcb_status"]["evaluated"] and "not usable" in doc["tcb_status"]["status"]


def test_without_collateral_the_status_is_said_not_evaluated(cli: CliRunner) -> None:
    code, doc = tdx(cli, "--now", INSIDE)
    assert code == 0 and doc["tcb_status"]["evaluated"] is False
    assert "not evaluated" in doc["tcb_status"]["status"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--accept-tcb", "OutOfDate"], "--accept-tcb: applies with --collateral"),
        (["--collateral", COLLATERAL, "--accept-tcb", "Stale"], "'Stale' is no TCB status"),
        (["--collateral", ROOT / "README.md"], "--collateral"),
    ],
)
def test_unusable_collateral_flags(cli: CliRunner, args: list[Any], message: str) -> None:
    r = cli("audit", "--report", QUOTE, *args)
    assert r.code == 2 and message in r.err and len(r.err.splitlines()) == 1, r.err
    assert r.err.count("--collateral") <= 1 + ("--collateral" in message), r.err


def test_collateral_that_is_no_file_is_named_once(cli: CliRunner, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, reason in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device"),
                         (tmp_path / "absent", "No such file")):  # fmt: skip
        r = cli("audit", "--report", QUOTE, "--collateral", path)
        assert r.code == 2 and r.err.startswith(f"cvmlaunch: error: --collateral {path}: {reason}")


def amd_crl(*serials: int, days: int = 30) -> bytes:
    """A CRL of the Milan ARK's name, signed (RSASSA-PSS SHA-384) by the fake ARK's key."""
    now = datetime(2025, 9, 1, tzinfo=UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(amd_name("ARK-Milan"))
    builder = builder.last_update(now - timedelta(days=1))
    builder = builder.next_update(now + timedelta(days=days))
    for serial in serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
        builder = builder.add_revoked_certificate(entry.build())
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    crl = builder.sign(rsa_key("ark-Milan"), hashes.SHA384(), rsa_padding=pss)
    return crl.public_bytes(Encoding.DER)


def test_an_snp_report_against_amds_crl(monkeypatch: pytest.MonkeyPatch) -> None:
    # No real AMD CRL is public: the CRL is signed by a test ARK standing in for the pinned one.
    real = amd_chain

    def with_test_ark(product: str, key: str) -> tuple[x509.Certificate, x509.Certificate]:
        return real(product, key)[0], fake_ark(product)

    monkeypatch.setattr(crl_module, "amd_chain", with_test_ark)
    report = read_evidence(REPORT.read_bytes()).data
    certs, now = gather(VCEK, None, None), datetime(2025, 9, 1, tzinfo=UTC)
    auditor = Auditor()
    clean = Collateral(amd_crl=load_amd_crl(amd_crl(), "clean"))
    result = auditor.audit(report, certs=certs, now=now, collateral=clean)
    crl_checks = {c.name: c.ok for c in result.checks if "crl" in c.name or "revoked" in c.name}
    names = [f"collateral.amd_crl.{n}" for n in ("signature", "validity", "issuer")]
    assert crl_checks == dict.fromkeys((*names, "vek.revoked", "ask.revoked"), True)
    assert result.collateral == "not revoked"
    ask_serial = real("Milan", "vcek")[0].serial_number
    revoked = Collateral(amd_crl=load_amd_crl(amd_crl(ask_serial), "revoked"))
    result = auditor.audit(report, certs=certs, now=now, collateral=revoked)
    assert [c.name for c in result.failures] == ["ask.revoked"]
    assert result.collateral is not None and result.collateral.startswith("ASK serial 0x")
    expired = Collateral(amd_crl=load_amd_crl(amd_crl(days=-1), "expired"))
    result = auditor.audit(report, certs=certs, now=now, collateral=expired)
    assert [c.name for c in result.failures] == ["collateral.amd_crl.validity"]
    assert result.collateral == "revocation unknown (CRL not usable)"


def test_the_cli_reads_amds_crl_from_a_file_or_a_folder(cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "kds"
    folder.mkdir()
    (folder / "vcek.der").write_bytes(VCEK.read_bytes())
    (folder / "crl").write_bytes(amd_crl())
    for path in (folder / "crl", folder):
        r = cli("audit", "--report", REPORT, "--vcek", VCEK, "--now", "2025-09-01T00:00:00Z",
                "--allow-no-claims", "--collateral", path, "--json")  # fmt: skip
        doc = json.loads(r.out)
        # Signed by a test ARK, not AMD's pinned one: the signature check says so.
        failed = [c["name"] for c in doc["checks"] if not c["ok"]]
        assert r.code == 1 and failed == ["collateral.amd_crl.signature"], r.out
        assert doc["tcb_status"] == {"evaluated": True,
                                     "status": "revocation unknown (CRL not usable)"}  # fmt: skip


def test_a_batch_checks_each_quote_against_the_collateral(cli: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "quotes"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / name).write_bytes(QUOTE.read_bytes())
    r = cli("audit", "--reports", folder, "--collateral", COLLATERAL, "--now", INSIDE,
            "--allow-no-claims", "--json")  # fmt: skip
    assert r.code == 0, r.out + r.err
    reports = json.loads(r.out)["reports"]
    assert [d["tcb_status"]["status"] for d in reports] == ["UpToDate", "UpToDate"]
