"""`Kvm`, `Vm`, `Vcpu` and `GuestMemfd`: objects that own their fds and close them on any path.

Each object is a context manager; a parent closes its children first (a VM its vCPUs,
guest_memfds and /dev/sev, /dev/kvm its VMs), so a failure anywhere in a launch leaves no fd
open. Every ioctl goes through the injected `Kernel`, and every failure becomes a `KvmError`
naming the ioctl, the errno and the values that were sent (fd.py). The vendor launch
commands come from the `SevVm` (sev.py) and `TdxVm`/`TdxVcpu` (tdx.py) mixins.
"""

from __future__ import annotations

import errno
from typing import Any

from cvmlaunch.abi.kvm import (
    KVM_API_VERSION,
    MEMORY_ATTRIBUTE_PRIVATE,
    MSR_IA32_CR_PAT,
    Cap,
    MemFlag,
    VmType,
    ffi,
)
from cvmlaunch.abi.vmsa import SaveArea
from cvmlaunch.errors import KvmError
from cvmlaunch.kvm.caps import Capabilities, probe
from cvmlaunch.kvm.fd import Device, OwnedFd, open_file
from cvmlaunch.kvm.sev import SevVm
from cvmlaunch.kvm.sys import Kernel, LinuxKernel, Mapping, address
from cvmlaunch.kvm.tdx import TdxVcpu, TdxVm
from cvmlaunch.namedtuple import NamedTuple

# Device lived here before fd.py and is still importable from here.
__all__ = ["Device", "GuestMemfd", "Kvm", "Slot", "Vcpu", "Vm"]

_EFER_SVME = 0x1000  # KVM sets it in every SEV-ES VMSA itself; userspace may not


class Kvm(OwnedFd):
    """/dev/kvm."""

    def __init__(self, kernel: Kernel | None = None, path: str = "/dev/kvm") -> None:
        kernel = kernel if kernel is not None else LinuxKernel()
        super().__init__(kernel, open_file(kernel, path))
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


class GuestMemfd(OwnedFd):
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


class Vm(SevVm, TdxVm):
    """One VM fd and what it owns: vCPUs, guest_memfds, memslots, /dev/sev (SEV family),
    and the capabilities its type has on this kernel once probed."""

    def __init__(self, kvm: Kvm, fd: int, vm_type: VmType) -> None:
        super().__init__(kvm.kernel, fd)
        self.kvm = kvm
        self.type = vm_type
        self.vcpus: list[Vcpu] = []
        self.slots: list[Slot] = []
        self.capabilities: Capabilities | None = None

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

    def probe(self, cap: Cap) -> int:
        """A capability at VM scope; 0 when the kernel does not know the question."""
        try:
            return self.check_extension(cap)
        except KvmError:
            return 0

    def probe_capabilities(self, vcpu: Vcpu) -> Capabilities:
        """Probe what this VM's type has on this kernel (`vcpu` answers the RFC
        KVM_MAP_MEMORY question) and keep it as `capabilities`, which map_memory reads."""
        self.capabilities = probe(self, vcpu)
        return self.capabilities


class Vcpu(TdxVcpu):
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

    def load_save_area(self, state: SaveArea) -> None:
        """Give KVM the register state an SEV-ES/SNP VMSA must hold: KVM builds the VMSA from
        the segments, descriptor tables, CR0/CR4/EFER, RIP/RFLAGS/RDX, FCW/MXCSR and PAT.

        KVM_GET_SREGS, KVM_SET_SREGS, KVM_SET_REGS (every other register zero),
        KVM_GET_FPU, KVM_SET_FPU, then KVM_SET_MSRS(IA32_PAT), in that order.
        """
        sregs = self.get_sregs()
        for ours, kvms in (
            ("es", "es"), ("cs", "cs"), ("ss", "ss"), ("ds", "ds"), ("fs", "fs"), ("gs", "gs"),
            ("ldtr", "ldt"), ("tr", "tr"),
        ):  # fmt: skip
            seg, k = getattr(state, ours), getattr(sregs, kvms)
            k.selector, k.base, k.limit = seg.selector, seg.base, seg.limit
            a = seg.attrib
            k.type, k.s, k.dpl, k.present = a & 0xF, a >> 4 & 1, a >> 5 & 3, a >> 7 & 1
            k.avl, k.l, k.db, k.g = a >> 8 & 1, a >> 9 & 1, a >> 10 & 1, a >> 11 & 1
        sregs.gdt.base, sregs.gdt.limit = state.gdtr.base, state.gdtr.limit
        sregs.idt.base, sregs.idt.limit = state.idtr.base, state.idtr.limit
        sregs.cr0, sregs.cr4, sregs.efer = state.cr0, state.cr4, state.efer & ~_EFER_SVME
        self.set_sregs(sregs)
        self.set_regs(rip=state.rip, rflags=state.rflags, rdx=state.rdx)
        fpu = self.get_fpu()
        fpu.fcw, fpu.mxcsr = state.x87_fcw, state.mxcsr
        self.set_fpu(fpu)
        self.set_pat(state.g_pat)

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
