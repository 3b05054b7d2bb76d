"""Certificates as evidence: loading (DER, PEM or a PEM bundle), pinning, issuer signatures
and validity, each turned into a named `Check`.

AMD issues every VCEK and VLEK with serial number 0, which RFC 5280 forbids and
`cryptography` >= 45 warns about on every load; the warning is expected here, so it is
silenced for exactly these loads and for nothing else.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from cvmlaunch.attest.result import Check, check
from cvmlaunch.errors import AttestationError

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


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
        except _UNREADABLE as e:
            raise AttestationError(f"{source}: a damaged X.509 certificate ({e})") from None
    return certs


# What `cryptography` raises for a certificate that loads but whose parts do not parse.
_UNREADABLE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
)


def _parse_fully(cert: x509.Certificate) -> None:
    """Touch every part the audit reads: `cryptography` parses some of them lazily, and a
    damaged part must be refused here, not fail later in the middle of an audit."""
    # Reading a name decodes each of its values (the RFC 4514 text, which only formats
    # them, is not needed for that and would double the cost of loading a PCK chain).
    for _ in (*cert.subject, *cert.issuer, *cert.extensions):
        pass
    cert.public_key()


def load_certificate(data: bytes, source: str) -> x509.Certificate:
    """The one certificate in `data`."""
    certs = load_certificates(data, source)
    if len(certs) != 1:
        raise AttestationError(f"{source}: expected one certificate, found {len(certs)}")
    return certs[0]


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER encoding: what roots are pinned by."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
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
    def of(cls, cert: x509.Certificate, der: bytes | None = None) -> _Facts:
        der = cert.public_bytes(Encoding.DER) if der is None else der
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        return cls(der, hashlib.sha256(der).digest(), common_name(cert), start, end,
                   f"{start.isoformat()} .. {end.isoformat()}")  # fmt: skip


# The bundled roots, read and their signatures verified once per process as they are loaded
# (roots.py): every memo shares these, as every audit shares the pins. By id, holding the
# certificate (so the id is not reused); by pair of DER encodings.
_BUNDLED_FACTS: dict[int, tuple[x509.Certificate, _Facts]] = {}
_BUNDLED_VERDICTS: dict[tuple[bytes, bytes], str | None] = {}


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
    return held[1]


_MISSING: Any = object()
_T = TypeVar("_T")


class CertMemo:
    """What is known of certificates, keyed by the exact bytes of their DER encoding, for an
    auditor that sees the same few chains in report after report.

    Remembered: whether one certificate signed another (a pure function of the two
    encodings: a certificate differing in any byte is another key and is verified afresh),
    the texts checks show (names, validity periods, fingerprints), and values derived from
    certificate or chain bytes by `derived`. Not remembered: whether a certificate is valid
    at a given time, which each call compares with its own `now`.

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

    def _put(self, table: dict[Any, Any], key: object, value: object) -> None:
        with self._lock:
            if key not in table and len(table) >= self.capacity:
                del table[next(iter(table))]
            table[key] = value

    def facts(self, cert: x509.Certificate) -> _Facts:
        """The certificate's DER, SHA-256, common name and validity period."""
        held = self._by_object.get(id(cert)) or _BUNDLED_FACTS.get(id(cert))
        if held is not None and held[0] is cert:
            return held[1]
        der = cert.public_bytes(Encoding.DER)
        facts = self._facts.get(der)
        if facts is None:
            facts = _Facts.of(cert, der)
            self._put(self._facts, der, facts)
        self._put(self._by_object, id(cert), (cert, facts))
        return facts

    def issued_by(self, name: str, child: x509.Certificate, issuer: x509.Certificate) -> Check:
        """As `issued_by`, the verdict remembered by the two certificates' DER bytes."""
        issuer_facts = self.facts(issuer)
        key = (self.facts(child).der, issuer_facts.der)
        problem = self._signed.get(key, _MISSING)
        if problem is _MISSING:
            problem = _BUNDLED_VERDICTS.get(key, _MISSING)
        if problem is _MISSING:
            problem = issuer_problem(child, issuer)
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
