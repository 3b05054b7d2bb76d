"""Certificates as evidence: loading (DER, PEM or a PEM bundle), pinning, issuer signatures
and validity, each turned into a named `Check`.

AMD issues every VCEK and VLEK with serial number 0, which RFC 5280 forbids and
`cryptography` >= 45 warns about on every load; the warning is expected here, so it is
silenced for exactly these loads and for nothing else.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import threading
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from cvmlaunch.attest import der as _der
from cvmlaunch.attest.result import Check, check
from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PublicKey = CertificatePublicKeyTypes


def load_certificates(data: bytes, source: str) -> list[x509.Certificate]:
    """Every certificate in `data`: one DER certificate, or PEM blocks (a trailing NUL, as
    in TDX quotes, is tolerated)."""
    if not data.strip(b"\0 \t\r\n"):
        raise AttestationError(f"{source}: empty; expected a DER or PEM certificate")
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*serial number", category=CryptographyDeprecationWarning
        )
        try:
            if _PEM_BEGIN in data:
                certs = x509.load_pem_x509_certificates(data.rstrip(b"\0"))
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except (ValueError, x509.InvalidVersion):
            # What `cryptography` says here is its ASN.1 parser's state (a Rust debug
            # rendering), which tells a user nothing the sentence below does not.
            raise AttestationError(f"{source}: not a DER or PEM X.509 certificate") from None
        try:
            for cert in certs:
                _parse_fully(cert)
        except UNREADABLE as e:
            raise AttestationError(f"{source}: a damaged X.509 certificate ({e})") from None
    return certs


# What `cryptography` raises for a certificate or CRL that loads but whose parts do not
# parse.
UNREADABLE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _parse_fully(cert: x509.Certificate, issuer: bool = True) -> tuple[PublicKey, x509.Name]:
    """Touch every part the audit reads: `cryptography` parses some of them lazily, and a
    damaged part must be refused here, not fail later in the middle of an audit. `issuer`
    False: the issuer name is byte-identical to a name already parsed, so parsing it again
    could only repeat that outcome."""
    # Reading a name decodes each of its values (the RFC 4514 text, which only formats
    # them, is not needed for that and would double the cost of loading a PCK chain).
    subject = cert.subject
    for _ in (*subject, *(cert.issuer if issuer else ()), *cert.extensions):
        pass
    return cert.public_key(), subject


_PEM_END = b"\n-----END CERTIFICATE-----"


def pem_ders(data: bytes) -> list[bytes] | None:
    """The DER encoding in each block of `data` when `data` is nothing but PEM CERTIFICATE
    blocks in RFC 7468's strict form (64-character lines of canonical base64, each block
    ending in a newline or the end of the text; a trailing NUL, as in TDX quotes,
    tolerated): exactly what `load_certificates` would read from it. None for anything
    else, which is left to `load_certificates` (and its errors)."""
    text = data.rstrip(b"\0")
    begin = _PEM_BEGIN + b"\n"
    ders: list[bytes] = []
    pos = 0
    while pos < len(text):
        if not text.startswith(begin, pos):
            return None
        start = pos + len(begin)
        stop = text.find(_PEM_END, start)
        if stop < 0:
            return None
        raw = text[start:stop]
        # Lines of 64 characters and a last one of 1 to 64: a newline at every 65th byte
        # and nowhere else.
        full = raw.count(b"\n")
        if raw[64::65] != b"\n" * full or not 0 < len(raw) - 65 * full <= 64:
            return None
        body = raw.replace(b"\n", b"")
        try:
            der = binascii.a2b_base64(body, strict_mode=True)
        except binascii.Error:
            return None
        if binascii.b2a_base64(der, newline=False) != body:  # canonical: one text per DER
            return None
        ders.append(der)
        pos = stop + len(_PEM_END)
        if pos < len(text):
            if text[pos] != 0x0A:
                return None
            pos += 1
    return ders or None


class Parts(NamedTuple):
    """The raw DER elements of a certificate that a signature check compares or verifies."""

    tbs: bytes  # TBSCertificate, as signed
    issuer: bytes  # the issuer Name element, tag and length included
    subject: bytes  # the subject Name element
    signature_algorithm: bytes  # the outer AlgorithmIdentifier element
    inner_algorithm: bytes  # the TBSCertificate's own copy of it
    positive_serial: bool  # the serialNumber INTEGER is above zero
    signature: bytes  # the BIT STRING's contents after its unused-bits byte


def der_parts(der: bytes) -> Parts | None:
    """The parts of a certificate's DER (None when it is not laid out as X.509 lays it out;
    `cryptography` decides everything else about it)."""
    try:
        tag, body, end = _der.header(der, 0, len(der))
        if tag != _der.SEQUENCE or end != len(der):
            return None
        tag, fields, tbs_end = _der.header(der, body, end)
        _, _, alg_end = _der.header(der, tbs_end, end)
        sig_tag, sig_start, sig_end = _der.header(der, alg_end, end)
        if tag != _der.SEQUENCE or sig_tag != 0x03 or sig_end != end:
            return None
        if sig_start == sig_end or der[sig_start] != 0:  # BIT STRING: no unused bits
            return None
        pos = fields
        tag, _, after = _der.header(der, pos, tbs_end)
        if tag == 0xA0:  # [0] version
            pos = after
        spans = []
        for _ in range(5):  # serialNumber, signature, issuer, validity, subject
            tag, start, after = _der.header(der, pos, tbs_end)
            spans.append((pos, start, after, tag))
            pos = after
    except ValueError:
        return None
    (_, n0, n1, ntag), (a0, _, a1, _), (i0, _, i1, itag) = spans[:3]
    s0, _, s1, stag = spans[4]
    if itag != _der.SEQUENCE or stag != _der.SEQUENCE:
        return None
    return Parts(der[body:tbs_end], der[i0:i1], der[s0:s1], der[tbs_end:alg_end],
                 der[a0:a1], ntag == _der.INTEGER and n1 > n0 and der[n0] < 0x80
                 and any(der[n0:n1]), der[sig_start + 1 : sig_end])  # fmt: skip


class Chain(NamedTuple):
    certs: list[x509.Certificate]
    ders: list[bytes]  # the DER encoding of each, as read
    keys: list[PublicKey | None]  # the public key of each, where loaded already
    subjects: list[x509.Name | None]  # the subject name of each, where read already
    parts: list[Parts | None]  # the DER parts of each, where read already


def load_chain(
    data: bytes, source: str, known: dict[bytes, x509.Certificate] | None = None
) -> Chain:
    """As `load_certificates`, with the DER of each certificate. A certificate byte-identical
    to one of `known` (DER -> certificate, loaded and fully parsed before) is that object;
    an issuer name byte-identical to the subject of the next certificate in the chain is
    parsed once. Whatever this shortcut does not take (not strict PEM, a certificate that
    does not load or parse) goes the way of `load_certificates`, which names the problem."""
    ders = pem_ders(data)
    if ders is not None:
        chain = _load_ders(ders, known or {})
        if chain is not None:
            return chain
    certs = load_certificates(data, source)
    none: list[Any] = [None] * len(certs)
    return Chain(certs, [c.public_bytes(Encoding.DER) for c in certs], none, none, none)


def _load_ders(ders: list[bytes], known: dict[bytes, x509.Certificate]) -> Chain | None:
    certs: list[x509.Certificate | None] = [known.get(der) for der in ders]
    keys: list[PublicKey | None] = [None] * len(ders)
    subjects: list[x509.Name | None] = [None] * len(ders)
    parts = [der_parts(der) for der in ders]
    # `cryptography` warns only of a serial number that is not positive: with none such,
    # nothing is silenced (and the warning filters need not change).
    quiet = all(part is not None and part.positive_serial for part in parts)
    with contextlib.nullcontext() if quiet else warnings.catch_warnings():
        if not quiet:
            warnings.filterwarnings(
                "ignore", message=".*serial number", category=CryptographyDeprecationWarning
            )
        try:
            for i, der in enumerate(ders):
                if certs[i] is not None:
                    continue
                cert = x509.load_der_x509_certificate(der)
                # Its issuer is the next certificate's subject, parsed there (or before).
                own, nxt = parts[i], parts[i + 1] if i + 1 < len(ders) else None
                same = own is not None and nxt is not None and own.issuer == nxt.subject
                keys[i], subjects[i] = _parse_fully(cert, issuer=not same)
                certs[i] = cert
        except UNREADABLE:
            return None
    return Chain([cert for cert in certs if cert is not None], ders, keys, subjects, parts)


def load_certificate(data: bytes, source: str) -> x509.Certificate:
    """The one certificate in `data`."""
    certs = load_certificates(data, source)
    if len(certs) != 1:
        raise AttestationError(f"{source}: expected one certificate, found {len(certs)}")
    return certs[0]


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER encoding: what roots are pinned by."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


def common_name(cert: x509.Certificate, subject: x509.Name | None = None) -> str:
    """The certificate's subject CN ("" without one); `subject`: its subject, if read."""
    names = (cert.subject if subject is None else subject).get_attributes_for_oid(
        NameOID.COMMON_NAME
    )
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def issued_by(name: str, child: x509.Certificate, issuer: x509.Certificate) -> Check:
    """`child` names `issuer` as its issuer and carries a valid signature by its key
    (verified now; `CertMemo.issued_by` remembers the verdict)."""
    return _signed_check(name, common_name(issuer), issuer_problem(child, issuer))


def _signed_check(name: str, issuer_cn: str, problem: str | None) -> Check:
    expected = f"signed by {issuer_cn}"
    return check(name, expected, problem or expected, problem is None)


def issuer_problem(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Why `issuer` did not sign `child`, or None when it did."""
    try:
        child.verify_directly_issued_by(issuer)
    except ValueError as e:  # issuer name mismatch, or bad signature parameters
        return f"not issued by {common_name(issuer)}: {e}"
    except InvalidSignature:
        return f"signature does not verify with {common_name(issuer)}"
    except (TypeError, UnsupportedAlgorithm) as e:
        return f"unsupported signature: {e}"
    return None


# AlgorithmIdentifier ecdsa-with-SHA256 (RFC 5758: no parameters).
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def _signed_p256(child: Parts | None, parent: Parts | None, key: PublicKey) -> bool:
    """True when the child (its DER parts) names the issuer byte for byte as its issuer and
    carries an ecdsa-with-SHA256 signature over its TBSCertificate that verifies with the
    issuer's P-256 key: what `verify_directly_issued_by` establishes, without re-encoding
    either certificate. False means "not shown this way"; the caller then asks
    `cryptography`, which also words the problem."""
    if child is None or parent is None or child.issuer != parent.subject:
        return False
    if child.signature_algorithm != _ECDSA_SHA256 or child.inner_algorithm != _ECDSA_SHA256:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return False
    try:
        key.verify(child.signature, child.tbs, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def valid_at(name: str, cert: x509.Certificate, now: datetime) -> Check:
    """`now` lies within the certificate's validity period."""
    return _valid_check(name, _Facts.of(cert), utc(now))


def _valid_check(name: str, facts: _Facts, now: datetime) -> Check:
    if now < facts.not_before:
        return check(name, facts.period, f"not yet valid at {now.isoformat()}", False)
    if now > facts.not_after:
        return check(name, facts.period, f"expired at {now.isoformat()}", False)
    return Check(name, facts.period, facts.period, True)


class _Facts(NamedTuple):
    """What checks say of one certificate, read once."""

    der: bytes
    sha256: bytes
    common_name: str
    not_before: datetime
    not_after: datetime
    period: str  # "not_before .. not_after", as checks show it

    @classmethod
    def of(
        cls, cert: x509.Certificate, der: bytes | None = None, subject: x509.Name | None = None
    ) -> _Facts:
        der = cert.public_bytes(Encoding.DER) if der is None else der
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        cn = common_name(cert, subject)
        return cls(der, hashlib.sha256(der).digest(), cn, start, end,
                   f"{start.isoformat()} .. {end.isoformat()}")  # fmt: skip


# The bundled roots, read and their signatures verified once per process as they are loaded
# (roots.py): every memo shares these, as every audit shares the pins. By id, holding the
# certificate (so the id is not reused); by pair of DER encodings.
_BUNDLED_FACTS: dict[int, tuple[x509.Certificate, _Facts]] = {}
_BUNDLED_VERDICTS: dict[tuple[bytes, bytes], str | None] = {}
_BUNDLED_KEYS: dict[int, tuple[x509.Certificate, PublicKey]] = {}


def verify_bundled(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Verify a signature between two bundled certificates and remember the verdict (and
    both certificates' facts) for every `CertMemo` of the process."""
    problem = issuer_problem(child, issuer)
    _BUNDLED_VERDICTS[bundled(child).der, bundled(issuer).der] = problem
    return problem


def bundled(cert: x509.Certificate) -> _Facts:
    """The facts of a bundled certificate, read once per process and shared by every memo."""
    held = _BUNDLED_FACTS.get(id(cert))
    if held is None or held[0] is not cert:
        held = _BUNDLED_FACTS[id(cert)] = (cert, _Facts.of(cert))
        _BUNDLED_KEYS[id(cert)] = (cert, cert.public_key())
    return held[1]


_MISSING: Any = object()
_T = TypeVar("_T")


class CertMemo:
    """What is known of certificates, keyed by the exact bytes of their DER encoding, for an
    auditor that sees the same few chains in report after report.

    Remembered: whether one certificate signed another (a pure function of the two
    encodings: a certificate differing in any byte is another key and is verified afresh),
    the texts checks show (names, validity periods, fingerprints), public keys, the DER
    parts a signature check reads, and values derived from certificate or chain bytes by
    `derived`. Not remembered: whether a certificate is valid at a given time, which each
    call compares with its own `now`.

    Each table holds at most `capacity` entries; past that the oldest is dropped (a fleet
    has few platforms; a flood of distinct certificates costs time, never memory).
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        # id(cert) -> (cert, facts): the object is held, so its id is not reused while the
        # entry lives, and `is` confirms it is the same object.
        self._by_object: dict[int, tuple[x509.Certificate, _Facts]] = {}
        self._facts: dict[bytes, _Facts] = {}
        self._signed: dict[tuple[bytes, bytes], str | None] = {}
        self._derived: dict[tuple[str, bytes], object] = {}
        self._keys: dict[int, tuple[x509.Certificate, PublicKey]] = {}
        self._parts: dict[bytes, Parts | None] = {}

    def _put(self, table: dict[Any, Any], key: object, value: object) -> None:
        with self._lock:
            if key not in table and len(table) >= self.capacity:
                del table[next(iter(table))]
            table[key] = value

    def facts(
        self, cert: x509.Certificate, der: bytes | None = None, subject: x509.Name | None = None
    ) -> _Facts:
        """The certificate's DER, SHA-256, common name and validity period (`der` and
        `subject`: its DER and subject name, when the caller has read them)."""
        held = self._by_object.get(id(cert)) or _BUNDLED_FACTS.get(id(cert))
        if held is not None and held[0] is cert:
            return held[1]
        der = cert.public_bytes(Encoding.DER) if der is None else der
        facts = self._facts.get(der)
        if facts is None:
            facts = _Facts.of(cert, der, subject)
            self._put(self._facts, der, facts)
        self._put(self._by_object, id(cert), (cert, facts))
        return facts

    def parts(self, der: bytes, parts: Parts | None = None) -> Parts | None:
        """`der_parts(der)` (`parts`, when the caller has read them), read once."""
        held = self._parts.get(der, _MISSING)
        if held is _MISSING:
            held = der_parts(der) if parts is None else parts
            self._put(self._parts, der, held)
        return cast(Parts | None, held)

    def public_key(self, cert: x509.Certificate, key: PublicKey | None = None) -> PublicKey:
        """The certificate's public key (`key`, when the caller has loaded it), loaded once."""
        held = self._keys.get(id(cert)) or _BUNDLED_KEYS.get(id(cert))
        if held is not None and held[0] is cert:
            return held[1]
        key = cert.public_key() if key is None else key
        self._put(self._keys, id(cert), (cert, key))
        return key

    def _signed_p256(self, child_der: bytes, issuer_der: bytes, issuer: x509.Certificate) -> bool:
        # Only an ECDSA P-256/SHA-256 signature takes this way (AMD's certificates do not).
        if _ECDSA_SHA256 not in child_der:
            return False
        return _signed_p256(self.parts(child_der), self.parts(issuer_der), self.public_key(issuer))

    def issued_by(self, name: str, child: x509.Certificate, issuer: x509.Certificate) -> Check:
        """As `issued_by`, the verdict remembered by the two certificates' DER bytes."""
        issuer_facts = self.facts(issuer)
        key = (self.facts(child).der, issuer_facts.der)
        problem = self._signed.get(key, _MISSING)
        if problem is _MISSING:
            problem = _BUNDLED_VERDICTS.get(key, _MISSING)
        if problem is _MISSING:
            problem = None if self._signed_p256(*key, issuer) else issuer_problem(child, issuer)
            self._put(self._signed, key, problem)
        return _signed_check(name, issuer_facts.common_name, problem)

    def valid_at(self, name: str, cert: x509.Certificate, now: datetime) -> Check:
        """As `valid_at` (`now` compared on every call; only the period's text is kept)."""
        return _valid_check(name, self.facts(cert), utc(now))

    def pinned(self, name: str, cert: x509.Certificate, pin: bytes, pin_name: str) -> Check:
        """As `pinned`, the fingerprint computed once per certificate."""
        return _pinned_check(name, self.facts(cert), pin, pin_name)

    def derived(self, kind: str, data: bytes, make: Callable[[], _T]) -> _T:
        """`make()`, remembered under (`kind`, the exact bytes `data` it is computed from).
        `make` must depend on nothing but `data`; an exception it raises is not remembered."""
        key = (kind, data)
        value = self._derived.get(key, _MISSING)
        if value is _MISSING:
            value = make()
            self._put(self._derived, key, value)
        return cast(_T, value)


def pinned(name: str, cert: x509.Certificate, pin: bytes, pin_name: str) -> Check:
    """`cert` is byte-identical to the pinned root (SHA-256 of its DER)."""
    return _pinned_check(name, _Facts.of(cert), pin, pin_name)


def _pinned_check(name: str, facts: _Facts, pin: bytes, pin_name: str) -> Check:
    if facts.sha256 == pin:
        return check(name, pin_name, pin_name, True)
    return check(name, pin_name, f"{facts.common_name} with sha256 {facts.sha256.hex()}", False)


def utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime (a naive one is taken to be UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise AttestationError(
            f"time {moment.isoformat()} is outside the representable range"
        ) from None


def now_utc() -> datetime:
    return datetime.now(UTC)


def ecdsa_p256_ok(key: object, signature: bytes, message: bytes) -> bool:
    """`signature` (r || s, 32 bytes each, big-endian, as Intel writes them in quotes and
    collateral) is ECDSA P-256/SHA-256 over `message` by `key`."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
