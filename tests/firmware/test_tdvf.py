"""Property-based fuzzing of the TDVF metadata parser and of the TD plan and MRTD built on it.

A TDVF image is untrusted input: whatever bytes arrive, `find_tdvf` and `parse_tdvf` may only
fail with `FirmwareError`, and `build_td_plan` and `measure` on what they accept may only fail
with `FirmwareError` (or `ProfileError`). Whatever they return has to agree with the bytes it
came from. Four kinds of input are thrown at them:

* random byte strings of awkward sizes, optionally with an OVMF footer-table TDX entry or a
  td-shim offset planted, and a plausible descriptor with noisy section entries behind it;
* the real images (tests/vectors/tdx/synth-tdvf-*.bin, and Debian's OVMF.fd when installed)
  with bits, bytes and u32/u64 fields overwritten by extreme values, aimed at the descriptor,
  the section table and the footer, then truncated or extended;
* images built from a generated description (sections of every type, both locators), kept
  valid (the parse must reproduce the description; the plan must be refused exactly when
  QEMU would refuse it; the MRTD must match a straightforward reimplementation written here)
  or broken in one known way (the parse must fail with the matching message, at the offset
  of the descriptor, section entry or footer entry).

Defects this file found, now fixed and kept as regression tests at the end: reserved
Attributes bits were accepted, and a huge zero-filled section escaped build_td_plan as
MemoryError (zero memory is no longer materialized; no section may exceed the guest's RAM).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import struct
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from cvmlaunch.abi import ovmf as ovmf_abi
from cvmlaunch.abi import tdx as tdx_abi
from cvmlaunch.abi.tdx import TdvfSectionType
from cvmlaunch.errors import CvmlaunchError, FirmwareError, ProfileError
from cvmlaunch.firmware.ovmf import parse_footer_table
from cvmlaunch.firmware.tdvf import Locator, TdvfMetadata, TdvfSection, find_tdvf, parse_tdvf
from cvmlaunch.guest.spec import GuestSpec, PageOrder, RawDataTail, TdConfig, Technology
from cvmlaunch.measure import Step, measure
from cvmlaunch.plan.ops import TdPlan
from cvmlaunch.plan.step import TD_RECORDS, TdAction
from cvmlaunch.plan.tdx import build_td_plan

pytestmark = pytest.mark.fuzz

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
TDX_VECTORS = REPO / "tests" / "vectors" / "tdx"
DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")
VECTORS: dict[str, Any] = json.loads((TDX_VECTORS / "tdx-vectors.json").read_text())

# The layouts, written out here rather than taken from cvmlaunch.abi, so that a slip there
# shows up as a disagreement.
PAGE = 0x1000
CHUNK = 0x100
DESCRIPTOR = struct.Struct("<4sIII")  # Signature, Length, Version, NumberOfSectionEntries
# DataOffset, RawDataSize, MemoryAddress, MemoryDataSize, Type, Attributes
SECTION = struct.Struct("<IIQQII")
DESC_SIZE = DESCRIPTOR.size  # 16
ENTRY_SIZE = SECTION.size  # 32
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
GPA_LIMIT = 1 << 52
FOOTER_BACK = 0x20  # the footer table ends, and the td-shim offset starts, 0x20 before the end
TABLE_HEADER = 18  # [data][u16 length][GUID]
GUID_SIZE = 16
TDX_ENTRY_GUID = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
TDX_METADATA_GUID = uuid.UUID("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae").bytes_le
FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
SEV_RESET_GUID = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e").bytes_le
SEV_METADATA_GUID = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc").bytes_le

BFV, CFV, TD_HOB, TEMP_MEM, PERM_MEM, PAYLOAD, PAYLOAD_PARAM, TD_INFO, TD_PARAMS = range(9)
ALL_TYPES = tuple(range(9))
VMM_ONLY = frozenset({TD_INFO, TD_PARAMS})
WITH_DATA = frozenset({BFV, CFV})
WITHOUT_DATA = frozenset({TD_HOB, TEMP_MEM, PERM_MEM})
ACCEPTED = frozenset({TD_HOB, TEMP_MEM})  # listed in the TD HOB: must lie in guest RAM
MR_EXTEND = 1
PAGE_AUG = 2
MRTD_SIZE = 48
PAGE_ADD_TAG = b"MEM.PAGE.ADD".ljust(16, b"\0")
MR_EXTEND_TAG = b"MR.EXTEND".ljust(16, b"\0")
# GuestSpec's default memory (2 GiB) lies wholly below 4 GiB on q35: the TD HOB's RAM.
SPEC_RAM_END = 2048 << 20

# Budgets. Checking a plan pads every section's contents to its full size here: beyond
# ALLOC_BUDGET bytes that is skipped. Measuring is linear in pages: beyond
# MEASURE_PAGE_BUDGET it is skipped. The traced engine (slow: a digest copy per record) runs
# below TRACE_PAGE_LIMIT pages only.
ALLOC_BUDGET = 16 << 20
MEASURE_PAGE_BUDGET = 4096
TRACE_PAGE_LIMIT = 300

ORDERS = tuple(PageOrder)
TAILS = tuple(RawDataTail)


class Image(bytes):
    """Image bytes that print short (size and hash), so that failing examples stay readable;
    derandomized runs reproduce them."""

    def __repr__(self) -> str:
        if len(self) <= 256:
            return f"Image({bytes(self)!r})"
        return f"Image(<{len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:16]}…>)"


def fuzz_settings(examples: int) -> settings:
    """deadline=None: a slow example on a loaded machine is no failure. derandomize: CI runs
    the same examples every time (and no example database is written)."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],  # copying a 2 MiB OVMF.fd per example
    )


# --------------------------------------------------------------------------------------
# Checks shared by every test
# --------------------------------------------------------------------------------------


def note(text: str) -> None:
    """hypothesis.event, also callable from the plain tests that share these helpers."""
    if currently_in_test_context():
        event(text)


def check_error(error: FirmwareError, data: bytes) -> None:
    """A FirmwareError must say something and, if it names an offset, one inside the data."""
    assert error.reason
    if error.offset is not None:
        assert 0 <= error.offset < len(data), (error.offset, len(data), str(error))
        assert f"at file offset {error.offset:#x}" in str(error)


_LABELS = (
    ("32-bit image", "does not fit in 32 bits"),
    ("footer table", "footer table"),
    ("entry data", "data bytes, expected 4"),
    ("entry outside", "points outside"),
    ("signature", "signature is"),
    ("version", "version is"),
    ("no sections", "has no sections"),
    ("length", "descriptor length is"),
    ("descriptor past end", "sections) runs past the end"),
    ("unknown type", "unknown Type"),
    ("reserved attributes", "reserved bits"),
    ("extend+aug", "both MR.EXTEND and PAGE.AUG"),
    ("aug with raw data", "AUG pages start zeroed"),
    ("aug td hob", "must add the TD HOB"),
    ("image tail past end", "copies MemoryDataSize bytes"),
    ("data offset", "DataOffset"),
    ("raw past end", "raw data ["),
    ("vmm-only memory", "MemoryAddress/MemoryDataSize"),
    ("vmm-only attributes", "Attributes must be 0"),
    ("gpa alignment", "MemoryAddress"),
    ("mem size", "is not a non-zero multiple of 4 KiB"),
    ("52-bit", "52-bit"),
    ("raw > mem", "exceeds MemoryDataSize"),
    ("bfv/cfv without data", "the section's contents come from the image"),
    ("data in vmm memory", "the VMM provides this memory"),
    ("overlap", "overlaps"),
    ("no metadata", "no TDVF metadata"),
    ("two td hobs", "TD_HOB sections"),
    ("outside ram", "not inside the guest RAM"),
    ("bigger than ram", "more than the guest's"),
    ("hob too big", "TD HOB does not fit"),
    ("payload", "no raw data"),
)


def classify(error: CvmlaunchError) -> str:
    """A short label of the check that fired, for hypothesis statistics and counters."""
    text = str(error)
    return next((label for label, needle in _LABELS if needle in text), "other")


def u32_at(data: bytes, at: int) -> int:
    return int(U32.unpack_from(data, at)[0])


def check_section(section: TdvfSection, size: int) -> None:
    """One accepted section obeys every rule of the TDVF specification and of QEMU."""
    kind = int(section.type)
    attributes = section.attributes
    assert kind in ALL_TYPES
    assert 0 <= attributes <= U32_MAX
    assert not attributes & ~(MR_EXTEND | PAGE_AUG), f"reserved Attributes bits {attributes:#x}"
    assert attributes != MR_EXTEND | PAGE_AUG
    assert section.extends_mr == bool(attributes & MR_EXTEND)
    assert section.page_aug == bool(attributes & PAGE_AUG)
    assert section.data_offset + section.raw_size <= size, "raw data outside the image"
    if section.raw_size == 0:
        assert section.data_offset == 0
    if section.page_aug:
        assert section.raw_size == 0 and kind != TD_HOB
    assert section.name == f"TDVF section {section.number} ({section.type.name})"
    if kind in VMM_ONLY:
        assert section.gpa == section.mem_size == attributes == 0
        return
    assert section.gpa % PAGE == 0 and section.mem_size % PAGE == 0 and section.mem_size > 0
    assert section.gpa + section.mem_size <= GPA_LIMIT
    assert section.raw_size <= section.mem_size
    assert section.range.base == section.gpa and section.range.size == section.mem_size
    if kind in WITH_DATA:
        assert section.raw_size > 0
    if kind in WITHOUT_DATA:
        assert section.raw_size == 0


def check_metadata(metadata: TdvfMetadata, data: bytes) -> None:
    """Everything a successful parse returns is consistent with `data` and with itself."""
    size = len(data)
    at = metadata.offset
    tdx_entries = [e for e in parse_footer_table(data) if e.guid == TDX_ENTRY_GUID]
    if tdx_entries:
        assert metadata.locator == Locator.OVMF_FOOTER
        assert at == size - u32_at(tdx_entries[0].data, 0)
    else:
        assert metadata.locator == Locator.TD_SHIM
        assert at == u32_at(data, size - FOOTER_BACK)
        assert data[at - GUID_SIZE : at] == TDX_METADATA_GUID
    assert 0 <= at <= size - DESC_SIZE
    signature, length, version, count = DESCRIPTOR.unpack_from(data, at)
    assert (signature, version) == (b"TDVF", 1)
    assert count == len(metadata.sections) >= 1
    assert length == DESC_SIZE + ENTRY_SIZE * count and at + length <= size
    for number, section in enumerate(metadata.sections):
        entry_at = at + DESC_SIZE + ENTRY_SIZE * number
        assert (section.number, section.offset) == (number, entry_at)
        fields = (section.data_offset, section.raw_size, section.gpa, section.mem_size)
        assert SECTION.unpack_from(data, entry_at) == (
            *fields,
            int(section.type),
            section.attributes,
        )
        check_section(section, size)
    mapped = sorted((s for s in metadata.sections if s.mem_size), key=lambda s: s.gpa)
    for low, high in pairwise(mapped):
        assert low.gpa + low.mem_size <= high.gpa, f"{low.name} overlaps {high.name}"
    for section_type in TdvfSectionType:
        assert metadata.of_type(section_type) == tuple(
            s for s in metadata.sections if s.type == section_type
        )


def parse_checked(data: bytes) -> TdvfMetadata | FirmwareError | None:
    """find_tdvf and parse_tdvf on `data`, checked: the metadata, the refusal, or None.

    Anything but a FirmwareError propagates and fails the calling test.
    """
    try:
        found = find_tdvf(data)
    except FirmwareError as error:
        check_error(error, data)
        with pytest.raises(FirmwareError) as again:
            parse_tdvf(data)
        assert str(again.value) == str(error)
        note(f"parse: {classify(error)}")
        return error
    if found is None:
        with pytest.raises(FirmwareError, match="no TDVF metadata") as info:
            parse_tdvf(data)
        assert info.value.offset is None
        note("parse: none")
        return None
    check_metadata(found, data)
    assert parse_tdvf(data) == found
    note(f"parse: ok ({found.locator})")
    return found


# --------------------------------------------------------------------------------------
# The plan and the MRTD
# --------------------------------------------------------------------------------------


def td_spec(order: PageOrder = PageOrder.PAGE, tail: RawDataTail = RawDataTail.IMAGE) -> GuestSpec:
    return GuestSpec(
        technology=Technology.TDX,
        firmware=Path("x"),
        td=TdConfig(page_order=order, raw_data_tail=tail),
    )


def measured_pages(metadata: TdvfMetadata) -> int:
    return sum(s.mem_size for s in metadata.sections if not s.page_aug) // PAGE


def materialized_bytes(metadata: TdvfMetadata) -> int:
    """What check_plan allocates to compare each section's contents at full size."""
    return sum(s.mem_size for s in metadata.sections if not s.page_aug)


def expected_contents(
    section: TdvfSection, data: bytes, tail: RawDataTail, hob: bytes | None
) -> bytes | None:
    """The initial contents of a section as QEMU writes them; None for zero pages."""
    size = section.mem_size
    if int(section.type) == TD_HOB:
        assert hob is not None
        return hob + bytes(size - len(hob))
    if section.raw_size == 0:
        return None
    start = section.data_offset
    if tail is RawDataTail.ZERO:
        return data[start : start + section.raw_size] + bytes(size - section.raw_size)
    return data[start : start + size]


def check_hob(hob: bytes, section: TdvfSection) -> None:
    """The TD HOB starts with a PHIT naming its own end and stops with an END HOB."""
    assert len(hob) <= section.mem_size and len(hob) % 8 == 0
    hob_type, hob_length = struct.unpack_from("<HH", hob)
    assert (hob_type, hob_length) == (0x0001, 56)
    assert U64.unpack_from(hob, 48)[0] == section.gpa + len(hob)  # EfiEndOfHobList
    assert hob[-8:] == U16.pack(0xFFFF) + U16.pack(8) + bytes(4)


def check_plan(plan: TdPlan, metadata: TdvfMetadata, data: bytes, tail: RawDataTail) -> None:
    assert plan.tdvf == metadata
    assert plan.firmware_size == len(data)
    assert plan.firmware_sha256 == hashlib.sha256(data).digest()
    mapped = [s for s in metadata.sections if s.mem_size]
    assert [(op.gpa, op.size, op.section, op.section_type) for op in plan.ops] == [
        (s.gpa, s.mem_size, s.number, s.type) for s in mapped
    ]
    hobs = [s for s in metadata.sections if int(s.type) == TD_HOB]
    assert (plan.td_hob is None) == (not hobs)
    if plan.td_hob is not None:
        check_hob(plan.td_hob, hobs[0])
    for op, section in zip(plan.ops, mapped, strict=True):
        if section.attributes & PAGE_AUG:
            assert op.action is TdAction.PAGE_AUG
        elif section.attributes & MR_EXTEND:
            assert op.action is TdAction.PAGE_ADD_EXTEND
        else:
            assert op.action is TdAction.PAGE_ADD
        assert op.label == section.name
        want = expected_contents(section, data, tail, plan.td_hob)
        if want is None:
            assert op.data is None
        else:
            assert len(want) == section.mem_size, "the plan should have refused this section"
            # The plan keeps only the non-zero prefix; the rest of the section is zero.
            assert op.data is not None and len(op.data) <= section.mem_size
            assert bytes(op.data).ljust(section.mem_size, b"\0") == want


def record_sequence(plan: TdPlan) -> list[tuple[str, int, int]]:
    """(record, GPA, section) of every MRTD record the plan's operations issue, in order."""
    order = plan.spec.td_config.page_order
    out = []
    for op in plan.ops:
        if op.action is TdAction.PAGE_AUG:
            continue
        pages = range(op.gpa, op.gpa + op.size, PAGE)
        adds = [("MEM.PAGE.ADD", gpa, op.section) for gpa in pages]
        if op.action is TdAction.PAGE_ADD:
            out += adds
            continue
        extends = [
            [("MR.EXTEND", gpa + chunk, op.section) for chunk in range(0, PAGE, CHUNK)]
            for gpa in pages
        ]
        if order is PageOrder.SECTION:
            out += adds + [record for page in extends for record in page]
        else:
            out += [
                record for add, page in zip(adds, extends, strict=True) for record in [add, *page]
            ]
    return out


def check_trace(trace: tuple[Step, ...], plan: TdPlan, digest: bytes) -> None:
    """One step per record, in the order of the plan, ending at the MRTD."""
    assert [t.number for t in trace] == list(range(len(trace)))
    assert [(t.kind, t.gpa, t.section) for t in trace] == record_sequence(plan)
    assert (trace[-1].digest if trace else hashlib.sha384().digest()) == digest


def run_pipeline(
    data: bytes, metadata: TdvfMetadata, order: PageOrder, tail: RawDataTail
) -> TdPlan | CvmlaunchError | None:
    """build_td_plan + measure (and the traced measure when small), checked.

    Returns the plan, the refusal, or None when the budget says to skip. Anything but a
    FirmwareError or ProfileError propagates and fails the calling test.
    """
    if materialized_bytes(metadata) > ALLOC_BUDGET:
        note("plan: skipped (would materialize too much)")
        return None
    try:
        plan = build_td_plan(td_spec(order, tail), firmware=data)
    except (FirmwareError, ProfileError) as error:
        if isinstance(error, FirmwareError):
            check_error(error, data)
        note(f"plan: {classify(error)}")
        return error
    check_plan(plan, metadata, data, tail)
    pages = measured_pages(metadata)
    if pages > MEASURE_PAGE_BUDGET:
        note("measure: skipped (too many pages)")
        return plan
    result = measure(plan)
    assert result.technology is Technology.TDX and result.trace is None
    assert isinstance(result.digest, bytes) and len(result.digest) == MRTD_SIZE
    if pages < TRACE_PAGE_LIMIT:
        traced = measure(plan, trace=True)
        assert traced.digest == result.digest, "the fast and the traced engine disagree"
        assert traced.trace is not None
        steps = tuple(t for t in traced.trace if t.kind in TD_RECORDS)
        assert len(steps) == len(traced.trace)
        check_trace(steps, plan, result.digest)
        note("measure: fast and traced")
    else:
        note("measure: fast")
    return plan


def reference_mrtd(
    data: bytes,
    sections: Sequence[TdvfSection],
    order: PageOrder,
    tail: RawDataTail,
    hob: bytes | None,
) -> bytes:
    """MRTD the plain way: one SHA-384 update per 128-byte record, sections in table order."""
    h = hashlib.sha384()
    for s in sections:
        if s.mem_size == 0 or s.attributes & PAGE_AUG:
            continue
        gpas = range(s.gpa, s.gpa + s.mem_size, PAGE)
        if not s.attributes & MR_EXTEND:
            for gpa in gpas:
                h.update(PAGE_ADD_TAG + gpa.to_bytes(8, "little") + bytes(104))
            continue
        if s.type == TD_HOB:
            assert hob is not None
            contents = hob + bytes(s.mem_size - len(hob))
        elif s.raw_size and tail is RawDataTail.ZERO:
            raw = data[s.data_offset : s.data_offset + s.raw_size]
            contents = raw + bytes(s.mem_size - s.raw_size)
        elif s.raw_size:
            contents = data[s.data_offset : s.data_offset + s.mem_size]
        else:
            contents = bytes(s.mem_size)
        assert len(contents) == s.mem_size
        extends = [
            (gpa + c, contents[gpa - s.gpa + c : gpa - s.gpa + c + CHUNK])
            for gpa in gpas
            for c in range(0, PAGE, CHUNK)
        ]
        per_page = PAGE // CHUNK
        if order is PageOrder.SECTION:
            for gpa in gpas:
                h.update(PAGE_ADD_TAG + gpa.to_bytes(8, "little") + bytes(104))
        for index, (chunk_gpa, chunk) in enumerate(extends):
            if order is PageOrder.PAGE and index % per_page == 0:
                h.update(PAGE_ADD_TAG + chunk_gpa.to_bytes(8, "little") + bytes(104))
            h.update(MR_EXTEND_TAG + chunk_gpa.to_bytes(8, "little") + bytes(104))
            h.update(chunk)
    return h.digest()


# --------------------------------------------------------------------------------------
# 1. Random bytes
# --------------------------------------------------------------------------------------

SIZES = st.one_of(
    st.integers(0, FOOTER_BACK - 1),
    st.integers(FOOTER_BACK, 0x200),
    st.sampled_from([PAGE, 2 * PAGE, 4 * PAGE, 16 * PAGE]),
    st.integers(1, 3 * PAGE + 7),
)


def extreme_u32(size: int, extra: Sequence[int] = ()) -> st.SearchStrategy[int]:
    specials = [0, 1, 2, 3, 7, 8, 9, 0xF, 0x10, 0x11, 0x20, 0x30, 0xFF, 0xFFF, PAGE, PAGE + 1]
    specials += [0x7FFFFFFF, 0x80000000, 0xFFFFF000, U32_MAX]
    specials += [v for v in (size - 1, size, size + 1, size - 0x10, size - 0x20) if v >= 0]
    specials += [v for v in extra if 0 <= v <= U32_MAX]
    return st.one_of(st.sampled_from(specials), st.integers(0, U32_MAX))


EXTREME_U64 = st.one_of(
    st.sampled_from(
        [
            *(0, 1, PAGE - 1, PAGE, PAGE + 1, 0x800000, 0xFFFFF000, 1 << 32, (1 << 32) + PAGE),
            *(1 << 51, GPA_LIMIT - PAGE, GPA_LIMIT, GPA_LIMIT + PAGE, U64_MAX - PAGE + 1, U64_MAX),
        ]
    ),
    st.integers(0, U64_MAX),
)


def noisy_field(draw: st.DrawFn, name: str, size: int) -> int:
    """An edge value for one TDVF_SECTION field."""
    if name in ("gpa", "mem_size"):
        return draw(EXTREME_U64)
    if name == "type":
        return draw(st.one_of(st.sampled_from(ALL_TYPES), extreme_u32(size)))
    if name == "attributes":
        return draw(st.one_of(st.integers(0, 3), extreme_u32(size)))
    return draw(extreme_u32(size))


SECTION_FIELDS = ("data_offset", "raw_size", "gpa", "mem_size", "type", "attributes")


def section_table(draw: st.DrawFn, size: int) -> list[Section]:
    """Sections for a planted descriptor: valid, valid but for one field, or all noise."""
    mode = draw(st.sampled_from(["valid", "one noisy field", "noise"]), label="sections")
    if mode == "noise":
        return [
            Section(*(noisy_field(draw, name, size) for name in SECTION_FIELDS))
            for _ in range(draw(st.integers(1, 8)))
        ]
    sections = draw_sections(draw, size)
    if mode == "one noisy field":
        name = draw(st.sampled_from(SECTION_FIELDS))
        setattr(draw(st.sampled_from(sections)), name, noisy_field(draw, name, size))
    return sections


def mostly(good: T, bad: Sequence[T]) -> st.SearchStrategy[T]:
    """`good` five times in six, else one of `bad`."""
    return st.sampled_from([good] * 5 * len(bad) + list(bad))


def pointer(size: int, exact: int | None) -> st.SearchStrategy[int]:
    """A locator value: mostly `exact` (the planted descriptor), else an edge value."""
    if exact is None:
        return extreme_u32(size)
    return st.one_of(st.just(exact), st.just(exact), st.just(exact), extreme_u32(size, [exact]))


@st.composite
def random_images(draw: st.DrawFn) -> bytes:
    size = draw(SIZES, label="size")
    fill = draw(st.sampled_from(["drawn", "seeded", "zeros", "ones", "nops"]), label="fill")
    if fill == "drawn" and size <= 1024:
        buf = bytearray(draw(st.binary(min_size=size, max_size=size)))
    elif fill in ("zeros", "ones", "nops"):
        buf = bytearray({"zeros": b"\0", "ones": b"\xff", "nops": b"\x90"}[fill] * size)
    else:
        buf = bytearray(random.Random(draw(st.integers(0, U32_MAX))).randbytes(size))
    locator = draw(st.sampled_from(["none", "footer", "footer", "td-shim", "td-shim"]))
    table_size = 2 * TABLE_HEADER + 4
    table_at = size - FOOTER_BACK - table_size
    room = (table_at if locator == "footer" else size - FOOTER_BACK) - DESC_SIZE
    desc_at: int | None = None
    planted = draw(st.integers(0, 3), label="descriptor") > 0
    if locator != "none" and room >= GUID_SIZE and planted:
        sections = section_table(draw, size)
        count = len(sections)
        fits = max(GUID_SIZE, room - ENTRY_SIZE * count)  # where the whole table fits
        desc_at = draw(
            st.one_of(st.integers(GUID_SIZE, fits), st.integers(GUID_SIZE, room)),
            label="descriptor at",
        )
        header_fields = (
            draw(mostly(b"TDVF", [b"TDVE", b"ASEV", bytes(4)])),
            draw(mostly(DESC_SIZE + ENTRY_SIZE * count, [0, 48, U32_MAX])),
            draw(mostly(1, [0, 2, U32_MAX])),
            draw(mostly(count, [0, count + 1, U32_MAX])),
        )
        blob = TDX_METADATA_GUID + DESCRIPTOR.pack(*header_fields)
        blob += b"".join(SECTION.pack(*s.fields()) for s in sections)
        end = min(size, desc_at - GUID_SIZE + len(blob))
        buf[desc_at - GUID_SIZE : end] = blob[: end - desc_at + GUID_SIZE]
    if locator == "footer" and table_at >= 0:
        from_end = draw(pointer(size, None if desc_at is None else size - desc_at))
        table_len = draw(mostly(table_size, [0, TABLE_HEADER, 0xFFFF]))
        table = U32.pack(from_end) + U16.pack(TABLE_HEADER + 4) + TDX_ENTRY_GUID
        table += U16.pack(table_len) + FOOTER_GUID
        buf[table_at : table_at + table_size] = table
    elif locator == "td-shim" and size >= FOOTER_BACK:
        U32.pack_into(buf, size - FOOTER_BACK, draw(pointer(size, desc_at)))
    return Image(buf)


def examine_bytes(
    data: bytes, order: PageOrder, tail: RawDataTail, outcomes: Counter[str]
) -> None:
    """Parse, then plan and measure what parses; tally what happened."""
    parsed = parse_checked(data)
    if isinstance(parsed, FirmwareError):
        outcomes[f"error: {classify(parsed)}"] += 1
        return
    if parsed is None:
        outcomes["none"] += 1
        return
    outcomes["parsed"] += 1
    result = run_pipeline(data, parsed, order, tail)
    if isinstance(result, TdPlan):
        outcomes["planned"] += 1
    elif result is not None:
        outcomes[f"plan error: {classify(result)}"] += 1


def test_random_bytes_raise_only_firmware_error() -> None:
    """Noise, and noise behind a planted locator: only FirmwareError escapes, from any step."""
    outcomes: Counter[str] = Counter()

    @fuzz_settings(400)
    @given(random_images(), st.sampled_from(ORDERS), st.sampled_from(TAILS))
    def run(data: bytes, order: PageOrder, tail: RawDataTail) -> None:
        examine_bytes(data, order, tail, outcomes)

    run()
    total = sum(outcomes.values())
    # The planted descriptors get the noisy sections checked, and some through to the MRTD.
    assert outcomes["parsed"] >= 5 and outcomes["planned"] >= 3, outcomes
    error_kinds = [k for k in outcomes if k.startswith("error: ")]
    assert len(error_kinds) >= 10, outcomes
    assert outcomes["none"] <= total * 3 // 4, outcomes


def test_tiny_images_have_no_metadata() -> None:
    """Shorter than the td-shim offset: no metadata, never an out-of-range read."""
    for size in range(FOOTER_BACK):
        for fill in (b"\0", b"\xff", b"TDVF"):
            data = (fill * size)[:size]
            assert find_tdvf(data) is None
            assert parse_checked(data) is None


# --------------------------------------------------------------------------------------
# 2. Mutated real images
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    """A real image and the places worth corrupting."""

    name: str
    data: bytes = field(repr=False)
    descriptor: tuple[int, int] = field(repr=False)  # [GUID, end of the section table)
    fields: tuple[int, ...] = field(repr=False)  # file offsets of the fields
    values: tuple[int, ...] = field(repr=False)  # values that mean something in this image


def make_fixture(name: str, data: bytes) -> Fixture:
    metadata = parse_tdvf(data)
    size = len(data)
    at = metadata.offset
    fields = [at - GUID_SIZE, at, at + 4, at + 8, at + 12]
    for s in metadata.sections:
        fields += [s.offset + delta for delta in (0, 4, 8, 16, 24, 28)]
    for entry in parse_footer_table(data):
        fields += [entry.offset, entry.offset + len(entry.data)]  # data and u16 length
    fields += [size - FOOTER_BACK - TABLE_HEADER, size - FOOTER_BACK]
    end = at + DESC_SIZE + ENTRY_SIZE * len(metadata.sections)
    values = [size - at, at, end - at, len(metadata.sections), U32_MAX // ENTRY_SIZE]
    return Fixture(name, data, (at - GUID_SIZE, end), tuple(sorted(set(fields))), tuple(values))


SYNTHETIC = ("base", "aug", "partial")


def load_fixtures() -> tuple[Fixture, ...]:
    found = [
        make_fixture(name, (TDX_VECTORS / f"synth-tdvf-{name}.bin").read_bytes())
        for name in SYNTHETIC
    ]
    if DEBIAN_OVMF.is_file():
        # Another distribution's build may carry no TDVF metadata: its case then skips.
        with contextlib.suppress(FirmwareError):
            found.append(make_fixture("OVMF.fd", DEBIAN_OVMF.read_bytes()))
    return tuple(found)


FIXTURES = load_fixtures()


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> bytes:
    fixture = draw(st.sampled_from(FIXTURES), label="fixture")
    buf = bytearray(fixture.data)
    size = len(buf)
    start, end = fixture.descriptor
    position = st.one_of(
        st.sampled_from(fixture.fields),
        st.integers(start, end - 1),
        st.integers(size - 0x100, size - 1),
        st.integers(0, size - 1),
    )
    u32s = extreme_u32(size, fixture.values)
    for _ in range(draw(st.integers(0, 6), label="mutations")):
        kind = draw(st.sampled_from(["bit", "byte", "u32", "u32", "u64"]))
        at = draw(position)
        if kind == "bit":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            buf[at] = draw(st.integers(0, 0xFF))
        elif kind == "u32":
            U32.pack_into(buf, min(at, size - 4), draw(u32s))
        else:
            U64.pack_into(buf, min(at, size - 8), draw(EXTREME_U64))
    frame = draw(st.sampled_from(["keep"] * 4 + ["cut end", "cut front", "append", "prepend"]))
    data = bytes(buf)
    if frame == "cut end":  # the locators are no longer where they were
        data = data[: draw(st.integers(0, size - 1))]
    elif frame == "cut front":  # the footer stays at the end; file offsets shift
        data = data[draw(st.integers(1, size)) :]
    elif frame == "append":
        data += draw(st.sampled_from([b"\0", b"\xff"])) * draw(st.integers(1, 2 * PAGE))
    elif frame == "prepend":
        data = bytes(draw(st.integers(1, 4)) * PAGE) + data
    note(f"fixture: {fixture.name}, frame: {frame}")
    return Image(data)


def test_mutated_fixtures_raise_only_firmware_error() -> None:
    """Corrupted real images: only FirmwareError (ProfileError) escapes, from any step."""
    outcomes: Counter[str] = Counter()

    @fuzz_settings(250)
    @given(mutated_fixtures(), st.sampled_from(ORDERS), st.sampled_from(TAILS))
    def run(data: bytes, order: PageOrder, tail: RawDataTail) -> None:
        examine_bytes(data, order, tail, outcomes)

    run()
    total = sum(outcomes.values())
    assert outcomes["parsed"] >= total // 10 and outcomes["planned"] >= total // 20, outcomes
    assert sum(v for k, v in outcomes.items() if k.startswith("error")) >= total // 5, outcomes
    assert len([k for k in outcomes if k.startswith("error")]) >= 10, outcomes


def vector_for(name: str, data: bytes) -> dict[str, Any] | None:
    if name in SYNTHETIC:
        synthetic: dict[str, Any] = VECTORS["synthetic_images"][name]
        assert hashlib.sha256(data).hexdigest() == synthetic["sha256"]
        return synthetic
    digest = hashlib.sha256(data).hexdigest()
    firmware: dict[str, dict[str, Any]] = VECTORS["firmware"]
    return next((v for v in firmware.values() if v["sha256"] == digest), None)


@pytest.mark.parametrize(
    "name",
    [*SYNTHETIC, pytest.param("OVMF.fd", marks=pytest.mark.debian_ovmf)],
)
def test_unmutated_fixtures_parse_and_measure(name: str) -> None:
    """The real images parse into their recorded sections and measure to their recorded
    MRTDs, which the reference implementation of this file reproduces."""
    if name == "OVMF.fd" and not DEBIAN_OVMF.is_file():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    fixture = next((f for f in FIXTURES if f.name == name), None)
    if fixture is None:
        pytest.skip(f"{DEBIAN_OVMF} carries no TDVF metadata")
    data = fixture.data
    vector = vector_for(name, data)
    if vector is None:
        pytest.skip(f"{DEBIAN_OVMF} is not an OVMF build that tdx-vectors.json records")
    metadata = parse_checked(data)
    assert isinstance(metadata, TdvfMetadata)
    assert metadata.locator == Locator.OVMF_FOOTER
    want = [
        (v["data_offset"], v["raw_size"], v["gpa"], v["mem_size"], v["type"], v["attributes"])
        for v in vector["sections"]
    ]
    got = [
        (s.data_offset, s.raw_size, s.gpa, s.mem_size, int(s.type), s.attributes)
        for s in metadata.sections
    ]
    assert got == want
    keys = {PageOrder.PAGE: "mrtd_single_pass", PageOrder.SECTION: "mrtd_two_pass"}
    for order in ORDERS:
        for tail in TAILS:
            plan = run_pipeline(data, metadata, order, tail)
            assert isinstance(plan, TdPlan)
            key = keys[order]
            if tail is RawDataTail.ZERO and f"{key}_spec_zero_fill" in vector:
                key += "_spec_zero_fill"
            digest = measure(plan).digest
            assert digest.hex() == vector[key], (order, tail)
            assert reference_mrtd(data, metadata.sections, order, tail, plan.td_hob) == digest


# --------------------------------------------------------------------------------------
# 3. Images built from a generated description
# --------------------------------------------------------------------------------------


@dataclass
class Section:
    data_offset: int
    raw_size: int
    gpa: int
    mem_size: int
    type: int
    attributes: int

    def fields(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.data_offset,
            self.raw_size,
            self.gpa,
            self.mem_size,
            self.type,
            self.attributes,
        )

    @property
    def mapped(self) -> bool:
        return self.type not in VMM_ONLY


# The footer table never grows beyond this; the descriptor stays below it.
MAX_TABLE = 0x100


@dataclass
class Design:
    """What a synthetic image contains; `render` turns it into bytes."""

    size: int
    locator: str
    desc_at: int
    sections: list[Section]
    seed: int
    entries: list[tuple[bytes, bytes]] = field(default_factory=list)  # (GUID, data)
    footer: bool = True  # write a footer table at all
    tdshim_offset: int | None = None  # the u32 0x20 before the end; None: filler
    guid: bytes = TDX_METADATA_GUID  # the 16 bytes before the descriptor
    signature: bytes = b"TDVF"
    version: int = 1
    count: int | None = None  # None: len(sections)
    length: int | None = None  # None: the true length

    def table(self) -> bytes:
        body = b"".join(d + U16.pack(len(d) + TABLE_HEADER) + g for g, d in self.entries)
        return body + U16.pack(len(body) + TABLE_HEADER) + FOOTER_GUID

    def entry_data_offset(self, guid: bytes) -> int:
        at = self.size - FOOTER_BACK - len(self.table())
        for g, d in self.entries:
            if g == guid:
                return at
            at += len(d) + TABLE_HEADER
        raise AssertionError(f"no entry {uuid.UUID(bytes_le=guid)}")

    def entry_at(self, index: int) -> int:
        return self.desc_at + DESC_SIZE + ENTRY_SIZE * index

    def blob(self) -> bytes:
        count = len(self.sections) if self.count is None else self.count
        natural = DESC_SIZE + ENTRY_SIZE * len(self.sections)
        length = natural if self.length is None else self.length
        header = DESCRIPTOR.pack(self.signature, length, self.version, count)
        return self.guid + header + b"".join(SECTION.pack(*s.fields()) for s in self.sections)


def render(design: Design) -> bytes:
    size = design.size
    buf = bytearray(random.Random(design.seed).randbytes(size))
    table_end = size - FOOTER_BACK
    if design.footer:
        table = design.table()
        assert len(table) <= MAX_TABLE
        buf[table_end - len(table) : table_end] = table
    else:  # no footer GUID where a VMM looks for it
        buf[table_end - TABLE_HEADER : table_end] = bytes(TABLE_HEADER)
    if design.tdshim_offset is not None:
        U32.pack_into(buf, table_end, design.tdshim_offset)
    blob = design.blob()
    start = design.desc_at - GUID_SIZE
    assert start >= 0 and start + len(blob) <= table_end - MAX_TABLE
    buf[start : start + len(blob)] = blob
    return Image(buf)


def _place(draw: st.DrawFn, sections: list[Section], npages: dict[int, int]) -> None:
    """Give the mapped sections disjoint GPAs: low (in guest RAM), or high for some."""
    mapped = [i for i, s in enumerate(sections) if s.mapped]
    order = draw(st.permutations(mapped), label="gpa order")
    rare_high = draw(st.integers(0, 9), label="accepted memory high") == 0
    high = [
        i
        for i in order
        if (sections[i].type not in ACCEPTED or rare_high) and draw(st.integers(0, 3)) == 0
    ]
    low = [i for i in order if i not in high]
    cursor = draw(st.integers(0, 0x1000), label="low base page") * PAGE
    for i in low:
        cursor += draw(st.integers(0, 2)) * PAGE
        sections[i].gpa = cursor
        cursor += npages[i] * PAGE
    top = draw(st.sampled_from([1 << 32, GPA_LIMIT]), label="high top")
    cursor = top - sum(npages[i] + 1 for i in high) * PAGE
    for i in high:
        cursor += draw(st.integers(0, 1)) * PAGE
        sections[i].gpa = cursor
        cursor += npages[i] * PAGE


def draw_sections(draw: st.DrawFn, size: int) -> list[Section]:
    """1..8 valid sections of any type, none overlapping."""
    sections: list[Section] = []
    npages: dict[int, int] = {}
    many_hobs = draw(st.integers(0, 9), label="many TD_HOBs") == 0
    for index in range(draw(st.integers(1, 8), label="sections")):
        kind = draw(st.sampled_from(ALL_TYPES))
        if kind == TD_HOB and not many_hobs and any(s.type == TD_HOB for s in sections):
            kind = TEMP_MEM
        pages = draw(st.integers(1, 8)) if kind not in VMM_ONLY else 0
        mem = pages * PAGE
        if kind in WITH_DATA:
            full = mem <= size and draw(st.booleans())
            raw = mem if full else draw(st.integers(1, min(mem, size)))
        elif kind in (PAYLOAD, PAYLOAD_PARAM):
            raw = draw(st.integers(0, min(mem, size)))
        elif kind in VMM_ONLY:
            raw = draw(st.integers(0, min(2 * PAGE, size)))
        else:
            raw = 0
        anywhere = st.integers(0, size - raw)
        at_end = st.just(size - raw)  # with raw < mem, QEMU copies past the image end
        offset = draw(st.one_of(anywhere, anywhere, at_end), label="offset") if raw else 0
        if kind in VMM_ONLY:
            options = [0]
        elif raw or kind in ACCEPTED:
            options = [0, MR_EXTEND]
        else:  # MR.EXTEND here is a VMM-loaded payload, which build_td_plan refuses
            options = [0, 0, 0, PAGE_AUG, MR_EXTEND]
        attributes = draw(st.sampled_from(options))
        sections.append(Section(offset, raw, 0, mem, kind, attributes))
        npages[index] = pages
    _place(draw, sections, npages)
    return sections


UNKNOWN_GUIDS = st.binary(min_size=16, max_size=16).filter(
    lambda g: g not in (TDX_ENTRY_GUID, FOOTER_GUID)
)


def draw_design(draw: st.DrawFn) -> Design:
    size = draw(st.integers(4, 16), label="pages") * PAGE
    if draw(st.integers(0, 3), label="odd size") == 0:
        size += draw(st.integers(1, PAGE - 1))
    locator = draw(st.sampled_from([Locator.OVMF_FOOTER, Locator.TD_SHIM]), label="locator")
    sections = draw_sections(draw, size)
    others: list[tuple[bytes, bytes]] = []
    if draw(st.booleans(), label="SEV entries"):
        others += [
            (SEV_RESET_GUID, U32.pack(0xFFFFF000)),
            (SEV_METADATA_GUID, draw(st.binary(min_size=4, max_size=4))),
        ]
    for guid in draw(st.lists(UNKNOWN_GUIDS, max_size=2, unique=True), label="unknown"):
        others.append((guid, draw(st.binary(max_size=24))))
    footer = locator == Locator.OVMF_FOOTER or draw(st.booleans(), label="footer w/o TDX")
    design = Design(size, locator, 0, sections, draw(st.integers(0, U32_MAX)), footer=footer)
    # One section of spare room, for the defects that add a section.
    blob = GUID_SIZE + DESC_SIZE + ENTRY_SIZE * (len(sections) + 1)
    highest = size - FOOTER_BACK - MAX_TABLE - blob + GUID_SIZE
    design.desc_at = draw(
        st.one_of(st.integers(GUID_SIZE, highest), st.just(highest)), label="descriptor at"
    )
    if locator == Locator.OVMF_FOOTER:
        tdx_entry = (TDX_ENTRY_GUID, U32.pack(size - design.desc_at))
        position = draw(st.integers(0, len(others)), label="TDX entry position")
        others.insert(position, tdx_entry)
        if not draw(st.booleans(), label="GUID before descriptor"):
            design.guid = draw(UNKNOWN_GUIDS.filter(lambda g: g != TDX_METADATA_GUID))
    else:
        design.tdshim_offset = design.desc_at
    design.entries = others
    return design


class Expect(NamedTuple):
    """What a defect must cause: an error naming `needles` at `offset`, or (no needles) no
    metadata at all."""

    needles: tuple[str, ...]
    offset: int | None


Defect = Callable[[st.DrawFn, Design], Expect]


def _index(draw: st.DrawFn, design: Design) -> int:
    return draw(st.integers(0, len(design.sections) - 1), label="section")


def _mapped_index(draw: st.DrawFn, design: Design) -> int:
    mapped = [i for i, s in enumerate(design.sections) if s.mapped]
    if not mapped:  # all TD_INFO / TD_PARAMS: turn one into TEMP_MEM
        design.sections[0] = Section(0, 0, 0x800000, PAGE, TEMP_MEM, 0)
        mapped = [0]
    return int(draw(st.sampled_from(mapped), label="mapped section"))


def _section_error(design: Design, index: int, *needles: str) -> Expect:
    return Expect((f"TDVF section {index} ", *needles), design.entry_at(index))


def _with_raw(draw: st.DrawFn, design: Design, section: Section, most: int) -> None:
    section.raw_size = draw(st.integers(1, min(most, design.size)))
    section.data_offset = draw(st.integers(0, design.size - section.raw_size))


def d_signature(draw: st.DrawFn, d: Design) -> Expect:
    d.signature = draw(st.binary(min_size=4, max_size=4).filter(lambda s: s != b"TDVF"))
    if d.locator == Locator.TD_SHIM:  # the td-shim offset is trusted only at a "TDVF"
        return Expect((), None)
    return Expect(("signature",), d.desc_at)


def d_version(draw: st.DrawFn, d: Design) -> Expect:
    d.version = draw(st.one_of(st.sampled_from([0, 2, U32_MAX]), st.integers(2, U32_MAX)))
    return Expect(("version",), d.desc_at)


def d_no_sections(draw: st.DrawFn, d: Design) -> Expect:
    d.count = 0
    d.length = draw(st.sampled_from([DESC_SIZE, None]))
    return Expect(("no sections",), d.desc_at)


def d_length(draw: st.DrawFn, d: Design) -> Expect:
    natural = DESC_SIZE + ENTRY_SIZE * len(d.sections)
    d.length = draw(st.integers(0, U32_MAX).filter(lambda v: v != natural))
    return Expect(("length",), d.desc_at)


def d_past_end(draw: st.DrawFn, d: Design) -> Expect:
    least = (d.size - d.desc_at - DESC_SIZE) // ENTRY_SIZE + 1
    d.count = draw(st.one_of(st.just(least), st.integers(least, (U32_MAX - DESC_SIZE) // 32)))
    d.length = DESC_SIZE + ENTRY_SIZE * d.count
    return Expect(("past the end",), d.desc_at)


def d_unknown_type(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    d.sections[index].type = draw(
        st.one_of(st.sampled_from([9, U32_MAX]), st.integers(9, U32_MAX)), label="type"
    )
    return _section_error(d, index, "unknown Type")


def d_reserved_attributes(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    d.sections[index].attributes |= draw(st.integers(1, U32_MAX >> 2)) << 2
    return _section_error(d, index, "Attributes", "reserved")


def d_extend_and_aug(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    d.sections[index].attributes = MR_EXTEND | PAGE_AUG
    return _section_error(d, index, "MR.EXTEND", "PAGE.AUG")


def d_aug_with_raw(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    section = d.sections[index]
    if section.raw_size == 0:
        _with_raw(draw, d, section, d.size)
    section.attributes = PAGE_AUG
    return _section_error(d, index, "PAGE.AUG", "raw data")


def d_aug_td_hob(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    section = d.sections[index]
    section.type, section.raw_size, section.data_offset = TD_HOB, 0, 0
    section.attributes = PAGE_AUG
    return _section_error(d, index, "PAGE.AUG", "TD HOB")


def d_data_offset(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    section = d.sections[index]
    section.raw_size = 0
    section.data_offset = draw(st.one_of(st.sampled_from([1, PAGE]), st.integers(1, U32_MAX)))
    return _section_error(d, index, "DataOffset", "RawDataSize 0")


def d_raw_past_end(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    section = d.sections[index]
    section.raw_size = draw(st.integers(1, U32_MAX))
    least = max(0, d.size - section.raw_size + 1)
    section.data_offset = draw(st.one_of(st.just(least), st.integers(least, U32_MAX)))
    section.attributes &= MR_EXTEND
    return _section_error(d, index, "raw data", "past the end")


def d_unaligned_gpa(draw: st.DrawFn, d: Design) -> Expect:
    index = _mapped_index(draw, d)
    d.sections[index].gpa += draw(st.integers(1, PAGE - 1))
    return _section_error(d, index, "MemoryAddress", "aligned")


def d_zero_mem_size(draw: st.DrawFn, d: Design) -> Expect:
    index = _mapped_index(draw, d)
    d.sections[index].mem_size = 0
    return _section_error(d, index, "MemoryDataSize")


def d_unaligned_mem_size(draw: st.DrawFn, d: Design) -> Expect:
    index = _mapped_index(draw, d)
    d.sections[index].mem_size += draw(st.integers(1, PAGE - 1))
    return _section_error(d, index, "MemoryDataSize")


def d_raw_exceeds_mem(draw: st.DrawFn, d: Design) -> Expect:
    index = _mapped_index(draw, d)
    section = d.sections[index]
    section.mem_size = PAGE  # shrinking keeps it clear of the others
    section.raw_size = draw(st.integers(PAGE + 1, d.size))
    section.data_offset = draw(st.integers(0, d.size - section.raw_size))
    section.attributes &= MR_EXTEND
    return _section_error(d, index, "RawDataSize", "exceeds MemoryDataSize")


def d_gpa_beyond_52_bits(draw: st.DrawFn, d: Design) -> Expect:
    index = _mapped_index(draw, d)
    section = d.sections[index]
    least = (GPA_LIMIT - section.mem_size) // PAGE + 1
    section.gpa = PAGE * draw(st.one_of(st.just(least), st.integers(least, U64_MAX // PAGE)))
    return _section_error(d, index, "memory", "52-bit")


def d_bfv_without_raw(draw: st.DrawFn, d: Design) -> Expect:
    index = _mapped_index(draw, d)
    section = d.sections[index]
    section.type = draw(st.sampled_from([BFV, CFV]))
    section.raw_size = section.data_offset = 0
    return _section_error(d, index, "RawDataSize", "is 0")


def d_vmm_memory_with_raw(draw: st.DrawFn, d: Design) -> Expect:
    index = _mapped_index(draw, d)
    section = d.sections[index]
    section.type = draw(st.sampled_from(sorted(WITHOUT_DATA)))
    _with_raw(draw, d, section, section.mem_size)
    section.attributes &= MR_EXTEND
    return _section_error(d, index, "RawDataSize", "expected 0")


def d_vmm_only_with_memory(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    section = d.sections[index]
    section.type = draw(st.sampled_from(sorted(VMM_ONLY)))
    section.attributes = 0
    if section.gpa == section.mem_size == 0 or draw(st.booleans()):
        section.gpa = draw(st.integers(0, 0x100)) * PAGE
        section.mem_size = draw(st.sampled_from([0, PAGE, PAGE + 1]))
        if section.gpa == section.mem_size == 0:
            section.mem_size = PAGE
    return _section_error(d, index, "MemoryAddress/MemoryDataSize", "must be 0")


def d_vmm_only_attributes(draw: st.DrawFn, d: Design) -> Expect:
    index = _index(draw, d)
    section = d.sections[index]
    section.type = draw(st.sampled_from(sorted(VMM_ONLY)))
    section.gpa = section.mem_size = 0
    section.attributes = PAGE_AUG if section.raw_size == 0 and draw(st.booleans()) else MR_EXTEND
    return _section_error(d, index, "Attributes", "must be 0")


def d_overlap(draw: st.DrawFn, d: Design) -> Expect:
    """A new one-page section inside a mapped one: the later of the two in the table is
    the one reported."""
    target = _mapped_index(draw, d)
    victim = d.sections[target]
    page = draw(st.integers(0, victim.mem_size // PAGE - 1))
    intruder = Section(0, 0, victim.gpa + page * PAGE, PAGE, PERM_MEM, 0)
    position = draw(st.integers(0, len(d.sections)), label="intruder position")
    d.sections.insert(position, intruder)
    target += position <= target
    return _section_error(
        d, max(position, target), "overlaps", f"TDVF section {min(position, target)} ("
    )


def _tdx_entry(d: Design, data: bytes) -> Expect:
    d.entries = [(g, v) for g, v in d.entries if g != TDX_ENTRY_GUID] + [(TDX_ENTRY_GUID, data)]
    d.footer = True
    return Expect((), d.entry_data_offset(TDX_ENTRY_GUID))


def d_footer_outside(draw: st.DrawFn, d: Design) -> Expect:
    """The footer entry wins over a valid td-shim offset: no fallback on error."""
    from_end = draw(
        st.one_of(st.integers(0, DESC_SIZE - 1), st.integers(d.size + 1, U32_MAX)),
        label="from end",
    )
    where = _tdx_entry(d, U32.pack(from_end)).offset
    return Expect(("TDX metadata offset", "points outside"), where)


def d_footer_short_entry(draw: st.DrawFn, d: Design) -> Expect:
    where = _tdx_entry(d, draw(st.binary(max_size=3))).offset
    return Expect(("TDX metadata offset entry", "expected 4"), where)


def _force_td_shim(d: Design) -> None:
    d.entries = [(g, v) for g, v in d.entries if g != TDX_ENTRY_GUID]
    d.locator = Locator.TD_SHIM
    d.tdshim_offset = d.desc_at


def d_td_shim_without_guid(draw: st.DrawFn, d: Design) -> Expect:
    _force_td_shim(d)
    d.guid = draw(UNKNOWN_GUIDS.filter(lambda g: g != TDX_METADATA_GUID))
    return Expect((), None)


def d_td_shim_offset_outside(draw: st.DrawFn, d: Design) -> Expect:
    _force_td_shim(d)
    d.tdshim_offset = draw(
        st.one_of(st.integers(0, GUID_SIZE - 1), st.integers(d.size - DESC_SIZE + 1, U32_MAX))
    )
    return Expect((), None)


DEFECTS: dict[str, Defect] = {
    "bad_signature": d_signature,
    "bad_version": d_version,
    "zero_sections": d_no_sections,
    "length_mismatch": d_length,
    "descriptor_past_end": d_past_end,
    "unknown_type": d_unknown_type,
    "reserved_attributes": d_reserved_attributes,
    "mr_extend_and_page_aug": d_extend_and_aug,
    "page_aug_with_raw_data": d_aug_with_raw,
    "page_aug_td_hob": d_aug_td_hob,
    "data_offset_without_raw_data": d_data_offset,
    "raw_data_past_end": d_raw_past_end,
    "unaligned_gpa": d_unaligned_gpa,
    "zero_mem_size": d_zero_mem_size,
    "unaligned_mem_size": d_unaligned_mem_size,
    "raw_size_exceeds_mem_size": d_raw_exceeds_mem,
    "gpa_beyond_52_bits": d_gpa_beyond_52_bits,
    "bfv_cfv_without_raw_data": d_bfv_without_raw,
    "td_hob_temp_perm_with_raw_data": d_vmm_memory_with_raw,
    "td_info_params_with_memory": d_vmm_only_with_memory,
    "td_info_params_with_attributes": d_vmm_only_attributes,
    "overlapping_sections": d_overlap,
    "footer_entry_outside_image": d_footer_outside,
    "footer_entry_short": d_footer_short_entry,
    "td_shim_without_guid": d_td_shim_without_guid,
    "td_shim_offset_outside_image": d_td_shim_offset_outside,
}


@dataclass(frozen=True)
class Case:
    defect: str  # "none": valid
    expect: Expect | None
    design: Design = field(repr=False)
    data: bytes = field(repr=False)


@st.composite
def designed_images(draw: st.DrawFn, defects: Sequence[str]) -> Case:
    design = draw_design(draw)
    defect = draw(st.sampled_from(defects), label="defect")
    expect = None if defect == "none" else DEFECTS[defect](draw, design)
    return Case(defect, expect, design, render(design))


def check_round_trip(design: Design, metadata: TdvfMetadata) -> None:
    """A valid design parses back into exactly what it describes."""
    assert metadata.locator == design.locator
    assert metadata.offset == design.desc_at
    got = [
        (s.data_offset, s.raw_size, s.gpa, s.mem_size, int(s.type), s.attributes)
        for s in metadata.sections
    ]
    assert got == [s.fields() for s in design.sections]


def plan_refusals(metadata: TdvfMetadata, data: bytes, tail: RawDataTail) -> list[str]:
    """Why build_td_plan must refuse a valid parse (QEMU's limits); empty: it must not."""
    out = []
    hobs = [s for s in metadata.sections if int(s.type) == TD_HOB]
    if len(hobs) > 1:
        out.append("TD_HOB sections")
    accepted = [s for s in metadata.sections if int(s.type) in ACCEPTED]
    if hobs and any(s.gpa + s.mem_size > SPEC_RAM_END for s in accepted):
        out.append("not inside the guest RAM")
    for s in metadata.sections:
        if s.mem_size > SPEC_RAM_END and not s.page_aug:
            out.append("more than the guest's")
        if s.mem_size == 0 or int(s.type) == TD_HOB:
            continue
        if s.raw_size == 0 and s.extends_mr and int(s.type) not in ACCEPTED:
            out.append("no raw data")
        image_tail = tail is RawDataTail.IMAGE and 0 < s.raw_size < s.mem_size
        if image_tail and s.data_offset + s.mem_size > len(data):
            out.append("copies MemoryDataSize bytes")
    return out


def examine_design(
    case: Case, order: PageOrder, tail: RawDataTail, outcomes: Counter[str]
) -> TdPlan | None:
    """Parse a designed image against its expectation; plan and measure what parses."""
    note(f"defect: {case.defect}")
    parsed = parse_checked(case.data)
    expect = case.expect
    if expect is not None:
        if not expect.needles:
            assert parsed is None, f"{case.defect}: expected no metadata, got {parsed}"
            outcomes["none"] += 1
            return None
        assert isinstance(parsed, FirmwareError), f"{case.defect} was accepted: {parsed}"
        for needle in expect.needles:
            assert needle in parsed.reason, (case.defect, needle, str(parsed))
        assert parsed.offset == expect.offset, (case.defect, parsed.offset, str(parsed))
        outcomes[f"error: {classify(parsed)}"] += 1
        return None
    assert isinstance(parsed, TdvfMetadata), f"a valid design was refused: {parsed}"
    check_round_trip(case.design, parsed)
    outcomes[f"parsed: {parsed.locator}"] += 1
    refusals = plan_refusals(parsed, case.data, tail)
    result = run_pipeline(case.data, parsed, order, tail)
    if refusals:
        assert isinstance(result, FirmwareError), (refusals, result)
        assert any(r in result.reason for r in refusals), (refusals, str(result))
        outcomes[f"plan error: {classify(result)}"] += 1
        return None
    assert isinstance(result, TdPlan), f"a plan QEMU accepts was refused: {result}"
    outcomes["planned"] += 1
    return result


def test_valid_designs_round_trip_plan_and_measure() -> None:
    """Every valid design parses back into itself, with either locator; its plan is refused
    exactly when QEMU would refuse it, and otherwise measures (fast = traced)."""
    outcomes: Counter[str] = Counter()

    @fuzz_settings(200)
    @given(designed_images(["none"]), st.sampled_from(ORDERS), st.sampled_from(TAILS))
    def run(case: Case, order: PageOrder, tail: RawDataTail) -> None:
        examine_design(case, order, tail, outcomes)

    run()
    for locator in (Locator.OVMF_FOOTER, Locator.TD_SHIM):
        assert outcomes[f"parsed: {locator}"] >= 40, outcomes
    assert outcomes["planned"] >= 80, outcomes
    assert outcomes["plan error: payload"] and outcomes["plan error: image tail past end"]


def test_mrtd_matches_reference_implementation() -> None:
    """The MRTD of every plan QEMU accepts equals a record-by-record SHA-384 in both page
    orders and both raw-data tails; the orders disagree whenever a measured section has
    more than one page."""
    counts: Counter[str] = Counter()

    @fuzz_settings(120)
    @given(designed_images(["none"]))
    def run(case: Case) -> None:
        data = case.data
        metadata = parse_tdvf(data)
        digests: dict[tuple[RawDataTail, PageOrder], bytes] = {}
        for tail in TAILS:
            for order in ORDERS:
                if plan_refusals(metadata, data, tail):
                    with pytest.raises(FirmwareError):
                        build_td_plan(td_spec(order, tail), firmware=data)
                    counts["refused"] += 1
                    continue
                plan = build_td_plan(td_spec(order, tail), firmware=data)
                digest = measure(plan).digest
                assert digest == reference_mrtd(data, metadata.sections, order, tail, plan.td_hob)
                digests[tail, order] = digest
                counts["compared"] += 1
        extended = [s for s in metadata.sections if s.extends_mr]
        multi_page = any(s.mem_size > PAGE for s in extended)
        for tail in TAILS:
            if (tail, PageOrder.PAGE) in digests:
                same = digests[tail, PageOrder.PAGE] == digests[tail, PageOrder.SECTION]
                assert same != multi_page
                counts["orders differ" if multi_page else "orders agree"] += 1
        # The tails differ only in the bytes past RawDataSize of a measured section.
        tail_matters = any(
            any(data[s.data_offset + s.raw_size : s.data_offset + s.mem_size])
            for s in extended
            if 0 < s.raw_size < s.mem_size
        )
        for order in ORDERS:
            if (RawDataTail.IMAGE, order) in digests and (RawDataTail.ZERO, order) in digests:
                same = digests[RawDataTail.IMAGE, order] == digests[RawDataTail.ZERO, order]
                assert same != tail_matters
                counts["tails differ" if tail_matters else "tails agree"] += 1
        counts.update({f"extended type {t}" for t in (int(s.type) for s in extended)})

    run()
    assert counts["compared"] >= 250 and counts["orders differ"] >= 40, counts
    assert counts["tails differ"] >= 10 and counts["tails agree"] >= 10, counts
    for kind in (BFV, CFV, TD_HOB, TEMP_MEM, PAYLOAD):
        assert counts[f"extended type {kind}"] >= 5, counts


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_is_caught_by_its_check(defect: str) -> None:
    """A design broken in one known way fails, every time, at the check meant for it, with
    the descriptor, section entry or footer entry as the error's offset."""
    outcomes: Counter[str] = Counter()

    @settings(fuzz_settings(12))
    @given(designed_images([defect]))
    def run(case: Case) -> None:
        examine_design(case, PageOrder.PAGE, RawDataTail.IMAGE, outcomes)

    run()
    assert outcomes and not any(k.startswith(("parsed", "planned")) for k in outcomes), outcomes


def test_designed_offsets_match_the_parse() -> None:
    """The design helpers locate what the parser reports (guards the defect tests)."""
    design = Design(4 * PAGE, Locator.OVMF_FOOTER, 0x200, [], seed=1)
    design.sections = [Section(0, PAGE, 0, PAGE, BFV, MR_EXTEND), Section(0, 0, PAGE, PAGE, 3, 0)]
    design.entries = [(SEV_RESET_GUID, bytes(4)), (TDX_ENTRY_GUID, U32.pack(4 * PAGE - 0x200))]
    data = render(design)
    metadata = parse_tdvf(data)
    assert metadata.offset == 0x200 and metadata.locator == Locator.OVMF_FOOTER
    assert [s.offset for s in metadata.sections] == [design.entry_at(0), design.entry_at(1)]
    entry = next(e for e in parse_footer_table(data) if e.guid == TDX_ENTRY_GUID)
    assert entry.offset == design.entry_data_offset(TDX_ENTRY_GUID)
    # The constants written out above are the ones cvmlaunch uses.
    assert TDX_ENTRY_GUID == ovmf_abi.TDX_METADATA_OFFSET_GUID
    assert FOOTER_GUID == ovmf_abi.FOOTER_GUID
    assert TDX_METADATA_GUID == tdx_abi.TDX_METADATA_GUID
    assert (DESCRIPTOR.format, SECTION.format) == (
        tdx_abi.TDVF_DESCRIPTOR.format,
        tdx_abi.TDVF_SECTION.format,
    )


# --------------------------------------------------------------------------------------
# 4. Defects this file found (fixed): regression tests
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "attributes"),
    [(0, 0xFFFFFFFD), (0, 1 << 2), (2, 1 << 31), (2, 0xFFFFFFFC), (3, 0xFFFFFFFE)],
)
def test_reserved_attribute_bits_are_rejected(section: int, attributes: int) -> None:
    """synth-tdvf-base.bin with bits 31:2 set in one section's Attributes (BFV: MR.EXTEND
    kept; TEMP_MEM / TD_HOB: no valid bit) is refused at that section's entry."""
    fixture = next(f for f in FIXTURES if f.name == "base")
    buf = bytearray(fixture.data)
    entry_at = parse_tdvf(fixture.data).sections[section].offset
    U32.pack_into(buf, entry_at + 28, attributes)
    error = parse_checked(bytes(buf))
    assert isinstance(error, FirmwareError), f"Attributes {attributes:#x} accepted"
    assert "reserved" in error.reason and error.offset == entry_at


def test_zero_fill_of_a_huge_short_section_is_not_materialized() -> None:
    """A CFV of 4 PiB with one page of raw data parses; planning it is refused (it exceeds
    the guest's RAM) with either tail, instead of allocating 4 PiB of zeros."""
    mem = GPA_LIMIT - PAGE
    design = Design(4 * PAGE, Locator.OVMF_FOOTER, 0x200, [Section(0, PAGE, 0, mem, CFV, 0)], 7)
    design.entries = [(TDX_ENTRY_GUID, U32.pack(4 * PAGE - 0x200))]
    data = render(design)
    metadata = parse_checked(data)
    assert isinstance(metadata, TdvfMetadata) and metadata.sections[0].mem_size == mem
    with pytest.raises(FirmwareError, match="more than the guest's 2048 MiB of RAM"):
        build_td_plan(td_spec(tail=RawDataTail.IMAGE), firmware=data)
    with pytest.raises(FirmwareError, match="more than the guest's 2048 MiB of RAM") as error:
        build_td_plan(td_spec(tail=RawDataTail.ZERO), firmware=data)
    check_error(error.value, data)
