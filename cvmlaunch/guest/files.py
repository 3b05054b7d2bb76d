"""The guest's input files, each read as its role allows (`cvmlaunch.inputs`): firmware
images whole (they are small), kernels and initrds streamed, a TIK of 16 or 32 bytes.

Every failure is an `InputError` naming the profile key and the path; no file descriptor
outlives a call.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cvmlaunch.errors import InputError
from cvmlaunch.inputs import read_input, stream_input

# A firmware image is mapped below 4 GiB; anything near that size is not a firmware image.
MAX_FIRMWARE_SIZE = 256 << 20
# QEMU loads a direct-boot kernel and initrd into guest RAM below 4 GiB.
MAX_KERNEL_SIZE = 1 << 30
MAX_INITRD_SIZE = (4 << 30) - 1
MAX_PROFILE_SIZE = 1 << 20
# A TIK (16 bytes) or a TEK followed by a TIK (32 bytes).
MAX_TIK_SIZE = 32

# What each streamed file is, and its cap, by the profile key that names it.
_STREAMED = {
    "boot.kernel": ("a kernel image", MAX_KERNEL_SIZE),
    "boot.initrd": ("an initrd", MAX_INITRD_SIZE),
}


def read_firmware(path: Path, name: str = "firmware.path") -> bytes:
    """The whole firmware image (`name`: the key or argument that gave its path)."""
    return read_input(path, limit=MAX_FIRMWARE_SIZE, what="a firmware image", name=name)


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


def sha256_file(path: Path, key: str) -> bytes:
    """SHA-256 of the file `key` names (boot.kernel, boot.initrd), streamed: memory
    does not grow with its size."""
    return file_digest(path, key, "sha256")[0]


def file_digest(path: Path, key: str, algorithm: str) -> tuple[bytes, int]:
    """The `algorithm` digest of the file `key` names, streamed, and the file's size."""
    what, limit = _STREAMED[key]
    h = hashlib.new(algorithm)
    size = stream_input(path, h.update, limit=limit, what=what, name=key)
    return h.digest(), size


def read_tik(path: Path) -> bytes:
    """The 16-byte SEV transport integrity key: a 16-byte TIK file, or 32-byte TEK || TIK."""
    what = "a 16-byte TIK or 32-byte TEK||TIK"
    data = read_input(path, limit=MAX_TIK_SIZE, what=what, name="sev.tik")
    if len(data) == 32:
        return data[16:]
    if len(data) != 16:
        raise InputError(f"sev.tik {path}", f"{len(data)} bytes; expected {what}")
    return data
