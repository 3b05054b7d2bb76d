"""SEV-SNP byte layouts and constants (PAGE_INFO, page types, SEV features), asserted against
the specifications and published values."""

from __future__ import annotations

from cvmlaunch.abi.snp import (
    PAGE_INFO,
    PAGE_INFO_OFFSETS,
    PAGE_INFO_SIZE,
    PageType,
    SevFeature,
    sev_feature_names,
)


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
