"""SEV-SNP evidence audits: the real reports, every way of tampering with one, fake AMD chains,
expectations, and the ways certificates reach the auditor.

The real evidence is in tests/vectors/attestation/snp/ (6 reports from go-sev-guest, virtee,
trustee and Oak; their VCEK/VLEK; a Turin VCEK without a report); the values an independent
parser read from it are in tests/vectors/attestation/expected_fields.json. `NOW` lies inside
every fixture certificate's validity (the VLEK expires 2025-12-10, the Genoa VCEK starts
2025-08-07). Synthetic reports are signed by the fake chains of tests/attest_fakes.py.
"""

from __future__ import annotations

import functools
import json
import struct
import uuid
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from cvmlaunch.abi.guid import guid
from cvmlaunch.abi.snp_report import MSG_REPORT_RSP, REPORT_SIZE, SIGNED_SIZE
from cvmlaunch.attest import SEV_SNP, AmdCerts, AuditResult, Expectations, audit, read_evidence
from cvmlaunch.attest.amd import (
    gather,
    parse_cert_table,
    read_vek,
    sort_certificates,
)
from cvmlaunch.attest.certs import fingerprint, load_certificate, load_certificates
from cvmlaunch.attest.expect import parse_snp_min_tcb, report_data
from cvmlaunch.attest.result import NOT_EVALUATED
from cvmlaunch.attest.roots import AMD_ARK_SHA256, amd_chain
from cvmlaunch.attest.snp import audit_snp, parse_snp_report, report_doc
from cvmlaunch.errors import AttestationError
from tests.attest_fakes import (
    AMD_OID,
    MILAN_VEK,
    REPORT_DEFAULTS,
    TURIN_FIELDS,
    TURIN_VEK,
    VekSpec,
    amd_name,
    build_report,
    fake_ark,
    fake_ask,
    fake_certs,
    fake_vek,
    oid_der,
    rsa_key,
    signed_report,
    vek_certs,
    vek_extensions,
)

VECTORS = Path(__file__).parents[1] / "vectors" / "attestation"
SNP = VECTORS / "snp"
ROOTS = Path(__file__).resolve().parents[2] / "cvmlaunch" / "data"
EXPECTED_ALL: dict[str, Any] = json.loads((VECTORS / "expected_fields.json").read_text())
EXPECTED: dict[str, dict[str, Any]] = EXPECTED_ALL["snp"]
REPORTS = sorted(EXPECTED)
NOW = datetime(2025, 9, 1, tzinfo=UTC)

GENOA = "oak_genoa_report_v5.bin"
TURIN = "oak_turin_report_v5.bin"
MILAN_V2 = "virtee_milan_report.hex"
MILAN_VCEK = "trustee_milan_vcek_report.bin"
MILAN_VLEK = "trustee_milan_vlek_report.bin"
DEBUG = "gosevguest_milan_report_v2.bin"

# The stable check names of an SNP audit without expectations (vek.hwid for a VCEK only).
BASE_CHECKS = {
    "report.signature_algo",
    "report.reserved",
    "report.signer_info",
    "report.policy_reserved",
    "report.signing_key",
    "vek.product",
    "ark.pinned",
    "ark.signature",
    "ask.signature",
    "vek.signature",
    "ark.validity",
    "ask.validity",
    "vek.validity",
    "report.signature",
    "vek.tcb",
    "guest.debug",
}
TCB_CHECKS = {"tcb.reported", "tcb.committed", "tcb.current", "tcb.launch"}
# A fake chain's ASK is not signed by the pinned ARK-<product>: with the fake ASK supplied,
# this is the only check that fails, and it is the one that must.
FAKE_CHAIN = {"ask.signature"}

GUIDS = {
    "vcek": "63da758d-e664-4564-adc5-f4b93be8accd",
    "vlek": "a8074bc2-a25a-483e-aae6-39c045a0b8a1",
    "ask": "4ab7b379-bbac-4fe4-a02f-05aef327c782",
    "ark": "c0b406a4-a803-4952-9743-3fb6014cd0ae",
}


# ---- helpers ---------------------------------------------------------------------------------


def evidence(name: str) -> bytes:
    """The fixture file as handed to the auditor (raw or hex text)."""
    return (SNP / name).read_bytes()


def report_bytes(name: str) -> bytes:
    """The 1184 report bytes of a fixture."""
    data = evidence(name)
    return bytes.fromhex(data.decode()) if name.endswith(".hex") else data


def vek_kind(name: str) -> str:
    return "vlek" if "vlek" in EXPECTED[name]["vek_file"] else "vcek"


@functools.cache
def certs_for(name: str) -> AmdCerts:
    path = SNP / EXPECTED[name]["vek_file"]
    return gather(**{vek_kind(name): path})


def vek_cert(file: str) -> x509.Certificate:
    return load_certificate((SNP / file).read_bytes(), file)


def pinned(product: str, kind: str = "vcek") -> tuple[x509.Certificate, x509.Certificate]:
    return amd_chain(product, kind)


def failed(result: AuditResult) -> set[str]:
    return {c.name for c in result.failures}


def check_of(result: AuditResult, name: str) -> Any:
    (found,) = [c for c in result.checks if c.name == name]
    return found


def audit_fixture(
    name: str,
    expect: Expectations | None = None,
    certs: AmdCerts | None = None,
    now: datetime = NOW,
) -> AuditResult:
    return audit(evidence(name), certs=certs or certs_for(name), expect=expect, now=now)


def fake_audit(
    report: bytes,
    product: str = "Milan",
    spec: VekSpec = MILAN_VEK,
    expect: Expectations | None = None,
) -> AuditResult:
    return audit(report, certs=fake_certs(product, spec), expect=expect, now=NOW)


def cert_table(entries: Iterable[tuple[bytes, bytes]], terminator: bool = True) -> bytes:
    """A GHCB certificate table: {GUID, offset, length} entries, a zero entry, the blobs."""
    entries = list(entries)
    start = 24 * (len(entries) + terminator)
    head, body = b"", b""
    for raw_guid, blob in entries:
        head += raw_guid + struct.pack("<II", start + len(body), len(blob))
        body += blob
    return head + bytes(24) * terminator + body


def guid_bytes(role: str, order: str) -> bytes:
    """A table GUID in RFC 4122 (big-endian) or EFI (mixed-endian) byte order."""
    return uuid.UUID(GUIDS[role]).bytes if order == "rfc4122" else guid(GUIDS[role])


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


# ---- the real reports --------------------------------------------------------------------------


@pytest.mark.parametrize("name", REPORTS)
def test_fixture_report_verifies(name: str) -> None:
    result = audit_fixture(name)
    names = [c.name for c in result.checks]
    assert len(names) == len(set(names))
    assert set(names) == BASE_CHECKS | ({"vek.hwid"} if vek_kind(name) == "vcek" else set())
    assert result.kind == SEV_SNP
    if EXPECTED[name]["debug_policy_bit19"]:
        # go-sev-guest's sample has POLICY 0xb0000: DEBUG set, and nothing else wrong.
        assert failed(result) == {"guest.debug"}
        assert result.verdict == "fail"
        assert check_of(result, "guest.debug").actual == "DEBUG set"
    else:
        assert failed(result) == set(), result.text()
        assert result.verdict == "no-claims"


def test_debug_report_passes_when_debug_allowed() -> None:
    result = audit_fixture(DEBUG, Expectations(allow_debug=True))
    assert result.verdict == "no-claims", result.text()
    assert check_of(result, "guest.debug").ok


def test_hex_report_reads_like_the_raw_one() -> None:
    text = evidence(MILAN_V2)
    raw = bytes.fromhex(text.decode())
    assert read_evidence(text) == read_evidence(raw) == (SEV_SNP, raw)
    assert audit_fixture(MILAN_V2).checks == audit(raw, certs=certs_for(MILAN_V2), now=NOW).checks
    # Case and whitespace (line breaks, as `xxd -p` writes) do not matter.
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    for variant in (
        text.lower(),
        text.upper(),
        lines + b"\n",
        b"  " + lines.replace(b"\n", b"\r\n"),
    ):
        assert read_evidence(variant).data == raw
    with pytest.raises(AttestationError, match="odd number"):
        read_evidence(text[:-1])


def test_msg_report_rsp_is_unwrapped() -> None:
    raw = report_bytes(GENOA)
    wrapped = MSG_REPORT_RSP.pack(0, REPORT_SIZE) + raw
    assert len(wrapped) == 0x20 + REPORT_SIZE and wrapped[8:32] == bytes(24)
    assert read_evidence(wrapped) == (SEV_SNP, raw)
    assert audit(wrapped, certs=certs_for(GENOA), now=NOW).verdict == "no-claims"
    assert read_evidence(wrapped.hex().encode()).data == raw


@pytest.mark.parametrize("status", [1, 0x16, 0xFFFFFFFF])
def test_msg_report_rsp_with_firmware_error_is_refused(status: int) -> None:
    wrapped = MSG_REPORT_RSP.pack(status, REPORT_SIZE) + report_bytes(GENOA)
    with pytest.raises(AttestationError, match=f"status {status:#x}"):
        read_evidence(wrapped)
    with pytest.raises(AttestationError):
        audit(wrapped, certs=certs_for(GENOA), now=NOW)


def test_msg_report_rsp_with_wrong_size_is_not_a_report() -> None:
    wrapped = MSG_REPORT_RSP.pack(0, REPORT_SIZE - 1) + report_bytes(GENOA)
    with pytest.raises(AttestationError):
        audit(wrapped, certs=certs_for(GENOA), now=NOW)


# ---- every field the independent parser read --------------------------------------------------


def _decode_amd_extension(oid: str, raw: bytes) -> int | str | bytes:
    """An AMD extension value per KDS spec 57230, decoded here without cvmlaunch's DER."""
    if oid == f"{AMD_OID}.4":  # hwID: raw bytes, no DER tag
        return raw
    assert raw[1] == len(raw) - 2, "short-form length"
    if raw[0] == 0x02:
        return int.from_bytes(raw[2:], "big", signed=True)
    assert raw[0] == 0x16
    return raw[2:].decode("ascii")


_VEK_FIELD = {
    f"{AMD_OID}.1": "struct_version",
    f"{AMD_OID}.2": "product_name",
    f"{AMD_OID}.4": "hwid",
    f"{AMD_OID}.5": "csp_id",
}
_SPL = {"3.1": "bl", "3.2": "tee", "3.3": "snp", "3.8": "ucode", "3.9": "fmc"}


@pytest.mark.parametrize("name", REPORTS)
def test_report_fields_match_expected(name: str) -> None:
    exp = EXPECTED[name]
    report = parse_snp_report(report_bytes(name))
    doc = audit_fixture(name).report
    handled = set()

    def same(key: str, *pairs: tuple[object, object]) -> None:
        handled.add(key)
        for ours, theirs in pairs:
            assert ours == theirs, (key, ours, theirs)

    same("version", (report.version, exp["version"]), (doc["version"], exp["version"]))
    same("guest_svn", (report.guest_svn, exp["guest_svn"]), (doc["guest_svn"], exp["guest_svn"]))
    same("vmpl", (report.vmpl, exp["vmpl"]), (doc["vmpl"], exp["vmpl"]))
    same(
        "sig_algo",
        (report.signature_algo, exp["sig_algo"]),
        (doc["signature_algo"], exp["sig_algo"]),
    )
    for key, field in (("policy", "policy"), ("platform_info", "platform_info")):
        value = int(exp[key], 16)
        same(key, (getattr(report, field), value), (int(doc[field]["value"], 16), value))
    value = int(exp["signer_info"], 16)
    same("signer_info", (report.signer_info, value), (int(doc["signer_info"]["value"], 16), value))
    for key in ("measurement", "report_data", "host_data", "id_key_digest", "chip_id"):
        same(key, (getattr(report, key).hex(), exp[key]), (doc[key], exp[key]))
    for key in ("reported_tcb", "current_tcb", "committed_tcb", "launch_tcb"):
        value = int(exp[key], 16)
        same(key, (getattr(report, key), value), (int(doc[key]["value"], 16), value))
    same("reported_tcb_parts", (doc["reported_tcb"]["parts"], exp["reported_tcb_parts"]))
    cpuid = exp["cpuid_fam_mod_step"]
    if cpuid is None:
        same("cpuid_fam_mod_step", ("cpuid" in doc, False))
    else:
        ours = [report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step]
        d = doc["cpuid"]
        same(
            "cpuid_fam_mod_step", (ours, cpuid), ([d["family"], d["model"], d["stepping"]], cpuid)
        )
    major, minor, build = exp["current_version_major_minor_build"]
    same(
        "current_version_major_minor_build",
        (
            (report.current_major, report.current_minor, report.current_build),
            (major, minor, build),
        ),
        (doc["current_version"], f"{major}.{minor}.{build}"),
    )
    for key in ("launch_mit_vector", "current_mit_vector"):
        if exp[key] is None:  # version < 5: no mitigation vectors
            same(key, (key in doc, False), (report.version < 5, True))
        else:
            value = int(exp[key], 16)
            same(key, (getattr(report, key), value), (int(doc[key], 16), value))
    vek = doc["vek"]
    for key in ("vek_not_before", "vek_not_after"):
        moment = datetime.fromisoformat(vek[key.removeprefix("vek_")])
        same(key, (moment, datetime.fromisoformat(exp[key])))
    result = audit_fixture(name)
    for key, check in (
        ("report_signature_verifies", "report.signature"),
        ("vek_signed_by_ask", "vek.signature"),
        ("ask_signed_by_ark", "ask.signature"),
    ):
        same(key, (check_of(result, check).ok, exp[key]))
    same("debug_policy_bit19", ("DEBUG" in doc["policy"]["set"], exp["debug_policy_bit19"]))
    same("vek_file", (vek["kind"], vek_kind(name).upper()))
    product = doc["product"]
    chain_file = ROOTS / exp["chain_file"]
    bundled = load_certificates(chain_file.read_bytes(), str(chain_file))
    same("chain_file", (list(pinned(product, vek_kind(name))), bundled))
    handled.add("vek_extensions_raw_hex")  # test_vek_extensions_match_expected
    assert handled == set(exp), set(exp) - handled


@pytest.mark.parametrize("name", REPORTS)
def test_vek_extensions_match_expected(name: str) -> None:
    exp = EXPECTED[name]
    cert = vek_cert(exp["vek_file"])
    raw = {
        e.oid.dotted_string: e.value.value.hex()
        for e in cert.extensions
        if isinstance(e.value, x509.UnrecognizedExtension)
    }
    assert raw == exp["vek_extensions_raw_hex"]
    vek = read_vek(cert, exp["vek_file"])
    assert vek.kind == vek_kind(name)
    spl: dict[str, int] = {}
    fields: dict[str, object] = {"struct_version": None, "product_name": None, "hwid": None}
    fields["csp_id"] = None
    for oid, hex_value in exp["vek_extensions_raw_hex"].items():
        value = _decode_amd_extension(oid, bytes.fromhex(hex_value))
        arc = oid.removeprefix(AMD_OID + ".")
        if oid in _VEK_FIELD:
            fields[_VEK_FIELD[oid]] = value
        elif arc in _SPL:
            assert isinstance(value, int)
            spl[_SPL[arc]] = value
        else:  # spl_4..spl_7: reserved, always 0, not part of the TCB
            assert arc in ("3.4", "3.5", "3.6", "3.7") and value == 0
    assert vek.spl == spl
    assert {k: getattr(vek, k) for k in fields} == fields
    assert (vek.hwid is None) == (vek.kind == "vlek")
    assert (vek.csp_id is None) == (vek.kind == "vcek")
    # The VEK binds to REPORTED_TCB, component by component.
    assert {k: v for k, v in spl.items()} == exp["reported_tcb_parts"]
    doc = audit_fixture(name).report["vek"]
    assert doc["spl"] == spl and doc["product_name"] == fields["product_name"]
    assert doc["hwid"] == (vek.hwid.hex() if vek.hwid is not None else None)
    assert doc["sha256"] == fingerprint(cert).hex()


def test_pinned_roots_match_expected() -> None:
    roots = EXPECTED_ALL["roots"]
    for product, pin in AMD_ARK_SHA256.items():
        assert pin.hex() == roots[f"ARK-{product}_sha256_der"]
        for kind in ("vcek", "vlek"):
            _, ark = pinned(product, kind)
            assert fingerprint(ark) == pin


# ---- tampering ---------------------------------------------------------------------------------


def test_every_bit_of_the_signed_region_matters() -> None:
    """672 x 8 single-bit flips of 0x000-0x29F: each one fails the signature check (or, in
    VERSION, makes the report unusable)."""
    base, certs = report_bytes(GENOA), certs_for(GENOA)
    assert audit(base, certs=certs, now=NOW).verdict == "no-claims"
    wrong: list[tuple[int, int, object]] = []
    for offset in range(SIGNED_SIZE):
        for bit in range(8):
            data = bytearray(base)
            data[offset] ^= 1 << bit
            version = int.from_bytes(data[:4], "little")
            try:
                result = audit(bytes(data), certs=certs, now=NOW)
            except AttestationError as e:
                if offset >= 4 or version in (2, 3, 4, 5) or "VERSION" not in str(e):
                    wrong.append((offset, bit, e))
                elif e.offset != 0:
                    wrong.append((offset, bit, f"offset {e.offset}"))
                continue
            if offset < 4 and version not in (2, 3, 4, 5):
                wrong.append((offset, bit, f"VERSION {version} accepted"))
            elif result.verdict != "fail" or "report.signature" not in failed(result):
                wrong.append((offset, bit, sorted(failed(result))))
    assert wrong == []


def test_every_bit_of_the_signature_matters() -> None:
    base, certs = report_bytes(GENOA), certs_for(GENOA)
    wrong = []
    for offset in range(SIGNED_SIZE, SIGNED_SIZE + 144):  # R, S: 72 bytes each, little-endian
        for bit in range(8):
            data = bytearray(base)
            data[offset] ^= 1 << bit
            result = audit(bytes(data), certs=certs, now=NOW)
            if failed(result) != {"report.signature"}:
                wrong.append((offset, bit, sorted(failed(result))))
    assert wrong == []


def test_every_reserved_byte_after_the_signature_is_checked() -> None:
    base, certs = report_bytes(GENOA), certs_for(GENOA)
    wrong = []
    for offset in range(SIGNED_SIZE + 144, REPORT_SIZE):  # 0x330-0x49F
        data = bytearray(base)
        data[offset] = 0x01
        result = audit(bytes(data), certs=certs, now=NOW)
        if (
            failed(result) != {"report.reserved"}
            or f"{offset:#x}" not in result.failures[0].actual
        ):
            wrong.append((offset, sorted(failed(result))))
    assert wrong == []


@pytest.mark.parametrize("version", [0, 1, 6, 0x100, 0xFFFFFFFF])
def test_unknown_version_is_unusable(version: int) -> None:
    data = bytearray(report_bytes(GENOA))
    data[:4] = version.to_bytes(4, "little")
    for call in (lambda: parse_snp_report(bytes(data)), lambda: audit(bytes(data), now=NOW)):
        with pytest.raises(AttestationError, match="VERSION") as e:
            call()
        assert e.value.offset == 0


@pytest.mark.parametrize("version", [1, 6])
def test_unknown_version_of_a_validly_signed_report_is_unusable(version: int) -> None:
    report = signed_report({"version": version})
    with pytest.raises(AttestationError, match=f"VERSION {version}") as e:
        fake_audit(report)
    assert e.value.offset == 0


@pytest.mark.parametrize("size", [0, 1, 0x2A0, REPORT_SIZE - 1])
def test_truncated_report_is_unusable(size: int) -> None:
    data = report_bytes(GENOA)[:size]
    with pytest.raises(AttestationError, match="truncated") as e:
        parse_snp_report(data)
    assert e.value.offset == size
    if size:  # (empty evidence is refused too, whatever the message)
        with pytest.raises(AttestationError, match=str(size)):
            audit(data, certs=certs_for(GENOA), now=NOW)


def test_oversized_report_is_unusable() -> None:
    with pytest.raises(AttestationError, match="1185 bytes"):
        audit(report_bytes(GENOA) + b"\0", certs=certs_for(GENOA), now=NOW)


# ---- the wrong certificate ---------------------------------------------------------------------


def test_genoa_vcek_for_a_milan_v2_report() -> None:
    # A version 2 report has no CPUID, so a Genoa VCEK names a product a v2 report can come
    # from; it chains to ARK-Genoa fine, but binds to nothing in this report.
    certs = AmdCerts(vcek=vek_cert("oak_genoa_vcek.der"))
    result = audit_fixture(MILAN_V2, certs=certs)
    assert failed(result) == {"report.signature", "vek.tcb", "vek.hwid"}
    assert check_of(result, "vek.tcb").expected == "bl=3 tee=0 snp=8 ucode=115"
    assert check_of(result, "vek.tcb").actual == "bl=10 tee=0 snp=25 ucode=84"


@pytest.mark.parametrize("vcek", ["virtee_turin_vcek.der", "oak_turin_vcek.der"])
def test_turin_vcek_for_a_genoa_report(vcek: str) -> None:
    result = audit_fixture(GENOA, certs=AmdCerts(vcek=vek_cert(vcek)))
    assert {"vek.product", "vek.signature", "report.signature", "vek.hwid"} <= failed(result)
    product = check_of(result, "vek.product")
    assert "Genoa" in product.expected and product.actual == "Turin"


def test_milan_vcek_for_a_turin_report() -> None:
    result = audit_fixture(TURIN, certs=AmdCerts(vcek=vek_cert("virtee_milan_vcek.der")))
    assert {"vek.product", "vek.signature", "report.signature", "vek.tcb"} <= failed(result)
    assert check_of(result, "vek.product").actual == "Milan-B0"


def test_another_chips_vcek_of_the_same_product() -> None:
    # Two Milan VCEKs: same chain, different chip and key.
    certs = AmdCerts(vcek=vek_cert("gosevguest_milan_vcek.der"))
    result = audit_fixture(MILAN_VCEK, certs=certs)
    assert failed(result) == {"report.signature", "vek.tcb", "vek.hwid"}


def test_vlek_report_with_no_vek_is_unusable() -> None:
    with pytest.raises(AttestationError, match="no VCEK or VLEK"):
        audit(evidence(MILAN_VLEK), certs=AmdCerts(), now=NOW)
    with pytest.raises(AttestationError, match="no VCEK or VLEK"):
        audit(evidence(GENOA), now=NOW)


def test_vcek_for_a_vlek_signed_report() -> None:
    certs = AmdCerts(vcek=vek_cert("trustee_milan_vcek.der"))
    result = audit_fixture(MILAN_VLEK, certs=certs)
    signing_key = check_of(result, "report.signing_key")
    assert not signing_key.ok and (signing_key.expected, signing_key.actual) == ("VLEK", "VCEK")
    assert "report.signature" in failed(result)


def test_expired_vlek() -> None:
    result = audit_fixture(MILAN_VLEK, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert failed(result) == {"vek.validity"}
    assert "expired" in check_of(result, "vek.validity").actual
    # The boundary: valid through its notAfter second, expired one second later.
    assert audit_fixture(MILAN_VLEK, now=datetime(2025, 12, 10, 22, 14, 21, tzinfo=UTC)).passed
    assert not audit_fixture(MILAN_VLEK, now=datetime(2025, 12, 10, 22, 14, 22, tzinfo=UTC)).passed


def test_vcek_not_yet_valid() -> None:
    result = audit_fixture(GENOA, now=datetime(2025, 8, 1, tzinfo=UTC))
    assert failed(result) == {"vek.validity"}
    assert "not yet valid" in check_of(result, "vek.validity").actual


def test_naive_now_is_utc() -> None:
    assert audit_fixture(GENOA, now=datetime(2025, 9, 1)).passed
    assert not audit_fixture(GENOA, now=datetime(2025, 8, 7, 17, 21, 40)).passed


# ---- roots: only the pinned ARK is trusted --------------------------------------------------


def test_supplied_ark_that_is_not_the_pinned_one() -> None:
    ark = fake_ark("Milan")
    certs = certs_for(MILAN_VCEK)._replace(ark=ark)
    result = audit_fixture(MILAN_VCEK, certs=certs)
    assert failed(result) == {"ark.pinned"}
    check = check_of(result, "ark.pinned")
    assert check.expected == "ARK-Milan"
    assert fingerprint(ark).hex() in check.actual and "ARK-Milan" in check.actual


def test_genoa_ark_for_a_milan_report() -> None:
    _, genoa_ark = pinned("Genoa")
    result = audit_fixture(MILAN_VCEK, certs=certs_for(MILAN_VCEK)._replace(ark=genoa_ark))
    assert failed(result) == {"ark.pinned"}
    assert AMD_ARK_SHA256["Genoa"].hex() in check_of(result, "ark.pinned").actual


def test_supplied_pinned_ark_and_ask_are_accepted() -> None:
    ask, ark = pinned("Milan")
    result = audit_fixture(MILAN_VCEK, certs=certs_for(MILAN_VCEK)._replace(ask=ask, ark=ark))
    assert result.verdict == "no-claims"
    assert check_of(result, "ark.pinned").actual == "ARK-Milan"


def test_ask_of_another_product_is_not_accepted() -> None:
    genoa_ask, _ = pinned("Genoa")
    result = audit_fixture(MILAN_VCEK, certs=certs_for(MILAN_VCEK)._replace(ask=genoa_ask))
    assert failed(result) == {"ask.signature", "vek.signature"}


SYNTHETIC: dict[str, tuple[dict[str, int | bytes], str, VekSpec]] = {
    # name: (report fields, product, VEK spec)
    "milan-v3": ({}, "Milan", MILAN_VEK),
    "milan-v2": (
        {"version": 2, "cpuid_fam_id": 0, "cpuid_mod_id": 0, "cpuid_step": 0},
        "Milan",
        MILAN_VEK,
    ),
    "genoa-v5": (
        {"version": 5, "cpuid_mod_id": 0x11, "launch_mit_vector": 1, "current_mit_vector": 1},
        "Genoa",
        VekSpec(product_name="Genoa"),
    ),
    "turin-v5": (TURIN_FIELDS, "Turin", TURIN_VEK),
    "milan-vlek": (
        {"signer_info": 0x4, "vmpl": 1, "chip_id": bytes(64)},
        "Milan",
        VekSpec(product_name="Milan", hwid=None, csp_id="CN=cloud.example", vlek=True),
    ),
}


@pytest.mark.parametrize("case", sorted(SYNTHETIC))
def test_fake_chain_is_trusted_only_through_its_fake_ark(case: str) -> None:
    fields, product, spec = SYNTHETIC[case]
    report = signed_report(fields)
    role = "vlek" if spec.vlek else "vcek"
    vek = fake_vek(spec, product)
    # The fake ASK: everything binds (signature, TCB, hwID), but the pinned ARK did not sign it.
    result = fake_audit(report, product, spec)
    assert failed(result) == FAKE_CHAIN, result.text()
    assert all(check_of(result, n).ok for n in ("report.signature", "vek.tcb", "vek.signature"))
    assert ("vek.hwid" in {c.name for c in result.checks}) == (role == "vcek")
    # The pinned ASK/ASVK: the fake VEK is not signed by it.
    alone = audit(report, certs=vek_certs(vek, spec.vlek), now=NOW)
    assert failed(alone) == {"vek.signature"}
    # The fake ARK as well: not the pinned one, and still not what the ASK is checked against.
    with_ark = fake_certs(product, spec)._replace(ark=fake_ark(product))
    result = audit(report, certs=with_ark, now=NOW)
    assert failed(result) == {"ark.pinned", "ask.signature"}
    assert fingerprint(fake_ark(product)).hex() in check_of(result, "ark.pinned").actual


# ---- format checks on validly signed reports -------------------------------------------------


@pytest.mark.parametrize(
    ("signer_info", "failing", "actual"),
    [
        (7 << 2, {"report.signing_key"}, "none (7): unsigned"),
        (2 << 2, {"report.signing_key"}, "reserved value 2"),
        (6 << 2, {"report.signing_key"}, "reserved value 6"),
        (0x2, {"report.signing_key"}, "MASK_CHIP_KEY: unsigned"),  # MASK_CHIP_KEY
        (0x1, set(), "VCEK"),  # AUTHOR_KEY_EN: no failure by itself
        (1 << 2, {"report.signing_key"}, "VCEK"),  # VLEK-signed, VCEK given
        (0x20, {"report.signer_info"}, "VCEK"),  # bits 31:5 must be zero
        (1 << 31, {"report.signer_info"}, "VCEK"),
    ],
)
def test_signer_info(signer_info: int, failing: set[str], actual: str) -> None:
    result = fake_audit(signed_report({"signer_info": signer_info}))
    assert failed(result) == FAKE_CHAIN | failing
    assert check_of(result, "report.signature").ok
    assert check_of(result, "report.signing_key").actual == actual


def test_vlek_signed_report_with_vcek_and_vlek_given() -> None:
    vlek = VekSpec(product_name="Milan", hwid=None, csp_id="CN=x", vlek=True)
    report = signed_report({"signer_info": 0x4, "chip_id": bytes(64)})
    certs = AmdCerts(vcek=fake_vek(), vlek=fake_vek(vlek), asvk=fake_ask(vlek=True))
    result = audit(report, certs=certs, now=NOW)
    assert failed(result) == FAKE_CHAIN
    assert check_of(result, "report.signing_key").actual == "VLEK"


@pytest.mark.parametrize(
    ("case", "offset", "reserved"),
    [
        ("milan-v3", 0x04C, True),
        ("milan-v3", 0x04F, True),
        ("milan-v2", 0x188, True),  # CPUID_FAM_ID exists from version 3 on
        ("milan-v2", 0x18A, True),
        ("milan-v3", 0x18B, True),
        ("milan-v3", 0x19F, True),
        ("milan-v3", 0x1EB, True),
        ("milan-v3", 0x1EF, True),
        ("milan-v3", 0x1F8, True),  # LAUNCH_MIT_VECTOR exists from version 5 on
        ("milan-v3", 0x207, True),
        ("genoa-v5", 0x1F8, False),
        ("genoa-v5", 0x207, False),
        ("genoa-v5", 0x208, True),
        ("genoa-v5", 0x29F, True),
    ],
)
def test_reserved_byte_in_signed_region(case: str, offset: int, reserved: bool) -> None:
    fields, product, spec = SYNTHETIC[case]
    base = build_report(fields)
    report = signed_report(fields, {offset: base[offset] ^ 0x40})
    result = fake_audit(report, product, spec)
    assert check_of(result, "report.signature").ok
    if reserved:
        assert failed(result) == FAKE_CHAIN | {"report.reserved"}
        assert f"{offset:#x}" in check_of(result, "report.reserved").actual
    else:
        assert failed(result) == FAKE_CHAIN


@pytest.mark.parametrize(
    ("policy", "ok"),
    [
        (0x30000, True),
        (0x20000, True),
        (0x10000, False),  # bit 17 must be one
        (0x0, False),
        (0x30000 | 1 << 26, False),  # bits 63:26 must be zero
        (0x30000 | 1 << 63, False),
        (0x30000 | 0x3FC0000 & ~(1 << 19), True),  # every defined bit but DEBUG
    ],
)
def test_policy_reserved_bits(policy: int, ok: bool) -> None:
    result = fake_audit(signed_report({"policy": policy}))
    assert failed(result) == FAKE_CHAIN | (set() if ok else {"report.policy_reserved"})
    doc = result.report["policy"]
    assert doc["value"] == f"{policy:#x}"
    assert doc["unknown_bits"] == [b for b in range(26, 64) if policy >> b & 1]


def test_policy_bits_are_named() -> None:
    result = fake_audit(
        signed_report({"policy": 0x3FF1F05}), expect=Expectations(allow_debug=True)
    )
    doc = result.report["policy"]
    assert doc["abi_major"] == 0x1F and doc["abi_minor"] == 0x05
    assert doc["set"] == [
        "SMT",
        "MIGRATE_MA",
        "DEBUG",
        "SINGLE_SOCKET",
        "CXL_ALLOW",
        "MEM_AES_256_XTS",
        "RAPL_DIS",
        "CIPHERTEXT_HIDING",
        "PAGE_SWAP_DISABLE",
    ]
    assert doc["unknown_bits"] == [] and failed(result) == FAKE_CHAIN


@pytest.mark.parametrize("bits", [[6], [6, 8], [63], [8, 31, 32]])
def test_unknown_platform_info_bits_are_shown_not_failed(bits: list[int]) -> None:
    value = 0x25 | sum(1 << b for b in bits)
    result = fake_audit(signed_report({"platform_info": value}))
    assert failed(result) == FAKE_CHAIN
    doc = result.report["platform_info"]
    assert doc["unknown_bits"] == bits
    assert doc["set"] == ["SMT_EN", "ECC_EN", "ALIAS_CHECK_COMPLETE"]
    assert doc["value"] == f"{value:#x}"


def test_real_turin_platform_info_bit_6() -> None:
    doc = audit_fixture(TURIN).report["platform_info"]
    assert doc["value"] == "0x67" and doc["unknown_bits"] == [6]


def test_signature_algo_other_than_ecdsa_p384() -> None:
    result = fake_audit(signed_report({"signature_algo": 2}))
    assert failed(result) == FAKE_CHAIN | {"report.signature_algo"}


def test_unknown_cpuid_fails_the_product_check() -> None:
    result = fake_audit(signed_report({"cpuid_fam_id": 0x17, "cpuid_mod_id": 0x31}))
    assert failed(result) == FAKE_CHAIN | {"vek.product"}
    assert "unknown CPUID" in check_of(result, "vek.product").expected


def test_bergamo_cpuid_is_genoa() -> None:
    fields, product, spec = SYNTHETIC["genoa-v5"]
    result = fake_audit(signed_report({**fields, "cpuid_mod_id": 0xA0}), product, spec)
    assert failed(result) == FAKE_CHAIN


def test_v2_report_with_turin_vcek() -> None:
    fields, _, _ = SYNTHETIC["milan-v2"]
    report = signed_report({**fields, "chip_id": TURIN_FIELDS["chip_id"]})
    result = fake_audit(report, "Turin", TURIN_VEK)
    assert "vek.product" in failed(result)
    assert check_of(result, "vek.product").expected == "Milan or Genoa (a version 2 report)"


# ---- binding the VEK to the report ---------------------------------------------------------


@pytest.mark.parametrize(
    ("chip_id", "hwid", "ok"),
    [
        (bytes(range(1, 9)) + bytes(56), bytes(range(1, 9)), True),
        (bytes(range(1, 9)) + b"\x01" + bytes(55), bytes(range(1, 9)), False),  # CHIP_ID[8:]
        (bytes(range(1, 9)) + bytes(55) + b"\x80", bytes(range(1, 9)), False),
        (bytes(range(2, 10)) + bytes(56), bytes(range(1, 9)), False),
        (bytes(range(1, 9)) + bytes(56), bytes(range(1, 9)) + bytes(56), False),  # 64-byte hwID
        (bytes(64), bytes(8), True),
    ],
)
def test_turin_hwid_is_chip_id_prefix(chip_id: bytes, hwid: bytes, ok: bool) -> None:
    report = signed_report({**TURIN_FIELDS, "chip_id": chip_id})
    result = fake_audit(report, "Turin", TURIN_VEK._replace(hwid=hwid))
    assert failed(result) == FAKE_CHAIN | (set() if ok else {"vek.hwid"})


@pytest.mark.parametrize(
    ("chip_id", "hwid", "ok"),
    [
        (bytes(range(64)), bytes(range(64)), True),
        (bytes(range(64)), bytes(range(63)) + b"\0", False),
        (bytes(range(8)) + bytes(56), bytes(range(8)), False),  # a Turin-style hwID on Milan
        (bytes(64), bytes(range(64)), False),  # CHIP_ID masked by the host
    ],
)
def test_milan_hwid_is_the_whole_chip_id(chip_id: bytes, hwid: bytes, ok: bool) -> None:
    result = fake_audit(signed_report({"chip_id": chip_id}), spec=VekSpec(hwid=hwid))
    assert failed(result) == FAKE_CHAIN | (set() if ok else {"vek.hwid"})


def test_hwid_wrapped_in_an_octet_string_is_accepted() -> None:
    plain = vek_extensions(MILAN_VEK)
    ext = [(o, b"\x04\x40" + v if o == f"{AMD_OID}.4" else v) for o, v in plain]
    vek = fake_vek(extensions=ext)
    assert read_vek(vek, "vek").hwid == bytes(range(64))
    report = signed_report()
    result = audit(report, certs=AmdCerts(vcek=vek, ask=fake_ask()), now=NOW)
    assert failed(result) == FAKE_CHAIN


@pytest.mark.parametrize(
    ("component", "byte"),
    [("bl", 0), ("tee", 1), ("snp", 6), ("ucode", 7)],
)
def test_vek_tcb_binds_each_milan_component(component: str, byte: int) -> None:
    tcb = REPORT_DEFAULTS["reported_tcb"]
    assert isinstance(tcb, int)
    changed = tcb ^ 1 << (8 * byte)
    result = fake_audit(signed_report({"reported_tcb": changed}))
    assert failed(result) == FAKE_CHAIN | {"vek.tcb"}
    spl = dict(MILAN_VEK.spl)
    spl[component] ^= 1
    assert f"{component}={spl[component]}" in check_of(result, "vek.tcb").expected
    # Reserved bytes of TCB_VERSION are not part of the binding.
    for spare in (2, 3, 4, 5):
        result = fake_audit(signed_report({"reported_tcb": tcb | 0x5A << (8 * spare)}))
        assert failed(result) == FAKE_CHAIN, spare
    # Only REPORTED_TCB binds the VEK; the others may differ (they are checked by min_tcb).
    result = fake_audit(signed_report({"current_tcb": changed, "launch_tcb": changed}))
    assert failed(result) == FAKE_CHAIN


@pytest.mark.parametrize(("component", "byte"), [("fmc", 0), ("bl", 1), ("tee", 2), ("snp", 3)])
def test_vek_tcb_binds_each_turin_component(component: str, byte: int) -> None:
    changed = TURIN_FIELDS["reported_tcb"]
    assert isinstance(changed, int)
    changed ^= 1 << (8 * byte)
    result = fake_audit(
        signed_report({**TURIN_FIELDS, "reported_tcb": changed}), "Turin", TURIN_VEK
    )
    assert failed(result) == FAKE_CHAIN | {"vek.tcb"}
    spl = dict(TURIN_VEK.spl)
    spl[component] ^= 1
    assert f"{component}={spl[component]}" in check_of(result, "vek.tcb").expected
    result = fake_audit(
        signed_report({**TURIN_FIELDS, "reported_tcb": changed}),
        "Turin",
        TURIN_VEK._replace(spl=spl),
    )
    assert failed(result) == FAKE_CHAIN


def test_turin_vcek_without_fmc_fails_the_tcb_binding() -> None:
    spl = {k: v for k, v in TURIN_VEK.spl.items() if k != "fmc"}
    result = fake_audit(signed_report(TURIN_FIELDS), "Turin", TURIN_VEK._replace(spl=spl))
    assert failed(result) == FAKE_CHAIN | {"vek.tcb"}
    assert "fmc=-" in check_of(result, "vek.tcb").actual


# ---- expectations --------------------------------------------------------------------------


def test_measurement_expectation() -> None:
    measurement = bytes.fromhex(EXPECTED[GENOA]["measurement"])
    result = audit_fixture(GENOA, Expectations(measurement=measurement))
    assert result.verdict == "pass" and check_of(result, "guest.measurement").ok
    wrong = bytes([measurement[0] ^ 1]) + measurement[1:]
    result = audit_fixture(GENOA, Expectations(measurement=wrong))
    assert failed(result) == {"guest.measurement"}
    check = check_of(result, "guest.measurement")
    assert (check.expected, check.actual) == (wrong.hex(), measurement.hex())


@pytest.mark.parametrize(
    ("expect", "ok"),
    [
        (Expectations(policy=0x30000), True),
        (Expectations(policy=0x30001), False),
        (Expectations(policy=0x10000), False),
        (Expectations(host_data=bytes(32)), True),
        (Expectations(host_data=b"\x01" + bytes(31)), False),
        (Expectations(vmpl=0), True),
        (Expectations(vmpl=1), False),
    ],
)
def test_genoa_expectations(expect: Expectations, ok: bool) -> None:
    result = audit_fixture(GENOA, expect)
    assert result.passed is ok, result.text()
    assert len(result.failures) == (0 if ok else 1)


def test_vmpl_of_the_vlek_report() -> None:
    assert audit_fixture(MILAN_VLEK, Expectations(vmpl=1)).passed
    result = audit_fixture(MILAN_VLEK, Expectations(vmpl=0))
    assert failed(result) == {"guest.vmpl"}
    assert (check_of(result, "guest.vmpl").expected, check_of(result, "guest.vmpl").actual) == (
        "0",
        "1",
    )


def test_report_data_expectation_is_zero_padded() -> None:
    nonce = bytes.fromhex(EXPECTED[MILAN_VCEK]["report_data"])[:32]
    assert report_data(nonce) == nonce + bytes(32)
    assert audit_fixture(MILAN_VCEK, Expectations(report_data=report_data(nonce))).passed
    # The audit pads a short expectation the same way.
    assert audit_fixture(MILAN_VCEK, Expectations(report_data=nonce)).passed
    with pytest.raises(AttestationError, match="at most 64"):
        audit_fixture(MILAN_VCEK, Expectations(report_data=bytes(65)))
    other = report_data(bytes(32))
    result = audit_fixture(MILAN_VCEK, Expectations(report_data=other))
    assert failed(result) == {"guest.report_data"}
    full = bytes.fromhex(EXPECTED[MILAN_V2]["report_data"])
    assert report_data(full) == full
    assert audit_fixture(MILAN_V2, Expectations(report_data=report_data(full))).passed
    with pytest.raises(AttestationError, match="at most 64"):
        report_data(bytes(65))


@pytest.mark.parametrize("component", ["bl", "tee", "snp", "ucode"])
def test_min_tcb_per_component(component: str) -> None:
    value = EXPECTED[GENOA]["reported_tcb_parts"][component]
    assert audit_fixture(GENOA, Expectations(min_tcb={component: value})).passed
    if value:
        assert audit_fixture(GENOA, Expectations(min_tcb={component: value - 1})).passed
    result = audit_fixture(GENOA, Expectations(min_tcb={component: value + 1}))
    assert failed(result) == TCB_CHECKS  # all four TCBs are equal in this report
    check = check_of(result, "tcb.reported")
    assert check.expected == f">= {component}={value + 1}"
    assert check.actual == f"{component}={value}"


def test_min_tcb_checks_each_tcb_separately() -> None:
    # trustee's report: CURRENT_TCB ucode 206, the others ucode 115.
    result = audit_fixture(MILAN_VCEK, Expectations(min_tcb=parse_snp_min_tcb("ucode=116")))
    assert failed(result) == {"tcb.reported", "tcb.committed", "tcb.launch"}
    assert check_of(result, "tcb.current").actual == "ucode=206"
    minimum = parse_snp_min_tcb("bl=3,tee=0,snp=8,ucode=115")
    assert audit_fixture(MILAN_VCEK, Expectations(min_tcb=minimum)).passed
    # Component-wise, not as a u64: a higher microcode does not make up for a lower SNP SPL.
    result = audit_fixture(MILAN_VCEK, Expectations(min_tcb=parse_snp_min_tcb("snp=9,ucode=1")))
    assert failed(result) == TCB_CHECKS


def test_min_tcb_fmc_on_turin() -> None:
    assert audit_fixture(TURIN, Expectations(min_tcb=parse_snp_min_tcb("fmc=0,bl=1"))).passed
    result = audit_fixture(TURIN, Expectations(min_tcb=parse_snp_min_tcb("fmc=1")))
    assert failed(result) == TCB_CHECKS
    assert check_of(result, "tcb.launch").actual == "fmc=0"
    result = audit_fixture(TURIN, Expectations(min_tcb=parse_snp_min_tcb("snp=2,ucode=72")))
    assert failed(result) == TCB_CHECKS


@pytest.mark.parametrize("name", [MILAN_VCEK, GENOA, DEBUG])
def test_min_tcb_fmc_before_turin_is_an_error(name: str) -> None:
    with pytest.raises(AttestationError, match="fmc"):
        audit_fixture(name, Expectations(min_tcb={"fmc": 0}))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("bl=3,tee=0,snp=8,ucode=115", {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}),
        (" fmc=0 , ucode=255,", {"fmc": 0, "ucode": 255}),
        ("snp=24", {"snp": 24}),
    ],
)
def test_parse_snp_min_tcb(text: str, parsed: dict[str, int]) -> None:
    assert parse_snp_min_tcb(text) == parsed


@pytest.mark.parametrize(
    "text",
    ["", ",", "bl", "bl=", "bl=256", "bl=-1", "bl=0x3", "microcode=1", "BL=1", "bl=3;tee=0"],
)
def test_parse_snp_min_tcb_refuses(text: str) -> None:
    with pytest.raises(AttestationError, match="--min-tcb"):
        parse_snp_min_tcb(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("td_attributes", 0),
        ("xfam", 0xE7),
        ("mrconfigid", bytes(48)),
        ("mrowner", bytes(48)),
        ("mrownerconfig", bytes(48)),
        ("rtmrs", {0: bytes(48)}),
        ("mrseam", bytes(48)),
        ("min_tee_tcb_svn", bytes(16)),
    ],
)
def test_tdx_expectations_on_an_snp_report(field: str, value: Any) -> None:
    expect = Expectations()._replace(**{field: value})
    with pytest.raises(AttestationError, match=field):
        audit_fixture(GENOA, expect)


def test_all_failures_are_reported_at_once() -> None:
    measurement = bytes.fromhex(EXPECTED[DEBUG]["measurement"])
    expect = Expectations(
        measurement=bytes(48), report_data=report_data(b"nonce"), host_data=bytes(32), vmpl=0
    )
    result = audit_fixture(DEBUG, expect)
    assert failed(result) == {"guest.debug", "guest.measurement", "guest.report_data"}
    assert check_of(result, "guest.measurement").actual == measurement.hex()
    # ... and with a wrong certificate as well, nothing hides anything else.
    result = audit_fixture(DEBUG, expect, certs=AmdCerts(vcek=vek_cert("oak_genoa_vcek.der")))
    assert {"report.signature", "vek.tcb", "vek.hwid", "guest.debug", "guest.measurement"} <= (
        failed(result)
    )


# ---- certificate sources -------------------------------------------------------------------


def _genoa_chain() -> dict[str, x509.Certificate]:
    ask, ark = pinned("Genoa")
    return {"vcek": vek_cert("oak_genoa_vcek.der"), "ask": ask, "ark": ark}


@pytest.mark.parametrize("encoding", [Encoding.DER, Encoding.PEM], ids=["der", "pem"])
def test_gather_from_a_directory(tmp_path: Path, encoding: Encoding) -> None:
    chain = _genoa_chain()
    for role, cert in chain.items():
        (tmp_path / role).write_bytes(cert.public_bytes(encoding))
    (tmp_path / ".hidden").write_bytes(b"not a certificate")  # dot files are ignored
    (tmp_path / "sub").mkdir()  # and so are directories
    certs = gather(certs=tmp_path)
    assert (certs.vcek, certs.ask, certs.ark, certs.vlek) == (
        chain["vcek"],
        chain["ask"],
        chain["ark"],
        None,
    )
    result = audit_fixture(GENOA, certs=certs)
    assert result.verdict == "no-claims"
    assert check_of(result, "ark.pinned").actual == "ARK-Genoa"


def test_gather_from_a_pem_bundle(tmp_path: Path) -> None:
    chain = _genoa_chain()
    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain.values()))
    certs = gather(certs=bundle)
    assert (certs.vcek, certs.ask, certs.ark) == tuple(chain.values())
    # The bundled ASK+ARK file with --vcek on the side.
    roots = ROOTS / EXPECTED[GENOA]["chain_file"]
    certs = gather(vcek=SNP / "oak_genoa_vcek.der", certs=roots)
    assert (certs.vcek, certs.ask, certs.ark) == tuple(chain.values())
    assert audit_fixture(GENOA, certs=certs).verdict == "no-claims"


@pytest.mark.parametrize("order", ["rfc4122", "efi"])
def test_certificate_table(tmp_path: Path, order: str) -> None:
    chain = _genoa_chain()
    blobs = {role: der(cert) for role, cert in chain.items()}
    table = cert_table((guid_bytes(role, order), blob) for role, blob in blobs.items())
    assert parse_cert_table(table, "table") == list(blobs.items())
    path = tmp_path / "certs.bin"
    path.write_bytes(table)
    certs = gather(certs=path)
    assert (certs.vcek, certs.ask, certs.ark) == tuple(chain.values())
    assert audit_fixture(GENOA, certs=certs).verdict == "no-claims"


@pytest.mark.parametrize("order", ["rfc4122", "efi"])
def test_certificate_table_with_vlek(tmp_path: Path, order: str) -> None:
    vlek = (SNP / "trustee_milan_vlek.der").read_bytes()
    asvk, ark = pinned("Milan", "vlek")
    table = cert_table(
        [
            (guid_bytes("vlek", order), vlek),
            (guid_bytes("ask", order), der(asvk)),
            (guid_bytes("ark", order), der(ark)),
        ]
    )
    path = tmp_path / "certs.bin"
    path.write_bytes(table)
    certs = gather(certs=path)
    assert certs.vlek is not None and certs.vcek is None and certs.asvk == asvk
    assert audit_fixture(MILAN_VLEK, certs=certs).verdict == "no-claims"


def test_certificate_table_skips_unknown_guids() -> None:
    vcek = (SNP / "oak_genoa_vcek.der").read_bytes()
    unknown = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes
    table = cert_table(
        [
            (guid_bytes("vcek", "efi"), vcek),
            (unknown, b"a CRL, say"),
            (guid_bytes("ark", "rfc4122"), b"x"),
        ]
    )
    assert parse_cert_table(table, "t") == [("vcek", vcek), ("ark", b"x")]


def test_certificate_table_empty() -> None:
    assert parse_cert_table(bytes(24), "t") == []
    assert parse_cert_table(bytes(24) + b"trailing", "t") == []


@pytest.mark.parametrize("extra", [1, 100])
def test_certificate_table_entry_past_the_end(extra: int) -> None:
    vcek = (SNP / "oak_genoa_vcek.der").read_bytes()
    table = bytearray(cert_table([(guid_bytes("vcek", "efi"), vcek)]))
    struct.pack_into("<I", table, 20, len(vcek) + extra)  # the first entry's length
    with pytest.raises(AttestationError, match="points past") as e:
        parse_cert_table(bytes(table), "t")
    assert e.value.offset == 0
    # The second entry, pointing past the end at its offset field.
    table = bytearray(cert_table([(guid_bytes("vcek", "efi"), vcek)] * 2))
    struct.pack_into("<I", table, 24 + 16, len(table))
    with pytest.raises(AttestationError, match="points past") as e:
        parse_cert_table(bytes(table), "t")
    assert e.value.offset == 24


def test_certificate_table_without_terminator() -> None:
    # One entry (pointing at itself, within bounds), then nothing: no zero entry.
    entry = guid_bytes("vcek", "efi") + struct.pack("<II", 0, 24)
    for table in (b"", entry, entry + bytes(23), entry + entry):
        with pytest.raises(AttestationError, match="terminating"):
            parse_cert_table(table, "t")
    # Without a terminator, the certificate bytes that follow are read as entries.
    vcek = (SNP / "oak_genoa_vcek.der").read_bytes()
    with pytest.raises(AttestationError):
        parse_cert_table(cert_table([(guid_bytes("vcek", "efi"), vcek)], terminator=False), "t")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello",
        bytes(1184),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_not_a_certificate_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "vcek.der"
    path.write_bytes(content)
    for kwargs in ({"vcek": path}, {"certs": path}):
        with pytest.raises(AttestationError, match=str(path)):
            gather(**kwargs)


def test_missing_certificate_file(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match=r"absent\.der: No such file or directory"):
        gather(vcek=tmp_path / "absent.der")


def test_vlek_passed_as_vcek() -> None:
    with pytest.raises(AttestationError, match="SEV-VCEK"):
        gather(vcek=SNP / "trustee_milan_vlek.der")
    with pytest.raises(AttestationError, match="SEV-VLEK"):
        gather(vlek=SNP / "trustee_milan_vcek.der")


def test_ask_passed_as_vcek(tmp_path: Path) -> None:
    ask, _ = pinned("Milan")
    path = tmp_path / "ask.pem"
    path.write_bytes(ask.public_bytes(Encoding.PEM))
    with pytest.raises(AttestationError, match="SEV-Milan"):
        gather(vcek=path)


def test_two_different_vceks(tmp_path: Path) -> None:
    for name in ("oak_genoa_vcek.der", "virtee_milan_vcek.der"):
        (tmp_path / name).write_bytes((SNP / name).read_bytes())
    with pytest.raises(AttestationError, match="two different VCEK"):
        gather(certs=tmp_path)
    # The same certificate twice is no conflict.
    same = vek_cert("oak_genoa_vcek.der")
    assert sort_certificates([same, same], "x").vcek == same


def test_non_amd_certificate_is_refused() -> None:
    with pytest.raises(AttestationError, match="not an AMD SEV certificate"):
        sort_certificates([_other_cert()], "x")


def _other_cert() -> x509.Certificate:
    key = rsa_key("other")
    return (
        x509.CertificateBuilder()
        .subject_name(amd_name("example.com"))
        .issuer_name(amd_name("example.com"))
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )


def test_read_vek_refuses_other_certificates() -> None:
    ask, _ = pinned("Milan")
    with pytest.raises(AttestationError, match="SEV-Milan"):
        read_vek(ask, "ask")


def test_serial_zero_certificates_load_without_warnings(tmp_path: Path) -> None:
    vek_files = sorted({e["vek_file"] for e in EXPECTED.values()} | {"virtee_turin_vcek.der"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for file in vek_files:
            kind = "vlek" if "vlek" in file else "vcek"
            certs = gather(**{kind: SNP / file})
            cert = certs.vlek or certs.vcek
            assert cert is not None
            read_vek(cert, file)
            pem = tmp_path / f"{file}.pem"
            pem.write_bytes(cert.public_bytes(Encoding.PEM))
            load_certificates(pem.read_bytes(), file)
            table = tmp_path / f"{file}.table"
            table.write_bytes(cert_table([(guid_bytes(kind, "efi"), (SNP / file).read_bytes())]))
            assert gather(certs=table) == certs._replace(source=str(table))
        for name in REPORTS:
            audit(
                evidence(name),
                certs=gather(**{vek_kind(name): SNP / EXPECTED[name]["vek_file"]}),
                now=NOW,
            )


# ---- the result -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [GENOA, DEBUG, MILAN_VLEK])
def test_result_doc_is_json(name: str) -> None:
    result = audit_fixture(name)
    doc = json.loads(json.dumps(result.doc()))
    assert doc["verdict"] == result.verdict and doc["kind"] == "sev-snp"
    assert [c["name"] for c in doc["checks"]] == [c.name for c in result.checks]
    assert all(set(c) == {"name", "expected", "actual", "ok"} for c in doc["checks"])
    assert doc["report"]["measurement"] == EXPECTED[name]["measurement"]
    assert doc["report"]["vek"]["kind"] == vek_kind(name).upper()


def test_result_text() -> None:
    result = audit_fixture(DEBUG, Expectations(vmpl=1))
    lines = result.text().splitlines()
    assert len(lines) == len(result.checks) + 2
    # Without collateral the result says the TCB status was not evaluated, never nothing.
    assert lines[-2] == f"TCB status: {NOT_EVALUATED}" and "--collateral" in lines[-2]
    assert result.doc()["tcb_status"] == {"evaluated": False, "status": NOT_EVALUATED}
    fails = [line for line in lines if "FAIL" in line]
    assert [line.split()[1] for line in fails] == ["guest.debug", "guest.vmpl"]
    assert "(expected DEBUG clear)" in fails[0]
    assert lines[-1].startswith("verdict: fail") and "2 failed" in lines[-1]
    passed = audit_fixture(GENOA).text().splitlines()
    assert not any("FAIL" in line for line in passed)
    assert passed[-1].startswith("verdict: no-claims")


def test_report_doc_without_vek_or_product() -> None:
    report = parse_snp_report(report_bytes(MILAN_V2))
    doc = report_doc(report, None)
    assert "vek" not in doc and doc["product"] is None
    assert doc["reported_tcb"] == {"value": "0x7308000000000003", "parts": None}
    json.dumps(doc)


def test_audit_snp_directly() -> None:
    report = parse_snp_report(report_bytes(GENOA))
    assert audit_snp(report, certs_for(GENOA), Expectations(), NOW).verdict == "no-claims"


# ---- regressions: defects these tests found, now fixed ------------------------------------
#
# Each input is the real Genoa VCEK (oak_genoa_vcek.der) with one byte changed: a corrupt or
# hostile --vcek file. `cryptography` parses some parts lazily and used to let its own
# exception escape mid-audit; the certificate is now refused with AttestationError on load.

_GENOA_VCEK = (SNP / "oak_genoa_vcek.der").read_bytes()


def _patched_vcek(offset: int, value: int) -> bytes:
    data = bytearray(_GENOA_VCEK)
    data[offset] = value
    return bytes(data)


_OID_TEE_SPL = bytes([0x06, 0x0A]) + oid_der(f"{AMD_OID}.3.2")

_CORRUPT_VCEKS = {
    # name: (bytes, the exception `cryptography` raised that used to escape)
    "x509-version-3": (_patched_vcek(12, 0x03), x509.InvalidVersion),  # certs.load_certificates
    "subject-cn-as-bit-string": (_patched_vcek(354, 0x03), TypeError),  # certs.common_name
    "subject-cn-as-boolean": (_patched_vcek(354, 0x01), ValueError),  # certs.common_name
    "curve-1.3.132.0.50": (_patched_vcek(383, 0x32), UnsupportedAlgorithm),  # snp._signature_check
    "ec-point-off-curve": (_patched_vcek(397, _GENOA_VCEK[397] ^ 1), ValueError),  # ditto
    # extension 1.3.6.1.4.1.3704.1.3.2 (teeSPL) renamed to .3.1: amd.read_vek, cert.extensions
    "duplicate-extension": (
        _patched_vcek(_GENOA_VCEK.index(_OID_TEE_SPL) + 11, 0x01),
        x509.DuplicateExtension,
    ),
}


@pytest.mark.parametrize("case", _CORRUPT_VCEKS)
def test_corrupt_vcek_is_an_attestation_error(tmp_path: Path, case: str) -> None:
    data, _ = _CORRUPT_VCEKS[case]
    path = tmp_path / "vcek.der"
    path.write_bytes(data)
    for kwargs in ({"certs": path}, {"vcek": path}):
        with pytest.raises(AttestationError, match=r"vcek\.der"):
            gather(**kwargs)


def test_corrupt_vcek_inputs_are_what_they_claim() -> None:
    assert _GENOA_VCEK[8:13] == bytes.fromhex("a003020102")  # [0] { INTEGER 2 } = v3
    assert _GENOA_VCEK[354:364] == b"\x0c\x08SEV-VCEK"  # UTF8String CN
    assert _GENOA_VCEK[377:384] == bytes.fromhex("06052b81040022")  # secp384r1
    assert _GENOA_VCEK.count(_OID_TEE_SPL) == 1


def test_min_tcb_with_an_unknown_component_is_an_attestation_error() -> None:
    # Expectations is public API: the audit validates names, not only parse_snp_min_tcb.
    with pytest.raises(AttestationError, match="microcode"):
        audit_fixture(GENOA, Expectations(min_tcb={"microcode": 1}))


def test_certificate_table_file_starting_with_an_unknown_guid(tmp_path: Path) -> None:
    chain = _genoa_chain()
    unknown = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes
    entries = [(unknown, b"vendor blob")]
    entries += [(guid_bytes(role, "efi"), der(cert)) for role, cert in chain.items()]
    path = tmp_path / "certs.bin"
    path.write_bytes(cert_table(entries))
    certs = gather(certs=path)
    assert certs.vcek == chain["vcek"]
