"""The VMSA page KVM hands the PSP for one vCPU, built from the vCPU's KVM register state.

Models what arch/x86/kvm/svm/sev.c sev_es_sync_vmsa copies out of the VMCB, with the
VMCB's own conversions: segment attributes packed as in svm_set_segment, EFER.SVME always
set, CR0.CD/NW cleared (the CD_NW_CLEARED quirk), CR4.MCE taken from the host (which has it
on), CPL from SS.DPL. Field offsets: AMD APM vol. 2 appendix B (SEV-ES save area), as
cvmlaunch.abi.vmsa records them.
"""

from __future__ import annotations

import struct
from typing import Any

from cvmlaunch.abi.snp import PAGE_SIZE
from cvmlaunch.abi.vmsa import FIELD_OFFSETS, SEGMENT, SEGMENT_OFFSETS
from cvmlaunch.sim.vcpu import DR6_RESET, DR7_RESET, XCR0_RESET, Vcpu

EFER_SVME = 1 << 12
CR0_CD = 1 << 30
CR0_NW = 1 << 29
CR4_MCE = 1 << 6
# R8..R15 follow RDI in the save area (APM vol. 2 table B-4); abi.vmsa does not name them.
_R8_OFFSET = 0x340
_GPRS = ("rax", "rbx", "rcx", "rdx", "rsp", "rbp", "rsi", "rdi")
_SEGMENTS = {
    "es": "es",
    "cs": "cs",
    "ss": "ss",
    "ds": "ds",
    "fs": "fs",
    "gs": "gs",
    "ldtr": "ldt",
    "tr": "tr",
}


def _attrib(seg: Any) -> int:
    """kvm_segment flags as the VMCB's 12-bit attribute (an unusable segment is not present)."""
    present = int(bool(seg.present) and not seg.unusable)
    return int(
        seg.type & 0xF
        | (seg.s & 1) << 4
        | (seg.dpl & 3) << 5
        | present << 7
        | (seg.avl & 1) << 8
        | (seg.l & 1) << 9
        | (seg.db & 1) << 10
        | (seg.g & 1) << 11
    )


def vmsa_page(vcpu: Vcpu, sev_features: int) -> bytes:
    """The 4096-byte VMSA of `vcpu` with SEV_FEATURES `sev_features`; zeros elsewhere."""
    page = bytearray(PAGE_SIZE)
    regs, sregs, fpu = vcpu.regs, vcpu.sregs, vcpu.fpu
    for ours, kvms in _SEGMENTS.items():
        seg = getattr(sregs, kvms)
        SEGMENT.pack_into(
            page, SEGMENT_OFFSETS[ours], seg.selector, _attrib(seg), seg.limit, seg.base
        )
    for ours, kvms in (("gdtr", "gdt"), ("idtr", "idt")):
        table = getattr(sregs, kvms)
        SEGMENT.pack_into(page, SEGMENT_OFFSETS[ours], 0, 0, table.limit, table.base)
    fields = {
        "cpl": sregs.ss.dpl & 3,
        "efer": sregs.efer | EFER_SVME,
        "cr4": sregs.cr4 | CR4_MCE,
        "cr3": sregs.cr3,
        "cr0": sregs.cr0 & ~(CR0_CD | CR0_NW),
        "dr7": DR7_RESET,
        "dr6": DR6_RESET,
        "rflags": regs.rflags,
        "rip": regs.rip,
        "g_pat": vcpu.pat,
        "sev_features": sev_features,
        "xcr0": XCR0_RESET,
        "mxcsr": fpu.mxcsr,
        "x87_fcw": fpu.fcw,
    } | {name: getattr(regs, name) for name in _GPRS}
    for name, value in fields.items():
        offset, fmt = FIELD_OFFSETS[name]
        struct.pack_into(fmt, page, offset, value)
    struct.pack_into("<8Q", page, _R8_OFFSET, *(getattr(regs, f"r{n}") for n in range(8, 16)))
    return bytes(page)
