"""The only code that talks to the kernel: fd-owning KVM objects with the vendor launch
commands (SEV/SEV-ES/SNP, TDX) as typed methods, capability probing, and the map-memory
primitive, all over one injectable `Kernel` (real Linux or the emulated one)."""

from cvmlaunch.kvm.caps import Capabilities, probe
from cvmlaunch.kvm.fd import Device
from cvmlaunch.kvm.map_memory import MapCall, map_memory
from cvmlaunch.kvm.objects import GuestMemfd, Kvm, Slot, Vcpu, Vm
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
