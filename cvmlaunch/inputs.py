"""Reading input files, bounded: every input opens once, is checked for its kind and size
before a byte is read, and is read with a cap, so that a wrong path (a device, a FIFO nobody
writes, a huge file) is one `InputError` naming it, in bounded time and memory.

Whole reads take regular files only. Streamed reads (a kernel or initrd being hashed) also
take a pipe or process substitution, read until its end or the cap, and /dev/null. Nothing
here opens another device: `/dev/zero` is refused by its kind, before it is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cvmlaunch.errors import InputError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable

_CHUNK = 1 << 20
_NULL_DEVICE = os.makedev(1, 3)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def size_text(size: int) -> str:
    """A byte count as people write limits: 1 MiB, 64 KiB, 100 bytes."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def kind_name(mode: int) -> str:
    """What a file of `mode` is, in words (for errors about the wrong kind of file)."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _where(name: str, path: Path | str) -> str:
    return f"{name} {path}" if name else str(path)


def _streamable(st: os.stat_result) -> bool:
    """A pipe, or the null device: the empty file of sev-snp-measure's vectors and of
    `--initrd /dev/null` habits."""
    return stat.S_ISFIFO(st.st_mode) or (stat.S_ISCHR(st.st_mode) and st.st_rdev == _NULL_DEVICE)


def _open(path: Path | str, name: str, what: str, *, stream: bool) -> tuple[int, os.stat_result]:
    """An fd on `path` and its stat, once its kind is one a `what` can be."""
    where = _where(name, path)
    try:
        before = os.stat(path)
    except ValueError:  # an embedded NUL
        raise InputError(where, "a path cannot contain a NUL character") from None
    except OSError as e:
        raise InputError(where, e.strerror or str(e)) from None
    allowed = stat.S_ISREG(before.st_mode) or (stream and _streamable(before))
    if not allowed:
        expected = "a regular file or a pipe" if stream else "a regular file"
        raise InputError(where, f"{kind_name(before.st_mode)}; expected {expected} ({what})")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise InputError(where, e.strerror or str(e)) from None
    try:
        st = os.fstat(fd)
        if (stat.S_IFMT(st.st_mode), st.st_rdev) != (stat.S_IFMT(before.st_mode), before.st_rdev):
            raise InputError(where, "changed while it was opened")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _too_large(name: str, path: Path | str, limit: int, what: str) -> InputError:
    return InputError(_where(name, path), f"larger than {size_text(limit)}; not {what}")


class OpenInput:
    """`with OpenInput(path, limit=…, what=…) as (fd, size)`: a descriptor on the regular
    file at `path` and its size (at most `limit`), to read at offsets (`os.pread`); opened on
    entering the block, closed on leaving it. (A class: contextlib costs start-up.)"""

    def __init__(self, path: Path | str, *, limit: int, what: str, name: str = "") -> None:
        self._where = (path, limit, what, name)
        self._fd = -1

    def __enter__(self) -> tuple[int, int]:
        path, limit, what, name = self._where
        fd, st = _open(path, name, what, stream=False)
        if st.st_size > limit:
            os.close(fd)
            raise _too_large(name, path, limit, what)
        self._fd = fd
        return fd, st.st_size

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)


def read_input(path: Path | str, *, limit: int, what: str, name: str = "") -> bytes:
    """The whole regular file at `path`, at most `limit` bytes.

    `what` says what the file should be ("a profile"), `name` the flag or key that gave the
    path; both appear in the error.
    """
    fd, st = _open(path, name, what, stream=False)
    try:
        if st.st_size > limit:
            raise _too_large(name, path, limit, what)
        chunks = []
        total = 0
        while True:  # the file may have grown since fstat: read to its end, capped
            chunk = os.read(fd, min(max(st.st_size - total, 0) + 1, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _too_large(name, path, limit, what)
    except OSError as e:
        raise InputError(_where(name, path), e.strerror or str(e)) from None
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def stream_input(
    path: Path | str, update: Callable[[memoryview], object], *, limit: int, what: str, name: str
) -> int:
    """Feed the file at `path` (a regular file or a pipe) to `update` chunk by chunk, at most
    `limit` bytes; its size. Memory stays at one chunk whatever the size."""
    fd, st = _open(path, name, what, stream=True)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    total = 0
    with os.fdopen(fd, "rb", buffering=0) as f:  # closes fd, whatever happens
        if st.st_size > limit:
            raise _too_large(name, path, limit, what)
        while True:
            try:
                n = f.readinto(buffer)
                if n is None:  # a pipe with a writer and nothing in it yet: wait for it
                    os.set_blocking(fd, True)
                    continue
            except OSError as e:
                raise InputError(_where(name, path), e.strerror or str(e)) from None
            if not n:
                if total == 0 and stat.S_ISFIFO(st.st_mode):
                    # Opened without waiting: an end before any byte means no writer (or
                    # one that wrote nothing), never a result to measure.
                    reason = f"a pipe with no writer, or an empty one; expected {what}"
                    raise InputError(_where(name, path), reason)
                return total
            total += n
            if total > limit:
                raise _too_large(name, path, limit, what)
            update(view[:n])
