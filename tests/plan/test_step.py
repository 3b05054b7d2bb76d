"""The Step record (plan/step.py) and how a PageOp builds the Step measuring part of it."""

from __future__ import annotations

import struct

import pytest

from cvmlaunch.abi.snp import KVM_VMSA_GPA, PAGE_SIZE, PageType
from cvmlaunch.abi.vmsa import FIELD_OFFSETS, SEGMENT_OFFSETS, SaveArea, Segment
from cvmlaunch.guest.spec import Vmm
from cvmlaunch.plan.ops import PageOp
from cvmlaunch.plan.step import Step, StepKind, TdAction, vmsa_fields
from cvmlaunch.plan.vmsa import BSP_RESET_ADDRESS, save_area

# A VMSA whose every field differs from the reset state, so a swapped field shows.
STATE = save_area(Vmm.EC2, 0x80B004, 0xA00F11, 0x21, bsp=True)


@pytest.mark.parametrize(
    ("size", "pages"),
    [(0, 0), (1, 1), (176, 1), (256, 1), (PAGE_SIZE, 1), (PAGE_SIZE + 1, 2), (0x9000, 9)],
)
def test_pages_is_the_size_rounded_up_to_pages(size: int, pages: int) -> None:
    assert Step(0, StepKind.MAP_MEMORY, "x", 0, size).pages == pages


def test_call_type_prefers_the_td_action_then_the_page_type_then_the_kind() -> None:
    both = Step(0, StepKind.MAP_MEMORY, "x", 0, page_type=PageType.ZERO)
    assert both.call_type == "ZERO"
    assert both._replace(action=TdAction.PAGE_ADD_EXTEND).call_type == "page-add+extend"
    assert Step(0, StepKind.MAP_MEMORY, "x", 0, action=TdAction.PAGE_AUG).call_type == "page-aug"
    assert Step(0, StepKind.MAP_MEMORY, "x", 0).call_type == "map_memory"
    assert Step(0, StepKind.VMSA, "x", 0, page_type=PageType.VMSA).call_type == "VMSA"


# struct "<HHIQ": selector, attrib, limit, base at these offsets inside a segment.
_SEGMENT_PART_OFFSETS = {
    "selector": (0, "<H"),
    "attrib": (2, "<H"),
    "limit": (4, "<I"),
    "base": (8, "<Q"),
}


def test_vmsa_fields_names_every_field_and_flattens_segments() -> None:
    fields = vmsa_fields(STATE)
    segments = [n for n in SaveArea._fields if isinstance(getattr(STATE, n), Segment)]
    scalars = [n for n in SaveArea._fields if n not in segments]
    assert len(segments) == 10
    expected = {f"{s}.{part}" for s in segments for part in Segment._fields} | set(scalars)
    assert set(fields) == expected
    assert fields["cs.selector"] == 0xF000
    assert fields["cs.attrib"] == STATE.cs.attrib == 0x9A  # EC2's BSP code segment
    assert fields["cs.base"] == 0x80B004 & 0xFFFF0000 and fields["rip"] == 0xB004
    assert fields["rdx"] == STATE.rdx and fields["sev_features"] == 0x21
    assert all(type(v) is int for v in fields.values())


def test_vmsa_fields_round_trip_to_the_same_save_area() -> None:
    fields = vmsa_fields(STATE)
    rebuilt = SaveArea._make(
        Segment(*(fields[f"{name}.{part}"] for part in Segment._fields))
        if name in SEGMENT_OFFSETS
        else fields[name]
        for name in SaveArea._fields
    )
    assert rebuilt == STATE


def test_vmsa_fields_placed_at_their_offsets_give_the_vmsa_page() -> None:
    """Every named value is the one the page holds: writing them at the abi offsets
    rebuilds the packed page byte for byte."""
    page = bytearray(PAGE_SIZE)
    for key, value in vmsa_fields(STATE).items():
        if "." in key:
            segment, part = key.split(".")
            at, fmt = _SEGMENT_PART_OFFSETS[part]
            struct.pack_into(fmt, page, SEGMENT_OFFSETS[segment] + at, value)
        else:
            at, fmt = FIELD_OFFSETS[key]
            struct.pack_into(fmt, page, at, value)
    assert bytes(page) == STATE.pack()


FIRMWARE = PageOp(StepKind.FIRMWARE, 0xFFE00000, 0x200000, PageType.NORMAL, None, "firmware")


def test_step_of_a_firmware_page_has_its_file_offset() -> None:
    step = FIRMWARE.step(7, 0xFFE03000, PAGE_SIZE, contents=b"c" * 48, digest=b"d" * 48)
    assert step == Step(
        7, StepKind.FIRMWARE, "firmware", 0xFFE03000, PAGE_SIZE, PageType.NORMAL,
        contents=b"c" * 48, digest=b"d" * 48, file_offset=0x3000,
    )  # fmt: skip
    assert FIRMWARE.step(0, FIRMWARE.gpa, 1, contents=None, digest=None).file_offset == 0


@pytest.mark.parametrize("kind", [StepKind.SEV_METADATA, StepKind.KERNEL_HASHES])
def test_step_of_other_pages_has_no_file_offset_vcpu_or_vmsa(kind: StepKind) -> None:
    # A vcpu without a save area is not a VMSA operation: the step names no vCPU.
    op = PageOp(kind, 0x810000, 0x3000, PageType.ZERO, None, "section 5", section=5, vcpu=2)
    step = op.step(3, 0x811000, PAGE_SIZE, contents=bytes(48), digest=b"x" * 48)
    assert (step.file_offset, step.vcpu, step.vmsa) == (None, None, None)
    assert (step.number, step.kind, step.label, step.gpa, step.section) == (
        3, kind, "section 5", 0x811000, 5,
    )  # fmt: skip
    assert (step.page_type, step.contents, step.digest) == (PageType.ZERO, bytes(48), b"x" * 48)


def test_step_of_a_vmsa_names_its_vcpu_and_registers() -> None:
    op = PageOp(
        StepKind.VMSA, KVM_VMSA_GPA, PAGE_SIZE, PageType.VMSA, STATE.pack(), "VMSA vCPU 3 (AP)",
        vcpu=3, state=STATE,
    )  # fmt: skip
    step = op.step(9, KVM_VMSA_GPA, PAGE_SIZE, contents=b"c" * 48, digest=b"d" * 48)
    assert step.vcpu == 3 and step.file_offset is None and step.section is None
    assert step.vmsa == vmsa_fields(STATE)
    bsp = save_area(Vmm.QEMU, BSP_RESET_ADDRESS, 0x800F12, 1, bsp=True)
    other = op._replace(state=bsp).step(9, KVM_VMSA_GPA, PAGE_SIZE, contents=None, digest=None)
    assert other.vmsa is not None and other.vmsa["rip"] == 0xFFF0 != step.vmsa["rip"]
