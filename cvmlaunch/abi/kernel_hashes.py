"""The SEV hashes table that QEMU fills for measured direct boot (-kernel/-initrd/-append).

Source: QEMU target/i386/sev.c (`SevHashTable`, `PaddedSevHashTable`) and edk2
OvmfPkg/AmdSev/BlobVerifierLibSevHashes. Packed, little-endian, GUIDs in EFI byte order:
table GUID, u16 length (168), then three entries (GUID, u16 length 50, SHA-256), in the
order cmdline, initrd, kernel; zero-padded to a multiple of 16 bytes (176).
"""

from __future__ import annotations

import struct

from cvmlaunch.abi.guid import guid

TABLE_GUID = guid("9438d606-4f22-4cc9-b479-a793d411fd21")
CMDLINE_GUID = guid("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
INITRD_GUID = guid("44baf731-3a2f-4bd7-9af1-41e29169781d")
KERNEL_GUID = guid("4de79437-abd2-427f-b835-d5b172d2045b")

ENTRY = struct.Struct("<16sH32s")  # 50 bytes
HEADER = struct.Struct("<16sH")  # 18 bytes
TABLE_SIZE = HEADER.size + 3 * ENTRY.size  # 168
PADDED_TABLE_SIZE = (TABLE_SIZE + 15) & ~15  # 176


def pack_table(cmdline_sha256: bytes, initrd_sha256: bytes, kernel_sha256: bytes) -> bytes:
    """The padded 176-byte table for the three SHA-256 digests."""
    table = HEADER.pack(TABLE_GUID, TABLE_SIZE)
    for entry_guid, digest in (
        (CMDLINE_GUID, cmdline_sha256),
        (INITRD_GUID, initrd_sha256),
        (KERNEL_GUID, kernel_sha256),
    ):
        table += ENTRY.pack(entry_guid, ENTRY.size, digest)
    return table.ljust(PADDED_TABLE_SIZE, b"\0")
