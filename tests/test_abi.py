"""Byte layouts and constants, asserted against the specifications and published values."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from cvmlaunch.abi import kernel_hashes, ovmf
from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature, split_signature
from cvmlaunch.abi.guid import guid, guid_text
from cvmlaunch.abi.snp import (
    PAGE_INFO,
    PAGE_INFO_OFFSETS,
    PAGE_INFO_SIZE,
    PageType,
    SevFeature,
    sev_feature_names,
)
from cvmlaunch.abi.vmsa import FIELD_OFFSETS, SEGMENT, SEGMENT_OFFSETS
from cvmlaunch.guest.spec import Vmm
from cvmlaunch.plan.vmsa import BSP_RESET_ADDRESS, save_area


def test_page_info_layout() -> None:
    assert PAGE_INFO.size == PAGE_INFO_SIZE == 0x70
    record = PAGE_INFO.pack(b"\x11" * 48, b"\x22" * 48, 0x70, 6, 1, 0, 0xA, 0xB, 0xC, 0x8877)
    assert record[PAGE_INFO_OFFSETS["DIGEST_CUR"] :][:48] == b"\x11" * 48
    assert record[PAGE_INFO_OFFSETS["CONTENTS"] :][:48] == b"\x22" * 48
    assert record[PAGE_INFO_OFFSETS["LENGTH"] :][:2] == b"\x70\x00"
    assert record[PAGE_INFO_OFFSETS["PAGE_TYPE"]] == 6
    assert record[PAGE_INFO_OFFSETS["IMI_PAGE"]] == 1
    # Spec order of the permission bytes: reserved, VMPL1, VMPL2, VMPL3.
    assert record[0x64] == 0
    assert record[PAGE_INFO_OFFSETS["VMPL1_PERMS"]] == 0xA
    assert record[PAGE_INFO_OFFSETS["VMPL3_PERMS"]] == 0xC
    assert record[PAGE_INFO_OFFSETS["GPA"] :] == (0x8877).to_bytes(8, "little")


def test_page_types() -> None:
    assert [t.value for t in PageType] == [1, 2, 3, 4, 5, 6]
    assert {t for t in PageType if t.measures_contents} == {PageType.NORMAL, PageType.VMSA}


def test_sev_feature_names() -> None:
    assert int(SevFeature.DEBUG_SWAP) == 5
    assert sev_feature_names(0x21) == ["SNP_ACTIVE", "DEBUG_SWAP"]
    assert sev_feature_names(1 << 11 | 1) == ["SNP_ACTIVE", "bit11"]


def test_vmsa_offsets() -> None:
    assert SEGMENT.size == 16
    assert SEGMENT_OFFSETS["cs"] == 0x10 and SEGMENT_OFFSETS["tr"] == 0x90
    expected = {"efer": 0xD0, "cr4": 0x148, "cr0": 0x158, "rip": 0x178, "g_pat": 0x268}
    expected |= {"rdx": 0x310, "sev_features": 0x3B0, "xcr0": 0x3E8, "mxcsr": 0x408}
    expected |= {"x87_fcw": 0x410}
    for name, offset in expected.items():
        assert FIELD_OFFSETS[name][0] == offset, name


# SHA-384 of complete VMSA pages (CPU signature 0x800F12, AP reset address 0x80B004), as
# dumped by sev-snp-measure --dump-vmsa (reference/snp-measure.md, appendix A).
VMSA_PAGE_SHA384 = {
    (Vmm.QEMU, True, 0x1): "77920c4c629ff47e90c0e174fc1ad0eb6fa664f88cd4739488058a8c6cb1a77b"
    "3856f55378e9518d0da99452d51c553a",
    (Vmm.QEMU, True, 0x21): "ae79efa6efbe1594a2717dfd42af495a0e4ed37b00e529a5fdf349bea04c3513"
    "962ffb0c74cf65b0d9a1857271833d6e",
    (Vmm.QEMU, False, 0x1): "8413b852790765a310d95867a8b00bfca3a802b5a80830044b45e253fe962226"
    "57e11e53fcf63eb0e0afd722385bf7b4",
    (Vmm.QEMU, False, 0x21): "180ef2675dc01615d31b3e84ef27a0a69d08bfbbb58ea4f6a0188f08884ab640"
    "7591ada42f99749ce9a406fb4e5d8355",
    (Vmm.EC2, True, 0x1): "d08442e8bcdb6a5dcd7f22e4f7fd6979beffb9f0bb54a9d1977407fe84f482ab"
    "f23c1baae6ce95a6a9e7a94c3c51f412",
    (Vmm.EC2, False, 0x1): "acff2d22db95b8eb82272d844aa2ad1f8f84218ccbab003697acade12228a6e9"
    "01256e160d41713c22fed92e0a1ed0e1",
    (Vmm.EC2, True, 0x21): "e0897e8839a89263c86c623a0a739839fbf54dd00526df52c2a854fd36e6557c"
    "8260f21c8030441e5e3e79d5e8da7c5f",
    (Vmm.EC2, False, 0x21): "bb757c6aec783f41492857eaa32b3d931e2faa80976bee4a4ee6b2f4f3d50744"
    "d1b02b4bf30d191d504cc686d30f642f",
    (Vmm.GCE, True, 0x1): "f9e03177dad7f4819ee193af7cfb70507d8a923ab513412e908bc73460a9dfda"
    "a54215d58952816118ffb2ec281e7fd2",
    (Vmm.GCE, False, 0x1): "5302d262c88780a7a13159a327fa99cf188cab234c680e1f3b6729171380a431"
    "2511813a354cab136d69c778050c245a",
    (Vmm.GCE, True, 0x21): "2ac3e2eb183da064d16da7d4847eb61d536624530f60c996435309368358cd64"
    "c3e1b32b24d61269914a78b8370ca256",
    (Vmm.GCE, False, 0x21): "81dc79b7f59a6814d3812aaf3cd07a7df861c863b4b9e1cdf3709b5c4b209c90"
    "c5f6442a284ebfb5ef3978a20f70e9ac",
}


@pytest.mark.parametrize(("vmm", "bsp", "features"), sorted(VMSA_PAGE_SHA384, key=str))
def test_vmsa_pages(vmm: Vmm, bsp: bool, features: int) -> None:
    eip = BSP_RESET_ADDRESS if bsp else 0x80B004
    page = save_area(vmm, eip, 0x800F12, features, bsp).pack()
    assert len(page) == 4096
    assert hashlib.sha384(page).hexdigest() == VMSA_PAGE_SHA384[vmm, bsp, features]


def test_sev_es_bsp_page() -> None:
    page = save_area(Vmm.QEMU, BSP_RESET_ADDRESS, 0x800F12, 0, bsp=True).pack()
    expected = "8295cef559b57130391d59605890ef93297720b48bef9a8c3c985b9c3fb0788c"
    assert hashlib.sha256(page).hexdigest() == expected


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        ("EPYC-v4", 0x800F12),
        ("EPYC-Rome", 0x830F10),
        ("EPYC-Milan-v2", 0xA00F11),
        ("EPYC-Genoa", 0xA10F10),
        ("EPYC-Turin", 0xB00F00),
        ("EPYC-IBPB", 0x800F12),
    ],
)
def test_cpu_models(name: str, signature: int) -> None:
    assert cpu_signature(*CPU_MODELS[name]) == signature
    assert split_signature(signature) == CPU_MODELS[name]


def test_cpu_signature_low_families() -> None:
    assert cpu_signature(14, 1, 2) == 0x0E12
    assert split_signature(0x0E12) == (14, 1, 2)
    assert cpu_signature(6, 0x8F, 8) == 0x806F8


def test_guid_byte_order() -> None:
    for text in ("96b582de-1fb2-45f7-baea-a366c55a082d", "00f771de-1a7e-4fcb-890e-68c77e2fb44e"):
        assert guid(text) == uuid.UUID(text).bytes_le
        assert guid_text(guid(text)) == text
    with pytest.raises(ValueError, match="not a GUID"):
        guid("1234")
    assert ovmf.ENTRY_HEADER.size == 18


def test_kernel_hashes_table_worked_example() -> None:
    """reference/snp-measure.md appendix B: the 176-byte table of vector A01."""
    cmdline = hashlib.sha256(b"console=ttyS0 loglevel=7\0").digest()
    initrd = bytes.fromhex("49d53a09dbb716d90312925aa0054753c9d29f48d5325a2267842553b43abc2f")
    kernel = bytes.fromhex("51349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec23d4c3275")
    table = kernel_hashes.pack_table(cmdline, initrd, kernel)
    assert kernel_hashes.TABLE_SIZE == 168 and len(table) == kernel_hashes.PADDED_TABLE_SIZE
    assert table.hex() == (
        "06d63894224fc94cb479a793d411fd21a800d82dd09720bd944caa78e7714d36ab2a3200321c8eec6a77"
        "bad179511397f913a083067ad8cb737bb260aacbfe8df70fc50a31f7ba442f3ad74b9af141e291697"
        "81d320049d53a09dbb716d90312925aa0054753c9d29f48d5325a2267842553b43abc2f3794e74dd2"
        "ab7f42b835d5b172d2045b320051349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec"
        "23d4c32750000000000000000"
    )
    page = bytearray(4096)
    page[0xC00 : 0xC00 + 176] = table
    expected = (
        "e27b6704da27c1e9f3a920470be338fe0593a2655d51e82855689bb8c01924b7"
        "fc1c5ae2273e5a65d6dbb3f1210e73a6"
    )
    assert hashlib.sha384(page).hexdigest() == expected
