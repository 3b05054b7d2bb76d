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
from typing import Any, NamedTuple

from cvmlaunch.abi import eventlog as abi
from cvmlaunch.abi.guid import guid_text
from cvmlaunch.errors import AttestationError
from cvmlaunch.plan.step import Step, StepKind

# The largest log accepted (LAML is 64 KiB..1 MiB in the logs we know).
MAX_LOG_SIZE = 16 * 1024 * 1024

_PADDING = re.compile(rb"[^\x00\xff]")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


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
        "events": [
            {
                "index": step.number,
                "rtmr": step.rtmr,
                "type": abi.event_type_name(step.event_type or 0),
                "digest": None if step.contents is None else step.contents.hex(),
                "rtmr_after": None if step.digest is None else step.digest.hex(),
                "label": step.label,
            }
            for step in log.events
            if step.rtmr is not None
        ],
        "replayed": [value.hex() for value in replay(log)],
    }


def read_event_log(data: bytes) -> EventLog:
    """A log as it is handed over: dstack's JSON list (it opens with `[` or `{`), or the CCEL
    binary, with or without its ACPI table, padded to the log area as firmware leaves it."""
    if data[:1] in (b"[", b"{") or data.lstrip()[:1] in (b"[", b"{"):
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
    text = _plain(payload)
    label = name or abi.event_type_name(kind)
    if name and text and len(text) <= 80:
        label = f"{name}: {text}"
    return Step(
        number=number,
        kind=StepKind.EVENT,
        label=_one_line(label),
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


# --------------------------------------------------------------------------------------
# Event data
# --------------------------------------------------------------------------------------

_E = abi.EventType
_STRING_EVENTS = frozenset(
    {
        _E.EV_POST_CODE,
        _E.EV_ACTION,
        _E.EV_EFI_ACTION,
        _E.EV_COMPACT_HASH,
        _E.EV_OMIT_BOOT_DEVICE_EVENTS,
    }
)
_VARIABLE_EVENTS = frozenset(
    {
        _E.EV_EFI_VARIABLE_DRIVER_CONFIG,
        _E.EV_EFI_VARIABLE_BOOT,
        _E.EV_EFI_VARIABLE_BOOT2,
        _E.EV_EFI_VARIABLE_AUTHORITY,
    }
)
_IMAGE_EVENTS = frozenset(
    {
        _E.EV_EFI_BOOT_SERVICES_APPLICATION,
        _E.EV_EFI_BOOT_SERVICES_DRIVER,
        _E.EV_EFI_RUNTIME_SERVICES_DRIVER,
    }
)
_TAG_NAMES = {
    abi.TAG_LOAD_OPTIONS: "LOADED_IMAGE::LoadOptions",
    abi.TAG_LINUX_INITRD: "Linux initrd",
}
_BOOT_OPTION = re.compile(r"Boot[0-9A-F]{4}")


def decode_event(kind: int, data: bytes) -> tuple[str, dict[str, object]]:
    """An event's data decoded by its type: a one-line text and the fields by name.

    Data that does not decode gives the type's name as text and `error` / `error_offset`
    (within the event data) in the fields.
    """
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return abi.event_type_name(kind), {}
    try:
        text, details = decoder(data)
    except AttestationError as error:
        return abi.event_type_name(kind), {"error": error.reason, "error_offset": error.offset}
    except UnicodeDecodeError as error:
        return abi.event_type_name(kind), {"error": "not text", "error_offset": error.start}
    return _one_line(text) or abi.event_type_name(kind), details


def _decode_string(data: bytes) -> tuple[str, dict[str, object]]:
    text = data.rstrip(b"\0").decode()
    return text, {"string": text}


def _decode_ipl(data: bytes) -> tuple[str, dict[str, object]]:
    # GRUB and shim log UTF-8 with a NUL; a UTF-16LE string has a zero in every odd byte.
    if len(data) >= 2 and len(data) % 2 == 0 and not any(data[1::2]):
        text = data.decode("utf-16-le").split("\0", 1)[0]
    else:
        text = data.split(b"\0", 1)[0].decode()
    return text, {"string": text}


def _decode_config_flags(data: bytes) -> tuple[str, dict[str, object]]:
    text = _plain(data) or _plain_utf16(data)
    if text is not None:
        return text, {"string": text}
    # Early TDVF: a NUL-padded 16-byte name, u32 length, then that many bytes (td_hob,
    # td_payload_info: the command line).
    if len(data) >= 20:
        name = _plain(data[:16])
        (length,) = _U32.unpack_from(data, 16)
        if name and length == len(data) - 20:
            body = _plain(data[20:])
            details: dict[str, object] = {"string": name, "data_length": length}
            if body:
                details["text"] = body
            return (f"{name}: {body}" if body else name), details
    raise AttestationError("neither text nor a named blob", 0)


def _described(data: bytes) -> tuple[str, int]:
    """A u8-length-prefixed description (BLOB2, HANDOFF_TABLES2) and the offset after it."""
    if not data:
        raise AttestationError("no description size", 0)
    end = 1 + data[0]
    if end > len(data):
        raise AttestationError(f"description of {data[0]} bytes, {len(data) - 1} left", 0)
    return data[1:end].rstrip(b"\0").decode(), end


def _decode_blob2(data: bytes) -> tuple[str, dict[str, object]]:
    text, pos = _described(data)
    if len(data) - pos != abi.BLOB2_TAIL.size:
        raise AttestationError("BlobBase and BlobLength do not end the event", pos)
    base, length = abi.BLOB2_TAIL.unpack_from(data, pos)
    return text, {"string": text, "blob_base": base, "blob_length": length}


def _decode_blob(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) != abi.BLOB2_TAIL.size:
        raise AttestationError("UEFI_PLATFORM_FIRMWARE_BLOB is 16 bytes", 0)
    base, length = abi.BLOB2_TAIL.unpack(data)
    return f"blob at {base:#x}, {length:#x} bytes", {"blob_base": base, "blob_length": length}


def _tables(data: bytes, pos: int) -> list[str]:
    if len(data) - pos < 8:
        raise AttestationError("no NumberOfTables", pos)
    (count,) = abi.TABLE_COUNT.unpack_from(data, pos)
    pos += 8
    if count != (len(data) - pos) / abi.CONFIGURATION_TABLE.size:
        raise AttestationError(f"{count} tables do not fill the event", pos - 8)
    return [guid_text(data[p : p + 16]) for p in range(pos, len(data), 24)]


def _decode_handoff2(data: bytes) -> tuple[str, dict[str, object]]:
    text, pos = _described(data)
    return text, {"string": text, "tables": _tables(data, pos)}


def _decode_handoff(data: bytes) -> tuple[str, dict[str, object]]:
    tables = _tables(data, 0)
    return f"{len(tables)} configuration tables", {"tables": tables}


def _decode_variable(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) < abi.VARIABLE_DATA_HEADER_SIZE:
        raise AttestationError("shorter than UEFI_VARIABLE_DATA's 32-byte header", 0)
    guid, name_chars, data_length = abi.VARIABLE_DATA_HEADER.unpack_from(data, 0)
    pos = abi.VARIABLE_DATA_HEADER_SIZE
    if name_chars * 2 + data_length != len(data) - pos:
        raise AttestationError(
            f"UnicodeNameLength {name_chars} and VariableDataLength {data_length} do not "
            f"fill the {len(data) - pos} bytes after the header",
            16,
        )
    name = data[pos : pos + 2 * name_chars].decode("utf-16-le")
    value = data[pos + 2 * name_chars :]
    details: dict[str, object] = {
        "variable_name": guid_text(guid),
        "unicode_name": name,
        "variable_data": value,
    }
    if guid == abi.EFI_GLOBAL_VARIABLE and name == "BootOrder" and len(value) % 2 == 0:
        order = [n for (n,) in _U16.iter_unpack(value)]
        details["boot_order"] = order
        return f"BootOrder = {','.join(f'{n:04X}' for n in order)}", details
    if guid == abi.EFI_GLOBAL_VARIABLE and _BOOT_OPTION.fullmatch(name):
        try:
            option = _load_option(value)
        except (AttestationError, UnicodeDecodeError):
            option = None  # a Boot#### that is not an EFI_LOAD_OPTION stays bytes
        if option is not None:
            details["load_option"] = option
            text = f"{name}: {option['description']} {'/'.join(option['device_path'])}"
            if option.get("command_line"):
                text += f" {option['command_line']}"
            return text, details
    if len(value) <= 8:
        return f"{name} = {value.hex() or '(empty)'}", details
    return f"{name}: {len(value)} bytes", details


def _load_option(data: bytes) -> dict[str, Any]:
    """EFI_LOAD_OPTION: attributes, description, device path, optional data."""
    if len(data) < abi.LOAD_OPTION_HEADER_SIZE:
        raise AttestationError("shorter than EFI_LOAD_OPTION's header", 0)
    attributes, path_length = abi.LOAD_OPTION_HEADER.unpack_from(data, 0)
    pos = abi.LOAD_OPTION_HEADER_SIZE
    end = _utf16_end(data, pos)
    description = data[pos:end].decode("utf-16-le")
    pos = end + 2
    if path_length > len(data) - pos:
        raise AttestationError("FilePathListLength beyond the option", 4)
    option: dict[str, Any] = {
        "attributes": attributes,
        "description": description,
        "device_path": device_path_text(data[pos : pos + path_length]),
    }
    optional = data[pos + path_length :]
    option["optional_data"] = optional
    if optional and len(optional) % 2 == 0:
        try:
            line = optional.decode("utf-16-le").rstrip("\0")
        except UnicodeDecodeError:
            line = ""
        if line.isprintable():
            option["command_line"] = line
    return option


def _utf16_end(data: bytes, pos: int) -> int:
    """The offset of the UTF-16 NUL that ends the string at `pos`."""
    for end in range(pos, len(data) - 1, 2):
        if data[end] == 0 and data[end + 1] == 0:
            return end
    raise AttestationError("unterminated UTF-16 string", pos)


def _decode_image(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) < abi.IMAGE_LOAD_EVENT_SIZE:
        raise AttestationError("shorter than UEFI_IMAGE_LOAD_EVENT's 32 bytes", 0)
    base, length, link, path_length = abi.IMAGE_LOAD_EVENT.unpack_from(data, 0)
    pos = abi.IMAGE_LOAD_EVENT_SIZE
    if path_length != len(data) - pos:
        raise AttestationError(f"LengthOfDevicePath {path_length} does not end the event", 24)
    path = device_path_text(data[pos:])
    details: dict[str, object] = {
        "image_base": base,
        "image_length": length,
        "link_time_address": link,
        "device_path": path,
    }
    text = "/".join(path) if path else f"image at {base:#x}, {length:#x} bytes"
    return text, details


def _decode_gpt(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) < abi.GPT_HEADER_SIZE + 8 or data[:8] != abi.GPT_SIGNATURE:
        raise AttestationError("not a UEFI_GPT_DATA ('EFI PART' header)", 0)
    fields = abi.GPT_HEADER.unpack_from(data, 0)
    disk, entry_size = guid_text(fields[8]), fields[11]
    (count,) = struct.unpack_from("<Q", data, abi.GPT_HEADER_SIZE)
    pos = abi.GPT_HEADER_SIZE + 8
    if entry_size < abi.GPT_ENTRY_HEAD.size + abi.GPT_ENTRY_NAME_SIZE or (
        count * entry_size != len(data) - pos
    ):
        raise AttestationError(f"{count} partitions of {entry_size} bytes do not fill it", pos - 8)
    partitions = []
    for at in range(pos, len(data), entry_size):
        kind, unique, first, last, _ = abi.GPT_ENTRY_HEAD.unpack_from(data, at)
        name = data[at + 56 : at + 56 + abi.GPT_ENTRY_NAME_SIZE].decode("utf-16-le")
        partitions.append(
            {
                "type": guid_text(kind),
                "unique": guid_text(unique),
                "first_lba": first,
                "last_lba": last,
                "name": name.split("\0", 1)[0],
            }
        )
    return f"GPT disk {disk}, {count} partitions", {"disk_guid": disk, "partitions": partitions}


def _decode_tag(data: bytes) -> tuple[str, dict[str, object]]:
    text = _plain(data)
    if text is not None:  # OVMF's own LoadOptions event: the bare name, no tag header
        return text, {"string": text}
    if len(data) < abi.TAGGED_EVENT_HEADER_SIZE:
        raise AttestationError("shorter than TCG_PCClientTaggedEvent's header", 0)
    tag, size = abi.TAGGED_EVENT.unpack_from(data, 0)
    if size != len(data) - abi.TAGGED_EVENT_HEADER_SIZE:
        raise AttestationError(f"taggedEventDataSize {size} does not end the event", 4)
    body = data[abi.TAGGED_EVENT_HEADER_SIZE :]
    text = body.decode(errors="replace").replace("\0", "")
    details: dict[str, object] = {"tagged_event_id": tag, "string": text}
    return text or _TAG_NAMES.get(tag, f"tag {tag:#010x}"), details


def _decode_separator(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) != 4:
        return f"separator ({len(data)} bytes)", {}
    (value,) = _U32.unpack(data)
    return f"separator {value:08x}", {"value": value}


def _decode_no_action(data: bytes) -> tuple[str, dict[str, object]]:
    for signature in abi.NO_ACTION_SIGNATURES:
        if data.startswith(signature):
            text = signature.rstrip(b"\0").decode()
            return text, {"signature": text}
    return "EV_NO_ACTION", {}


_Decoder = Callable[[bytes], tuple[str, dict[str, object]]]
_DECODERS: dict[int, _Decoder] = {
    **dict.fromkeys(_STRING_EVENTS, _decode_string),
    **dict.fromkeys(_VARIABLE_EVENTS, _decode_variable),
    **dict.fromkeys(_IMAGE_EVENTS, _decode_image),
    _E.EV_IPL: _decode_ipl,
    _E.EV_PLATFORM_CONFIG_FLAGS: _decode_config_flags,
    _E.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _decode_blob2,
    _E.EV_EFI_PLATFORM_FIRMWARE_BLOB: _decode_blob,
    _E.EV_EFI_HANDOFF_TABLES2: _decode_handoff2,
    _E.EV_EFI_HANDOFF_TABLES: _decode_handoff,
    _E.EV_EFI_GPT_EVENT: _decode_gpt,
    _E.EV_EVENT_TAG: _decode_tag,
    _E.EV_SEPARATOR: _decode_separator,
    _E.EV_NO_ACTION: _decode_no_action,
}


# --------------------------------------------------------------------------------------
# Device paths (UEFI 2.10 §10.3, text as §10.6 and edk2's DevicePathToText write it)
# --------------------------------------------------------------------------------------


def device_path_text(data: bytes) -> list[str]:
    """The nodes of a device path (list) as text, up to its END node; an END-instance node
    is ",". Nodes we do not name are `Path(type,subtype,hex)`."""
    nodes: list[str] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < abi.DEVICE_PATH_NODE_SIZE:
            raise AttestationError("truncated device path node", pos)
        kind, sub, length = abi.DEVICE_PATH_NODE.unpack_from(data, pos)
        if not abi.DEVICE_PATH_NODE_SIZE <= length <= len(data) - pos:
            raise AttestationError(f"device path node length {length}", pos + 2)
        body = data[pos + 4 : pos + length]
        pos += length
        if kind == abi.DevicePathType.END:
            if sub == abi.END_INSTANCE:
                nodes.append(",")
                continue
            break
        nodes.append(_node_text(kind, sub, body))
    return nodes


def _guid_upper(raw: bytes) -> str:
    return guid_text(raw).upper()


def _node_text(kind: int, sub: int, body: bytes) -> str:
    text = _known_node(kind, sub, body)
    return text if text is not None else f"Path({kind},{sub},{body.hex()})"


def _known_node(kind: int, sub: int, body: bytes) -> str | None:
    size = len(body)
    T = abi.DevicePathType  # noqa: N806 (a short name for the enum)
    if kind == T.HARDWARE and sub == abi.HW_PCI and size == 2:
        return f"Pci({body[1]:#x},{body[0]:#x})"
    if kind == T.ACPI and sub == abi.ACPI_ACPI and size == 8:
        hid, uid = struct.unpack("<II", body)
        if hid & 0xFFFF == abi.EISA_PNP and hid >> 16 == abi.PNP_PCI_ROOT:
            return f"PciRoot({uid:#x})"
        if hid & 0xFFFF == abi.EISA_PNP and hid >> 16 == abi.PNP_PCIE_ROOT:
            return f"PcieRoot({uid:#x})"
        if hid & 0xFFFF == abi.EISA_PNP:
            return f"Acpi(PNP{hid >> 16:04X},{uid:#x})"
        return f"Acpi({hid:#x},{uid:#x})"
    if kind == T.MESSAGING and sub == abi.MSG_SCSI and size == 4:
        return "Scsi({:#x},{:#x})".format(*struct.unpack("<HH", body))
    if kind == T.MESSAGING and sub == abi.MSG_USB and size == 2:
        return f"USB({body[0]:#x},{body[1]:#x})"
    if kind == T.MESSAGING and sub == abi.MSG_SATA and size == 6:
        return "Sata({:#x},{:#x},{:#x})".format(*struct.unpack("<HHH", body))
    if kind == T.MESSAGING and sub == abi.MSG_NVME and size == 12:
        (namespace,) = _U32.unpack_from(body, 0)
        return f"NVMe({namespace:#x},{'-'.join(f'{b:02X}' for b in body[4:])})"
    if kind == T.MESSAGING and sub == abi.MSG_MAC and size == 33:
        return f"MAC({body[:6].hex().upper()},{body[32]:#x})"
    if sub in _VENDOR_NODES.get(kind, ()) and size >= 16:
        extra = f",{body[16:].hex().upper()}" if size > 16 else ""
        return f"{_VENDOR_NODES[kind][sub]}({_guid_upper(body[:16])}{extra})"
    if kind == T.MEDIA and sub == abi.MEDIA_HARDDRIVE and size == abi.HARDDRIVE.size:
        number, start, length, signature, _mbr, signature_type = abi.HARDDRIVE.unpack(body)
        if signature_type == 2:
            return f"HD({number},GPT,{_guid_upper(signature)},{start:#x},{length:#x})"
        if signature_type == 1:
            mbr_id = _U32.unpack_from(signature, 0)[0]
            return f"HD({number},MBR,{mbr_id:#010x},{start:#x},{length:#x})"
        return None
    if kind == T.MEDIA and sub == abi.MEDIA_CDROM and size == 20:
        return "CDROM({:#x},{:#x},{:#x})".format(*struct.unpack("<IQQ", body))
    if kind == T.MEDIA and sub == abi.MEDIA_FILEPATH and size % 2 == 0:
        try:
            return body.decode("utf-16-le").split("\0", 1)[0]
        except UnicodeDecodeError:
            return None
    if kind == T.MEDIA and sub == abi.MEDIA_RELATIVE_OFFSET and size == 20:
        return "Offset({1:#x},{2:#x})".format(*struct.unpack("<IQQ", body))
    return None


_VENDOR_NODES: dict[int, dict[int, str]] = {
    abi.DevicePathType.HARDWARE: {abi.HW_VENDOR: "VenHw"},
    abi.DevicePathType.MESSAGING: {abi.MSG_VENDOR: "VenMsg"},
    abi.DevicePathType.MEDIA: {
        abi.MEDIA_VENDOR: "VenMedia",
        abi.MEDIA_PROTOCOL: "Media",
        abi.MEDIA_PIWG_FW_FILE: "FvFile",
        abi.MEDIA_PIWG_FW_VOL: "Fv",
    },
}


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x09: "\\t"}


def _one_line(text: str) -> str:
    """`text` with control characters escaped, so that a label is one line."""
    return text.translate(_CONTROL)


def _plain(data: bytes) -> str | None:
    """`data` as text when it is printable UTF-8 (trailing NULs aside), else None."""
    try:
        text = data.rstrip(b"\0").decode()
    except UnicodeDecodeError:
        return None
    return text if text and text.isprintable() else None


def _plain_utf16(data: bytes) -> str | None:
    """`data` as text when it is printable UTF-16LE (trailing NULs aside), else None."""
    data = data.rstrip(b"\0")
    if len(data) % 2:
        data += b"\0"
    if any(data[1::2]):  # only the Latin-1 range: binary data is not taken for text
        return None
    try:
        text = data.decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    return text if text and text.isprintable() else None
