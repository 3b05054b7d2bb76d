"""Guest memory of one emulated VM: guest_memfd files, memslots, memory attributes, and
the populate step every vendor launch command shares.

Modelled on virt/kvm/kvm_main.c (kvm_set_memory_region, the memory-attributes ioctl) and
virt/kvm/guest_memfd.c (kvm_gmem_create, kvm_gmem_bind, kvm_gmem_populate) as kvm-abi.md
§1.3 to §1.5 and §5.2, §5.3 record them, errno for errno.
"""

from __future__ import annotations

import errno
import mmap
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvmlaunch.abi.kvm import MEMORY_ATTRIBUTE_PRIVATE, PAGE_SHIFT, PAGE_SIZE, GuestMemfdFlag
from cvmlaunch.abi.kvm import MemFlag as M
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.sim.faults import PageBudget
from cvmlaunch.sim.hosts import NR_MEMSLOTS
from cvmlaunch.sim.usercopy import buffer_address, fail

_U64 = 1 << 64
# The highest user address plus one on x86-64 with 4-level paging (TASK_SIZE_MAX).
_TASK_SIZE = (1 << 47) - PAGE_SIZE
_MAX_SLOT_PAGES = (1 << 31) - 1  # KVM_MEM_MAX_NR_PAGES
# Linux's MAP_NORESERVE (asm-generic/mman-common.h): sparse guest_memfd sizes cost nothing.
_MAP_NORESERVE = 0x4000


class RangeSet:
    """A set of page numbers kept as sorted, disjoint, half-open ranges."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        i = bisect_left(self._ends, start)
        j = bisect_right(self._starts, end)
        if i < j:
            start, end = min(start, self._starts[i]), max(end, self._ends[j - 1])
        self._starts[i:j], self._ends[i:j] = [start], [end]

    def remove(self, start: int, end: int) -> None:
        i = bisect_right(self._ends, start)
        j = bisect_left(self._starts, end)
        if i >= j:
            return
        kept = [(s, e) for s, e in ((self._starts[i], start), (end, self._ends[j - 1])) if s < e]
        self._starts[i:j] = [s for s, _ in kept]
        self._ends[i:j] = [e for _, e in kept]

    def covers(self, start: int, end: int) -> bool:
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def intersects(self, start: int, end: int) -> bool:
        i = bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] < end


class SimMapping:
    """A MAP_SHARED mapping of an emulated file: a window on its anonymous backing."""

    def __init__(self, area: mmap.mmap, offset: int, length: int) -> None:
        self.address = buffer_address(area) + offset
        self.view = memoryview(area)[offset : offset + length]

    def close(self) -> None:
        self.view.release()


class GuestMemfd:
    """A guest_memfd file: its bytes, the ranges memslots bind, and the pages populated."""

    def __init__(self, owner: GuestMemory, size: int, flags: int) -> None:
        self.owner = owner
        self.size = size
        self.flags = flags
        # Anonymous and lazily allocated, like the real file: untouched pages cost nothing.
        self.backing = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | _MAP_NORESERVE)
        self.bindings = RangeSet()
        # Page indices a populate command filled (kvm_gmem_populate marks the folio
        # prepared); the file keeps this across memslot delete and re-create.
        self.prepared: set[int] = set()

    def write_page(self, index: int, data: bytes) -> None:
        self.backing[index << PAGE_SHIFT : (index + 1) << PAGE_SHIFT] = data

    def map(self, length: int, offset: int) -> SimMapping:
        if not self.flags & GuestMemfdFlag.MMAP:
            fail(errno.ENODEV)
        if length <= 0 or offset % PAGE_SIZE or offset + length > self.size:
            fail(errno.EINVAL)
        return SimMapping(self.backing, offset, length)


@dataclass
class Memslot:
    flags: int
    base_gfn: int
    npages: int
    userspace_addr: int
    gmem: GuestMemfd | None
    gmem_start: int  # first guest_memfd page index bound

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    def gmem_index(self, gfn: int) -> int:
        return self.gmem_start + gfn - self.base_gfn


class Populated(NamedTuple):
    """How far a populate run got, and the errno it stopped with (None: it finished)."""

    done: int
    stop: int | None = None
    interrupted: bool = False  # stopped by a pending signal or race, not by a bad page


# Fills one page: (gfn, its guest_memfd, the page index in the file).
PageFill = Callable[[int, GuestMemfd, int], None]
# Resolves a process fd to the emulated file behind it, EBADF if none.
FdLookup = Callable[[int], object]


class GuestMemory:
    """The memslots and the PRIVATE attribute of one VM."""

    def __init__(self, readonly_slots: bool, attributes: int) -> None:
        self.slots: dict[int, Memslot] = {}
        self.private = RangeSet()
        self._readonly_slots = readonly_slots
        self._attributes = attributes

    def create_guest_memfd(self, request: Any, allowed_flags: int) -> GuestMemfd:
        """KVM_CREATE_GUEST_MEMFD (kvm-abi.md §1.3); `reserved` is not checked, as upstream."""
        if request.flags & ~allowed_flags:
            fail(errno.EINVAL)
        if request.size == 0 or request.size % PAGE_SIZE or request.size >= 1 << 63:
            fail(errno.EINVAL)
        return GuestMemfd(self, request.size, request.flags)

    def slot_at(self, gfn: int) -> Memslot | None:
        for slot in self.slots.values():
            if slot.base_gfn <= gfn < slot.end_gfn:
                return slot
        return None

    def set_region(self, r: Any, lookup: FdLookup) -> None:
        """KVM_SET_USER_MEMORY_REGION2, with kvm_set_memory_region's checks in its order."""
        self._check_region(r)
        slot_id, npages = r.slot & 0xFFFF, r.memory_size >> PAGE_SHIFT
        old = self.slots.get(slot_id)
        if npages == 0:
            if old is None:
                fail(errno.EINVAL)
            self._delete(slot_id, old)
            return
        if old is not None:
            self._modify(slot_id, old, r)
            return
        base_gfn = r.guest_phys_addr >> PAGE_SHIFT
        self._check_overlap(slot_id, base_gfn, npages)
        gmem, start = None, 0
        if r.flags & M.GUEST_MEMFD:
            gmem, start = self._bind(lookup(r.guest_memfd), r.guest_memfd_offset, npages)
        self.slots[slot_id] = Memslot(r.flags, base_gfn, npages, r.userspace_addr, gmem, start)

    def _check_region(self, r: Any) -> None:
        gmem = r.flags & M.GUEST_MEMFD
        # Plain ints: ~ on an IntFlag would keep only the defined flags.
        valid = int(M.GUEST_MEMFD if gmem else M.LOG_DIRTY_PAGES)
        # Writes to read-only slots are emulated MMIO, which private memory and protected
        # register state cannot have (check_memory_region_flags).
        if self._readonly_slots and not gmem:
            valid |= M.READONLY
        size, gpa, uaddr = r.memory_size, r.guest_phys_addr, r.userspace_addr
        bad = (
            r.flags & ~valid
            or (size | gpa | uaddr) % PAGE_SIZE
            or uaddr + size > _TASK_SIZE
            or (gmem and (r.guest_memfd_offset % PAGE_SIZE or r.guest_memfd_offset + size >= _U64))
            # No SMM address space on the emulated hosts, as on the probed one (§5.3).
            or r.slot >> 16
            or r.slot & 0xFFFF >= NR_MEMSLOTS
            or gpa + size >= _U64
            or size >> PAGE_SHIFT > _MAX_SLOT_PAGES
        )
        if bad:
            fail(errno.EINVAL)

    def _check_overlap(self, slot_id: int, base_gfn: int, npages: int) -> None:
        for other_id, other in self.slots.items():
            if (
                other_id != slot_id
                and base_gfn < other.end_gfn
                and other.base_gfn < base_gfn + npages
            ):
                fail(errno.EEXIST)

    def _bind(self, file: object, offset: int, npages: int) -> tuple[GuestMemfd, int]:
        """kvm_gmem_bind: a guest_memfd of this VM, in range, not bound there already."""
        if not isinstance(file, GuestMemfd) or file.owner is not self:
            fail(errno.EINVAL)
        start = offset >> PAGE_SHIFT
        if offset + (npages << PAGE_SHIFT) > file.size or file.bindings.intersects(
            start, start + npages
        ):
            fail(errno.EINVAL)
        file.bindings.add(start, start + npages)
        return file, start

    def _delete(self, slot_id: int, old: Memslot) -> None:
        if old.gmem is not None:
            old.gmem.bindings.remove(old.gmem_start, old.gmem_start + old.npages)
        del self.slots[slot_id]

    def _modify(self, slot_id: int, old: Memslot, r: Any) -> None:
        # guest_memfd slots are immutable: delete and re-create them instead.
        if r.flags & M.GUEST_MEMFD or old.gmem is not None:
            fail(errno.EINVAL)
        npages = r.memory_size >> PAGE_SHIFT
        if r.userspace_addr != old.userspace_addr or npages != old.npages:
            fail(errno.EINVAL)
        if (r.flags ^ old.flags) & M.READONLY:
            fail(errno.EINVAL)
        base_gfn = r.guest_phys_addr >> PAGE_SHIFT
        if base_gfn != old.base_gfn:
            self._check_overlap(slot_id, base_gfn, npages)
        old.base_gfn, old.flags = base_gfn, r.flags

    def set_attributes(self, a: Any) -> None:
        """KVM_SET_MEMORY_ATTRIBUTES (kvm-abi.md §1.5); PRIVATE is the only attribute."""
        if a.flags or a.attributes & ~self._attributes:
            fail(errno.EINVAL)
        if a.size == 0 or a.address + a.size >= _U64 or (a.address | a.size) % PAGE_SIZE:
            fail(errno.EINVAL)
        start, end = a.address >> PAGE_SHIFT, (a.address + a.size) >> PAGE_SHIFT
        if a.attributes & MEMORY_ATTRIBUTE_PRIVATE:
            self.private.add(start, end)
        else:
            self.private.remove(start, end)

    def populate(self, gfn: int, npages: int, budget: PageBudget, fill: PageFill) -> Populated:
        """kvm_gmem_populate: fill private guest_memfd pages from `gfn` on, one at a time.

        The range is clipped to the end of the first page's memslot. A run stops at a pending
        Partial, a page already populated (EEXIST) or a page not PRIVATE (EINVAL).
        """
        slot = self.slot_at(gfn)
        if slot is None or slot.gmem is None:
            fail(errno.EINVAL)
        gmem = slot.gmem
        for i in range(min(npages, slot.end_gfn - gfn)):
            stop = budget.due()
            if stop is not None:
                return Populated(i, stop, interrupted=True)
            index = slot.gmem_index(gfn + i)
            if index in gmem.prepared:
                return Populated(i, errno.EEXIST)
            if not self.private.covers(gfn + i, gfn + i + 1):
                return Populated(i, errno.EINVAL)
            fill(gfn + i, gmem, index)
            gmem.prepared.add(index)
            budget.spend(1)
        return Populated(min(npages, slot.end_gfn - gfn))
