"""`cvmlaunch explain`: the measurement as runs of steps, with inputs and causes."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch.cli.common import EXIT_OK, json_text
from cvmlaunch.guest.flags import default_profile


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Tell the measurement as a story: every measured step grouped into runs, each with "
        "its inputs, the profile fields that cause it, and the running digest at its end."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.explain import explain
    from cvmlaunch.guest.profile import load_profile
    from cvmlaunch.plan import build_plan

    path = args.profile if args.profile is not None else default_profile()
    story = explain(build_plan(load_profile(path).to_spec()))
    print(json_text(story.doc()) if args.json else story.text())
    return EXIT_OK
