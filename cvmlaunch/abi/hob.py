"""UEFI PI hand-off blocks (HOBs): the TD HOB a TDX VMM writes for TDVF.

Sources: UEFI PI specification vol. 3 (EFI_HOB_HANDOFF_INFO_TABLE, EFI_HOB_RESOURCE_DESCRIPTOR,
EFI_HOB_GENERIC_HEADER) and QEMU hw/i386/tdvf-hob.c (which ones a TD HOB holds).
"""

from __future__ import annotations

import struct
from enum import IntEnum

# Every HOB starts with: u16 type, u16 length, u32 reserved.
HOB_HEADER = struct.Struct("<HHI")
HOB_ALIGNMENT = 8


class HobType(IntEnum):
    HANDOFF = 0x0001
    RESOURCE_DESCRIPTOR = 0x0003
    END_OF_HOB_LIST = 0xFFFF


# EFI_HOB_HANDOFF_INFO_TABLE: header, Version, BootMode, EfiMemoryTop, EfiMemoryBottom,
# EfiFreeMemoryTop, EfiFreeMemoryBottom, EfiEndOfHobList.
HANDOFF_INFO_TABLE = struct.Struct("<HHIIIQQQQQ")
HANDOFF_INFO_TABLE_VERSION = 9
BOOT_WITH_FULL_CONFIGURATION = 0

# EFI_HOB_RESOURCE_DESCRIPTOR: header, Owner GUID, ResourceType, ResourceAttribute,
# PhysicalStart, ResourceLength.
RESOURCE_DESCRIPTOR = struct.Struct("<HHI16sIIQQ")


class ResourceType(IntEnum):
    SYSTEM_MEMORY = 0x0
    MEMORY_UNACCEPTED = 0x7


# PRESENT | INITIALIZED | TESTED: what QEMU gives every TD RAM range.
RESOURCE_ATTRIBUTES_TESTED_RAM = 0x7
