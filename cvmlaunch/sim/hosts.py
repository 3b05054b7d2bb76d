"""The hosts the emulated kernel can play, and what KVM_CHECK_EXTENSION answers on each.

Capabilities and VM types of upstream 6.18 on an AMD SEV-SNP and an Intel TDX host, and of a
kernel carrying the 2024 KVM_MAP_MEMORY RFC, per kvm-abi.md §1.2, §1.3, §1.5, §1.6, §1.8 and §2.
"""

from __future__ import annotations

from enum import StrEnum

from cvmlaunch.abi.kvm import MEMORY_ATTRIBUTE_PRIVATE, Cap, GuestMemfdFlag, VmType
from cvmlaunch.namedtuple import NamedTuple


class SimHost(StrEnum):
    SNP = "snp"
    TDX = "tdx"
    RFC = "rfc"


# VM types whose memory can be private (guest_memfd plus the PRIVATE attribute).
PRIVATE_MEMORY_VM_TYPES = frozenset({VmType.SNP, VmType.TDX})
# VM types whose register state the platform protects once measured (has_protected_state).
PROTECTED_STATE_VM_TYPES = frozenset({VmType.SEV_ES, VmType.SNP, VmType.TDX})
SEV_VM_TYPES = frozenset({VmType.SEV, VmType.SEV_ES, VmType.SNP})

NR_MEMSLOTS = 32764
_ALL_GMEM_FLAGS = GuestMemfdFlag.MMAP | GuestMemfdFlag.INIT_SHARED
# The same answer whatever the VM: USER_MEMORY2, MEMORY_FAULT_INFO, GUEST_MEMFD, slots, and
# 236, which is PRE_FAULT_MEMORY upstream (tdp_enabled: these are TDP hosts) and
# MAP_MEMORY on the RFC kernel, 1 on both.
_FIXED_CAPS: dict[int, int] = {
    Cap.USER_MEMORY2: 1,
    Cap.MEMORY_FAULT_INFO: 1,
    Cap.GUEST_MEMFD: 1,
    Cap.NR_MEMSLOTS: NR_MEMSLOTS,
    Cap.PRE_FAULT_MEMORY: 1,
}


class HostProfile(NamedTuple):
    vm_types: frozenset[VmType]
    sev: bool  # /dev/sev and the SEV firmware exist
    tdx: bool  # the TDX module is loaded
    rfc: bool  # KVM_MAP_MEMORY in place of KVM_PRE_FAULT_MEMORY

    def check_extension(self, cap: int, vm_type: VmType | None) -> int:
        """KVM_CHECK_EXTENSION at system scope (`vm_type` None) or for a VM of `vm_type`."""
        private = vm_type in PRIVATE_MEMORY_VM_TYPES
        if cap == Cap.VM_TYPES:
            return sum(1 << t for t in self.vm_types)
        if cap == Cap.MEMORY_ATTRIBUTES:
            # System scope lists every attribute KVM knows; a VM only those it can use.
            return MEMORY_ATTRIBUTE_PRIVATE if vm_type is None or private else 0
        if cap == Cap.GUEST_MEMFD_FLAGS:
            # INIT_SHARED only where no memory is private (kvm_arch_supports_gmem_init_shared).
            return int(GuestMemfdFlag.MMAP if private else _ALL_GMEM_FLAGS)
        return _FIXED_CAPS.get(cap, 0)


_AMD_TYPES = frozenset({VmType.DEFAULT, VmType.SEV, VmType.SEV_ES, VmType.SNP})

PROFILES = {
    SimHost.SNP: HostProfile(_AMD_TYPES, sev=True, tdx=False, rfc=False),
    SimHost.TDX: HostProfile(
        frozenset({VmType.DEFAULT, VmType.TDX}), sev=False, tdx=True, rfc=False
    ),
    SimHost.RFC: HostProfile(_AMD_TYPES, sev=True, tdx=False, rfc=True),
}
