"""What every command shares: the exit codes, the one-line-error parser, the JSON form."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2

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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def json_text(doc: object) -> str:
    import json

    return json.dumps(doc, indent=2)
