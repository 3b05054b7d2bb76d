"""Bounded input reads: kind and size are checked before a byte is read."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from cvmlaunch.errors import InputError
from cvmlaunch.inputs import OpenInput, kind_name, read_input, size_text, stream_input


def test_reads_a_regular_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 5000)
    assert read_input(path, limit=5000, what="a thing") == b"x" * 5000
    path.write_bytes(b"")
    assert read_input(path, limit=1, what="a thing") == b""


def test_a_file_over_its_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with path.open("wb") as f:
        f.truncate(4 << 30)  # sparse: reading it would take seconds
    with pytest.raises(InputError, match=r"^--x .*big: larger than 1 MiB; not a profile$"):
        read_input(path, limit=1 << 20, what="a profile", name="--x")


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/dev/zero", "a character device"), ("/", "a directory"), ("/dev/null", "a character")],
)
def test_devices_and_directories_are_refused(path: str, kind: str) -> None:
    with pytest.raises(InputError, match=f"^key {path}: {kind}.*expected a regular file"):
        read_input(path, limit=100, what="a thing", name="key")


def test_a_fifo_without_a_writer_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="a FIFO; expected a regular file"):
        read_input(fifo, limit=100, what="a profile")


def test_a_socket_is_refused(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s"))
    try:
        with pytest.raises(InputError, match="a socket; expected"):
            read_input(tmp_path / "s", limit=100, what="x")
    finally:
        sock.close()


def test_nul_and_missing_paths_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^k a\x00b: a path cannot contain a NUL"):
        read_input("a\0b", limit=1, what="x", name="k")
    with pytest.raises(InputError, match="No such file or directory"):
        read_input(tmp_path / "absent", limit=1, what="x", name="k")


def test_stream_hashes_regular_files_pipes_and_dev_null(tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    path = tmp_path / "kernel"
    path.write_bytes(data)
    h = hashlib.sha256()
    assert stream_input(path, h.update, limit=len(data), what="k", name="n") == len(data)
    assert h.digest() == hashlib.sha256(data).digest()
    h = hashlib.sha256()
    assert stream_input("/dev/null", h.update, limit=10, what="k", name="n") == 0
    assert h.digest() == hashlib.sha256(b"").digest()
    read, write = os.pipe()
    os.write(write, b"piped")
    os.close(write)
    h = hashlib.sha256()
    assert stream_input(f"/proc/self/fd/{read}", h.update, limit=5, what="k", name="n") == 5
    os.close(read)
    assert h.digest() == hashlib.sha256(b"piped").digest()


def test_stream_stops_at_its_limit(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.write(write, b"x" * 100)
    os.close(write)
    seen: list[int] = []
    with pytest.raises(InputError, match="larger than 99 bytes; not an initrd"):
        stream_input(
            f"/proc/self/fd/{read}", lambda b: seen.append(len(b)), limit=99, what="an initrd",
            name="boot.initrd",
        )  # fmt: skip
    os.close(read)
    assert seen == []  # nothing past the limit was handed on
    with pytest.raises(InputError, match="a character device; expected a regular file or a pipe"):
        stream_input("/dev/zero", lambda b: None, limit=1 << 30, what="a kernel", name="k")


def test_no_descriptor_is_left_open(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with pytest.raises(InputError):
            read_input(path, limit=4, what="x")
        read_input(path, limit=5, what="x")
        with pytest.raises(InputError):
            stream_input(path, lambda b: None, limit=4, what="x", name="n")
        with (
            pytest.raises(InputError, match="larger than 4 bytes"),
            OpenInput(path, limit=4, what="x"),
        ):
            pass
        with pytest.raises(ZeroDivisionError), OpenInput(path, limit=5, what="x"):
            1 / 0  # noqa: B018
    assert len(os.listdir("/proc/self/fd")) == before


def test_open_input_opens_on_entering_and_closes_on_leaving(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    before = len(os.listdir("/proc/self/fd"))
    opening = OpenInput(path, limit=5, what="x")
    assert len(os.listdir("/proc/self/fd")) == before
    with opening as (fd, size):
        assert len(os.listdir("/proc/self/fd")) == before + 1 and size == 5
        assert os.pread(fd, 5, 0) == b"12345"
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(OSError):
        os.fstat(fd)
    with (
        pytest.raises(
            InputError, match=r"^k /dev/zero: a character device; expected a regular file \(x\)$"
        ),
        OpenInput("/dev/zero", limit=5, what="x", name="k"),
    ):
        pass


def test_words() -> None:
    assert [size_text(n) for n in (1 << 20, 64 << 10, 100, (4 << 30) - 1, 3 << 30)] == [
        "1 MiB", "64 KiB", "100 bytes", "4294967295 bytes", "3 GiB",
    ]  # fmt: skip
    assert kind_name(os.stat("/").st_mode) == "a directory"


def test_a_named_fifo_streams_from_its_writer_and_never_waits_for_none(tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "kernel"
    os.mkfifo(fifo)
    # Nobody writes: refused at once, not measured as an empty file and not waited for.
    with pytest.raises(InputError, match="a pipe with no writer, or an empty one"):
        stream_input(fifo, lambda b: None, limit=1 << 20, what="a kernel image", name="k")
    # A writer that is there: its bytes are streamed, however slowly they come.
    data = os.urandom(3 << 20)
    writer_ready = threading.Event()

    def write() -> None:
        with fifo.open("wb") as f:
            writer_ready.set()
            f.write(data)

    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open return
    thread = threading.Thread(target=write)
    thread.start()
    writer_ready.wait()
    h = hashlib.sha256()
    assert stream_input(fifo, h.update, limit=len(data), what="k", name="n") == len(data)
    thread.join()
    os.close(fd)
    assert h.digest() == hashlib.sha256(data).digest()
