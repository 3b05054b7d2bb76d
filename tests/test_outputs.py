"""Safe output writes: only a new file or an earlier output is ever replaced."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from cvmlaunch import outputs
from cvmlaunch.errors import OutputError
from cvmlaunch.outputs import FOLDER_INDEX, check_output, write_output, write_output_folder


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


# ---- folders ---------------------------------------------------------------------------------

DOCS = {"1-a.json": b"a", "2-b.json": b"b"}


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_new_folder_holds_the_documents_and_their_index(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_output_folder(tmp_path / "out", DOCS, {"cvmlaunch": "t", "n": 2}, name="--dir")
    finally:
        os.umask(old)
    out = tmp_path / "out"
    files = listing(out)
    assert {k: v for k, v in files.items() if k != FOLDER_INDEX} == DOCS
    assert json.loads(files[FOLDER_INDEX]) == {"cvmlaunch": "t", "n": 2, "files": sorted(DOCS)}
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "1-a.json").stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["out"]  # no temporary folder left


def test_an_earlier_folder_is_replaced_whole_keeping_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_output_folder(out, {**DOCS, "3-c.json": b"c"}, {"cvmlaunch": "t"}, name="--dir")
    out.chmod(0o705)
    link = tmp_path / "link"
    link.symlink_to(out)
    write_output_folder(link, {"9-z.json": b"z"}, {"cvmlaunch": "t"}, name="--dir")
    assert sorted(listing(out)) == ["9-z.json", FOLDER_INDEX]  # the old documents are gone
    assert stat.S_IMODE(out.stat().st_mode) == 0o705 and link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["link", "out"]
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    write_output_folder(empty, DOCS, {"cvmlaunch": "t"}, name="--dir")
    assert sorted(listing(empty)) == [*sorted(DOCS), FOLDER_INDEX]
    assert stat.S_IMODE(empty.stat().st_mode) == 0o700


def test_refuses_a_folder_that_is_not_an_earlier_output(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    write_output_folder(mine, DOCS, {"cvmlaunch": "t"}, name="--dir")
    (mine / "notes.txt").write_bytes(b"the user's")  # added since: not ours to remove
    unindexed = tmp_path / "unindexed"
    unindexed.mkdir()
    (unindexed / FOLDER_INDEX).write_bytes(b'{"files": []}')  # no cvmlaunch mark
    nested = tmp_path / "nested"
    write_output_folder(nested, DOCS, {"cvmlaunch": "t"}, name="--dir")
    (nested / "1-a.json").unlink()
    (nested / "1-a.json").mkdir()  # a listed name that is now a folder
    profile = tmp_path / "holds" / "guest.toml"
    profile.parent.mkdir()
    profile.write_bytes(b"profile")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases: list[tuple[Path | str, str]] = [
        (mine, "holds notes.txt, which no earlier output wrote; give a new or empty folder"),
        (unindexed, f"holds {FOLDER_INDEX}, which no earlier output wrote"),
        (nested, "holds 1-a.json, which no earlier output wrote"),
        (profile.parent, f"holds {profile}, one of this command's inputs"),
        (fifo, "a FIFO; expected a directory to write"),
        (profile, "a regular file; expected a directory to write"),
        ("/", "is the root directory; not replaced"),
        (tmp_path / "no" / "such", "no directory"),
    ]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    for path, reason in cases:
        with pytest.raises(OutputError, match=f"^--dir {path}: {reason}"):
            write_output_folder(path, DOCS, {"cvmlaunch": "t"}, name="--dir", inputs=[profile])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    for bad in ("", "..", FOLDER_INDEX, "a/b", "a\0b"):
        with pytest.raises(OutputError, match="cannot be a file name in it"):
            write_output_folder(tmp_path / "new", {bad: b"x"}, {"cvmlaunch": "t"}, name="--dir")
    assert not (tmp_path / "new").exists()


def test_a_failed_write_leaves_the_earlier_folder_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    write_output_folder(out, DOCS, {"cvmlaunch": "t"}, name="--dir")
    before = listing(out)
    written: list[Path] = []
    real = outputs._write_new

    def full_disk(path: Path, data: bytes) -> None:
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(path)
        real(path, data)

    monkeypatch.setattr(outputs, "_write_new", full_disk)
    with pytest.raises(OutputError, match=f"^--dir {out}: No space left on device$"):
        write_output_folder(out, {"x.json": b"x", "y.json": b"y"}, {"cvmlaunch": "t"},
                            name="--dir")  # fmt: skip
    assert listing(out) == before
    assert os.listdir(tmp_path) == ["out"]


def test_a_file_system_that_cannot_swap_folders_leaves_the_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cvmlaunch.kvm import sys as kernel

    out = tmp_path / "out"
    write_output_folder(out, DOCS, {"cvmlaunch": "t"}, name="--dir")
    before = listing(out)

    def cannot(new: bytes, old: bytes) -> None:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(kernel, "rename_exchange", cannot)
    reason = "its file system cannot swap folders in one step; remove it first"
    with pytest.raises(OutputError, match=f"^--dir {out}: {reason}$"):
        write_output_folder(out, {"x.json": b"x"}, {"cvmlaunch": "t"}, name="--dir")
    assert listing(out) == before
    assert os.listdir(tmp_path) == ["out"]
