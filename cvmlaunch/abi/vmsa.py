"""The SEV-ES save area (VMSA) page: field offsets and packing.

Source: AMD64 Architecture Programmer's Manual vol. 2, appendix B "VMCB Layout, State Save
Area" (SEV-ES layout), and Linux arch/x86/include/asm/svm.h `struct sev_es_save_area`.
Only the fields a launch sets are named; every other byte of the 4 KiB page is zero.
"""

from __future__ import annotations

import struct

from cvmlaunch.abi.snp import PAGE_SIZE
from cvmlaunch.namedtuple import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any


class Segment(NamedTuple):
    """A VMCB segment register: selector, attributes, limit, base (16 bytes)."""

    selector: int = 0
    attrib: int = 0
    limit: int = 0
    base: int = 0


SEGMENT = struct.Struct("<HHIQ")

# Segment registers, 16 bytes each, in save-area order.
SEGMENT_OFFSETS = {
    "es": 0x000,
    "cs": 0x010,
    "ss": 0x020,
    "ds": 0x030,
    "fs": 0x040,
    "gs": 0x050,
    "gdtr": 0x060,
    "ldtr": 0x070,
    "idtr": 0x080,
    "tr": 0x090,
}

# Scalar fields: (offset, struct format).
FIELD_OFFSETS: dict[str, tuple[int, str]] = {
    "vmpl": (0x0CA, "<B"),
    "cpl": (0x0CB, "<B"),
    "efer": (0x0D0, "<Q"),
    "xss": (0x140, "<Q"),
    "cr4": (0x148, "<Q"),
    "cr3": (0x150, "<Q"),
    "cr0": (0x158, "<Q"),
    "dr7": (0x160, "<Q"),
    "dr6": (0x168, "<Q"),
    "rflags": (0x170, "<Q"),
    "rip": (0x178, "<Q"),
    "rsp": (0x1D8, "<Q"),
    "rax": (0x1F8, "<Q"),
    "g_pat": (0x268, "<Q"),
    "pkru": (0x2E8, "<I"),
    "tsc_aux": (0x2EC, "<I"),
    "rcx": (0x308, "<Q"),
    "rdx": (0x310, "<Q"),
    "rbx": (0x318, "<Q"),
    "rbp": (0x328, "<Q"),
    "rsi": (0x330, "<Q"),
    "rdi": (0x338, "<Q"),
    "sev_features": (0x3B0, "<Q"),
    "vintr_ctrl": (0x3B8, "<Q"),
    "virtual_tom": (0x3C8, "<Q"),
    "xcr0": (0x3E8, "<Q"),
    "mxcsr": (0x408, "<I"),
    "x87_fcw": (0x410, "<H"),
}


class SaveArea(NamedTuple):
    """The initial register state of one vCPU as it enters the VMSA page."""

    es: Segment
    cs: Segment
    ss: Segment
    ds: Segment
    fs: Segment
    gs: Segment
    gdtr: Segment
    ldtr: Segment
    idtr: Segment
    tr: Segment
    efer: int
    cr4: int
    cr0: int
    dr7: int
    dr6: int
    rflags: int
    rip: int
    g_pat: int
    rdx: int
    sev_features: int
    xcr0: int
    mxcsr: int
    x87_fcw: int

    @classmethod
    def unpack(cls, page: bytes) -> SaveArea:
        """The fields of a VMSA page (what `pack` writes; the rest of the page is not read)."""
        values: dict[str, Any] = {}
        for name in cls._fields:
            if name in SEGMENT_OFFSETS:
                values[name] = Segment(*SEGMENT.unpack_from(page, SEGMENT_OFFSETS[name]))
            else:
                offset, fmt = FIELD_OFFSETS[name]
                values[name] = struct.unpack_from(fmt, page, offset)[0]
        return cls(**values)

    def pack(self) -> bytes:
        """The 4096-byte VMSA page: save area fields at their offsets, zeros elsewhere."""
        page = bytearray(PAGE_SIZE)
        for name, value in zip(self._fields, self, strict=True):
            if isinstance(value, Segment):
                SEGMENT.pack_into(page, SEGMENT_OFFSETS[name], *value)
            else:
                offset, fmt = FIELD_OFFSETS[name]
                struct.pack_into(fmt, page, offset, value)
        return bytes(page)
