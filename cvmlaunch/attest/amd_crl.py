"""AMD's certificate revocation list for SEV-SNP: the CRL the KDS serves at
`https://kdsintf.amd.com/{vcek|vlek}/v1/{product}/crl` (VCEK/VLEK spec 57230, chapter 4), a
DER X.509 v2 CRL signed by the product's ARK with RSASSA-PSS SHA-384. It lists the serial
numbers of revoked certificates the ARK issued (ASK, ASVK) and is checked here offline,
like every other piece of evidence, as named `Check`s.

AMD issues every VCEK and VLEK with serial number 0, so a VEK is only shown revoked by an
entry for serial 0; go-sev-guest, citing AMD, expects VEKs never to be listed (a newer TCB
supersedes an old VCEK). `vek.revoked` is still reported, so that a listing is never missed.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import SignatureAlgorithmOID

from cvmlaunch.attest.amd import AmdCerts
from cvmlaunch.attest.certs import UNREADABLE, common_name, utc
from cvmlaunch.attest.files import MAX_EVIDENCE_FILE
from cvmlaunch.attest.result import Check, check
from cvmlaunch.attest.roots import AMD_ARK_SHA256, amd_chain
from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple

_PEM_CRL = b"-----BEGIN X509 CRL-----"
# AMD signs with the PSS parameters of its certificates: SHA-384, MGF1 over SHA-384, and a
# salt as long as the digest (what go-sev-guest's verifier, Go's x509, requires of it).
_PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_SIGNED_WITH = "RSASSA-PSS SHA-384"


class Revocation(NamedTuple):
    """One entry of the CRL: when the certificate was revoked and why (the CRLReason
    entry extension, RFC 5280 5.3.1, when AMD gives one)."""

    date: datetime
    reason: str | None

    def text(self) -> str:
        day = self.date.date().isoformat()
        return f"revoked {day} ({self.reason})" if self.reason else f"revoked {day}"


class AmdCrl(NamedTuple):
    """An AMD CRL, every part the checks read parsed when it was loaded."""

    crl: x509.CertificateRevocationList
    der: bytes  # its DER encoding: with the ARK's, what a signature verdict is keyed by
    this_update: datetime
    next_update: datetime | None
    revoked: Mapping[int, Revocation]  # by serial number
    source: str


class _Memo:
    """A table of at most `capacity` entries, the oldest dropped past that: CRLs are few
    (one per product and key kind), and a flood of distinct ones costs time, not memory."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._table: dict[Any, Any] = {}

    def get(self, key: object) -> Any:
        return self._table.get(key)

    def put(self, key: object, value: object) -> None:
        with self._lock:
            if key not in self._table and len(self._table) >= self.capacity:
                del self._table[next(iter(self._table))]
            self._table[key] = value


# Loaded CRLs by their exact bytes as given, and signature verdicts (a 1-tuple: the
# problem or None) by (CRL DER, ARK DER):
# both pure functions of those bytes, so each CRL is parsed and verified once per process.
_LOADED = _Memo(64)
_VERDICTS = _Memo(64)


def load_amd_crl(data: bytes, source: str) -> AmdCrl:
    """The CRL in `data` (DER, or PEM "X509 CRL"); `source` names it in errors. Nothing is
    verified here: `amd_crl_checks` does that."""
    if len(data) > MAX_EVIDENCE_FILE:
        raise AttestationError(
            f"{source}: {len(data)} bytes; an AMD CRL is a few KiB (limit {MAX_EVIDENCE_FILE})"
        )
    held: AmdCrl | None = _LOADED.get(data)
    if held is None:
        held = _parse(data, source)
        _LOADED.put(data, held)
    return held._replace(source=source)


def _parse(data: bytes, source: str) -> AmdCrl:
    if not data.strip(b"\0 \t\r\n"):
        raise AttestationError(f"{source}: empty; expected a DER or PEM X.509 CRL")
    try:
        load = x509.load_pem_x509_crl if _PEM_CRL in data else x509.load_der_x509_crl
        crl = load(data)
    except UNREADABLE:
        # `cryptography`'s message is its ASN.1 parser's state, which says nothing more.
        raise AttestationError(f"{source}: not a DER or PEM X.509 CRL") from None
    # Parse every part the checks read now, as certificates are: a damaged part is refused
    # here, not in the middle of an audit.
    try:
        for _ in (*crl.issuer, *crl.extensions):
            pass
        revoked = {entry.serial_number: _revocation(entry) for entry in crl}
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
        encoded = crl.public_bytes(Encoding.DER)
    except UNREADABLE as e:
        raise AttestationError(f"{source}: a damaged X.509 CRL ({e})") from None
    # `cryptography` has refused a CRL whose signatureAlgorithm differs from the signed
    # TBSCertList's copy, so the algorithm the checks read is the one that was signed.
    return AmdCrl(crl, encoded, this_update, next_update, revoked, source)


def _revocation(entry: x509.RevokedCertificate) -> Revocation:
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return Revocation(entry.revocation_date_utc, None)
    return Revocation(entry.revocation_date_utc, reason.value)


def amd_crl_checks(
    crl: AmdCrl,
    certs: AmdCerts,
    product: str,
    now: datetime,
    *,
    ark: x509.Certificate | None = None,
) -> list[Check]:
    """The CRL's signature, validity at `now` and issuer, and whether it lists the VCEK or
    VLEK of `certs` or the ASK or ASVK that signs it (the bundled one of `product` when
    `certs` has none). `product` ("Milan", "Genoa", "Turin") picks the pinned ARK; `ark`
    replaces it (tests sign CRLs under a fake ARK)."""
    if product not in AMD_ARK_SHA256:
        raise AttestationError(
            f"{crl.source}: no pinned ARK for product {product!r} "
            f"(known: {', '.join(AMD_ARK_SHA256)})"
        )
    key = "vlek" if certs.vcek is None and certs.vlek is not None else "vcek"
    signer, pinned = amd_chain(product, key)
    root = pinned if ark is None else ark
    vek = certs.vlek if key == "vlek" else certs.vcek
    supplied = certs.asvk if key == "vlek" else certs.ask
    return [
        _signature_check(crl, root),
        _validity_check(crl, utc(now)),
        _issuer_check(crl, root),
        _listed("vek.revoked", key.upper(), vek, crl),
        _listed("ask.revoked", "ASVK" if key == "vlek" else "ASK",
                signer if supplied is None else supplied, crl),
    ]  # fmt: skip


def _signature_check(crl: AmdCrl, ark: x509.Certificate) -> Check:
    pair = (crl.der, ark.public_bytes(Encoding.DER))
    held: tuple[str | None] | None = _VERDICTS.get(pair)
    if held is None:
        held = (_signature_problem(crl, ark),)
        _VERDICTS.put(pair, held)
    (problem,) = held
    expected = f"signed by {common_name(ark)} ({_SIGNED_WITH})"
    return check("collateral.amd_crl.signature", expected, problem or expected, problem is None)


def _signature_problem(crl: AmdCrl, ark: x509.Certificate) -> str | None:
    """Why `ark` did not sign `crl` with RSASSA-PSS SHA-384, or None when it did."""
    oid = crl.crl.signature_algorithm_oid
    try:
        digest = crl.crl.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    if oid != SignatureAlgorithmOID.RSASSA_PSS or not isinstance(digest, hashes.SHA384):
        with_digest = f" ({digest.name.upper()})" if digest else ""
        return f"signed with {oid.dotted_string}{with_digest}, not {_SIGNED_WITH}"
    key = ark.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return f"{common_name(ark)} has no RSA key"
    try:
        key.verify(crl.crl.signature, crl.crl.tbs_certlist_bytes, _PSS_SHA384, hashes.SHA384())
    except InvalidSignature:
        return f"signature does not verify with {common_name(ark)}"
    return None


def _validity_check(crl: AmdCrl, now: datetime) -> Check:
    name = "collateral.amd_crl.validity"
    if crl.next_update is None:
        # Without nextUpdate nothing says when a newer list replaces this one.
        return check(name, "thisUpdate .. nextUpdate", "no nextUpdate", False)
    period = f"{crl.this_update.isoformat()} .. {crl.next_update.isoformat()}"
    if now < crl.this_update:
        return check(name, period, f"not yet valid at {now.isoformat()}", False)
    if now > crl.next_update:
        return check(name, period, f"expired at {now.isoformat()}", False)
    return check(name, period, period, True)


def _issuer_check(crl: AmdCrl, ark: x509.Certificate) -> Check:
    issuer = crl.crl.issuer
    shown = common_name(ark) if issuer == ark.subject else issuer.rfc4514_string()
    return check("collateral.amd_crl.issuer", common_name(ark), shown, issuer == ark.subject)


def _listed(name: str, role: str, cert: x509.Certificate | None, crl: AmdCrl) -> Check:
    if cert is None:
        return check(name, f"{role} not listed", f"no {role} given", False)
    with warnings.catch_warnings():
        # A VCEK's or VLEK's serial number is 0 (see the module docstring): expected here.
        warnings.filterwarnings(
            "ignore", message=".*serial number", category=CryptographyDeprecationWarning
        )
        serial = cert.serial_number
    expected = f"{role} serial {serial:#x} not listed"
    entry = crl.revoked.get(serial)
    if entry is None:
        return check(name, expected, expected, True)
    return check(name, expected, f"{role} serial {serial:#x} {entry.text()}", False)
