"""The SEV-SNP ATTESTATION_REPORT and the data around it.

Sources: AMD SEV-SNP Firmware ABI Specification (56860), "ATTESTATION_REPORT Structure",
"TCB_VERSION", "Guest Policy" and "PLATFORM_INFO"; AMD VCEK/VLEK Certificate and KDS
Interface Specification (57230) for the certificate extensions; AMD GHCB Specification
(56421), "SNP Extended Guest Request", for the certificate table.
"""

from __future__ import annotations

import struct
from enum import IntEnum

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0  # the signature covers every byte before it
VERSIONS = (2, 3, 4, 5)
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
ECDSA_COMPONENT_SIZE = 72  # R and S, little-endian, zero-extended from 48 bytes

# Every field up to the end of the signature, little-endian; "x" runs are reserved bytes.
REPORT = struct.Struct(
    "<IIQ16s16sIIQQI4x"  # VERSION .. SIGNER_INFO (0x000-0x04F)
    "64s48s32s48s48s32s32s"  # REPORT_DATA .. REPORT_ID_MA (0x050-0x17F)
    "QBBB21x64s"  # REPORTED_TCB, CPUID_FAM/MOD/STEP, CHIP_ID (0x180-0x1DF)
    "QBBBxBBBxQQQ152x"  # COMMITTED_TCB .. CURRENT_MIT_VECTOR (0x1E0-0x29F)
    "72s72s"  # SIGNATURE R, S (0x2A0-0x32F)
)

OFFSETS = {
    "VERSION": 0x000,
    "GUEST_SVN": 0x004,
    "POLICY": 0x008,
    "FAMILY_ID": 0x010,
    "IMAGE_ID": 0x020,
    "VMPL": 0x030,
    "SIGNATURE_ALGO": 0x034,
    "CURRENT_TCB": 0x038,
    "PLATFORM_INFO": 0x040,
    "SIGNER_INFO": 0x048,
    "REPORT_DATA": 0x050,
    "MEASUREMENT": 0x090,
    "HOST_DATA": 0x0C0,
    "ID_KEY_DIGEST": 0x0E0,
    "AUTHOR_KEY_DIGEST": 0x110,
    "REPORT_ID": 0x140,
    "REPORT_ID_MA": 0x160,
    "REPORTED_TCB": 0x180,
    "CPUID_FAM_ID": 0x188,
    "CHIP_ID": 0x1A0,
    "COMMITTED_TCB": 0x1E0,
    "CURRENT_BUILD": 0x1E8,
    "COMMITTED_BUILD": 0x1EC,
    "LAUNCH_TCB": 0x1F0,
    "LAUNCH_MIT_VECTOR": 0x1F8,
    "CURRENT_MIT_VECTOR": 0x200,
    "SIGNATURE": 0x2A0,
}


def reserved_ranges(version: int) -> tuple[tuple[int, int], ...]:
    """The must-be-zero byte ranges [start, end) of a report of `version`."""
    cpuid = 0x18B if version >= 3 else 0x188  # CPUID_FAM/MOD/STEP exist from version 3
    mitigations = 0x208 if version >= 5 else 0x1F8  # mitigation vectors from version 5
    return (
        (0x04C, 0x050),
        (cpuid, 0x1A0),
        (0x1EB, 0x1EC),
        (0x1EF, 0x1F0),
        (mitigations, SIGNED_SIZE),
        (0x330, REPORT_SIZE),
    )


# SIGNER_INFO (0x048): bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY.
SIGNER_AUTHOR_KEY_EN = 1 << 0
SIGNER_MASK_CHIP_KEY = 1 << 1
SIGNER_INFO_MBZ = ~0x1F & 0xFFFFFFFF


class SigningKey(IntEnum):
    """SIGNER_INFO.SIGNING_KEY: which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


def signing_key(signer_info: int) -> int:
    return signer_info >> 2 & 0x7


class PlatformInfoBit(IntEnum):
    """PLATFORM_INFO bits (bit 6 is not defined in the specs read; shown as bit6)."""

    SMT_EN = 0
    TSME_EN = 1
    ECC_EN = 2
    RAPL_DIS = 3
    CIPHERTEXT_HIDING_DRAM_EN = 4
    ALIAS_CHECK_COMPLETE = 5
    SEV_TIO_EN = 7


# TCB_VERSION byte positions per product line. Milan and Genoa (VCEK structVersion 0) differ
# from Turin onwards (structVersion 1), which adds the FMC SPL.
TCB_LAYOUTS: dict[str, dict[str, int]] = {
    "Milan": {"bl": 0, "tee": 1, "snp": 6, "ucode": 7},
    "Genoa": {"bl": 0, "tee": 1, "snp": 6, "ucode": 7},
    "Turin": {"fmc": 0, "bl": 1, "tee": 2, "snp": 3, "ucode": 7},
}
PRODUCTS = tuple(TCB_LAYOUTS)


def tcb_parts(tcb: int, product: str) -> dict[str, int]:
    """The SPL components of a TCB_VERSION, as `product` lays them out."""
    return {name: tcb >> (8 * byte) & 0xFF for name, byte in TCB_LAYOUTS[product].items()}


def product_of_cpuid(family: int, model: int) -> str | None:
    """The product line of a (combined) CPUID family and model, or None if unknown."""
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:  # Genoa, Bergamo, Siena
            return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


# On Turin and later, CHIP_ID carries 8 meaningful bytes and the VCEK hwID is those 8.
TURIN_HWID_SIZE = 8

# MSG_REPORT_RSP (SNP ABI, "MSG_REPORT_RSP"): what /dev/sev-guest hands back.
MSG_REPORT_RSP = struct.Struct("<II24x")

# GHCB extended guest request: the certificate table, 24-byte entries {GUID, offset, length}
# ending with an all-zero entry; offsets count from the table's start.
CERT_TABLE_ENTRY = struct.Struct("<16sII")
CERT_TABLE_GUIDS = {
    "63da758d-e664-4564-adc5-f4b93be8accd": "vcek",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "vlek",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ask",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ark",
}

# VCEK/VLEK extensions (KDS spec 57230), under 1.3.6.1.4.1.3704.1.
AMD_OID = "1.3.6.1.4.1.3704.1"
VEK_EXTENSIONS = {
    f"{AMD_OID}.1": "struct_version",
    f"{AMD_OID}.2": "product_name",
    f"{AMD_OID}.3.1": "bl",
    f"{AMD_OID}.3.2": "tee",
    f"{AMD_OID}.3.3": "snp",
    f"{AMD_OID}.3.8": "ucode",
    f"{AMD_OID}.3.9": "fmc",
    f"{AMD_OID}.4": "hwid",
    f"{AMD_OID}.5": "csp_id",
}
