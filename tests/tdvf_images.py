"""Deterministic TDVF firmware images built from a small description, for tests.

An image is described by JSON-friendly parameters (size, how the descriptor is located, the
section table, a content seed), so recorded peer results can name their inputs exactly and
any machine can rebuild the same bytes.
"""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Any

from cvmlaunch.abi.ovmf import ENTRY_HEADER, FOOTER_GUID, TDX_METADATA_OFFSET_GUID
from cvmlaunch.abi.tdx import TDVF_DESCRIPTOR, TDVF_SECTION, TDX_METADATA_GUID

PAGE = 0x1000
FOUR_GIB = 1 << 32
SECTION_FIELDS = ("data_offset", "raw_size", "gpa", "mem_size", "type", "attributes")


def content(seed: int, size: int) -> bytearray:
    """`size` pseudo-random bytes: SHA-256 in counter mode (stable across Python versions)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(struct.pack("<QQ", seed, counter)).digest()
        counter += 1
    return out[:size]


def build_image(params: dict[str, Any]) -> bytes:
    """The image `params` describes: content, TDVF descriptor (with the metadata GUID before
    it), and the locator (an OVMF footer table or the td-shim offset) near the end."""
    size: int = params["size"]
    data = content(params["seed"], size)
    at: int = params["descriptor_offset"]
    sections = params["sections"]
    descriptor = TDVF_DESCRIPTOR.pack(
        b"TDVF", TDVF_DESCRIPTOR.size + TDVF_SECTION.size * len(sections), 1, len(sections)
    )
    for s in sections:
        descriptor += TDVF_SECTION.pack(*(s[field] for field in SECTION_FIELDS))
    data[at - 16 : at + len(descriptor)] = TDX_METADATA_GUID + descriptor
    footer_end = size - 0x20
    if params["locator"] == "ovmf":
        entry = struct.pack("<I", size - at) + ENTRY_HEADER.pack(22, TDX_METADATA_OFFSET_GUID)
        footer = ENTRY_HEADER.pack(len(entry) + ENTRY_HEADER.size, FOOTER_GUID)
        table = entry + footer
        data[footer_end - len(table) : footer_end] = table
    else:
        data[footer_end : footer_end + 4] = struct.pack("<I", at)
        # Not an OVMF footer GUID where QEMU would look for one.
        data[footer_end - 16 : footer_end] = bytes(16)
    return bytes(data)


def random_params(rng: random.Random, seed: int) -> dict[str, Any]:
    """A well-formed TDVF image description, drawn from `rng`.

    Firmware volumes sit just below 4 GiB, VMM-provided memory low in RAM (inside 2 GiB, so
    QEMU's TD HOB can describe it); no section without raw data is extended (that content
    is the VMM's, not the image's).
    """
    size = rng.choice((0x10000, 0x40000, 0x100000, 0x200000, 0x400000)) + rng.choice((0, PAGE))
    tail = 0x1000  # descriptor and footer live in the last page
    at = size - tail + 16 * rng.randrange(1, 8)
    sections: list[dict[str, int]] = []
    high = FOUR_GIB
    low = 0x800000

    def volume(kind: int, attributes: int) -> None:
        nonlocal high
        mem = PAGE * rng.randrange(1, max(2, (size - tail) // PAGE // 3))
        offset = rng.choice((0, PAGE * rng.randrange(0, (size - mem) // PAGE + 1)))
        offset = min(offset, size - mem)
        if rng.random() < 0.1:
            offset += rng.choice((0x10, 0x200))  # DataOffset need not be aligned
            offset = min(offset, size - mem)
        raw = mem if rng.random() < 0.75 else mem - rng.randrange(1, min(mem, 3 * PAGE))
        high -= mem + PAGE * rng.randrange(0, 4)
        sections.append(_section(offset, raw, high, mem, kind=kind, attributes=attributes))

    def vmm_memory(kind: int, attributes: int) -> None:
        nonlocal low
        mem = PAGE * rng.randrange(1, 24)
        low += PAGE * rng.randrange(0, 3)
        sections.append(_section(0, 0, low, mem, kind=kind, attributes=attributes))
        low += mem

    volume(0, 1)  # BFV, measured
    if rng.random() < 0.9:
        volume(1, rng.choice((0, 0, 0, 1)))  # CFV, rarely measured
    kinds = [(3, 0)] * rng.randrange(0, 5)
    if rng.random() < 0.85:
        kinds.append((2, 0))  # TD_HOB
    if rng.random() < 0.25:
        kinds.append((4, 2))  # PERM_MEM, PAGE.AUG
    if rng.random() < 0.15:
        volume(5, rng.choice((0, 1)))  # PAYLOAD from the image
    for kind, attributes in kinds:
        vmm_memory(kind, attributes)
    rng.shuffle(sections)
    return {
        "size": size,
        "seed": seed,
        "locator": "ovmf" if rng.random() < 0.8 else "tdshim",
        "descriptor_offset": at,
        "sections": sections,
    }


def _section(
    data_offset: int, raw: int, gpa: int, mem: int, *, kind: int, attributes: int
) -> dict[str, int]:
    return {
        "data_offset": data_offset if raw else 0,
        "raw_size": raw,
        "gpa": gpa,
        "mem_size": mem,
        "type": kind,
        "attributes": attributes,
    }
