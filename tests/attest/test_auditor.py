"""`Auditor`: what it remembers across reports never changes a verdict.

A certificate differing in one byte from one it has verified is verified afresh (and
fails); validity is compared with each call's `now`; its results equal those of an audit
that remembers nothing, for every fixture; results are the caller's to change; its tables
stay within their bound.
"""

from __future__ import annotations

import base64
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from cvmlaunch.attest import Auditor, Expectations, audit
from cvmlaunch.attest.amd import AmdCerts, gather
from cvmlaunch.attest.evidence import read_evidence
from cvmlaunch.attest.snp import audit_snp, parse_snp_report
from cvmlaunch.attest.tdx import audit_tdx, parse_tdx_quote
from tests.conftest import VECTORS

SNP = VECTORS / "attestation" / "snp"
TDX = VECTORS / "attestation" / "tdx"
SNP_NOW = datetime(2025, 9, 1, tzinfo=UTC)
TDX_NOW = datetime(2025, 6, 19, 14, tzinfo=UTC)
GENOA = (SNP / "oak_genoa_report_v5.bin", SNP / "oak_genoa_vcek.der")
# Every SNP report fixture with the certificate that signed it.
SNP_FIXTURES = {
    "oak_genoa_report_v5.bin": ("vcek", "oak_genoa_vcek.der"),
    "oak_turin_report_v5.bin": ("vcek", "oak_turin_vcek.der"),
    "gosevguest_milan_report_v2.bin": ("vcek", "gosevguest_milan_vcek.der"),
    "trustee_milan_vcek_report.bin": ("vcek", "trustee_milan_vcek.der"),
    "trustee_milan_vlek_report.bin": ("vlek", "trustee_milan_vlek.der"),
    "virtee_milan_report.hex": ("vcek", "virtee_milan_vcek.der"),
}
TDX_FIXTURES = sorted(p.name for p in TDX.glob("*.dat"))


def _certs(der: bytes) -> AmdCerts:
    with warnings.catch_warnings():  # AMD's serial number 0
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return AmdCerts(vcek=x509.load_der_x509_certificate(der), source="test")


def _snp(name: str) -> tuple[bytes, AmdCerts]:
    role, vek = SNP_FIXTURES[name]
    certs = gather(**{role: SNP / vek})
    return (SNP / name).read_bytes(), certs


def _failed(result: object) -> set[str]:
    return {c.name for c in result.failures}  # type: ignore[attr-defined]


# ---- a changed certificate is another certificate -------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["signature", "hwid", "tcb"],
    ids=["signature-byte", "hwid-extension-byte", "spl-extension-byte"],
)
def test_a_vcek_one_byte_off_fails_after_the_good_one_was_remembered(where: str) -> None:
    report_path, vcek_path = GENOA
    report, der = report_path.read_bytes(), vcek_path.read_bytes()
    auditor = Auditor()
    good = auditor.audit(report, certs=_certs(der), now=SNP_NOW)
    assert _failed(good) == set()
    forged = bytearray(der)
    if where == "signature":
        forged[-1] ^= 0x01  # inside the signature BIT STRING, the last element
    elif where == "hwid":
        forged[der.index(bytes(report[0x1A0:0x1E0]))] ^= 0x01  # the chip ID the VCEK names
    else:
        # An SPL extension (OID 1.3.6.1.4.1.3704.1.3.x): its INTEGER value's last byte.
        at = der.index(bytes.fromhex("060a2b060104019c78010302")) + 12  # tee SPL
        value = re.compile(rb"\x02\x01.", re.S).search(der, at)
        assert value is not None
        forged[value.end() - 1] ^= 0x01
    result = auditor.audit(report, certs=_certs(bytes(forged)), now=SNP_NOW)
    assert "vek.signature" in _failed(result)
    assert not result.passed
    # And the genuine one still passes: nothing about the forgery was kept against it.
    assert _failed(auditor.audit(report, certs=_certs(der), now=SNP_NOW)) == set()


def test_a_forged_vcek_first_does_not_taint_the_genuine_one() -> None:
    report_path, vcek_path = GENOA
    report, der = report_path.read_bytes(), vcek_path.read_bytes()
    forged = bytearray(der)
    forged[-1] ^= 0x01
    auditor = Auditor()
    assert "vek.signature" in _failed(
        auditor.audit(report, certs=_certs(bytes(forged)), now=SNP_NOW)
    )
    assert _failed(auditor.audit(report, certs=_certs(der), now=SNP_NOW)) == set()
    assert "vek.signature" in _failed(
        auditor.audit(report, certs=_certs(bytes(forged)), now=SNP_NOW)
    )


def test_a_changed_report_fails_with_a_remembered_vcek() -> None:
    """The report's own signature is verified every time, never remembered."""
    report, certs = _snp("oak_genoa_report_v5.bin")
    auditor = Auditor()
    assert auditor.audit(report, certs=certs, now=SNP_NOW).passed
    changed = bytearray(report)
    changed[0x90] ^= 0x01  # MEASUREMENT
    assert _failed(auditor.audit(bytes(changed), certs=certs, now=SNP_NOW)) == {"report.signature"}


def _pem_blocks(quote: bytes) -> list[re.Match[bytes]]:
    pattern = rb"-----BEGIN CERTIFICATE-----\n?(.*?)-----END CERTIFICATE-----"
    return list(re.finditer(pattern, quote, re.S))


def _quote_with_block_patched(quote: bytes, index: int) -> bytes:
    """`quote` with the last byte of certificate `index` of its PCK chain flipped (inside the
    signature), the PEM re-encoded to the same length."""
    block = _pem_blocks(quote)[index]
    body = block.group(1)
    der = bytearray(base64.b64decode(body))
    der[-1] ^= 0x01
    text = base64.b64encode(bytes(der))
    lines, pos = [], 0
    for line in body.split(b"\n"):
        lines.append(text[pos : pos + len(line)])
        pos += len(line)
    patched = b"\n".join(lines)
    assert len(patched) == len(body)
    return quote[: block.start(1)] + patched + quote[block.end(1) :]


@pytest.mark.parametrize(("index", "check"), [(0, "pck.leaf_signature"),
                                              (1, "pck.intermediate_signature")])  # fmt: skip
def test_a_pck_certificate_one_byte_off_fails_after_the_chain_was_remembered(
    index: int, check: str
) -> None:
    quote = (TDX / "dcapqvl_tdx_quote_v4.dat").read_bytes()
    auditor = Auditor()
    assert _failed(auditor.audit(quote, now=TDX_NOW)) == set()
    forged = _quote_with_block_patched(quote, index)
    assert check in _failed(auditor.audit(forged, now=TDX_NOW))
    assert _failed(auditor.audit(quote, now=TDX_NOW)) == set()


# ---- time is checked on every call --------------------------------------------------------


def test_validity_is_checked_against_each_calls_now() -> None:
    report, certs = _snp("oak_genoa_report_v5.bin")
    assert certs.vcek is not None
    after = certs.vcek.not_valid_after_utc + timedelta(days=1)
    before = certs.vcek.not_valid_before_utc - timedelta(days=1)
    auditor = Auditor()
    assert auditor.audit(report, certs=certs, now=SNP_NOW).passed
    assert "vek.validity" in _failed(auditor.audit(report, certs=certs, now=after))
    assert "vek.validity" in _failed(auditor.audit(report, certs=certs, now=before))
    assert auditor.audit(report, certs=certs, now=SNP_NOW).passed


def test_pck_validity_is_checked_against_each_calls_now() -> None:
    quote = (TDX / "dcapqvl_tdx_quote_v4.dat").read_bytes()
    auditor = Auditor()
    assert _failed(auditor.audit(quote, now=TDX_NOW)) == set()
    late = datetime(2099, 1, 1, tzinfo=UTC)
    assert {"pck.leaf_validity", "pck.intermediate_validity"} <= _failed(
        auditor.audit(quote, now=late)
    )
    assert _failed(auditor.audit(quote, now=TDX_NOW)) == set()


# ---- the same results as an audit that remembers nothing -----------------------------------


@pytest.mark.parametrize("name", sorted(SNP_FIXTURES))
def test_snp_results_equal_a_fresh_audit(name: str) -> None:
    data, certs = _snp(name)
    auditor = Auditor()
    for _ in range(2):  # the second from what the first left behind
        remembered = auditor.audit(data, certs=certs, now=SNP_NOW)
        fresh = audit_snp(
            parse_snp_report(read_evidence(data).data), certs, Expectations(), SNP_NOW
        )
        assert remembered == fresh


@pytest.mark.parametrize("name", TDX_FIXTURES)
def test_tdx_results_equal_a_fresh_audit(name: str) -> None:
    data = (TDX / name).read_bytes()
    auditor = Auditor()
    for _ in range(2):
        remembered = auditor.audit(data, now=TDX_NOW)
        assert remembered == audit_tdx(parse_tdx_quote(data), Expectations(), TDX_NOW)


def test_module_audit_shares_nothing_a_caller_can_change() -> None:
    data, certs = _snp("oak_genoa_report_v5.bin")
    first = audit(data, certs=certs, now=SNP_NOW)
    first.report["vek"]["spl"]["snp"] = 999
    first.report["vek"]["kind"] = "changed"
    second = audit(data, certs=certs, now=SNP_NOW)
    assert second.report["vek"]["kind"] == "VCEK"
    assert second.report["vek"]["spl"]["snp"] != 999


def test_tables_stay_within_capacity() -> None:
    report, der = GENOA[0].read_bytes(), GENOA[1].read_bytes()
    auditor = Auditor(capacity=3)
    for n in range(8):  # eight distinct (forged) VCEKs
        forged = bytearray(der)
        forged[-1 - n] ^= 0x01
        auditor.audit(report, certs=_certs(bytes(forged)), now=SNP_NOW)
    memo = auditor.memo
    tables = (memo._facts, memo._by_object, memo._signed, memo._derived)
    assert all(len(table) <= 3 for table in tables)
    assert auditor.audit(report, certs=_certs(der), now=SNP_NOW).passed


def test_bundled_roots_path() -> None:
    """The roots are read beside the package's modules, as pyproject ships them."""
    from cvmlaunch.attest import roots

    assert (roots._ROOTS / "intel_sgx_root_ca.pem").is_file()
    assert Path(roots.__file__).resolve().parent.parent / "data" / "roots" == roots._ROOTS
