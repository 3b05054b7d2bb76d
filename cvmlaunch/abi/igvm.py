"""IGVM (Independent Guest Virtual Machine) file format: numbers and byte layouts.

Source: the format definition `microsoft/igvm:igvm_defs/src/lib.rs` (igvm_defs 0.4), cross-
checked with `microsoft/igvm-tooling:src/igvm/structure/igvmfileformat.py`. Names follow the
spec without its `IGVM_VHT_` / `IGVM_VHS_` prefixes. All fields are little-endian.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

from cvmlaunch.namedtuple import NamedTuple

IGVM_MAGIC = 0x4D564749  # "IGVM" read as a little-endian u32
IGVM_MAGIC_BYTES = b"IGVM"

# IGVM_FIXED_HEADER: magic, format_version, variable_header_offset, variable_header_size,
# total_file_size, checksum (CRC-32 of the fixed and variable headers, itself taken as 0).
FIXED_HEADER_V1 = struct.Struct("<6I")
# Version 2 appends architecture and page_size.
FIXED_HEADER_V2 = struct.Struct("<8I")
CHECKSUM_OFFSET = 20
ARCHITECTURE_X64 = 0
IGVM_PAGE_SIZE = 0x1000
PAGE_SIZE_2MB = 0x200000

# IGVM_VHS_VARIABLE_HEADER: type, length (of the payload, without the 8-byte header). Every
# entry starts 8-byte aligned.
VARIABLE_HEADER = struct.Struct("<II")
HEADER_ALIGNMENT = 8
# A loader may ignore an entry it does not know if its type has this bit.
OPTIONAL_BIT = 1 << 31


class VariableHeaderType(IntEnum):
    """IGVM_VARIABLE_HEADER_TYPE."""

    SUPPORTED_PLATFORM = 0x001
    GUEST_POLICY = 0x101
    RELOCATABLE_REGION = 0x102
    PAGE_TABLE_RELOCATION_REGION = 0x103
    PARAMETER_AREA = 0x301
    PAGE_DATA = 0x302
    PARAMETER_INSERT = 0x303
    VP_CONTEXT = 0x304
    REQUIRED_MEMORY = 0x305
    VP_COUNT_PARAMETER = 0x307
    SRAT = 0x308
    MADT = 0x309
    MMIO_RANGES = 0x30A
    SNP_ID_BLOCK = 0x30B
    MEMORY_MAP = 0x30C
    ERROR_RANGE = 0x30D
    COMMAND_LINE = 0x30E
    SLIT = 0x30F
    PPTT = 0x310
    VBS_MEASUREMENT = 0x311
    DEVICE_TREE = 0x312
    ENVIRONMENT_INFO_PARAMETER = 0x313


class Section(IntEnum):
    """The three header sections, which appear in this order and never go back."""

    PLATFORM = 0
    INITIALIZATION = 1
    DIRECTIVE = 2


def section_of(header_type: int) -> Section | None:
    """The section a (non-optional) header type belongs to; None if in none of them."""
    if 0x001 <= header_type <= 0x100:
        return Section.PLATFORM
    if 0x101 <= header_type <= 0x200:
        return Section.INITIALIZATION
    if 0x301 <= header_type <= 0x400:
        return Section.DIRECTIVE
    return None


class PlatformType(IntEnum):
    """IGVM_VHS_SUPPORTED_PLATFORM.platform_type."""

    NATIVE = 0x00
    VSM_ISOLATION = 0x01
    SEV_SNP = 0x02
    TDX = 0x03
    SEV = 0x04
    SEV_ES = 0x05


class PageDataType(IntEnum):
    """IGVM_VHS_PAGE_DATA.data_type."""

    NORMAL = 0
    SECRETS = 1
    CPUID_DATA = 2
    CPUID_XF = 3


class PageDataFlags(IntFlag):
    """IGVM_VHS_PAGE_DATA.flags; bits 3-31 are reserved."""

    IS_2MB_PAGE = 1 << 0
    UNMEASURED = 1 << 1
    # igvm-tooling calls bit 2 GUEST_INVALID; the spec renamed it SHARED.
    SHARED = 1 << 2


PAGE_DATA_FLAGS_KNOWN = int(
    PageDataFlags.IS_2MB_PAGE | PageDataFlags.UNMEASURED | PageDataFlags.SHARED
)


class RequiredMemoryFlags(IntFlag):
    """IGVM_VHS_REQUIRED_MEMORY.flags; bits 1-31 are reserved."""

    VTL2_PROTECTABLE = 1 << 0


# Header payloads (the part after IGVM_VHS_VARIABLE_HEADER).
# SUPPORTED_PLATFORM: compatibility_mask, highest_vtl, platform_type, platform_version,
# shared_gpa_boundary.
SUPPORTED_PLATFORM = struct.Struct("<IBBHQ")
# GUEST_POLICY: policy, compatibility_mask, reserved.
GUEST_POLICY = struct.Struct("<QII")
# PARAMETER_AREA: number_of_bytes, parameter_area_index, file_offset (0: zeros).
PARAMETER_AREA = struct.Struct("<QII")
# PAGE_DATA: gpa, compatibility_mask, file_offset (0: a page of zeros), flags, data_type,
# reserved.
PAGE_DATA = struct.Struct("<QIIIHH")
# PARAMETER_INSERT: gpa, compatibility_mask, parameter_area_index.
PARAMETER_INSERT = struct.Struct("<QII")
# VP_CONTEXT: gpa, compatibility_mask, file_offset, vp_index, reserved (20 bytes: the next
# entry starts after 4 bytes of padding).
VP_CONTEXT = struct.Struct("<QIIHH")
# REQUIRED_MEMORY: gpa, compatibility_mask, number_of_bytes, flags, reserved.
REQUIRED_MEMORY = struct.Struct("<QIIII")
# PARAMETER (the payload of every parameter-usage header): parameter_area_index, byte_offset.
PARAMETER = struct.Struct("<II")
# ERROR_RANGE: gpa, compatibility_mask, size_bytes.
ERROR_RANGE = struct.Struct("<QII")
# SNP_ID_BLOCK: compatibility_mask, author_key_enabled, reserved[3], ld[48], family_id[16],
# image_id[16], version, guest_svn, id_key_algorithm, author_key_algorithm, id_key_signature
# (r[72], s[72]), id_public_key (curve, reserved, qx[72], qy[72]), author_key_signature,
# author_public_key.
SNP_ID_BLOCK = struct.Struct("<IB3s48s16s16sIIII144s152s144s152s")

PARAMETER_USAGE_TYPES = frozenset(
    {
        VariableHeaderType.VP_COUNT_PARAMETER,
        VariableHeaderType.SRAT,
        VariableHeaderType.MADT,
        VariableHeaderType.MMIO_RANGES,
        VariableHeaderType.MEMORY_MAP,
        VariableHeaderType.COMMAND_LINE,
        VariableHeaderType.SLIT,
        VariableHeaderType.PPTT,
        VariableHeaderType.DEVICE_TREE,
        VariableHeaderType.ENVIRONMENT_INFO_PARAMETER,
    }
)

# The payload size of every header type we decode; a header of one of these types with any
# other length is malformed.
PAYLOAD_SIZE: dict[VariableHeaderType, int] = {
    VariableHeaderType.SUPPORTED_PLATFORM: SUPPORTED_PLATFORM.size,
    VariableHeaderType.GUEST_POLICY: GUEST_POLICY.size,
    VariableHeaderType.PARAMETER_AREA: PARAMETER_AREA.size,
    VariableHeaderType.PAGE_DATA: PAGE_DATA.size,
    VariableHeaderType.PARAMETER_INSERT: PARAMETER_INSERT.size,
    VariableHeaderType.VP_CONTEXT: VP_CONTEXT.size,
    VariableHeaderType.REQUIRED_MEMORY: REQUIRED_MEMORY.size,
    VariableHeaderType.SNP_ID_BLOCK: SNP_ID_BLOCK.size,
    VariableHeaderType.ERROR_RANGE: ERROR_RANGE.size,
    **dict.fromkeys(PARAMETER_USAGE_TYPES, PARAMETER.size),
}


# Decoded payloads, one record per header type (field names as in the spec).


class SupportedPlatform(NamedTuple):
    """SUPPORTED_PLATFORM: one platform the file targets and the mask bit it owns."""

    compatibility_mask: int
    highest_vtl: int
    platform_type: int
    platform_version: int
    shared_gpa_boundary: int


class GuestPolicy(NamedTuple):
    """GUEST_POLICY: the launch policy (for SEV-SNP, the SNP guest policy)."""

    policy: int
    compatibility_mask: int


class ParameterArea(NamedTuple):
    """PARAMETER_AREA: a host-written area, `file_offset` 0 for one that starts zeroed."""

    number_of_bytes: int
    parameter_area_index: int
    file_offset: int


class PageData(NamedTuple):
    """PAGE_DATA: one 4 KiB (or 2 MiB) page; `data` None for a page of zeros."""

    gpa: int
    compatibility_mask: int
    file_offset: int
    flags: PageDataFlags
    data_type: PageDataType
    data: bytes | None

    @property
    def size(self) -> int:
        is_2mb = self.flags & PageDataFlags.IS_2MB_PAGE
        return PAGE_SIZE_2MB if is_2mb else IGVM_PAGE_SIZE


class ParameterInsert(NamedTuple):
    """PARAMETER_INSERT: the parameter area `parameter_area_index` placed at `gpa`."""

    gpa: int
    compatibility_mask: int
    parameter_area_index: int


class ParameterUsage(NamedTuple):
    """A parameter header (VP_COUNT_PARAMETER, MEMORY_MAP, COMMAND_LINE, ...): what the
    loader writes at `byte_offset` of a parameter area. Never measured."""

    parameter_area_index: int
    byte_offset: int


class VpContext(NamedTuple):
    """VP_CONTEXT: a vCPU's initial state at `gpa`; `data` is the 4 KiB VMSA when the header
    applies to an SEV-SNP or SEV-ES platform, else None (not read)."""

    gpa: int
    compatibility_mask: int
    file_offset: int
    vp_index: int
    data: bytes | None


class RequiredMemory(NamedTuple):
    """REQUIRED_MEMORY: guest memory the loader must provide (not measured)."""

    gpa: int
    compatibility_mask: int
    number_of_bytes: int
    flags: int


class ErrorRange(NamedTuple):
    """ERROR_RANGE: host-visible memory where the guest reports errors (not measured)."""

    gpa: int
    compatibility_mask: int
    size_bytes: int


class SnpIdBlock(NamedTuple):
    """SNP_ID_BLOCK: the signed ID block a loader hands to SNP_LAUNCH_FINISH. It carries no
    policy: the signed block takes POLICY from the GUEST_POLICY header."""

    compatibility_mask: int
    author_key_enabled: int
    ld: bytes
    family_id: bytes
    image_id: bytes
    version: int
    guest_svn: int
    id_key_algorithm: int
    author_key_algorithm: int
    id_key_signature: bytes
    id_public_key: bytes
    author_key_signature: bytes
    author_public_key: bytes


Body = (
    SupportedPlatform
    | GuestPolicy
    | ParameterArea
    | PageData
    | ParameterInsert
    | ParameterUsage
    | VpContext
    | RequiredMemory
    | ErrorRange
    | SnpIdBlock
)
