"""Reading evidence and certificate files: small by nature, so read whole but bounded."""

from __future__ import annotations

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
