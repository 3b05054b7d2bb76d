"""Property-based fuzzing of the attestation evidence parsers and of the audit built on them.

Evidence, certificate files and certificate tables are untrusted input: whatever bytes
arrive, `read_evidence`, `parse_snp_report`, `parse_tdx_quote`, `audit`, `parse_cert_table`,
`load_certificates`/`sort_certificates`/`read_vek` and the DER readers may fail only with
`AttestationError`. Inputs:

* arbitrary byte strings, including 1184-byte "reports" with a valid VERSION, so that
  everything after parsing (product, TCB layout, chain, binding) runs on noise;
* the real SNP reports and TDX quotes (tests/vectors/attestation/) with bytes flipped,
  overwritten, inserted and deleted, truncated, then handed over raw, as hex text or inside
  a MSG_REPORT_RSP;
* certificate tables built from a description (known and unknown GUIDs in both byte orders,
  offsets and lengths in and out of range, with and without terminator), and the real
  certificates with bytes changed.

And one property beyond "no crash": an audit of a mutated SNP report passes only if the
report bytes the auditor ends up with still carry the signed region 0x000-0x29F and the
signature unchanged (up to the other valid ECDSA signature (r, n - s)).

Runs derandomized, so CI sees the same examples every time.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from cvmlaunch.abi.guid import guid
from cvmlaunch.abi.snp_report import MSG_REPORT_RSP, REPORT_SIZE, SIGNED_SIZE
from cvmlaunch.attest import (
    SEV_SNP,
    TDX,
    AmdCerts,
    Evidence,
    Expectations,
    audit,
    read_evidence,
)
from cvmlaunch.attest import der as der_mod
from cvmlaunch.attest.amd import gather, parse_cert_table, read_vek, sort_certificates
from cvmlaunch.attest.certs import load_certificates
from cvmlaunch.attest.roots import amd_chain
from cvmlaunch.attest.snp import parse_snp_report
from cvmlaunch.attest.tdx import parse_tdx_quote
from cvmlaunch.errors import AttestationError
from tests.attest_fakes import der_integer, der_tlv, oid_der

pytestmark = pytest.mark.fuzz

VECTORS = Path(__file__).parents[1] / "vectors" / "attestation"
EXPECTED: dict[str, dict[str, Any]] = json.loads((VECTORS / "expected_fields.json").read_text())[
    "snp"
]
NOW = datetime(2025, 9, 1, tzinfo=UTC)
# The go-sev-guest report fails on DEBUG alone; allowed here, every unmutated report passes.
ALLOW_DEBUG = Expectations(allow_debug=True)
P384_N = int(  # the order of the P-384 group
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)


def _report(name: str) -> bytes:
    data = (VECTORS / "snp" / name).read_bytes()
    return bytes.fromhex(data.decode()) if name.endswith(".hex") else data


SNP_REPORTS = {name: _report(name) for name in sorted(EXPECTED)}
TDX_QUOTES = {p.name: p.read_bytes() for p in sorted((VECTORS / "tdx").glob("*.dat"))}
CERT_FILES = sorted((VECTORS / "snp").glob("*.der"))


@functools.cache
def certs_for(name: str) -> AmdCerts:
    vek = VECTORS / "snp" / EXPECTED[name]["vek_file"]
    return gather(vlek=vek) if "vlek" in vek.name else gather(vcek=vek)


def _pinned_ders() -> list[bytes]:
    out = []
    for product in ("Milan", "Genoa", "Turin"):
        for kind in ("vcek", "vlek"):
            out += [c.public_bytes(Encoding.DER) for c in amd_chain(product, kind)]
    return sorted(set(out))


REAL_CERTS = [p.read_bytes() for p in CERT_FILES] + _pinned_ders()

FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def only_attestation_errors(call: Callable[[], object]) -> object | None:
    """`call()`, or None if it raised AttestationError; any other exception escapes."""
    try:
        return call()
    except AttestationError as e:
        assert str(e)  # a message for the user, and an offset when one is given
        assert e.offset is None or e.offset >= 0
        return None


# ---- mutations -------------------------------------------------------------------------------

_POS = st.integers(0, 1 << 16)
_BYTE_EDIT = st.one_of(
    st.tuples(st.just("flip"), _POS, st.integers(0, 7)),
    st.tuples(st.just("set"), _POS, st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF])),
)
_MUTATION = st.one_of(
    _BYTE_EDIT,
    st.tuples(st.just("u32"), _POS, st.sampled_from([0, 1, 2, 3, 4, 5, 6, 0x81, 0xFFFFFFFF])),
    st.tuples(st.just("truncate"), _POS, st.just(0)),
    st.tuples(st.just("insert"), _POS, st.binary(min_size=1, max_size=48)),
    st.tuples(st.just("delete"), _POS, st.integers(1, 48)),
)


def mutate(base: bytes, ops: list[tuple[str, int, Any]], window: tuple[int, int]) -> bytes:
    """`base` with `ops` applied in turn; positions fall into `window` (start, size) of the
    current data, wrapping around."""
    data = bytearray(base)
    start, size = window
    for op, raw_pos, arg in ops:
        if not data:
            data += b"\0"
        low = min(start, len(data) - 1)
        pos = low + raw_pos % max(1, min(start + size, len(data)) - low)
        if op == "flip":
            data[pos] ^= 1 << arg
        elif op == "set":
            data[pos] = arg
        elif op == "u32":
            data[pos : pos + 4] = arg.to_bytes(4, "little")
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = arg
        else:
            del data[pos : pos + arg]
    return bytes(data)


def encode(data: bytes, how: str) -> bytes:
    """Evidence as an auditor may receive it."""
    if how == "hex":
        return data.hex().encode()
    if how == "HEX-lines":
        text = data.hex().upper().encode()
        return b"\n".join(text[i : i + 60] for i in range(0, len(text), 60)) + b"\n"
    if how == "base64-lines":
        text = base64.b64encode(data)
        return b"\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + b"\n"
    if how == "msg_report_rsp":
        return MSG_REPORT_RSP.pack(0, REPORT_SIZE) + data
    return data


ENCODINGS = st.sampled_from(["raw", "raw", "hex", "HEX-lines", "base64-lines", "msg_report_rsp"])
# Where mutations land in an SNP report: anywhere, the signed region, the signature, the tail.
WHOLE = (0, REPORT_SIZE)
SNP_WINDOWS = st.sampled_from(
    [WHOLE, (0, SIGNED_SIZE), (0, 0x50), (0x180, 0x80), (SIGNED_SIZE, 0x90), (0x330, 0x170)]
)


# ---- SNP reports -----------------------------------------------------------------------------


def _audit_all_ways(data: bytes, certs: AmdCerts) -> None:
    evidence = only_attestation_errors(lambda: read_evidence(data))
    if isinstance(evidence, Evidence):
        assert evidence.kind in (SEV_SNP, TDX)
    only_attestation_errors(lambda: parse_snp_report(data))
    only_attestation_errors(lambda: audit(data, certs=certs, now=NOW))


@settings(FUZZ, max_examples=500)
@given(data=st.binary(max_size=2 * REPORT_SIZE + 64))
@example(data=b"")
@example(data=b" \n")
@example(data=b"0")
@example(data=b"00" * REPORT_SIZE)
@example(data=bytes(REPORT_SIZE + 32))
@example(data=b"\x04\x00\x02\x00\x81\x00\x00\x00" + bytes(40))
@example(data=b"\x03\x00\x02\x00\x00\x00\x00\x00" + bytes(40))
def test_arbitrary_bytes(data: bytes) -> None:
    _audit_all_ways(data, certs_for("oak_genoa_report_v5.bin"))
    _audit_all_ways(data.hex().encode(), certs_for("oak_genoa_report_v5.bin"))


@settings(FUZZ, max_examples=600)
@given(
    body=st.binary(min_size=REPORT_SIZE - 4, max_size=REPORT_SIZE - 4),
    version=st.sampled_from([2, 3, 4, 5]),
    name=st.sampled_from(sorted(SNP_REPORTS)),
    how=ENCODINGS,
)
def test_noise_with_a_valid_version(body: bytes, version: int, name: str, how: str) -> None:
    """Every field is noise, so the audit runs every check on values no real report has."""
    data = version.to_bytes(4, "little") + body
    result = audit(encode(data, how), certs=certs_for(name), now=NOW)  # parses: no error
    assert result.verdict == "fail" and "report.signature" in {c.name for c in result.failures}
    json.dumps(result.doc())


def _malleable_twin(data: bytes, original: bytes) -> bool:
    """`data` carries the other valid ECDSA signature of `original`: (r, n - s)."""
    r0, s0 = (int.from_bytes(original[o : o + 72], "little") for o in (0x2A0, 0x2E8))
    r1, s1 = (int.from_bytes(data[o : o + 72], "little") for o in (0x2A0, 0x2E8))
    return (r1, s1) == (r0, P384_N - s0)


@settings(FUZZ, max_examples=1500)
@given(
    name=st.sampled_from(sorted(SNP_REPORTS)),
    ops=st.lists(_MUTATION, min_size=1, max_size=4),
    window=SNP_WINDOWS,
    how=ENCODINGS,
)
@example(name="oak_genoa_report_v5.bin", ops=[("set", 0, 0x04)], window=(0, 4), how="raw")
@example(name="oak_turin_report_v5.bin", ops=[("truncate", 1183, 0)], window=WHOLE, how="hex")
@example(name="oak_genoa_report_v5.bin", ops=[("set", 0x330, 0)], window=WHOLE, how="raw")
@example(name="gosevguest_milan_report_v2.bin", ops=[("flip", 0, 0)], window=(0x330, 8), how="raw")
def test_mutated_snp_report(
    name: str, ops: list[tuple[str, int, Any]], window: tuple[int, int], how: str
) -> None:
    original = SNP_REPORTS[name]
    data = encode(mutate(original, ops, window), how)
    result = only_attestation_errors(
        lambda: audit(data, certs=certs_for(name), expect=ALLOW_DEBUG, now=NOW)
    )
    only_attestation_errors(lambda: parse_snp_report(data))
    verdict = getattr(result, "verdict", "AttestationError")
    event(f"{how}: {verdict}")
    if not getattr(result, "passed", False):  # no claims are given: the verdict is no-claims
        return
    # Every check passed: the auditor judged bytes that still carry the signed region and
    # signature.
    judged = read_evidence(data).data
    assert judged[:SIGNED_SIZE] == original[:SIGNED_SIZE]
    assert judged[SIGNED_SIZE:0x330] == original[SIGNED_SIZE:0x330] or _malleable_twin(
        judged, original
    )
    assert judged[0x330:] == bytes(REPORT_SIZE - 0x330)


def test_malleable_twin_signature_passes() -> None:
    """Why the property above allows (r, n - s): ECDSA accepts both, and so does the audit.
    (Harmless: the signed bytes are the same.)"""
    original = SNP_REPORTS["oak_genoa_report_v5.bin"]
    s = int.from_bytes(original[0x2E8:0x330], "little")
    twin = original[:0x2E8] + (P384_N - s).to_bytes(72, "little") + original[0x330:]
    certs = certs_for("oak_genoa_report_v5.bin")
    assert audit(twin, certs=certs, expect=Expectations(), now=NOW).passed
    assert _malleable_twin(twin, original)


# ---- TDX quotes ------------------------------------------------------------------------------

TDX_WINDOWS = st.sampled_from(
    [(0, 1 << 16), (0, 0x30), (0x30, 0x250), (0x270, 0x300), (0x500, 0x1400)]
)


@settings(FUZZ, max_examples=1000)
@given(
    name=st.sampled_from(sorted(TDX_QUOTES)),
    ops=st.lists(_MUTATION, min_size=1, max_size=4),
    window=TDX_WINDOWS,
    hexed=st.booleans(),
)
def test_mutated_tdx_quote(
    name: str, ops: list[tuple[str, int, Any]], window: tuple[int, int], hexed: bool
) -> None:
    data = mutate(TDX_QUOTES[name], ops, window)
    if hexed:
        data = data.hex().encode()
    only_attestation_errors(lambda: read_evidence(data))
    only_attestation_errors(lambda: parse_tdx_quote(data))
    only_attestation_errors(lambda: audit(data, now=NOW))


@settings(FUZZ, max_examples=300)
@given(data=st.binary(max_size=6000), version=st.sampled_from([4, 5]))
def test_tdx_header_with_noise(data: bytes, version: int) -> None:
    quote = version.to_bytes(2, "little") + b"\x02\x00\x81\x00\x00\x00" + data
    only_attestation_errors(lambda: parse_tdx_quote(quote))
    only_attestation_errors(lambda: audit(quote, now=NOW))


# ---- certificate tables ----------------------------------------------------------------------

GUIDS = [
    "63da758d-e664-4564-adc5-f4b93be8accd",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae",
]
_GUID_BYTES = st.one_of(
    st.sampled_from([bytes.fromhex(g.replace("-", "")) for g in GUIDS]),
    st.sampled_from([guid(g) for g in GUIDS]),
    st.binary(min_size=16, max_size=16),
    st.just(bytes(16)),
)


@st.composite
def cert_tables(draw: st.DrawFn) -> bytes:
    entries = draw(
        st.lists(st.tuples(_GUID_BYTES, st.integers(0, 600), st.integers(0, 600)), max_size=5)
    )
    head = b"".join(g + o.to_bytes(4, "little") + n.to_bytes(4, "little") for g, o, n in entries)
    if draw(st.booleans()):
        head += bytes(24)
    tail = draw(st.one_of(st.binary(max_size=600), st.sampled_from(REAL_CERTS[:3])))
    return head + tail


@settings(FUZZ, max_examples=800)
@given(data=st.one_of(st.binary(max_size=400), cert_tables()))
def test_cert_table(data: bytes) -> None:
    entries = only_attestation_errors(lambda: parse_cert_table(data, "table"))
    if entries is None:
        return
    assert isinstance(entries, list)
    for role, blob in entries:
        assert role in ("vcek", "vlek", "ask", "ark")
        assert blob and blob in data


# ---- certificates ----------------------------------------------------------------------------

_PEM = b"-----BEGIN CERTIFICATE-----\n"
_PEM_END = b"-----END CERTIFICATE-----\n"


def _pem(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return _PEM + b"\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + b"\n" + _PEM_END


def _use_certificates(data: bytes) -> None:
    """Everything the auditor does with a certificate file: load, sort, read the VEK, and
    audit the report it belongs to."""
    certs = only_attestation_errors(lambda: load_certificates(data, "certs"))
    if not certs:
        return
    assert isinstance(certs, list)
    sorted_certs = only_attestation_errors(lambda: sort_certificates(certs, "certs"))
    if not isinstance(sorted_certs, AmdCerts):
        return
    for vek in (sorted_certs.vcek, sorted_certs.vlek):
        if vek is not None:
            only_attestation_errors(functools.partial(read_vek, vek, "vek"))
    for name in ("oak_genoa_report_v5.bin", "trustee_milan_vlek_report.bin"):
        run = functools.partial(audit, SNP_REPORTS[name], certs=sorted_certs, now=NOW)
        only_attestation_errors(run)


@settings(FUZZ, max_examples=500)
@given(
    data=st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=1500).map(_pem),
        st.binary(max_size=400).map(lambda b: _PEM + b + _PEM_END),
        st.lists(st.sampled_from(REAL_CERTS), min_size=1, max_size=4).map(
            lambda ders: b"".join(map(_pem, ders))
        ),
    )
)
@example(data=_PEM)
@example(data=_PEM + _PEM_END + b"\0")
def test_arbitrary_certificate_bytes(data: bytes) -> None:
    _use_certificates(data)


@settings(FUZZ, max_examples=300, report_multiple_bugs=False)
@given(
    index=st.integers(0, len(REAL_CERTS) - 1),
    ops=st.lists(_BYTE_EDIT, min_size=1, max_size=3),
    pem=st.booleans(),
)
def test_mutated_real_certificates(index: int, ops: list[tuple[str, int, Any]], pem: bool) -> None:
    data = mutate(REAL_CERTS[index], ops, (0, 1 << 16))
    _use_certificates(_pem(data) if pem else data)


# ---- DER -------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=1000)
@given(data=st.binary(max_size=64), pos=st.integers(0, 70), tag=st.integers(0, 255))
@example(data=b"\x02\x84\xff\xff\xff\xff", pos=0, tag=2)
@example(data=b"\x02\x85\x00\x00\x00\x00\x01\x00", pos=0, tag=2)
@example(data=b"\x02\x80", pos=0, tag=2)
@example(data=b"\x06\x01\x80", pos=0, tag=6)
def test_der_readers(data: bytes, pos: int, tag: int) -> None:
    tlv = only_attestation_errors(lambda: der_mod.read_tlv(data, pos, "x"))
    if tlv is not None:
        assert isinstance(tlv, der_mod.Tlv)
        assert pos < tlv.end <= len(data) and data[tlv.end - len(tlv.value) : tlv.end] == tlv.value
        assert tlv.tag == data[pos]
    only_attestation_errors(lambda: list(der_mod.elements(data, "x")))
    only_attestation_errors(lambda: der_mod.only(data, tag, "x"))
    only_attestation_errors(lambda: der_mod.integer(data, "x"))
    only_attestation_errors(lambda: der_mod.ia5_string(data, "x"))
    only_attestation_errors(lambda: der_mod.oid_text(data))


@settings(FUZZ, max_examples=300)
@given(
    value=st.integers(-(1 << 80), 1 << 80),
    text=st.text(st.characters(max_codepoint=127), max_size=300),
    content=st.binary(max_size=70000).filter(lambda b: len(b) < 300 or len(b) > 65000),
    arcs=st.tuples(st.integers(0, 2), st.integers(0, 39)).flatmap(
        lambda top: st.lists(st.integers(0, 1 << 40), max_size=8).map(lambda a: [*top, *a])
    ),
)
def test_der_round_trips(value: int, text: str, content: bytes, arcs: list[int]) -> None:
    assert der_mod.integer(der_integer(value), "x") == value
    assert der_mod.ia5_string(der_tlv(0x16, text.encode("ascii")), "x") == text
    encoded = der_tlv(0x04, content)
    assert der_mod.read_tlv(encoded) == (0x04, content, len(encoded))
    assert der_mod.only(encoded, 0x04, "x") == content
    oid = ".".join(map(str, arcs))
    assert der_mod.oid_text(oid_der(oid)) == oid
    # The same element inside a SEQUENCE, twice: elements() walks both.
    seq = der_mod.only(der_tlv(0x30, encoded * 2), 0x30, "x")
    assert [(t.tag, t.value) for t in der_mod.elements(seq)] == [(0x04, content)] * 2


def test_der_readers_refuse_trailing_bytes_and_wrong_tags() -> None:
    with pytest.raises(AttestationError):
        der_mod.integer(der_integer(5) + b"\0", "x")
    with pytest.raises(AttestationError):
        der_mod.integer(der_tlv(0x04, b"\x05"), "x")
    with pytest.raises(AttestationError, match="empty"):
        der_mod.integer(b"\x02\x00", "x")
    with pytest.raises(AttestationError, match="non-ASCII"):
        der_mod.ia5_string(der_tlv(0x16, b"\xc3\xa9"), "x")
    with pytest.raises(AttestationError):
        der_mod.oid_text(b"")


# ---- regressions: defects these tests found, now fixed ------------------------------------


def _tdx_quote_with_leaf_patched(name: str, patch: Callable[[bytearray], None]) -> bytes:
    """The quote with its PCK leaf certificate's DER patched in place (same length, so the
    PEM and every size field keep their lengths)."""
    quote = TDX_QUOTES[name]
    match = re.search(rb"-----BEGIN CERTIFICATE-----\n(.+?)-----END CERTIFICATE-----", quote, re.S)
    assert match is not None
    body = match.group(1)
    der = bytearray(base64.b64decode(body))
    patch(der)
    text = base64.b64encode(bytes(der))
    width = body.index(b"\n")
    lines = b"\n".join(text[i : i + width] for i in range(0, len(text), width)) + b"\n"
    assert len(lines) == len(body)
    return quote[: match.start(1)] + lines + quote[match.end(1) :]


def _off_curve(der: bytearray) -> None:
    point = der.index(bytes.fromhex("03420004")) + 4  # BIT STRING { 04 X Y } of the P-256 key
    der[point] ^= 1


def _cn_as_boolean(der: bytearray) -> None:
    # The second CN in the DER is the subject's ("Intel SGX PCK Certificate").
    first = der.index(bytes.fromhex("0603550403"))
    second = der.index(bytes.fromhex("0603550403"), first + 1)
    der[second + 5] = 0x01


@pytest.mark.parametrize("patch", [_off_curve, _cn_as_boolean], ids=["off-curve", "cn-bool"])
def test_tdx_damaged_pck_leaf_fails_the_pck_checks(patch: Callable[[bytearray], None]) -> None:
    """The PCK chain sits outside the signed region: a damaged leaf is a failed audit that
    says why, not an exception (it used to escape as ValueError)."""
    quote = _tdx_quote_with_leaf_patched("dcapqvl_tdx_quote_v4.dat", patch)
    result = audit(quote, now=NOW)
    failed = {c.name: c.actual for c in result.failures}
    assert {"pck.leaf_signature", "qe_report.signature"} <= set(failed)
    assert "damaged X.509 certificate" in failed["pck.leaf_signature"]
