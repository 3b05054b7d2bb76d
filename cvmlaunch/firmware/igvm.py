"""Parse an IGVM file: its fixed header, every variable header, and the file data they name.

Hostile input is expected: every offset and length is checked before it is followed, and a
file we could not measure faithfully is refused with a `FirmwareError` naming the header
(index and type) and its file offset. Layouts and numbers are in `abi/igvm.py`.
"""

import zlib
from dataclasses import dataclass
from typing import TypeVar

from cvmlaunch.abi import igvm as abi
from cvmlaunch.abi.igvm import (
    Body,
    ErrorRange,
    GuestPolicy,
    PageData,
    PageDataFlags,
    PageDataType,
    ParameterArea,
    ParameterInsert,
    ParameterUsage,
    PlatformType,
    RequiredMemory,
    SnpIdBlock,
    SupportedPlatform,
    VariableHeaderType,
    VpContext,
)
from cvmlaunch.errors import FirmwareError
from cvmlaunch.namedtuple import NamedTuple

# A parameter area is zero-filled host memory the loader writes into the guest; no real file
# needs more than a few pages, and PARAMETER_INSERT measures each of its pages.
MAX_PARAMETER_AREA = 64 << 20

_VMSA_PLATFORMS = frozenset({PlatformType.SEV_SNP, PlatformType.SEV_ES})
# Enum lookups by value, built once: a file holds thousands of PAGE_DATA headers.
_TYPES = {t.value: t for t in VariableHeaderType}
_DATA_TYPES = {t.value: t for t in PageDataType}
_FLAGS = {f: PageDataFlags(f) for f in range(abi.PAGE_DATA_FLAGS_KNOWN + 1)}


_Masked = TypeVar("_Masked", GuestPolicy, SnpIdBlock)


@dataclass(frozen=True, slots=True)
class Header:
    """One variable header: its position, file offset, raw type and decoded payload (None
    for an unknown type marked optional, which a loader ignores)."""

    index: int
    offset: int
    type: int
    length: int
    body: Body | None

    @property
    def name(self) -> str:
        return header_name(self.type)


class IgvmFile(NamedTuple):
    """A parsed IGVM file; `headers` in file order (directives in the order a loader runs)."""

    format_version: int
    variable_header_offset: int
    variable_header_size: int
    total_file_size: int
    checksum: int
    headers: tuple[Header, ...]

    @property
    def platforms(self) -> tuple[SupportedPlatform, ...]:
        return tuple(h.body for h in self.headers if isinstance(h.body, SupportedPlatform))

    def platform_mask(self, platform_type: PlatformType) -> int | None:
        """The compatibility mask bit of `platform_type`, None if the file does not target it."""
        for p in self.platforms:
            if p.platform_type == platform_type:
                return p.compatibility_mask
        return None

    def guest_policy(self, platform_type: PlatformType) -> int | None:
        """The GUEST_POLICY that applies to `platform_type` (for SEV-SNP: the SNP policy)."""
        policy = self._directive(GuestPolicy, platform_type)
        return None if policy is None else policy.policy

    @property
    def snp_policy(self) -> int | None:
        return self.guest_policy(PlatformType.SEV_SNP)

    @property
    def snp_id_block(self) -> SnpIdBlock | None:
        """The SNP_ID_BLOCK directive for the SEV-SNP platform, if the file carries one."""
        return self._directive(SnpIdBlock, PlatformType.SEV_SNP)

    def _directive(self, kind: type[_Masked], platform_type: PlatformType) -> _Masked | None:
        mask = self.platform_mask(platform_type) or 0
        for h in self.headers:
            if isinstance(h.body, kind) and h.body.compatibility_mask & mask:
                return h.body
        return None


def header_name(header_type: int) -> str:
    """The spec name of a header type (without IGVM_VHT_), or its number if unknown."""
    try:
        return VariableHeaderType(header_type & ~abi.OPTIONAL_BIT).name
    except ValueError:
        return f"{header_type:#x}"


def is_igvm(data: bytes) -> bool:
    """Whether `data` starts with the IGVM magic."""
    return data[:4] == abi.IGVM_MAGIC_BYTES


def parse_igvm(data: bytes) -> IgvmFile:
    """Parse and check a whole IGVM file, or raise `FirmwareError`."""
    return _Parser(data).parse()


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.data_start = 0  # file data begins after the variable headers
        self.masks: dict[int, int] = {}  # platform mask bit -> platform type
        self.areas: dict[int, int] = {}  # parameter_area_index -> number_of_bytes, until inserted
        self.declared_areas: set[int] = set()
        self.policy_masks = 0
        self.id_block_masks = 0
        self.index = 0
        self.offset = 0
        self.type = 0

    def parse(self) -> IgvmFile:
        data = self.data
        if len(data) < abi.FIXED_HEADER_V1.size or not is_igvm(data):
            raise FirmwareError("not an IGVM file: no IGVM magic", 0)
        _, version, var_offset, var_size, total, checksum = abi.FIXED_HEADER_V1.unpack_from(data)
        fixed_size = self._fixed_header_size(version)
        if var_offset < fixed_size or var_offset % abi.HEADER_ALIGNMENT:
            raise FirmwareError(f"IGVM variable_header_offset {var_offset:#x} is invalid", 8)
        if total != len(data):
            raise FirmwareError(
                f"IGVM total_file_size {total:#x} but the file has {len(data):#x} bytes", 16
            )
        self.data_start = var_offset + var_size
        if self.data_start > len(data):
            raise FirmwareError(
                f"IGVM variable headers end at {self.data_start:#x}, past the file's end", 12
            )
        crc = zlib.crc32(data[: abi.CHECKSUM_OFFSET])
        crc = zlib.crc32(bytes(4), crc)
        crc = zlib.crc32(data[abi.CHECKSUM_OFFSET + 4 : self.data_start], crc)
        if crc != checksum:
            raise FirmwareError(
                f"IGVM checksum is {checksum:#010x}, the headers' CRC-32 is {crc:#010x}", 20
            )
        headers = self._headers(var_offset, self.data_start)
        return IgvmFile(version, var_offset, var_size, total, checksum, tuple(headers))

    def _fixed_header_size(self, version: int) -> int:
        if version == 1:
            return abi.FIXED_HEADER_V1.size
        if version != 2 or len(self.data) < abi.FIXED_HEADER_V2.size:
            raise FirmwareError(f"IGVM format_version {version} is not supported", 4)
        *_, architecture, page_size = abi.FIXED_HEADER_V2.unpack_from(self.data)
        if architecture != abi.ARCHITECTURE_X64 or page_size != abi.IGVM_PAGE_SIZE:
            raise FirmwareError(
                f"IGVM v2 architecture {architecture} with page_size {page_size:#x}: "
                "only x64 with 4 KiB pages is supported",
                24,
            )
        return abi.FIXED_HEADER_V2.size

    def _headers(self, start: int, end: int) -> list[Header]:
        data = self.data
        headers: list[Header] = []
        section = abi.Section.PLATFORM
        offset = start
        while offset < end:
            self.index, self.offset, self.type = len(headers), offset, 0
            if end - offset < abi.VARIABLE_HEADER.size:
                raise self.error(f"{end - offset} bytes left, too short for a variable header")
            self.type, length = abi.VARIABLE_HEADER.unpack_from(data, offset)
            payload = offset + abi.VARIABLE_HEADER.size
            if length > end - payload:
                raise self.error(
                    f"length {length:#x} runs past the variable headers' end {end:#x}"
                )
            next_offset = -(-(payload + length) // abi.HEADER_ALIGNMENT) * abi.HEADER_ALIGNMENT
            # igvm-tooling pads with ASCII '0' where the spec says zero: both are accepted.
            padding = data[payload + length : min(next_offset, end)]
            if padding not in (bytes(len(padding)), b"0" * len(padding)):
                raise self.error(f"padding {padding.hex()} is neither zeros nor ASCII '0'")
            body, header_section = self._body(data[payload : payload + length])
            if header_section is not None:
                if header_section < section:
                    raise self.error(
                        f"{header_section.name.lower()} section header after the "
                        f"{section.name.lower()} section"
                    )
                section = header_section
            headers.append(Header(self.index, offset, self.type, length, body))
            offset = next_offset
        return headers

    def error(self, reason: str) -> FirmwareError:
        return FirmwareError(
            f"IGVM header {self.index} ({header_name(self.type)}): {reason}", self.offset
        )

    def _body(self, payload: bytes) -> tuple[Body | None, abi.Section | None]:
        kind = _TYPES.get(self.type & ~abi.OPTIONAL_BIT)
        if kind is None:
            if self.type & abi.OPTIONAL_BIT:
                return None, None
            raise self.error("unknown header type, not marked optional")
        size = abi.PAYLOAD_SIZE.get(kind)
        if size is None:
            raise self.error("not supported: its effect on the launch is not modelled")
        if len(payload) != size:
            raise self.error(f"length {len(payload):#x}, expected {size:#x}")
        section = abi.section_of(kind)
        return self._decode(kind, payload), section

    def _decode(self, kind: VariableHeaderType, payload: bytes) -> Body:
        if kind is VariableHeaderType.SUPPORTED_PLATFORM:
            return self._platform(SupportedPlatform(*abi.SUPPORTED_PLATFORM.unpack(payload)))
        if kind is VariableHeaderType.GUEST_POLICY:
            policy, mask, _ = abi.GUEST_POLICY.unpack(payload)
            self.policy_masks = self._once(mask, self.policy_masks, "guest policy")
            return GuestPolicy(policy, mask)
        if kind is VariableHeaderType.PARAMETER_AREA:
            return self._area(ParameterArea(*abi.PARAMETER_AREA.unpack(payload)))
        if kind is VariableHeaderType.PAGE_DATA:
            return self._page(*abi.PAGE_DATA.unpack(payload))
        if kind is VariableHeaderType.PARAMETER_INSERT:
            insert = ParameterInsert(*abi.PARAMETER_INSERT.unpack(payload))
            self._check_mask(insert.compatibility_mask)
            self._check_gpa(insert.gpa, abi.IGVM_PAGE_SIZE)
            self._live_area(insert.parameter_area_index)
            del self.areas[insert.parameter_area_index]  # an insert consumes its area
            return insert
        if kind is VariableHeaderType.VP_CONTEXT:
            return self._vp_context(*abi.VP_CONTEXT.unpack(payload))
        if kind is VariableHeaderType.REQUIRED_MEMORY:
            gpa, mask, size, flags, _ = abi.REQUIRED_MEMORY.unpack(payload)
            self._check_mask(mask)
            self._check_gpa(gpa, abi.IGVM_PAGE_SIZE)
            if size % abi.IGVM_PAGE_SIZE or flags & ~abi.RequiredMemoryFlags.VTL2_PROTECTABLE:
                raise self.error(f"number_of_bytes {size:#x} or flags {flags:#x} invalid")
            return RequiredMemory(gpa, mask, size, flags)
        if kind is VariableHeaderType.ERROR_RANGE:
            error_range = ErrorRange(*abi.ERROR_RANGE.unpack(payload))
            self._check_mask(error_range.compatibility_mask)
            return error_range
        if kind is VariableHeaderType.SNP_ID_BLOCK:
            block = SnpIdBlock(
                *[f for i, f in enumerate(abi.SNP_ID_BLOCK.unpack(payload)) if i != 2]
            )
            self.id_block_masks = self._once(
                block.compatibility_mask, self.id_block_masks, "SNP ID block"
            )
            return block
        usage = ParameterUsage(*abi.PARAMETER.unpack(payload))
        size = self._live_area(usage.parameter_area_index)
        if usage.byte_offset >= size:
            raise self.error(
                f"byte_offset {usage.byte_offset:#x} is outside its {size:#x}-byte parameter area"
            )
        return usage

    def _platform(self, platform: SupportedPlatform) -> SupportedPlatform:
        mask = platform.compatibility_mask
        if mask.bit_count() != 1 or mask in self.masks:
            raise self.error(f"compatibility_mask {mask:#x} is not one bit of its own")
        if platform.platform_type in self.masks.values():
            raise self.error(f"a second header for platform type {platform.platform_type}")
        self.masks[mask] = platform.platform_type
        return platform

    def _check_mask(self, mask: int) -> None:
        declared = sum(self.masks)
        if not mask or mask & ~declared:
            raise self.error(
                f"compatibility_mask {mask:#x} names no supported platform "
                f"(declared: {declared:#x})"
            )

    def _once(self, mask: int, seen: int, what: str) -> int:
        self._check_mask(mask)
        if mask & seen:
            raise self.error(f"a second {what} for compatibility_mask {mask & seen:#x}")
        return seen | mask

    def _check_gpa(self, gpa: int, alignment: int) -> None:
        if gpa % alignment:
            raise self.error(f"gpa {gpa:#x} is not {alignment:#x}-aligned")

    def _file_data(self, file_offset: int, size: int, what: str) -> bytes:
        if file_offset < self.data_start or file_offset + size > len(self.data):
            raise self.error(
                f"{what} at file_offset {file_offset:#x} + {size:#x} is outside the file data "
                f"[{self.data_start:#x}, {len(self.data):#x})"
            )
        return self.data[file_offset : file_offset + size]

    def _area(self, area: ParameterArea) -> ParameterArea:
        size = area.number_of_bytes
        if not size or size % abi.IGVM_PAGE_SIZE or size > MAX_PARAMETER_AREA:
            raise self.error(
                f"number_of_bytes {size:#x} is not a page multiple up to {MAX_PARAMETER_AREA:#x}"
            )
        if area.parameter_area_index in self.declared_areas:
            raise self.error(f"parameter_area_index {area.parameter_area_index} declared twice")
        if area.file_offset:
            self._file_data(area.file_offset, size, "initial contents")
        self.declared_areas.add(area.parameter_area_index)
        self.areas[area.parameter_area_index] = size
        return area

    def _live_area(self, index: int) -> int:
        size = self.areas.get(index)
        if size is None:
            state = "already inserted" if index in self.declared_areas else "not declared before"
            raise self.error(f"parameter_area_index {index} is {state}")
        return size

    def _page(
        self, gpa: int, mask: int, file_offset: int, flags: int, data_type: int, _: int
    ) -> PageData:
        self._check_mask(mask)
        known_flags = _FLAGS.get(flags)
        if known_flags is None:
            raise self.error(f"flags {flags:#x} has reserved bits")
        known_type = _DATA_TYPES.get(data_type)
        if known_type is None:
            raise self.error(f"data_type {data_type} is unknown")
        size = abi.PAGE_SIZE_2MB if flags & abi.PageDataFlags.IS_2MB_PAGE else abi.IGVM_PAGE_SIZE
        self._check_gpa(gpa, size)
        data = self._file_data(file_offset, size, "page data") if file_offset else None
        return PageData(gpa, mask, file_offset, known_flags, known_type, data)

    def _vp_context(
        self, gpa: int, mask: int, file_offset: int, vp_index: int, _: int
    ) -> VpContext:
        self._check_mask(mask)
        self._check_gpa(gpa, abi.IGVM_PAGE_SIZE)
        platforms = {t for m, t in self.masks.items() if m & mask}
        if PlatformType.TDX in platforms:
            raise self.error("a VP context for TDX, whose initial state is architectural")
        data = None
        if platforms & _VMSA_PLATFORMS:
            data = self._file_data(file_offset, abi.IGVM_PAGE_SIZE, "VMSA")
        return VpContext(gpa, mask, file_offset, vp_index, data)
