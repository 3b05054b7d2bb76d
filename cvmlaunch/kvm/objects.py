"""`Kvm`, `Vm`, `Vcpu` and `GuestMemfd`: objects that own their fds and close them on any path.

Each object is a context manager; a parent closes its children first (a VM its vCPUs and
guest_memfds, /dev/kvm its VMs), so a failure anywhere in a launch leaves no fd open.
Every ioctl goes through the injected `Kernel`, and every failure becomes a `KvmError`
naming the ioctl, the errno and the values that were sent.
"""

from __future__ import annotations

import errno
from contextlib import ExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from cvmlaunch.abi.kvm import (
    IOCTLS,
    KVM_API_VERSION,
    MEMORY_ATTRIBUTE_PRIVATE,
    MSR_IA32_CR_PAT,
    Cap,
    MemFlag,
    SevCmd,
    TdxCmd,
    VmType,
    ffi,
)
from cvmlaunch.errors import KvmError
from cvmlaunch.kvm.sys import Kernel, LinuxKernel, Mapping, address

if TYPE_CHECKING:
    from cvmlaunch.kvm.caps import Capabilities

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


def _open(kernel: Kernel, path: str) -> int:
    for _ in range(_EINTR_RETRIES):
        try:
            return kernel.open(path)
        except OSError as e:
            if e.errno != errno.EINTR:
                raise KvmError(f"open {path}", e.errno or 0) from None
    raise KvmError(f"open {path}", errno.EINTR)


class _Fd:
    """An fd owned by this object, closed exactly once."""

    def __init__(self, kernel: Kernel, fd: int) -> None:
        self.kernel = kernel
        self.fd = fd
        self._children: list[_Fd] = []
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

    def adopt(self, child: _Fd) -> None:
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


class Kvm(_Fd):
    """/dev/kvm."""

    def __init__(self, kernel: Kernel | None = None, path: str = "/dev/kvm") -> None:
        kernel = kernel if kernel is not None else LinuxKernel()
        super().__init__(kernel, _open(kernel, path))
        try:
            version = self.ioctl("KVM_GET_API_VERSION")
            if version != KVM_API_VERSION:
                raise KvmError("KVM_GET_API_VERSION", errno.EPROTO, {"version": version})
        except BaseException:
            self.close()
            raise

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION at system scope."""
        return self.ioctl("KVM_CHECK_EXTENSION", immediate=cap)

    def create_vm(self, vm_type: VmType = VmType.DEFAULT) -> Vm:
        fd = self.ioctl("KVM_CREATE_VM", immediate=vm_type, call=f"KVM_CREATE_VM({vm_type.name})")
        vm = Vm(self, fd, vm_type)
        self.adopt(vm)
        return vm

    @property
    def vcpu_mmap_size(self) -> int:
        return self.ioctl("KVM_GET_VCPU_MMAP_SIZE")


class GuestMemfd(_Fd):
    """A guest_memfd file of one VM."""

    def __init__(self, vm: Vm, fd: int, size: int, flags: int) -> None:
        super().__init__(vm.kernel, fd)
        self.size = size
        self.flags = flags

    def mmap(self) -> Mapping:
        """The whole file, MAP_SHARED (needs GUEST_MEMFD_FLAG_MMAP)."""
        return self.map(self.size)


class Slot(NamedTuple):
    """One memslot as created: its GPA range and the host memory behind `userspace_addr`."""

    slot: int
    gpa: int
    size: int
    memory: memoryview
    userspace_addr: int
    guest_memfd: int | None
    guest_memfd_offset: int

    def to_json(self) -> dict[str, object]:
        return {
            "slot": self.slot,
            "gpa": f"{self.gpa:#x}",
            "size": self.size,
            "guest_memfd": self.guest_memfd is not None,
            "guest_memfd_offset": self.guest_memfd_offset,
        }


class Vm(_Fd):
    """One VM fd and what it owns; `capabilities` and `sev_fd` are set by the launch."""

    def __init__(self, kvm: Kvm, fd: int, vm_type: VmType) -> None:
        super().__init__(kvm.kernel, fd)
        self.kvm = kvm
        self.type = vm_type
        self.vcpus: list[Vcpu] = []
        self.slots: list[Slot] = []
        self.capabilities: Capabilities | None = None
        self.sev_fd = 0

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION at VM scope (authoritative for this VM's type)."""
        return self.ioctl("KVM_CHECK_EXTENSION", immediate=cap, call=f"KVM_CHECK_EXTENSION({cap})")

    def create_guest_memfd(self, size: int, flags: int) -> GuestMemfd:
        request: Any = ffi.new("struct kvm_create_guest_memfd *", {"size": size, "flags": flags})
        fd = self.ioctl("KVM_CREATE_GUEST_MEMFD", request)
        gmem = GuestMemfd(self, fd, size, flags)
        self.adopt(gmem)
        return gmem

    def set_memory_region(
        self,
        slot: int,
        gpa: int,
        memory: memoryview,
        gmem: GuestMemfd | None = None,
        offset: int = 0,
    ) -> Slot:
        """KVM_SET_USER_MEMORY_REGION2 over `memory`, backed by `gmem` at `offset` if given."""
        region: Any = ffi.new("struct kvm_userspace_memory_region2 *")
        region.slot = slot
        region.guest_phys_addr = gpa
        region.memory_size = len(memory)
        region.userspace_addr = address(memory)
        if gmem is not None:
            region.flags = MemFlag.GUEST_MEMFD
            region.guest_memfd = gmem.fd
            region.guest_memfd_offset = offset
        self.ioctl("KVM_SET_USER_MEMORY_REGION2", region)
        created = Slot(
            slot,
            gpa,
            len(memory),
            memory,
            region.userspace_addr,
            gmem.fd if gmem else None,
            offset,
        )
        self.slots.append(created)
        return created

    def _release(self) -> None:
        for s in self.slots:
            s.memory.release()
        self.slots.clear()

    def memory_at(self, gpa: int, size: int) -> memoryview:
        """The host memory behind guest range [gpa, gpa+size), which one memslot must hold.

        Release the view (`with vm.memory_at(...) as m:`) before the VM closes.
        """
        s = self._slot_of(gpa, size)
        return s.memory[gpa - s.gpa : gpa - s.gpa + size]

    def userspace_address(self, gpa: int, size: int) -> int:
        """The host address of guest range [gpa, gpa+size) (its memslot's userspace_addr)."""
        s = self._slot_of(gpa, size)
        return s.userspace_addr + gpa - s.gpa

    def _slot_of(self, gpa: int, size: int) -> Slot:
        for s in self.slots:
            if s.gpa <= gpa and gpa + size <= s.gpa + s.size:
                return s
        raise KvmError("memslot lookup", errno.ENOENT, {"gpa": gpa, "size": size})

    def set_private(self, gpa: int, size: int) -> None:
        """KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) over [gpa, gpa+size)."""
        attributes: Any = ffi.new(
            "struct kvm_memory_attributes *",
            {"address": gpa, "size": size, "attributes": MEMORY_ATTRIBUTE_PRIVATE},
        )
        self.ioctl("KVM_SET_MEMORY_ATTRIBUTES", attributes)

    def create_vcpu(self, vcpu_id: int) -> Vcpu:
        fd = self.ioctl("KVM_CREATE_VCPU", immediate=vcpu_id)
        vcpu = Vcpu(self, fd, vcpu_id)
        self.adopt(vcpu)
        self.vcpus.append(vcpu)
        return vcpu

    def sev_command(self, cmd: SevCmd, data: Any = None, sev_fd: int = 0) -> None:
        """KVM_MEMORY_ENCRYPT_OP with a kvm_sev_cmd; the firmware status goes in the error."""
        command: Any = ffi.new(
            "struct kvm_sev_cmd *",
            {"id": cmd, "data": address(data) if data is not None else 0, "sev_fd": sev_fd},
        )
        encrypt_op(self, command, data, f"KVM_MEMORY_ENCRYPT_OP({cmd.name})")

    def tdx_command(self, cmd: TdxCmd, data: Any = None, flags: int = 0) -> None:
        tdx_command(self, cmd, data, flags)

    def probe(self, cap: Cap) -> int:
        """A capability at VM scope; 0 when the kernel does not know the question."""
        try:
            return self.check_extension(cap)
        except KvmError:
            return 0


class Vcpu(_Fd):
    """One vCPU fd, its register state, and its kvm_run area (mapped on first run)."""

    def __init__(self, vm: Vm, fd: int, vcpu_id: int) -> None:
        super().__init__(vm.kernel, fd)
        self.vm = vm
        self.id = vcpu_id
        self._run: Mapping | None = None

    def get_sregs(self) -> Any:
        sregs: Any = ffi.new("struct kvm_sregs *")
        self.ioctl("KVM_GET_SREGS", sregs)
        return sregs

    def set_sregs(self, sregs: Any) -> None:
        self.ioctl("KVM_SET_SREGS", sregs)

    def set_regs(self, **values: int) -> None:
        """KVM_SET_REGS with the named registers set and every other one zero."""
        self.ioctl("KVM_SET_REGS", ffi.new("struct kvm_regs *", values))

    def get_fpu(self) -> Any:
        fpu: Any = ffi.new("struct kvm_fpu *")
        self.ioctl("KVM_GET_FPU", fpu)
        return fpu

    def set_fpu(self, fpu: Any) -> None:
        self.ioctl("KVM_SET_FPU", fpu)

    def set_pat(self, value: int) -> None:
        msrs: Any = ffi.new(
            "struct kvm_msrs *", {"nmsrs": 1, "entries": [(MSR_IA32_CR_PAT, 0, value)]}
        )
        if self.ioctl("KVM_SET_MSRS", msrs) != 1:
            raise KvmError("KVM_SET_MSRS", errno.EINVAL, {"index": MSR_IA32_CR_PAT})

    def tdx_command(
        self, cmd: TdxCmd, data: Any = None, flags: int = 0, immediate: int = 0
    ) -> None:
        tdx_command(self, cmd, data, flags, immediate)

    def run(self) -> Any:
        """KVM_RUN once; returns the kvm_run struct describing the exit."""
        if self._run is None:
            self._run = self.map(self.vm.kvm.vcpu_mmap_size)
        self.ioctl("KVM_RUN")
        return ffi.cast("struct kvm_run *", ffi.from_buffer(self._run.view))

    @property
    def run_area(self) -> memoryview:
        """The kvm_run mapping (port I/O data lives at an offset inside it)."""
        if self._run is None:
            raise KvmError("KVM_RUN", errno.ENXIO)
        return self._run.view


def encrypt_op(owner: _Fd, command: Any, data: Any, call: str) -> None:
    """KVM_MEMORY_ENCRYPT_OP; a failure carries the command's and its data's fields."""
    try:
        owner.ioctl("KVM_MEMORY_ENCRYPT_OP", command, call=call)
    except KvmError as e:
        raise KvmError(call, e.errno, struct_fields(command) | struct_fields(data)) from None


def tdx_command(owner: _Fd, cmd: TdxCmd, data: Any, flags: int, immediate: int = 0) -> None:
    value = address(data) if data is not None else immediate
    command: Any = ffi.new("struct kvm_tdx_cmd *", {"id": cmd, "flags": flags, "data": value})
    encrypt_op(owner, command, data, f"KVM_MEMORY_ENCRYPT_OP({cmd.name})")


class Device(_Fd):
    """Another device node a launch needs (/dev/sev), closed together with its owner."""

    def __init__(self, owner: _Fd, path: str) -> None:
        super().__init__(owner.kernel, _open(owner.kernel, path))
        owner.adopt(self)
