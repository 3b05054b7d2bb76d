"""Memslots for a launch: the plan's populated ranges, page-aligned and merged when they touch.

Only what the launch populates gets a memslot (guest RAM proper is the VMM's business after
launch), so a 4 MiB firmware costs 4 MiB of guest_memfd, not the guest's memory size.
"""

from __future__ import annotations

from cvmlaunch.abi.kvm import PAGE_SIZE
from cvmlaunch.firmware.ovmf import GpaRange
from cvmlaunch.plan.step import Step

# The rehearsal guest's code page sits below every populated range when it can.
CHECKER_GPA_FLOOR = 0x1000


def regions(steps: list[Step]) -> list[GpaRange]:
    """The merged, sorted, page-aligned GPA ranges the steps populate."""
    spans = sorted(
        (s.gpa // PAGE_SIZE * PAGE_SIZE, -(-(s.gpa + s.size) // PAGE_SIZE) * PAGE_SIZE)
        for s in steps
        if s.size
    )
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [GpaRange(start, end - start) for start, end in merged]


def free_page(used: list[GpaRange], floor: int = CHECKER_GPA_FLOOR) -> int:
    """The lowest page at or above `floor` that no region covers."""
    gpa = floor
    for r in used:
        if gpa + PAGE_SIZE <= r.base:
            break
        gpa = max(gpa, r.end)
    return gpa
