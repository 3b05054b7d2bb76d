"""`cvmlaunch diff`: the first step where two measurements part, and why."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text
from cvmlaunch.namedtuple import NamedTuple

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
    a, b = _side(args.a, "A"), _side(args.b, "B")
    if a.log or b.log:
        events = _event_diff(a, b)
        print(json_text(events.doc()) if args.json else events.text())
        return EXIT_OK if events.same else EXIT_MISMATCH
    from cvmlaunch.analysis.diff import diff

    result = diff(_evidence(a), _evidence(b))
    print(json_text(result.doc()) if args.json else result.text())
    return EXIT_OK if result.same else EXIT_MISMATCH


class _Side(NamedTuple):
    """One input of `diff`, read and told apart once."""

    path: Path
    name: str
    data: bytes
    doc: Any  # its JSON, parsed (None: a profile, or a binary event log)
    log: bool  # a CC event log: the CCEL binary or dstack's JSON


def _side(path: Path, name: str) -> _Side:
    import json

    from cvmlaunch.abi.eventlog import CCEL_SIGNATURE, PCR_EVENT_SIZE, SPEC_ID_SIGNATURE
    from cvmlaunch.errors import InputError
    from cvmlaunch.inputs import read_input

    what = "a profile, trace, launch record or CC event log"
    data = read_input(path, limit=MAX_EVIDENCE_SIZE, what=what, name=name)
    # The CCEL's ACPI table, or the Spec ID event in its first record.
    spec_id = data[PCR_EVENT_SIZE : PCR_EVENT_SIZE + len(SPEC_ID_SIGNATURE)]
    if data[:4] == CCEL_SIGNATURE or spec_id == SPEC_ID_SIGNATURE:
        return _Side(path, name, data, None, True)
    if data.lstrip()[:1] not in (b"[", b"{"):  # anything else is read as a profile
        return _Side(path, name, data, None, False)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(str(path), f"not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(str(path), "JSON nested too deeply") from None
    log = isinstance(doc, list) or (isinstance(doc, dict) and "event_log" in doc)
    return _Side(path, name, data, doc, log)


def _event_diff(a: _Side, b: _Side) -> EventDiff:
    """Two event logs, or a log and the events a TD profile predicts, compared."""
    from cvmlaunch.analysis.events import diff_events

    return diff_events(_events(a), _events(b), predicted=(not a.log, not b.log))


def _events(side: _Side) -> list[Step]:
    from cvmlaunch.errors import FieldProblem, ProfileError

    if side.log:
        from cvmlaunch.attest.eventlog import json_log, parse_ccel
        from cvmlaunch.errors import AttestationError

        try:
            if side.doc is not None:
                return list(json_log(side.doc).events)
            return list(parse_ccel(side.data, allow_padding=True).events)
        except AttestationError as e:
            raise ProfileError([FieldProblem(side.name, f"{side.path}: {e}")]) from None
    if side.doc is not None:
        reason = (
            f"{side.path}: a trace or record; an event log compares with a log or a TD profile"
        )
        raise ProfileError([FieldProblem(side.name, reason)])
    from cvmlaunch.guest.profile import load_profile
    from cvmlaunch.measure import measure
    from cvmlaunch.plan import build_plan

    result = measure(build_plan(load_profile(side.path, side.data).to_spec()))
    if result.events is None:
        reason = f"{side.path}: predicts no boot events (a TD profile with tdx.edk2 does)"
        raise ProfileError([FieldProblem(side.name, reason)])
    return list(result.events)


# A trace of a 4 MiB firmware is about 1 MiB; a TD's, a few MiB.
MAX_EVIDENCE_SIZE = 64 << 20


def _evidence(side: _Side) -> Evidence:
    """A measurement to compare: a profile (TOML), or a saved trace or launch record (JSON)."""
    from cvmlaunch.analysis.evidence import evidence_from_json, evidence_from_plan

    if side.doc is None:
        from cvmlaunch.guest.profile import load_profile
        from cvmlaunch.plan import build_plan

        spec = load_profile(side.path, side.data).to_spec()
        return evidence_from_plan(build_plan(spec), str(side.path))
    return evidence_from_json(side.doc, str(side.path))
