"""Profiles written: what `solve` and `profile from-*` print reads back as the same guest."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cvmlaunch.guest.fields import HEX_KEYS
from cvmlaunch.guest.profile import load_profile, parse_profile, profile_json_schema
from cvmlaunch.guest.profile_writer import SCHEMA_VERSION, profile_document, toml_text

ROOT = Path(__file__).parents[2]
PROFILES = [*sorted((ROOT / "profiles").glob("*.toml")), ROOT / "cvmlaunch/data/default.toml"]


@pytest.mark.parametrize(
    "path",
    [*sorted(ROOT.glob("profiles/*.toml")), ROOT / "cvmlaunch" / "data" / "default.toml"],
    ids=lambda p: p.name,
)
def test_profile_document_round_trips(path: Path) -> None:
    """What `solve` prints as a ready profile describes exactly the same guest."""
    spec = load_profile(path).to_spec()
    text = toml_text(profile_document(spec, 'a "quoted" description\twith a tab'))
    assert parse_profile(tomllib.loads(text)).to_spec() == spec


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_writer_numbers(path: Path) -> None:
    """Numbers of the field table's hex fields are written in hex, counts in decimal."""
    doc = profile_document(load_profile(path).to_spec())
    lines = toml_text(doc).splitlines()
    for table in (doc, *(t for t in doc.values() if isinstance(t, dict))):
        for key, value in table.items():
            if isinstance(value, int):
                written = f"{value:#x}" if key in HEX_KEYS else str(value)
                assert f"{key} = {written}" in lines


def test_profile_writer_layout_and_escapes() -> None:
    doc = {
        "schema_version": 1,
        "cmdline": 'a "q" \\ \t\x7f\x1b\x01 é',
        "snp": {"policy": 0x30000, "guest_features": 1},
        "boot": {"cmdline": "x"},
    }
    text = toml_text(doc)
    assert text == (
        "schema_version = 1\n"
        'cmdline = "a \\"q\\" \\\\ \\t\\u007f\\u001b\\u0001 é"\n'
        "\n[snp]\npolicy = 0x30000\nguest_features = 0x1\n"
        '\n[boot]\ncmdline = "x"\n'
    )
    assert tomllib.loads(text) == doc


def test_profile_writer_round_trips_every_character() -> None:
    """Any cmdline a spec accepts (no NUL) is written as TOML that reads back the same."""
    spec = load_profile(ROOT / "profiles/direct-boot-snp.toml").to_spec()
    assert spec.boot is not None
    cmdline = "".join(map(chr, range(1, 0x80))) + "\u00a0\u2028\ufeff😀"
    spec = spec._replace(boot=spec.boot._replace(cmdline=cmdline))
    text = toml_text(profile_document(spec))
    assert tomllib.loads(text)["boot"]["cmdline"] == cmdline
    assert parse_profile(tomllib.loads(text)).to_spec() == spec


def test_the_version_written_is_the_one_read() -> None:
    assert profile_json_schema()["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_writing_a_profile_needs_no_pydantic() -> None:
    probe = "import sys, cvmlaunch.guest.profile_writer\nprint('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
