"""Reading evidence and certificate files: small by nature, so read whole but bounded."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cvmlaunch.errors import AttestationError, InputError
from cvmlaunch.inputs import read_input

# Real reports are 1184 bytes, quotes about 5 KiB, certificates under 2 KiB.
MAX_EVIDENCE_FILE = 1 << 20


def read_bounded(
    path: Path, what: str, *, flag: str = "", limit: int = MAX_EVIDENCE_FILE
) -> bytes:
    """The bytes of the regular file `path`, refusing anything larger than `limit` (a wrong
    file, not data) or not a regular file, before reading it. `flag` names the option that
    gave the path (`--report`); errors say "FLAG PATH: reason"."""
    try:
        return read_input(path, limit=limit, what=what, name=flag)
    except InputError as e:
        raise AttestationError(str(e)) from None


def folder_files(
    folder: Path,
    flag: str,
    *,
    most: int,
    skipped: Callable[[Path, str], None],
    excluded: Callable[[str], str | None] = lambda name: None,
) -> list[Path]:
    """The regular files of `folder` (`flag` gave it), by name, at most `most` of them.
    Hidden files, names `excluded` gives a reason for, and what is not a regular file (a
    symbolic link is followed: to a device, it is skipped) are passed to `skipped` with
    the reason; each file is still checked by kind and size as it is read."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as e:
        raise AttestationError(f"{flag} {folder}: {e.strerror or e}") from None
    files: list[Path] = []
    for entry in entries:
        path = Path(entry.path)
        reason = "a hidden file" if entry.name.startswith(".") else excluded(entry.name)
        if reason is None:
            try:
                regular = entry.is_file()
            except OSError:
                regular = False
            reason = None if regular else "not a regular file"
        if reason is not None:
            skipped(path, reason)
            continue
        files.append(path)
    if len(files) > most:
        raise AttestationError(f"{flag} {folder}: more than {most} files")
    return files
