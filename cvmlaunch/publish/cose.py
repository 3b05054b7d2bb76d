"""The COSE_Sign1 envelope of a signed CoRIM (draft-ietf-rats-corim, signed-corim; RFC 9052,
RFC 9053): signing with a PEM private key, checking the envelope's shape, verifying its
signature with a PEM public key or certificate.

The envelope is tag 18 on [protected, unprotected, payload, signature]; the protected header
holds the algorithm (ES256/384/512 for a P-256/384/521 key, EdDSA for Ed25519/Ed448), the
content type and the corim-meta (the signer, named by its key's SHA-256, and the signature
validity). The payload is the tagged unsigned CoRIM, inline. An ECDSA signature is r || s.

Decoding the envelope's CBOR items is the caller's (`decode`): the CoRIM's bounded decoder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from cvmlaunch.errors import AttestationError, FieldProblem, ProfileError
from cvmlaunch.namedtuple import NamedTuple

MEDIA_TYPE = "application/rim+cbor"
TAG_SIGN1 = 18

# curve -> (COSE alg, hash, bytes per signature half)
_EC_ALGS = {
    "secp256r1": (-7, "SHA256", 32),
    "secp384r1": (-35, "SHA384", 48),
    "secp521r1": (-36, "SHA512", 66),
}

# One CBOR item that is all of the bytes, at the place named (ProfileError otherwise).
Decode = Callable[[bytes, str], Any]


def _fail(where: str, reason: str) -> ProfileError:
    return ProfileError([FieldProblem(where, reason)])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dumps(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def sign(payload: bytes, pem: bytes, validity: Mapping[int, Any] | None) -> bytes:
    """`payload` (a tagged CoRIM) signed with the PEM private key `pem`; `validity` (a
    validity-map) is the signature's, in the corim-meta."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise _fail("signing_key", f"not an unencrypted PEM private key ({exc})") from None
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    meta: dict[int, Any] = {0: {0: f"key sha-256:{hashlib.sha256(spki).hexdigest()}"}}
    if validity is not None:
        meta[1] = validity
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _EC_ALGS:
            raise _fail("signing_key", f"expected a P-256/P-384/P-521 key, got {key.curve.name}")
        alg, hash_name, size = _EC_ALGS[key.curve.name]
    elif isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        alg = -8  # EdDSA
    else:
        raise _fail("signing_key", "expected an EC (P-256/384/521) or EdDSA key")
    protected = _dumps({1: alg, 3: MEDIA_TYPE, 8: _dumps(meta)})
    to_be_signed = _dumps(["Signature1", protected, b"", payload])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = getattr(hashes, hash_name)()
        r, s = decode_dss_signature(key.sign(to_be_signed, ec.ECDSA(digest)))
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")  # RFC 9053: r || s
    else:
        signature = key.sign(to_be_signed)
    return _dumps(cbor2.CBORTag(TAG_SIGN1, [protected, {}, payload, signature]))


class Envelope(NamedTuple):
    protected: bytes
    alg: int
    payload: bytes
    signature: bytes


def envelope(document: Any, decode: Decode) -> Envelope:
    """The parts of a COSE_Sign1 CoRIM (`document`, tag 18), checked for shape."""
    parts = document.value
    if not (isinstance(parts, list | tuple) and len(parts) == 4):
        raise _fail("COSE_Sign1", "expected [protected, unprotected, payload, signature]")
    protected, unprotected, payload, signature = parts
    if not isinstance(protected, bytes) or not isinstance(signature, bytes):
        raise _fail("COSE_Sign1", "expected protected header and signature as byte strings")
    if not isinstance(unprotected, Mapping):
        raise _fail("COSE_Sign1.unprotected", "expected a map")
    if not isinstance(payload, bytes):
        raise _fail("COSE_Sign1.payload", "expected the CoRIM inline (detached: not supported)")
    header = decode(protected, "COSE_Sign1.protected")
    if not isinstance(header, Mapping):
        raise _fail("COSE_Sign1.protected", "expected a map")
    alg = header.get(1)
    if isinstance(alg, bool) or not isinstance(alg, int):
        raise _fail("COSE_Sign1.protected.alg", f"expected an integer, got {_short(alg)}")
    if header.get(3) != MEDIA_TYPE:
        raise _fail("COSE_Sign1.protected.content-type", f"expected {MEDIA_TYPE!r}")
    meta = header.get(8)
    if not isinstance(meta, bytes) or not isinstance(decode(meta, "corim-meta"), dict):
        raise _fail("COSE_Sign1.protected.corim-meta", "expected a corim-meta map")
    return Envelope(protected, alg, payload, signature)


def verify(document: Any, public_key_pem: bytes, decode: Decode) -> bytes:
    """The payload of `document` (a decoded CoRIM) once its signature verifies with
    `public_key_pem` (a PEM public key or certificate); AttestationError if it does not or
    the CoRIM is unsigned."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if not (isinstance(document, cbor2.CBORTag) and document.tag == TAG_SIGN1):
        raise AttestationError("CoRIM: not signed (no COSE_Sign1), nothing to verify")
    parts = envelope(document, decode)
    try:
        if b"CERTIFICATE" in public_key_pem:
            key: Any = x509.load_pem_x509_certificate(public_key_pem).public_key()
        else:
            key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise _fail("--reference-key", f"not a PEM public key or certificate ({exc})") from None
    to_be_signed = _dumps(["Signature1", parts.protected, b"", parts.payload])
    signature = parts.signature
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGS:
            alg, hash_name, size = _EC_ALGS[key.curve.name]
            if parts.alg != alg or len(signature) != 2 * size:
                raise InvalidSignature
            r, s = signature[:size], signature[size:]
            der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
            key.verify(der, to_be_signed, ec.ECDSA(getattr(hashes, hash_name)()))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if parts.alg != -8:
                raise InvalidSignature
            key.verify(signature, to_be_signed)
        else:
            raise _fail("--reference-key", "expected an EC (P-256/384/521) or EdDSA key")
    except InvalidSignature:
        raise AttestationError(
            f"CoRIM: signature (COSE alg {parts.alg}) does not verify with the given key"
        ) from None
    return parts.payload
