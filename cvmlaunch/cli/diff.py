"""`cvmlaunch diff`: the first step where two measurements part, and why."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text

if TYPE_CHECKING:
    from cvmlaunch.analysis.events import EventDiff
    from cvmlaunch.analysis.evidence import Evidence
    from cvmlaunch.plan.step import Step


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare two measurements and name the first divergent step and its cause. A and B "
        "are profiles (.toml), saved `measure --trace --json` output, or launch records "
        "(`launch --json`), in any combination; or CC event logs (CCEL or dstack's JSON), "
        "each against a log or a TD profile that predicts its boot (tdx.edk2): the first "
        "event where each RTMR parts. Exit 0 when they measure the same, 1 if not."
    )
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.diff import diff

    a, b = _read(args.a, "A"), _read(args.b, "B")
    if _is_event_log(a) or _is_event_log(b):
        events = _event_diff((args.a, a, "A"), (args.b, b, "B"))
        print(json_text(events.doc()) if args.json else events.text())
        return EXIT_OK if events.same else EXIT_MISMATCH
    result = diff(_evidence(args.a, a, "A"), _evidence(args.b, b, "B"))
    print(json_text(result.doc()) if args.json else result.text())
    return EXIT_OK if result.same else EXIT_MISMATCH


def _read(path: Path, name: str) -> bytes:
    from cvmlaunch.inputs import read_input

    what = "a profile, trace, launch record or CC event log"
    return read_input(path, limit=MAX_EVIDENCE_SIZE, what=what, name=name)


def _is_event_log(data: bytes) -> bool:
    """A CCEL (its ACPI table, or the Spec ID event in the first record) or dstack's JSON
    event list (a list, or an object holding it as `event_log`)."""
    from cvmlaunch.abi.eventlog import CCEL_SIGNATURE, PCR_EVENT_SIZE, SPEC_ID_SIGNATURE

    if data[:4] == CCEL_SIGNATURE:
        return True
    if data[PCR_EVENT_SIZE : PCR_EVENT_SIZE + len(SPEC_ID_SIGNATURE)] == SPEC_ID_SIGNATURE:
        return True
    if data.lstrip()[:1] not in (b"[", b"{"):
        return False
    import json

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return False  # not JSON: the trace reader says so
    return isinstance(doc, list) or (isinstance(doc, dict) and "event_log" in doc)


def _event_diff(*sides: tuple[Path, bytes, str]) -> EventDiff:
    """Two event logs, or a log and the events a TD profile predicts, compared."""
    from cvmlaunch.analysis.events import diff_events

    events = [_events(path, data, name) for path, data, name in sides]
    predicted = (not _is_event_log(sides[0][1]), not _is_event_log(sides[1][1]))
    return diff_events(events[0], events[1], predicted=predicted)


def _events(path: Path, data: bytes, name: str) -> list[Step]:
    from cvmlaunch.errors import FieldProblem, ProfileError

    if _is_event_log(data):
        from cvmlaunch.attest.eventlog import read_event_log
        from cvmlaunch.errors import AttestationError

        try:
            return list(read_event_log(data).events)
        except AttestationError as e:
            raise ProfileError([FieldProblem(name, f"{path}: {e}")]) from None
    if data.lstrip()[:1] == b"{":
        reason = f"{path}: a trace or record; an event log compares with a log or a TD profile"
        raise ProfileError([FieldProblem(name, reason)])
    from cvmlaunch.guest.profile import load_profile
    from cvmlaunch.measure import measure
    from cvmlaunch.plan import build_plan

    result = measure(build_plan(load_profile(path).to_spec()))
    if result.events is None:
        reason = f"{path}: predicts no boot events (a TD profile with tdx.edk2 does)"
        raise ProfileError([FieldProblem(name, reason)])
    return list(result.events)


# A trace of a 4 MiB firmware is about 1 MiB; a TD's, a few MiB.
MAX_EVIDENCE_SIZE = 64 << 20


def _evidence(path: Path, data: bytes, name: str) -> Evidence:
    """A measurement to compare: a profile (TOML), or a saved trace or launch record (JSON)."""
    import json

    from cvmlaunch.analysis.evidence import evidence_from_json, evidence_from_plan
    from cvmlaunch.errors import InputError

    try:
        doc = json.loads(data) if data[:1] in (b"{", b"[") else None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(str(path), f"not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(str(path), "JSON nested too deeply") from None
    if doc is None:  # anything that does not open like JSON is read as a profile
        from cvmlaunch.guest.profile import load_profile
        from cvmlaunch.plan import build_plan

        return evidence_from_plan(build_plan(load_profile(path).to_spec()), str(path))
    return evidence_from_json(doc, str(path))
