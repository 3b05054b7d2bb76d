"""VMSA field offsets, asserted against the specifications."""

from __future__ import annotations

from cvmlaunch.abi.vmsa import FIELD_OFFSETS, SEGMENT, SEGMENT_OFFSETS


def test_vmsa_offsets() -> None:
    assert SEGMENT.size == 16
    assert SEGMENT_OFFSETS["cs"] == 0x10 and SEGMENT_OFFSETS["tr"] == 0x90
    expected = {"efer": 0xD0, "cr4": 0x148, "cr0": 0x158, "rip": 0x178, "g_pat": 0x268}
    expected |= {"rdx": 0x310, "sev_features": 0x3B0, "xcr0": 0x3E8, "mxcsr": 0x408}
    expected |= {"x87_fcw": 0x410}
    for name, offset in expected.items():
        assert FIELD_OFFSETS[name][0] == offset, name
