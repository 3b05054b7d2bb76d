"""The only code that talks to the kernel: fd-owning KVM objects, capability probing, and the
map-memory primitive, all over one injectable `Kernel` (real Linux or the emulated one)."""

from cvmlaunch.kvm.caps import Capabilities, probe
from cvmlaunch.kvm.map_memory import MapCall, map_memory
from cvmlaunch.kvm.objects import Device, GuestMemfd, Kvm, Slot, Vcpu, Vm
from cvmlaunch.kvm.sys import Kernel, LinuxKernel, Mapping

__all__ = [
    "Capabilities",
    "Device",
    "GuestMemfd",
    "Kernel",
    "Kvm",
    "LinuxKernel",
    "MapCall",
    "Mapping",
    "Slot",
    "Vcpu",
    "Vm",
    "map_memory",
    "probe",
]
