"""SHA-256 resumed from a chaining value (measure/sha256.py) against hashlib: every split of
generated data at a block boundary, and updates of every size after it."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmlaunch.measure.sha256 import BLOCK, Sha256From, chaining_value


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 8), st.lists(st.integers(0, 200), max_size=6))
def test_resumed_hashing_equals_hashlib(data: bytes, blocks: int, cuts: list[int]) -> None:
    head, tail = data[: blocks * BLOCK], data[blocks * BLOCK :]
    if len(head) % BLOCK:
        head, tail = b"", data
    h = Sha256From(chaining_value(head), len(head))
    at = 0
    for cut in cuts:  # the rest in pieces of any size
        h.update(tail[at : at + cut])
        at += cut
    copy = h.copy()
    h.update(tail[at:])
    assert h.digest() == hashlib.sha256(data).digest()
    copy.update(b"!")
    assert copy.digest() == hashlib.sha256(head + tail[: min(at, len(tail))] + b"!").digest()


def test_a_chaining_value_is_taken_only_at_a_block_boundary() -> None:
    with pytest.raises(ValueError, match="64-byte blocks"):
        Sha256From(bytes(32), 10)
    with pytest.raises(ValueError, match="block boundary"):
        chaining_value(b"x")
