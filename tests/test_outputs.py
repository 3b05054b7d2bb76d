"""Safe output writes: only a new file or an earlier output is ever replaced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cvmlaunch.errors import OutputError
from cvmlaunch.outputs import check_output, write_output


def test_writes_a_new_file_with_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_output(tmp_path / "r.json", b"{}", name="--record")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").read_bytes() == b"{}"
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["r.json"]  # no temporary file left


def test_replaces_an_earlier_output_keeping_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_bytes(b"old")
    out.chmod(0o604)
    write_output(out, b"new", name="--record")
    assert out.read_bytes() == b"new"
    assert stat.S_IMODE(out.stat().st_mode) == 0o604


def test_follows_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    target = tmp_path / "target.json"
    target.write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_output(link, b"new", name="--record")
    assert link.is_symlink() and target.read_bytes() == b"new"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "made")
    write_output(dangling, b"x", name="--record")
    assert (tmp_path / "made").read_bytes() == b"x" and dangling.is_symlink()


def test_refuses_what_is_not_an_output(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    profile = tmp_path / "guest.toml"
    profile.write_bytes(b"profile")
    link = tmp_path / "link"
    link.symlink_to(profile)
    cases: list[tuple[Path | str, str]] = [
        ("/dev/null", "a character device; expected a regular file to write"),
        (fifo, "a FIFO; expected a regular file to write"),
        (tmp_path, "a directory; expected a regular file to write"),
        (profile, "is one of this command's inputs; not replaced"),
        (link, "is one of this command's inputs; not replaced"),
        (tmp_path / "no" / "such", "no directory"),
        ("a\0b", "a path cannot contain a NUL character"),
    ]
    for path, reason in cases:
        with pytest.raises(OutputError, match=f"^--record {path}: {reason}"):
            write_output(path, b"x", name="--record", inputs=[profile])
    assert profile.read_bytes() == b"profile" and link.is_symlink()
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(os.listdir(tmp_path)) == ["fifo", "guest.toml", "link"]


def test_check_output_reports_where_it_would_write(tmp_path: Path) -> None:
    assert check_output(tmp_path / "new", name="--x") == (tmp_path / "new", None)


def test_an_unwritable_folder_is_one_error() -> None:
    # /proc takes no new files, even from root.
    with pytest.raises(OutputError, match=r"^--record /proc/r: cannot create a file in /proc"):
        write_output("/proc/r", b"x", name="--record")


def test_paths_the_os_refuses_are_one_error(tmp_path: Path) -> None:
    long = tmp_path / ("x" * 300) / "r.json"
    with pytest.raises(OutputError, match=r"^--record .*: File name too long$"):
        write_output(long, b"x", name="--record")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    with pytest.raises(OutputError, match=r"plain is not a directory$"):
        write_output(plain / "r.json", b"x", name="--record")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OutputError, match=r"^--record "):
        write_output(loop / "r.json", b"x", name="--record")
    assert sorted(os.listdir(tmp_path)) == ["loop", "plain"]
