"""TDX quotes: parsing (v4, v5), offline verification and claim validation, on the four real
quotes in tests/vectors/attestation/tdx (go-tdx-guest v4 and v5, dcap-qvl v4, trustee v4)
and on quotes derived from them: tampered, truncated, or re-signed by a fake PCK chain.
"""

from __future__ import annotations

import json
import re
import struct
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from cvmlaunch.abi import tdx_quote as abi
from cvmlaunch.attest.expect import Expectations
from cvmlaunch.attest.result import AuditResult
from cvmlaunch.attest.tdx import TdxQuote, audit_tdx, parse_tdx_quote, quote_doc
from cvmlaunch.errors import AttestationError
from tests.conftest import VECTORS

QUOTES_DIR = VECTORS / "attestation" / "tdx"
EXPECTED: dict[str, dict[str, Any]] = json.loads(
    (VECTORS / "attestation" / "expected_fields.json").read_text()
)["tdx"]
NAMES = sorted(EXPECTED)
V5 = "gotdxguest_quote_v5_sample.dat"
DEBUG_TD = "trustee_tdx_quote_4.dat"

# Inside every PCK certificate's validity: the go-tdx-guest v5 sample's leaf is only valid
# from 2026-01-27 (upstream verifies it at 2026-02-03), its v4 leaf until 2029-09-20.
NOW = datetime(2026, 6, 20, tzinfo=UTC)

ALL_CHECKS = {
    "quote.att_key_type",
    "quote.qe_vendor_id",
    "quote.signature",
    "pck.root_pinned",
    "pck.intermediate_signature",
    "pck.leaf_signature",
    "pck.root_validity",
    "pck.intermediate_validity",
    "pck.leaf_validity",
    "qe_report.signature",
    "qe_report.binding",
    "qe_identity.mrsigner",
    "qe_identity.isvprodid",
    "qe_identity.attributes",
    "qe_identity.miscselect",
    "td.debug",
    "td.tud_reserved",
    "td.seam",
}


@cache
def raw(name: str) -> bytes:
    return (QUOTES_DIR / name).read_bytes()


@cache
def parsed(name: str) -> TdxQuote:
    return parse_tdx_quote(raw(name))


def audit(quote: TdxQuote, expect: Expectations | None = None, now: datetime = NOW) -> AuditResult:
    """`audit_tdx`, with every warning (certificate loading included) an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return audit_tdx(quote, expect or Expectations(), now)


def by_name(result: AuditResult) -> dict[str, tuple[bool, str, str]]:
    return {c.name: (c.ok, c.expected, c.actual) for c in result.checks}


def failed(result: AuditResult) -> set[str]:
    return {c.name for c in result.failures}


def serialize(quote: TdxQuote, trailing: bytes = b"") -> bytes:
    """The quote's bytes, every size field recomputed from its contents."""
    cert = b"".join(
        (
            quote.qe_report,
            quote.qe_report_signature,
            struct.pack("<H", len(quote.qe_auth_data)),
            quote.qe_auth_data,
            struct.pack("<HI", quote.inner_cert_data_type, len(quote.pck_chain)),
            quote.pck_chain,
        )
    )
    sig = b"".join(
        (
            quote.signature,
            quote.attestation_key,
            struct.pack("<HI", quote.cert_data_type, len(cert)),
            cert,
        )
    )
    return quote.signed + struct.pack("<I", len(sig)) + sig + trailing


class Offsets:
    """Absolute offsets of the signature-data pieces of a parsed quote."""

    def __init__(self, quote: TdxQuote) -> None:
        self.sig_len = len(quote.signed)
        self.sig = self.sig_len + 4
        self.key = self.sig + 64
        self.cert_header = self.key + 64
        self.cert = self.cert_header + 6
        self.qe_report = self.cert
        self.qe_sig = self.cert + 384
        self.auth_len = self.qe_sig + 64
        self.auth = self.auth_len + 2
        self.inner_header = self.auth + len(quote.qe_auth_data)
        self.pem = self.inner_header + 6


# -- Layouts --------------------------------------------------------------------------------


def _field_offsets(layout: struct.Struct) -> list[int]:
    """Offset of every non-padding field of `layout`, from its format string."""
    offsets, pos = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z])", layout.format.lstrip("<")):
        size = struct.calcsize("<" + count + code)
        if code != "x":
            offsets.append(pos)
        pos += size
    return offsets


def test_layouts_match_the_offset_tables() -> None:
    assert abi.HEADER.size == abi.HEADER_SIZE == 48
    assert _field_offsets(abi.HEADER) == list(abi.HEADER_OFFSETS.values())
    assert abi.BODY_DESCRIPTOR.size == abi.BODY_DESCRIPTOR_SIZE
    assert abi.TD_REPORT_BODY_10.size == abi.TD_BODY_SIZES[abi.BodyType.TD_REPORT_10] == 584
    assert abi.TD_REPORT_BODY_15.size == abi.TD_BODY_SIZES[abi.BodyType.TD_REPORT_15] == 648
    assert _field_offsets(abi.TD_REPORT_BODY_15) == list(abi.TD_REPORT_BODY_OFFSETS.values())
    assert abi.QE_REPORT.size == abi.QE_REPORT_SIZE == 384
    assert _field_offsets(abi.QE_REPORT) == list(abi.QE_REPORT_OFFSETS.values())
    assert abi.CERT_DATA_HEADER.size == abi.CERT_DATA_HEADER_SIZE


@pytest.mark.parametrize("name", NAMES)
def test_body_fields_sit_at_the_table_offsets(name: str) -> None:
    quote, data = parsed(name), raw(name)
    start = len(quote.signed) - quote.body_size
    assert start == (0x30 if quote.version == 4 else 0x36)
    at = {k: start + v for k, v in abi.TD_REPORT_BODY_OFFSETS.items()}
    assert data[at["MRTD"] : at["MRTD"] + 48] == quote.body.mrtd
    assert data[at["RTMR3"] : at["RTMR3"] + 48] == quote.body.rtmrs[3]
    assert data[at["REPORTDATA"] : at["REPORTDATA"] + 64] == quote.body.report_data
    assert int.from_bytes(data[at["XFAM"] : at["XFAM"] + 8], "little") == quote.body.xfam


# -- Parsing ----------------------------------------------------------------------------------


def _ours(quote: TdxQuote) -> dict[str, Any]:
    """Our parse in the vocabulary of expected_fields.json."""
    body, doc = quote.body, quote_doc(quote)

    def le8(value: int) -> str:
        return value.to_bytes(8, "little").hex()

    return {
        "version": quote.version,
        "att_key_type": quote.att_key_type,
        "tee_type": f"{quote.tee_type:#x}",
        "qe_vendor_id": quote.qe_vendor_id.hex(),
        "user_data": quote.user_data.hex(),
        "body_type": quote.body_type,
        "body_size": quote.body_size,
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
        "mr_seam": body.mrseam.hex(),
        "mr_signer_seam": body.mrsignerseam.hex(),
        "seam_attributes": le8(body.seam_attributes),
        "td_attributes": le8(body.td_attributes),
        "xfam": le8(body.xfam),
        "mr_td": body.mrtd.hex(),
        "mr_config_id": body.mrconfigid.hex(),
        "mr_owner": body.mrowner.hex(),
        "mr_owner_config": body.mrownerconfig.hex(),
        **{f"rtmr{i}": rtmr.hex() for i, rtmr in enumerate(body.rtmrs)},
        "report_data": body.report_data.hex(),
        "tee_tcb_svn2": body.tee_tcb_svn2.hex() if body.tee_tcb_svn2 is not None else None,
        "mr_service_td": body.mrservicetd.hex() if body.mrservicetd is not None else None,
        "signed_region_end": f"{len(quote.signed):#x}",
        "signature_data_len": quote.signature_data_len,
        "trailing_bytes_after_signature_data": quote.trailing,
        "attestation_key_xy": quote.attestation_key.hex(),
        "outer_cert_data_type": quote.cert_data_type,
        "qe_report_mrsigner": quote.qe.mrsigner.hex(),
        "qe_report_isvprodid": quote.qe.isvprodid,
        "qe_report_isvsvn": quote.qe.isvsvn,
        "qe_auth_data_len": len(quote.qe_auth_data),
        "inner_cert_data_type": quote.inner_cert_data_type,
        "td_debug_bit0": bool(body.td_attributes & 1),
        "sept_ve_disable_bit28": bool(body.td_attributes >> 28 & 1),
        "pck_fmspc": doc["pck"]["fmspc"],
    }


@pytest.mark.parametrize("name", NAMES)
def test_every_expected_field_equals_ours(name: str) -> None:
    quote = parsed(name)
    ours = _ours(quote)
    for key, value in EXPECTED[name].items():
        assert ours[key] == value, key  # a KeyError: a listed field we do not compare
    # v5 adds body_type, body_size, tee_tcb_svn2 and mr_service_td.
    assert len(EXPECTED[name]) == (37 if quote.version == 5 else 33)


@pytest.mark.parametrize("name", NAMES)
def test_quote_doc_is_json_and_agrees_with_the_parse(name: str) -> None:
    quote = parsed(name)
    doc = json.loads(json.dumps(quote_doc(quote)))
    assert doc["header"]["tee_type"] == "0x81"
    assert doc["body"]["mrtd"] == EXPECTED[name]["mr_td"]
    assert doc["body"]["rtmrs"] == [EXPECTED[name][f"rtmr{i}"] for i in range(4)]
    assert int(doc["body"]["td_attributes"], 16) == quote.body.td_attributes
    assert doc["signed_region_end"] == EXPECTED[name]["signed_region_end"]
    assert doc["qe_report"]["isvsvn"] == EXPECTED[name]["qe_report_isvsvn"]
    assert doc["pck"] == {
        "certificates": 3,
        "leaf_cn": "Intel SGX PCK Certificate",
        "fmspc": EXPECTED[name]["pck_fmspc"],
        "problem": None,
    }
    assert doc["trailing_bytes"] == EXPECTED[name]["trailing_bytes_after_signature_data"]
    assert ("DEBUG" in doc["body"]["td_attribute_names"]) == EXPECTED[name]["td_debug_bit0"]
    assert {"X87", "SSE"} <= set(doc["body"]["xfam_names"])
    if quote.version == 4:
        assert doc["body"]["tee_tcb_svn2"] is None and doc["body_type"] == 2


def test_quote_doc_names_unknown_attribute_bits_as_hex() -> None:
    quote = parsed(DEBUG_TD)
    body = quote.body._replace(td_attributes=(1 << 40) | 1 | (1 << 28), xfam=(1 << 50) | 3)
    doc = quote_doc(quote._replace(body=body))
    assert doc["body"]["td_attribute_names"] == ["DEBUG", "SEPT_VE_DISABLE", "0x10000000000"]
    assert doc["body"]["xfam_names"] == ["X87", "SSE", "0x4000000000000"]


@pytest.mark.parametrize("name", NAMES)
def test_serialize_round_trips(name: str) -> None:
    quote, data = parsed(name), raw(name)
    assert serialize(quote, data[len(data) - quote.trailing :]) == data


def test_trailing_bytes_and_pem_nul_are_tolerated() -> None:
    assert raw("gotdxguest_quote_v4_SPR_E4.dat").endswith(b"only for testing purpose)\n")
    assert parsed("dcapqvl_tdx_quote_v4.dat").pck_chain.endswith(b"-----\n\0")
    quote = parse_tdx_quote(raw(V5) + b"\xff" * 5)
    assert quote.trailing == 5 and quote == parsed(V5)._replace(trailing=5)


def test_v5_with_a_tdx10_body_parses_like_v4() -> None:
    v4 = parsed("dcapqvl_tdx_quote_v4.dat")
    header = struct.pack("<H", 5) + v4.signed[2:48]
    signed = header + struct.pack("<HI", 2, 584) + v4.signed[48:]
    quote = parse_tdx_quote(serialize(v4._replace(signed=signed)))
    assert quote.version == 5 and quote.body_type == 2 and quote.body == v4.body
    assert len(quote.signed) == 48 + 6 + 584


# -- Parse errors --------------------------------------------------------------------------


def _raises(data: bytes, words: str, offset: int) -> None:
    with pytest.raises(AttestationError) as info:
        parse_tdx_quote(data)
    assert words in str(info.value), str(info.value)
    assert info.value.offset == offset, str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("length", [0, 10, 47])
def test_truncated_header(length: int) -> None:
    _raises(raw(V5)[:length], "header: needs 48 bytes", 0)


@pytest.mark.parametrize("length", [48, 100, 0x30 + 583])
def test_truncated_v4_body(length: int) -> None:
    _raises(raw(DEBUG_TD)[:length], "TD report body: needs 584 bytes", 0x30)


def test_truncated_v5_descriptor_and_body() -> None:
    _raises(raw(V5)[:50], "v5 body descriptor", 0x30)
    _raises(raw(V5)[: 0x36 + 600], "TD report body: needs 648 bytes", 0x36)


@pytest.mark.parametrize("name", [DEBUG_TD, V5])
def test_truncated_signature_data(name: str) -> None:
    data, at = raw(name), Offsets(parsed(name))
    _raises(data[: at.sig_len + 2], "signature data length", at.sig_len)
    # Cut anywhere inside: the declared signature data runs past the end of the quote.
    for cut in (at.sig + 10, at.cert + 100, len(data) - 1):
        _raises(data[:cut], "signature data: needs", at.sig)


def _cut(data: bytes, at: Offsets, end: int, fix_cert_size: bool = True) -> bytes:
    """`data` cut at `end`, with the signature data length (and the certification data size,
    when the cut falls inside it) shrunk to match, so the innermost piece is what is short."""
    out = bytearray(data[:end])
    struct.pack_into("<I", out, at.sig_len, end - at.sig)
    if fix_cert_size and end >= at.cert:
        struct.pack_into("<I", out, at.cert_header + 2, end - at.cert)
    return bytes(out)


@pytest.mark.parametrize("name", [DEBUG_TD, V5])
def test_each_signature_data_piece_short(name: str) -> None:
    data, at = raw(name), Offsets(parsed(name))
    cases = [
        (at.sig + 10, "quote signature: needs 64 bytes", at.sig),
        (at.key + 10, "attestation key: needs 64 bytes", at.key),
        (at.cert_header + 3, "certification data header", at.cert_header),
        (at.qe_report + 100, "QE report: needs 384 bytes", at.qe_report),
        (at.qe_sig + 10, "QE report signature", at.qe_sig),
        (at.auth_len + 1, "QE auth data length", at.auth_len),
        (at.auth + 5, "QE auth data: needs 32 bytes", at.auth),
        (at.inner_header + 3, "PCK certification data header", at.inner_header),
        (at.pem + 100, "PCK certificate chain: needs", at.pem),
    ]
    for end, words, offset in cases:
        _raises(_cut(data, at, end), words, offset)
    # The certification data's own size running past the signature data.
    _raises(
        _cut(data, at, at.cert + 100, fix_cert_size=False),
        "QE report certification data: needs",
        at.cert,
    )


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_header_errors() -> None:
    data = raw(DEBUG_TD)
    _raises(_patched(data, 0, "<H", 3), "version 3: expected 4 or 5", 0)
    _raises(_patched(data, 4, "<I", 0), "TEE type 0x0: expected 0x81, not a TDX quote", 4)


@pytest.mark.parametrize(
    ("body_type", "size", "words", "offset"),
    [
        (1, 384, "body type 1: expected 2 (TDX 1.0) or 3 (TDX 1.5); an SGX enclave report", 0x30),
        (4, 648, "body type 4", 0x30),
        (3, 584, "body size 584: expected 648 for body type 3", 0x32),
        (2, 648, "body size 648: expected 584 for body type 2", 0x32),
    ],
)
def test_v5_descriptor_errors(body_type: int, size: int, words: str, offset: int) -> None:
    data = bytearray(raw(V5))
    struct.pack_into("<HI", data, 0x30, body_type, size)
    _raises(bytes(data), words, offset)


def test_certification_data_type_errors() -> None:
    data, at = raw(V5), Offsets(parsed(V5))
    _raises(_patched(data, at.cert_header, "<H", 5), "type 5: expected 6", at.cert_header)
    _raises(_patched(data, at.inner_header, "<H", 4), "type 4: expected 5", at.inner_header)


def test_signature_data_length_past_the_end() -> None:
    data, at = raw(V5), Offsets(parsed(V5))
    _raises(
        _patched(data, at.sig_len, "<I", 0xFFFFFFFF), "signature data: needs 4294967295", at.sig
    )


# -- Verification ------------------------------------------------------------------------------


def test_certificates_load_without_warnings() -> None:
    for name in NAMES:
        assert failed(audit(parsed(name), Expectations(allow_debug=True))) == set()


@pytest.mark.parametrize("name", NAMES)
def test_every_quote_verifies(name: str) -> None:
    result = audit(parsed(name))
    assert {c.name for c in result.checks} == ALL_CHECKS
    assert result.kind == "tdx"
    assert result.report == quote_doc(parsed(name))
    if name == DEBUG_TD:
        assert failed(result) == {"td.debug"} and result.verdict == "fail"
        assert by_name(result)["td.debug"][2].startswith("DEBUG set")
    else:
        assert result.passed and result.verdict == "no-claims" and result.claims_checked == 0


def test_debug_td_passes_when_debug_is_allowed() -> None:
    result = audit(parsed(DEBUG_TD), Expectations(allow_debug=True))
    assert result.verdict == "no-claims"  # allowing is no claim
    assert by_name(result)["td.debug"] == (True, "DEBUG clear, or allowed", "DEBUG set (allowed)")
    # allow_debug permits a debuggable TD; it does not require one.
    assert by_name(audit(parsed(V5), Expectations(allow_debug=True)))["td.debug"][0]


def _flip_outcomes(name: str, positions: Iterator[tuple[int, int]]) -> set[int]:
    """Flip each (byte, bit) of the signed region; every flip must fail the audit on the
    quote signature or fail to parse. Returns the byte offsets whose flips did not parse."""
    data = raw(name)
    unparsable: set[int] = set()
    lenient = Expectations(allow_debug=True)
    for pos, bit in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        try:
            quote = parse_tdx_quote(bytes(flipped))
        except AttestationError:
            unparsable.add(pos)
            continue
        result = audit_tdx(quote, lenient, NOW)
        assert result.verdict == "fail", (pos, bit)
        assert "quote.signature" in failed(result), (pos, bit)
    return unparsable


# version (0..1), TEE type (4..7), and for v5 the body descriptor (0x30..0x35): the only
# bytes whose corruption is a parse error rather than a failed signature.
_STRUCTURAL = {0, 1, 4, 5, 6, 7}


@pytest.mark.parametrize("name", ["dcapqvl_tdx_quote_v4.dat", V5])
def test_flipping_any_bit_of_the_signed_region_fails(name: str) -> None:
    signed = len(parsed(name).signed)
    assert signed == (0x278 if name != V5 else 0x2BE)
    unparsable = _flip_outcomes(name, ((p, b) for p in range(signed) for b in range(8)))
    structural = _STRUCTURAL | (set(range(0x30, 0x36)) if name == V5 else set())
    assert {0, 4} <= unparsable <= structural


@pytest.mark.parametrize("name", ["gotdxguest_quote_v4_SPR_E4.dat", DEBUG_TD])
def test_flipping_one_bit_of_every_signed_byte_fails(name: str) -> None:
    signed = len(parsed(name).signed)
    assert _flip_outcomes(name, ((p, p % 8) for p in range(signed))) <= _STRUCTURAL


def _flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


@pytest.mark.parametrize("name", NAMES)
def test_tampered_qe_report_fails_its_signature(name: str) -> None:
    at, lenient = Offsets(parsed(name)), Expectations(allow_debug=True)
    # CPUSVN, ISVSVN, the reserved byte before REPORTDATA.
    for pos in (at.qe_report, at.qe_report + 0x102, at.qe_report + 0x13F):
        result = audit(parse_tdx_quote(_flip(raw(name), pos)), lenient)
        assert failed(result) == {"qe_report.signature"}
    signature = audit(parse_tdx_quote(_flip(raw(name), at.qe_sig + 40)), lenient)
    assert failed(signature) == {"qe_report.signature"}
    # REPORTDATA is signed too, and is what binds the attestation key.
    report_data = audit(parse_tdx_quote(_flip(raw(name), at.qe_report + 0x140)), lenient)
    assert failed(report_data) == {"qe_report.signature", "qe_report.binding"}


@pytest.mark.parametrize("name", NAMES)
def test_tampered_attestation_key_or_auth_data_breaks_the_binding(name: str) -> None:
    at, lenient = Offsets(parsed(name)), Expectations(allow_debug=True)
    for pos in (at.key, at.key + 63):
        result = audit(parse_tdx_quote(_flip(raw(name), pos)), lenient)
        assert failed(result) == {"quote.signature", "qe_report.binding"}
    auth = audit(parse_tdx_quote(_flip(raw(name), at.auth + 3)), lenient)
    assert failed(auth) == {"qe_report.binding"}


def test_binding_requires_the_second_half_of_report_data_zero() -> None:
    quote = parsed(V5)
    qe = quote.qe._replace(report_data=quote.qe.report_data[:32] + b"\x01" * 32)
    result = audit(quote._replace(qe=qe))
    assert failed(result) == {"qe_report.binding"}


def test_attestation_key_off_the_curve_is_a_failed_check() -> None:
    quote = parsed(V5)._replace(attestation_key=bytes(63) + b"\x07")
    result = audit(quote)
    assert by_name(result)["quote.signature"][1:] == (
        "ECDSA P-256/SHA-256 by the attestation key",
        "attestation key is not a P-256 point",
    )


def test_header_claims_are_checks_not_parse_errors() -> None:
    data = _patched(raw(V5), 2, "<H", 3)
    data = data[:0x0C] + bytes(16) + data[0x1C:]
    result = audit(parse_tdx_quote(data))
    assert failed(result) == {"quote.att_key_type", "quote.qe_vendor_id", "quote.signature"}
    checks = by_name(result)
    assert checks["quote.att_key_type"] == (False, "2", "3")
    assert checks["quote.qe_vendor_id"][1:] == (abi.INTEL_QE_VENDOR_ID.hex(), "00" * 16)


@pytest.mark.parametrize("name", NAMES)
def test_expired_and_not_yet_valid_pck_leaf(name: str) -> None:
    leaf = x509.load_pem_x509_certificates(parsed(name).pck_chain.rstrip(b"\0"))[0]
    late = audit(
        parsed(name), Expectations(allow_debug=True), leaf.not_valid_after_utc + timedelta(days=1)
    )
    assert "pck.leaf_validity" in failed(late)
    assert by_name(late)["pck.leaf_validity"][2].startswith("expired at")
    early = audit(
        parsed(name), Expectations(allow_debug=True), leaf.not_valid_before_utc - timedelta(days=1)
    )
    assert failed(early) == {"pck.leaf_validity"}
    assert by_name(early)["pck.leaf_validity"][2].startswith("not yet valid")


def test_naive_now_is_utc() -> None:
    assert audit(parsed(V5), now=NOW.replace(tzinfo=None)).passed


def test_v5_sample_is_not_yet_valid_in_mid_2025() -> None:
    result = audit(parsed(V5), now=datetime(2025, 6, 20, tzinfo=UTC))
    assert failed(result) == {"pck.leaf_validity"}


def test_unusable_pck_chain_fails_checks_without_raising() -> None:
    pck_checks = {c for c in ALL_CHECKS if c.startswith("pck.")} | {"qe_report.signature"}
    garbage = parsed(V5)._replace(pck_chain=b"not a certificate chain\0")
    result = audit(garbage)
    assert failed(result) == pck_checks
    assert "not a DER or PEM X.509 certificate" in by_name(result)["pck.root_pinned"][2]
    assert quote_doc(garbage)["pck"]["fmspc"] is None

    chain = parsed(V5).pck_chain
    two = chain[: chain.rindex(b"-----BEGIN CERTIFICATE-----")]
    result = audit(parsed(V5)._replace(pck_chain=two))
    # The leaf is still there: the QE report signature checks out, the chain does not.
    assert failed(result) == pck_checks - {"qe_report.signature"}
    assert "holds 2 certificates, expected 3" in by_name(result)["pck.leaf_validity"][2]


# -- A fake PKI ----------------------------------------------------------------------------


def _der(tag: int, value: bytes) -> bytes:
    size = len(value)
    length = bytes([size]) if size < 0x80 else b"\x81" + bytes([size])
    return bytes([tag]) + length + value


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


FAKE_FMSPC = bytes.fromhex("00A0C1DEFACE")


def _sgx_extension() -> x509.UnrecognizedExtension:
    entries = (
        _der(0x30, _oid(abi.SGX_EXTENSION_OID + ".3") + _der(0x04, b"\x00\x00")),  # PCE-ID
        _der(0x30, _oid(abi.FMSPC_OID) + _der(0x04, FAKE_FMSPC)),
    )
    value = _der(0x30, b"".join(entries))
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(abi.SGX_EXTENSION_OID), value)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = True,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2034, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(_sgx_extension(), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs) + b"\0"


def test_substituted_root_fails_the_pin_naming_it() -> None:
    impostor_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Impostor Root CA")])
    impostor = _certificate(impostor_name, ec.generate_private_key(ec.SECP256R1()))
    chain = parsed(V5).pck_chain
    real_root_at = chain.rindex(b"-----BEGIN CERTIFICATE-----")
    quote = parsed(V5)._replace(pck_chain=chain[:real_root_at] + _pem(impostor))
    result = audit(parse_tdx_quote(serialize(quote)))
    # The intermediate is checked against the bundled root, so only the pin fails.
    assert failed(result) == {"pck.root_pinned"}
    _, expected, actual = by_name(result)["pck.root_pinned"]
    assert expected == "Intel SGX Root CA"
    assert actual.startswith("Impostor Root CA with sha256 ")


def test_fake_chain_fails_only_at_the_root() -> None:
    root_key, ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    original = parsed(V5)
    # Intel's names, the attacker's keys: only the pinned root tells them apart.
    real = x509.load_pem_x509_certificates(original.pck_chain.rstrip(b"\0"))
    leaf_name, ca_name, root_name = (c.subject for c in real)
    root = _certificate(root_name, root_key)
    ca = _certificate(ca_name, ca_key, (root_name, root_key))
    leaf = _certificate(leaf_name, leaf_key, (ca_name, ca_key), ca=False)
    r, s = decode_dss_signature(leaf_key.sign(original.qe_report, ec.ECDSA(hashes.SHA256())))
    forged = original._replace(
        pck_chain=_pem(leaf, ca, root),
        qe_report_signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"),
    )
    quote = parse_tdx_quote(serialize(forged))
    result = audit(quote)
    assert failed(result) == {"pck.root_pinned", "pck.intermediate_signature"}
    assert by_name(result)["pck.intermediate_signature"][2] == (
        "signature does not verify with Intel SGX Root CA"
    )
    assert quote_doc(quote)["pck"]["fmspc"] == FAKE_FMSPC.hex().upper()
    # The fake leaf did sign: with the original signature the QE report check fails too.
    unsigned = audit(quote._replace(qe_report_signature=original.qe_report_signature))
    assert "qe_report.signature" in failed(unsigned)


# -- Claims --------------------------------------------------------------------------------


QVL = "dcapqvl_tdx_quote_v4.dat"


def _claim(expect: Expectations, name: str = QVL) -> dict[str, tuple[bool, str, str]]:
    result = audit(parsed(name), expect)
    verification = {c.name: c.ok for c in result.checks if c.name in ALL_CHECKS}
    assert all(verification.values())
    return {n: v for n, v in by_name(result).items() if n not in ALL_CHECKS}


def test_mrtd_right_and_wrong() -> None:
    mrtd = parsed(QVL).body.mrtd
    assert _claim(Expectations(measurement=mrtd)) == {"td.mrtd": (True, mrtd.hex(), mrtd.hex())}
    wrong = bytes(48)
    checks = _claim(Expectations(measurement=wrong))
    assert checks["td.mrtd"] == (False, wrong.hex(), mrtd.hex())
    assert audit(parsed(QVL), Expectations(measurement=wrong)).verdict == "fail"


def test_report_data_is_zero_padded() -> None:
    data = parsed(DEBUG_TD).body.report_data
    lenient = Expectations(allow_debug=True, report_data=data)
    assert _claim(lenient, DEBUG_TD)["td.report_data"][0]
    # A 32-byte nonce means 32 zero bytes after it; this quote's second half is not zero.
    short = _claim(lenient._replace(report_data=data[:32]), DEBUG_TD)["td.report_data"]
    assert short == (False, data[:32].hex() + "00" * 32, data.hex())


def test_rtmrs_by_index() -> None:
    rtmrs = parsed(QVL).body.rtmrs
    checks = _claim(Expectations(rtmrs={2: rtmrs[2], 0: bytes(48)}))
    assert list(checks) == ["td.rtmr0", "td.rtmr2"]
    assert checks["td.rtmr0"] == (False, "00" * 48, rtmrs[0].hex())
    assert checks["td.rtmr2"][0]
    with pytest.raises(AttestationError, match="rtmrs: index 4"):
        audit(parsed(QVL), Expectations(rtmrs={4: bytes(48)}))


def test_attributes_and_xfam_show_hex_and_names() -> None:
    body = parsed(QVL).body
    right = _claim(Expectations(td_attributes=body.td_attributes, xfam=body.xfam))
    assert right["td.attributes"] == (
        True,
        "0x0000000010000000 [SEPT_VE_DISABLE]",
        "0x0000000010000000 [SEPT_VE_DISABLE]",
    )
    assert right["td.xfam"][0] and right["td.xfam"][2].startswith("0x00000000000602e7 [X87, SSE")
    wrong = _claim(Expectations(td_attributes=0x10000001, xfam=0x3))
    assert wrong["td.attributes"] == (
        False,
        "0x0000000010000001 [DEBUG, SEPT_VE_DISABLE]",
        "0x0000000010000000 [SEPT_VE_DISABLE]",
    )
    assert wrong["td.xfam"][:2] == (False, "0x0000000000000003 [X87, SSE]")


def test_identity_fields() -> None:
    body = parsed(QVL).body
    expect = Expectations(
        mrconfigid=body.mrconfigid,
        mrowner=body.mrowner,
        mrownerconfig=body.mrownerconfig,
        mrseam=body.mrseam,
    )
    checks = _claim(expect)
    assert list(checks) == ["td.mrconfigid", "td.mrowner", "td.mrownerconfig", "td.mrseam"]
    assert all(ok for ok, _, _ in checks.values())
    wrong = _claim(expect._replace(mrowner=b"\x01" * 48, mrseam=bytes(48)))
    assert {n for n, (ok, _, _) in wrong.items() if not ok} == {"td.mrowner", "td.mrseam"}


@pytest.mark.parametrize(
    ("minimum", "ok"),
    [
        ("06010300000000000000000000000000", True),  # equal
        ("05000000000000000000000000000000", True),
        ("07000000000000000000000000000000", False),
        # Component-wise, not lexicographic: byte 2 is below the minimum.
        ("00000400000000000000000000000000", False),
        ("00000000000000000000000000000001", False),
    ],
)
def test_min_tee_tcb_svn(minimum: str, ok: bool) -> None:
    assert parsed(QVL).body.tee_tcb_svn.hex() == "06010300000000000000000000000000"
    check = _claim(Expectations(min_tee_tcb_svn=bytes.fromhex(minimum)))["td.tee_tcb_svn"]
    assert check == (ok, f">= {minimum} byte by byte", "06010300000000000000000000000000")


def test_min_tee_tcb_svn_must_be_16_bytes() -> None:
    with pytest.raises(AttestationError, match="min_tee_tcb_svn: expected 16 bytes"):
        audit(parsed(QVL), Expectations(min_tee_tcb_svn=b"\x01"))


@pytest.mark.parametrize(
    ("field", "expect"),
    [
        ("policy", Expectations(policy=0x30000)),
        ("host_data", Expectations(host_data=bytes(32))),
        ("vmpl", Expectations(vmpl=0)),
        ("min_tcb", Expectations(min_tcb={"snp": 8})),
    ],
)
def test_snp_only_expectations_are_refused(field: str, expect: Expectations) -> None:
    with pytest.raises(AttestationError, match=f"^{field}: an SEV-SNP expectation"):
        audit(parsed(QVL), expect)


def test_debug_qe_and_foreign_module_fail() -> None:
    """A QE in debug mode could leak its attestation key; a module not signed by Intel has a
    non-zero MRSIGNERSEAM; reserved TUD bits mark an untrustworthy TD."""
    quote = parsed("dcapqvl_tdx_quote_v4.dat")
    attributes = bytes([quote.qe.attributes[0] | 0x02]) + quote.qe.attributes[1:]
    body = quote.body._replace(
        mrsignerseam=b"\x01" + bytes(47), td_attributes=quote.body.td_attributes | 0x04
    )
    result = audit(quote._replace(qe=quote.qe._replace(attributes=attributes), body=body))
    failed = {c.name for c in result.failures}
    assert {"qe_identity.attributes", "td.seam", "td.tud_reserved"} <= failed
