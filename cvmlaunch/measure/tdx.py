"""Intel TDX MRTD: SHA-384 over the 128-byte records of TDH.MEM.PAGE.ADD and TDH.MR.EXTEND.

TDH.MNG.INIT starts a plain SHA-384; each PAGE.ADD hashes one record naming the page's GPA;
each MR.EXTEND hashes one record naming a 256-byte chunk's GPA, then the chunk; and
TDH.MR.FINALIZE ends the hash. Every update is whole 128-byte blocks, so the MRTD is the
SHA-384 of the records concatenated in the order the VMM issued them.
"""

from __future__ import annotations

from array import array
from collections import deque
from hashlib import sha384
from itertools import chain
from struct import iter_unpack
from typing import Any

from cvmlaunch.abi.tdx import MR_EXTEND_CHUNK, MR_EXTEND_TAG, MRTD_RECORD, PAGE_ADD_TAG, PAGE_SIZE
from cvmlaunch.measure.trace import TdTraceStep
from cvmlaunch.plan.ops import TdAction, TdPageOp, TdPlan
from cvmlaunch.spec import PageOrder

CHUNKS_PER_PAGE = PAGE_SIZE // MR_EXTEND_CHUNK
# Pages hashed per batch: bounds memory on huge sections (2 MiB of contents at a time).
BATCH_PAGES = 512

_PAGE_ADD = MRTD_RECORD.pack(PAGE_ADD_TAG, 0)
_MR_EXTEND = MRTD_RECORD.pack(MR_EXTEND_TAG, 0)
# The GPA's position in a record, counted in u64 words.
_GPA_WORD = 2
_WORDS_PER_RECORD = MRTD_RECORD.size // 8


def mrtd(plan: TdPlan, trace: list[TdTraceStep] | None = None) -> bytes:
    """The MRTD of `plan`; appends one TdTraceStep per record to `trace` if given."""
    h = sha384()
    order = plan.spec.td_config.page_order
    for op in plan.ops:
        if op.action is TdAction.PAGE_AUG:
            continue
        if trace is not None:
            _traced(h, op, order, trace)
        else:
            _hash(h, op, order)
    return h.digest()


def _records(template: bytes, first_gpa: int, count: int, step: int) -> bytearray:
    """`count` copies of a record, the k-th naming GPA first_gpa + k * step."""
    out = bytearray(template * count)
    gpas = array("Q", range(first_gpa, first_gpa + count * step, step))
    memoryview(out).cast("Q")[_GPA_WORD::_WORDS_PER_RECORD] = gpas
    return out


def _hash(h: Any, op: TdPageOp, order: PageOrder) -> None:
    # Every per-record step runs inside C iterators (map / zip / iter_unpack): the stream is
    # about 1.5x the contents, and the Python overhead must stay small beside hashing it.
    extend = op.action is TdAction.PAGE_ADD_EXTEND
    pages = op.size // PAGE_SIZE
    if not extend or order is PageOrder.SECTION:
        for first in range(0, pages, BATCH_PAGES):
            count = min(BATCH_PAGES, pages - first)
            h.update(_records(_PAGE_ADD, op.gpa + first * PAGE_SIZE, count, PAGE_SIZE))
    if not extend:
        return
    for first in range(0, pages, BATCH_PAGES):
        count = min(BATCH_PAGES, pages - first)
        gpa = op.gpa + first * PAGE_SIZE
        size = count * PAGE_SIZE
        contents = (
            op.data[first * PAGE_SIZE : first * PAGE_SIZE + size]
            if op.data is not None
            else bytes(size)
        )
        exts = _records(_MR_EXTEND, gpa, count * CHUNKS_PER_PAGE, MR_EXTEND_CHUNK)
        headers: list[bytes] = list(chain.from_iterable(iter_unpack("128s", exts)))
        if order is PageOrder.PAGE:
            adds_buffer = _records(_PAGE_ADD, gpa, count, PAGE_SIZE)
            adds = chain.from_iterable(iter_unpack("128s", adds_buffer))
            headers[::CHUNKS_PER_PAGE] = map(bytes.__add__, adds, headers[::CHUNKS_PER_PAGE])
        chunks = chain.from_iterable(iter_unpack(f"{MR_EXTEND_CHUNK}s", contents))
        deque(map(h.update, chain.from_iterable(zip(headers, chunks, strict=True))), maxlen=0)


def _traced(h: Any, op: TdPageOp, order: PageOrder, trace: list[TdTraceStep]) -> None:
    extend = op.action is TdAction.PAGE_ADD_EXTEND
    data = op.data if op.data is not None else memoryview(bytes(op.size))

    def record(kind: str, gpa: int, chunk: memoryview | None = None) -> None:
        h.update(MRTD_RECORD.pack(PAGE_ADD_TAG if kind == "MEM.PAGE.ADD" else MR_EXTEND_TAG, gpa))
        if chunk is not None:
            h.update(chunk)
        trace.append(TdTraceStep(len(trace), kind, op.label, gpa, op.section, h.copy().digest()))

    def extend_page(offset: int) -> None:
        for chunk in range(offset, offset + PAGE_SIZE, MR_EXTEND_CHUNK):
            record("MR.EXTEND", op.gpa + chunk, data[chunk : chunk + MR_EXTEND_CHUNK])

    offsets = range(0, op.size, PAGE_SIZE)
    if extend and order is PageOrder.SECTION:
        for offset in offsets:
            record("MEM.PAGE.ADD", op.gpa + offset)
        for offset in offsets:
            extend_page(offset)
        return
    for offset in offsets:
        record("MEM.PAGE.ADD", op.gpa + offset)
        if extend:
            extend_page(offset)
