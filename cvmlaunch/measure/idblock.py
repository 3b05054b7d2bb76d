"""Signing and checking an SEV-SNP ID block: the guest owner's signature over the launch
digest and policy, which the platform checks at SNP_LAUNCH_FINISH and whose key digests the
attestation report carries.

An ID block is signed here (ECDSA P-384/SHA-384 with `cryptography`, RFC 6979 deterministic
by default so that a build reproduces byte for byte) or given already signed, as QEMU's
`sev-snp-guest` takes it. Either way `problems` checks it before any launch, all at once, as
the firmware would: the LD against the computed launch digest (else BAD_MEASUREMENT), the
POLICY against the launch policy (POLICY_FAILURE), the algorithms and curves, the ID key's
signature of the block and the author key's of the ID key (BAD_SIGNATURE).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvmlaunch import log
from cvmlaunch.abi.idblock import (
    ALGO_ECDSA_P384_SHA384,
    CURVE_P384,
    P384_SIZE,
    IdAuth,
    IdBlock,
    public_key,
    public_key_numbers,
    signature,
    signature_numbers,
)
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.inputs import read_input
from cvmlaunch.namedtuple import NamedTuple

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from cvmlaunch.guest.spec import GuestSpec, IdBlockConfig

_log = log.get_logger("cvmlaunch.idblock")

MAX_KEY_FILE = 1 << 16  # a PEM or DER key is a few hundred bytes
MAX_PASSPHRASE_FILE = 4096


class IdKey(NamedTuple):
    """A P-384 key of an ID block: its 0x404-byte public key structure, and the private
    key where the file held one (a public key alone gives the digest, not a signature)."""

    public: bytes
    private: ec.EllipticCurvePrivateKey | None

    @property
    def digest(self) -> bytes:
        """ID_KEY_DIGEST / AUTHOR_KEY_DIGEST as the report carries it."""
        return hashlib.sha384(self.public).digest()


class SignedIdBlock(NamedTuple):
    """An ID block with its ID auth, as SNP_LAUNCH_FINISH takes them."""

    block: bytes
    auth: bytes
    author_key_enabled: bool

    @property
    def id_block(self) -> IdBlock:
        return IdBlock.unpack(self.block)

    @property
    def id_key_digest(self) -> bytes:
        return hashlib.sha384(IdAuth.unpack(self.auth).id_key).digest()

    @property
    def author_key_digest(self) -> bytes | None:
        if not self.author_key_enabled:
            return None
        return hashlib.sha384(IdAuth.unpack(self.auth).author_key).digest()

    @property
    def parts(self) -> tuple[bytes, bytes, bool]:
        """(block, auth, AUTHOR_KEY_EN): what SNP_LAUNCH_FINISH and a VM definition take."""
        return self.block, self.auth, self.author_key_enabled

    def qemu(self) -> dict[str, str]:
        """The properties of QEMU's sev-snp-guest object that carry it."""
        return {
            "id-block": base64.b64encode(self.block).decode(),
            "id-auth": base64.b64encode(self.auth).decode(),
            "author-key-enabled": "on" if self.author_key_enabled else "off",
        }

    def to_json(self) -> dict[str, Any]:
        block = self.id_block
        author = self.author_key_digest
        return {
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": None if author is None else author.hex(),
            "family_id": block.family_id.hex(),
            "image_id": block.image_id.hex(),
            "guest_svn": block.guest_svn,
            "policy": f"{block.policy:#x}",
            "ld": block.ld.hex(),
            "qemu": self.qemu(),
        }


# ---- keys ------------------------------------------------------------------------------------


def read_key(path: Path, *, key: str, passphrase: bytes | None = None) -> IdKey:
    """The ID or author key in file `path` (PEM or DER; private, optionally encrypted with
    `passphrase`, or public); `key` is the profile key or flag errors name."""
    data = read_input(path, limit=MAX_KEY_FILE, what="an ECDSA P-384 key", name=key)
    return load_key(data, key=key, passphrase=passphrase)


def load_key(data: bytes, *, key: str, passphrase: bytes | None = None) -> IdKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = data.lstrip().startswith(b"-----BEGIN")
    private_loader = (
        serialization.load_pem_private_key if pem else serialization.load_der_private_key
    )
    public_loader = serialization.load_pem_public_key if pem else serialization.load_der_public_key
    loaded: Any = None
    try:
        loaded = private_loader(data, password=passphrase)
    except TypeError as e:  # encrypted without a passphrase, or a passphrase for a plain key
        reason = (
            "is encrypted: give its passphrase (a _passphrase_file or _passphrase_env)"
            if passphrase is None
            else f"cannot take a passphrase ({e})"
        )
        raise ProfileError([FieldProblem(key, reason)]) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        if "password" in str(e).lower() or "decrypt" in str(e).lower():
            raise ProfileError([FieldProblem(key, "the passphrase does not decrypt it")]) from None
        try:
            loaded = public_loader(data)
        except (ValueError, UnsupportedAlgorithm):
            reason = "expected an ECDSA P-384 key, PEM or DER (private or public)"
            raise ProfileError([FieldProblem(key, reason)]) from None
    private = loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None
    public = loaded.public_key() if private is not None else loaded
    if not isinstance(public, ec.EllipticCurvePublicKey):
        reason = f"expected an ECDSA P-384 key, got a {type(public).__name__.lstrip('_')}"
        raise ProfileError([FieldProblem(key, reason)])
    if not isinstance(public.curve, ec.SECP384R1):
        reason = f"expected an ECDSA P-384 key, got curve {public.curve.name}"
        raise ProfileError([FieldProblem(key, reason)])
    numbers = public.public_numbers()
    return IdKey(public_key(CURVE_P384, numbers.x, numbers.y), private)


def passphrase(file: Path | None, env: str | None, *, names: tuple[str, str]) -> bytes | None:
    """A key's passphrase from a file (its first line) or an environment variable (`names`:
    how errors name the two); never a flag, which other users of the host can read."""
    if file is not None:
        data = read_input(file, limit=MAX_PASSPHRASE_FILE, what="a passphrase", name=names[0])
        return data.split(b"\n", 1)[0].rstrip(b"\r")
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ProfileError([FieldProblem(names[1], f"the environment has no {env}")])
        return value.encode()
    return None


# ---- signing and checking --------------------------------------------------------------------


def sign(key: ec.EllipticCurvePrivateKey, message: bytes, *, deterministic: bool = True) -> bytes:
    """The ABI's signature structure of `message` (ECDSA P-384 over its SHA-384)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    algorithm = ec.ECDSA(hashes.SHA384(), deterministic_signing=deterministic)
    r, s = decode_dss_signature(key.sign(message, algorithm))
    return signature(r, s)


def sign_id_block(
    block: IdBlock, id_key: IdKey, author_key: IdKey | None = None, *, deterministic: bool = True
) -> SignedIdBlock:
    """`block` signed with `id_key`, and the ID key signed with `author_key` if given."""
    if id_key.private is None:
        raise ProfileError([FieldProblem("snp.id_block.id_key", "a public key cannot sign")])
    packed = block.pack()
    auth = IdAuth(sign(id_key.private, packed, deterministic=deterministic), id_key.public)
    if author_key is not None:
        if author_key.private is None:
            reason = "a public key cannot sign the ID key"
            raise ProfileError([FieldProblem("snp.id_block.author_key", reason)])
        id_key_sig = sign(author_key.private, id_key.public, deterministic=deterministic)
        auth = auth._replace(id_key_sig=id_key_sig, author_key=author_key.public)
    return SignedIdBlock(packed, auth.pack(), author_key is not None)


def verifies(public: bytes, sig: bytes, message: bytes) -> bool:
    """Whether the ABI signature structure `sig` of `message` verifies under the ABI
    public key structure `public` (P-384, SHA-384)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    curve, x, y = public_key_numbers(public)
    r, s = signature_numbers(sig)
    limit = 1 << (8 * P384_SIZE)
    if curve != CURVE_P384 or not (0 < r < limit and 0 < s < limit):
        return False
    try:
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA384()))
    except (ValueError, InvalidSignature):
        return False
    return True


def problems(signed: SignedIdBlock, *, ld: bytes, policy: int) -> list[FieldProblem]:
    """Every reason SNP_LAUNCH_FINISH would refuse `signed` for a launch of digest `ld` and
    guest policy `policy`, each with the firmware status it would fail with."""
    out: list[FieldProblem] = []
    where = "snp.id_block"
    block, auth = IdBlock.unpack(signed.block), IdAuth.unpack(signed.auth)
    if block.ld != ld:
        reason = (f"the ID block's LD is {block.ld.hex()}, the launch digest is {ld.hex()} "
                  "(SNP_LAUNCH_FINISH would fail: BAD_MEASUREMENT)")  # fmt: skip
        out.append(FieldProblem(f"{where}.ld", reason))
    if block.policy != policy:
        reason = (f"the ID block's POLICY is {block.policy:#x}, the launch policy is "
                  f"{policy:#x} (SNP_LAUNCH_FINISH would fail: POLICY_FAILURE)")  # fmt: skip
        out.append(FieldProblem(f"{where}.policy", reason))
    keys = [("id_key", auth.id_key_algo, auth.id_key)]
    if signed.author_key_enabled:
        keys.append(("author_key", auth.auth_key_algo, auth.author_key))
    for name, algo, public in keys:
        if algo != ALGO_ECDSA_P384_SHA384:
            reason = f"algorithm {algo}; the platform takes 1 (ECDSA P-384 with SHA-384)"
            out.append(FieldProblem(f"{where}.{name}", reason))
        if public_key_numbers(public)[0] != CURVE_P384:
            reason = f"curve {public_key_numbers(public)[0]}; the platform takes 2 (P-384)"
            out.append(FieldProblem(f"{where}.{name}", reason))
    if not verifies(auth.id_key, auth.id_block_sig, signed.block):
        reason = "the ID key's signature of the ID block does not verify (BAD_SIGNATURE)"
        out.append(FieldProblem(f"{where}.id_key", reason))
    if signed.author_key_enabled and not verifies(auth.author_key, auth.id_key_sig, auth.id_key):
        reason = "the author key's signature of the ID key does not verify (BAD_SIGNATURE)"
        out.append(FieldProblem(f"{where}.author_key", reason))
    return out


def id_block_for(
    config: IdBlockConfig,
    *,
    ld: bytes,
    policy: int,
    deterministic: bool = True,
    names: Mapping[str, str] | None = None,
) -> SignedIdBlock:
    """The signed ID block of a guest whose launch digest is `ld` and policy `policy`: the
    one `config` gives, or signed with its keys; ProfileError with every reason the platform
    would refuse it. `names` renames config fields in errors (a command's flags)."""
    signed, found = id_block_and_refusals(
        config, ld=ld, policy=policy, deterministic=deterministic, names=names
    )
    if found:
        raise ProfileError(found)
    return signed


def id_block_and_refusals(
    config: IdBlockConfig,
    *,
    ld: bytes,
    policy: int,
    deterministic: bool = True,
    names: Mapping[str, str] | None = None,
) -> tuple[SignedIdBlock, list[FieldProblem]]:
    """The signed ID block `id_block_for` gives, with every reason the platform would
    refuse it instead of an error (what `measure` reports and `launch` enforces)."""
    if config.block is not None and config.auth is not None:
        signed = SignedIdBlock(config.block, config.auth, config.author_key_enabled)
    else:
        id_key, author_key = keys(config, names)
        block = IdBlock(ld, config.family_id, config.image_id, config.guest_svn, policy)
        signed = sign_id_block(block, id_key, author_key, deterministic=deterministic)
    if not signed.author_key_enabled:
        # AMDESE/sev-guest#13: some SEV firmware versions refused such an ID auth.
        note = "some SEV firmware versions refuse an ID auth without an author key"
        _log.info("idblock.no_author_key", note=note)
    return signed, problems(signed, ld=ld, policy=policy)


def keys(
    config: IdBlockConfig, names: Mapping[str, str] | None = None
) -> tuple[IdKey, IdKey | None]:
    """The ID key and the author key (None: none) `config` names; errors name a field as
    `names` says (default: its profile key)."""

    def name(field: str) -> str:
        return (names or {}).get(field, f"snp.id_block.{field}")

    def read(role: str, path: Path) -> IdKey:
        secret = passphrase(
            getattr(config, f"{role}_passphrase_file"),
            getattr(config, f"{role}_passphrase_env"),
            names=(name(f"{role}_passphrase_file"), name(f"{role}_passphrase_env")),
        )
        return read_key(path, key=name(role), passphrase=secret)

    if config.id_key is None:
        raise ProfileError([FieldProblem(name("id_key"), "required to sign an ID block")])
    author = config.author_key
    return read("id_key", config.id_key), None if author is None else read("author_key", author)


def digests(config: IdBlockConfig) -> tuple[bytes, bytes | None]:
    """ID_KEY_DIGEST and AUTHOR_KEY_DIGEST (None: no author key) a guest launched with
    `config` reports."""
    if config.block is not None and config.auth is not None:
        signed = SignedIdBlock(config.block, config.auth, config.author_key_enabled)
        return signed.id_key_digest, signed.author_key_digest
    id_key, author_key = keys(config)
    return id_key.digest, None if author_key is None else author_key.digest


def expectations(config: IdBlockConfig) -> dict[str, Any]:
    """What a guest launched with this ID block reports of it (attest.Expectations names):
    the key digests (AUTHOR_KEY_DIGEST zero without an author key), FAMILY_ID, IMAGE_ID,
    and GUEST_SVN as the least acceptable."""
    id_key_digest, author_key_digest = digests(config)
    if config.block is not None:
        block = IdBlock.unpack(config.block)
        family_id, image_id, guest_svn = block.family_id, block.image_id, block.guest_svn
    else:
        family_id, image_id, guest_svn = config.family_id, config.image_id, config.guest_svn
    return {
        "id_key_digest": id_key_digest,
        "author_key_digest": author_key_digest or bytes(len(id_key_digest)),
        "family_id": family_id,
        "image_id": image_id,
        "min_guest_svn": guest_svn,
    }


def signed_for(spec: GuestSpec, *, ld: bytes | None = None) -> SignedIdBlock | None:
    """The ID block a launch of `spec` hands SNP_LAUNCH_FINISH (None: it has none), given or
    signed with its keys over the digest `spec` measures (`ld` where the caller has it);
    ProfileError with every reason the firmware would refuse it."""
    if spec.id_block is None:
        return None
    if ld is None:
        from cvmlaunch.measure import measure
        from cvmlaunch.plan import build_plan

        ld = measure(build_plan(spec)).digest
    return id_block_for(spec.id_block, ld=ld, policy=spec.snp_policy)
