"""The Intel TDX module's TD build, behind KVM's KVM_MEMORY_ENCRYPT_OP with a kvm_tdx_cmd.

KVM's side (arch/x86/kvm/vmx/tdx.c as kvm-abi.md §4 records it): VM commands INIT_VM and
FINALIZE_VM, vCPU commands INIT_VCPU and INIT_MEM_REGION, their order and errno. The
module's side (TDX module ABI: TDH.MNG.INIT, TDH.MEM.PAGE.ADD, TDH.MR.EXTEND,
TDH.MR.FINALIZE): MRTD is one SHA-384 over a 128-byte record per added page and, for
measured pages, a record plus the 256 bytes of each chunk, in the order the pages are added.
A module refusal is EIO with the module's status in kvm_tdx_cmd.hw_error. The GPA's shared
bit is not checked: the emulator does not model the TD's guest physical address width.
"""

from __future__ import annotations

import errno
from typing import Any

from cvmlaunch.abi.kvm import PAGE_SHIFT, PAGE_SIZE, TDX_MEASURE_MEMORY_REGION, TdxCmd
from cvmlaunch.abi.tdx import (
    TD_ATTRIBUTES_DEFINED,
    XFAM_FIXED0,
    XFAM_FIXED1,
)
from cvmlaunch.sim.faults import PageBudget
from cvmlaunch.sim.memory import GuestMemfd
from cvmlaunch.sim.td_guest import TdGuest
from cvmlaunch.sim.usercopy import copy_from_user, fail, read_struct, user_struct, write_struct
from cvmlaunch.sim.vcpu import Vcpu
from cvmlaunch.sim.vm import Vm

# TDX module status: the S-EPT entry is not in the state the operation needs (the page
# was added already). arch/x86/kvm/vmx/tdx_errno.h.
TDX_EPT_ENTRY_STATE_INCORRECT = 0xC0000B0D00000000
_MAX_CPUID_ENTRIES = 256  # KVM_MAX_CPUID_ENTRIES


class ModuleFailure(Exception):
    """KVM reports EIO and passes the module's status up in kvm_tdx_cmd.hw_error."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _valid_xfam(xfam: int) -> bool:
    return not xfam & ~XFAM_FIXED0 and xfam & XFAM_FIXED1 == XFAM_FIXED1


class TdxModule:
    """The TDX module of one host."""

    def __init__(self, budget: PageBudget) -> None:
        self._budget = budget

    @staticmethod
    def _command(arg: int) -> Any:
        cmd = user_struct("kvm_tdx_cmd", arg)
        if cmd.hw_error:  # userspace never sets it; the kernel fills it in
            fail(errno.EINVAL)
        return cmd

    def vm_op(self, vm: Vm, arg: int) -> int:
        """KVM_MEMORY_ENCRYPT_OP on a TD's VM fd; a NULL argument probes for TDX."""
        if arg == 0:
            return 0
        cmd = self._command(arg)
        if cmd.flags:
            fail(errno.EINVAL)
        if cmd.id == TdxCmd.INIT_VM:
            self._init_vm(vm, cmd.data)
        elif cmd.id == TdxCmd.FINALIZE_VM:
            self._finalize(vm)
        else:
            fail(errno.EINVAL)
        return 0

    def vcpu_op(self, vm: Vm, vcpu: Vcpu, arg: int) -> int:
        """KVM_MEMORY_ENCRYPT_OP on a TD's vCPU fd."""
        cmd = self._command(arg)
        td = vm.td
        if td is None or td.digest is not None:
            fail(errno.EINVAL)
        if cmd.id == TdxCmd.INIT_VCPU:
            if cmd.flags or vcpu.initial_rcx is not None:
                fail(errno.EINVAL)
            vcpu.initial_rcx = cmd.data
        elif cmd.id == TdxCmd.INIT_MEM_REGION:
            if vcpu.initial_rcx is None or cmd.flags & ~TDX_MEASURE_MEMORY_REGION:
                fail(errno.EINVAL)
            try:
                self._init_mem_region(vm, td, cmd.data, bool(cmd.flags))
            except ModuleFailure as e:
                cmd.hw_error = e.status
                fail(errno.EIO)
        else:
            fail(errno.EINVAL)
        return 0

    @staticmethod
    def _init_vm(vm: Vm, data: int) -> None:
        if vm.td is not None:
            fail(errno.EINVAL)
        params = read_struct("kvm_tdx_init_vm", data)
        if any(params.reserved):
            fail(errno.EINVAL)
        if params.cpuid.nent > _MAX_CPUID_ENTRIES:
            fail(errno.E2BIG)
        if params.attributes & ~TD_ATTRIBUTES_DEFINED or not _valid_xfam(params.xfam):
            fail(errno.EINVAL)
        vm.td = TdGuest(params)

    @staticmethod
    def _finalize(vm: Vm) -> None:
        td = vm.td
        if td is None or td.digest is not None:
            fail(errno.EINVAL)
        td.digest = td.mrtd.digest()
        vm.pre_fault_allowed = True

    def _init_mem_region(self, vm: Vm, td: TdGuest, data: int, extend: bool) -> None:
        """Add (and measure) pages one at a time; the struct goes back on every return."""
        region = read_struct("kvm_tdx_init_mem_region", data)
        try:
            bad = (
                (region.source_addr | region.gpa) % PAGE_SIZE
                or region.source_addr == 0
                or region.nr_pages == 0
                or region.gpa + (region.nr_pages << PAGE_SHIFT) >= 1 << 64
            )
            if bad:
                fail(errno.EINVAL)
            while region.nr_pages:
                self._add_one(vm, td, region, extend)
                region.source_addr += PAGE_SIZE
                region.gpa += PAGE_SIZE
                region.nr_pages -= 1
        finally:
            write_struct(data, region)

    def _add_one(self, vm: Vm, td: TdGuest, region: Any, extend: bool) -> None:
        def fill(gfn: int, gmem: GuestMemfd, index: int) -> None:
            page = copy_from_user(region.source_addr, PAGE_SIZE)
            gmem.write_page(index, page)
            td.add_page(gfn << PAGE_SHIFT, page, extend)

        result = vm.memory.populate(region.gpa >> PAGE_SHIFT, 1, self._budget, fill)
        if result.stop is None:
            return
        if result.stop == errno.EEXIST:
            raise ModuleFailure(TDX_EPT_ENTRY_STATE_INCORRECT)
        fail(result.stop)
