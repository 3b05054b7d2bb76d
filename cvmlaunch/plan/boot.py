"""Measured direct boot: the SHA-256 digests QEMU puts in the firmware's kernel hashes table."""

from __future__ import annotations

import hashlib

from cvmlaunch.abi import kernel_hashes
from cvmlaunch.guest.files import sha256_file
from cvmlaunch.guest.spec import BootFile, DirectBoot
from cvmlaunch.plan.ops import KernelHashes

_EMPTY_SHA256 = hashlib.sha256(b"").digest()


def _digest(item: BootFile | None, key: str) -> bytes:
    if item is not None and item.path is not None:
        return sha256_file(item.path, key)
    if item is not None and item.sha256 is not None:
        return item.sha256
    return _EMPTY_SHA256


def compute_kernel_hashes(boot: DirectBoot) -> KernelHashes:
    """Hash kernel and initrd (streamed) and the command line with its terminating NUL.

    A missing initrd hashes as empty input, as QEMU does.
    """
    kernel = _digest(boot.kernel, "boot.kernel")
    initrd = _digest(boot.initrd, "boot.initrd")
    cmdline = hashlib.sha256(boot.cmdline.encode() + b"\0").digest()
    return KernelHashes(kernel, initrd, cmdline, kernel_hashes.pack_table(cmdline, initrd, kernel))
