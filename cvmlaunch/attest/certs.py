"""Certificates as evidence: loading (DER, PEM or a PEM bundle), pinning, issuer signatures
and validity, each turned into a named `Check`.

AMD issues every VCEK and VLEK with serial number 0, which RFC 5280 forbids and
`cryptography` >= 45 warns about on every load; the warning is expected here, so it is
silenced for exactly these loads and for nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from datetime import UTC, datetime

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
    cert.subject.rfc4514_string()
    cert.issuer.rfc4514_string()
    for _ in cert.extensions:
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
    """`child` names `issuer` as its issuer and carries a valid signature by its key."""
    expected = f"signed by {common_name(issuer)}"
    problem = _issuer_problem(child, issuer)
    return check(name, expected, problem or expected, problem is None)


# Certificates compare and hash by their DER bytes, so a verdict can be remembered: the
# same chain is verified for every report of a fleet.
@functools.lru_cache(maxsize=256)
def _issuer_problem(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
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
    start, end, now = cert.not_valid_before_utc, cert.not_valid_after_utc, utc(now)
    period = f"{start.isoformat()} .. {end.isoformat()}"
    if now < start:
        return check(name, period, f"not yet valid at {now.isoformat()}", False)
    if now > end:
        return check(name, period, f"expired at {now.isoformat()}", False)
    return check(name, period, period, True)


def pinned(name: str, cert: x509.Certificate, pin: bytes, pin_name: str) -> Check:
    """`cert` is byte-identical to the pinned root (SHA-256 of its DER)."""
    actual = fingerprint(cert)
    if actual == pin:
        return check(name, pin_name, pin_name, True)
    return check(name, pin_name, f"{common_name(cert)} with sha256 {actual.hex()}", False)


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
