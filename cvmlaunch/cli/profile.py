"""`cvmlaunch profile schema|check`: the profile format."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch.cli.common import EXIT_OK, Parser, json_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    pc = p.add_subparsers(dest="profile_command", required=True, parser_class=Parser)
    schema = pc.add_parser("schema", help="print the profile JSON Schema")
    schema.set_defaults(handler=_schema)
    check = pc.add_parser("check", help="validate a profile")
    check.add_argument("profile", type=Path)
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=_check)


def _schema(args: argparse.Namespace) -> int:
    from cvmlaunch.guest.profile import profile_json_schema

    print(json_text(profile_json_schema()))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from cvmlaunch.guest.profile import load_profile

    spec = load_profile(args.profile).to_spec()
    if args.json:
        print(
            json_text({"profile": str(args.profile), "valid": True, "technology": spec.technology})
        )
    else:
        print(f"{args.profile}: valid {spec.technology} profile")
    return EXIT_OK
