"""Intel TDX: the TDVF metadata layout, the MRTD measurement records, and the TD identity
fields a VMM chooses (ATTRIBUTES, XFAM).

Sources: TDVF Design Guide and td-shim specification (TDVF_DESCRIPTOR, TDVF_SECTION), edk2
OvmfPkg/ResetVector/X64/IntelTdxMetadata.asm, QEMU hw/i386/tdvf.c, the TDX module sources
(tdh_mem_page_add.c, tdh_mr_extend.c: the 128-byte SHA-384 update blocks; check_xfam,
TDX_XFAM_FIXED0/1) and Linux arch/x86/include/asm/shared/tdx.h (attribute bit names).
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

from cvmlaunch.abi.guid import guid

PAGE_SIZE = 0x1000

# The 16 bytes right before a TDVF descriptor (TDX metadata GUID).
TDX_METADATA_GUID = guid("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae")
# td-shim images keep the descriptor's file offset in a u32 this far before the image end.
TDSHIM_OFFSET_FROM_END = 0x20

# TDVF_DESCRIPTOR: Signature "TDVF", Length (16 + 32 n), Version, NumberOfSectionEntries.
TDVF_SIGNATURE = b"TDVF"
TDVF_VERSION = 1
TDVF_DESCRIPTOR = struct.Struct("<4sIII")
# TDVF_SECTION: DataOffset, RawDataSize, MemoryAddress, MemoryDataSize, Type, Attributes.
TDVF_SECTION = struct.Struct("<IIQQII")


class TdvfSectionType(IntEnum):
    """TDVF_SECTION.Type (TDVF design guide; 7 and 8 from the td-shim specification)."""

    BFV = 0
    CFV = 1
    TD_HOB = 2
    TEMP_MEM = 3
    PERM_MEM = 4
    PAYLOAD = 5
    PAYLOAD_PARAM = 6
    TD_INFO = 7
    TD_PARAMS = 8


# Sections the VMM reads for itself; they are never mapped into the TD.
VMM_ONLY_SECTIONS = frozenset({TdvfSectionType.TD_INFO, TdvfSectionType.TD_PARAMS})
# Sections the firmware image must supply bytes for / must not (QEMU's rules).
SECTIONS_WITH_DATA = frozenset({TdvfSectionType.BFV, TdvfSectionType.CFV})
SECTIONS_WITHOUT_DATA = frozenset(
    {TdvfSectionType.TD_HOB, TdvfSectionType.TEMP_MEM, TdvfSectionType.PERM_MEM}
)


class TdvfAttribute(IntFlag):
    """TDVF_SECTION.Attributes."""

    MR_EXTEND = 1 << 0  # the VMM extends MRTD with the section's contents
    PAGE_AUG = 1 << 1  # the guest accepts the pages later (TDH.MEM.PAGE.AUG); not measured


# (~ on an IntFlag would flip only the defined flags: compute on the plain int.)
TDVF_ATTRIBUTES_RESERVED = 0xFFFFFFFF & ~int(TdvfAttribute.MR_EXTEND | TdvfAttribute.PAGE_AUG)

# MRTD: SHA-384 over 128-byte blocks. TDH.MEM.PAGE.ADD hashes one block per 4 KiB page;
# TDH.MR.EXTEND hashes one block per 256-byte chunk, followed by the chunk itself.
MRTD_SIZE = 48
MR_EXTEND_CHUNK = 256
PAGE_ADD_TAG = b"MEM.PAGE.ADD"
MR_EXTEND_TAG = b"MR.EXTEND"
# The 16-byte zero-padded operation name, the GPA, then zeros to 128 bytes.
MRTD_RECORD = struct.Struct("<16sQ104x")


class TdAttribute(IntFlag):
    """TD ATTRIBUTES (TD_PARAMS, reported in TDINFO and quotes); other bits are reserved."""

    DEBUG = 1 << 0
    HGS_PLUS_PROF = 1 << 4
    PERF_PROF = 1 << 5
    PMT_PROF = 1 << 6
    ICSSD = 1 << 16
    LASS = 1 << 27
    SEPT_VE_DISABLE = 1 << 28
    MIGRATABLE = 1 << 29
    PKS = 1 << 30
    KL = 1 << 31
    TPA = 1 << 62
    PERFMON = 1 << 63


TD_ATTRIBUTES_DEFINED = sum(a.value for a in TdAttribute)


def td_attributes_from_names(names: list[str]) -> int:
    """ATTRIBUTES from bit names (any case); ValueError naming the known ones otherwise."""
    value = 0
    for name in names:
        try:
            value |= TdAttribute[name.strip().upper()].value
        except KeyError:
            known = ", ".join(a.name or "" for a in TdAttribute)
            raise ValueError(f"unknown TD attribute {name!r} (known: {known})") from None
    return value


# QEMU's tdx-guest default: SEPT #VE disabled.
TD_ATTRIBUTES_QEMU_DEFAULT = TdAttribute.SEPT_VE_DISABLE.value


class XfamBit(IntFlag):
    """XFAM: the XCR0 / IA32_XSS state components a TD may enable."""

    X87 = 1 << 0
    SSE = 1 << 1
    AVX = 1 << 2
    MPX_BNDREGS = 1 << 3
    MPX_BNDCSR = 1 << 4
    AVX512_OPMASK = 1 << 5
    AVX512_ZMM_HI256 = 1 << 6
    AVX512_HI16_ZMM = 1 << 7
    PT = 1 << 8
    PKRU = 1 << 9
    PASID = 1 << 10
    CET_U = 1 << 11
    CET_S = 1 << 12
    HDC = 1 << 13
    UINTR = 1 << 14
    LBR = 1 << 15
    HWP = 1 << 16
    AMX_XTILECFG = 1 << 17
    AMX_XTILEDATA = 1 << 18


# The TDX module's architectural limits: bits outside FIXED0 must be 0, FIXED1 must be 1.
XFAM_FIXED0 = 0x0006DBE7
XFAM_FIXED1 = 0x00000003
# State components that exist only together (TDX module check_xfam).
XFAM_GROUPS = (
    XfamBit.AVX512_OPMASK | XfamBit.AVX512_ZMM_HI256 | XfamBit.AVX512_HI16_ZMM,
    XfamBit.CET_U | XfamBit.CET_S,
    XfamBit.AMX_XTILECFG | XfamBit.AMX_XTILEDATA,
)
MR_CONFIG_SIZE = 48  # MRCONFIGID, MROWNER, MROWNERCONFIG


def flag_names(flags: type[IntFlag], value: int) -> list[str]:
    """Names of the set bits of `value`, low to high; bits `flags` does not define as `bitN`."""
    known = {member.value: member.name for member in flags}
    return [known.get(1 << bit) or f"bit{bit}" for bit in range(64) if value >> bit & 1]
