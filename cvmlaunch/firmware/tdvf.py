"""Parse TDVF metadata: the section table that tells a TDX VMM which pages to add, measure
and leave to the guest.

The descriptor is found the way QEMU finds it (the OVMF footer-table entry e47a6535-…,
holding the distance from the image end), or else the td-shim way (a u32 file offset 0x20
bytes before the image end). Hostile input is expected: every field is checked before use,
and anything unusable raises `FirmwareError` naming the section, the field and the offset.
"""

from __future__ import annotations

from cvmlaunch.abi import ovmf as ovmf_abi
from cvmlaunch.abi import tdx as abi
from cvmlaunch.abi.tdx import TdvfAttribute, TdvfSectionType
from cvmlaunch.errors import FirmwareError
from cvmlaunch.firmware.ovmf import GpaRange, first_overlap, parse_footer_table
from cvmlaunch.namedtuple import NamedTuple

# The widest guest-physical address space a TD can have (GPAW 52).
MAX_GPA = 1 << 52
# QEMU reads TDVF metadata only from an image whose size fits in 32 bits.
MAX_IMAGE_SIZE = (1 << 32) - 1


class Locator:
    """How the descriptor was found."""

    OVMF_FOOTER = "ovmf-footer-table"
    TD_SHIM = "td-shim-offset"


class TdvfSection(NamedTuple):
    """One TDVF_SECTION; `offset` is the file offset of its 32-byte entry."""

    number: int
    data_offset: int
    raw_size: int
    gpa: int
    mem_size: int
    type: TdvfSectionType
    attributes: int
    offset: int

    @property
    def range(self) -> GpaRange:
        return GpaRange(self.gpa, self.mem_size)

    @property
    def extends_mr(self) -> bool:
        return bool(self.attributes & TdvfAttribute.MR_EXTEND)

    @property
    def page_aug(self) -> bool:
        return bool(self.attributes & TdvfAttribute.PAGE_AUG)

    @property
    def name(self) -> str:
        return f"TDVF section {self.number} ({self.type.name})"


class TdvfMetadata(NamedTuple):
    """The TDVF descriptor: where it is, how it was found, and its sections in table order."""

    offset: int
    locator: str
    sections: tuple[TdvfSection, ...]

    def of_type(self, section_type: TdvfSectionType) -> tuple[TdvfSection, ...]:
        return tuple(s for s in self.sections if s.type == section_type)


def find_tdvf(data: bytes) -> TdvfMetadata | None:
    """The TDVF metadata of `data`, or None if the image carries none.

    A footer-table TDX entry that points at something other than a valid descriptor is an
    error (QEMU would refuse the image); the td-shim location is only a fallback, used when
    its offset points at a "TDVF" signature.
    """
    size = len(data)
    if size > MAX_IMAGE_SIZE:
        raise FirmwareError(f"image size {size} does not fit in 32 bits, as TDVF requires")
    entry = next(
        (e for e in parse_footer_table(data) if e.guid == ovmf_abi.TDX_METADATA_OFFSET_GUID),
        None,
    )
    if entry is not None:
        if len(entry.data) < ovmf_abi.U32.size:
            raise FirmwareError(
                f"TDX metadata offset entry has {len(entry.data)} data bytes, expected 4",
                entry.offset,
            )
        (from_end,) = ovmf_abi.U32.unpack_from(entry.data)
        at = size - from_end
        if not 0 <= at <= size - abi.TDVF_DESCRIPTOR.size:
            raise FirmwareError(
                f"TDX metadata offset {from_end:#x} from the image end points outside the "
                f"{size}-byte image",
                entry.offset,
            )
        return _parse_descriptor(data, at, Locator.OVMF_FOOTER)
    if size < abi.TDSHIM_OFFSET_FROM_END:
        return None
    # The td-shim location is a u32 in what, in OVMF, is reset-vector code: trust it only
    # when it points just past the TDX metadata GUID, at a "TDVF" signature.
    (at,) = ovmf_abi.U32.unpack_from(data, size - abi.TDSHIM_OFFSET_FROM_END)
    guid_at = at - len(abi.TDX_METADATA_GUID)
    if guid_at < 0 or at > size - abi.TDVF_DESCRIPTOR.size:
        return None
    if data[guid_at : at + len(abi.TDVF_SIGNATURE)] != abi.TDX_METADATA_GUID + abi.TDVF_SIGNATURE:
        return None
    return _parse_descriptor(data, at, Locator.TD_SHIM)


def parse_tdvf(data: bytes) -> TdvfMetadata:
    """The TDVF metadata of `data`; `FirmwareError` if it has none or it is malformed."""
    metadata = find_tdvf(data)
    if metadata is None:
        raise FirmwareError(
            "the firmware has no TDVF metadata (no footer entry "
            "e47a6535-984a-4798-865e-4685a7bf8ec2, and no td-shim descriptor offset at the "
            "image end): it cannot boot a TDX guest"
        )
    return metadata


def _parse_descriptor(data: bytes, at: int, locator: str) -> TdvfMetadata:
    signature, length, version, count = abi.TDVF_DESCRIPTOR.unpack_from(data, at)
    if signature != abi.TDVF_SIGNATURE:
        raise FirmwareError(f"TDVF descriptor signature is {signature!r}, expected b'TDVF'", at)
    if version != abi.TDVF_VERSION:
        raise FirmwareError(f"TDVF descriptor version is {version}, expected 1", at)
    if count == 0:
        raise FirmwareError("TDVF descriptor has no sections", at)
    expected = abi.TDVF_DESCRIPTOR.size + count * abi.TDVF_SECTION.size
    if length != expected:
        raise FirmwareError(
            f"TDVF descriptor length is {length}, expected {expected} for {count} sections",
            at,
        )
    if at + length > len(data):
        raise FirmwareError(
            f"TDVF descriptor ({length} bytes, {count} sections) runs past the end of the "
            f"{len(data)}-byte image",
            at,
        )
    sections = tuple(
        _section(data, number, at + abi.TDVF_DESCRIPTOR.size + number * abi.TDVF_SECTION.size)
        for number in range(count)
    )
    _check_overlaps(sections)
    return TdvfMetadata(at, locator, sections)


def _section(data: bytes, number: int, at: int) -> TdvfSection:
    data_offset, raw_size, gpa, mem_size, raw_type, attributes = abi.TDVF_SECTION.unpack_from(
        data, at
    )
    try:
        section_type = TdvfSectionType(raw_type)
    except ValueError:
        known = ", ".join(f"{t.value} {t.name}" for t in TdvfSectionType)
        raise FirmwareError(
            f"TDVF section {number} has unknown Type {raw_type:#x} (expected one of {known})",
            at,
        ) from None
    section = TdvfSection(
        number, data_offset, raw_size, gpa, mem_size, section_type, attributes, at
    )
    name = section.name

    def bad(field: str, problem: str) -> FirmwareError:
        return FirmwareError(f"{name} {field} {problem}", at)

    if attributes & abi.TDVF_ATTRIBUTES_RESERVED:
        raise bad("Attributes", f"{attributes:#x} sets reserved bits 31:2")
    if section.extends_mr and section.page_aug:
        raise bad("Attributes", "sets both MR.EXTEND and PAGE.AUG (an AUG page is not measured)")
    if section.page_aug and raw_size:
        raise bad("Attributes", "sets PAGE.AUG, but AUG pages start zeroed: the raw data is lost")
    if section.page_aug and section_type is TdvfSectionType.TD_HOB:
        raise bad("Attributes", "sets PAGE.AUG, but the VMM must add the TD HOB it writes")
    if raw_size == 0 and data_offset != 0:
        raise bad("DataOffset", f"is {data_offset:#x}, expected 0 with RawDataSize 0")
    if data_offset + raw_size > len(data):
        raise bad(
            "raw data",
            f"[{data_offset:#x}, +{raw_size:#x}) runs past the end of the {len(data)}-byte image",
        )
    if section_type in abi.VMM_ONLY_SECTIONS:
        if gpa or mem_size:
            raise bad("MemoryAddress/MemoryDataSize", "must be 0: the section is not TD memory")
        if section.extends_mr or section.page_aug:
            raise bad("Attributes", "must be 0: the section is not TD memory")
        return section
    if gpa % abi.PAGE_SIZE:
        raise bad("MemoryAddress", f"{gpa:#x} is not 4 KiB aligned")
    if mem_size == 0 or mem_size % abi.PAGE_SIZE:
        raise bad("MemoryDataSize", f"{mem_size:#x} is not a non-zero multiple of 4 KiB")
    if gpa + mem_size > MAX_GPA:
        raise bad("memory", f"[{gpa:#x}, +{mem_size:#x}) lies beyond the 52-bit GPA space")
    if raw_size > mem_size:
        raise bad("RawDataSize", f"{raw_size:#x} exceeds MemoryDataSize {mem_size:#x}")
    if section_type in abi.SECTIONS_WITH_DATA and raw_size == 0:
        raise bad("RawDataSize", "is 0, but the section's contents come from the image")
    if section_type in abi.SECTIONS_WITHOUT_DATA and raw_size != 0:
        raise bad("RawDataSize", f"is {raw_size:#x}, expected 0 (the VMM provides this memory)")
    return section


def _check_overlaps(sections: tuple[TdvfSection, ...]) -> None:
    overlap = first_overlap(s for s in sections if s.mem_size)
    if overlap is not None:
        first, second = overlap
        raise FirmwareError(
            f"{second.name} memory [{second.gpa:#x}, +{second.mem_size:#x}) overlaps "
            f"{first.name} [{first.gpa:#x}, +{first.mem_size:#x})",
            second.offset,
        )
