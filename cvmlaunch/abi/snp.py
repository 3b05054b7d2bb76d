"""AMD SEV-SNP launch-digest ABI: page types and the PAGE_INFO record.

Source: AMD SEV-SNP Firmware ABI Specification (56860), SNP_LAUNCH_UPDATE, "PAGE_INFO
structure" (Table 67 in revision 1.55) and the page-type table beside it.
"""

from __future__ import annotations

import struct
from enum import IntEnum

PAGE_SIZE = 0x1000

# SHA-384 output, the size of GCTX.LD (the launch digest) and of PAGE_INFO.CONTENTS.
LD_SIZE = 48


class PageType(IntEnum):
    """PAGE_TYPE of SNP_LAUNCH_UPDATE / PAGE_INFO."""

    NORMAL = 0x1
    VMSA = 0x2
    ZERO = 0x3
    UNMEASURED = 0x4
    SECRETS = 0x5
    CPUID = 0x6

    @property
    def measures_contents(self) -> bool:
        """Whether PAGE_INFO.CONTENTS is the SHA-384 of the page (else 48 zero bytes)."""
        return self in (PageType.NORMAL, PageType.VMSA)


# PAGE_INFO: DIGEST_CUR[48] CONTENTS[48] LENGTH:u16 PAGE_TYPE:u8 IMI_PAGE:u8
# reserved:u8 VMPL1_PERMS:u8 VMPL2_PERMS:u8 VMPL3_PERMS:u8 GPA:u64, little-endian.
PAGE_INFO = struct.Struct("<48s48sHBBBBBBQ")
PAGE_INFO_SIZE = 0x70
PAGE_INFO_OFFSETS = {
    "DIGEST_CUR": 0x00,
    "CONTENTS": 0x30,
    "LENGTH": 0x60,
    "PAGE_TYPE": 0x62,
    "IMI_PAGE": 0x63,
    "VMPL1_PERMS": 0x65,
    "VMPL2_PERMS": 0x66,
    "VMPL3_PERMS": 0x67,
    "GPA": 0x68,
}

ZERO_CONTENTS = bytes(LD_SIZE)

# KVM passes this GPA for every vCPU's VMSA in SNP_LAUNCH_UPDATE during SNP_LAUNCH_FINISH
# (arch/x86/kvm/svm/sev.c: bits 47:12 set), whatever GPA the guest later uses for it.
KVM_VMSA_GPA = 0xFFFFFFFFF000


class SevFeature(IntEnum):
    """Bits of the VMSA SEV_FEATURES field (AMD APM vol. 2, "SEV_FEATURES")."""

    SNP_ACTIVE = 0
    VTOM = 1
    REFLECT_VC = 2
    RESTRICTED_INJECTION = 3
    ALTERNATE_INJECTION = 4
    DEBUG_SWAP = 5
    PREVENT_HOST_IBS = 6
    BTB_ISOLATION = 7
    VMPL_SSS = 8
    SECURE_TSC = 9
    VMGEXIT_PARAMETER = 10
    IBS_VIRTUALIZATION = 12
    VMSA_REG_PROT = 14
    SMT_PROTECTION = 15


SEV_FEATURES_DEFINED = sum(1 << bit for bit in SevFeature)


def sev_feature_names(value: int) -> list[str]:
    """Names of the SEV_FEATURES bits set in `value`; undefined bits as `bitN`."""
    names = [f.name for f in SevFeature if value >> f & 1]
    names += [f"bit{b}" for b in range(64) if value >> b & 1 and not SEV_FEATURES_DEFINED >> b & 1]
    return names


class GuestPolicyBit(IntEnum):
    """Single-bit fields of the SNP guest POLICY (SNP ABI 56860, "Guest Policy")."""

    SMT = 16
    RESERVED_MBO = 17
    MIGRATE_MA = 18
    DEBUG = 19
    SINGLE_SOCKET = 20
    CXL_ALLOW = 21
    MEM_AES_256_XTS = 22
    RAPL_DIS = 23
    CIPHERTEXT_HIDING = 24
    PAGE_SWAP_DISABLE = 25


# Bits 63:26 of the guest policy are reserved and must be zero; bit 17 must be one.
GUEST_POLICY_MBZ = ~((1 << 26) - 1) & ((1 << 64) - 1)
GUEST_POLICY_MBO = 1 << GuestPolicyBit.RESERVED_MBO
# QEMU's default guest policy (sev-snp-guest "policy"): SMT allowed, and the must-be-one bit.
GUEST_POLICY_QEMU_DEFAULT = 1 << GuestPolicyBit.SMT | GUEST_POLICY_MBO
HOST_DATA_SIZE = 32
