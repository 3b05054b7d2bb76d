"""The kernel boundary: the few syscalls the kvm layer makes, as one injectable object, and
the one call outside KVM that the os module lacks (renameat2's exchange, for output folders).

Everything above this (struct packing, partial-progress loops, ordering, cleanup) is shared
by every backend: `LinuxKernel` answers from the running kernel, `cvmlaunch.sim.SimKernel`
from the emulated one. Arguments that point to structs are passed as integer addresses, as
the ioctl syscall itself takes them, so an emulator reads exactly the bytes a kernel would.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Protocol

from cvmlaunch.abi.kvm import ffi


class Mapping(Protocol):
    """A shared mapping of an fd: its bytes, their address, and how to unmap them."""

    @property
    def view(self) -> memoryview: ...

    @property
    def address(self) -> int: ...

    def close(self) -> None: ...


class Kernel(Protocol):
    """open/ioctl/mmap/close as the kvm layer needs them; failures raise OSError(errno)."""

    def open(self, path: str) -> int: ...

    def ioctl(self, fd: int, request: int, arg: int = 0) -> int: ...

    def mmap(self, fd: int, length: int, offset: int = 0) -> Mapping: ...

    def close(self, fd: int) -> None: ...


def address(buffer: Any) -> int:
    """The address of a cffi cdata pointer or of a writable/readable Python buffer."""
    if not isinstance(buffer, ffi.CData):
        buffer = ffi.from_buffer(buffer)
    return int(ffi.cast("uintptr_t", buffer))


class FileMapping:
    """A MAP_SHARED mapping of a real fd."""

    def __init__(self, fd: int, length: int, offset: int) -> None:
        self._map = mmap.mmap(
            fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset
        )
        self.view = memoryview(self._map)
        self.address = address(self._map)

    def close(self) -> None:
        self.view.release()
        self._map.close()


AT_FDCWD = -100  # fcntl.h: a path relative to the working directory
RENAME_EXCHANGE = 2  # fs.h: renameat2 swaps the two paths (Linux 3.15)


def rename_exchange(new: bytes, old: bytes) -> None:
    """Swap the paths `new` and `old` in one step (renameat2, RENAME_EXCHANGE): the one
    call outside KVM that the os module lacks. OSError(errno) when it fails."""
    libc: Any = ffi.dlopen(None)
    if libc.renameat2(AT_FDCWD, new, AT_FDCWD, old, RENAME_EXCHANGE) != 0:
        code = ffi.errno
        raise OSError(code, os.strerror(code))


class LinuxKernel:
    """The running kernel, through libc's ioctl (cffi, ABI mode: no compiler needed)."""

    def __init__(self) -> None:
        self._libc: Any = ffi.dlopen(None)

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: int = 0) -> int:
        result: int = self._libc.ioctl(fd, request, ffi.cast("unsigned long", arg))
        if result < 0:
            code = ffi.errno
            raise OSError(code, os.strerror(code))
        return result

    def mmap(self, fd: int, length: int, offset: int = 0) -> Mapping:
        return FileMapping(fd, length, offset)

    def close(self, fd: int) -> None:
        os.close(fd)
