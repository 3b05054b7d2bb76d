"""The SEV-SNP ID block and ID authentication information structure that SNP_LAUNCH_FINISH
takes (SEV-SNP ABI 56860, "SNP_LAUNCH_FINISH" and its ID_BLOCK / ID_AUTH tables).

The ID block (96 bytes) names the launch the guest owner signs: LD ‖ FAMILY_ID ‖ IMAGE_ID ‖
VERSION ‖ GUEST_SVN ‖ POLICY. The ID auth (4096 bytes) carries the ID key's signature of
it, the ID key, and optionally the author key's signature of the ID key and the author key.
Keys and signatures are ECDSA P-384 with SHA-384; every number in them is little-endian,
zero-padded to 72 bytes (the ABI's field for up to P-521), which is where implementations
that wrote big-endian or unpadded r and s produced firmware "Bad signature" failures.
"""

import struct

from cvmlaunch.namedtuple import NamedTuple

ID_BLOCK_SIZE = 96
ID_AUTH_SIZE = 4096
ID_BLOCK_VERSION = 1
FAMILY_ID_SIZE = IMAGE_ID_SIZE = 16
LD_SIZE = 48

# ID_KEY_ALGO / AUTH_KEY_ALGO: the signature algorithm; CURVE: the public key's curve.
ALGO_ECDSA_P384_SHA384 = 1
CURVE_P384 = 2
P384_SIZE = 48  # bytes of a P-384 coordinate, r or s
NUMBER_SIZE = 72  # the ABI's field for one of them

SIGNATURE_SIZE = 0x200  # r[72] ‖ s[72] ‖ reserved
PUBLIC_KEY_SIZE = 0x404  # CURVE u32 ‖ QX[72] ‖ QY[72] ‖ reserved

# Offsets in the ID auth structure.
ID_KEY_ALGO, AUTH_KEY_ALGO = 0x00, 0x04
ID_BLOCK_SIG = 0x40
ID_KEY = 0x240
ID_KEY_SIG = 0x680
AUTHOR_KEY = 0x880

_ID_BLOCK = struct.Struct("<48s16s16sIIQ")


class IdBlock(NamedTuple):
    """The 96-byte ID block."""

    ld: bytes
    family_id: bytes = bytes(FAMILY_ID_SIZE)
    image_id: bytes = bytes(IMAGE_ID_SIZE)
    guest_svn: int = 0
    policy: int = 0
    version: int = ID_BLOCK_VERSION

    def pack(self) -> bytes:
        return _ID_BLOCK.pack(
            self.ld, self.family_id, self.image_id, self.version, self.guest_svn, self.policy
        )

    @classmethod
    def unpack(cls, data: bytes) -> "IdBlock":
        if len(data) != ID_BLOCK_SIZE:
            raise ValueError(f"an ID block is {ID_BLOCK_SIZE} bytes, not {len(data)}")
        ld, family_id, image_id, version, guest_svn, policy = _ID_BLOCK.unpack(data)
        return cls(ld, family_id, image_id, guest_svn, policy, version)


def number(value: int) -> bytes:
    """`value` as the ABI writes r, s, QX and QY: 72 bytes little-endian."""
    return value.to_bytes(NUMBER_SIZE, "little")


def signature(r: int, s: int) -> bytes:
    """The 512-byte signature structure of (r, s)."""
    return (number(r) + number(s)).ljust(SIGNATURE_SIZE, b"\0")


def signature_numbers(data: bytes) -> tuple[int, int]:
    """(r, s) of a 512-byte signature structure."""
    r = int.from_bytes(data[:NUMBER_SIZE], "little")
    return r, int.from_bytes(data[NUMBER_SIZE : 2 * NUMBER_SIZE], "little")


def public_key(curve: int, x: int, y: int) -> bytes:
    """The 0x404-byte public key structure; its SHA-384 is the report's key digest."""
    return (struct.pack("<I", curve) + number(x) + number(y)).ljust(PUBLIC_KEY_SIZE, b"\0")


def public_key_numbers(data: bytes) -> tuple[int, int, int]:
    """(CURVE, QX, QY) of a public key structure."""
    (curve,) = struct.unpack_from("<I", data)
    x = int.from_bytes(data[4 : 4 + NUMBER_SIZE], "little")
    return curve, x, int.from_bytes(data[4 + NUMBER_SIZE : 4 + 2 * NUMBER_SIZE], "little")


class IdAuth(NamedTuple):
    """The 4096-byte ID authentication information structure, by field."""

    id_block_sig: bytes
    id_key: bytes
    id_key_sig: bytes = bytes(SIGNATURE_SIZE)
    author_key: bytes = bytes(PUBLIC_KEY_SIZE)
    id_key_algo: int = ALGO_ECDSA_P384_SHA384
    auth_key_algo: int = ALGO_ECDSA_P384_SHA384

    def pack(self) -> bytes:
        out = bytearray(ID_AUTH_SIZE)
        struct.pack_into("<II", out, ID_KEY_ALGO, self.id_key_algo, self.auth_key_algo)
        for offset, field in (
            (ID_BLOCK_SIG, self.id_block_sig),
            (ID_KEY, self.id_key),
            (ID_KEY_SIG, self.id_key_sig),
            (AUTHOR_KEY, self.author_key),
        ):
            out[offset : offset + len(field)] = field
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes) -> "IdAuth":
        if len(data) != ID_AUTH_SIZE:
            raise ValueError(f"an ID auth structure is {ID_AUTH_SIZE} bytes, not {len(data)}")
        id_key_algo, auth_key_algo = struct.unpack_from("<II", data, ID_KEY_ALGO)
        return cls(
            data[ID_BLOCK_SIG : ID_BLOCK_SIG + SIGNATURE_SIZE],
            data[ID_KEY : ID_KEY + PUBLIC_KEY_SIZE],
            data[ID_KEY_SIG : ID_KEY_SIG + SIGNATURE_SIZE],
            data[AUTHOR_KEY : AUTHOR_KEY + PUBLIC_KEY_SIZE],
            id_key_algo,
            auth_key_algo,
        )
