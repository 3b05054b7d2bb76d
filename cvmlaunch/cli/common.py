"""What every command shares: the exit codes, the one-line-error parser, the JSON form."""

from __future__ import annotations

import argparse
import os
import sys

from cvmlaunch.errors import CvmlaunchError, KvmError, LaunchError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any, NoReturn

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # as a shell reports SIGINT and SIGPIPE

# The exit status of every outcome, for the help text and the README: the one table.
EXIT_STATUS = (
    (EXIT_OK, "success: the values match, or a launch had nothing to compare (unattested)"),
    (EXIT_MISMATCH, "a check failed: a measurement or claim differs, or the launch failed"),
    (EXIT_BAD_INPUT, "unusable input or output: one line on stderr names the flag, key or "
     "offset"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_BROKEN_PIPE, "the reader of the output went away (e.g. a pipe into `head`)"),
)  # fmt: skip

# What argparse assumes without a terminal (shutil.get_terminal_size's fallback).
_FALLBACK_COLUMNS = 80


def terminal_columns() -> int:
    """The width argparse formats help for: $COLUMNS if a positive integer, else the width of
    the terminal on sys.__stdout__, else 80 (the rule of shutil.get_terminal_size)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    stdout = sys.__stdout__
    if stdout is None:
        return _FALLBACK_COLUMNS
    try:
        return os.get_terminal_size(stdout.fileno()).columns or _FALLBACK_COLUMNS
    except (AttributeError, ValueError, OSError):  # no fileno, closed, not a terminal
        return _FALLBACK_COLUMNS


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter at the width argparse would choose, found without the `shutil`
    import (and zlib, bz2 and lzma with it) that argparse makes for it: ~2 ms of start-up,
    as every add_argument builds a formatter."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = terminal_columns() - 2  # argparse's margin
        super().__init__(prog, indent_increment, max_help_position, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(_EXIT_STATUS_HEADING):  # a table: kept line by line
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)}\n")


def one_line(text: str) -> str:
    """`text` with each character that would end its line or not print (a path or value the
    user gave may hold any) written as its escape: every error stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# Every error the library raises: its exit status and the words it is reported with (the
# first class that matches). The kernel or the guest refusing is a failed launch, not input.
ERROR_STATUS: tuple[tuple[type[CvmlaunchError], int, str], ...] = (
    (KvmError, EXIT_MISMATCH, "launch failed"),
    (LaunchError, EXIT_MISMATCH, "launch failed"),
    (CvmlaunchError, EXIT_BAD_INPUT, "error"),
)


def error_status(error: CvmlaunchError) -> tuple[int, str]:
    """The exit status of `error` and the words it is reported with."""
    return next((code, words) for kind, code, words in ERROR_STATUS if isinstance(error, kind))


_EXIT_STATUS_HEADING = "exit status:"


def exit_status_text() -> str:
    rows = (f"  {code:<4} {meaning}" for code, meaning in EXIT_STATUS)
    return "\n".join((_EXIT_STATUS_HEADING, *rows))


def json_text(doc: object) -> str:
    import json

    return json.dumps(doc, indent=2)
