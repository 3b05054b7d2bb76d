"""Reading evidence and certificate files: small by nature, so read whole but bounded."""

from __future__ import annotations

from pathlib import Path

from cvmlaunch.errors import AttestationError, InputError
from cvmlaunch.inputs import read_input

# Real reports are 1184 bytes, quotes about 5 KiB, certificates under 2 KiB.
MAX_EVIDENCE_FILE = 1 << 20


def read_bounded(path: Path, what: str, limit: int = MAX_EVIDENCE_FILE) -> bytes:
    """The bytes of the regular file `path`, refusing anything larger than `limit` (a wrong
    file, not data) or not a regular file."""
    try:
        return read_input(path, limit=limit, what=what)
    except InputError as e:
        raise AttestationError(f"{path}: {e.reason}") from None
