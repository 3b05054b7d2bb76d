"""The `cvmlaunch` command line: a thin shell over the library.

Exit codes: 0 success / match; 1 a measurement differs from --expect; 2 unusable input (one
line on stderr, no traceback). `--json` prints exactly one JSON object on stdout.
Each command is a module of its own, and only the one that runs is imported (pydantic only
when a profile is read).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from cvmlaunch import log
from cvmlaunch.cli.common import EXIT_BAD_INPUT, EXIT_MISMATCH, Parser
from cvmlaunch.errors import CvmlaunchError, KvmError, LaunchError

# Command -> (help, module under cvmlaunch.cli that adds its arguments and runs it).
_COMMANDS = {
    "measure": ("compute the expected launch measurement", "measure"),
    "launch": ("launch through KVM and compare the measurement", "launch"),
    "audit": ("verify an attestation report or quote against a profile", "audit"),
    "explain": ("the measurement step by step, with causes", "explain"),
    "diff": ("why two measurements differ", "diff"),
    "solve": ("which configurations produce a measurement", "solve"),
    "matrix": ("reference measurements over a range of configurations", "matrix"),
    "profile": ("profile format tools", "profile"),
    "firmware": ("firmware image tools", "firmware"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with `only`, just that command gets its arguments (start-up time)."""
    parser = Parser(prog="cvmlaunch", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (help_text, module) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        if only in (None, name):
            import_module(f"cvmlaunch.cli.{module}").add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in _COMMANDS else None).parse_args(argv)
    log.set_level(
        log.INFO if args.verbose == 1 else log.DEBUG if args.verbose > 1 else log.WARNING
    )
    try:
        code: int = args.handler(args)
    except (KvmError, LaunchError) as e:
        # The kernel or the guest refused: a failed launch, not unusable input.
        print(f"cvmlaunch: launch failed: {e}", file=sys.stderr)
        return EXIT_MISMATCH
    except CvmlaunchError as e:
        print(f"cvmlaunch: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): the result was not delivered, so never report
        # success; 141 is what a shell reports for a command killed by SIGPIPE.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # stdout itself failed (e.g. a full disk): inputs raise our errors
        print(f"cvmlaunch: error: cannot write the output: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code
