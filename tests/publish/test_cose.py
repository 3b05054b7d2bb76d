"""The COSE_Sign1 envelope of a signed CoRIM (publish/cose.py), on a payload of its own;
signed CoRIMs checked by pycose and against the CDDL are in test_corim.py."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cvmlaunch.errors import AttestationError, FieldProblem, ProfileError
from cvmlaunch.publish import cose

PAYLOAD = cbor2.dumps(cbor2.CBORTag(501, {0: "a CoRIM"}))
ED25519 = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def decode(data: bytes, where: str) -> Any:
    try:
        return cbor2.loads(data)
    except cbor2.CBORError:
        raise ProfileError([FieldProblem(where, "not CBOR")]) from None


def pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def public(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.mark.parametrize(
    ("key", "alg"), [(ED25519, -8), (ec.generate_private_key(ec.SECP521R1()), -36)]
)
def test_signed_payload_verifies_and_says_what_it_holds(key: Any, alg: int) -> None:
    validity = {1: 1_800_000_000}  # not-after (corim.py writes it as a tag 1 time)
    data = cose.sign(PAYLOAD, pem(key), validity)
    document = cbor2.loads(data)
    parts = cose.envelope(document, decode)
    assert (parts.alg, parts.payload) == (alg, PAYLOAD)
    header = cbor2.loads(parts.protected)
    assert header[3] == cose.MEDIA_TYPE
    assert cbor2.loads(header[8])[1] == validity
    assert cose.verify(document, public(key), decode) == PAYLOAD


def test_ed25519_signing_is_deterministic() -> None:
    assert cose.sign(PAYLOAD, pem(ED25519), None) == cose.sign(PAYLOAD, pem(ED25519), None)


def test_verify_refuses_another_key_a_changed_payload_and_no_signature() -> None:
    document = cbor2.loads(cose.sign(PAYLOAD, pem(ED25519), None))
    other = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32))
    with pytest.raises(AttestationError, match=r"COSE alg -8\) does not verify"):
        cose.verify(document, public(other), decode)
    changed = cbor2.CBORTag(18, [*document.value[:2], PAYLOAD + b"\x00", document.value[3]])
    with pytest.raises(AttestationError, match="does not verify"):
        cose.verify(changed, public(ED25519), decode)
    with pytest.raises(AttestationError, match="not signed"):
        cose.verify(cbor2.loads(PAYLOAD), public(ED25519), decode)
    with pytest.raises(ProfileError, match="--reference-key: not a PEM public key"):
        cose.verify(document, b"junk", decode)


@pytest.mark.parametrize(
    ("parts", "where"),
    [
        ([b"", {}, PAYLOAD], "COSE_Sign1: expected [protected, unprotected, payload, signature]"),
        ([b"", [], PAYLOAD, b""], "COSE_Sign1.unprotected: expected a map"),
        ([b"", {}, None, b""], "COSE_Sign1.payload: expected the CoRIM inline"),
        ([b"\xff", {}, PAYLOAD, b""], "COSE_Sign1.protected: not CBOR"),
        ([cbor2.dumps({1: "x"}), {}, PAYLOAD, b""], "COSE_Sign1.protected.alg"),
        ([cbor2.dumps({1: -8}), {}, PAYLOAD, b""], "COSE_Sign1.protected.content-type"),
        (
            [cbor2.dumps({1: -8, 3: cose.MEDIA_TYPE, 8: b"\x01"}), {}, PAYLOAD, b""],
            "COSE_Sign1.protected.corim-meta: expected a corim-meta map",
        ),
    ],
)
def test_envelope_names_what_is_wrong(parts: list[Any], where: str) -> None:
    with pytest.raises(ProfileError, match=where.replace("[", r"\[")):
        cose.envelope(cbor2.CBORTag(18, parts), decode)


def test_sign_refuses_keys_it_cannot_use() -> None:
    with pytest.raises(ProfileError, match="expected a P-256/P-384/P-521 key, got secp192r1"):
        cose.sign(PAYLOAD, pem(ec.generate_private_key(ec.SECP192R1())), None)
    with pytest.raises(ProfileError, match="signing_key: not an unencrypted PEM private key"):
        cose.sign(PAYLOAD, b"not a key", None)
