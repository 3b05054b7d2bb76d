"""Fault injection: failing calls, and populate commands that stop part-way.

A real kernel fails any call on ENOMEM, EFAULT or a signal (EINTR), and the populate
commands stop early when a signal is pending or a memslot update races (kvm-abi.md §1.6,
§2 "in/out on -EAGAIN", §3.4, §4.2). These make both happen at chosen points, so callers'
recovery paths run under test.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from cvmlaunch.namedtuple import NamedTuple


class Fault(NamedTuple):
    """The `at_call`-th kernel call (0-based: open, ioctl, mmap) fails with `errno`, having
    done nothing."""

    at_call: int
    errno: int


class Partial(NamedTuple):
    """The populate command that is about to handle page number `at_page` (counted over all
    populate commands of the kernel, from 0) stops there once, reporting partial progress
    the way that command does; `errno` (default EAGAIN) is what it reports, if it reports
    one."""

    at_page: int
    errno: int | None = None


class PageBudget:
    """The running page count of the populate commands and the Partial stops still due."""

    def __init__(self, partials: Sequence[Partial]) -> None:
        self._pending = sorted(partials, key=lambda p: p.at_page)
        self.total = 0

    def grant(self, pages: int) -> int:
        """How many of `pages` may be processed before the next stop is due."""
        if not self._pending:
            return pages
        return max(0, min(pages, self._pending[0].at_page - self.total))

    def spend(self, pages: int) -> None:
        self.total += pages

    def due(self) -> int | None:
        """The errno of a stop due before the next page (using it up), else None."""
        if not self._pending or self._pending[0].at_page > self.total:
            return None
        return self._pending.pop(0).errno or errno.EAGAIN


def call_faults(faults: Sequence[Fault | Partial]) -> dict[int, int]:
    """Call number → errno; the first Fault listed for a call wins."""
    table: dict[int, int] = {}
    for f in faults:
        if isinstance(f, Fault):
            table.setdefault(f.at_call, f.errno)
    return table
