"""`diff` of CC event logs: two logs, or a log and a TD profile's predicted boot events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DEBIAN_OVMF, VECTORS, CliRunner

LOGS = VECTORS / "eventlog"
DSTACK_LOG = LOGS / "dstack" / "tdx-lite-getquote.json"
COS_LOG = LOGS / "go-tdx-guest" / "ccel_data.dat"
COS_TABLE = LOGS / "go-tdx-guest" / "ccel_table.dat"
TDX_PROFILE = Path(__file__).parents[2] / "profiles" / "debian-ovmf-qemu-tdx.toml"


def test_a_log_against_itself_and_with_its_table(tmp_path: Path, cli: CliRunner) -> None:
    r = cli("diff", DSTACK_LOG, DSTACK_LOG)
    assert r.code == 0 and r.out.splitlines()[0] == "the same events"
    with_table = tmp_path / "with-table.bin"
    with_table.write_bytes(COS_TABLE.read_bytes() + COS_LOG.read_bytes())
    doc = json.loads(cli("diff", COS_LOG, with_table, "--json").out)
    assert doc["same"] and [r["events"][0] for r in doc["registers"]] == [
        r["events"][1] for r in doc["registers"]
    ]


def test_two_tds_part_at_their_first_event(cli: CliRunner) -> None:
    r = cli("diff", COS_LOG, DSTACK_LOG, "--json")
    assert r.code == 1
    registers = json.loads(r.out)["registers"]
    assert len(registers) == 4 and all(reg["at"] == 0 for reg in registers)
    assert registers[0]["a"]["type"] == registers[0]["b"]["type"] == "EV_EFI_HANDOFF_TABLES2"


def test_a_profile_against_a_log_names_the_field(tmp_path: Path, cli: CliRunner) -> None:
    if not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    published = json.loads((LOGS / "dstack" / "dstack_tdx_lite_recompute.json").read_text())
    doc = published["measurement_doc"]
    profile = tmp_path / "dstack.toml"
    profile.write_text(
        'schema_version = 1\ntechnology = "tdx"\nvcpus = 2\nmemory_mib = 2048\n'
        f'[firmware]\npath = "{DEBIAN_OVMF}"\n[tdx]\nedk2 = 202502\n'
        f'kernel_authenticode = "{doc["kernel_authenticode"]}"\n'
        f'initrd_sha384 = "{doc["initrd_sha384"]}"\n'
        f'load_options_sha384 = "{doc["cmdline_sha384"]}"\n'
    )
    r = cli("diff", profile, DSTACK_LOG)
    assert r.code == 1
    lines = r.out.splitlines()
    # The boot is dstack's, the firmware Debian's; RTMR3 (the guest's own) is not compared.
    assert lines[1].startswith("RTMR0: event 1 differs: A EV_EFI_PLATFORM_FIRMWARE_BLOB2")
    assert lines[1].endswith("(check firmware.path)")
    assert lines[2:] == ["RTMR1: the same (5 events)", "RTMR2: the same (2 events)"]


def test_what_cannot_be_compared_is_one_line_exit_2(tmp_path: Path, cli: CliRunner) -> None:
    trace = tmp_path / "trace.json"
    trace.write_text('{"technology": "tdx", "trace": []}')
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2, 3]")
    for a, words in (
        (TDX_PROFILE, "A: " + str(TDX_PROFILE) + ": predicts no boot events"),
        (trace, "a trace or record; an event log compares with a log or a TD profile"),
        (junk, "A: "),
    ):
        if a == TDX_PROFILE and not DEBIAN_OVMF.exists():
            continue
        r = cli("diff", a, COS_LOG)
        assert r.code == 2 and words in r.err and len(r.err.splitlines()) == 1, r.err
