"""For people coming from sev-snp-measure 0.0.13: its mode names as `--technology`, its
output formats, its `--dump-vmsa` files. Expected values come from running the peer itself
(its `cli.main`, in-process) on the same guest."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sevsnpmeasure import cli as peer_cli
from sevsnpmeasure.sev_mode import SevMode

from tests.conftest import SNP_VECTORS, CliRunner

AMDSEV = str(SNP_VECTORS / "ovmf_AmdSev_suffix.bin")
CPU = ("--vcpus", "2", "--vcpu-type", "EPYC-v4")

Peer = Callable[..., str]


@pytest.fixture
def peer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Peer:
    """Run `sev-snp-measure ARGS…` (in `cwd`, default a fresh folder); its stdout, stripped."""

    def run(*args: str, cwd: Path = tmp_path) -> str:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["sev-snp-measure", *args])
        assert peer_cli.main() == 0
        return capsys.readouterr().out.strip()

    return run


# ---- --technology ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sev", "seves", "snp"])
def test_technology_takes_the_peers_mode_names(cli: CliRunner, peer: Peer, mode: str) -> None:
    theirs = peer("--mode", mode, "--ovmf", AMDSEV, *CPU)
    r = cli("measure", "--technology", mode, "--firmware", AMDSEV, *CPU, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["technology"] == SevMode.from_str(mode).name.lower().replace("_", "-")
    assert doc["measurement"] == theirs


# ---- --output-format, --expect -------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["hex", "base64"])
@pytest.mark.parametrize("mode", ["sev", "seves", "snp"])
def test_measurement_printed_and_expected_as_the_peer_prints_it(
    cli: CliRunner, peer: Peer, mode: str, output_format: str
) -> None:
    theirs = peer("--mode", mode, "--ovmf", AMDSEV, *CPU, "--output-format", output_format)
    ours = ("measure", "--technology", mode, "--firmware", AMDSEV, *CPU)
    r = cli(*ours, "--output-format", output_format, "--expect", theirs)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[-2:] == [f"measurement      {theirs}", "expected         match"]
    # --expect takes the peer's value in either format: the same digest.
    other = peer("--mode", mode, "--ovmf", AMDSEV, *CPU)  # hex
    assert cli(*ours, "--output-format", output_format, "--expect", other).out == r.out


def test_json_keeps_hex_and_adds_base64(cli: CliRunner, peer: Peer) -> None:
    args = ("measure", "--technology", "snp", "--firmware", AMDSEV, *CPU, "--json")
    hex_doc = cli(*args).out
    assert cli(*args, "--output-format", "hex").out == hex_doc  # the default, unchanged
    assert "_base64" not in hex_doc
    theirs = peer("--mode", "snp", "--ovmf", AMDSEV, *CPU, "--output-format", "base64")
    doc = json.loads(cli(*args, "--output-format", "base64", "--expect", theirs).out)
    plain = json.loads(hex_doc)
    assert doc["measurement_base64"] == doc["expected_base64"] == theirs
    assert doc["measurement"] == doc["expected"] == plain["measurement"] and doc["match"]
    digest = bytes.fromhex(plain["firmware_digest"])
    assert doc["firmware_digest_base64"] == base64.b64encode(digest).decode()
    # Each base64 value right after its hex value; nothing else changes.
    assert list(doc)[:4] == ["technology", "measurement", "measurement_base64", "firmware_digest"]
    assert {k: v for k, v in doc.items() if not k.endswith("_base64")} == plain | {
        "expected": plain["measurement"], "match": True,
    }  # fmt: skip


def test_launch_measure_in_base64(cli: CliRunner, tmp_path: Path) -> None:
    tik = tmp_path / "tik.bin"
    tik.write_bytes(bytes(range(16)))
    secret = ("--tik", str(tik), "--sev-api", "0.24", "--sev-build", "15", "--mnonce", "11" * 16)
    args = ("measure", "--technology", "sev", "--firmware", AMDSEV, *secret)
    hmac = bytes.fromhex(json.loads(cli(*args, "--json").out)["launch_measure"])
    text = cli(*args, "--output-format", "base64").out
    assert f"launch measure   {base64.b64encode(hmac).decode()}" in text.splitlines()


# ---- explain --dump-vmsa -------------------------------------------------------------------

# sev-snp-measure's arguments, and our profile's top-level keys and tables besides
# [firmware]: the same guest on Debian's OVMF.fd.
DUMP_GUESTS = {
    "snp-qemu": (
        ("--mode", "snp", "--vcpus", "4", "--vcpu-type", "EPYC-v4"),
        'technology = "sev-snp"\nvcpus = 4',
        '[cpu]\nname = "EPYC-v4"',
    ),
    "seves-qemu": (
        ("--mode", "seves", "--vcpus", "3", "--vcpu-type", "EPYC-Milan"),
        'technology = "sev-es"\nvcpus = 3',
        '[cpu]\nname = "EPYC-Milan"',
    ),
    "snp-ec2": (
        ("--mode", "snp", "--vcpus", "2", "--vmm-type", "ec2", "--guest-features", "0x21"),
        'technology = "sev-snp"\nvcpus = 2\nvmm = "ec2"',
        "[snp]\nguest_features = 0x21",
    ),
    "snp-gce": (
        ("--mode", "snp", "--vcpus", "1", "--vmm-type", "gce"),
        'technology = "sev-snp"\nvcpus = 1\nvmm = "gce"',
        "",
    ),
}


@pytest.mark.parametrize("guest", DUMP_GUESTS)
def test_dump_vmsa_writes_the_peers_files(
    cli: CliRunner, peer: Peer, debian_ovmf: Path, tmp_path: Path, guest: str
) -> None:
    peer_args, keys, tables = DUMP_GUESTS[guest]
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    ours.mkdir()
    peer(*peer_args, "--ovmf", str(debian_ovmf), "--dump-vmsa", cwd=theirs)
    profile = tmp_path / "guest.toml"
    firmware = f'[firmware]\npath = "{debian_ovmf}"'
    profile.write_text(f"schema_version = 1\n{keys}\n{firmware}\n{tables}\n")
    r = cli("explain", profile, "--dump-vmsa", ours)
    assert r.code == 0, r.err
    assert r.out == cli("explain", profile).out  # the story is the same
    names = sorted(p.name for p in theirs.iterdir())
    assert names == sorted(p.name for p in ours.iterdir()) and "vmsa0.bin" in names
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
