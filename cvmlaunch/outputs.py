"""Writing output files safely: a file is written whole, in one rename, and only where that
replaces nothing but an earlier output.

The target must be absent or a regular file that is none of the command's inputs; a device,
a FIFO, a socket or a directory is refused, as is the profile or firmware being read. A
symlink is followed and its target written (the link stays). A new file gets the mode the
umask allows; a replaced file keeps its mode.

A folder of documents is written the same way: built beside its target and put in place in
one rename (an exchange where an earlier one is there). It replaces only an empty directory
or a folder an earlier write made, which its index file lists entry by entry.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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
        _fill(fd, data, mode)
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


# ---- folders of documents ------------------------------------------------------------------

# The file that names a folder's documents and marks the folder as one we wrote: a later
# write replaces such a folder whole, and nothing else.
FOLDER_INDEX = "index.json"
_MAX_INDEX_SIZE = 64 << 20


def write_output_folder(
    path: Path | str,
    documents: Mapping[str, bytes],
    index: Mapping[str, Any],
    *,
    name: str,
    inputs: Iterable[Path | str] = (),
) -> None:
    """Write `documents` (file name -> bytes) and FOLDER_INDEX (`index` with a "files" list
    added) as the folder `path`, in one step: readers see the old folder or the whole new
    one. `path` must be absent, an empty directory, or a folder an earlier call wrote
    (its index lists every file in it); `inputs` must not be in it."""
    where = f"{name} {path}"
    target, mode = check_output_folder(path, name=name, inputs=inputs)
    for file in documents:
        if file in ("", ".", "..", FOLDER_INDEX) or "/" in file or "\0" in file:
            raise OutputError(where, f"{file!r} cannot be a file name in it")
    body = {**index, "files": sorted(documents)}
    listing = (json.dumps(body, indent=1) + "\n").encode()
    temp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        os.mkdir(temp, 0o777 if mode is None else mode)
    except OSError as e:
        reason = f"cannot create a folder in {target.parent}: {e.strerror or e}"
        raise OutputError(where, reason) from None
    try:
        if mode is not None:
            os.chmod(temp, mode)  # the old folder's, whatever the umask
        for file, data in (*documents.items(), (FOLDER_INDEX, listing)):
            _write_new(temp / file, data)
        _fsync_folder(temp)
        if mode is None or not os.listdir(target):
            os.replace(temp, target)  # rename(2) replaces an empty directory
        else:
            _exchange(temp, target)
            _remove_ours(temp)
        _fsync_folder(target.parent)
    except OSError as e:
        _remove_ours(temp)
        raise OutputError(where, e.strerror or str(e)) from None
    except BaseException:
        _remove_ours(temp)
        raise


def check_output_folder(
    path: Path | str, *, name: str, inputs: Iterable[Path | str] = ()
) -> tuple[Path, int | None]:
    """Where a folder written to `path` would go and the mode to keep (None: a new one), or
    OutputError if it may not be written there; run it before the work."""
    where = f"{name} {path}"
    if "\0" in str(path):
        raise OutputError(where, "a path cannot contain a NUL character")
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        check_output(path, name=name, inputs=inputs)  # its parent: a directory
        return target, None
    except OSError as e:
        raise OutputError(where, e.strerror or str(e)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(where, f"{kind_name(st.st_mode)}; expected a directory to write")
    if target == target.parent:
        raise OutputError(where, "is the root directory; not replaced")
    for source in inputs:
        if Path(os.path.realpath(source)).is_relative_to(target):
            raise OutputError(where, f"holds {source}, one of this command's inputs")
    foreign = _not_ours(target)
    if foreign is not None:
        reason = f"holds {foreign}, which no earlier output wrote; give a new or empty folder"
        raise OutputError(where, reason)
    return target, stat.S_IMODE(st.st_mode)


def _not_ours(folder: Path) -> str | None:
    """The first entry of `folder` its FOLDER_INDEX does not list (None: all are listed,
    or the folder is empty)."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as e:
        raise OutputError(str(folder), e.strerror or str(e)) from None
    if not entries:
        return None
    listed: set[str] = set()
    index = folder / FOLDER_INDEX
    with contextlib.suppress(OSError, ValueError, RecursionError):
        st = os.lstat(index)
        if stat.S_ISREG(st.st_mode) and st.st_size <= _MAX_INDEX_SIZE:
            doc = json.loads(index.read_bytes())
            files = doc.get("files") if isinstance(doc, dict) else None
            if isinstance(files, list) and "cvmlaunch" in doc:
                listed = {FOLDER_INDEX, *(f for f in files if isinstance(f, str))}
    for entry in entries:
        kind = os.lstat(folder / entry).st_mode
        if entry not in listed or not stat.S_ISREG(kind):
            return entry
    return None


def _write_new(path: Path, data: bytes) -> None:
    _fill(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), data)


def _fill(fd: int, data: bytes, mode: int | None = None) -> None:
    """Write `data` to the new file `fd` (closed after), with `mode` if given, to disk."""
    with os.fdopen(fd, "wb") as f:
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(new: Path, old: Path) -> None:
    """Swap `new` and `old` in one step, never a moment without the folder."""
    from cvmlaunch.kvm.sys import rename_exchange

    try:
        rename_exchange(bytes(new), bytes(old))
    except OSError as e:
        if e.errno == errno.EINVAL:  # the file system cannot
            raise OSError(
                e.errno, "its file system cannot swap folders in one step; remove it first"
            ) from None
        raise


def _remove_ours(folder: Path) -> None:
    """Remove `folder`, which this module made or checked to hold only what it lists; a
    file that appeared in it since is left, and so is the folder."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            os.unlink(folder / entry)
        os.rmdir(folder)
