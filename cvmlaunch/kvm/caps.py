"""What the running kernel offers a launch, probed at VM scope (authoritative per VM type)."""

from __future__ import annotations

from typing import Protocol

from cvmlaunch.abi.kvm import Cap, GuestMemfdFlag, VmType, ffi
from cvmlaunch.errors import KvmError
from cvmlaunch.kvm.fd import OwnedFd
from cvmlaunch.namedtuple import NamedTuple


# What the probes ask of /dev/kvm and of a VM (objects.py builds on this module: a Vm keeps
# its Capabilities, so the probes name only the calls they make).
class _Extensions(Protocol):
    def check_extension(self, cap: int) -> int: ...


class _VmScope(Protocol):
    @property
    def kvm(self) -> _Extensions: ...

    def probe(self, cap: Cap) -> int: ...


class Capabilities(NamedTuple):
    """The answers that choose how map_memory is lowered and which VM types exist."""

    vm_types: frozenset[VmType]
    user_memory2: bool
    guest_memfd: bool
    guest_memfd_flags: int
    memory_attributes: int
    pre_fault_memory: bool
    map_memory: bool
    nr_memslots: int

    def to_json(self) -> dict[str, object]:
        return {
            "vm_types": sorted(t.name.lower() for t in self.vm_types),
            "user_memory2": self.user_memory2,
            "guest_memfd": self.guest_memfd,
            "guest_memfd_flags": [
                str(f.name).lower() for f in GuestMemfdFlag if f & self.guest_memfd_flags
            ],
            "memory_attributes_private": bool(self.memory_attributes & 8),
            "pre_fault_memory": self.pre_fault_memory,
            "map_memory_rfc": self.map_memory,
            "nr_memslots": self.nr_memslots,
        }


def vm_types(kvm: _Extensions) -> frozenset[VmType]:
    """The VM types KVM_CAP_VM_TYPES lists (a bitmap; kernels before 6.8 know only DEFAULT)."""
    bitmap = kvm.check_extension(Cap.VM_TYPES) or 1
    return frozenset(t for t in VmType if bitmap >> t & 1)


def has_rfc_map_memory(vcpu: OwnedFd) -> bool:
    """Whether the RFC's KVM_MAP_MEMORY answers: an empty request succeeds only there.

    Capability 236 cannot tell: upstream gave it to PRE_FAULT_MEMORY, the RFC to MAP_MEMORY.
    """
    try:
        vcpu.ioctl("KVM_MAP_MEMORY", ffi.new("struct kvm_memory_mapping *"))
    except KvmError:
        return False
    return True


def probe(vm: _VmScope, vcpu: OwnedFd) -> Capabilities:
    """The capabilities of `vm`'s type on this kernel; `vcpu` answers the RFC probe."""
    rfc = has_rfc_map_memory(vcpu)
    return Capabilities(
        vm_types=vm_types(vm.kvm),
        user_memory2=vm.probe(Cap.USER_MEMORY2) > 0,
        guest_memfd=vm.probe(Cap.GUEST_MEMFD) > 0,
        guest_memfd_flags=vm.probe(Cap.GUEST_MEMFD_FLAGS),
        memory_attributes=vm.probe(Cap.MEMORY_ATTRIBUTES),
        pre_fault_memory=not rfc and vm.probe(Cap.PRE_FAULT_MEMORY) > 0,
        map_memory=rfc,
        nr_memslots=vm.probe(Cap.NR_MEMSLOTS),
    )
