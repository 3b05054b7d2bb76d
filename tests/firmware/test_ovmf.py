"""Property-based fuzzing of the OVMF firmware parsers and of everything that consumes them.

A firmware image is untrusted input: whatever bytes arrive, `parse_footer_table`,
`parse_ovmf`, `build_plan` and `measure` may only fail with `FirmwareError` (the planner
may also report a `ProfileError`), must return promptly, and whatever they return on
success has to agree with the bytes it came from. Four kinds of input are thrown at them:

* random byte strings of awkward sizes, optionally with a footer GUID planted where the
  parser looks for it, so that the table walk runs over noise;
* the real OVMF suffixes in tests/vectors/snp (and Debian's full OVMF.fd when installed)
  with bits, bytes and 16/32-bit fields overwritten by extreme values, aimed at the footer
  table, the entry length fields, the metadata offset, the ASEV header and the section
  descriptors, then truncated, padded or extended;
* synthetic images built from a generated description (entries, metadata header,
  sections) that is either kept valid, so the parse must reproduce the description
  exactly, or broken in one known way, so the parse must fail with the matching message;
* hand-built hostile images, each pinned to the exact message and file offset it reports.

A last test documents the one defect found so far: the pairwise section-overlap check is
quadratic in the section count, so a hostile image of ordinary size stalls the parser.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from cvmlaunch.abi import ovmf as abi
from cvmlaunch.abi.kernel_hashes import PADDED_TABLE_SIZE
from cvmlaunch.abi.ovmf import SevSectionType
from cvmlaunch.abi.snp import PAGE_SIZE
from cvmlaunch.errors import CvmlaunchError, FirmwareError, ProfileError
from cvmlaunch.firmware.ovmf import (
    FOUR_GIB,
    GpaRange,
    OvmfImage,
    TableEntry,
    parse_footer_table,
    parse_ovmf,
)
from cvmlaunch.guest.spec import BootFile, CpuSpec, DirectBoot, GuestSpec, Technology, Vmm
from cvmlaunch.measure import measure
from cvmlaunch.plan.ops import LaunchPlan
from cvmlaunch.plan.sev import build_sev_plan as build_plan
from cvmlaunch.plan.step import StepKind

pytestmark = pytest.mark.fuzz

# The technologies this file fuzzes (TDVF has its own fuzz test).
SEV_FAMILY = (Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP)

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors" / "snp"
DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U32_MAX = 0xFFFFFFFF
U16_MAX = 0xFFFF
HEADER_SIZE = abi.SEV_METADATA_HEADER.size  # 16
DESCRIPTOR_SIZE = abi.SEV_METADATA_SECTION.size  # 12
FOOTER_END_BACK = abi.FOOTER_END_FROM_IMAGE_END  # 0x20
ENTRY_HEADER = abi.ENTRY_HEADER_SIZE  # 18
ONE_PAGE_TYPES = frozenset(
    {SevSectionType.SNP_SECRETS, SevSectionType.CPUID, SevSectionType.SNP_KERNEL_HASHES}
)
KNOWN_TYPE_VALUES = frozenset(int(t) for t in SevSectionType)
U32_ENTRY_GUIDS = (
    abi.SEV_ES_RESET_BLOCK_GUID,
    abi.SEV_METADATA_OFFSET_GUID,
    abi.TDX_METADATA_OFFSET_GUID,
)
RANGE_ENTRY_GUIDS = (abi.SEV_HASH_TABLE_RV_GUID, abi.SEV_SECRET_BLOCK_GUID)
EPYC = CpuSpec.from_name("EPYC-v4")
BOOT = DirectBoot(kernel=BootFile(sha256=bytes(range(32))), cmdline="console=ttyS0")
DIGEST_SIZE = {Technology.SEV_SNP: 48, Technology.SEV_ES: 32, Technology.SEV: 32}
# Above this many guest pages an SNP measurement is skipped: it is correct but slow (one
# SHA-384 per page of a section that a mutated size field may stretch to gigabytes).
MEASURE_PAGE_BUDGET = 4096

# Hypothesis budgets. deadline=None: a slow example on a loaded machine is not a failure;
# termination is asserted by bounding every generated structure and by the explicit
# worst-case tests below.
FUZZ = settings(max_examples=300, deadline=None)


# --------------------------------------------------------------------------------------
# Checks shared by every fuzz test
# --------------------------------------------------------------------------------------


def note(text: str) -> None:
    """hypothesis.event, also callable from the plain tests that share these helpers."""
    if currently_in_test_context():
        event(text)


def check_error(error: FirmwareError, data: bytes) -> None:
    """A FirmwareError must say something and, if it names an offset, one inside the data."""
    assert error.reason
    if error.offset is not None:
        assert 0 <= error.offset < len(data), (error.offset, len(data))
        assert f"at file offset {error.offset:#x}" in str(error)


def check_entries(data: bytes, entries: Sequence[TableEntry]) -> None:
    """Entries tile the table contiguously up to the footer and echo the bytes they came from."""
    footer_at = len(data) - FOOTER_END_BACK - ENTRY_HEADER
    expected_end = footer_at
    for entry in reversed(entries):
        header_at = entry.offset + len(entry.data)
        assert header_at + ENTRY_HEADER == expected_end
        assert 0 <= entry.offset <= header_at <= len(data) - ENTRY_HEADER
        assert data[entry.offset : header_at] == entry.data
        length, guid = abi.ENTRY_HEADER.unpack_from(data, header_at)
        assert guid == entry.guid
        assert length == len(entry.data) + ENTRY_HEADER
        expected_end = entry.offset
    if entries:
        table_len, footer_guid = abi.ENTRY_HEADER.unpack_from(data, footer_at)
        assert footer_guid == abi.FOOTER_GUID
        assert footer_at + ENTRY_HEADER - table_len <= entries[0].offset


def _entry_u32(entry: TableEntry) -> int:
    return int(U32.unpack_from(entry.data)[0])


def _expected_range(entry: TableEntry | None) -> GpaRange | None:
    if entry is None:
        return None
    base, size = abi.BASE_SIZE.unpack_from(entry.data)
    return None if base == size == 0 else GpaRange(base, size)


def check_image(image: OvmfImage, data: bytes) -> None:
    """Everything a successful parse returns is consistent with `data` and with itself."""
    size = len(data)
    assert image.data == data
    assert image.size == size and size % PAGE_SIZE == 0 and 0 < size <= FOUR_GIB
    assert image.gpa == FOUR_GIB - size
    firmware = GpaRange(image.gpa, size)
    check_entries(data, image.entries)
    by_guid = {e.guid: e for e in image.entries}
    assert len(by_guid) == len(image.entries), "duplicate GUIDs were accepted"

    reset = by_guid.get(abi.SEV_ES_RESET_BLOCK_GUID)
    assert image.sev_es_reset_address == (None if reset is None else _entry_u32(reset))
    tdx = by_guid.get(abi.TDX_METADATA_OFFSET_GUID)
    assert image.tdx_metadata_offset == (None if tdx is None else _entry_u32(tdx))
    for attr, guid in (
        ("hash_table_area", abi.SEV_HASH_TABLE_RV_GUID),
        ("secret_area", abi.SEV_SECRET_BLOCK_GUID),
    ):
        area: GpaRange | None = getattr(image, attr)
        assert area == _expected_range(by_guid.get(guid))
        assert area is None or area.end <= FOUR_GIB

    meta = by_guid.get(abi.SEV_METADATA_OFFSET_GUID)
    assert (image.sev_metadata is None) == (meta is None)
    if meta is None or image.sev_metadata is None:
        return
    header_at = size - _entry_u32(meta)
    signature, length, version, count = abi.SEV_METADATA_HEADER.unpack_from(data, header_at)
    assert (signature, version, count) == (abi.SEV_METADATA_SIGNATURE, 1, len(image.sev_metadata))
    assert header_at + HEADER_SIZE + count * DESCRIPTOR_SIZE <= header_at + length <= size
    for index, section in enumerate(image.sev_metadata):
        assert section.number == index
        assert section.offset == header_at + HEADER_SIZE + index * DESCRIPTOR_SIZE
        raw = abi.SEV_METADATA_SECTION.unpack_from(data, section.offset)
        assert raw == (section.gpa, section.size, int(section.type))
        assert section.gpa % PAGE_SIZE == 0 and section.size % PAGE_SIZE == 0
        assert section.size > 0 and section.gpa + section.size <= FOUR_GIB
        assert section.type not in ONE_PAGE_TYPES or section.size == PAGE_SIZE
        assert not section.range.overlaps(firmware)
    ordered = sorted(image.sev_metadata, key=lambda s: s.gpa)
    for low, high in pairwise(ordered):
        assert low.gpa + low.size <= high.gpa, (low, high)
    for section_type in SevSectionType:
        assert image.sections(section_type) == tuple(
            s for s in image.sev_metadata if s.type == section_type
        )


def parse_checked(data: bytes) -> OvmfImage | FirmwareError:
    """parse_footer_table and parse_ovmf on `data`, checked; the image or the refusal."""
    entries: tuple[TableEntry, ...] | None = None
    try:
        entries = parse_footer_table(data)
    except FirmwareError as error:
        check_error(error, data)
    else:
        check_entries(data, entries)
    try:
        image = parse_ovmf(data)
    except FirmwareError as error:
        check_error(error, data)
        note(f"parse_ovmf: {classify(error)}")
        return error
    assert entries is not None and image.entries == entries
    check_image(image, data)
    note("parse_ovmf: ok")
    return image


def classify(error: FirmwareError) -> str:
    """A short label of the check that fired, for hypothesis statistics and counters."""
    text = error.reason
    for label, needle in (
        ("image size", "not a non-zero multiple"),
        ("table length", "footer table length"),
        ("entry length", "footer table entry length"),
        ("duplicate entry", "footer table has two"),
        ("short entry data", "data bytes, expected at least"),
        ("metadata offset", "from the image end points outside"),
        ("signature", "signature is"),
        ("version", "version is"),
        ("metadata length", "does not hold"),
        ("section type", "unknown type"),
        ("section pages", "whole 4 KiB pages"),
        ("section one page", "expected exactly one 4 KiB page"),
        ("section overlap", "overlaps section"),
        ("firmware overlap", "overlaps the firmware"),
        ("crosses 4 GiB", "crosses 4 GiB"),
    ):
        if needle in text:
            return label
    return "other"


def spec_for(technology: Technology, vmm: Vmm, boot: DirectBoot | None) -> GuestSpec:
    return GuestSpec(
        technology=technology,
        firmware=Path("fuzz"),
        vcpus=2,
        cpu=EPYC if vmm is Vmm.QEMU else None,  # the cloud VMMs put a fixed value in RDX
        vmm=vmm,
        boot=boot,
    )


def check_plan(plan: LaunchPlan, image: OvmfImage, technology: Technology) -> None:
    first = plan.ops[0]
    assert (first.kind, first.gpa, first.size, first.data) == (
        StepKind.FIRMWARE,
        image.gpa,
        image.size,
        image.data,
    )
    if technology is Technology.SEV_SNP:
        assert image.sev_metadata is not None
        section_ops = sorted(op.section for op in plan.ops if op.section is not None)
        assert section_ops == list(range(len(image.sev_metadata)))
    for op in plan.ops:
        assert op.size % PAGE_SIZE == 0 or op.kind is StepKind.KERNEL_HASHES
        assert op.data is None or len(op.data) == op.size


def run_plans(
    image: OvmfImage, vmm: Vmm = Vmm.QEMU, boot: DirectBoot | None = None
) -> dict[Technology, bool]:
    """build_plan + measure for every SEV flavour; which of them produced a digest."""
    done: dict[Technology, bool] = {}
    for technology in SEV_FAMILY:
        try:
            plan = build_plan(spec_for(technology, vmm, boot), firmware=image.data)
        except (FirmwareError, ProfileError) as error:
            if isinstance(error, FirmwareError):
                check_error(error, image.data)
            note(f"{technology}: refused")
            done[technology] = False
            continue
        check_plan(plan, image, technology)
        pages = sum(op.size for op in plan.ops) // PAGE_SIZE
        if technology is Technology.SEV_SNP and pages > MEASURE_PAGE_BUDGET:
            note(f"{technology}: measure skipped ({pages} pages)")
            done[technology] = False
            continue
        result = measure(plan)
        assert len(result.digest) == DIGEST_SIZE[technology]
        if technology is Technology.SEV_SNP:
            assert result.firmware_digest is not None and len(result.firmware_digest) == 48
        note(f"{technology}: measured")
        done[technology] = True
    return done


# --------------------------------------------------------------------------------------
# 1. Random bytes
# --------------------------------------------------------------------------------------

AWKWARD_SIZES = st.one_of(
    st.integers(0, 49),
    st.integers(50, 600),
    st.sampled_from([PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE, 16 * PAGE_SIZE]),
    st.integers(1, 3 * PAGE_SIZE + 7),
)


@st.composite
def random_images(draw: st.DrawFn) -> bytes:
    size = draw(AWKWARD_SIZES, label="size")
    fill = draw(st.sampled_from(["drawn", "seeded", "zeros", "ones"]), label="fill")
    if fill == "drawn" and size <= 1024:
        buf = bytearray(draw(st.binary(min_size=size, max_size=size)))
    elif fill == "zeros":
        buf = bytearray(size)
    elif fill == "ones":
        buf = bytearray(b"\xff" * size)
    else:
        buf = bytearray(random.Random(draw(st.integers(0, 2**32))).randbytes(size))
    footer_at = size - FOOTER_END_BACK - ENTRY_HEADER
    if footer_at >= 0 and draw(st.booleans(), label="plant footer"):
        # Get past the footer-GUID check, so the walk runs over whatever precedes it.
        length = draw(st.one_of(st.integers(0, 64), st.integers(0, U16_MAX)), label="table len")
        abi.ENTRY_HEADER.pack_into(buf, footer_at, length, abi.FOOTER_GUID)
    return bytes(buf)


@FUZZ
@given(random_images())
def test_random_bytes_raise_only_firmware_error(data: bytes) -> None:
    image = parse_checked(data)
    if isinstance(image, OvmfImage):
        run_plans(image)


# --------------------------------------------------------------------------------------
# 2. Mutated real firmware
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    """A real image and the file offsets of the fields worth corrupting."""

    name: str
    data: bytes = field(repr=False)
    fields: tuple[int, ...] = field(repr=False)
    metadata: tuple[int, int] = field(repr=False)  # [start, end) of the header + descriptors


def _fixture(name: str, data: bytes) -> Fixture:
    image = parse_ovmf(data)
    size = len(data)
    fields = [size - FOOTER_END_BACK - ENTRY_HEADER]  # the footer's table length
    for entry in image.entries:
        header_at = entry.offset + len(entry.data)
        fields += [entry.offset, header_at, header_at + 2]  # data, u16 length, GUID
    meta = next(e for e in image.entries if e.guid == abi.SEV_METADATA_OFFSET_GUID)
    header_at = size - _entry_u32(meta)
    fields += [header_at + delta for delta in (0, 4, 8, 12)]
    assert image.sev_metadata
    for section in image.sev_metadata:
        fields += [section.offset, section.offset + 4, section.offset + 8]
    end = image.sev_metadata[-1].offset + DESCRIPTOR_SIZE
    return Fixture(name, data, tuple(sorted(set(fields))), (header_at, end))


def _load_fixtures() -> tuple[Fixture, ...]:
    found = [_fixture(p.name, p.read_bytes()) for p in sorted(VECTORS.glob("ovmf*.bin"))]
    found += [_fixture(p.name, p.read_bytes()) for p in sorted(VECTORS.glob("debian*.bin"))]
    if DEBIAN_OVMF.is_file():
        found.append(_fixture("OVMF.fd", DEBIAN_OVMF.read_bytes()))
    return tuple(found)


FIXTURES = _load_fixtures()


def _extreme_u32(size: int) -> st.SearchStrategy[int]:
    specials = [0, 1, 2, 15, 16, 17, 18, 19, 0x20, 0xFF, 0x1000, 0xFFF, 0x1001]
    specials += [U16_MAX, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFF000, U32_MAX]
    specials += [size - 1, size, size + 1, size - 16, FOUR_GIB - size, FOUR_GIB - PAGE_SIZE]
    return st.one_of(st.sampled_from(specials), st.integers(0, U32_MAX))


EXTREME_U16 = st.one_of(
    st.sampled_from([0, 1, 2, 17, 18, 19, 20, 22, 26, 0xFF, 0x100, 0x7FFF, 0x8000, U16_MAX]),
    st.integers(0, U16_MAX),
)


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> bytes:
    fixture = draw(st.sampled_from(FIXTURES), label="fixture")
    buf = bytearray(fixture.data)
    size = len(buf)
    meta_start, meta_end = fixture.metadata
    position = st.one_of(
        st.sampled_from(fixture.fields),
        st.integers(size - 0x400, size - 1),
        st.integers(meta_start, meta_end - 1),
        st.integers(0, size - 1),
    )
    for _ in range(draw(st.integers(1, 6), label="mutations")):
        kind = draw(st.sampled_from(["bit", "byte", "u16", "u32", "guid"]))
        at = draw(position)
        if kind == "bit":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            buf[at] = draw(st.integers(0, 0xFF))
        elif kind == "u16":
            U16.pack_into(buf, min(at, size - 2), draw(EXTREME_U16))
        elif kind == "u32":
            U32.pack_into(buf, min(at, size - 4), draw(_extreme_u32(size)))
        else:
            guid = draw(st.sampled_from(sorted(abi.KNOWN_ENTRY_NAMES)))
            at = min(at, size - 16)
            buf[at : at + 16] = guid
    frame = draw(st.sampled_from(["keep", "keep", "front", "prepend", "append"]), label="frame")
    data = bytes(buf)
    if frame == "front":  # keep only a suffix: the footer stays at the end
        data = data[size - draw(st.integers(0, size)) :]
    elif frame == "prepend":  # same footer, larger image: sections move relative to it
        data = bytes(PAGE_SIZE * draw(st.integers(1, 4))) + data
    elif frame == "append":  # the footer is no longer where a VMM looks for it
        data += bytes(draw(st.integers(1, PAGE_SIZE)))
    return data


@FUZZ
@given(mutated_fixtures(), st.sampled_from(Vmm), st.sampled_from([None, BOOT]))
def test_mutated_fixtures_raise_only_firmware_error(
    data: bytes, vmm: Vmm, boot: DirectBoot | None
) -> None:
    image = parse_checked(data)
    if isinstance(image, OvmfImage):
        run_plans(image, vmm, boot)


@pytest.mark.parametrize(
    "fixture",
    [
        pytest.param(f, id=f.name, marks=[pytest.mark.debian_ovmf] if f.name == "OVMF.fd" else [])
        for f in FIXTURES
    ],
)
def test_unmutated_fixtures_parse_and_measure(fixture: Fixture) -> None:
    image = parse_checked(fixture.data)
    assert isinstance(image, OvmfImage) and image.sev_metadata
    done = run_plans(image)
    assert done[Technology.SEV] and done[Technology.SEV_ES] and done[Technology.SEV_SNP]


# --------------------------------------------------------------------------------------
# 3. Synthetic images from a generated description
# --------------------------------------------------------------------------------------


@dataclass
class RawEntry:
    guid: bytes
    data: bytes
    length: int | None = None  # the u16 length field; None: the true length


@dataclass
class RawSection:
    gpa: int
    size: int
    type: int


@dataclass
class Design:
    """What a synthetic image contains; `render` turns it into bytes."""

    pages: int
    entries: list[RawEntry]
    sections: list[RawSection] = field(default_factory=list)
    meta_at: int | None = None  # file offset of the ASEV header, None: no header written
    signature: bytes = abi.SEV_METADATA_SIGNATURE
    version: int = abi.SEV_METADATA_VERSION
    count: int | None = None  # None: len(sections)
    length: int | None = None  # None: exactly the header and its descriptors
    table_len: int | None = None  # None: the true table length
    seed: int | None = None  # filler for the unused bytes; None: zeros
    flips: list[tuple[int, int]] = field(default_factory=list)  # (offset, xor) after render

    @property
    def size(self) -> int:
        return self.pages * PAGE_SIZE

    @property
    def footer_end(self) -> int:
        return self.size - FOOTER_END_BACK

    def table_size(self) -> int:
        return sum(len(e.data) + ENTRY_HEADER for e in self.entries) + ENTRY_HEADER

    def table_start(self) -> int:
        return self.footer_end - self.table_size()

    def metadata_blob(self) -> bytes:
        count = len(self.sections) if self.count is None else self.count
        natural = HEADER_SIZE + DESCRIPTOR_SIZE * len(self.sections)
        length = natural if self.length is None else self.length
        blob = abi.SEV_METADATA_HEADER.pack(self.signature, length, self.version, count)
        return blob + b"".join(
            abi.SEV_METADATA_SECTION.pack(s.gpa, s.size, s.type) for s in self.sections
        )

    def entry(self, guid: bytes) -> RawEntry | None:
        return next((e for e in self.entries if e.guid == guid), None)


def render(design: Design) -> bytes:
    size = design.size
    buf = bytearray(size if design.seed is None else random.Random(design.seed).randbytes(size))
    body = b"".join(
        e.data + U16.pack(len(e.data) + ENTRY_HEADER if e.length is None else e.length) + e.guid
        for e in design.entries
    )
    table_len = len(body) + ENTRY_HEADER if design.table_len is None else design.table_len
    table = body + U16.pack(table_len) + abi.FOOTER_GUID
    start = design.footer_end - len(table)
    assert start >= 0
    buf[start : design.footer_end] = table
    if design.meta_at is not None:
        blob = design.metadata_blob()
        assert design.meta_at + len(blob) <= start, "metadata would overwrite the table"
        buf[design.meta_at : design.meta_at + len(blob)] = blob
    for at, xor in design.flips:
        buf[at] ^= xor
    return bytes(buf)


# Mutations: each breaks a valid design in one way and names the error it must cause (None:
# any outcome is fine, as long as it is a FirmwareError or a consistent success).
Mutation = Callable[[st.DrawFn, Design], str | None]
U32S = st.integers(0, U32_MAX)


def _pick(draw: st.DrawFn, items: Sequence[RawSection]) -> tuple[int, RawSection]:
    index = draw(st.integers(0, len(items) - 1))
    return index, items[index]


def _meta_entry(design: Design) -> RawEntry:
    entry = design.entry(abi.SEV_METADATA_OFFSET_GUID)
    assert entry is not None
    return entry


def m_entry_short(draw: st.DrawFn, d: Design) -> str:
    draw(st.sampled_from(d.entries)).length = draw(st.integers(0, ENTRY_HEADER - 1))
    return "entry length"


def m_entry_long(draw: st.DrawFn, d: Design) -> str:
    index = draw(st.integers(0, len(d.entries) - 1))
    room = sum(len(e.data) + ENTRY_HEADER for e in d.entries[: index + 1])
    d.entries[index].length = draw(st.integers(room + 1, U16_MAX))
    return "entry length"


def m_table_short(draw: st.DrawFn, d: Design) -> str:
    d.table_len = draw(st.integers(0, ENTRY_HEADER - 1))
    return "table length"


def m_table_long(draw: st.DrawFn, d: Design) -> str:
    d.table_len = draw(st.integers(d.footer_end + 1, U16_MAX))
    return "table length"


def m_duplicate(draw: st.DrawFn, d: Design) -> str:
    copy = replace(draw(st.sampled_from(d.entries)))
    d.entries.insert(draw(st.integers(0, len(d.entries))), copy)
    return "duplicate entry"


def m_short_data(draw: st.DrawFn, d: Design) -> str:
    known = [e for e in d.entries if e.guid in U32_ENTRY_GUIDS + RANGE_ENTRY_GUIDS]
    entry = draw(st.sampled_from(known))
    needed = 4 if entry.guid in U32_ENTRY_GUIDS else 8
    entry.data = entry.data[: draw(st.integers(0, needed - 1))]
    return "short entry data"


def m_range_crosses(draw: st.DrawFn, d: Design) -> str:
    guid = draw(st.sampled_from(RANGE_ENTRY_GUIDS))
    base = draw(st.integers(2, U32_MAX))
    size = draw(st.integers(FOUR_GIB - base + 1, U32_MAX))
    entry = d.entry(guid)
    if entry is None:
        d.entries.insert(0, entry := RawEntry(guid, b""))
    entry.data = abi.BASE_SIZE.pack(base, size)
    return "crosses 4 GiB"


def m_meta_past_end(draw: st.DrawFn, d: Design) -> str:
    _meta_entry(d).data = U32.pack(draw(st.integers(d.size + 1, U32_MAX)))
    return "metadata offset"


def m_meta_in_tail(draw: st.DrawFn, d: Design) -> str:
    _meta_entry(d).data = U32.pack(draw(st.integers(0, HEADER_SIZE - 1)))
    return "metadata offset"


def m_signature(draw: st.DrawFn, d: Design) -> str:
    d.signature = draw(st.binary(min_size=4, max_size=4).filter(lambda s: s != b"ASEV"))
    return "signature"


def m_version(draw: st.DrawFn, d: Design) -> str:
    d.version = draw(U32S.filter(lambda v: v != abi.SEV_METADATA_VERSION))
    return "version"


def m_count_big(draw: st.DrawFn, d: Design) -> str:
    d.count = draw(st.one_of(st.integers(len(d.sections) + 1, 4096), st.just(U32_MAX)))
    return "metadata length"


def m_length_small(draw: st.DrawFn, d: Design) -> str:
    d.length = draw(st.integers(0, HEADER_SIZE + DESCRIPTOR_SIZE * len(d.sections) - 1))
    return "metadata length"


def m_length_past_end(draw: st.DrawFn, d: Design) -> str:
    assert d.meta_at is not None
    d.length = draw(st.integers(d.size - d.meta_at + 1, U32_MAX))
    return "metadata length"


def m_section_type(draw: st.DrawFn, d: Design) -> str:
    _, section = _pick(draw, d.sections)
    section.type = draw(U32S.filter(lambda t: t not in KNOWN_TYPE_VALUES))
    return "section type"


def m_section_misaligned(draw: st.DrawFn, d: Design) -> str:
    _, section = _pick(draw, d.sections)
    if draw(st.booleans()):
        section.gpa += draw(st.integers(1, PAGE_SIZE - 1))
    else:
        section.size += draw(st.integers(1, PAGE_SIZE - 1))
    return "section pages"


def m_section_empty(draw: st.DrawFn, d: Design) -> str:
    _pick(draw, d.sections)[1].size = 0
    return "section pages"


def m_section_crosses(draw: st.DrawFn, d: Design) -> str:
    _, section = _pick(draw, d.sections)
    below = draw(st.integers(1, 64))
    section.gpa = FOUR_GIB - below * PAGE_SIZE
    section.size = (below + draw(st.integers(1, 64))) * PAGE_SIZE
    return "crosses 4 GiB"


def m_section_one_page(draw: st.DrawFn, d: Design) -> str:
    _, section = _pick(draw, d.sections)
    section.type = int(draw(st.sampled_from(sorted(ONE_PAGE_TYPES))))
    section.size = draw(st.integers(2, 16)) * PAGE_SIZE
    if section.gpa + section.size > FOUR_GIB:  # the 4 GiB check would fire first
        section.size = 2 * PAGE_SIZE
    return "section one page"


def m_section_overlap(draw: st.DrawFn, d: Design) -> str:
    index = draw(st.integers(1, len(d.sections) - 1))
    earlier = d.sections[draw(st.integers(0, index - 1))]
    section = d.sections[index]
    section.gpa = earlier.gpa + draw(st.integers(0, earlier.size // PAGE_SIZE - 1)) * PAGE_SIZE
    if section.gpa + section.size > FOUR_GIB - d.size:  # stay clear of the firmware range
        section.size = PAGE_SIZE
    return "section overlap"


def m_section_in_firmware(draw: st.DrawFn, d: Design) -> str:
    _, section = _pick(draw, d.sections)
    section.gpa = FOUR_GIB - d.size + draw(st.integers(0, d.pages - 1)) * PAGE_SIZE
    section.size = PAGE_SIZE
    return "firmware overlap"


def m_chaos_entry_length(draw: st.DrawFn, d: Design) -> None:
    draw(st.sampled_from(d.entries)).length = draw(st.integers(0, U16_MAX))


def m_chaos_table_length(draw: st.DrawFn, d: Design) -> None:
    d.table_len = draw(st.integers(ENTRY_HEADER, d.footer_end))


def m_chaos_meta_offset(draw: st.DrawFn, d: Design) -> None:
    _meta_entry(d).data = U32.pack(draw(st.integers(HEADER_SIZE, d.size)))


def m_chaos_section(draw: st.DrawFn, d: Design) -> None:
    _, section = _pick(draw, d.sections)
    setattr(section, draw(st.sampled_from(["gpa", "size", "type"])), draw(U32S))


def m_chaos_flips(draw: st.DrawFn, d: Design) -> None:
    start = d.table_start() if d.meta_at is None else min(d.meta_at, d.table_start())
    spot = st.tuples(st.integers(start, d.footer_end - 1), st.integers(1, 0xFF))
    d.flips = draw(st.lists(spot, min_size=1, max_size=4))


TABLE_MUTATIONS: dict[str, Mutation] = {
    "entry_short": m_entry_short,
    "entry_long": m_entry_long,
    "table_short": m_table_short,
    "table_long": m_table_long,
    "duplicate": m_duplicate,
    "short_data": m_short_data,
    "range_crosses": m_range_crosses,
    "chaos_entry_length": m_chaos_entry_length,
    "chaos_table_length": m_chaos_table_length,
    "chaos_flips": m_chaos_flips,
}
METADATA_MUTATIONS: dict[str, Mutation] = {
    "meta_past_end": m_meta_past_end,
    "meta_in_tail": m_meta_in_tail,
    "signature": m_signature,
    "version": m_version,
    "count_big": m_count_big,
    "length_small": m_length_small,
    "length_past_end": m_length_past_end,
    "chaos_meta_offset": m_chaos_meta_offset,
}
SECTION_MUTATIONS: dict[str, Mutation] = {
    "section_type": m_section_type,
    "section_misaligned": m_section_misaligned,
    "section_empty": m_section_empty,
    "section_crosses": m_section_crosses,
    "section_one_page": m_section_one_page,
    "section_overlap": m_section_overlap,
    "section_in_firmware": m_section_in_firmware,
    "chaos_section": m_chaos_section,
}
MUTATIONS = TABLE_MUTATIONS | METADATA_MUTATIONS | SECTION_MUTATIONS
# Mutations after which the metadata offset no longer follows from meta_at.
_OWN_META_OFFSET = {"meta_past_end", "meta_in_tail", "chaos_meta_offset", "short_data"}


@dataclass
class Synthetic:
    design: Design
    data: bytes
    mutation: str  # "none" for a valid design
    expect: str | None  # classify() label of the required error; None: anything goes
    vmm: Vmm
    boot: DirectBoot | None


def _draw_sections(draw: st.DrawFn, pages: int, minimum: int) -> list[RawSection]:
    plan = []
    # Usually at most one kernel hashes page, as build_plan wants for SNP.
    many_hash_pages = draw(st.integers(0, 3), label="many hash pages") == 0
    hash_pages = 0
    for _ in range(draw(st.integers(minimum, 10), label="sections")):
        section_type = draw(st.sampled_from(SevSectionType))
        if section_type is SevSectionType.SNP_KERNEL_HASHES:
            hash_pages += 1
            if hash_pages > 1 and not many_hash_pages:
                section_type = SevSectionType.SNP_SEC_MEM
        npages = 1 if section_type in ONE_PAGE_TYPES else draw(st.integers(1, 16))
        plan.append((draw(st.integers(0, 3)), npages, int(section_type)))
    span = sum(gap + npages for gap, npages, _ in plan) * PAGE_SIZE
    if draw(st.booleans(), label="just below the firmware"):
        cursor = FOUR_GIB - pages * PAGE_SIZE - span
    else:
        cursor = draw(st.integers(0, 0x2000), label="low base page") * PAGE_SIZE
    sections = []
    for gap, npages, section_type in plan:
        cursor += gap * PAGE_SIZE
        sections.append(RawSection(cursor, npages * PAGE_SIZE, section_type))
        cursor += npages * PAGE_SIZE
    return draw(st.permutations(sections), label="table order")


def _draw_area(draw: st.DrawFn, sections: Sequence[RawSection]) -> bytes:
    hashes = [s for s in sections if s.type == SevSectionType.SNP_KERNEL_HASHES]
    mode = draw(st.sampled_from(["zero", "random", "in hash page"]))
    if mode == "in hash page" and hashes:
        offset = draw(st.integers(0, PAGE_SIZE - PADDED_TABLE_SIZE))
        size = draw(st.integers(PADDED_TABLE_SIZE, PAGE_SIZE - offset))
        return abi.BASE_SIZE.pack(hashes[0].gpa + offset, size)
    if mode == "zero":
        return bytes(8)
    base = draw(U32S)
    return abi.BASE_SIZE.pack(base, draw(st.integers(0, min(U32_MAX, FOUR_GIB - base))))


@st.composite
def synthetic_images(draw: st.DrawFn, mutations: Sequence[str]) -> Synthetic:
    """A design with one of `mutations` applied ("none": left valid), rendered."""
    mutation = draw(st.sampled_from(mutations), label="mutation")
    wants_sections = mutation in SECTION_MUTATIONS
    wants_meta = wants_sections or mutation in METADATA_MUTATIONS
    pages = draw(st.integers(1, 16), label="pages")
    design = Design(pages, entries=[])
    with_meta = wants_meta or draw(st.integers(0, 3), label="metadata") > 0
    if with_meta:
        design.sections = _draw_sections(draw, pages, 2 if wants_sections else 0)

    entries: list[RawEntry] = []
    pad = st.binary(max_size=3)
    if draw(st.integers(0, 3), label="reset block") > 0 or mutation == "short_data":
        entries.append(RawEntry(abi.SEV_ES_RESET_BLOCK_GUID, U32.pack(draw(U32S)) + draw(pad)))
    if draw(st.booleans(), label="tdx entry"):
        entries.append(RawEntry(abi.TDX_METADATA_OFFSET_GUID, U32.pack(draw(U32S))))
    for guid in RANGE_ENTRY_GUIDS:
        if draw(st.booleans(), label="area entry"):
            entries.append(RawEntry(guid, _draw_area(draw, design.sections) + draw(pad)))
    if with_meta:
        entries.append(RawEntry(abi.SEV_METADATA_OFFSET_GUID, bytes(4) + draw(pad)))
    strangers = st.lists(
        st.tuples(st.binary(min_size=16, max_size=16), st.binary(max_size=24)),
        max_size=3,
        unique_by=lambda t: t[0],
    )
    for guid, data in draw(strangers, label="unknown entries"):
        if guid not in abi.KNOWN_ENTRY_NAMES:
            entries.append(RawEntry(guid, data))
    if not entries:
        entries.append(RawEntry(abi.SEV_ES_RESET_BLOCK_GUID, U32.pack(0xFFFFF000)))
    design.entries = draw(st.permutations(entries), label="entry order")

    if with_meta:
        blob = HEADER_SIZE + DESCRIPTOR_SIZE * len(design.sections)
        design.meta_at = draw(st.integers(0, design.table_start() - blob), label="meta_at")
        meta = _meta_entry(design)
        meta.data = U32.pack(design.size - design.meta_at) + meta.data[4:]
    if draw(st.booleans(), label="random filler"):
        design.seed = draw(st.integers(0, 2**32))

    expect = None if mutation == "none" else MUTATIONS[mutation](draw, design)
    if mutation != "none" and mutation not in _OWN_META_OFFSET and design.meta_at is not None:
        # Some mutations resize the table; keep the header out of its way.
        blob = len(design.metadata_blob())
        if design.meta_at + blob > design.table_start():
            design.meta_at = max(0, design.table_start() - blob)
            meta = _meta_entry(design)
            meta.data = U32.pack(design.size - design.meta_at) + meta.data[4:]
    vmm = draw(st.sampled_from(Vmm), label="vmm")
    boot = draw(st.sampled_from([None, BOOT]), label="boot")
    return Synthetic(design, render(design), mutation, expect, vmm, boot)


def check_round_trip(design: Design, image: OvmfImage) -> None:
    """A valid design parses back into exactly what it describes."""
    assert [(e.guid, e.data) for e in image.entries] == [(e.guid, e.data) for e in design.entries]
    if design.meta_at is None:
        assert image.sev_metadata is None
    else:
        assert image.sev_metadata is not None
        got = [(s.gpa, s.size, int(s.type)) for s in image.sev_metadata]
        assert got == [(s.gpa, s.size, s.type) for s in design.sections]
    reset = design.entry(abi.SEV_ES_RESET_BLOCK_GUID)
    want = None if reset is None else int(U32.unpack_from(reset.data)[0])
    assert image.sev_es_reset_address == want


def examine(case: Synthetic, outcomes: Counter[str], plans: Counter[str]) -> None:
    """Parse (and, on success, plan and measure) one synthetic image; tally what happened."""
    note(f"mutation: {case.mutation}")
    image = parse_checked(case.data)
    if isinstance(image, FirmwareError):
        label = classify(image)
        assert case.mutation != "none", f"a valid design was refused: {image}"
        assert case.expect is None or label == case.expect, (case.mutation, str(image))
        outcomes[f"error: {label}"] += 1
        return
    assert case.expect is None, f"{case.mutation} was accepted"
    if case.mutation == "none":
        check_round_trip(case.design, image)
    outcomes["parsed"] += 1
    for technology, ok in run_plans(image, case.vmm, case.boot).items():
        plans[f"{technology}: {'measured' if ok else 'refused'}"] += 1


TARGETED = sorted(name for name in MUTATIONS if not name.startswith("chaos_"))


def test_valid_designs_round_trip_and_measure() -> None:
    """Every valid design parses back into itself; a good share also plans and measures."""
    outcomes: Counter[str] = Counter()
    plans: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None)
    @given(synthetic_images(["none"]))
    def run(case: Synthetic) -> None:
        examine(case, outcomes, plans)

    run()
    assert set(outcomes) == {"parsed"}, outcomes
    for technology in SEV_FAMILY:
        assert plans[f"{technology}: measured"] >= outcomes["parsed"] // 20, plans


@pytest.mark.parametrize("mutation", TARGETED)
def test_each_defect_is_caught_by_its_check(mutation: str) -> None:
    """A design broken in one known way fails, every time, at the check meant for it."""
    outcomes: Counter[str] = Counter()
    plans: Counter[str] = Counter()
    expected: set[str] = set()

    @settings(max_examples=12, deadline=None)
    @given(synthetic_images([mutation]))
    def run(case: Synthetic) -> None:
        assert case.expect is not None
        expected.add(case.expect)
        examine(case, outcomes, plans)

    run()
    assert len(expected) == 1 and outcomes, outcomes
    assert set(outcomes) == {f"error: {expected.pop()}"}, outcomes


def test_mixed_designs() -> None:
    """Valid, targeted and chaotic designs mixed: a share parses, the rest fail variously."""
    outcomes: Counter[str] = Counter()
    plans: Counter[str] = Counter()

    @settings(max_examples=250, deadline=None)
    @given(synthetic_images(["none"] * len(MUTATIONS) + sorted(MUTATIONS)))
    def run(case: Synthetic) -> None:
        examine(case, outcomes, plans)

    run()
    total = sum(outcomes.values())
    assert outcomes["parsed"] >= total // 5, outcomes
    assert sum(v for k, v in outcomes.items() if k != "parsed") >= total // 5, outcomes
    assert len(outcomes) >= 6, outcomes


# --------------------------------------------------------------------------------------
# 4. Hand-built hostile images, pinned to their message and offset
# --------------------------------------------------------------------------------------

BASE_SECTIONS = (
    RawSection(0x800000, 0x9000, SevSectionType.SNP_SEC_MEM),
    RawSection(0x809000, 0x1000, SevSectionType.SNP_SECRETS),
    RawSection(0x80A000, 0x1000, SevSectionType.CPUID),
    RawSection(0x80B000, 0x1000, SevSectionType.SNP_KERNEL_HASHES),
)
META_AT = 0x100
HASH_AREA = abi.BASE_SIZE.pack(0x80B000 + 0xC00, 0x400)


def base_design(*, sections: Sequence[RawSection] = BASE_SECTIONS, pages: int = 1) -> Design:
    """A small valid image: reset block, hash area, metadata offset and four sections."""
    size = pages * PAGE_SIZE
    entries = [
        RawEntry(abi.SEV_METADATA_OFFSET_GUID, U32.pack(size - META_AT)),
        RawEntry(abi.SEV_HASH_TABLE_RV_GUID, HASH_AREA),
        RawEntry(abi.SEV_ES_RESET_BLOCK_GUID, U32.pack(0x80B004)),
    ]
    return Design(pages, entries, [replace(s) for s in sections], meta_at=META_AT)


def descriptor_at(index: int) -> int:
    return META_AT + HEADER_SIZE + index * DESCRIPTOR_SIZE


def entry_offset(design: Design, guid: bytes) -> int:
    offset = design.table_start()
    for entry in design.entries:
        if entry.guid == guid:
            return offset
        offset += len(entry.data) + ENTRY_HEADER
    raise AssertionError("no such entry")


def header_offset(design: Design, guid: bytes) -> int:
    entry = design.entry(guid)
    assert entry is not None
    return entry_offset(design, guid) + len(entry.data)


def test_base_design_is_valid() -> None:
    design = base_design()
    image = parse_checked(render(design))
    assert isinstance(image, OvmfImage)
    check_round_trip(design, image)
    assert image.hash_table_area == GpaRange(0x80BC00, 0x400)
    assert all(run_plans(image, boot=BOOT).values())


def _hostile(change: Callable[[Design], None]) -> Design:
    design = base_design()
    change(design)
    return design


def _set_section(index: int, **values: int) -> Callable[[Design], None]:
    def change(design: Design) -> None:
        design.sections[index] = replace(design.sections[index], **values)

    return change


def _set_entry(
    guid: bytes, data: bytes | None = None, length: int | None = None
) -> Callable[[Design], None]:
    def change(design: Design) -> None:
        entry = design.entry(guid)
        assert entry is not None
        if data is not None:
            entry.data = data
        entry.length = length

    return change


def _set(**values: object) -> Callable[[Design], None]:
    def change(design: Design) -> None:
        for name, value in values.items():
            setattr(design, name, value)

    return change


def _duplicate_last_entry(design: Design) -> None:
    design.entries.append(replace(design.entries[-1]))


def _drop_metadata(design: Design) -> None:
    design.meta_at = None
    design.entries = [e for e in design.entries if e.guid != abi.SEV_METADATA_OFFSET_GUID]


def _second_hash_section(design: Design) -> None:
    design.sections.append(RawSection(0x900000, PAGE_SIZE, SevSectionType.SNP_KERNEL_HASHES))


def _drop_reset_block(design: Design) -> None:
    design.entries = [e for e in design.entries if e.guid != abi.SEV_ES_RESET_BLOCK_GUID]


META = abi.SEV_METADATA_OFFSET_GUID
RESET = abi.SEV_ES_RESET_BLOCK_GUID
FOOTER_AT = PAGE_SIZE - FOOTER_END_BACK - ENTRY_HEADER

# (id, change, expected message fragment, expected offset: int, or a function of the design)
HOSTILE: list[tuple[str, Callable[[Design], None], str, int | Callable[[Design], int]]] = [
    (
        "unknown section type",
        _set_section(2, type=0x5),
        "SEV metadata section 2 has unknown type 0x5",
        descriptor_at(2),
    ),
    (
        "overlapping sections",
        _set_section(3, gpa=0x808000),
        "SEV metadata section 3 [0x808000, +0x1000) overlaps section 0 [0x800000, +0x9000)",
        descriptor_at(3),
    ),
    (
        "section inside the firmware",
        _set_section(1, gpa=FOUR_GIB - PAGE_SIZE),
        "overlaps the firmware image mapped at [0xfffff000, 0x100000000)",
        descriptor_at(1),
    ),
    (
        "misaligned section",
        _set_section(0, gpa=0x800800),
        "SEV metadata section 0 (SNP_SEC_MEM) at GPA 0x800800 size 0x9000 is not a non-empty",
        descriptor_at(0),
    ),
    (
        "empty section",
        _set_section(0, size=0),
        "size 0x0 is not a non-empty run of whole 4 KiB pages",
        descriptor_at(0),
    ),
    (
        "section crossing 4 GiB",
        _set_section(0, gpa=0xFFFF0000, size=0x20000),
        "SEV metadata section 0 (SNP_SEC_MEM) [0xffff0000, +0x20000) crosses 4 GiB",
        descriptor_at(0),
    ),
    (
        "two-page CPUID section",
        _set_section(2, size=0x2000),
        "section 2 (CPUID) has size 0x2000, expected exactly one 4 KiB page",
        descriptor_at(2),
    ),
    (
        "metadata offset past the end",
        _set_entry(META, U32.pack(0x1001)),
        "SEV metadata offset 0x1001 from the image end points outside the 4096-byte image",
        lambda d: entry_offset(d, META),
    ),
    (
        "metadata offset of 0xffffffff",
        _set_entry(META, U32.pack(U32_MAX)),
        "SEV metadata offset 0xffffffff from the image end points outside",
        lambda d: entry_offset(d, META),
    ),
    (
        "metadata header cut by the image end",
        _set_entry(META, U32.pack(HEADER_SIZE - 1)),
        "SEV metadata offset 0xf from the image end points outside",
        lambda d: entry_offset(d, META),
    ),
    (
        "metadata offset entry without data",
        _set_entry(META, b""),
        "SEV metadata offset entry has 0 data bytes, expected at least 4",
        lambda d: entry_offset(d, META),
    ),
    (
        "bad signature",
        _set(signature=b"VESA"),
        "SEV metadata signature is b'VESA', expected b'ASEV'",
        META_AT,
    ),
    ("bad version", _set(version=2), "SEV metadata version is 2, expected 1", META_AT),
    (
        "section count past the image",
        _set(count=U32_MAX),
        f"does not hold {U32_MAX} sections",
        META_AT,
    ),
    (
        "metadata length past the image",
        _set(length=PAGE_SIZE),
        "SEV metadata length 4096 does not hold 4 sections",
        META_AT,
    ),
    (
        "entry length 17",
        _set_entry(RESET, length=17),
        "footer table entry length 17 is outside 18..",
        lambda d: header_offset(d, RESET),
    ),
    (
        "entry length 0",
        _set_entry(META, length=0),
        "footer table entry length 0 is outside 18..",
        lambda d: header_offset(d, META),
    ),
    (
        "entry length larger than the table",
        _set_entry(META, length=U16_MAX),
        "footer table entry length 65535 is outside 18..22",
        lambda d: header_offset(d, META),
    ),
    (
        "entry length one past the table",
        _set_entry(RESET, length=22 + 26 + 22 + 1),
        "footer table entry length 71 is outside 18..70",
        lambda d: header_offset(d, RESET),
    ),
    ("table length 17", _set(table_len=17), "footer table length 17 is outside 18..", FOOTER_AT),
    (
        "table length past the image start",
        _set(table_len=PAGE_SIZE - FOOTER_END_BACK + 1),
        "footer table length 4065 is outside 18..4064",
        FOOTER_AT,
    ),
    (
        "duplicate entry",
        _duplicate_last_entry,
        "footer table has two SEV-ES reset block entries",
        lambda d: entry_offset(d, RESET) + 22,
    ),
    (
        "hash area crossing 4 GiB",
        _set_entry(abi.SEV_HASH_TABLE_RV_GUID, abi.BASE_SIZE.pack(0xFFFFF000, 0x2000)),
        "SEV hash table area [0xfffff000, +0x2000) crosses 4 GiB",
        lambda d: entry_offset(d, abi.SEV_HASH_TABLE_RV_GUID),
    ),
]


@pytest.mark.parametrize(
    ("change", "message", "offset"),
    [pytest.param(c, m, o, id=name) for name, c, m, o in HOSTILE],
)
def test_hostile_image_is_rejected_with_its_location(
    change: Callable[[Design], None], message: str, offset: int | Callable[[Design], int]
) -> None:
    design = _hostile(change)
    data = render(design)
    where = offset if isinstance(offset, int) else offset(design)
    with pytest.raises(FirmwareError) as caught:
        parse_ovmf(data)
    assert message in str(caught.value)
    assert caught.value.offset == where
    assert str(caught.value).endswith(f"(at file offset {where:#x})")


def _no_hash_section(design: Design) -> None:
    design.sections = [s for s in design.sections if s.type != SevSectionType.SNP_KERNEL_HASHES]


PLAN_HOSTILE: list[tuple[str, Callable[[Design], None], Technology, str]] = [
    (
        "no metadata for sev-snp",
        _drop_metadata,
        Technology.SEV_SNP,
        "the firmware has no SEV metadata",
    ),
    (
        "two kernel hashes sections",
        _second_hash_section,
        Technology.SEV_SNP,
        "has 2 SNP_KERNEL_HASHES sections, expected one",
    ),
    (
        "kernel given, no kernel hashes section",
        _no_hash_section,
        Technology.SEV_SNP,
        "no SNP_KERNEL_HASHES section",
    ),
    (
        "hash area outside the kernel hashes page",
        _set_entry(abi.SEV_HASH_TABLE_RV_GUID, abi.BASE_SIZE.pack(0x80BF80, 0x400)),
        Technology.SEV_SNP,
        "does not lie inside the SNP_KERNEL_HASHES section",
    ),
    (
        "hash area smaller than the table",
        _set_entry(abi.SEV_HASH_TABLE_RV_GUID, abi.BASE_SIZE.pack(0x80BC00, 0xAF)),
        Technology.SEV,
        "smaller than the 176-byte kernel hashes table",
    ),
    (
        "no hash area",
        _set_entry(abi.SEV_HASH_TABLE_RV_GUID, bytes(8)),
        Technology.SEV,
        "has no SEV hash table area",
    ),
    (
        "no reset block",
        _drop_reset_block,
        Technology.SEV_ES,
        "has no SEV-ES reset block",
    ),
    (
        "reset address 0 with two vCPUs",
        _set_entry(RESET, U32.pack(0)),
        Technology.SEV_ES,
        "holds address 0: APs cannot be started",
    ),
]


@pytest.mark.parametrize(
    ("change", "technology", "message"),
    [pytest.param(c, t, m, id=name) for name, c, t, m in PLAN_HOSTILE],
)
def test_build_plan_rejects_incoherent_firmware(
    change: Callable[[Design], None], technology: Technology, message: str
) -> None:
    data = render(_hostile(change))
    assert isinstance(parse_checked(data), OvmfImage), "the image itself is well formed"
    with pytest.raises(FirmwareError) as caught:
        build_plan(spec_for(technology, Vmm.QEMU, BOOT), firmware=data)
    assert message in str(caught.value)
    check_error(caught.value, data)


# --------------------------------------------------------------------------------------
# 5. Termination on worst-case sizes
# --------------------------------------------------------------------------------------


def test_longest_footer_table_is_walked_quickly() -> None:
    """65535 bytes of minimal 18-byte entries: the walk is bounded by the u16 table length."""
    pages = 17
    count = (U16_MAX - ENTRY_HEADER) // ENTRY_HEADER
    entries = [RawEntry(i.to_bytes(16, "little"), b"") for i in range(count)]
    data = render(Design(pages, entries))
    parsed = parse_footer_table(data)
    assert len(parsed) == count
    image = parse_checked(data)
    assert isinstance(image, OvmfImage) and len(image.entries) == count
    with pytest.raises(FirmwareError, match="two unknown entries"):
        parse_ovmf(render(Design(pages, [RawEntry(bytes(16), b"")] * count)))


def many_sections_image(pages: int) -> tuple[bytes, int]:
    """As many valid, disjoint one-page sections as the image has room for."""
    size = pages * PAGE_SIZE
    design = Design(pages, [RawEntry(META, U32.pack(size))], meta_at=0)
    count = (design.table_start() - HEADER_SIZE) // DESCRIPTOR_SIZE
    design.sections = [
        RawSection(i * PAGE_SIZE, PAGE_SIZE, SevSectionType.SNP_SEC_MEM) for i in range(count)
    ]
    return render(design), count


def test_many_sections_parse() -> None:
    """A few hundred sections parse; the next test scales that up to tens of thousands."""
    data, count = many_sections_image(1)
    image = parse_checked(data)
    assert isinstance(image, OvmfImage) and image.sev_metadata is not None
    assert len(image.sev_metadata) == count > 300


def test_section_overlap_check_is_not_quadratic() -> None:
    """~43,700 disjoint sections in a 512 KiB image: a pairwise (O(n^2)) overlap check took
    tens of minutes here; the sorted check takes well under a second."""
    data, count = many_sections_image(128)
    code = (
        "import sys\n"
        "from cvmlaunch.firmware.ovmf import parse_ovmf\n"
        "image = parse_ovmf(sys.stdin.buffer.read())\n"
        f"assert image.sev_metadata is not None and len(image.sev_metadata) == {count}\n"
    )
    # In a child process, so that the stall can be cut off; a linear (or n log n) check
    # needs well under a second for this image.
    subprocess.run([sys.executable, "-c", code], input=data, cwd=REPO, timeout=5, check=True)


def test_errors_are_cvmlaunch_errors() -> None:
    """What the fuzz tests allow to escape is part of the library's own error tree."""
    assert issubclass(FirmwareError, CvmlaunchError)
    assert issubclass(ProfileError, CvmlaunchError)
