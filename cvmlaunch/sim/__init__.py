"""An emulated Linux KVM host at the ioctl boundary, with SEV-SNP and TDX firmware models.

`SimKernel` implements `cvmlaunch.kvm.sys.Kernel`: the launch code runs unchanged against
it, and it measures what it is actually given, as a second implementation independent of
`cvmlaunch.measure`. It plays an upstream 6.18 AMD host (`snp`), an Intel TDX host (`tdx`),
or a kernel with the KVM_MAP_MEMORY RFC (`rfc`), and injects failures on request.
"""

from cvmlaunch.sim.faults import Fault, Partial
from cvmlaunch.sim.hosts import SimHost
from cvmlaunch.sim.kernel import SimKernel

__all__ = ["Fault", "Partial", "SimHost", "SimKernel"]
