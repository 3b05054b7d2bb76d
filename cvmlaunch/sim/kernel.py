"""SimKernel: an emulated Linux KVM host at the open/ioctl/mmap/close boundary.

It answers the calls a launch makes the way the host kernel would (kvm-abi.md §1, §3, §4,
§5), with its own fd table, guest memory, and a model of the SEV firmware or the TDX module
that measures the bytes it is actually handed. Unknown ioctls fail as KVM's fallbacks do:
EINVAL on /dev/kvm and vCPU fds, ENOTTY on VM fds and guest_memfd files.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from itertools import count
from typing import TYPE_CHECKING

from cvmlaunch.abi.kvm import IOCTLS, KVM_API_VERSION, VmType
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.sim.faults import Fault, PageBudget, Partial, call_faults
from cvmlaunch.sim.hosts import PROFILES, SimHost
from cvmlaunch.sim.memory import GuestMemfd
from cvmlaunch.sim.mmu import pre_fault
from cvmlaunch.sim.psp import Psp
from cvmlaunch.sim.rfc import map_memory
from cvmlaunch.sim.tdx_module import TdxModule
from cvmlaunch.sim.usercopy import fail, read_struct
from cvmlaunch.sim.vcpu import MAX_VCPU_ID, RUN_AREA_SIZE, Vcpu
from cvmlaunch.sim.vm import Vm

if TYPE_CHECKING:
    from cvmlaunch.kvm.sys import Mapping

_N = {name: ioctl.number for name, ioctl in IOCTLS.items()}
_FIRST_FD = 1000


class _KvmDevice:
    """An open /dev/kvm."""


class _SevDevice:
    """An open /dev/sev (the PSP driver's node)."""


class _VcpuFile(NamedTuple):
    vm: Vm
    vcpu: Vcpu


_File = _KvmDevice | _SevDevice | Vm | _VcpuFile | GuestMemfd
_VmIoctl = Callable[[Vm, int], int]
_VcpuIoctl = Callable[[_VcpuFile, int], int]


class SimKernel:
    """An emulated kernel playing `host`; `faults` fail chosen calls or stop populates."""

    def __init__(
        self, host: SimHost | str = SimHost.SNP, faults: Sequence[Fault | Partial] = ()
    ) -> None:
        self.host = SimHost(host)
        self._profile = PROFILES[self.host]
        self._call_faults = call_faults(faults)
        self._budget = PageBudget([f for f in faults if isinstance(f, Partial)])
        self.calls = 0
        self._files: dict[int, _File] = {}
        self._fd_numbers = count(_FIRST_FD)
        # Every VM ever created, by its fd: the digest stays readable after close.
        self._vms: dict[int, Vm] = {}
        self._psp = Psp(self._is_sev_device, self._budget) if self._profile.sev else None
        self._tdx = TdxModule(self._budget) if self._profile.tdx else None
        self._vm_ioctls: dict[int, _VmIoctl] = {
            _N["KVM_CREATE_VCPU"]: self._create_vcpu,
            _N["KVM_CHECK_EXTENSION"]: lambda vm, cap: self._profile.check_extension(cap, vm.type),
            _N["KVM_CREATE_GUEST_MEMFD"]: self._create_guest_memfd,
            _N["KVM_SET_USER_MEMORY_REGION2"]: self._set_memory_region,
            _N["KVM_SET_MEMORY_ATTRIBUTES"]: self._set_memory_attributes,
            _N["KVM_MEMORY_ENCRYPT_OP"]: self._vm_encrypt_op,
        }
        self._vcpu_ioctls: dict[int, _VcpuIoctl] = {
            _N["KVM_RUN"]: self._run,
            _N["KVM_GET_REGS"]: lambda f, arg: f.vcpu.get(f.vcpu.regs, arg),
            _N["KVM_SET_REGS"]: lambda f, arg: f.vcpu.set(f.vcpu.regs, arg),
            _N["KVM_GET_SREGS"]: lambda f, arg: f.vcpu.get(f.vcpu.sregs, arg),
            _N["KVM_SET_SREGS"]: lambda f, arg: f.vcpu.set(f.vcpu.sregs, arg),
            _N["KVM_GET_FPU"]: lambda f, arg: f.vcpu.get(f.vcpu.fpu, arg),
            _N["KVM_SET_FPU"]: lambda f, arg: f.vcpu.set(f.vcpu.fpu, arg),
            _N["KVM_SET_MSRS"]: lambda f, arg: f.vcpu.set_msrs(arg),
            _N["KVM_MEMORY_ENCRYPT_OP"]: self._vcpu_encrypt_op,
        }
        # The RFC kernel has KVM_MAP_MEMORY where upstream has KVM_PRE_FAULT_MEMORY; each
        # is an unknown vCPU ioctl (EINVAL) on the other.
        if self._profile.rfc:
            self._vcpu_ioctls[_N["KVM_MAP_MEMORY"]] = self._map_memory
        else:
            self._vcpu_ioctls[_N["KVM_PRE_FAULT_MEMORY"]] = lambda f, arg: pre_fault(
                f.vm, arg, self._budget
            )

    # The system calls.

    def open(self, path: str) -> int:
        self._begin()
        if path == "/dev/kvm":
            return self._install(_KvmDevice())
        if path == "/dev/sev" and self._psp is not None:
            return self._install(_SevDevice())
        fail(errno.ENOENT)

    def ioctl(self, fd: int, request: int, arg: int = 0) -> int:
        self._begin()
        file = self._file(fd)
        if isinstance(file, _KvmDevice):
            return self._system_ioctl(request, arg)
        if isinstance(file, Vm):
            vm_ioctl = self._vm_ioctls.get(request)
            if vm_ioctl is None:
                fail(errno.ENOTTY)
            return vm_ioctl(file, arg)
        if isinstance(file, _VcpuFile):
            vcpu_ioctl = self._vcpu_ioctls.get(request)
            if vcpu_ioctl is None:
                fail(errno.EINVAL)
            return vcpu_ioctl(file, arg)
        if isinstance(file, _SevDevice):
            fail(errno.EINVAL)  # the PSP driver's platform commands are not emulated
        fail(errno.ENOTTY)  # guest_memfd has no ioctls

    def mmap(self, fd: int, length: int, offset: int = 0) -> Mapping:
        self._begin()
        file = self._file(fd)
        if isinstance(file, GuestMemfd):
            return file.map(length, offset)
        if isinstance(file, _VcpuFile):
            return file.vcpu.map(length, offset)
        fail(errno.ENODEV)

    def close(self, fd: int) -> None:
        if fd not in self._files:
            fail(errno.EBADF)
        # Only the fd goes: a VM lives on in its vCPUs and guest_memfds, a guest_memfd in
        # the memslots bound to it, a vCPU in its VM.
        del self._files[fd]

    # What the process holds, and what the platform would attest.

    def open_fds(self) -> frozenset[int]:
        return frozenset(self._files)

    def launch_digest(self, vm_fd: int) -> bytes | None:
        """The launch measurement an attestation would report for the VM created as
        `vm_fd`: SNP MEASUREMENT after SNP_LAUNCH_FINISH, the SEV/SEV-ES digest after
        LAUNCH_MEASURE, MRTD after KVM_TDX_FINALIZE_VM; None before that."""
        vm = self._vms.get(vm_fd)
        if vm is None:
            raise ValueError(f"fd {vm_fd} was never a VM of this kernel")
        return vm.launch_digest()

    def snp_report_fields(self, vm_fd: int) -> tuple[int, bytes] | None:
        """POLICY and HOST_DATA as the SNP guest's attestation report would carry them."""
        vm = self._vms.get(vm_fd)
        if vm is None or vm.sev is None or not vm.sev.snp:
            return None
        return vm.sev.policy, vm.sev.host_data

    # The fd table.

    def _begin(self) -> None:
        number = self.calls
        self.calls += 1
        code = self._call_faults.get(number)
        if code is not None:
            fail(code)

    def _install(self, file: _File) -> int:
        fd = next(self._fd_numbers)
        self._files[fd] = file
        return fd

    def _file(self, fd: int) -> _File:
        file = self._files.get(fd)
        if file is None:
            fail(errno.EBADF)
        return file

    def _is_sev_device(self, fd: int) -> bool:
        return isinstance(self._files.get(fd), _SevDevice)

    # /dev/kvm.

    def _system_ioctl(self, request: int, arg: int) -> int:
        if request == _N["KVM_CHECK_EXTENSION"]:
            return self._profile.check_extension(arg, None)
        if request == _N["KVM_CREATE_VM"]:
            return self._create_vm(arg)
        answers = {
            _N["KVM_GET_API_VERSION"]: KVM_API_VERSION,
            _N["KVM_GET_VCPU_MMAP_SIZE"]: RUN_AREA_SIZE,
        }
        if request not in answers or arg:
            fail(errno.EINVAL)
        return answers[request]

    def _create_vm(self, vm_type: int) -> int:
        if vm_type not in {int(t) for t in self._profile.vm_types}:
            fail(errno.EINVAL)
        vm = Vm(VmType(vm_type), self._profile)
        fd = self._install(vm)
        self._vms[fd] = vm
        return fd

    # VM fds.

    def _create_vcpu(self, vm: Vm, vcpu_id: int) -> int:
        if vcpu_id >= MAX_VCPU_ID:
            fail(errno.EINVAL)
        protected = False
        if vm.type is VmType.TDX:
            if vm.td is None:  # the TDX module needs the TD initialized first
                fail(errno.EIO)
            # A TD vCPU's registers belong to the TDX module unless the TD is debuggable.
            protected = not vm.td.debug
        if vcpu_id in vm.vcpus:
            fail(errno.EEXIST)
        vcpu = Vcpu(vcpu_id, protected)
        vm.vcpus[vcpu_id] = vcpu
        return self._install(_VcpuFile(vm, vcpu))

    def _create_guest_memfd(self, vm: Vm, arg: int) -> int:
        request = read_struct("kvm_create_guest_memfd", arg)
        return self._install(vm.memory.create_guest_memfd(request, vm.guest_memfd_flags))

    def _set_memory_region(self, vm: Vm, arg: int) -> int:
        vm.memory.set_region(read_struct("kvm_userspace_memory_region2", arg), self._file)
        return 0

    def _set_memory_attributes(self, vm: Vm, arg: int) -> int:
        vm.memory.set_attributes(read_struct("kvm_memory_attributes", arg))
        return 0

    def _vm_encrypt_op(self, vm: Vm, arg: int) -> int:
        if self._psp is not None:
            return self._psp.encrypt_op(vm, arg)
        if self._tdx is not None and vm.type is VmType.TDX:
            return self._tdx.vm_op(vm, arg)
        fail(errno.ENOTTY)

    # vCPU fds.

    def _run(self, f: _VcpuFile, arg: int) -> int:
        # The emulated kernel executes no guest code: there is no CPU model behind KVM_RUN.
        fail(errno.ENOSYS)

    def _vcpu_encrypt_op(self, f: _VcpuFile, arg: int) -> int:
        if self._tdx is not None and f.vm.type is VmType.TDX:
            return self._tdx.vcpu_op(f.vm, f.vcpu, arg)
        fail(errno.ENOTTY)

    def _map_memory(self, f: _VcpuFile, arg: int) -> int:
        if self._psp is None:  # the RFC host profile is an AMD one
            fail(errno.EINVAL)
        return map_memory(f.vm, arg, self._psp, self._budget)
