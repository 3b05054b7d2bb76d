"""OVMF firmware footer: GUIDed table entries and the SEV metadata ("ASEV") layout.

Sources: edk2 OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm (the GUIDed table that ends
0x20 bytes before the end of the image), OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm (the
SEV metadata and its section types), QEMU hw/i386/pc_sysfw_ovmf.c (how a VMM reads them).
GUIDs are kept in their on-disk (EFI mixed-endian) byte order.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from cvmlaunch.abi.guid import guid

# The table's last entry (its footer) ends this many bytes before the end of the image.
FOOTER_END_FROM_IMAGE_END = 0x20

# Each entry, read backwards from its end: [data][u16 total length][GUID].
ENTRY_HEADER = struct.Struct("<H16s")
ENTRY_HEADER_SIZE = ENTRY_HEADER.size  # 18

FOOTER_GUID = guid("96b582de-1fb2-45f7-baea-a366c55a082d")
SEV_ES_RESET_BLOCK_GUID = guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
SEV_HASH_TABLE_RV_GUID = guid("7255371f-3a3b-4b04-927b-1da6efa8d454")
SEV_SECRET_BLOCK_GUID = guid("4c2eb361-7d9b-4cc3-8081-127c90d3d294")
SEV_METADATA_OFFSET_GUID = guid("dc886566-984a-4798-a75e-5585a7bf67cc")
TDX_METADATA_OFFSET_GUID = guid("e47a6535-984a-4798-865e-4685a7bf8ec2")

KNOWN_ENTRY_NAMES = {
    FOOTER_GUID: "footer",
    SEV_ES_RESET_BLOCK_GUID: "SEV-ES reset block",
    SEV_HASH_TABLE_RV_GUID: "SEV hash table area",
    SEV_SECRET_BLOCK_GUID: "SEV secret area",
    SEV_METADATA_OFFSET_GUID: "SEV metadata offset",
    TDX_METADATA_OFFSET_GUID: "TDX metadata offset",
}

# Entry data layouts.
U32 = struct.Struct("<I")  # reset block (AP reset address), metadata offsets (from image end)
BASE_SIZE = struct.Struct("<II")  # hash table area, secret area: GPA and size

# SEV metadata header: signature "ASEV", total length, version, number of sections.
SEV_METADATA_SIGNATURE = b"ASEV"
SEV_METADATA_HEADER = struct.Struct("<4sIII")
SEV_METADATA_VERSION = 1
# One section descriptor: GPA, size, type.
SEV_METADATA_SECTION = struct.Struct("<III")


class SevSectionType(IntEnum):
    """SEV metadata section types (OvmfSevMetadata.asm)."""

    SNP_SEC_MEM = 1
    SNP_SECRETS = 2
    CPUID = 3
    SVSM_CAA = 4
    SNP_KERNEL_HASHES = 0x10
