"""Parse an OVMF image: the GUIDed footer table and the SEV metadata it points to.

Hostile input is expected: every offset and length is checked before it is followed, and
anything unusable raises `FirmwareError` naming the file offset and what was expected.
"""

from __future__ import annotations

from itertools import pairwise

from cvmlaunch.abi import ovmf as abi
from cvmlaunch.abi.guid import guid_text
from cvmlaunch.abi.snp import PAGE_SIZE
from cvmlaunch.errors import FirmwareError
from cvmlaunch.namedtuple import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Protocol, TypeVar

FOUR_GIB = 1 << 32

# Sections that describe one special page; a larger size has no defined meaning.
_ONE_PAGE_SECTIONS = (
    abi.SevSectionType.SNP_SECRETS,
    abi.SevSectionType.CPUID,
    abi.SevSectionType.SNP_KERNEL_HASHES,
)


class TableEntry(NamedTuple):
    """One GUIDed footer-table entry and the file offset where its data starts."""

    guid: bytes
    offset: int
    data: bytes

    @property
    def name(self) -> str:
        return abi.KNOWN_ENTRY_NAMES.get(self.guid, "unknown")

    @property
    def guid_text(self) -> str:
        return guid_text(self.guid)


class GpaRange(NamedTuple):
    """A guest-physical range [base, base + size)."""

    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size

    def overlaps(self, other: GpaRange) -> bool:
        return self.base < other.end and other.base < self.end


if TYPE_CHECKING:

    class _Numbered(Protocol):
        @property
        def number(self) -> int: ...

        @property
        def range(self) -> GpaRange: ...

    _T = TypeVar("_T", bound=_Numbered)


def first_overlap(items: Iterable[_T]) -> tuple[_T, _T] | None:
    """Two items whose ranges overlap, lower number first; None if none do.

    Sorted by base, any overlap shows between neighbours: n log n even for hostile counts.
    """
    by_base = sorted(items, key=lambda item: item.range.base)
    for lower, upper in pairwise(by_base):
        if lower.range.overlaps(upper.range):
            first, second = sorted((lower, upper), key=lambda item: item.number)
            return first, second
    return None


class SevSection(NamedTuple):
    """One SEV metadata section descriptor; `offset` is the descriptor's file offset."""

    number: int
    gpa: int
    size: int
    type: abi.SevSectionType
    offset: int

    @property
    def range(self) -> GpaRange:
        return GpaRange(self.gpa, self.size)


class OvmfImage(NamedTuple):
    """A parsed OVMF image, mapped by the VMM so that it ends at 4 GiB."""

    data: bytes
    entries: tuple[TableEntry, ...]
    sev_metadata: tuple[SevSection, ...] | None
    sev_es_reset_address: int | None
    hash_table_area: GpaRange | None
    secret_area: GpaRange | None
    tdx_metadata_offset: int | None
    # The size of an image known by its descriptor (firmware/descriptor.py), which has no
    # bytes; None: the size of `data`.
    described_size: int | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.described_size is None else self.described_size

    @property
    def gpa(self) -> int:
        """GPA of the first byte: the image is mapped to end at 4 GiB."""
        return FOUR_GIB - self.size

    def sections(self, section_type: abi.SevSectionType) -> tuple[SevSection, ...]:
        return tuple(s for s in self.sev_metadata or () if s.type == section_type)


def parse_ovmf(data: bytes) -> OvmfImage:
    """Parse `data` as an OVMF image.

    Absent entries become None; present but malformed ones raise `FirmwareError`.
    """
    size = len(data)
    if size == 0 or size % PAGE_SIZE:
        raise FirmwareError(f"image size {size} is not a non-zero multiple of 4096 bytes")
    if size > FOUR_GIB:
        raise FirmwareError(f"image size {size} does not fit below 4 GiB")
    entries = parse_footer_table(data)
    by_guid: dict[bytes, TableEntry] = {}
    for entry in entries:
        if entry.guid in by_guid:
            raise FirmwareError(
                f"footer table has two {entry.name} entries (GUID {entry.guid_text})", entry.offset
            )
        by_guid[entry.guid] = entry

    reset = by_guid.get(abi.SEV_ES_RESET_BLOCK_GUID)
    metadata = by_guid.get(abi.SEV_METADATA_OFFSET_GUID)
    tdx = by_guid.get(abi.TDX_METADATA_OFFSET_GUID)
    image_range = GpaRange(FOUR_GIB - size, size)
    return OvmfImage(
        data=data,
        entries=entries,
        sev_metadata=None if metadata is None else _sev_metadata(data, metadata, image_range),
        sev_es_reset_address=None if reset is None else _u32(reset),
        hash_table_area=_gpa_range(by_guid.get(abi.SEV_HASH_TABLE_RV_GUID)),
        secret_area=_gpa_range(by_guid.get(abi.SEV_SECRET_BLOCK_GUID)),
        tdx_metadata_offset=None if tdx is None else _u32(tdx),
    )


def parse_footer_table(data: bytes) -> tuple[TableEntry, ...]:
    """The GUIDed table entries in file order; empty if the image has no footer GUID.

    The footer entry ends 0x20 bytes before the image end; its length covers the whole
    table. Entries are walked backwards from it, as QEMU does; fewer than 18 bytes left over
    at the front are ignored, as QEMU ignores them.
    """
    footer_end = len(data) - abi.FOOTER_END_FROM_IMAGE_END
    footer_at = footer_end - abi.ENTRY_HEADER_SIZE
    if footer_at < 0:
        return ()
    table_len, guid = abi.ENTRY_HEADER.unpack_from(data, footer_at)
    if guid != abi.FOOTER_GUID:
        return ()
    if not abi.ENTRY_HEADER_SIZE <= table_len <= footer_end:
        raise FirmwareError(
            f"footer table length {table_len} is outside 18..{footer_end}", footer_at
        )
    table_start = footer_end - table_len
    entries: list[TableEntry] = []
    end = footer_at
    while end - table_start >= abi.ENTRY_HEADER_SIZE:
        header_at = end - abi.ENTRY_HEADER_SIZE
        entry_len, guid = abi.ENTRY_HEADER.unpack_from(data, header_at)
        if not abi.ENTRY_HEADER_SIZE <= entry_len <= end - table_start:
            raise FirmwareError(
                f"footer table entry length {entry_len} is outside 18..{end - table_start}",
                header_at,
            )
        start = end - entry_len
        entries.append(TableEntry(guid, start, data[start:header_at]))
        end = start
    return tuple(reversed(entries))


def _check_data_size(entry: TableEntry, needed: int) -> None:
    if len(entry.data) < needed:
        raise FirmwareError(
            f"{entry.name} entry has {len(entry.data)} data bytes, expected at least {needed}",
            entry.offset,
        )


def _u32(entry: TableEntry) -> int:
    _check_data_size(entry, abi.U32.size)
    (value,) = abi.U32.unpack_from(entry.data)
    return int(value)


def _gpa_range(entry: TableEntry | None) -> GpaRange | None:
    if entry is None:
        return None
    _check_data_size(entry, abi.BASE_SIZE.size)
    base, size = abi.BASE_SIZE.unpack_from(entry.data)
    # OVMF builds without the feature carry the entry with base and size 0.
    if base == 0 and size == 0:
        return None
    if base + size > FOUR_GIB:
        raise FirmwareError(f"{entry.name} [{base:#x}, +{size:#x}) crosses 4 GiB", entry.offset)
    return GpaRange(base, size)


def _sev_metadata(data: bytes, entry: TableEntry, image: GpaRange) -> tuple[SevSection, ...]:
    offset_from_end = _u32(entry)
    header_at = len(data) - offset_from_end
    header_size = abi.SEV_METADATA_HEADER.size
    if not 0 <= header_at <= len(data) - header_size:
        raise FirmwareError(
            f"SEV metadata offset {offset_from_end:#x} from the image end points outside the "
            f"{len(data)}-byte image",
            entry.offset,
        )
    signature, length, version, count = abi.SEV_METADATA_HEADER.unpack_from(data, header_at)
    if signature != abi.SEV_METADATA_SIGNATURE:
        raise FirmwareError(
            f"SEV metadata signature is {signature!r}, expected b'ASEV'", header_at
        )
    if version != abi.SEV_METADATA_VERSION:
        raise FirmwareError(f"SEV metadata version is {version}, expected 1", header_at)
    needed = header_size + count * abi.SEV_METADATA_SECTION.size
    if length < needed or header_at + length > len(data):
        raise FirmwareError(
            f"SEV metadata length {length} does not hold {count} sections "
            f"({needed} bytes) inside the image",
            header_at,
        )
    sections: list[SevSection] = []
    for index in range(count):
        at = header_at + header_size + index * abi.SEV_METADATA_SECTION.size
        gpa, size, raw_type = abi.SEV_METADATA_SECTION.unpack_from(data, at)
        section = _section(index, gpa, size, raw_type, at)
        if section.range.overlaps(image):
            raise FirmwareError(
                f"SEV metadata section {index} [{gpa:#x}, +{size:#x}) overlaps the firmware "
                f"image mapped at [{image.base:#x}, {image.end:#x})",
                at,
            )
        sections.append(section)
    overlap = first_overlap(sections)
    if overlap is not None:
        first, second = overlap
        raise FirmwareError(
            f"SEV metadata section {second.number} [{second.gpa:#x}, +{second.size:#x}) "
            f"overlaps section {first.number} [{first.gpa:#x}, +{first.size:#x})",
            second.offset,
        )
    return tuple(sections)


def _section(index: int, gpa: int, size: int, raw_type: int, at: int) -> SevSection:
    try:
        section_type = abi.SevSectionType(raw_type)
    except ValueError:
        known = ", ".join(f"{t.value:#x} {t.name}" for t in abi.SevSectionType)
        raise FirmwareError(
            f"SEV metadata section {index} has unknown type {raw_type:#x} (expected one of "
            f"{known})",
            at,
        ) from None
    if gpa % PAGE_SIZE or size % PAGE_SIZE or size == 0:
        raise FirmwareError(
            f"SEV metadata section {index} ({section_type.name}) at GPA {gpa:#x} size {size:#x}"
            " is not a non-empty run of whole 4 KiB pages",
            at,
        )
    if gpa + size > FOUR_GIB:
        raise FirmwareError(
            f"SEV metadata section {index} ({section_type.name}) [{gpa:#x}, +{size:#x}) "
            "crosses 4 GiB",
            at,
        )
    if section_type in _ONE_PAGE_SECTIONS and size != PAGE_SIZE:
        raise FirmwareError(
            f"SEV metadata section {index} ({section_type.name}) has size {size:#x}, "
            "expected exactly one 4 KiB page",
            at,
        )
    return SevSection(index, gpa, size, section_type, at)
