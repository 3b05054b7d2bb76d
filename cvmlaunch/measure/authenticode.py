"""The PE/COFF Authenticode digest of a kernel image, as edk2 measures the image it starts
(RTMR1's EV_EFI_BOOT_SERVICES_APPLICATION), and the Linux setup-header rewrite that QEMU
before 10.2 applies to the kernel it serves over fw_cfg (so the bytes OVMF hashes are not the
file's).

edk2 (Tcg2MeasurePeImage): the headers up to SizeOfHeaders without the CheckSum field and the
Security data-directory entry; then every section with raw data, by PointerToRawData; then,
from the count of bytes hashed so far (a count used as an offset, as edk2 does) to the end of
the file less the certificate table. Nothing is padded. See reference/tdx-measure.md §2.5.

The file is read at offsets, a chunk at a time: memory does not grow with the image.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from cvmlaunch.errors import InputError
from cvmlaunch.guest.files import MAX_KERNEL_SIZE
from cvmlaunch.inputs import OpenInput
from cvmlaunch.namedtuple import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterator

_CHUNK = 1 << 20
# Everything from the DOS header to the end of the section table must lie in this much.
_HEAD = 64 << 10
_SECTION = struct.Struct("<8sIIIIIIHHI")  # IMAGE_SECTION_HEADER, 40 bytes
_PE32, _PE32_PLUS = 0x10B, 0x20B
_SECURITY_DIRECTORY = 4  # IMAGE_DIRECTORY_ENTRY_SECURITY

# The Linux boot protocol's setup header (Documentation/arch/x86/boot.rst).
_HEADER_MAGIC = b"HdrS"
_TYPE_OF_LOADER, _LOADFLAGS, _RAMDISK_IMAGE, _RAMDISK_SIZE = 0x210, 0x211, 0x218, 0x21C
_HEAP_END_PTR, _CMD_LINE_PTR, _INITRD_ADDR_MAX, _XLOADFLAGS = 0x224, 0x228, 0x22C, 0x236
_CAN_USE_HEAP = 0x80
_XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 6
# What QEMU's x86 loader writes (hw/i386/x86-common.c): loader 0xB0 ("QEMU"), the command line
# at 0x20000, the heap ending below it, and the initrd at the top of what the kernel allows.
_QEMU_LOADER = 0xB0
_QEMU_CMDLINE_ADDR, _QEMU_REAL_ADDR = 0x20000, 0x10000
_QEMU_ACPI_DATA_SIZE = 0x28000
# q35 keeps RAM below 4 GiB up to 2.75 GiB; more than that is split at 2 GiB.
_Q35_LOWMEM_LIMIT, _Q35_LOWMEM_SPLIT = 0xB000_0000, 0x8000_0000


class SetupHeaderPatch(NamedTuple):
    """The guest QEMU (< 10.2) writes the kernel's setup header for: its RAM and the size of
    its initrd (None: no initrd)."""

    memory_mib: int
    initrd_size: int | None


def qemu_setup_header(header: bytes, patch: SetupHeaderPatch) -> dict[int, bytes]:
    """The bytes QEMU writes into the setup header at the start of `header`, by offset; none
    for a kernel without a setup header (protocol < 2.00)."""
    if len(header) < _XLOADFLAGS + 2 or header[0x202:0x206] != _HEADER_MAGIC:
        return {}
    protocol = int.from_bytes(header[0x206:0x208], "little")
    writes = {
        _TYPE_OF_LOADER: bytes([_QEMU_LOADER]),
        _LOADFLAGS: bytes([header[_LOADFLAGS] | _CAN_USE_HEAP]),
        _HEAP_END_PTR: (_QEMU_CMDLINE_ADDR - _QEMU_REAL_ADDR - 0x200).to_bytes(2, "little"),
        _CMD_LINE_PTR: _QEMU_CMDLINE_ADDR.to_bytes(4, "little"),
    }
    if patch.initrd_size is not None:
        xloadflags = int.from_bytes(header[_XLOADFLAGS : _XLOADFLAGS + 2], "little")
        if protocol >= 0x20C and xloadflags & _XLF_CAN_BE_LOADED_ABOVE_4G:
            initrd_max = 0xFFFF_FFFF
        elif protocol >= 0x203:
            initrd_max = int.from_bytes(header[_INITRD_ADDR_MAX : _INITRD_ADDR_MAX + 4], "little")
        else:
            initrd_max = 0x37FF_FFFF
        memory = patch.memory_mib << 20
        below_4g = memory if memory < _Q35_LOWMEM_LIMIT else _Q35_LOWMEM_SPLIT
        initrd_max = min(initrd_max, below_4g - _QEMU_ACPI_DATA_SIZE - 1)
        address = (initrd_max - patch.initrd_size) & ~0xFFF
        writes[_RAMDISK_IMAGE] = address.to_bytes(4, "little")
        writes[_RAMDISK_SIZE] = patch.initrd_size.to_bytes(4, "little")
    return writes


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def authenticode_ranges(head: bytes, size: int) -> list[tuple[int, int]]:
    """The byte ranges [start, end) of a PE image of `size` bytes that Authenticode hashes,
    in order, from its first bytes `head`; ValueError naming the offset if it is not a
    well-formed PE image."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        raise ValueError("no MZ header at offset 0x0")
    pe = _u32(head, 0x3C)
    if head[pe : pe + 4] != b"PE\0\0":
        raise ValueError(f"no PE signature at offset {pe:#x} (e_lfanew)")
    sections, optional_size = _u16(head, pe + 6), _u16(head, pe + 20)
    optional = pe + 24
    magic = _u16(head, optional)
    if magic not in (_PE32, _PE32_PLUS):
        raise ValueError(f"optional header magic {magic:#x} at offset {optional:#x}")
    directories = optional + (96 if magic == _PE32 else 112)
    count = _u32(head, directories - 4)  # NumberOfRvaAndSizes
    table = optional + optional_size
    if table + sections * _SECTION.size > len(head):
        raise ValueError(f"section table at offset {table:#x} runs past the headers")
    header_size = _u32(head, optional + 60)
    if header_size > size:
        raise ValueError(f"SizeOfHeaders {header_size:#x} is past the end of the file")
    checksum = optional + 64
    ranges = [(0, checksum)]
    certificates = 0
    if count > _SECURITY_DIRECTORY:
        security = directories + 8 * _SECURITY_DIRECTORY
        certificates = _u32(head, security + 4)
        ranges += [(checksum + 4, security), (security + 8, header_size)]
    else:
        ranges.append((checksum + 4, header_size))
    raw = []
    for n in range(sections):
        fields = _SECTION.unpack_from(head, table + n * _SECTION.size)
        length, start = fields[3], fields[4]  # SizeOfRawData, PointerToRawData
        if length == 0:
            continue
        if start + length > size:
            where = table + n * _SECTION.size
            raise ValueError(f"section {n} (header at offset {where:#x}) runs past the file")
        raw.append((start, start + length))
    raw.sort(key=lambda r: r[0])  # stable: equal offsets keep table order, as edk2's sort
    ranges += raw
    hashed = header_size + sum(end - start for start, end in raw)
    if size > hashed:
        if size < hashed + certificates:
            raise ValueError(f"the certificate table ({certificates:#x} bytes) overlaps the image")
        if size > hashed + certificates:
            ranges.append((hashed, size - certificates))
    return [(start, end) for start, end in ranges if end > start]


def authenticode(
    path: Path, *, name: str = "boot.kernel", patch: SetupHeaderPatch | None = None
) -> bytes:
    """The Authenticode SHA-384 of the PE image at `path` (as served by QEMU < 10.2 when
    `patch` is given). `name` is the key the path came from, for errors."""
    what = "a PE/COFF kernel image"
    with OpenInput(path, limit=MAX_KERNEL_SIZE, what=what, name=name) as (fd, size):
        try:
            head = os.pread(fd, _HEAD, 0)
            ranges = authenticode_ranges(head, size)
            writes = qemu_setup_header(head, patch) if patch is not None else {}
            digest = hashlib.sha384()
            for start, end in ranges:
                for chunk in _chunks(fd, start, end, writes):
                    digest.update(chunk)
        except ValueError as e:
            raise InputError(f"{name} {path}", f"not {what}: {e}") from None
        except OSError as e:
            raise InputError(f"{name} {path}", e.strerror or str(e)) from None
    return digest.digest()


def _chunks(fd: int, start: int, end: int, writes: dict[int, bytes]) -> Iterator[bytes]:
    """The file's bytes [start, end), with `writes` laid over them."""
    while start < end:
        chunk = os.pread(fd, min(_CHUNK, end - start), start)
        if not chunk:
            raise ValueError(f"the file ends at offset {start:#x}, inside a hashed range")
        if writes and start < max(writes) + 4:
            patched = bytearray(chunk)
            for offset, data in writes.items():
                for n, byte in enumerate(data):
                    if start <= offset + n < start + len(chunk):
                        patched[offset + n - start] = byte
            chunk = bytes(patched)
        yield chunk
        start += len(chunk)
