"""The CC event log: every real log in tests/vectors/eventlog parses and replays to the RTMRs
recorded for it (replayed.json), the upstream negative cases fail where they say, trustee's
parsed-event documents agree with our decoding, dstack's JSON log and go-tdx-guest's log
replay to their quotes' RTMRs; and fuzzing, in which only AttestationError may escape.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmlaunch.abi import eventlog as abi
from cvmlaunch.abi import tdx_quote
from cvmlaunch.abi.guid import guid
from cvmlaunch.attest import event_data
from cvmlaunch.attest import eventlog as el
from cvmlaunch.errors import AttestationError
from cvmlaunch.plan.step import StepKind

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "eventlog"
RECORDS: list[dict[str, Any]] = json.loads((VECTORS / "replayed.json").read_text())
BY_FILE = {record["file"]: record for record in RECORDS}
SHA384 = abi.Alg.TPM_ALG_SHA384


def log_bytes(name: str) -> bytes:
    """A fixture log as published (trustee's 1 MiB CCEL_data is stored cut to 16 KiB: the
    rest is zero fill, restored here and checked against the recorded SHA-256)."""
    if name == "trustee/CCEL_data":
        head = (VECTORS / "trustee/CCEL_data.head16k").read_bytes()
        return head + bytes(BY_FILE[name]["size"] - len(head))
    return (VECTORS / name).read_bytes()


def expected_rtmrs(record: dict[str, Any]) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(record["replayed"][f"rtmr{i}"]) for i in range(4))


def quote_rtmrs(quote: bytes) -> tuple[bytes, ...]:
    """RTMR0..3 of a v4/v5 TDX quote, read at the offsets abi.tdx_quote gives."""
    version = struct.unpack_from("<H", quote, 0)[0]
    body = tdx_quote.HEADER_SIZE + (tdx_quote.BODY_DESCRIPTOR_SIZE if version == 5 else 0)
    size = tdx_quote.MEASUREMENT_SIZE
    offsets = tdx_quote.TD_REPORT_BODY_OFFSETS
    return tuple(
        quote[body + offsets[f"RTMR{i}"] : body + offsets[f"RTMR{i}"] + size] for i in range(4)
    )


# --------------------------------------------------------------------------------------
# The real logs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("record", RECORDS, ids=[r["file"] for r in RECORDS])
def test_every_fixture_log_replays_to_its_recorded_rtmrs(record: dict[str, Any]) -> None:
    data = log_bytes(record["file"])
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    log = el.parse_ccel(data, allow_padding=True)
    assert el.replay(log) == expected_rtmrs(record)
    for name, value in record.get("upstream_expected", {}).items():
        assert el.replay(log)[int(name[-1])].hex() == value
    assert len(log.events) == record["events"]
    assert log.end == record["log_bytes_used"]
    assert log.end + log.padding == len(data)
    spec = record["spec_id"]
    assert log.spec_id is not None
    assert log.spec_id.mr_index == spec["pcr"]
    assert ".".join(map(str, log.spec_id.version)) == spec["spec_version"]
    assert log.spec_id.uintn_size == spec["uintn_size"]
    assert {f"{a:#x}": n for a, n in log.spec_id.algorithms.items()} == spec["algorithms"]
    # Every step is an EVENT whose running value is the replay so far, and whose data decoded.
    last = list(expected_rtmrs(record))
    for step in reversed(log.events):
        assert step.kind is StepKind.EVENT
        assert not (step.details or {}).get("error"), (step.number, step.details)
        if step.rtmr is not None and last[step.rtmr] is not None:
            assert step.digest == last[step.rtmr]
            last[step.rtmr] = None  # type: ignore[call-overload]


def test_a_log_cut_to_its_events_needs_no_padding_and_a_padded_one_does() -> None:
    """go-eventlog's dupe-separator pair: upstream refuses the padded log unless
    AllowPadding; the log cut to its events parses either way, to the same RTMRs."""
    padded = log_bytes("go-eventlog/cos-113-intel-tdx-dupe-separator.bin")
    cut = log_bytes("go-eventlog/cos-113-intel-tdx-dupe-separator-unpadded.bin")
    with pytest.raises(AttestationError, match="padding after its last event") as caught:
        el.parse_ccel(padded)
    assert caught.value.offset == len(cut)
    assert el.replay(el.parse_ccel(padded, allow_padding=True)) == el.replay(el.parse_ccel(cut))
    assert el.parse_ccel(cut, allow_padding=True).padding == 0
    # The separator that makes its name: two EV_SEPARATOR events in RTMR0.
    separators = [
        s.rtmr for s in el.parse_ccel(cut).events if s.event_type == abi.EventType.EV_SEPARATOR
    ]
    assert separators == [0, 0]


def test_data_after_the_end_marker_is_refused() -> None:
    cut = log_bytes("go-eventlog/CCEL_unpadded.data.bin")
    for fill in (b"\xff", b"\x00"):
        el.parse_ccel(cut + fill * 64, allow_padding=True)
        with pytest.raises(AttestationError, match="data after its end marker") as caught:
            el.parse_ccel(cut + fill * 16 + b"\x01" + fill * 7, allow_padding=True)
        assert caught.value.offset == len(cut) + 16


@pytest.mark.parametrize(
    ("name", "rtmr", "position", "new"),
    [("trustee/CCEL_data_gcp", 0, -1, "d"), ("trustee/CCEL_data", 1, 0, "2")],
)
def test_trustee_negative_cases_fail_at_the_rtmr_they_name(
    name: str, rtmr: int, position: int, new: str
) -> None:
    """trustee's test_rtmr_integrity: one nibble of one reference RTMR changed."""
    expected = [r.hex() for r in expected_rtmrs(BY_FILE[name])]
    old = expected[rtmr][position]
    assert old == {"d": "f", "2": "0"}[new]  # the nibble upstream changes
    digits = list(expected[rtmr])
    digits[position] = new
    expected[rtmr] = "".join(digits)
    replayed = el.replay(el.parse_ccel(log_bytes(name), allow_padding=True))
    difference = el.first_difference(replayed, [bytes.fromhex(e) for e in expected])
    assert difference is not None
    assert difference.rtmr == rtmr
    assert str(difference).startswith(f"RTMR{rtmr}: the event log replays to ")
    assert el.first_difference(replayed, expected_rtmrs(BY_FILE[name])) is None
    assert el.first_difference(replayed, [None, None, None, None]) is None


def test_go_tdx_guest_log_replays_to_its_quote() -> None:
    table = (VECTORS / "go-tdx-guest/ccel_table.dat").read_bytes()
    data = log_bytes("go-tdx-guest/ccel_data.dat")
    quote = (VECTORS / "go-tdx-guest/cos-113-tdx-quote.dat").read_bytes()
    parsed = el.parse_ccel_table(table)
    assert (parsed.cc_type, parsed.laml, parsed.lasa) == (abi.CcType.TDX, 0x40000, 0xBEDBF000)
    with_table = el.parse_ccel(table + data, allow_padding=True)
    assert with_table.table == parsed
    assert with_table.events[0].file_offset == abi.CCEL_TABLE_SIZE + 65
    assert el.first_difference(el.replay(with_table), quote_rtmrs(quote)) is None
    # One byte past LAML is refused: the log area is LAML bytes.
    with pytest.raises(AttestationError, match="LAML") as caught:
        el.parse_ccel(table + data + b"\xff", allow_padding=True)
    assert caught.value.offset == abi.CCEL_TABLE_SIZE + 0x40000


def test_ccel_tables() -> None:
    for name in ("go-eventlog/CCEL.bin", "go-eventlog/cos-113-intel-tdx.table.bin"):
        table = el.parse_ccel_table((VECTORS / name).read_bytes())
        assert table.length == 56
        assert table.cc_type == abi.CcType.TDX
        assert table.laml > 0
    good = (VECTORS / "go-tdx-guest/ccel_table.dat").read_bytes()
    broken = bytearray(good)
    broken[abi.CCEL_TABLE_OFFSETS["Checksum"]] ^= 1
    with pytest.raises(AttestationError, match="checksum") as caught:
        el.parse_ccel_table(bytes(broken))
    assert caught.value.offset == abi.CCEL_TABLE_OFFSETS["Checksum"]
    with pytest.raises(AttestationError, match="56") as caught:
        el.parse_ccel_table(good[:40])


def test_sm3_log_replays_in_its_own_bank() -> None:
    """Hygon CSV's SM3 log (no RTMRs published): parsed, and replayed in the SM3 bank where
    hashlib has SM3; its digests equal trustee's."""
    log = el.parse_ccel(log_bytes("trustee/CCEL_data_csv"), allow_padding=True)
    assert log.algorithms == (abi.Alg.TPM_ALG_SM3_256,)
    assert log.bank == abi.Alg.TPM_ALG_SM3_256
    if "sm3" not in hashlib.algorithms_available:
        assert el.replayable_banks(log) == ()
        pytest.skip("hashlib has no SM3 here: the log parses but does not replay")
    registers = el.replay(log)
    assert all(len(r) == 32 for r in registers)
    assert registers[3] == bytes(32)
    with pytest.raises(AttestationError, match="no bank"):
        el.replay(log, SHA384)


def test_dstack_json_log_replays_to_its_quote() -> None:
    document = (VECTORS / "dstack/tdx-lite-getquote.json").read_text()
    quote = (VECTORS / "dstack/tdx-lite-quote.bin").read_bytes()
    assert bytes.fromhex(json.loads(document)["quote"]) == quote
    log = el.parse_json_log(document)
    assert el.replay(log) == quote_rtmrs(quote)
    # The stripped RTMR3 digests are recomputed from the event name and payload.
    app = next(s for s in log.events if s.label.startswith("app-id"))
    assert app.rtmr == 3
    assert app.event_type == abi.DSTACK_RUNTIME_EVENT
    assert app.event_data is not None
    measured = struct.pack("<I", abi.DSTACK_RUNTIME_EVENT) + b":app-id:" + app.event_data
    assert app.contents == hashlib.sha384(measured).digest()
    # A list alone parses the same; a boot event's digest is kept as given.
    events = json.loads(json.loads(document)["event_log"])
    assert el.parse_json_log(json.dumps(events)) == log
    assert log.events[0].contents == bytes.fromhex(events[0]["digest"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"imr": 4}, "imr: 4, expected 0..3"),
        ({"imr": True}, "imr"),
        ({"event_type": -1}, "event_type"),
        ({"digest": "zz"}, "digest: not hex"),
        ({"digest": "00"}, "digest: 1 bytes, expected 48"),
        ({"event_payload": 5}, "event_payload: not a string"),
        ({"digest": "", "event_type": 10}, "digest: 0 bytes"),
    ],
)
def test_json_log_errors_name_the_event_and_key(change: dict[str, object], message: str) -> None:
    event = {"imr": 0, "event_type": 4, "digest": "00" * 48, "event": "", "event_payload": ""}
    with pytest.raises(AttestationError, match=re.escape(f"event 1: {message}")):
        el.parse_json_log(json.dumps([event, event | change]))


@pytest.mark.parametrize("text", ["", "{", "[" * 100_000, "3", '{"event_log": 3}', "[3]"])
def test_unusable_json_is_one_attestation_error(text: str) -> None:
    with pytest.raises(AttestationError, match="event log JSON"):
        el.parse_json_log(text)


# --------------------------------------------------------------------------------------
# trustee's parsed-event documents, field for field
# --------------------------------------------------------------------------------------

GOLDEN = sorted(p.name.removesuffix("_out.json") for p in (VECTORS / "trustee").glob("*_out.json"))


def trustee_guid(text: str) -> bytes:
    """trustee prints a GUID's 16 bytes in storage order, grouped 8-4-4-4-12."""
    return bytes.fromhex(text.replace("-", ""))


def trustee_node(text: str) -> str:
    """trustee's device path node text in the UEFI/edk2 form we print."""
    if m := re.fullmatch(r"ACPI\(PNP0A03,(\d+)\)", text):
        return f"PciRoot({int(m[1]):#x})"
    if m := re.fullmatch(r"Pci\((\d+),(\d+)\)", text):  # trustee: (function, device)
        return f"Pci({int(m[2]):#x},{int(m[1]):#x})"
    if m := re.fullmatch(r"File\((.*)\)", text, re.S):
        return m[1]
    if m := re.fullmatch(r"VenMedia\((.*),\)", text):
        return f"VenMedia({m[1]})"
    return text


def golden_pairs() -> Iterator[tuple[str, dict[str, Any], Any]]:
    for name in GOLDEN:
        data = log_bytes(f"trustee/{name}")
        log = el.parse_ccel(data, allow_padding=True)
        golden = json.loads((VECTORS / f"trustee/{name}_out.json").read_text())
        entries = golden["uefi_event_logs"]
        assert len(entries) == len(log.events), name
        for entry, step in zip(entries, log.events, strict=True):
            yield f"{name}#{step.number}", entry, step


def test_trustee_documents_match_our_decoding_field_for_field() -> None:
    compared: dict[str, int] = {}

    def same(where: str, field: str, theirs: object, ours: object) -> None:
        assert theirs == ours, (where, field, theirs, ours)
        compared[field] = compared.get(field, 0) + 1

    for where, entry, step in golden_pairs():
        details = step.details or {}
        same(where, "index", entry["index"], step.mr_index)
        same(where, "type_name", entry["type_name"], abi.event_type_name(step.event_type))
        digests = [
            {"alg": abi.ALG_NAMES[abi.Alg(a)], "digest": d.hex()} for a, d in step.digests.items()
        ]
        same(where, "digests", entry["digests"], digests)
        same(where, "event", base64.b64decode(entry["event"]), step.event_data)
        theirs = entry["details"]
        if "string" in theirs and "string" in details:
            ours = details["string"]
            if (
                step.event_type == abi.EventType.EV_PLATFORM_CONFIG_FLAGS
                and "data_length" in details
            ):
                # trustee strips the control bytes of an early-TDVF named blob and keeps
                # the rest: its text starts with the name we read (or is empty: not UTF-8).
                assert theirs["string"] == "" or theirs["string"].startswith(str(ours)), where
            elif entry["type_name"] == "EV_IPL" and step.event_data.startswith(b".\0"):
                # A UTF-16 UKI section name (".linux"): trustee drops the dot.
                same(where, "string", theirs["string"], str(ours).removeprefix("."))
            else:
                same(where, "string", theirs["string"], ours)
        if "variable_name" in theirs:
            same(
                where,
                "variable_name",
                trustee_guid(theirs["variable_name"]),
                guid(str(details["variable_name"])),
            )
            same(where, "unicode_name", theirs["unicode_name"], details["unicode_name"])
            same(
                where,
                "unicode_name_length",
                theirs["unicode_name_length"],
                len(str(details["unicode_name"])),
            )
            value = details["variable_data"]
            assert isinstance(value, bytes)
            same(where, "variable_data", base64.b64decode(theirs["variable_data"]), value)
            same(where, "variable_data_length", theirs["variable_data_length"], len(value))
        if "device_paths" in theirs:
            ours_path = details["device_path"]
            assert isinstance(ours_path, list)
            assert len(theirs["device_paths"]) == len(ours_path), where
            for their_node, our_node in zip(theirs["device_paths"], ours_path, strict=True):
                if not their_node.startswith("Path("):  # a node trustee does not name
                    same(where, "device_paths", trustee_node(their_node), our_node)
        elif entry["type_name"] == "EV_EFI_BOOT_SERVICES_APPLICATION":
            assert details["device_path"] == [], where
    # Every kind of field was compared, many times.
    assert compared["index"] == sum(
        len(json.loads((VECTORS / f"trustee/{n}_out.json").read_text())["uefi_event_logs"])
        for n in GOLDEN
    )
    for field in ("string", "variable_name", "variable_data", "device_paths"):
        assert compared[field] >= 10, (field, compared)


def test_our_decoding_of_known_events() -> None:
    log = el.parse_ccel(log_bytes("go-eventlog/CCEL_unpadded.data.bin"))
    labels = [(s.rtmr, s.label) for s in log.events]
    assert (0, "TdxTable") in labels
    assert (0, "SecureBoot = 00") in labels
    assert (0, "BootOrder = 0000") in labels
    assert (1, "Calling EFI Application from Boot Option") in labels
    boot = next(s for s in log.events if s.label.startswith("Boot0000"))
    option = (boot.details or {})["load_option"]
    assert isinstance(option, dict)
    assert option["attributes"] == 0x109
    assert option["description"] == "UiApp"
    assert option["device_path"] == [
        "Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)",
        "FvFile(462CAA21-7614-4503-836E-8AB6F4662331)",
    ]
    kernel = next(s for s in log.events if s.rtmr == 1)
    assert kernel.label == "VenMedia(1428F772-B64A-441E-B8C3-9EBDD7F893C7)/kernel"
    tags = [(s.rtmr, s.label) for s in log.events if s.event_type == abi.EventType.EV_EVENT_TAG]
    assert tags == [(2, "LOADED_IMAGE::LoadOptions")]
    separators = [s.rtmr for s in log.events if s.event_type == abi.EventType.EV_SEPARATOR]
    assert separators == [0, 0]  # edk2 before stable202411: ReadyToBoot's into RTMR0


def test_load_option_with_a_command_line() -> None:
    file = "\\vmlinuz\0".encode("utf-16-le")
    path = (
        bytes.fromhex("0404") + struct.pack("<H", 4 + len(file)) + file + bytes.fromhex("7fff0400")
    )
    description = "Linux\0".encode("utf-16-le")
    cmdline = "console=ttyS0 quiet\0".encode("utf-16-le")
    option = struct.pack("<IH", 1, len(path)) + description + path + cmdline
    name = "Boot0001".encode("utf-16-le")
    data = abi.EFI_GLOBAL_VARIABLE + struct.pack("<QQ", 8, len(option)) + name + option
    label, details = event_data.decode_event(abi.EventType.EV_EFI_VARIABLE_BOOT, data)
    assert label == "Boot0001: Linux \\vmlinuz console=ttyS0 quiet"
    load = details["load_option"]
    assert isinstance(load, dict)
    assert load["command_line"] == "console=ttyS0 quiet"


def test_undecodable_event_data_keeps_the_event() -> None:
    label, details = event_data.decode_event(abi.EventType.EV_EFI_VARIABLE_BOOT, b"\x01" * 40)
    assert label == "EV_EFI_VARIABLE_BOOT"
    assert details["error_offset"] == 16
    label, details = event_data.decode_event(0x12345678, b"anything")
    assert (label, details) == ("0x12345678", {})


def test_out_of_range_mr_index_and_no_action_are_not_replayed() -> None:
    data = bytearray(log_bytes("go-eventlog/CCEL_unpadded.data.bin"))
    log = el.parse_ccel(bytes(data))
    first = log.events[0]
    assert first.file_offset is not None
    struct.pack_into("<I", data, first.file_offset, 7)  # MR index 7: no RTMR
    moved = el.parse_ccel(bytes(data))
    assert moved.events[0].rtmr is None
    assert moved.events[0].mr_index == 7
    assert el.replay(moved)[1:] == el.replay(log)[1:]
    assert el.replay(moved)[0] != el.replay(log)[0]
    gke = el.parse_ccel(log_bytes("trustee/CCEL_data_grub_gke"), allow_padding=True)
    no_action = [s for s in gke.events if s.event_type == abi.EventType.EV_NO_ACTION]
    assert no_action
    assert all(s.rtmr is None and s.digest is None for s in no_action)
    assert no_action[0].label == "SP800-155 Event3"


# --------------------------------------------------------------------------------------
# Malformed logs, pinned
# --------------------------------------------------------------------------------------

SMALL = log_bytes("go-eventlog/CCEL_unpadded.data.bin")


@pytest.mark.parametrize(
    ("mutate", "message", "offset"),
    [
        (lambda d: d[:20], "too short for its first record", 0),
        (lambda d: d[:4] + b"\x02" + d[5:], "first record is EV_UNUSED", 4),
        (lambda d: d[:32] + b"Spec ID Event02\0" + d[48:], "Spec ID signature", 32),
        (lambda d: d[:28] + b"\xff\xff\x00\x00" + d[32:], "Spec ID event of 65535 bytes", 28),
        (lambda d: d[:56] + b"\x00\x00\x00\x00" + d[60:], "lists 0 algorithms", 56),
        (lambda d: d[:62] + b"\x20\x00" + d[64:], "a 32-byte digest", 62),
        (lambda d: d[:73] + b"\x02\x00\x00\x00" + d[77:], "2 digests", 73),
        (lambda d: d[:77] + b"\x0b\x00" + d[79:], "algorithm 0x000b, not in the Spec ID", 77),
        (lambda d: d[:127] + b"\xff\xff\x00\x00" + d[131:], "event data of 65535", 127),
        (lambda d: d[: 65 + 30], "truncated 48-byte digest", 79),
        (lambda d: d[:70], "truncated record header", 65),
    ],
)
def test_malformed_logs_name_the_offset(
    mutate: Callable[[bytes], bytes], message: str, offset: int
) -> None:
    with pytest.raises(AttestationError, match=re.escape(message)) as caught:
        el.parse_ccel(mutate(SMALL))
    assert caught.value.offset == offset
    assert f"(at offset {offset:#x})" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_oversized_log_is_refused_before_parsing() -> None:
    with pytest.raises(AttestationError, match="more than the") as caught:
        el.parse_ccel(bytes(el.MAX_LOG_SIZE + 1))
    assert caught.value.offset == el.MAX_LOG_SIZE


def test_a_mib_of_junk_is_refused_at_once() -> None:
    rng = __import__("random").Random(14)
    junk = rng.randbytes(1 << 20)
    started = time.perf_counter()
    for candidate in (junk, SMALL[:65] + junk, b"CCEL" + junk):
        with pytest.raises(AttestationError):
            el.parse_ccel(candidate, allow_padding=True)
    assert time.perf_counter() - started < 1.0


def test_a_mib_of_minimal_records_parses_in_linear_time() -> None:
    """The worst ordinary case: 1 MiB of the smallest valid records (66 bytes each)."""
    record = struct.pack("<III", 1, 4, 1) + struct.pack("<H", SHA384) + bytes(48) + b"\0\0\0\0"
    data = SMALL[:65] + record * ((1 << 20) // len(record))
    started = time.perf_counter()
    log = el.parse_ccel(data)
    assert len(log.events) == (1 << 20) // len(record)
    assert time.perf_counter() - started < 10.0


# --------------------------------------------------------------------------------------
# Fuzzing: only AttestationError escapes, and what parses is consistent with its bytes
# --------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REAL = [
    log_bytes("go-eventlog/CCEL_unpadded.data.bin"),
    log_bytes("go-eventlog/event_log.bin")[:2703],
    log_bytes("trustee/CCEL_data_ovmf")[:2120],
    log_bytes("trustee/CCEL_AAEL_alibabacloud")[:11707],
]


def check_parse(data: bytes, allow_padding: bool = True) -> el.EventLog | None:
    """Parse; an error must be an AttestationError with an offset inside the input."""
    try:
        log = el.parse_ccel(data, allow_padding=allow_padding)
    except AttestationError as error:
        assert error.reason
        assert "\n" not in str(error)
        if error.offset is not None:
            assert 0 <= error.offset <= len(data), (error.offset, len(data))
        return None
    previous = -1
    for step in log.events:
        assert step.file_offset is not None and step.file_offset > previous
        previous = step.file_offset
        assert step.event_data is not None and len(step.event_data) == step.size
        assert step.file_offset + step.size <= log.end
        assert "\n" not in step.label
    assert log.end + log.padding == len(data)
    if el.replayable_banks(log):
        el.replay(log)
    return log


pytestmark_fuzz = pytest.mark.fuzz


@pytestmark_fuzz
@FUZZ
@given(st.binary(max_size=4096), st.booleans())
def test_fuzz_random_bytes(data: bytes, prefix: bool) -> None:
    check_parse((SMALL[:65] if prefix else b"") + data)


@pytestmark_fuzz
@FUZZ
@given(
    st.sampled_from(REAL),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
    st.sampled_from([b"", b"\xff" * 64, b"\x00" * 64, b"\xff\xff\xff\xff"]),
)
def test_fuzz_byte_flips_of_real_logs(
    log: bytes, flips: list[tuple[int, int]], tail: bytes
) -> None:
    data = bytearray(log)
    for position, value in flips:
        data[position % len(data)] = value
    check_parse(bytes(data) + tail)


@pytestmark_fuzz
@FUZZ
@given(st.sampled_from(REAL), st.sampled_from(REAL), st.data())
def test_fuzz_splices_of_real_logs(first: bytes, second: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(first)))
    start = data.draw(st.integers(0, len(second)))
    check_parse(first[:cut] + second[start:])


def test_every_truncation_of_a_real_log() -> None:
    """Cut at every length: a cut at a record boundary parses to that many events, any
    other cut is one AttestationError."""
    boundaries = {s.file_offset: s.number for s in el.parse_ccel(SMALL).events}
    boundaries[len(SMALL)] = len(el.parse_ccel(SMALL).events)
    for length in range(len(SMALL) + 1):
        log = check_parse(SMALL[:length], allow_padding=False)
        if length in boundaries:
            assert log is not None and len(log.events) == boundaries[length], length
        elif length != 65:  # the Spec ID alone is a log with no events
            assert log is None, length


@st.composite
def generated_logs(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int, bytes, bytes]]]:
    """A valid single-bank SHA-384 log from a drawn list of events (MR index, type, data)."""
    events = draw(
        st.lists(
            st.tuples(
                st.integers(0, 6),
                st.sampled_from([int(t) for t in abi.EventType] + [0x08000001]),
                st.binary(max_size=64),
                st.binary(min_size=48, max_size=48),
            ),
            max_size=20,
        )
    )
    out = SMALL[:65]
    for mr_index, kind, data, digest in events:
        out += struct.pack("<III", mr_index, kind, 1) + struct.pack("<H", SHA384) + digest
        out += struct.pack("<I", len(data)) + data
    return out, events


@pytestmark_fuzz
@FUZZ
@given(generated_logs(), st.sampled_from([b"", b"\xff" * 100, b"\x00" * 9]))
def test_fuzz_generated_logs_round_trip(
    generated: tuple[bytes, list[tuple[int, int, bytes, bytes]]], tail: bytes
) -> None:
    data, events = generated
    # A drawn event whose header is all zero is the end marker: the log stops there.
    stop = next((i for i, e in enumerate(events) if e[0] == 0 and e[1] == 0), len(events))
    log = check_parse(data + tail)
    if stop < len(events):  # the marker's own digest count and algorithm are not fill
        assert log is None
        return
    assert log is not None
    assert len(log.events) == stop
    registers = [bytes(48)] * 4
    for step, (mr_index, kind, payload, digest) in zip(log.events, events, strict=False):
        assert (step.mr_index, step.event_type, step.event_data) == (mr_index, kind, payload)
        assert step.digests == {SHA384: digest}
        if kind != abi.EventType.EV_NO_ACTION and 1 <= mr_index <= 4:
            registers[mr_index - 1] = hashlib.sha384(registers[mr_index - 1] + digest).digest()
    assert list(el.replay(log)) == registers


@pytestmark_fuzz
@FUZZ
@given(st.sampled_from(sorted(int(t) for t in abi.EventType)), st.binary(max_size=300))
def test_fuzz_event_data_decoders(kind: int, data: bytes) -> None:
    label, details = event_data.decode_event(kind, data)
    assert label and "\n" not in label
    assert isinstance(details, dict)


@pytestmark_fuzz
@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_fuzz_json_logs(document: object) -> None:
    try:
        el.parse_json_log(json.dumps(document))
        el.parse_json_log(json.dumps([document]))
    except AttestationError as error:
        assert error.reason
