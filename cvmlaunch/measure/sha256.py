"""SHA-256 (FIPS 180-4) resumed from a chaining value, which hashlib cannot do.

An SEV or SEV-ES launch digest is one SHA-256 over the firmware image and what follows it
(kernel hashes, VMSAs). A firmware descriptor gives the chaining value after the image (the
image is whole 64-byte blocks, so nothing is left over); the rest, a few pages per vCPU, is
hashed here in Python. `chaining_value` computes the value a descriptor publishes.
"""

from __future__ import annotations

import struct

_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4,
    0xAB1C5ED5, 0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE,
    0x9BDC06A7, 0xC19BF174, 0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F,
    0x4A7484AA, 0x5CB0A9DC, 0x76F988DA, 0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7,
    0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967, 0x27B70A85, 0x2E1B2138, 0x4D2C6DFC,
    0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85, 0xA2BFE8A1, 0xA81A664B,
    0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070, 0x19A4C116,
    0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7,
    0xC67178F2,
)  # fmt: skip
INITIAL = bytes.fromhex("6a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19")
BLOCK = 64
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct(">16I")
_STATE = struct.Struct(">8I")


def _compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    # Rotations written out (x >> n | x << 32 - n, masked once after the XORs): the hot loop
    # of a resumed hash, a function call per rotation would double its time.
    w = list(_WORDS.unpack(block))
    for t in range(16, 64):
        x, y = w[t - 15], w[t - 2]
        s0 = ((x >> 7 | x << 25) ^ (x >> 18 | x << 14) ^ x >> 3) & _MASK
        s1 = ((y >> 17 | y << 15) ^ (y >> 19 | y << 13) ^ y >> 10) & _MASK
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _MASK)
    a, b, c, d, e, f, g, h = state
    for k, wt in zip(_K, w, strict=True):
        t1 = (h + (((e >> 6 | e << 26) ^ (e >> 11 | e << 21) ^ (e >> 25 | e << 7)) & _MASK)
              + (e & f ^ ~e & g) + k + wt)  # fmt: skip
        t2 = (((a >> 2 | a << 30) ^ (a >> 13 | a << 19) ^ (a >> 22 | a << 10)) & _MASK) + (
            a & b ^ a & c ^ b & c
        )
        h, g, f, e, d, c, b, a = g, f, e, (d + t1) & _MASK, c, b, a, (t1 + t2) & _MASK
    return tuple((x + y) & _MASK for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True))


class Sha256From:
    """A SHA-256 whose first `length` bytes (whole blocks) are already in `chaining`; it
    takes the rest like hashlib's (update, copy, digest)."""

    def __init__(self, chaining: bytes = INITIAL, length: int = 0) -> None:
        if len(chaining) != 32 or length % BLOCK:
            raise ValueError("a chaining value is 32 bytes, after whole 64-byte blocks")
        self._state = _STATE.unpack(chaining)
        self._length = length
        self._pending = b""

    def update(self, data: bytes | memoryview) -> None:
        pending = self._pending + bytes(data)
        whole = len(pending) - len(pending) % BLOCK
        state = self._state
        for at in range(0, whole, BLOCK):
            state = _compress(state, pending[at : at + BLOCK])
        self._state = state
        self._length += len(data)
        self._pending = pending[whole:]

    def copy(self) -> Sha256From:
        other = Sha256From.__new__(Sha256From)
        other._state, other._length, other._pending = self._state, self._length, self._pending
        return other

    def digest(self) -> bytes:
        tail = self._pending + b"\x80"
        tail += bytes(-(len(tail) + 8) % BLOCK) + (self._length * 8).to_bytes(8, "big")
        state = self._state
        for at in range(0, len(tail), BLOCK):
            state = _compress(state, tail[at : at + BLOCK])
        return _STATE.pack(*state)

    def chaining(self) -> bytes:
        """The chaining value after the whole blocks taken so far."""
        if self._pending:
            raise ValueError("not at a block boundary")
        return _STATE.pack(*self._state)


def chaining_value(data: bytes) -> bytes:
    """The SHA-256 chaining value after `data` (whole 64-byte blocks): what a firmware
    descriptor publishes for an SEV or SEV-ES launch digest."""
    h = Sha256From()
    h.update(data)
    return h.chaining()
