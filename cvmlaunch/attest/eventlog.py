"""The CC event log (CCEL) of a TD: parse it, decode its events, replay it to RTMR0..3.

A log arrives as the CCEL binary (the log area, with or without the 56-byte CCEL ACPI table
in front) or as dstack's JSON event list; either way it becomes an `EventLog` whose events
are `Step`s of kind EVENT (the record's offset, MR index, type, every bank's digest, the
event data and its decoding, and the RTMR right after it). Replay skips EV_NO_ACTION and
MR indexes outside 1..4 (0 is MRTD, which the log never extends); each RTMR starts as zeros
and becomes H(RTMR || digest), in every bank the Spec ID event lists.

Every malformed input is one `AttestationError` with the offset of the field at fault; the
work is linear in the input and the input is capped at `MAX_LOG_SIZE`. Event data that does
not decode does not refuse the log: the event keeps its bytes, its digest still replays, and
its `details` say what could not be read and where.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from itertools import zip_longest
from typing import Any

from cvmlaunch.abi import eventlog as abi
from cvmlaunch.attest.event_data import decode_event, one_line, plain_text
from cvmlaunch.attest.result import Check, check
from cvmlaunch.errors import AttestationError
from cvmlaunch.measure.document import event_json
from cvmlaunch.measure.rtmr import BOOT_RTMRS, event_causes
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.step import Step, StepKind

# The largest log accepted (LAML is 64 KiB..1 MiB in the logs we know).
MAX_LOG_SIZE = 16 * 1024 * 1024

_PADDING = re.compile(rb"[^\x00\xff]")
_U32 = struct.Struct("<I")


class SpecId(NamedTuple):
    """The Spec ID event (TCG_EfiSpecIDEvent) that opens a crypto-agile log."""

    mr_index: int  # the legacy record's PCR index (1 in edk2's CCEL, 0 in early TDVF)
    platform_class: int
    version: tuple[int, int, int]  # major, minor, errata
    uintn_size: int
    algorithms: Mapping[int, int]  # TPM_ALG_ID -> digest size, in the log's order
    vendor_info: bytes


class CcelTable(NamedTuple):
    """The CCEL ACPI table (ACPI 6.5 §5.2.34)."""

    length: int
    revision: int
    checksum: int
    oem_id: bytes
    oem_table_id: bytes
    oem_revision: int
    creator_id: bytes
    creator_revision: int
    cc_type: int
    cc_subtype: int
    laml: int  # log area minimum length
    lasa: int  # log area start address


class EventLog(NamedTuple):
    """A parsed log: its events (every record after the Spec ID event) and where it ended."""

    events: tuple[Step, ...]
    algorithms: tuple[int, ...]  # the banks, TPM_ALG_IDs in the log's order
    bank: int  # the bank whose digests the steps' `contents` and `digest` carry
    spec_id: SpecId | None = None  # None for a JSON log
    table: CcelTable | None = None
    end: int = 0  # the offset just past the last event (JSON: 0)
    padding: int = 0  # bytes of 0xFF/0x00 fill after it


class RtmrDifference(NamedTuple):
    """The first RTMR whose replayed value is not the one expected."""

    rtmr: int
    replayed: bytes
    expected: bytes

    def __str__(self) -> str:
        return (
            f"RTMR{self.rtmr}: the event log replays to {self.replayed.hex()}, "
            f"expected {self.expected.hex()}"
        )


# --------------------------------------------------------------------------------------
# The CCEL ACPI table and the binary log
# --------------------------------------------------------------------------------------


def parse_ccel_table(data: bytes) -> CcelTable:
    """The CCEL ACPI table at the start of `data` (56 bytes in revision 1)."""
    if len(data) < abi.CCEL_TABLE_SIZE:
        raise AttestationError(
            f"CCEL ACPI table: {len(data)} bytes, expected {abi.CCEL_TABLE_SIZE}", offset=0
        )
    fields = abi.CCEL_TABLE.unpack_from(data, 0)
    if fields[0] != abi.CCEL_SIGNATURE:
        raise AttestationError(f"CCEL ACPI table: signature {fields[0]!r}, expected 'CCEL'", 0)
    table = CcelTable(*fields[1:11], *fields[12:])  # the reserved u16 is not kept
    at = abi.CCEL_TABLE_OFFSETS
    if not abi.CCEL_TABLE_SIZE <= table.length <= len(data):
        raise AttestationError(
            f"CCEL ACPI table: Length {table.length} outside {abi.CCEL_TABLE_SIZE}..{len(data)}",
            offset=at["Length"],
        )
    if sum(data[: table.length]) & 0xFF:
        raise AttestationError("CCEL ACPI table: the checksum does not sum to 0", at["Checksum"])
    return table


def parse_ccel(data: bytes, *, allow_padding: bool = False) -> EventLog:
    """A CC event log from its bytes, the CCEL ACPI table in front or not.

    The log ends at the end of `data`, or at an MR index of 0xFFFFFFFF or an all-zero
    header, after which only 0xFF/0x00 fill may follow. That fill is what a log read from
    its log area (LAML bytes) always has; it is refused unless `allow_padding` (as
    go-eventlog's `ParseOpts.AllowPadding`), so a log cut to its events is the strict form.
    """
    if len(data) > MAX_LOG_SIZE:
        raise AttestationError(
            f"event log: {len(data)} bytes, more than the {MAX_LOG_SIZE} accepted", MAX_LOG_SIZE
        )
    data = bytes(data)
    table = None
    start = 0
    if data[:4] == abi.CCEL_SIGNATURE:
        table = parse_ccel_table(data)
        start = table.length
        if len(data) - start > table.laml:
            raise AttestationError(
                f"event log: {len(data) - start} bytes, more than the table's LAML {table.laml}",
                offset=start + table.laml,
            )
    spec_id, offset = _parse_spec_id(data, start)
    algorithms = tuple(spec_id.algorithms)
    bank = abi.Alg.TPM_ALG_SHA384 if abi.Alg.TPM_ALG_SHA384 in algorithms else algorithms[0]
    running = _Running(bank, spec_id.algorithms[bank])
    events: list[Step] = []
    while offset < len(data):
        if _at_end(data, offset):
            break
        step, offset = _parse_record(data, offset, len(events), spec_id.algorithms)
        events.append(running.extend(step))
    end = offset
    if end < len(data):
        # translate() deletes the fill at C speed; the regex finds the offset on error only.
        junk = _PADDING.search(data, end) if data[end:].translate(None, b"\x00\xff") else None
        if junk is not None:
            raise AttestationError("event log: data after its end marker", offset=junk.start())
        if not allow_padding:
            raise AttestationError(
                f"event log: {len(data) - end} bytes of padding after its last event "
                "(allow_padding accepts a log read from its whole log area)",
                offset=end,
            )
    return EventLog(tuple(events), algorithms, bank, spec_id, table, end, len(data) - end)


def _at_end(data: bytes, offset: int) -> bool:
    """Whether the log ends here: an MR index of 0xFFFFFFFF, an all-zero header, or a tail
    too short for a header that is all fill (checked by the caller)."""
    if len(data) - offset < 8:
        return _PADDING.search(data, offset) is None
    index, kind = struct.unpack_from("<II", data, offset)
    return bool(index == abi.MR_INDEX_END or (index == 0 and kind == 0))


def _parse_spec_id(data: bytes, start: int) -> tuple[SpecId, int]:
    """The legacy TCG_PCR_EVENT holding the Spec ID event, and the offset after it."""
    if len(data) - start < abi.PCR_EVENT_SIZE:
        raise AttestationError(
            "event log: too short for its first record (TCG_PCR_EVENT, 32 bytes)", start
        )
    mr_index, kind, _, size = abi.PCR_EVENT.unpack_from(data, start)
    if kind != abi.EventType.EV_NO_ACTION:
        raise AttestationError(
            f"event log: the first record is {abi.event_type_name(kind)}, expected "
            "EV_NO_ACTION holding the Spec ID event (a crypto-agile log)",
            offset=start + 4,
        )
    at = start + abi.PCR_EVENT_SIZE
    if size > len(data) - at:
        raise AttestationError(
            f"event log: Spec ID event of {size} bytes, {len(data) - at} left", at - 4
        )
    end = at + size
    if size < abi.SPEC_ID_HEADER_SIZE:
        raise AttestationError(f"event log: Spec ID event of {size} bytes is too short", at - 4)
    signature, platform, minor, major, errata, uintn, count = abi.SPEC_ID_HEADER.unpack_from(
        data, at
    )
    if signature != abi.SPEC_ID_SIGNATURE:
        raise AttestationError(
            f"event log: Spec ID signature {signature!r}, expected 'Spec ID Event03'", at
        )
    pos = at + abi.SPEC_ID_HEADER_SIZE
    if count == 0 or count > (end - pos) // abi.SPEC_ID_ALGORITHM.size:
        raise AttestationError(f"event log: Spec ID lists {count} algorithms", pos - 4)
    algorithms: dict[int, int] = {}
    for _ in range(count):
        alg, digest_size = abi.SPEC_ID_ALGORITHM.unpack_from(data, pos)
        known = abi.DIGEST_SIZES.get(alg)
        if alg in algorithms:
            raise AttestationError(f"event log: Spec ID lists algorithm {alg:#06x} twice", pos)
        if (known is not None and digest_size != known) or not 0 < digest_size <= 64:
            raise AttestationError(
                f"event log: Spec ID gives algorithm {alg:#06x} a {digest_size}-byte digest",
                pos + 2,
            )
        algorithms[alg] = digest_size
        pos += abi.SPEC_ID_ALGORITHM.size
    if pos >= end or pos + 1 + data[pos] != end:
        raise AttestationError("event log: Spec ID vendor info does not end the event", pos)
    spec = SpecId(
        mr_index, platform, (major, minor, errata), uintn, algorithms, data[pos + 1 : end]
    )
    return spec, end


def _parse_record(
    data: bytes, offset: int, number: int, sizes: Mapping[int, int]
) -> tuple[Step, int]:
    """One TCG_PCR_EVENT2 record at `offset` as a step (no running value yet)."""
    if len(data) - offset < abi.PCR_EVENT2_HEADER_SIZE:
        raise AttestationError(f"event {number}: truncated record header", offset)
    mr_index, kind, count = abi.PCR_EVENT2_HEADER.unpack_from(data, offset)
    pos = offset + abi.PCR_EVENT2_HEADER_SIZE
    if count != len(sizes):
        raise AttestationError(
            f"event {number}: {count} digests, the Spec ID lists {len(sizes)} banks", pos - 4
        )
    digests: dict[int, bytes] = {}
    for _ in range(count):
        if len(data) - pos < 2:
            raise AttestationError(f"event {number}: truncated digest", pos)
        (alg,) = abi.ALG_ID.unpack_from(data, pos)
        size = sizes.get(alg)
        if size is None or alg in digests:
            what = "a second digest" if alg in digests else "a digest"
            raise AttestationError(
                f"event {number}: {what} of algorithm {alg:#06x}, not in the Spec ID banks", pos
            )
        if len(data) - pos - 2 < size:
            raise AttestationError(f"event {number}: truncated {size}-byte digest", pos + 2)
        digests[alg] = data[pos + 2 : pos + 2 + size]
        pos += 2 + size
    if len(data) - pos < 4:
        raise AttestationError(f"event {number}: truncated event size", pos)
    (size,) = abi.EVENT_SIZE.unpack_from(data, pos)
    if size > len(data) - pos - 4:
        raise AttestationError(
            f"event {number}: event data of {size} bytes, {len(data) - pos - 4} left", pos
        )
    payload = data[pos + 4 : pos + 4 + size]
    label, details = decode_event(kind, payload)
    rtmr = _rtmr_of(mr_index, kind)
    step = Step(
        number=number,
        kind=StepKind.EVENT,
        label=label,
        gpa=0,
        size=size,
        file_offset=offset,
        rtmr=rtmr,
        mr_index=mr_index,
        event_type=kind,
        digests=digests,
        event_data=payload,
        details=details,
    )
    return step, pos + 4 + size


def _rtmr_of(mr_index: int, kind: int) -> int | None:
    """The RTMR a record extends: none for EV_NO_ACTION or an index outside 1..4."""
    if kind == abi.EventType.EV_NO_ACTION:
        return None
    rtmr = mr_index - abi.MR_INDEX_RTMR0
    return rtmr if 0 <= rtmr < abi.RTMR_COUNT else None


class _Running:
    """The RTMRs of one bank as the events arrive, to give each step its running value."""

    def __init__(self, alg: int, size: int) -> None:
        self.alg = alg
        self.new = _hash_constructor(alg)
        self.registers = [bytes(size)] * abi.RTMR_COUNT

    def extend(self, step: Step) -> Step:
        digest = (step.digests or {}).get(self.alg)
        if step.rtmr is None or self.new is None:
            return step._replace(contents=digest)
        value = self.new(self.registers[step.rtmr] + (digest or b"")).digest()
        self.registers[step.rtmr] = value
        return step._replace(contents=digest, digest=value)


def _hash_constructor(alg: int) -> Callable[[bytes], Any] | None:
    """hashlib's constructor for a bank, or None where hashlib lacks it (SM3 without
    OpenSSL's, or an algorithm we have no name for)."""
    name = abi.HASHLIB_NAMES.get(alg)  # type: ignore[call-overload]
    if name is None or name not in hashlib.algorithms_available:
        return None
    return lambda data: hashlib.new(name, data)


# --------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------


def replayable_banks(log: EventLog) -> tuple[int, ...]:
    """The log's banks this Python can replay (SM3 needs hashlib's, from OpenSSL)."""
    return tuple(alg for alg in log.algorithms if _hash_constructor(alg) is not None)


def replay(log: EventLog, alg: int | None = None) -> tuple[bytes, bytes, bytes, bytes]:
    """RTMR0..3 as the log's events extend them in bank `alg` (the log's main bank by
    default: SHA-384 when present)."""
    alg = log.bank if alg is None else alg
    if alg not in log.algorithms:
        raise AttestationError(f"event log: no bank {alg:#06x} (it has {_banks(log)})")
    new = _hash_constructor(alg)
    if new is None:
        raise AttestationError(f"event log: this Python cannot compute bank {alg:#06x}")
    size = abi.DIGEST_SIZES.get(alg) or 0  # type: ignore[call-overload]
    registers = [bytes(size)] * abi.RTMR_COUNT
    for step in log.events:
        if step.rtmr is None:
            continue
        digest = (step.digests or {}).get(alg)
        if digest is None or len(digest) != size:
            raise AttestationError(
                f"event {step.number}: no {size}-byte digest in bank {alg:#06x}", step.file_offset
            )
        registers[step.rtmr] = new(registers[step.rtmr] + digest).digest()
    return registers[0], registers[1], registers[2], registers[3]


def _banks(log: EventLog) -> str:
    return ", ".join(abi.ALG_NAMES.get(a, f"{a:#06x}") for a in log.algorithms)  # type: ignore[call-overload]


def first_difference(
    replayed: Sequence[bytes], expected: Sequence[bytes | None]
) -> RtmrDifference | None:
    """The first RTMR whose replayed value differs from the expected one (an expected value
    of None is not checked: RTMR3 after a runtime extend, for one), or None."""
    for index, (have, want) in enumerate(zip(replayed, expected, strict=True)):
        if want is not None and have != want:
            return RtmrDifference(index, have, want)
    return None


# --------------------------------------------------------------------------------------
# dstack's JSON event list
# --------------------------------------------------------------------------------------


def event_log_doc(log: EventLog) -> dict[str, object]:
    """The log JSON-ready: its banks, each event that extends an RTMR (register, type,
    digest in the main bank, the register after it, what it is), and the replayed RTMRs."""
    return {
        "banks": [abi.ALG_NAMES.get(a, f"{a:#06x}") for a in log.algorithms],  # type: ignore[call-overload]
        "events": [event_json(step) for step in log.events if step.rtmr is not None],
        "replayed": [value.hex() for value in replay(log)],
    }


def event_checks(expected: Sequence[Step], log: EventLog) -> list[Check]:
    """Each RTMR's logged events against the ones a profile predicts, in order: the first
    that differs is named with the profile fields behind it. An event whose digest the
    profile cannot know is taken from the log, not checked."""
    checks = []
    for rtmr in range(BOOT_RTMRS):
        ours = [s for s in expected if s.rtmr == rtmr]
        logged = [s for s in log.events if s.rtmr == rtmr]
        problem, unchecked = _first_divergence(ours, logged)
        note = f" ({unchecked} taken from the log, not checked)" if unchecked else ""
        actual = problem or f"{len(ours)} events as predicted{note}"
        checks.append(check(f"event_log.rtmr{rtmr}.events", "as predicted", actual, not problem))
    return checks


def _first_divergence(ours: list[Step], logged: list[Step]) -> tuple[str | None, int]:
    """Where `logged` first leaves `ours` (None: nowhere), and how many events went
    unchecked before that."""
    unchecked = 0
    for want, have in zip_longest(ours, logged):
        if want is None:
            return (f"event {have.number} {have.label!r}: logged, not predicted (tdx.edk2: "
                    "another firmware release, or a boot the profile does not describe)",
                    unchecked)  # fmt: skip
        if have is None:
            return f"{want.label}: predicted, not in the log", unchecked
        if want.contents is None:
            unchecked += 1
        elif want.contents != have.contents:
            causes = ", ".join(event_causes(want))
            text = (f"event {have.number} {want.label}: the log has {_short(have.contents)}, "
                    f"the profile {_short(want.contents)} (check {causes})")  # fmt: skip
            return text, unchecked
    return None, unchecked


def _short(digest: bytes | None) -> str:
    return "nothing" if digest is None else digest.hex()[:16] + "…"


def read_event_log(data: bytes) -> EventLog:
    """A log as it is handed over: dstack's JSON list (it opens with `[` or `{`), or the CCEL
    binary, with or without its ACPI table, padded to the log area as firmware leaves it."""
    if data.lstrip()[:1] in (b"[", b"{"):
        return parse_json_log(data)
    return parse_ccel(data, allow_padding=True)


def parse_json_log(text: str | bytes) -> EventLog:
    """dstack's event log: a JSON list of {imr, event_type, digest, event, event_payload}
    (or an object holding it as `event_log`, as dstack's GetQuote answer does).

    `imr` is the RTMR (0..3), `digest` SHA-384 hex, `event_payload` hex. dstack strips the
    digests of its RTMR3 runtime events (type 0x08000001); they are recomputed as
    SHA-384(type as u32le || ":" || event || ":" || payload). A JSON log has no byte
    offsets: its errors name the event and key instead.
    """
    if len(text) > MAX_LOG_SIZE:
        raise AttestationError(f"event log JSON: more than {MAX_LOG_SIZE} bytes", MAX_LOG_SIZE)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise AttestationError(f"event log JSON: unreadable ({error})") from None
    return json_log(document)


def json_log(document: object) -> EventLog:
    """dstack's event log from its parsed JSON (see `parse_json_log`)."""
    try:
        if isinstance(document, dict) and isinstance(document.get("event_log"), str):
            document = json.loads(document["event_log"])
        elif isinstance(document, dict):
            document = document.get("event_log")
    except (ValueError, RecursionError) as error:
        raise AttestationError(f"event log JSON: unreadable ({error})") from None
    if not isinstance(document, list):
        raise AttestationError("event log JSON: not a list of events")
    bank = abi.Alg.TPM_ALG_SHA384
    running = _Running(bank, abi.DIGEST_SIZES[bank])
    events = [running.extend(_json_event(number, item)) for number, item in enumerate(document)]
    return EventLog(tuple(events), (bank,), bank)


def _json_event(number: int, item: object) -> Step:
    def fail(key: str, reason: str) -> AttestationError:
        return AttestationError(f"event log JSON: event {number}: {key}: {reason}")

    if not isinstance(item, dict):
        raise fail("event", "not an object")
    imr, kind = item.get("imr"), item.get("event_type")
    if not isinstance(imr, int) or isinstance(imr, bool) or not 0 <= imr < abi.RTMR_COUNT:
        raise fail("imr", f"{imr!r}, expected 0..3")
    if not isinstance(kind, int) or isinstance(kind, bool) or not 0 <= kind <= 0xFFFFFFFF:
        raise fail("event_type", f"{kind!r}, expected a 32-bit number")
    name, payload_hex, digest_hex = (item.get(k, "") for k in ("event", "event_payload", "digest"))
    if not isinstance(name, str):
        raise fail("event", "not a string")
    payload = _hex(payload_hex, lambda reason: fail("event_payload", reason))
    digest = _hex(digest_hex, lambda reason: fail("digest", reason))
    if not digest and kind == abi.DSTACK_RUNTIME_EVENT:
        digest = hashlib.sha384(_U32.pack(kind) + b":" + name.encode() + b":" + payload).digest()
    if len(digest) != abi.DIGEST_SIZES[abi.Alg.TPM_ALG_SHA384]:
        raise fail("digest", f"{len(digest)} bytes, expected 48 (SHA-384)")
    text = plain_text(payload)
    label = name or abi.event_type_name(kind)
    if name and text and len(text) <= 80:
        label = f"{name}: {text}"
    return Step(
        number=number,
        kind=StepKind.EVENT,
        label=one_line(label),
        gpa=0,
        size=len(payload),
        rtmr=imr,
        mr_index=imr + abi.MR_INDEX_RTMR0,
        event_type=kind,
        digests={abi.Alg.TPM_ALG_SHA384: digest},
        event_data=payload,
        details={"name": name, "payload": payload} if name or payload else {},
    )


def _hex(value: object, fail: Callable[[str], AttestationError]) -> bytes:
    if not isinstance(value, str):
        raise fail("not a string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise fail("not hex") from None
