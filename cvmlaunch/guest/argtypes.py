"""Readers of command-line values (argparse `type=` functions): numbers, hex byte strings,
lists and ranges, enum names. Each raises `argparse.ArgumentTypeError` with what it expected,
which argparse turns into one line naming the flag."""

from __future__ import annotations

import argparse
from enum import StrEnum

from cvmlaunch.guest.spec import MAX_VCPUS, Vmm
from cvmlaunch.guest.technology import MODE_ALIASES, Technology

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def integer(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer (decimal or 0x hex), got {text!r}"
        ) from None


def hex_bytes(size: int) -> Callable[[str], bytes]:
    def parse(text: str) -> bytes:
        try:
            value = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            value = b""
        if len(value) != size:
            raise argparse.ArgumentTypeError(
                f"expected {size} bytes as {2 * size} hex digits, got {text!r}"
            )
        return value

    return parse


def hex_bytes_any(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hex digits, got {text!r}") from None


def list_of(parse: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """A comma-separated list of values, each read by `parse`."""

    def parse_list(text: str) -> list[Any]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return list(dict.fromkeys(parse(item) for item in items))  # each value once

    return parse_list


def range_list(text: str) -> list[int]:
    """Integers as a comma-separated list of values and ranges: `1-8,16,32-64`."""
    out: list[int] = []
    for item in list_of(str)(text):
        low, dash, high = item.partition("-")
        first, last = integer(low), integer(high) if dash else integer(low)
        if last < first:
            raise argparse.ArgumentTypeError(f"expected LOW-HIGH with LOW <= HIGH, got {item!r}")
        if last - first >= MAX_VCPUS:
            raise argparse.ArgumentTypeError(f"{item!r}: more than {MAX_VCPUS} values")
        out += range(first, last + 1)
    return list(dict.fromkeys(out))


def choice(kind: type[StrEnum]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in {k.value for k in kind}:
            values = ", ".join(k.value for k in kind)
            raise argparse.ArgumentTypeError(f"expected one of {values}, got {text!r}")
        return text

    return parse


def api_version(text: str) -> tuple[int, int]:
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR, e.g. 0.24, got {text!r}")
    return int(major), int(minor)


def vmm(text: str) -> Vmm:
    try:
        return Vmm(text.lower())
    except ValueError:
        choices = ", ".join(v.value for v in Vmm)
        raise argparse.ArgumentTypeError(f"expected one of {choices}, got {text!r}") from None


def technology(text: str) -> Technology:
    """A technology by name, or by sev-snp-measure's `--mode` name for it (`snp`, `seves`)."""
    if text in MODE_ALIASES:
        return MODE_ALIASES[text]
    try:
        return Technology(text)
    except ValueError:
        names = ", ".join(t.value for t in Technology)
        aliases = ", ".join(MODE_ALIASES)
        raise argparse.ArgumentTypeError(
            f"expected one of {names} (or {aliases} as sev-snp-measure names them), got {text!r}"
        ) from None


def td_attributes(text: str) -> int:
    """A number, or TD attribute names joined by commas (SEPT_VE_DISABLE,PKS)."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    from cvmlaunch.abi.tdx import td_attributes_from_names

    try:
        return td_attributes_from_names([n for n in text.split(",") if n.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number or attribute names: {e}") from None
