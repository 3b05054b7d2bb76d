"""Writing output files safely: a file is written whole, in one rename, and only where that
replaces nothing but an earlier output.

The target must be absent or a regular file that is none of the command's inputs; a device,
a FIFO, a socket or a directory is refused, as is the profile or firmware being read. A
symlink is followed and its target written (the link stays). A new file gets the mode the
umask allows; a replaced file keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cvmlaunch.errors import OutputError
from cvmlaunch.inputs import kind_name


def _identity(path: Path | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_output(
    path: Path | str, *, name: str, inputs: Iterable[Path | str] = ()
) -> tuple[Path, int | None]:
    """Where an output to `path` would go and the mode to keep (None: a new file), or
    OutputError if it may not be written there: run it before the work, so that a bad
    output path costs nothing."""
    where = f"{name} {path}"
    if "\0" in str(path):
        raise OutputError(where, "a path cannot contain a NUL character")
    try:
        target = Path(os.path.realpath(path))
        if not stat.S_ISDIR(os.stat(target.parent).st_mode):
            raise OutputError(where, f"{target.parent} is not a directory")
    except FileNotFoundError:
        raise OutputError(where, f"no directory {target.parent}") from None
    except OSError as e:  # a name too long, a loop of links, no permission
        raise OutputError(where, e.strerror or str(e)) from None
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    except OSError as e:
        raise OutputError(where, e.strerror or str(e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(where, f"{kind_name(st.st_mode)}; expected a regular file to write")
    if (st.st_dev, st.st_ino) in {_identity(p) for p in inputs}:
        raise OutputError(where, "is one of this command's inputs; not replaced")
    return target, stat.S_IMODE(st.st_mode)


def write_output(
    path: Path | str, data: bytes, *, name: str, inputs: Iterable[Path | str] = ()
) -> None:
    """Write `data` to `path` atomically (readers see the old file or the whole new one),
    once `check_output` allows it.

    `name` is the flag that gave the path; `inputs` the files the command read, which an
    output never replaces.
    """
    where = f"{name} {path}"
    target, mode = check_output(path, name=name, inputs=inputs)
    temp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        # 0o666 less the umask for a new file, as any program creating one would.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as e:
        reason = f"cannot create a file in {target.parent}: {e.strerror or e}"
        raise OutputError(where, reason) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except OSError as e:
        _remove(temp)
        raise OutputError(where, e.strerror or str(e)) from None
    except BaseException:
        _remove(temp)
        raise


def _remove(temp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temp)
