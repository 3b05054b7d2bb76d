"""The `cvmlaunch` command line: a thin shell over the library.

Exit codes: 0 success / match; 1 a measurement differs from --expect; 2 unusable input (one
line on stderr, no traceback). `--json` prints exactly one JSON object on stdout.
Each command is a module of its own, and only the one that runs is imported (pydantic only
when a profile is read). Even argparse loads inside `main`, once the collector is paused.
"""

from __future__ import annotations

import gc
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing before main() runs
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

# Command -> (help, module under cvmlaunch.cli that adds its arguments and runs it).
_COMMANDS = {
    "measure": ("compute the expected launch measurement", "measure"),
    "launch": ("launch through KVM and compare the measurement", "launch"),
    "audit": ("verify an attestation report or quote against a profile", "audit"),
    "explain": ("the measurement step by step, with causes", "explain"),
    "diff": ("why two measurements differ", "diff"),
    "solve": ("which configurations produce a measurement", "solve"),
    "matrix": ("reference measurements over a range of configurations", "matrix"),
    "publish": ("reference values for a verifier (RVPS, go-sev-guest, CoRIM, JSON)", "publish"),
    "idblock": ("sign or check an SEV-SNP ID block", "idblock"),
    "profile": ("profile format tools", "profile"),
    "firmware": ("firmware image tools", "firmware"),
    "libvirt": ("the libvirt domain that boots the measured guest", "libvirt"),
    "qemu": ("the QEMU arguments that boot the measured guest", "qemu"),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line."""
    from cvmlaunch import __version__
    from cvmlaunch.cli.common import Parser, exit_status_text

    status = exit_status_text()
    description = __doc__.split("\n")[0] if __doc__ else None
    parser = Parser(prog="cvmlaunch", description=description, epilog=status)
    parser.add_argument("-v", "--verbose", action="count", default=0, help=_VERBOSE)
    parser.add_argument("--version", action="version", version=f"cvmlaunch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (help_text, _) in _COMMANDS.items():
        _add_command(commands.add_parser(name, help=help_text, epilog=status), name)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of command `name` alone, as the whole parser would build it: what a
    command line that names it after nothing but -v flags needs (start-up time)."""
    from cvmlaunch.cli.common import Parser, exit_status_text

    return _add_command(Parser(prog=f"cvmlaunch {name}", epilog=exit_status_text()), name)


def _add_command(sub: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    # -v after the command as well; counted with those before it.
    sub.add_argument(
        "-v", "--verbose", action="count", default=0, dest="verbose_after", help=_VERBOSE
    )
    module = _COMMANDS[name][1]
    # The submodule itself (a non-empty fromlist), without loading importlib.
    __import__(f"cvmlaunch.cli.{module}", fromlist=["add_arguments"]).add_arguments(sub)
    return sub


_VERBOSE = "log to stderr (-vv: debug)"


def _parse(argv: list[str]) -> argparse.Namespace:
    """`argv` parsed; when only -v flags come before the command, by the command's own
    parser: then the other commands' parsers cannot change the outcome (no help lists them
    and no error names them), so they need not be built. Anything else before the command
    (-h, --version, an abbreviation, `--`, a stray value) gets the whole parser."""
    verbose = 0
    for n, arg in enumerate(argv):
        if arg in _COMMANDS:
            args = command_parser(arg).parse_args(argv[n + 1 :])
            args.command, args.verbose = arg, verbose
            return args
        if arg == "--verbose":
            verbose += 1
        elif arg[:1] == "-" and set(arg[1:]) == {"v"}:
            verbose += len(arg) - 1
        else:
            break
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. Without `argv`, the command is this process's own
    arguments: the process is the command and exits after it."""
    # A command creates ~15,000 objects while its modules load, and next to no cyclic
    # garbage: the collector's passes over them cost ~5 ms of a ~70 ms `measure`.
    collecting = gc.isenabled()
    gc.disable()
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv))
    finally:
        if collecting:
            gc.enable()
    if argv is not None:
        return code
    # The process is the command: deliver the output, then leave without the interpreter's
    # teardown, which walks every object the command created (~5-10 ms) and has nothing left
    # to close (files are closed where they are written).
    import os

    os._exit(_delivered(code))


def _delivered(code: int) -> int:
    """`code`, once stdout and stderr are flushed; 141 if the reader went away, 2 if the
    output could not be written."""
    from cvmlaunch.cli.common import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE

    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        return EXIT_BROKEN_PIPE
    except OSError as e:
        print(f"cvmlaunch: error: cannot write the output: {e.strerror or e}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    try:  # noqa: SIM105 (contextlib.suppress: one more module to load at start-up)
        sys.stderr.flush()
    except OSError:  # nowhere left to say it
        pass
    return code


# Options that take every argument after them (a VM definition's command line).
_REST_OPTIONS = frozenset({"--qemu"})


def _rest_options(argv: list[str]) -> list[str]:
    """`argv` without the `--` written after an option that takes the rest (`--qemu -- ARGS`):
    argparse (3.11) refuses arguments after a `--` that follows such an option."""
    for n, word in enumerate(argv[:-1]):
        if word in _REST_OPTIONS and argv[n + 1] == "--":
            return [*argv[: n + 1], *argv[n + 2 :]]
        if word == "--":  # the arguments of a command line, not ours
            break
    return argv


def _run(argv: list[str]) -> int:
    from cvmlaunch import log
    from cvmlaunch.cli.common import (
        EXIT_BAD_INPUT,
        EXIT_BROKEN_PIPE,
        EXIT_INTERRUPTED,
        error_status,
        one_line,
    )
    from cvmlaunch.errors import CvmlaunchError

    if sys.stderr is None:  # started with stderr closed: errors go nowhere, not to stdout
        import os

        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (open for the process's life)
    if sys.stdout is None:  # started with stdout closed: no result could be delivered
        print("cvmlaunch: error: standard output is closed", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = _parse(_rest_options(argv))
    verbose = args.verbose + args.verbose_after
    log.set_level(log.INFO if verbose == 1 else log.DEBUG if verbose > 1 else log.WARNING)
    try:
        code: int = args.handler(args)
    except CvmlaunchError as e:
        code, words = error_status(e)
        print(f"cvmlaunch: {words}: {one_line(str(e))}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): the result was not delivered, so never report
        # success.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:
        # Inputs and output files raise our errors; what is left is writing stdout itself
        # (e.g. a full disk), or a file the OS refused that no check foresaw: name it.
        what = f"{e.filename}: " if e.filename is not None else "cannot write the output: "
        print(f"cvmlaunch: error: {one_line(f'{what}{e.strerror or e}')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code
