"""Kernel and initrd are hashed by streaming: memory does not grow with their size."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

from cvmlaunch.guest.files import sha256_file
from cvmlaunch.guest.spec import BootFile, DirectBoot
from cvmlaunch.plan.boot import compute_kernel_hashes


def _peak_while_hashing(path: Path) -> int:
    tracemalloc.start()
    try:
        compute_kernel_hashes(DirectBoot(BootFile(path), BootFile(path), "x"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_independent_of_size(tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"\x5a" * 4096)
    with big.open("wb") as f:  # sparse: 512 MiB of zeros without using the disk
        f.truncate(512 << 20)
    small_peak, big_peak = _peak_while_hashing(small), _peak_while_hashing(big)
    assert big_peak < small_peak + (1 << 20), (small_peak, big_peak)
    assert big_peak < 4 << 20


def test_streamed_digest_is_the_file_digest(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000 + b"tail"
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path, "boot.initrd") == hashlib.sha256(data).digest()
