"""An fd a kvm object owns: the ioctl on it, its mappings and its child fds.

Every ioctl goes through the injected `Kernel`; a signal is retried, and any other failure
becomes a `KvmError` naming the ioctl, the errno and the values that were sent. `close`
releases children, then mappings, then the fd itself, exactly once and on every path.
`Kvm`, `Vm`, `Vcpu` and `GuestMemfd` (objects.py) and the vendor command sets (sev.py,
tdx.py) are all `OwnedFd`s.
"""

from __future__ import annotations

import errno
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Self

from cvmlaunch.abi.kvm import IOCTLS, ffi
from cvmlaunch.errors import KvmError
from cvmlaunch.kvm.sys import Kernel, Mapping, address

# A signal arriving mid-ioctl is not a failure: the kernel did nothing (or recorded its
# progress in the in/out struct), so the same call is made again. Bounded so a signal storm
# still ends.
_EINTR_RETRIES = 1000


def struct_fields(data: Any) -> dict[str, int]:
    """The integer fields of a cffi struct (for error messages and records)."""
    if not isinstance(data, ffi.CData):
        return {}
    ctype = ffi.typeof(data)
    if ctype.kind == "pointer":
        ctype = ctype.item
    if ctype.kind != "struct":
        return {}
    fields = {}
    for name, field in ctype.fields:
        if not name.startswith("pad") and field.type.kind == "primitive":
            fields[name] = int(getattr(data, name))
    return fields


def new_struct(ctype: str, call: str, **fields: Any) -> Any:
    """A zeroed `struct ctype` with `fields` set, to be handed to `call`.

    A value the struct cannot hold (negative, too wide, too long) is EINVAL for `call`,
    raised before anything reaches the kernel.
    """
    try:
        return ffi.new(f"struct {ctype} *", fields)
    except (OverflowError, TypeError, IndexError):
        ints = {k: v for k, v in fields.items() if isinstance(v, int)}
        raise KvmError(call, errno.EINVAL, ints) from None


def open_file(kernel: Kernel, path: str) -> int:
    """open(path, O_RDWR) through `kernel`, retried on EINTR."""
    for _ in range(_EINTR_RETRIES):
        try:
            return kernel.open(path)
        except OSError as e:
            if e.errno != errno.EINTR:
                raise KvmError(f"open {path}", e.errno or 0) from None
    raise KvmError(f"open {path}", errno.EINTR)


class OwnedFd:
    """An fd owned by this object, closed exactly once."""

    def __init__(self, kernel: Kernel, fd: int) -> None:
        self.kernel = kernel
        self.fd = fd
        self._children: list[OwnedFd] = []
        self._mappings: list[Mapping] = []
        self.closed = False

    def ioctl(
        self, name: str, arg: Any = None, immediate: int = 0, call: str | None = None
    ) -> int:
        """Issue ioctl `name` with a struct pointer `arg` (or an immediate argument)."""
        value = address(arg) if arg is not None else immediate
        for _ in range(_EINTR_RETRIES):
            try:
                return self.kernel.ioctl(self.fd, IOCTLS[name].number, value)
            except OSError as e:
                if e.errno != errno.EINTR:
                    raise KvmError(call or name, e.errno or 0, struct_fields(arg)) from None
        raise KvmError(call or name, errno.EINTR, struct_fields(arg))

    def map(self, length: int, offset: int = 0) -> Mapping:
        try:
            mapping = self.kernel.mmap(self.fd, length, offset)
        except OSError as e:
            raise KvmError("mmap", e.errno or 0, {"length": length, "offset": offset}) from None
        self._mappings.append(mapping)
        return mapping

    def adopt(self, child: OwnedFd) -> None:
        self._children.append(child)

    def close(self) -> None:
        """Close children, then mappings, then this fd; every step runs even if one fails."""
        if self.closed:
            return
        self.closed = True
        with ExitStack() as stack:
            stack.callback(self.kernel.close, self.fd)
            for mapping in self._mappings:
                stack.callback(mapping.close)
            for child in self._children:
                stack.callback(child.close)
            self._release()

    def _release(self) -> None:
        """Drop what keeps mappings exported before they are unmapped."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Device(OwnedFd):
    """Another device node a launch needs (/dev/sev), closed together with its owner."""

    def __init__(self, owner: OwnedFd, path: str) -> None:
        super().__init__(owner.kernel, open_file(owner.kernel, path))
        owner.adopt(self)


def encrypt_op(owner: OwnedFd, command: Any, data: Any, call: str) -> None:
    """KVM_MEMORY_ENCRYPT_OP; a failure carries the command's and its data's fields."""
    try:
        owner.ioctl("KVM_MEMORY_ENCRYPT_OP", command, call=call)
    except KvmError as e:
        code = getattr(command, "error", 0)
        status = None
        if e.errno == errno.EIO and code:  # the firmware refused: name its status
            from cvmlaunch.abi.kvm import sev_status_name

            status = sev_status_name(code)
        fields = struct_fields(command) | struct_fields(data)
        raise KvmError(call, e.errno, fields, status=status) from None
