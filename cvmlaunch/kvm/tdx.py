"""The TDX launch commands of a VM and its vCPUs (reference/kvm-abi.md §4).

Each is KVM_MEMORY_ENCRYPT_OP with a `kvm_tdx_cmd` whose `data` is a struct pointer or an
immediate: INIT_VM and FINALIZE_VM on the VM fd (`TdxVm`), INIT_VCPU and INIT_MEM_REGION on
a vCPU fd (`TdxVcpu`; INIT_MEM_REGION's partial-progress loop is in map_memory.py). A
failure is a `KvmError` naming `KVM_MEMORY_ENCRYPT_OP(<command>)`, the errno, and the fields
of the command and its data; EIO with `hw_error` set is a TDX module refusal.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

from cvmlaunch.abi.kvm import TdxCmd
from cvmlaunch.abi.tdx import MR_CONFIG_SIZE
from cvmlaunch.errors import KvmError
from cvmlaunch.kvm.fd import OwnedFd, encrypt_op, new_struct
from cvmlaunch.kvm.sys import address

_ZERO_MR = bytes(MR_CONFIG_SIZE)
_MR = struct.Struct("<6Q")  # a SHA-384 as kvm_tdx_init_vm holds it: six u64s


def _tdx_command(
    owner: OwnedFd, cmd: TdxCmd, data: Any = None, flags: int = 0, immediate: int = 0
) -> None:
    """KVM_MEMORY_ENCRYPT_OP on `owner` with a kvm_tdx_cmd (struct `data`, or `immediate`)."""
    call = f"KVM_MEMORY_ENCRYPT_OP({cmd.name})"
    value = address(data) if data is not None else immediate
    command = new_struct("kvm_tdx_cmd", call, id=cmd, flags=flags, data=value)
    encrypt_op(owner, command, data, call)


class TdxVm(OwnedFd):
    """The KVM_TDX_* commands of a TD's VM fd."""

    def tdx_command(self, cmd: TdxCmd, data: Any = None, flags: int = 0) -> None:
        """KVM_MEMORY_ENCRYPT_OP(`cmd`) on the VM fd, `data` a command struct or None."""
        _tdx_command(self, cmd, data, flags)

    def tdx_init_vm(
        self,
        attributes: int,
        xfam: int,
        *,
        mrconfigid: bytes = _ZERO_MR,
        mrowner: bytes = _ZERO_MR,
        mrownerconfig: bytes = _ZERO_MR,
    ) -> None:
        """KVM_TDX_INIT_VM (TDH.MNG.INIT), before any vCPU: the TD's ATTRIBUTES and XFAM, and
        the 48-byte MRCONFIGID, MROWNER and MROWNERCONFIG its reports carry. No CPUID
        entries: KVM's defaults stand. EINVAL for an unsupported attribute or XFAM."""
        call = f"KVM_MEMORY_ENCRYPT_OP({TdxCmd.INIT_VM.name})"
        identity = {"mrconfigid": mrconfigid, "mrowner": mrowner, "mrownerconfig": mrownerconfig}
        for name, value in identity.items():
            if len(value) != MR_CONFIG_SIZE:
                raise KvmError(call, errno.EINVAL, {f"{name}_len": len(value)})
        words = {name: _MR.unpack(value) for name, value in identity.items()}
        init = new_struct("kvm_tdx_init_vm", call, attributes=attributes, xfam=xfam, **words)
        self.tdx_command(TdxCmd.INIT_VM, init)

    def tdx_finalize_vm(self) -> None:
        """KVM_TDX_FINALIZE_VM (TDH.MR.FINALIZE): MRTD is final and the TD can run."""
        self.tdx_command(TdxCmd.FINALIZE_VM)


class TdxVcpu(OwnedFd):
    """The KVM_TDX_* commands of a TD's vCPU fd."""

    def tdx_command(
        self, cmd: TdxCmd, data: Any = None, flags: int = 0, immediate: int = 0
    ) -> None:
        """KVM_MEMORY_ENCRYPT_OP(`cmd`) on this vCPU fd, `data` a struct or else `immediate`."""
        _tdx_command(self, cmd, data, flags, immediate)

    def tdx_init_vcpu(self, hob_gpa: int) -> None:
        """KVM_TDX_INIT_VCPU: the vCPU starts with RCX = `hob_gpa`, the TD HOB's GPA (0 when
        the firmware has none). Once per vCPU, after INIT_VM."""
        self.tdx_command(TdxCmd.INIT_VCPU, immediate=hob_gpa)
