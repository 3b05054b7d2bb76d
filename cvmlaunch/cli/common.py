"""What every command shares: the exit codes, the one-line-error parser, the JSON form."""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def json_text(doc: object) -> str:
    import json

    return json.dumps(doc, indent=2)
