"""The TCG event log and CCEL layouts: sizes, offsets and numbers against the specs."""

from __future__ import annotations

import pytest

from cvmlaunch.abi import eventlog as abi
from cvmlaunch.abi.guid import guid


def test_ccel_table_is_56_bytes_with_the_acpi_offsets() -> None:
    assert abi.CCEL_TABLE.size == abi.CCEL_TABLE_SIZE == 56
    # Offsets walked from the struct's own field sizes (ACPI 6.5 §5.2.34).
    sizes = [4, 4, 1, 1, 6, 8, 4, 4, 4, 1, 1, 2, 8, 8]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    assert list(abi.CCEL_TABLE_OFFSETS.values()) == offsets
    assert abi.CCEL_TABLE_OFFSETS["LAML"] == 0x28
    assert abi.CCEL_TABLE_OFFSETS["LASA"] == 0x30
    assert int(abi.CcType.TDX) == 2


def test_record_layouts() -> None:
    assert abi.PCR_EVENT.size == abi.PCR_EVENT_SIZE == 32
    assert abi.PCR_EVENT2_HEADER.size == abi.PCR_EVENT2_HEADER_SIZE == 12
    assert abi.SPEC_ID_HEADER.size == abi.SPEC_ID_HEADER_SIZE == 28
    assert len(abi.SPEC_ID_SIGNATURE) == 16
    assert all(len(s) == 16 for s in abi.NO_ACTION_SIGNATURES)
    assert abi.VARIABLE_DATA_HEADER.size == abi.VARIABLE_DATA_HEADER_SIZE == 32
    assert abi.IMAGE_LOAD_EVENT.size == abi.IMAGE_LOAD_EVENT_SIZE == 32
    assert abi.LOAD_OPTION_HEADER.size == abi.LOAD_OPTION_HEADER_SIZE == 6
    assert abi.TAGGED_EVENT.size == abi.TAGGED_EVENT_HEADER_SIZE == 8
    assert abi.GPT_HEADER.size == abi.GPT_HEADER_SIZE == 92
    assert abi.GPT_ENTRY_HEAD.size + abi.GPT_ENTRY_NAME_SIZE == 128
    assert abi.DEVICE_PATH_NODE.size == abi.DEVICE_PATH_NODE_SIZE == 4
    assert abi.HARDDRIVE.size == 38  # a HARDDRIVE node is 42 bytes with its header
    assert abi.CONFIGURATION_TABLE.size == 24


@pytest.mark.parametrize(
    ("alg", "value", "size", "name"),
    [
        (abi.Alg.TPM_ALG_SHA1, 0x0004, 20, "SHA-1"),
        (abi.Alg.TPM_ALG_SHA256, 0x000B, 32, "SHA-256"),
        (abi.Alg.TPM_ALG_SHA384, 0x000C, 48, "SHA-384"),
        (abi.Alg.TPM_ALG_SHA512, 0x000D, 64, "SHA-512"),
        (abi.Alg.TPM_ALG_SM3_256, 0x0012, 32, "SM3"),
    ],
)
def test_banks(alg: abi.Alg, value: int, size: int, name: str) -> None:
    assert alg == value
    assert abi.DIGEST_SIZES[alg] == size
    assert abi.ALG_NAMES[alg] == name


def test_event_types_by_spec_name() -> None:
    expected = {
        "EV_NO_ACTION": 0x3,
        "EV_SEPARATOR": 0x4,
        "EV_EVENT_TAG": 0x6,
        "EV_PLATFORM_CONFIG_FLAGS": 0xA,
        "EV_IPL": 0xD,
        "EV_EFI_VARIABLE_DRIVER_CONFIG": 0x80000001,
        "EV_EFI_VARIABLE_BOOT": 0x80000002,
        "EV_EFI_BOOT_SERVICES_APPLICATION": 0x80000003,
        "EV_EFI_GPT_EVENT": 0x80000006,
        "EV_EFI_ACTION": 0x80000007,
        "EV_EFI_PLATFORM_FIRMWARE_BLOB2": 0x8000000A,
        "EV_EFI_HANDOFF_TABLES2": 0x8000000B,
        "EV_EFI_VARIABLE_AUTHORITY": 0x800000E0,
    }
    for name, value in expected.items():
        assert abi.EventType[name] == value
        assert abi.event_type_name(value) == name
    assert abi.event_type_name(0x08000001) == "0x08000001"


def test_variable_guids_are_on_disk_bytes() -> None:
    assert guid("8be4df61-93ca-11d2-aa0d-00e098032b8c") == abi.EFI_GLOBAL_VARIABLE
    assert guid("d719b2cb-3d3a-4596-a3bc-dad00e67656f") == abi.EFI_IMAGE_SECURITY_DATABASE
