"""The shortcuts of a first (cold) TDX audit change no outcome.

A PCK chain in strict PEM is decoded and loaded certificate by certificate; a root
byte-identical to the bundled Intel root is the bundled certificate (parsed, pinned and
self-verified once per process); an issuer name byte-identical to the next certificate's
subject is parsed once; an ECDSA P-256/SHA-256 signature between certificates is verified
from their DER. Each is checked here against the way it replaces: a root one byte off is
loaded and fails its pin, chains the shortcut does not take load as before, and every
fixture's result is the same with the shortcut disabled.
"""

from __future__ import annotations

import base64
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cvmlaunch.attest import Auditor, Expectations, certs, der, tdx
from cvmlaunch.attest.certs import CertMemo, load_certificates, load_chain, pem_ders
from cvmlaunch.attest.roots import intel_root
from cvmlaunch.attest.tdx import audit_tdx, parse_tdx_quote
from cvmlaunch.errors import AttestationError
from tests.attest.test_auditor import _pem_blocks, _quote_with_block_patched
from tests.attest.test_tdx import _certificate, _pem, serialize
from tests.conftest import VECTORS

TDX = VECTORS / "attestation" / "tdx"
TDX_NOW = datetime(2025, 6, 19, 14, tzinfo=UTC)
FIXTURES = sorted(p.name for p in TDX.glob("*.dat"))
QVL = TDX / "dcapqvl_tdx_quote_v4.dat"


def _failed(result: Any) -> set[str]:
    return {c.name for c in result.failures}


def _audit(quote: bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Auditor().audit(quote, now=TDX_NOW)


def _chain(quote: bytes) -> bytes:
    return parse_tdx_quote(quote).pck_chain


def test_a_root_one_byte_off_the_bundled_one_is_loaded_and_fails_its_pin() -> None:
    quote = QVL.read_bytes()
    forged = _quote_with_block_patched(quote, 2)  # the root's last signature byte
    root_der = pem_ders(_chain(forged))[2]  # type: ignore[index]
    bundled_der = certs.bundled(intel_root()).der
    assert len(root_der) == len(bundled_der)
    assert sum(a != b for a, b in zip(root_der, bundled_der, strict=True)) == 1
    pck = tdx._load_pck(_chain(forged))
    assert pck.problem is None and pck.certs[2] is not intel_root()
    result = _audit(forged)
    # Trust rests on the bundled root: the quote's copy fails its pin, nothing else.
    assert _failed(result) == {"pck.root_pinned"}
    actual = {c.name: c.actual for c in result.checks}["pck.root_pinned"]
    assert actual.startswith("Intel SGX Root CA with sha256 ")
    assert _failed(_audit(quote)) == set()


def test_a_root_identical_to_the_bundled_one_is_the_bundled_certificate() -> None:
    pck = tdx._load_pck(_chain(QVL.read_bytes()))
    assert pck.problem is None and pck.certs[2] is intel_root()


@pytest.mark.parametrize("name", FIXTURES)
def test_results_equal_those_without_the_shortcuts(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every fixture, and each with its leaf, CA or root one byte off: the same checks,
    texts and report whether the chain is decoded by the shortcut or by `cryptography`."""
    quote = (TDX / name).read_bytes()
    variants = [quote] + [_quote_with_block_patched(quote, i) for i in range(3)]
    fast = [Auditor().audit(q, now=TDX_NOW) for q in variants]
    monkeypatch.setattr(certs, "pem_ders", lambda data: None)
    monkeypatch.setattr(certs, "_signed_p256", lambda *args: False)
    slow = [Auditor().audit(q, now=TDX_NOW) for q in variants]
    assert [(r.checks, r.report) for r in fast] == [(r.checks, r.report) for r in slow]
    base = _failed(fast[0])  # e.g. a leaf not yet valid, a debug TD
    assert [_failed(r) - base for r in fast[1:]] == [
        {"pck.leaf_signature"},
        {"pck.intermediate_signature"},
        {"pck.root_pinned"},
    ]


def test_pem_ders_reads_what_cryptography_reads() -> None:
    for name in FIXTURES:
        chain = _chain((TDX / name).read_bytes())
        loaded = x509.load_pem_x509_certificates(chain.rstrip(b"\0"))
        assert pem_ders(chain) == [c.public_bytes(serialization.Encoding.DER) for c in loaded]


def _rewrapped(chain: bytes, width: int, newline: bytes = b"\n") -> bytes:
    out = []
    for block in _pem_blocks(chain):
        body = block.group(1).replace(b"\n", b"")
        lines = [body[i : i + width] for i in range(0, len(body), width)]
        out.append(
            b"-----BEGIN CERTIFICATE-----" + newline + newline.join(lines) + newline
            + b"-----END CERTIFICATE-----" + newline
        )  # fmt: skip
    return b"".join(out)


def _with_block(chain: bytes, index: int, text: bytes) -> bytes:
    """`chain` with block `index`'s base64 replaced by `text`, in 64-column lines."""
    block = _pem_blocks(chain)[index]
    lines = b"".join(text[i : i + 64] + b"\n" for i in range(0, len(text), 64))
    return chain[: block.start(1)] + lines + chain[block.end(1) :]


def _der_of(chain: bytes, index: int) -> bytearray:
    return bytearray(base64.b64decode(_pem_blocks(chain)[index].group(1)))


def _noncanonical(chain: bytes) -> bytes:
    """The chain with a block's base64 ending in non-zero padding bits (the same DER for
    a lenient decoder, another text)."""
    # A block with padding: its last character has unused bits.
    index = next(i for i in range(3) if len(_der_of(chain, i)) % 3)
    cert_der = _der_of(chain, index)
    text = base64.b64encode(bytes(cert_der))
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    cut = len(text.rstrip(b"="))
    last = alphabet.index(text[cut - 1 : cut])
    patched = text[: cut - 1] + alphabet[last + 1 : last + 2] + text[cut:]
    assert base64.b64decode(patched) == bytes(cert_der)
    return _with_block(chain, index, patched)


@pytest.mark.parametrize(
    "variant",
    [
        lambda c: _rewrapped(c, 76),
        lambda c: _rewrapped(c, 64, b"\r\n"),
        lambda c: b"text before\n" + c,
        lambda c: c.rstrip(b"\0") + b"text after\n",
        _noncanonical,
    ],
    ids=["76-column", "crlf", "leading-text", "trailing-text", "noncanonical-base64"],
)
def test_other_pem_is_left_to_cryptography(variant: Any) -> None:
    """What is not strict PEM is not decoded by the shortcut: it loads (or is refused)
    exactly as `load_certificates` loads it."""
    chain = variant(_chain(QVL.read_bytes()))
    assert pem_ders(chain) is None
    try:
        expected: Any = [c.public_bytes(serialization.Encoding.DER)
                         for c in load_certificates(chain, "chain")]  # fmt: skip
    except AttestationError as e:
        expected = str(e)
    try:
        loaded = load_chain(chain, "chain")
        actual: Any = [c.public_bytes(serialization.Encoding.DER) for c in loaded.certs]
        assert actual == loaded.ders
    except AttestationError as e:
        actual = str(e)
    assert actual == expected


def test_a_damaged_certificate_is_refused_with_the_same_words() -> None:
    chain = _chain(QVL.read_bytes())
    data = _der_of(chain, 1)
    assert data[4:8] == b"\x30\x82" + data[6:8]
    data[6:8] = b"\xff\xff"  # the TBSCertificate's length: now past the end
    damaged = _with_block(chain, 1, base64.b64encode(bytes(data)))
    assert pem_ders(damaged) is not None  # strict PEM: the shortcut decodes it
    with pytest.raises(AttestationError) as fast:
        load_chain(damaged, "PCK certificate chain")
    with pytest.raises(AttestationError) as slow:
        load_certificates(damaged, "PCK certificate chain")
    assert str(fast.value) == str(slow.value)


# -- signatures between certificates -----------------------------------------------------


def _fake_chain(leaf_issuer: x509.Name | None = None) -> tuple[bytes, Any]:
    root_key, ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Root")])
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Leaf")])
    root = _certificate(name, root_key)
    ca = _certificate(ca_name, ca_key, (name, root_key))
    leaf = _certificate(leaf_name, leaf_key, (leaf_issuer or ca_name, ca_key), ca=False)
    return _pem(leaf, ca, root), (leaf, ca, root)


def _leaf_verdict(chain: bytes) -> str | None:
    loaded = load_chain(chain, "chain")
    memo = CertMemo()
    for cert, cert_der in zip(loaded.certs, loaded.ders, strict=True):
        memo.facts(cert, cert_der)
    check = memo.issued_by("leaf", loaded.certs[0], loaded.certs[1])
    return None if check.ok else check.actual


def test_a_signature_by_the_issuer_key_under_another_issuer_name_fails() -> None:
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not The CA")])
    chain, (leaf, ca, _) = _fake_chain(other)
    with pytest.raises(ValueError):  # cryptography's own verdict
        leaf.verify_directly_issued_by(ca)
    verdict = _leaf_verdict(chain)
    assert verdict is not None and verdict.startswith("not issued by Test CA")


def test_a_signature_one_byte_off_fails_between_test_certificates() -> None:
    chain, _ = _fake_chain()
    assert _leaf_verdict(chain) is None
    data = _der_of(chain, 0)
    data[-1] ^= 1
    forged = _with_block(chain, 0, base64.b64encode(bytes(data)))
    assert _leaf_verdict(forged) == "signature does not verify with Test CA"


def test_a_p384_signature_is_left_to_cryptography() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "P-384 Root")])
    root = _certificate(name, key)  # signed ecdsa-with-SHA256, by a P-384 key
    root_der = root.public_bytes(serialization.Encoding.DER)
    memo = CertMemo()
    assert memo.issued_by("self", root, root).ok
    parts = certs.der_parts(root_der)
    assert parts is not None
    assert not certs._signed_p256(parts, parts, key.public_key())


def test_der_parts_of_a_pck_certificate() -> None:
    for cert_der in pem_ders(_chain(QVL.read_bytes())) or []:
        cert = x509.load_der_x509_certificate(cert_der)
        parts = certs.der_parts(cert_der)
        assert parts is not None
        assert parts.tbs == cert.tbs_certificate_bytes
        assert parts.signature == cert.signature
        assert parts.issuer == cert.issuer.public_bytes()
        assert parts.subject == cert.subject.public_bytes()
        assert parts.positive_serial and cert.serial_number > 0
    assert certs.der_parts(b"\x30\x03\x02\x01\x00") is None
    assert certs.der_parts(b"") is None


def test_a_serial_number_zero_is_still_loaded_without_a_warning() -> None:
    """AMD's serial-0 certificates: the shortcut silences `cryptography`'s warning for
    them as `load_certificates` does (and no other certificate needs silencing)."""
    vcek = (VECTORS / "attestation" / "snp" / "oak_genoa_vcek.der").read_bytes()
    parts = certs.der_parts(vcek)
    assert parts is not None and not parts.positive_serial
    text = b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(
        base64.b64encode(vcek)[i : i + 64] for i in range(0, len(base64.b64encode(vcek)), 64)
    ) + b"\n-----END CERTIFICATE-----\n"  # fmt: skip
    assert pem_ders(text) == [vcek]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_chain(text, "vcek")
    assert loaded.ders == [vcek]
    assert loaded.certs[0].public_bytes(serialization.Encoding.DER) == vcek


# -- FMSPC ------------------------------------------------------------------------------


def test_fmspc_oid_by_bytes_agrees_with_its_text() -> None:
    minimal = tdx._FMSPC_OID_CONTENTS
    assert der.oid_text(minimal) == "1.2.840.113741.1.13.1.4"
    assert tdx._is_fmspc_oid(minimal)
    # A non-minimal encoding of the same arcs reads as the same text, as before.
    padded = minimal[:1] + b"\x80" + minimal[1:]
    assert der.oid_text(padded) == der.oid_text(minimal)
    assert tdx._is_fmspc_oid(padded)
    assert not tdx._is_fmspc_oid(minimal[:-1] + b"\x03")
    for malformed in (b"", minimal[:-1] + b"\x84"):
        with pytest.raises(AttestationError):
            tdx._is_fmspc_oid(malformed)


def test_a_fake_leafs_fmspc_is_read_as_before() -> None:
    chain, (leaf, _, _) = _fake_chain()
    assert tdx._fmspc(leaf) == "00A0C1DEFACE"
    assert tdx._load_pck(chain).fmspc == "00A0C1DEFACE"


def test_cold_audit_of_a_reserialized_quote_with_a_fake_chain() -> None:
    """A fake chain under Intel's names goes the whole cold path: it fails at the root."""
    quote = parse_tdx_quote(QVL.read_bytes())
    chain, _ = _fake_chain()
    result = audit_tdx(parse_tdx_quote(serialize(quote._replace(pck_chain=chain))),
                       Expectations(), TDX_NOW)  # fmt: skip
    assert {"pck.root_pinned", "pck.intermediate_signature", "qe_report.signature"} <= (
        _failed(result)
    )
    assert {c.name: c.actual for c in result.checks}["pck.intermediate_signature"] == (
        "not issued by Intel SGX Root CA: "
        "Issuer certificate subject does not match certificate issuer."
    )


@pytest.mark.parametrize("size", [1, 2, 3, 47, 48, 49, 95, 96, 97, 1269])
def test_pem_ders_takes_64_columns_only(size: int) -> None:
    """Every length of a last line (1 to 64 characters) is read; another width, an empty
    line or a missing newline is not."""
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    text = base64.b64encode(data)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    pem = b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
    assert pem_ders(pem) == [data]
    assert pem_ders(pem.replace(b"\n-----END", b"\n\n-----END")) is None
    assert pem_ders(pem.replace(b"\n-----END", b"-----END")) is None
    if len(lines) > 1:
        assert (
            pem_ders(pem.replace(lines[0] + b"\n", lines[0][:63] + b"\n" + lines[0][63:])) is None
        )
