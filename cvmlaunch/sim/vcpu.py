"""One emulated vCPU: KVM's x86 register state, its ioctls, and the kvm_run area.

The state after KVM_CREATE_VCPU is KVM's reset state (kvm_vcpu_reset and the SVM/VMX
segment setup): real mode at F000:FFF0 with CS base 0xFFFF0000, CR0 0x60000010, the x87 and
SSE control words at their reset values, PAT 0x0007040600070406, and RDX 0x600 (no CPUID
has been set). Once the platform has measured a vCPU's state it is protected, and reading
or writing registers fails with EINVAL (kvm-abi.md §3.4, `guest_state_protected`).
"""

from __future__ import annotations

import errno
import mmap
from typing import Any

from cvmlaunch.abi.kvm import MSR_IA32_CR_PAT, PAGE_SIZE, ffi
from cvmlaunch.sim.memory import SimMapping
from cvmlaunch.sim.usercopy import copy_from_user, copy_to_user, fail, user_struct

RUN_AREA_SIZE = 3 * PAGE_SIZE  # kvm_run, then the PIO data and coalesced-MMIO ring pages
MAX_VCPU_ID = 4096  # KVM_MAX_VCPU_IDS on x86
_MAX_IO_MSRS = 256

PAT_RESET = 0x0007040600070406
DR6_RESET = 0xFFFF0FF0
DR7_RESET = 0x400
XCR0_RESET = 1  # x87 only
_RESET_RDX = 0x600  # what KVM loads while the vCPU has no CPUID (family 6)
_PAT_TYPES = frozenset({0, 1, 4, 5, 6, 7})  # UC, WC, WT, WP, WB, UC-


def _pat_valid(value: int) -> bool:
    return all(value >> shift & 0xFF in _PAT_TYPES for shift in range(0, 64, 8))


def _reset_sregs(sregs: Any) -> None:
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        seg.type, seg.s, seg.present, seg.limit = 3, 1, 1, 0xFFFF
    cs = sregs.cs
    cs.selector, cs.base, cs.limit, cs.type, cs.s, cs.present = (
        0xF000,
        0xFFFF0000,
        0xFFFF,
        0xB,
        1,
        1,
    )
    sregs.ldt.type, sregs.ldt.present, sregs.ldt.limit = 2, 1, 0xFFFF
    sregs.tr.type, sregs.tr.present, sregs.tr.limit = 0xB, 1, 0xFFFF
    sregs.gdt.limit = sregs.idt.limit = 0xFFFF
    sregs.cr0 = 0x60000010


class Vcpu:
    """A vCPU of one VM; lives as long as its VM, whether or not its fd is open."""

    def __init__(self, vcpu_id: int, protected: bool) -> None:
        self.id = vcpu_id
        self.protected = protected
        self.regs: Any = ffi.new(
            "struct kvm_regs *", {"rflags": 0x2, "rip": 0xFFF0, "rdx": _RESET_RDX}
        )
        self.sregs: Any = ffi.new("struct kvm_sregs *")
        _reset_sregs(self.sregs)
        self.fpu: Any = ffi.new("struct kvm_fpu *", {"fcw": 0x37F, "mxcsr": 0x1F80})
        self.pat = PAT_RESET
        self.initial_rcx: int | None = None  # set by KVM_TDX_INIT_VCPU
        self.run_area = mmap.mmap(-1, RUN_AREA_SIZE)

    def get(self, state: Any, arg: int) -> int:
        """KVM_GET_REGS / SREGS / FPU: copy `state` out to the caller."""
        if self.protected:
            fail(errno.EINVAL)
        copy_to_user(arg, bytes(ffi.buffer(state)))
        return 0

    def set(self, state: Any, arg: int) -> int:
        """KVM_SET_REGS / SREGS / FPU: take the caller's values."""
        if self.protected:
            fail(errno.EINVAL)
        data = copy_from_user(arg, ffi.sizeof(state[0]))
        ffi.memmove(state, data, len(data))
        return 0

    def set_msrs(self, arg: int) -> int:
        """KVM_SET_MSRS: returns how many entries were set, stopping at the first refused.

        Only PAT reaches state the emulator shows (the VMSA); other MSRs are accepted and
        dropped. PAT takes only the memory types 0, 1, 4, 5, 6, 7 in each byte (kvm_pat_valid).
        """
        msrs = user_struct("kvm_msrs", arg)
        if msrs.nmsrs >= _MAX_IO_MSRS:
            fail(errno.E2BIG)
        for i in range(msrs.nmsrs):
            entry = msrs.entries[i]
            if entry.index == MSR_IA32_CR_PAT:
                if not _pat_valid(entry.data):
                    return i
                self.pat = entry.data
        return int(msrs.nmsrs)

    def map(self, length: int, offset: int) -> SimMapping:
        if length <= 0 or offset % PAGE_SIZE or offset + length > RUN_AREA_SIZE:
            fail(errno.EINVAL)
        return SimMapping(self.run_area, offset, length)
