"""The TD HOB QEMU writes into the TD_HOB section: the guest's RAM map for TDVF.

QEMU (hw/i386/tdvf-hob.c, target/i386/kvm/tdx.c) takes the RAM ranges of its e820 map
(q35: below 4 GiB up to 2 GiB, or all of RAM under 2.75 GiB; the rest from 4 GiB), splits
out every TD_HOB and TEMP_MEM section as accepted memory, and describes each piece, sorted
by address, after a PHIT. TDVF measures these bytes (without the END HOB) into RTMR0.
"""

from __future__ import annotations

from cvmlaunch.abi import hob
from cvmlaunch.errors import FirmwareError
from cvmlaunch.firmware.ovmf import GpaRange

FOUR_GIB = 1 << 32
# q35 keeps all RAM below 4 GiB only while it is smaller than this; else 2 GiB stay below.
Q35_LOWMEM_LIMIT = 0xB0000000
Q35_LOWMEM_SPLIT = 0x80000000
_NO_OWNER = bytes(16)


def q35_ram(memory: int) -> list[GpaRange]:
    """The RAM ranges of QEMU's q35 e820 map for `memory` bytes of guest RAM."""
    if memory < Q35_LOWMEM_LIMIT:
        return [GpaRange(0, memory)]
    return [GpaRange(0, Q35_LOWMEM_SPLIT), GpaRange(FOUR_GIB, memory - Q35_LOWMEM_SPLIT)]


def td_hob(hob_gpa: int, accepted: list[tuple[str, GpaRange]], ram: list[GpaRange]) -> bytes:
    """The TD HOB at `hob_gpa`, END HOB included, for `ram` with the `accepted` ranges.

    `accepted` pairs each range with the name used in errors; each must lie inside one RAM
    range, as QEMU requires to accept it.
    """
    pieces = [(r, hob.ResourceType.MEMORY_UNACCEPTED) for r in ram]
    for name, part in accepted:
        index = next(
            (i for i, (r, kind) in enumerate(pieces) if _contains(r, part) and kind != 0),
            None,
        )
        if index is None:
            ranges = ", ".join(f"[{r.base:#x}, {r.end:#x})" for r in ram)
            raise FirmwareError(
                f"{name} [{part.base:#x}, +{part.size:#x}) is not inside the guest RAM "
                f"({ranges}): QEMU cannot accept it; give the TD more memory"
            )
        whole, _ = pieces[index]
        split = [
            (GpaRange(whole.base, part.base - whole.base), hob.ResourceType.MEMORY_UNACCEPTED),
            (part, hob.ResourceType.SYSTEM_MEMORY),
            (GpaRange(part.end, whole.end - part.end), hob.ResourceType.MEMORY_UNACCEPTED),
        ]
        pieces[index : index + 1] = [(r, kind) for r, kind in split if r.size]
    pieces.sort(key=lambda piece: piece[0].base)
    size = (
        hob.HANDOFF_INFO_TABLE.size
        + len(pieces) * hob.RESOURCE_DESCRIPTOR.size
        + hob.HOB_HEADER.size
    )
    phit = hob.HANDOFF_INFO_TABLE.pack(
        hob.HobType.HANDOFF, hob.HANDOFF_INFO_TABLE.size, 0,
        hob.HANDOFF_INFO_TABLE_VERSION, hob.BOOT_WITH_FULL_CONFIGURATION,
        0, 0, 0, 0, hob_gpa + size,
    )  # fmt: skip
    out = [phit]
    for r, kind in pieces:
        descriptor = hob.RESOURCE_DESCRIPTOR.pack(
            hob.HobType.RESOURCE_DESCRIPTOR, hob.RESOURCE_DESCRIPTOR.size, 0, _NO_OWNER,
            kind, hob.RESOURCE_ATTRIBUTES_TESTED_RAM, r.base, r.size,
        )  # fmt: skip
        out.append(descriptor)
    out.append(hob.HOB_HEADER.pack(hob.HobType.END_OF_HOB_LIST, hob.HOB_HEADER.size, 0))
    return b"".join(out)


def _contains(outer: GpaRange, inner: GpaRange) -> bool:
    return outer.base <= inner.base and inner.end <= outer.end
