"""The user-memory boundary of the emulated kernel: copy_from_user and copy_to_user.

Ioctl arguments that point to structs, and the buffers the populate commands read, arrive as
integer addresses in this process, exactly as the syscall receives them (kvm-abi.md §1). The
emulator reads and writes the caller's memory at those addresses, as the kernel would.
"""

from __future__ import annotations

import errno
import os
from typing import Any, NoReturn

from cvmlaunch.abi.kvm import PAGE_SIZE, ffi


def fail(code: int) -> NoReturn:
    """End the current call the way the syscall does: -1 with errno `code`."""
    raise OSError(code, os.strerror(code))


def _check(addr: int) -> None:
    # The null page is never mapped, so the kernel's access would fault there. Any other
    # address is trusted: a wild pointer crashes this process instead of giving EFAULT.
    if addr < PAGE_SIZE:
        fail(errno.EFAULT)


def user_struct(name: str, addr: int) -> Any:
    """The caller's `struct name` at `addr`, read and written in place."""
    _check(addr)
    return ffi.cast(f"struct {name} *", addr)


def read_struct(name: str, addr: int) -> Any:
    """A private copy of the caller's `struct name` (copy_from_user of the whole struct)."""
    copy = ffi.new(f"struct {name} *")
    ffi.memmove(copy, user_struct(name, addr), ffi.sizeof(copy[0]))
    return copy


def write_struct(addr: int, data: Any) -> None:
    """Copy a struct taken with `read_struct` back to the caller (copy_to_user)."""
    _check(addr)
    ffi.memmove(ffi.cast("uint8_t *", addr), data, ffi.sizeof(data[0]))


def copy_from_user(addr: int, length: int) -> bytes:
    _check(addr)
    return bytes(ffi.buffer(ffi.cast("uint8_t *", addr), length))


def copy_to_user(addr: int, data: bytes) -> None:
    _check(addr)
    ffi.memmove(ffi.cast("uint8_t *", addr), data, len(data))


def buffer_address(buffer: Any) -> int:
    """Where a writable Python buffer (an mmap) lives in this process."""
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buffer)))
