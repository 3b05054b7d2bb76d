"""The TCG crypto-agile event log as a confidential VM's firmware writes it (the CC event
log, CCEL), and the CCEL ACPI table that locates it: byte layouts and numbers only.

Sources: TCG PC Client Platform Firmware Profile (PFP) 1.05/1.06 §10 (TCG_PCR_EVENT,
TCG_PCR_EVENT2, TCG_EfiSpecIDEvent, event types, UEFI_VARIABLE_DATA, UEFI_IMAGE_LOAD_EVENT,
UEFI_PLATFORM_FIRMWARE_BLOB2, UEFI_HANDOFF_TABLE_POINTERS2, TCG_PCClientTaggedEvent),
TCG Algorithm Registry (TPM_ALG_ID), UEFI 2.10 §3.1.3 (EFI_LOAD_OPTION), §10.3 (device path
nodes) and §38.4 (CC measurement: MR index 0 = MRTD, 1..4 = RTMR0..3), ACPI 6.5 §5.2.34
(CCEL table). Every integer is little-endian.

A log is one legacy `TCG_PCR_EVENT` holding the Spec ID event (its digest field is 20 zero
bytes whatever the banks), then `TCG_PCR_EVENT2` records, each with one digest per bank the
Spec ID lists. The firmware reserves LAML bytes and leaves the rest as it found it (0xFF
from edk2, 0x00 from early TDVF), so the log ends at an MR index of 0xFFFFFFFF or at an
all-zero header.
"""

from __future__ import annotations

import struct
from enum import IntEnum

# -- The CCEL ACPI table (56 bytes) -------------------------------------------------------

# Standard ACPI header (signature, length, revision, checksum, OEMID[6], OEM table id[8],
# OEM revision, creator id[4], creator revision), then CcType, CcSubtype, 2 reserved
# bytes, LAML (log area minimum length), LASA (log area start address).
CCEL_TABLE = struct.Struct("<4sIBB6s8sI4sIBBHQQ")
CCEL_TABLE_SIZE = 56
CCEL_SIGNATURE = b"CCEL"
CCEL_TABLE_OFFSETS = {
    "Signature": 0x00,
    "Length": 0x04,
    "Revision": 0x08,
    "Checksum": 0x09,
    "OEMID": 0x0A,
    "OEMTableID": 0x10,
    "OEMRevision": 0x18,
    "CreatorID": 0x1C,
    "CreatorRevision": 0x20,
    "CcType": 0x24,
    "CcSubtype": 0x25,
    "Reserved": 0x26,
    "LAML": 0x28,
    "LASA": 0x30,
}


class CcType(IntEnum):
    """ACPI 6.5 Table 5.149: the confidential computing technology that wrote the log."""

    RESERVED = 0
    SEV = 1
    TDX = 2
    APTEE = 3
    CCA = 4


# -- Measurement registers ----------------------------------------------------------------

# UEFI 2.10 §38.4.1, TDX: CC MR index 0 is MRTD (never extended by the log), 1..4 RTMR0..3.
MR_INDEX_MRTD = 0
MR_INDEX_RTMR0 = 1
RTMR_COUNT = 4
# An MR index of 0xFFFFFFFF is where the log area was never written (0xFF fill).
MR_INDEX_END = 0xFFFFFFFF

# -- Digest banks (TCG Algorithm Registry, TPM_ALG_ID) -------------------------------------


class Alg(IntEnum):
    """A TPM_ALG_ID of a digest bank."""

    TPM_ALG_SHA1 = 0x0004
    TPM_ALG_SHA256 = 0x000B
    TPM_ALG_SHA384 = 0x000C
    TPM_ALG_SHA512 = 0x000D
    TPM_ALG_SM3_256 = 0x0012


DIGEST_SIZES = {
    Alg.TPM_ALG_SHA1: 20,
    Alg.TPM_ALG_SHA256: 32,
    Alg.TPM_ALG_SHA384: 48,
    Alg.TPM_ALG_SHA512: 64,
    Alg.TPM_ALG_SM3_256: 32,
}
# The hashlib name of each bank (sm3 exists only where OpenSSL provides it).
HASHLIB_NAMES = {
    Alg.TPM_ALG_SHA1: "sha1",
    Alg.TPM_ALG_SHA256: "sha256",
    Alg.TPM_ALG_SHA384: "sha384",
    Alg.TPM_ALG_SHA512: "sha512",
    Alg.TPM_ALG_SM3_256: "sm3",
}
# The names trustee and most tools print for a bank.
ALG_NAMES = {
    Alg.TPM_ALG_SHA1: "SHA-1",
    Alg.TPM_ALG_SHA256: "SHA-256",
    Alg.TPM_ALG_SHA384: "SHA-384",
    Alg.TPM_ALG_SHA512: "SHA-512",
    Alg.TPM_ALG_SM3_256: "SM3",
}

# -- Event types (PFP Table 9 and Table 10) -------------------------------------------------


class EventType(IntEnum):
    """An event type, by its PFP spec name."""

    EV_PREBOOT_CERT = 0x0
    EV_POST_CODE = 0x1
    EV_UNUSED = 0x2
    EV_NO_ACTION = 0x3
    EV_SEPARATOR = 0x4
    EV_ACTION = 0x5
    EV_EVENT_TAG = 0x6
    EV_S_CRTM_CONTENTS = 0x7
    EV_S_CRTM_VERSION = 0x8
    EV_CPU_MICROCODE = 0x9
    EV_PLATFORM_CONFIG_FLAGS = 0xA
    EV_TABLE_OF_DEVICES = 0xB
    EV_COMPACT_HASH = 0xC
    EV_IPL = 0xD
    EV_IPL_PARTITION_DATA = 0xE
    EV_NONHOST_CODE = 0xF
    EV_NONHOST_CONFIG = 0x10
    EV_NONHOST_INFO = 0x11
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x12
    EV_EFI_EVENT_BASE = 0x80000000
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2


# dstack's runtime events in RTMR3 (not a TCG type): digest = SHA-384(type as u32le ||
# ":" || name || ":" || payload).
DSTACK_RUNTIME_EVENT = 0x08000001

_EVENT_TYPE_NAMES = {member.value: member.name for member in EventType}


def event_type_name(value: int) -> str:
    """The spec name of an event type, or its hex value when the spec has none."""
    return _EVENT_TYPE_NAMES.get(value) or f"{value:#010x}"


# -- Records ---------------------------------------------------------------------------

# TCG_PCR_EVENT (legacy, SHA-1 form): PCRIndex, EventType, Digest[20], EventSize; data.
PCR_EVENT = struct.Struct("<II20sI")
PCR_EVENT_SIZE = 32
# TCG_PCR_EVENT2: PCRIndex (the CC MR index), EventType, TPML_DIGEST_VALUES.count; then
# count x {u16 AlgorithmId, digest of that bank's size}; then u32 EventSize and the data.
PCR_EVENT2_HEADER = struct.Struct("<III")
PCR_EVENT2_HEADER_SIZE = 12
ALG_ID = struct.Struct("<H")
EVENT_SIZE = struct.Struct("<I")

# TCG_EfiSpecIDEvent: Signature[16], platformClass u32, specVersionMinor u8,
# specVersionMajor u8, specErrata u8, uintnSize u8, numberOfAlgorithms u32; then
# numberOfAlgorithms x {u16 algorithmId, u16 digestSize}; then u8 vendorInfoSize and the info.
SPEC_ID_HEADER = struct.Struct("<16sIBBBBI")
SPEC_ID_HEADER_SIZE = 28
SPEC_ID_ALGORITHM = struct.Struct("<HH")
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
# The signatures of the other EV_NO_ACTION events a CC log may hold (PFP §10.4.5).
NO_ACTION_SIGNATURES = (
    SPEC_ID_SIGNATURE,
    b"SP800-155 Event3",  # PFP §10.4.5.2 (GCE writes one into RTMR0's index)
    b"StartupLocality\0",  # PFP §10.4.5.3
)

# -- Event data -----------------------------------------------------------------------

# UEFI_VARIABLE_DATA: VariableName (GUID), UnicodeNameLength (chars), VariableDataLength;
# then the UTF-16LE name (no NUL) and the data.
VARIABLE_DATA_HEADER = struct.Struct("<16sQQ")
VARIABLE_DATA_HEADER_SIZE = 32
# EFI_GLOBAL_VARIABLE (SecureBoot, PK, KEK, BootOrder, Boot####) and
# EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx), on-disk byte order.
EFI_GLOBAL_VARIABLE = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = bytes.fromhex("cbb219d73a3d9645a3bcdad00e67656f")

# EFI_LOAD_OPTION: Attributes u32, FilePathListLength u16; then the description (UTF-16LE
# with NUL), the device path list, and OptionalData (the rest: for a Linux entry, the
# command line in UTF-16LE).
LOAD_OPTION_HEADER = struct.Struct("<IH")
LOAD_OPTION_HEADER_SIZE = 6
LOAD_OPTION_ACTIVE = 0x00000001
LOAD_OPTION_HIDDEN = 0x00000008

# UEFI_IMAGE_LOAD_EVENT: ImageLocationInMemory, ImageLengthInMemory, ImageLinkTimeAddress,
# LengthOfDevicePath; then the device path.
IMAGE_LOAD_EVENT = struct.Struct("<QQQQ")
IMAGE_LOAD_EVENT_SIZE = 32

# UEFI_PLATFORM_FIRMWARE_BLOB2: u8 BlobDescriptionSize, the description, then BlobBase u64,
# BlobLength u64. UEFI_HANDOFF_TABLE_POINTERS2: u8 TableDescriptionSize, the description,
# then NumberOfTables u64 and {VendorGuid, VendorTable u64} per table.
BLOB2_TAIL = struct.Struct("<QQ")
TABLE_COUNT = struct.Struct("<Q")
CONFIGURATION_TABLE = struct.Struct("<16sQ")

# TCG_PCClientTaggedEvent: taggedEventID u32, taggedEventDataSize u32, then the data.
TAGGED_EVENT = struct.Struct("<II")
TAGGED_EVENT_HEADER_SIZE = 8
# The Linux EFI stub's tags (drivers/firmware/efi/libstub/efi-stub-helper.c).
TAG_LINUX_INITRD = 0x8F3B22EC
TAG_LOAD_OPTIONS = 0x8F3B22ED

# UEFI_GPT_DATA: the 92-byte EFI partition table header, NumberOfPartitions u64, then the
# entries, SizeOfPartitionEntry bytes each.
GPT_HEADER = struct.Struct("<8sIII4xQQQQ16sQIII")
GPT_HEADER_SIZE = 92
GPT_SIGNATURE = b"EFI PART"
GPT_ENTRY_HEAD = struct.Struct("<16s16sQQQ")  # type GUID, unique GUID, first LBA, last LBA, attrs
GPT_ENTRY_NAME_SIZE = 72  # PartitionName, 36 UTF-16 chars

# -- Device path nodes (UEFI 2.10 §10.3) ------------------------------------------------

# EFI_DEVICE_PATH_PROTOCOL: Type u8, SubType u8, Length u16 (header included).
DEVICE_PATH_NODE = struct.Struct("<BBH")
DEVICE_PATH_NODE_SIZE = 4


class DevicePathType(IntEnum):
    """A device path node's Type."""

    HARDWARE = 0x01
    ACPI = 0x02
    MESSAGING = 0x03
    MEDIA = 0x04
    BBS = 0x05
    END = 0x7F


END_ENTIRE = 0xFF  # END subtype: end of the whole path
END_INSTANCE = 0x01  # END subtype: end of one instance, another follows

HW_PCI = 0x01  # Function u8, Device u8
HW_VENDOR = 0x04  # GUID, data
ACPI_ACPI = 0x01  # HID u32, UID u32
MSG_SCSI = 0x02  # TargetId u16, Lun u16
MSG_USB = 0x05  # ParentPortNumber u8, InterfaceNumber u8
MSG_MAC = 0x0B  # MAC address[32], IfType u8
MSG_VENDOR = 0x0A  # GUID, data
MSG_SATA = 0x12  # HBAPortNumber u16, PortMultiplierPortNumber u16, Lun u16
MSG_NVME = 0x17  # NamespaceId u32, EUI-64[8]
MEDIA_HARDDRIVE = 0x01  # see HARDDRIVE
MEDIA_CDROM = 0x02  # BootEntry u32, PartitionStart u64, PartitionSize u64
MEDIA_VENDOR = 0x03  # GUID, data
MEDIA_FILEPATH = 0x04  # UTF-16LE path with NUL
MEDIA_PROTOCOL = 0x05  # GUID
MEDIA_PIWG_FW_FILE = 0x06  # GUID (FvFile)
MEDIA_PIWG_FW_VOL = 0x07  # GUID (Fv)
MEDIA_RELATIVE_OFFSET = 0x08  # Reserved u32, StartingOffset u64, EndingOffset u64

# MEDIA_HARDDRIVE: PartitionNumber u32, PartitionStart u64, PartitionSize u64,
# PartitionSignature[16], MBRType u8 (1 MBR, 2 GPT), SignatureType u8 (1 MBR id, 2 GUID).
HARDDRIVE = struct.Struct("<IQQ16sBB")
# A compressed EISA id's vendor part for "PNP" (ACPI HID), and the PCI root ids.
EISA_PNP = 0x41D0
PNP_PCI_ROOT = 0x0A03
PNP_PCIE_ROOT = 0x0A08
