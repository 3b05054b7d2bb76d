"""The kernel boundary's one call outside KVM: renameat2's exchange, on real paths."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from cvmlaunch.kvm.sys import rename_exchange


def test_two_paths_swap_in_one_step(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "in-a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")  # a folder and a file swap as well
    rename_exchange(bytes(tmp_path / "a"), bytes(tmp_path / "b"))
    assert (tmp_path / "a").read_bytes() == b"b"
    assert (tmp_path / "b" / "in-a").read_bytes() == b"a"


def test_a_missing_path_is_the_kernels_error_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    with pytest.raises(OSError) as caught:
        rename_exchange(bytes(tmp_path / "a"), bytes(tmp_path / "missing"))
    assert caught.value.errno == errno.ENOENT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
