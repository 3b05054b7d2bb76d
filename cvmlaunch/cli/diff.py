"""`cvmlaunch diff`: the first step where two measurements part, and why."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text

if TYPE_CHECKING:
    from cvmlaunch.analysis.evidence import Evidence


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare two measurements and name the first divergent step and its cause. A and B "
        "are profiles (.toml), saved `measure --trace --json` output, or launch records "
        "(`launch --json`), in any combination. Exit 0 when they measure the same, 1 if not."
    )
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.diff import diff

    result = diff(_evidence(args.a, "A"), _evidence(args.b, "B"))
    print(json_text(result.doc()) if args.json else result.text())
    return EXIT_OK if result.same else EXIT_MISMATCH


# A trace of a 4 MiB firmware is about 1 MiB; a TD's, a few MiB.
MAX_EVIDENCE_SIZE = 64 << 20


def _evidence(path: Path, name: str) -> Evidence:
    """A measurement to compare: a profile (TOML), or a saved trace or launch record (JSON)."""
    import json

    from cvmlaunch.analysis.evidence import evidence_from_json, evidence_from_plan
    from cvmlaunch.errors import InputError
    from cvmlaunch.inputs import read_input

    what = "a profile, trace or launch record"
    data = read_input(path, limit=MAX_EVIDENCE_SIZE, what=what, name=name)
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
