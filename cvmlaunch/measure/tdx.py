"""Intel TDX MRTD: SHA-384 over the 128-byte records of TDH.MEM.PAGE.ADD and TDH.MR.EXTEND.

TDH.MNG.INIT starts a plain SHA-384; each PAGE.ADD hashes one record naming the page's GPA;
each MR.EXTEND hashes one record naming a 256-byte chunk's GPA, then the chunk; and
TDH.MR.FINALIZE ends the hash. Every update is whole 128-byte blocks, so the MRTD is the
SHA-384 of the records concatenated in the order the VMM issued them.

That stream is built a block of pages at a time, by C loops rather than two hash updates
per 256-byte chunk, and hashed in a second thread while the next block is built: about 1.3x
the image's bytes are hashed, and little else is done.
"""

from __future__ import annotations

import queue
import threading
from hashlib import sha384
from itertools import repeat

from cvmlaunch.abi.tdx import MR_EXTEND_CHUNK, MR_EXTEND_TAG, MRTD_RECORD, PAGE_ADD_TAG, PAGE_SIZE
from cvmlaunch.guest.spec import PageOrder
from cvmlaunch.plan.ops import TdPageOp, TdPlan
from cvmlaunch.plan.step import Step, StepKind, TdAction

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def mrtd(plan: TdPlan, trace: list[Step] | None = None) -> bytes:
    """The MRTD of `plan`; appends one Step per record to `trace` if given."""
    h = sha384()
    order = plan.spec.td_config.page_order
    ops = [op for op in plan.ops if op.action is not TdAction.PAGE_AUG]
    if trace is not None:
        for op in ops:
            _traced(h, op, order, trace)
        return h.digest()
    with _Hasher(h) as hasher:
        for op in ops:
            for block in _records(op, order):
                hasher.put(block)
    return h.digest()


# Pages of records built at a time: small enough that hashing starts at once and the next
# block is built while one is hashed, large enough that handing blocks over costs little
# (benchmarks/mrtd_vs_sha384.py).
_BATCH_PAGES = 32
_CHUNKS = PAGE_SIZE // MR_EXTEND_CHUNK
# The chunks of a block's pages, by offset in the block.
_CHUNK_SLICES = [
    slice(offset, offset + MR_EXTEND_CHUNK)
    for offset in range(0, _BATCH_PAGES * PAGE_SIZE, MR_EXTEND_CHUNK)
]


def _page_adds(gpa: int, pages: int) -> list[bytes]:
    """The TDH.MEM.PAGE.ADD records of `pages` pages from `gpa`."""
    return list(map(MRTD_RECORD.pack, repeat(PAGE_ADD_TAG, pages),
                    range(gpa, gpa + pages * PAGE_SIZE, PAGE_SIZE)))  # fmt: skip


def _records(op: TdPageOp, order: PageOrder) -> Iterator[bytes]:
    """The records (and extended chunks) `op` adds to MRTD, in blocks, in the TDX module's
    order: for a section measured page by page each page's PAGE.ADD before its extends."""
    pages = -(-op.size // PAGE_SIZE)
    extend = op.action is TdAction.PAGE_ADD_EXTEND
    if not extend or order is PageOrder.SECTION:
        yield b"".join(_page_adds(op.gpa, pages))
    if not extend:
        return
    data = memoryview(op.data if op.data is not None else b"")
    for first in range(0, pages, _BATCH_PAGES):
        count = min(_BATCH_PAGES, pages - first)
        start = first * PAGE_SIZE
        contents = data[start : start + count * PAGE_SIZE]
        if len(contents) < count * PAGE_SIZE:  # zero past the data
            contents = memoryview(bytes(contents).ljust(count * PAGE_SIZE, b"\0"))
        chunks = count * _CHUNKS
        gpa = op.gpa + start
        # Built by C loops (map, slice assignment, join), not one update per chunk.
        gpas = range(gpa, gpa + chunks * MR_EXTEND_CHUNK, MR_EXTEND_CHUNK)
        extends = list(map(MRTD_RECORD.pack, repeat(MR_EXTEND_TAG, chunks), gpas))
        data_chunks = list(map(contents.__getitem__, _CHUNK_SLICES[:chunks]))
        if order is PageOrder.SECTION:
            parts: list[bytes | memoryview] = [b""] * (2 * chunks)
            parts[0::2] = extends
            parts[1::2] = data_chunks
        else:
            per_page = 1 + 2 * _CHUNKS
            parts = [b""] * (per_page * count)
            parts[0::per_page] = _page_adds(gpa, count)
            for k in range(_CHUNKS):
                parts[1 + 2 * k :: per_page] = extends[k::_CHUNKS]
                parts[2 + 2 * k :: per_page] = data_chunks[k::_CHUNKS]
        yield b"".join(parts)


class _Hasher:
    """Feeds blocks to a hash in a second thread, so that the next block is built while one
    is hashed: hashlib lets go of the GIL while it hashes a large block.

    At most _AHEAD blocks wait: each takes a free slot, which the hashing thread gives back
    (C queues: Queue's locks in Python cost as much as the work they hand over)."""

    _AHEAD = 2

    def __init__(self, h: Any) -> None:
        self._blocks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._free: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(self._AHEAD):
            self._free.put(None)
        self._thread = threading.Thread(target=self._hash, args=(h.update,), daemon=True)

    def _hash(self, update: Any) -> None:
        blocks, free = self._blocks, self._free
        while (block := blocks.get()) is not None:
            update(block)
            free.put(None)

    def put(self, block: bytes) -> None:
        self._free.get()
        self._blocks.put(block)

    def __enter__(self) -> _Hasher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._blocks.put(None)
        self._thread.join()


_ZERO_PAGE = memoryview(bytes(PAGE_SIZE))


def _page(data: memoryview | None, offset: int) -> memoryview:
    """The initial contents of the page at `offset` of a section (zero past `data`)."""
    if data is None or offset >= len(data):
        return _ZERO_PAGE
    if offset + PAGE_SIZE <= len(data):
        return data[offset : offset + PAGE_SIZE]
    return memoryview(bytes(data[offset:]).ljust(PAGE_SIZE, b"\0"))


def _traced(h: Any, op: TdPageOp, order: PageOrder, trace: list[Step]) -> None:
    extend = op.action is TdAction.PAGE_ADD_EXTEND

    def record(kind: StepKind, gpa: int, chunk: memoryview | None = None) -> None:
        h.update(MRTD_RECORD.pack(PAGE_ADD_TAG if chunk is None else MR_EXTEND_TAG, gpa))
        size = PAGE_SIZE
        if chunk is not None:
            h.update(chunk)
            size = MR_EXTEND_CHUNK
        digest = h.copy().digest()
        trace.append(
            Step(len(trace), kind, op.label, gpa, size, digest=digest, section=op.section)
        )

    def extend_page(page: int) -> None:
        contents = _page(op.data, page)
        for offset in range(0, PAGE_SIZE, MR_EXTEND_CHUNK):
            chunk = contents[offset : offset + MR_EXTEND_CHUNK]
            record(StepKind.MR_EXTEND, op.gpa + page + offset, chunk)

    pages = range(0, op.size, PAGE_SIZE)
    if extend and order is PageOrder.SECTION:
        for page in pages:
            record(StepKind.PAGE_ADD, op.gpa + page)
        for page in pages:
            extend_page(page)
        return
    for page in pages:
        record(StepKind.PAGE_ADD, op.gpa + page)
        if extend:
            extend_page(page)
