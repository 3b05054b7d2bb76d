"""One emulated VM: its type, memory, vCPUs, and the platform's launch context for it.

`pre_fault_allowed` follows kvm-abi.md §1.6: true from creation for VMs without private
memory, and only after SNP_LAUNCH_FINISH / KVM_TDX_FINALIZE_VM for SNP / TDX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cvmlaunch.abi.kvm import Cap, VmType
from cvmlaunch.sim.hosts import PRIVATE_MEMORY_VM_TYPES, PROTECTED_STATE_VM_TYPES, HostProfile
from cvmlaunch.sim.memory import GuestMemory
from cvmlaunch.sim.vcpu import Vcpu

if TYPE_CHECKING:
    from cvmlaunch.sim.sev_guest import SevGuest
    from cvmlaunch.sim.td_guest import TdGuest


class Vm:
    def __init__(self, vm_type: VmType, host: HostProfile) -> None:
        self.type = vm_type
        self.host = host
        self.memory = GuestMemory(
            readonly_slots=vm_type not in PROTECTED_STATE_VM_TYPES,
            attributes=host.check_extension(Cap.MEMORY_ATTRIBUTES, vm_type),
        )
        # In creation order, which is KVM's vCPU index order (kvm_for_each_vcpu).
        self.vcpus: dict[int, Vcpu] = {}
        self.pre_fault_allowed = vm_type not in PRIVATE_MEMORY_VM_TYPES
        self.sev: SevGuest | None = None
        self.td: TdGuest | None = None

    @property
    def guest_memfd_flags(self) -> int:
        return self.host.check_extension(Cap.GUEST_MEMFD_FLAGS, self.type)

    def launch_digest(self) -> bytes | None:
        """The measurement an attestation would report, once the platform has fixed it."""
        if self.sev is not None:
            return self.sev.digest
        if self.td is not None:
            return self.td.digest
        return None
