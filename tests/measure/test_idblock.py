"""The SEV-SNP ID block and ID auth (abi/idblock.py, measure/idblock.py) against the published
vectors (tests/vectors/idblock: virtee/sev, sev-snp-measure, an RFC 6979 signature from
microsoft/igvm-tooling), our signatures checked by a second ECDSA implementation (`ecdsa`,
pure Python), and every reason the firmware refuses an ID block found before launch."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import ecdsa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmlaunch.abi.idblock import (
    AUTHOR_KEY,
    ID_AUTH_SIZE,
    ID_BLOCK_SIG,
    ID_BLOCK_SIZE,
    ID_KEY,
    IdAuth,
    IdBlock,
    signature_numbers,
)
from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.spec import IdBlockConfig
from cvmlaunch.measure import idblock as ib

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "idblock"
EXPECTED = json.loads((VECTORS / "expected.json").read_text())
VIRTEE, SSM, DET = EXPECTED["virtee-sev"], EXPECTED["sev-snp-measure"], EXPECTED["deterministic"]


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def key(name: str) -> ib.IdKey:
    return ib.read_key(VECTORS / name, key="test")


def block_of(vector: dict[str, Any], ld: bytes) -> IdBlock:
    return IdBlock(
        ld,
        bytes.fromhex(vector["family_id"]),
        bytes.fromhex(vector["image_id"]),
        vector["guest_svn"],
        int(vector["policy"], 16),
        vector["version"],
    )


def independent_verify(public: bytes, sig: bytes, message: bytes) -> bool:
    """`sig` over `message` checked by python-ecdsa from the ABI structures' numbers."""
    x = int.from_bytes(public[4:76], "little")
    y = int.from_bytes(public[76:148], "little")
    point = x.to_bytes(48, "big") + y.to_bytes(48, "big")
    verifying = ecdsa.VerifyingKey.from_string(point, curve=ecdsa.NIST384p,
                                               hashfunc=hashlib.sha384)  # fmt: skip
    r, s = signature_numbers(sig)
    try:
        return bool(verifying.verify(r.to_bytes(48, "big") + s.to_bytes(48, "big"), message))
    except ecdsa.BadSignatureError:
        return False


# ---- the published vectors, byte for byte ----------------------------------------------------


@pytest.mark.parametrize(
    ("vector", "ld"),
    [(VIRTEE, bytes.fromhex(VIRTEE["ld"])), (SSM, b64(SSM["ld_b64"]))],
    ids=["virtee-sev", "sev-snp-measure"],
)
def test_id_blocks_and_key_digests(vector: dict[str, Any], ld: bytes) -> None:
    block = block_of(vector, ld)
    assert block.pack() == b64(vector["id_block_b64"])
    assert IdBlock.unpack(block.pack()) == block
    assert key(vector["keys"]["id"]).digest == b64(vector["id_key_digest_b64"])
    assert key(vector["keys"]["author"]).digest == b64(vector["author_key_digest_b64"])


def test_virtee_id_auth_from_its_stored_signatures() -> None:
    """The stored signatures used a random k: they verify, and with the keys they make the
    stored 4096-byte ID auth exactly."""
    block = b64(VIRTEE["id_block_b64"])
    block_sig = (VECTORS / "virtee-sev" / "test_id_sig.bin").read_bytes()
    author_sig = (VECTORS / "virtee-sev" / "test_auth_sig.bin").read_bytes()
    id_key, author = key(VIRTEE["keys"]["id"]), key(VIRTEE["keys"]["author"])
    assert ib.verifies(id_key.public, block_sig, block)
    assert ib.verifies(author.public, author_sig, id_key.public)
    stored = (VECTORS / "virtee-sev" / "test_auth_block.bin").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == VIRTEE["id_auth_sha256"]
    built = IdAuth(block_sig, id_key.public, author_sig, author.public).pack()
    assert len(built) == ID_AUTH_SIZE and built == stored
    assert IdAuth.unpack(stored).pack() == stored
    signed = ib.SignedIdBlock(block, stored, True)
    assert ib.problems(signed, ld=bytes.fromhex(VIRTEE["ld"]), policy=0x30000) == []


def test_deterministic_signature_is_reproduced() -> None:
    id_key = key(DET["keys"]["id"])
    block = bytes.fromhex(DET["id_block_hex"])
    assert IdBlock.unpack(block).pack() == block and IdBlock.unpack(block).guest_svn == 2
    assert id_key.private is not None
    sig = ib.sign(id_key.private, block)
    assert sig[:72] == bytes.fromhex(DET["signature_r_le72"])
    assert sig[72:144] == bytes.fromhex(DET["signature_s_le72"])
    assert sig[144:] == bytes(512 - 144)
    assert id_key.digest == bytes.fromhex(DET["id_key_digest"])
    # The whole ID block signed from its fields gives that signature too.
    parsed = IdBlock.unpack(block)
    signed = ib.sign_id_block(parsed, id_key)
    assert IdAuth.unpack(signed.auth).id_block_sig == sig and not signed.author_key_enabled


@settings(deadline=None, derandomize=True, max_examples=25)
@given(
    ld=st.binary(min_size=48, max_size=48),
    family=st.binary(min_size=16, max_size=16),
    image=st.binary(min_size=16, max_size=16),
    svn=st.integers(0, 0xFFFF_FFFF),
    policy=st.integers(0, (1 << 26) - 1),
    author=st.booleans(),
    deterministic=st.booleans(),
)
def test_our_signatures_verify_independently(  # noqa: PLR0917 (hypothesis gives them)
    ld: bytes, family: bytes, image: bytes, svn: int, policy: int, author: bool,
    deterministic: bool,
) -> None:  # fmt: skip
    id_key, author_key = key(VIRTEE["keys"]["id"]), key(VIRTEE["keys"]["author"])
    block = IdBlock(ld, family, image, svn, policy)
    signed = ib.sign_id_block(block, id_key, author_key if author else None,
                              deterministic=deterministic)  # fmt: skip
    auth = IdAuth.unpack(signed.auth)
    assert len(signed.block) == ID_BLOCK_SIZE and len(signed.auth) == ID_AUTH_SIZE
    assert independent_verify(auth.id_key, auth.id_block_sig, signed.block)
    assert independent_verify(auth.id_key, auth.id_block_sig, signed.block[:-1] + b"\1") is (
        signed.block[-1:] == b"\1"
    )
    if author:
        assert independent_verify(auth.author_key, auth.id_key_sig, auth.id_key)
    else:
        assert auth.author_key == bytes(0x404) and signed.author_key_digest is None
    assert ib.problems(signed, ld=ld, policy=policy) == []


# ---- what the firmware would refuse, all at once ---------------------------------------------


def signed_virtee(author: bool = True) -> tuple[ib.SignedIdBlock, bytes]:
    ld = bytes.fromhex(VIRTEE["ld"])
    authors = key(VIRTEE["keys"]["author"]) if author else None
    return ib.sign_id_block(block_of(VIRTEE, ld), key(VIRTEE["keys"]["id"]), authors), ld


def test_every_refusal_is_named_with_its_firmware_status() -> None:
    signed, ld = signed_virtee()
    auth = bytearray(signed.auth)
    auth[ID_BLOCK_SIG] ^= 1  # the ID key's signature of the block
    auth[ID_KEY + 0x300] ^= 1  # reserved bytes of the ID key: the author's signature breaks
    bad = signed._replace(auth=bytes(auth))
    found = {p.field: p.reason for p in ib.problems(bad, ld=bytes(48), policy=0x30001)}
    assert set(found) == {"snp.id_block.ld", "snp.id_block.policy", "snp.id_block.id_key",
                          "snp.id_block.author_key"}  # fmt: skip
    assert found["snp.id_block.ld"].endswith("(SNP_LAUNCH_FINISH would fail: BAD_MEASUREMENT)")
    assert "0x30000, the launch policy is 0x30001" in found["snp.id_block.policy"]
    assert "POLICY_FAILURE" in found["snp.id_block.policy"]
    assert "BAD_SIGNATURE" in found["snp.id_block.id_key"]
    assert "author key's signature of the ID key" in found["snp.id_block.author_key"]
    assert ib.problems(signed, ld=ld, policy=0x30000) == []


def test_algorithms_and_curves_are_checked() -> None:
    signed, ld = signed_virtee()
    auth = bytearray(signed.auth)
    auth[0] = 2  # ID_KEY_ALGO
    auth[AUTHOR_KEY] = 3  # the author key's CURVE
    found = ib.problems(signed._replace(auth=bytes(auth)), ld=ld, policy=0x30000)
    reasons = [f"{p.field}: {p.reason}" for p in found]
    assert (
        "snp.id_block.id_key: algorithm 2; the platform takes 1 (ECDSA P-384 with SHA-384)"
        in reasons
    )
    assert any(r.startswith("snp.id_block.author_key: curve 3;") for r in reasons)
    # Without AUTHOR_KEY_EN the author fields are not looked at.
    plain, _ = signed_virtee(author=False)
    assert ib.problems(plain, ld=ld, policy=0x30000) == []


def test_id_block_for_signs_over_the_computed_digest_or_checks_the_given_one() -> None:
    ld = bytes.fromhex(VIRTEE["ld"])
    config = IdBlockConfig(VECTORS / VIRTEE["keys"]["id"], VECTORS / VIRTEE["keys"]["author"],
                           guest_svn=5)  # fmt: skip
    signed = ib.id_block_for(config, ld=ld, policy=0x30000)
    assert signed.id_block == IdBlock(ld, guest_svn=5, policy=0x30000)
    assert ib.digests(config) == (signed.id_key_digest, signed.author_key_digest)
    given_config = IdBlockConfig(block=signed.block, auth=signed.auth)
    assert given_config.author_key_enabled
    assert ib.id_block_for(given_config, ld=ld, policy=0x30000) == signed
    with pytest.raises(ProfileError) as e:
        ib.id_block_for(given_config, ld=bytes(48), policy=0x30002)
    assert [p.field for p in e.value.problems] == ["snp.id_block.ld", "snp.id_block.policy"]
    qemu = signed.qemu()
    assert base64.b64decode(qemu["id-block"]) == signed.block
    assert base64.b64decode(qemu["id-auth"]) == signed.auth
    assert qemu["author-key-enabled"] == "on"


# ---- keys ------------------------------------------------------------------------------------


def pem(private: Any, password: bytes | None = None) -> bytes:
    encryption: Any = (serialization.NoEncryption() if password is None
                       else serialization.BestAvailableEncryption(password))  # fmt: skip
    return bytes(private.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, encryption))  # fmt: skip


def test_keys_in_every_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    expected = ib.load_key(pem(private), key="k").digest
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ib.load_key(der, key="k").digest == expected
    public = ib.load_key(public_pem, key="k")
    assert public.digest == expected and public.private is None
    encrypted = pem(private, b"s3cret")
    assert ib.load_key(encrypted, key="k", passphrase=b"s3cret").digest == expected
    (tmp_path / "pass").write_bytes(b"s3cret\nignored")
    assert ib.passphrase(tmp_path / "pass", None, names=("f", "e")) == b"s3cret"
    monkeypatch.setenv("IDKEY_PASS", "s3cret")
    assert ib.passphrase(None, "IDKEY_PASS", names=("f", "e")) == b"s3cret"
    with pytest.raises(ProfileError, match="a public key cannot sign"):
        ib.sign_id_block(IdBlock(bytes(48)), public)


@pytest.mark.parametrize(
    ("data", "passphrase", "message"),
    [
        (pem(ec.generate_private_key(ec.SECP256R1())), None, "got curve secp256r1"),
        (pem(rsa.generate_private_key(65537, 2048)), None, "expected an ECDSA P-384 key, got"),
        (pem(ec.generate_private_key(ec.SECP384R1()), b"pw"), None, "is encrypted: give its"),
        (pem(ec.generate_private_key(ec.SECP384R1()), b"pw"), b"no", "does not decrypt"),
        (b"not a key", None, "expected an ECDSA P-384 key, PEM or DER"),
        (b"", None, "expected an ECDSA P-384 key, PEM or DER"),
    ],
    ids=["p256", "rsa", "encrypted", "wrong-passphrase", "junk", "empty"],
)
def test_unusable_keys_are_one_named_error(
    data: bytes, passphrase: bytes | None, message: str
) -> None:
    with pytest.raises(ProfileError) as e:
        ib.load_key(data, key="snp.id_block.id_key", passphrase=passphrase)
    [problem] = e.value.problems
    assert problem.field == "snp.id_block.id_key" and message in problem.reason


def test_a_missing_passphrase_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_PASS", raising=False)
    with pytest.raises(ProfileError, match=r"^snp\.id_block\.id_key_passphrase_env: the "):
        ib.passphrase(
            None,
            "NO_SUCH_PASS",
            names=("snp.id_block.id_key_passphrase_file", "snp.id_block.id_key_passphrase_env"),
        )
