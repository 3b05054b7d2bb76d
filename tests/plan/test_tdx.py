"""build_td_plan (plan/tdx.py) and the TD HOB writer (plan/td_hob.py).

Images: the synthetic TDVF vectors of tests/vectors/tdx/ (whose section tables are recorded
in tdx-vectors.json) and small images built here by tests/tdvf_images.py. The TD HOB is
decoded here from the UEFI PI layouts, not with the writer's own structs.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from cvmlaunch.abi.tdx import TdvfSectionType
from cvmlaunch.errors import FirmwareError
from cvmlaunch.firmware.ovmf import GpaRange
from cvmlaunch.guest.spec import GuestSpec, RawDataTail, TdConfig, Technology
from cvmlaunch.plan.ops import TdPlan
from cvmlaunch.plan.step import TdAction
from cvmlaunch.plan.td_hob import FOUR_GIB, q35_ram, td_hob
from cvmlaunch.plan.tdx import build_td_plan
from tests.conftest import TDX_VECTORS
from tests.tdvf_images import build_image, random_params

PAGE = 0x1000
MIB = 1 << 20
_SYNTHETIC: dict[str, Any] = json.loads((TDX_VECTORS / "tdx-vectors.json").read_text())[
    "synthetic_images"
]
BFV, CFV, TD_HOB, TEMP_MEM, PERM_MEM, PAYLOAD, TD_INFO = 0, 1, 2, 3, 4, 5, 7


def _plan(image: bytes, tail: RawDataTail = RawDataTail.IMAGE, memory_mib: int = 2048) -> TdPlan:
    spec = GuestSpec(
        Technology.TDX, Path("td.bin"), memory_mib=memory_mib, td=TdConfig(raw_data_tail=tail)
    )
    return build_td_plan(spec, firmware=image)


def _vector(name: str) -> tuple[bytes, list[dict[str, int]]]:
    vector = _SYNTHETIC[name]
    return (TDX_VECTORS / vector["file"]).read_bytes(), vector["sections"]


def _action(attributes: int) -> TdAction:
    """TDVF_SECTION.Attributes bit 1 PAGE.AUG, bit 0 MR.EXTEND, else a plain page add."""
    if attributes & 2:
        return TdAction.PAGE_AUG
    return TdAction.PAGE_ADD_EXTEND if attributes & 1 else TdAction.PAGE_ADD


def _section(
    kind: int, gpa: int, mem: int, *, offset: int = 0, raw: int = 0, attributes: int = 0
) -> dict[str, int]:
    return {
        "data_offset": offset,
        "raw_size": raw,
        "gpa": gpa,
        "mem_size": mem,
        "type": kind,
        "attributes": attributes,
    }


def _image(sections: list[dict[str, int]], size: int = 0x10000) -> bytes:
    """A small image with the TDVF descriptor in its last page (OVMF footer locator)."""
    params = {
        "size": size,
        "seed": 7,
        "locator": "ovmf",
        "descriptor_offset": size - 0x800,
        "sections": sections,
    }
    return build_image(params)


# A firmware volume below 4 GiB, a TD HOB and temporary memory low in RAM.
_SMALL = [
    _section(BFV, FOUR_GIB - 0x8000, 0x8000, offset=0x4000, raw=0x8000, attributes=1),
    _section(TD_HOB, 0x800000, 0x2000),
    _section(TEMP_MEM, 0x810000, 0x3000),
]


# ---- operations ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["base", "aug", "partial"])
def test_one_op_per_section_with_its_action(name: str) -> None:
    image, sections = _vector(name)
    plan = _plan(image)
    assert len(plan.ops) == len(sections)
    for number, (op, section) in enumerate(zip(plan.ops, sections, strict=True)):
        assert (op.section, op.gpa, op.size) == (number, section["gpa"], section["mem_size"])
        assert op.section_type is TdvfSectionType(section["type"])
        assert op.action is _action(section["attributes"]), op.label
        assert f"section {number}" in op.label
    actions = [op.action for op in plan.ops]
    assert actions.count(TdAction.PAGE_ADD_EXTEND) == 1  # the BFV
    assert actions.count(TdAction.PAGE_AUG) == (1 if name == "aug" else 0)


def test_op_data_is_the_image_at_the_data_offset() -> None:
    image, sections = _vector("base")
    plan = _plan(image)
    for op, section in zip(plan.ops, sections, strict=True):
        if section["raw_size"]:
            start = section["data_offset"]
            assert op.data is not None
            assert bytes(op.data) == image[start : start + section["mem_size"]]
        elif op.section_type is not TdvfSectionType.TD_HOB:
            assert op.data is None, op.label  # zero memory is never materialized


@pytest.mark.parametrize(
    ("tail", "length"),
    [(RawDataTail.IMAGE, "mem_size"), (RawDataTail.ZERO, "raw_size")],
)
def test_short_raw_data_prefix_length_follows_the_tail(tail: RawDataTail, length: str) -> None:
    image, sections = _vector("partial")
    bfv = sections[0]
    assert bfv["raw_size"] == bfv["mem_size"] - PAGE  # the vector's point
    op = _plan(image, tail).ops[0]
    assert op.size == bfv["mem_size"]
    start = bfv["data_offset"]
    assert op.data is not None and bytes(op.data) == image[start : start + bfv[length]]


def test_image_tail_past_the_image_end_is_refused_and_zero_fill_is_not() -> None:
    # One page of raw data at 0x8000, 16 pages of memory: QEMU would copy past the 64 KiB end.
    bfv = _section(BFV, FOUR_GIB - 0x10000, 0x10000, offset=0x8000, raw=0x1000, attributes=1)
    image = _image([bfv, _section(TD_HOB, 0x800000, 0x2000)])
    with pytest.raises(FirmwareError, match="past the end"):
        _plan(image)
    op = _plan(image, RawDataTail.ZERO).ops[0]
    assert op.data is not None and bytes(op.data) == image[0x8000:0x9000]


def test_vmm_only_sections_are_not_mapped() -> None:
    plan = _plan(_image([*_SMALL, _section(TD_INFO, 0, 0, offset=0x100, raw=0x40)]))
    assert [op.section for op in plan.ops] == [0, 1, 2]
    assert [s.number for s in plan.tdvf.sections] == [0, 1, 2, 3]


def test_extended_section_without_raw_data_is_refused() -> None:
    payload = _section(PAYLOAD, 0x1000000, 0x2000, attributes=1)
    with pytest.raises(FirmwareError, match="no raw data"):
        _plan(_image([*_SMALL, payload]))


def test_two_td_hobs_are_refused() -> None:
    with pytest.raises(FirmwareError, match="2 TD_HOB sections"):
        _plan(_image([*_SMALL, _section(TD_HOB, 0x900000, 0x1000)]))


def test_section_larger_than_ram_is_refused_unless_page_aug() -> None:
    big = 2 * MIB
    with pytest.raises(FirmwareError, match="more than the guest's 1 MiB"):
        _plan(_image([_SMALL[0], _section(TEMP_MEM, 0x10000, big)]), memory_mib=1)
    aug = _section(PERM_MEM, 0x10000000, big, attributes=2)
    plan = _plan(_image([*_SMALL, aug]), memory_mib=1024)
    assert plan.ops[-1].action is TdAction.PAGE_AUG and plan.ops[-1].size == big


@pytest.mark.parametrize("seed", range(24))
def test_generated_images_follow_the_section_table(seed: int) -> None:
    params = random_params(random.Random(seed), seed)
    image = build_image(params)
    sections = params["sections"]
    plan = _plan(image, RawDataTail.ZERO)
    mapped = [s for s in sections if s["mem_size"]]
    assert [(op.gpa, op.size) for op in plan.ops] == [(s["gpa"], s["mem_size"]) for s in mapped]
    assert [op.action for op in plan.ops] == [_action(s["attributes"]) for s in mapped]
    for op, s in zip(plan.ops, mapped, strict=True):
        if s["type"] == TD_HOB:
            assert op.data is not None and bytes(op.data) == plan.td_hob
        elif s["raw_size"]:
            start = s["data_offset"]
            assert op.data is not None and bytes(op.data) == image[start : start + s["raw_size"]]
        else:
            assert op.data is None
    assert (plan.td_hob is None) == (not any(s["type"] == TD_HOB for s in sections))


# ---- the TD HOB ----------------------------------------------------------------------------


class Resource(NamedTuple):
    kind: int
    attributes: int
    base: int
    size: int


class DecodedHob(NamedTuple):
    end_of_hob_list: int
    resources: list[Resource]


def _decode(hob: bytes) -> DecodedHob:
    """UEFI PI vol. 3: a 56-byte PHIT (EfiEndOfHobList at +48), 48-byte resource
    descriptors (type at +24, attribute +28, start +32, length +40), an 8-byte END HOB."""
    kind, length = struct.unpack_from("<HH", hob, 0)
    assert (kind, length) == (0x0001, 56)
    (version,) = struct.unpack_from("<I", hob, 8)
    assert version == 9
    (end_of_list,) = struct.unpack_from("<Q", hob, 48)
    resources = []
    at = 56
    while True:
        kind, length = struct.unpack_from("<HH", hob, at)
        if kind == 0xFFFF:
            assert length == 8 and at + 8 == len(hob)
            break
        assert (kind, length) == (0x0003, 48)
        resources.append(Resource(*struct.unpack_from("<IIQQ", hob, at + 24)))
        at += length
    return DecodedHob(end_of_list, resources)


def test_td_hob_is_written_into_the_td_hob_section() -> None:
    image, sections = _vector("base")
    plan = _plan(image, memory_mib=1024)
    assert plan.td_hob is not None
    hob_section = next(s for s in sections if s["type"] == TD_HOB)
    hob_op = next(op for op in plan.ops if op.section_type is TdvfSectionType.TD_HOB)
    assert hob_op.gpa == hob_section["gpa"] and hob_op.action is TdAction.PAGE_ADD
    assert hob_op.data is not None and bytes(hob_op.data) == plan.td_hob
    decoded = _decode(plan.td_hob)
    assert decoded.end_of_hob_list == hob_section["gpa"] + len(plan.td_hob)
    # TD_HOB and TEMP_MEM sections are accepted memory; the rest of RAM is unaccepted.
    accepted = sorted(
        (s["gpa"], s["mem_size"]) for s in sections if s["type"] in (TD_HOB, TEMP_MEM)
    )
    assert [(r.base, r.size) for r in decoded.resources if r.kind == 0] == accepted
    assert all(r.kind in (0, 7) and r.attributes == 7 for r in decoded.resources)
    _assert_tiles(decoded.resources, [GpaRange(0, 1024 * MIB)])


def _assert_tiles(resources: list[Resource], ram: list[GpaRange]) -> None:
    """The descriptors, in address order, cover exactly the RAM ranges without gaps."""
    pieces = iter(resources)
    for r in ram:
        at = r.base
        while at < r.end:
            piece = next(pieces)
            assert piece.base == at and piece.size > 0
            at += piece.size
        assert at == r.end
    assert next(pieces, None) is None


@pytest.mark.parametrize(
    ("memory", "ram"),
    [
        (1 << 30, [GpaRange(0, 1 << 30)]),
        (0xB0000000 - PAGE, [GpaRange(0, 0xB0000000 - PAGE)]),
        (0xB0000000, [GpaRange(0, 0x80000000), GpaRange(FOUR_GIB, 0x30000000)]),
        (8 << 30, [GpaRange(0, 0x80000000), GpaRange(FOUR_GIB, (8 << 30) - 0x80000000)]),
    ],
)
def test_q35_ram_splits_at_2_gib_from_2_75_gib(memory: int, ram: list[GpaRange]) -> None:
    assert q35_ram(memory) == ram
    assert sum(r.size for r in ram) == memory


def test_td_hob_splits_ram_around_accepted_ranges_in_address_order() -> None:
    ram = q35_ram(4 << 30)
    accepted = [
        ("temp", GpaRange(0x810000, 0x10000)),
        ("hob", GpaRange(0x809000, 0x2000)),
        ("high", GpaRange(FOUR_GIB, 0x1000)),  # at the very start of the high range
    ]
    hob = td_hob(0x809000, accepted, ram)
    decoded = _decode(hob)
    assert decoded.end_of_hob_list == 0x809000 + len(hob)
    assert [(r.kind, r.base, r.size) for r in decoded.resources] == [
        (7, 0, 0x809000),
        (0, 0x809000, 0x2000),
        (7, 0x80B000, 0x5000),
        (0, 0x810000, 0x10000),
        (7, 0x820000, 0x80000000 - 0x820000),
        (0, FOUR_GIB, 0x1000),
        (7, FOUR_GIB + 0x1000, 0x80000000 - 0x1000),
    ]
    _assert_tiles(decoded.resources, ram)


@pytest.mark.parametrize(
    "part",
    [
        GpaRange(0x7FFFF000, 0x2000),  # crosses the end of low RAM
        GpaRange(0x90000000, 0x1000),  # in the hole below 4 GiB
        GpaRange(0x800000, 0x1000),  # inside an already accepted range
    ],
)
def test_td_hob_refuses_ranges_not_in_unaccepted_ram(part: GpaRange) -> None:
    accepted = [("first", GpaRange(0x800000, 0x4000)), ("second", part)]
    with pytest.raises(FirmwareError, match="second"):
        td_hob(0x800000, accepted, q35_ram(4 << 30))
