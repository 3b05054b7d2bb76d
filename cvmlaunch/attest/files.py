"""Reading evidence and certificate files: small by nature, so read whole but bounded."""

from __future__ import annotations

from pathlib import Path

from cvmlaunch.errors import AttestationError

# Real reports are 1184 bytes, quotes about 5 KiB, certificates under 2 KiB.
MAX_EVIDENCE_FILE = 1 << 20


def read_bounded(path: Path, what: str, limit: int = MAX_EVIDENCE_FILE) -> bytes:
    """The bytes of `path`, refusing anything larger than `limit` (a wrong file, not data)."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise AttestationError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if len(data) > limit:
        raise AttestationError(f"{path}: larger than {limit} bytes; not {what}")
    return data
