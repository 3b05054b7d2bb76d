"""Reading input files: firmware images whole (they are small), everything else streamed.

Every failure becomes an `InputError` naming the path; no file descriptor outlives a call.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cvmlaunch.errors import InputError

# A firmware image is mapped below 4 GiB; anything near that size is not a firmware image.
MAX_FIRMWARE_SIZE = 256 << 20


def read_firmware(path: Path) -> bytes:
    """The whole firmware image."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FIRMWARE_SIZE + 1)
    except OSError as e:
        raise InputError(str(path), e.strerror or str(e)) from None
    if len(data) > MAX_FIRMWARE_SIZE:
        raise InputError(str(path), f"larger than {MAX_FIRMWARE_SIZE >> 20} MiB; not a firmware")
    return data


def read_pinned_firmware(
    path: Path, pin: bytes | None, data: bytes | None = None
) -> tuple[bytes, bytes]:
    """The firmware image (read from `path` unless `data` is given) and its SHA-256, which
    must equal `pin` when one is given."""
    if data is None:
        data = read_firmware(path)
    digest = hashlib.sha256(data).digest()
    if pin is not None and digest != pin:
        raise InputError(str(path), f"sha256 is {digest.hex()}, but the profile pins {pin.hex()}")
    return data, digest


def sha256_file(path: Path) -> bytes:
    """SHA-256 of a file's bytes, read in fixed-size chunks (memory does not grow with size)."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").digest()
    except OSError as e:
        raise InputError(str(path), e.strerror or str(e)) from None


def read_tik(path: Path) -> bytes:
    """The 16-byte SEV transport integrity key: a 16-byte TIK file, or 32-byte TEK || TIK."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(str(path), e.strerror or str(e)) from None
    if len(data) == 32:
        return data[16:]
    if len(data) != 16:
        raise InputError(
            str(path), f"{len(data)} bytes; expected a 16-byte TIK or 32-byte TEK||TIK"
        )
    return data
