"""Intel TDX DCAP quotes, versions 4 and 5 (ECDSA P-256 attestation key): byte layouts only.

Source: Intel "TDX DCAP Quote Generation Library and Quote Verification Library" spec
(Quote Format v4 and v5: Quote Header, TD Quote Body / Body Descriptor, Quote Signature
Data, QE Certification Data), cross-checked with Intel's `sgx_quote_4.h` / `sgx_quote_5.h`
and the SGX `sgx_report_body_t` (QE report). Every multi-byte integer is little-endian;
the ECDSA signatures (r || s) and the attestation key (X || Y) are big-endian.

A quote is `header | [v5: body descriptor] | TD report body | signature data`; the quote
signature covers everything before the signature data.
"""

from __future__ import annotations

import struct
from enum import IntEnum

# -- Quote header (48 bytes) ------------------------------------------------------------

# Version, attestation key type, TEE type, 4 reserved bytes (QE_SVN/PCE_SVN in SGX v3
# quotes, zero in TDX quotes), QE vendor id, user data (chosen by the QE).
HEADER = struct.Struct("<HHI4s16s20s")
HEADER_SIZE = 48
HEADER_OFFSETS = {
    "VERSION": 0x00,
    "ATT_KEY_TYPE": 0x02,
    "TEE_TYPE": 0x04,
    "RESERVED": 0x08,
    "QE_VENDOR_ID": 0x0C,
    "USER_DATA": 0x1C,
}
QUOTE_VERSIONS = (4, 5)

# TDREPORT_STRUCT (Intel TDX module ABI): REPORTMACSTRUCT first, whose REPORTTYPE starts with
# TYPE 0x81 (TDX) and SUBTYPE 0. Its MAC is checkable only on the platform that made it.
TDREPORT_SIZE = 1024
TDREPORT_TYPE = b"\x81\x00"
ATT_KEY_TYPE_ECDSA_P256 = 2  # 3 would be ECDSA P-384, which no QE produces
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
# Intel's quoting enclave vendor id, 939A7233-F79C-4CA9-940A-0DB3957F0607.
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# -- Body ---------------------------------------------------------------------------------

# v5 only: {type u16, size u32} right after the header, the body after it.
BODY_DESCRIPTOR = struct.Struct("<HI")
BODY_DESCRIPTOR_SIZE = 6


class BodyType(IntEnum):
    """The v5 body descriptor's type (a v4 quote always carries a TDX 1.0 body)."""

    SGX_ENCLAVE_REPORT = 1  # an SGX quote: not a TD quote
    TD_REPORT_10 = 2  # TDX 1.0
    TD_REPORT_15 = 3  # TDX 1.5: adds TEE_TCB_SVN_2 and MRSERVICETD


# The TD body types and their sizes.
TD_BODY_SIZES = {BodyType.TD_REPORT_10: 584, BodyType.TD_REPORT_15: 648}

# TD report body: TEE_TCB_SVN[16] MRSEAM[48] MRSIGNERSEAM[48] SEAMATTRIBUTES:u64
# TDATTRIBUTES:u64 XFAM:u64 MRTD[48] MRCONFIGID[48] MROWNER[48] MROWNERCONFIG[48]
# RTMR0..3[48 each] REPORTDATA[64]; TDX 1.5 appends TEE_TCB_SVN_2[16] MRSERVICETD[48].
TD_REPORT_BODY_10 = struct.Struct("<16s48s48sQQQ48s48s48s48s48s48s48s48s64s")
TD_REPORT_BODY_15 = struct.Struct(TD_REPORT_BODY_10.format + "16s48s")
TD_REPORT_BODIES = {
    BodyType.TD_REPORT_10: TD_REPORT_BODY_10,
    BodyType.TD_REPORT_15: TD_REPORT_BODY_15,
}
# Offsets relative to the body start (0x30 in a v4 quote, 0x36 in a v5 quote).
TD_REPORT_BODY_OFFSETS = {
    "TEE_TCB_SVN": 0x000,
    "MRSEAM": 0x010,
    "MRSIGNERSEAM": 0x040,
    "SEAMATTRIBUTES": 0x070,
    "TDATTRIBUTES": 0x078,
    "XFAM": 0x080,
    "MRTD": 0x088,
    "MRCONFIGID": 0x0B8,
    "MROWNER": 0x0E8,
    "MROWNERCONFIG": 0x118,
    "RTMR0": 0x148,
    "RTMR1": 0x178,
    "RTMR2": 0x1A8,
    "RTMR3": 0x1D8,
    "REPORTDATA": 0x208,
    "TEE_TCB_SVN_2": 0x248,  # TDX 1.5 body only
    "MRSERVICETD": 0x258,  # TDX 1.5 body only
}
TEE_TCB_SVN_SIZE = 16
MEASUREMENT_SIZE = 48  # MRTD, MRSEAM, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMRn
RTMR_COUNT = 4
REPORT_DATA_SIZE = 64

# -- Signature data -------------------------------------------------------------------------

# Right after the body: its length, then the quote signature, the attestation key and the
# certification data.
SIGNATURE_DATA_LEN = struct.Struct("<I")
ECDSA_SIGNATURE_SIZE = 64  # r || s, 32 bytes each, big-endian
ECDSA_KEY_SIZE = 64  # X || Y, 32 bytes each, big-endian (SEC1 without the 0x04 prefix)
# Certification data: {type u16, size u32} then `size` bytes.
CERT_DATA_HEADER = struct.Struct("<HI")
CERT_DATA_HEADER_SIZE = 6


class CertDataType(IntEnum):
    """Certification data type (QE Certification Data, "Certification Data Type")."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048_OAEP = 2
    PPID_RSA3072_OAEP = 3
    PCK_LEAF = 4
    PCK_CHAIN = 5  # PEM: PCK leaf, PCK Platform/Processor CA, Intel SGX Root CA
    QE_REPORT = 6  # QE report certification data, wrapping a PCK chain
    PLATFORM_MANIFEST = 7


# QE report certification data: QE report[384], its signature[64] (by the PCK key),
# QE auth data {size u16, data}, then certification data (type 5, the PCK chain).
QE_AUTH_DATA_LEN = struct.Struct("<H")

# The QE report is an SGX REPORT body: CPUSVN[16] MISCSELECT:u32 reserved[28]
# ATTRIBUTES[16] MRENCLAVE[32] reserved[32] MRSIGNER[32] reserved[96] ISVPRODID:u16
# ISVSVN:u16 reserved[60] REPORTDATA[64].
QE_REPORT = struct.Struct("<16sI28x16s32s32x32s96xHH60x64s")
QE_REPORT_SIZE = 384
QE_REPORT_OFFSETS = {
    "CPUSVN": 0x000,
    "MISCSELECT": 0x010,
    "ATTRIBUTES": 0x030,
    "MRENCLAVE": 0x040,
    "MRSIGNER": 0x080,
    "ISVPRODID": 0x100,
    "ISVSVN": 0x102,
    "REPORTDATA": 0x140,
}

# Intel's TD quoting enclave identity (Intel PCS `tdx/certification/v4/qe/identity`).
TD_QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
TD_QE_ISVPRODID = 2
# Intel's TD_QE identity (PCS `tdx/certification/v4/qe/identity`, as of 2025-06): the QE's
# MISCSELECT and ATTRIBUTES under their masks. ATTRIBUTES bit 1 is DEBUG: a debug QE's
# attestation key could be read out.
TD_QE_MISCSELECT, TD_QE_MISCSELECT_MASK = 0, 0xFFFFFFFF
TD_QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
TD_QE_ATTRIBUTES_MASK = bytes.fromhex("fbffffffffffffff0000000000000000")
# TD ATTRIBUTES bits 7:0 are the "TUD" group (bit 0 DEBUG, 7:1 reserved): any set bit
# means the TD is not trustworthy.
TD_ATTRIBUTES_TUD = 0xFF

# -- PCK certificate (Intel SGX PCK Certificate and CRL Profile) ---------------------------

# The SGX extension: SEQUENCE OF SEQUENCE {OID, value}; FMSPC is an OCTET STRING[6].
SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
FMSPC_OID = "1.2.840.113741.1.13.1.4"
FMSPC_SIZE = 6
