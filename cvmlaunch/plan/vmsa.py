"""Initial vCPU state of SEV-ES/SNP guests, per VMM flavour.

Values are KVM's x86 reset state as each VMM hands it to the PSP (QEMU with host kernels
>= 6.10, which set the x87 FCW and MXCSR reset values; EC2; GCE), as measured on real
hosts by the reference tools. The BSP starts at the reset vector 0xFFFFFFF0; APs start at
the SEV-ES reset block address from the firmware footer.
"""

from __future__ import annotations

from cvmlaunch.abi.vmsa import SaveArea, Segment
from cvmlaunch.guest.spec import Vmm

BSP_RESET_ADDRESS = 0xFFFFFFF0

EFER_SVME = 0x1000
CR4_MCE = 0x40
CR0_ET = 0x10
DR7_RESET = 0x400
DR6_RESET = 0xFFFF0FF0
RFLAGS_RESET = 0x2
XCR0_X87 = 0x1
PAT_RESET = 0x0007040600070406
GCE_PAT = 0x00070106
MXCSR_RESET = 0x1F80
X87_FCW_RESET = 0x37F
# EC2 and GCE report a fixed RDX (family 6 style value) instead of the CPUID signature.
CLOUD_RDX = 0x600

_DATA = 0x93
_CODE = 0x9B
_LDT = 0x82
_TSS = 0x8B


def save_area(vmm: Vmm, eip: int, vcpu_signature: int, sev_features: int, bsp: bool) -> SaveArea:
    """The save area of one vCPU starting at `eip` (real mode, CS base = eip & 0xFFFF0000)."""
    code_attr, stack_attr, tr_attr = _CODE, _DATA, _TSS
    rdx, g_pat, mxcsr, fcw = vcpu_signature, PAT_RESET, MXCSR_RESET, X87_FCW_RESET
    if vmm is Vmm.EC2:
        # EC2's BSP code segment is not marked accessed; stack and TR attributes differ too.
        code_attr = 0x9A if bsp else _CODE
        stack_attr, tr_attr = 0x92, 0x83
        rdx, mxcsr, fcw = CLOUD_RDX, 0, 0
    elif vmm is Vmm.GCE:
        rdx, g_pat, mxcsr, fcw = CLOUD_RDX, GCE_PAT, 0, 0
    data = Segment(0, _DATA, 0xFFFF, 0)
    return SaveArea(
        es=data,
        cs=Segment(0xF000, code_attr, 0xFFFF, eip & 0xFFFF0000),
        ss=Segment(0, stack_attr, 0xFFFF, 0),
        ds=data,
        fs=data,
        gs=data,
        gdtr=Segment(0, 0, 0xFFFF, 0),
        ldtr=Segment(0, _LDT, 0xFFFF, 0),
        idtr=Segment(0, 0, 0xFFFF, 0),
        tr=Segment(0, tr_attr, 0xFFFF, 0),
        efer=EFER_SVME,
        cr4=CR4_MCE,
        cr0=CR0_ET,
        dr7=DR7_RESET,
        dr6=DR6_RESET,
        rflags=RFLAGS_RESET,
        rip=eip & 0xFFFF,
        g_pat=g_pat,
        rdx=rdx,
        sev_features=sev_features,
        xcr0=XCR0_X87,
        mxcsr=mxcsr,
        x87_fcw=fcw,
    )
