"""`cvmlaunch qemu`: the arguments in each format, and one-line errors with exit 2."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.qemu import qemu_args
from tests.conftest import CliRunner

PROFILES = Path(__file__).parents[2] / "profiles"
SNP = PROFILES / "debian-ovmf-qemu-snp.toml"


def test_formats(cli: CliRunner) -> None:
    argv = qemu_args(load_profile(SNP).to_spec(), version="10.2")
    shell = cli("qemu", SNP, "--qemu-version", "10.2")
    assert shell.code == 0 and shlex.split(shell.out) == argv
    array = cli("qemu", SNP, "--qemu-version", "10.2", "--format", "json")
    assert array.code == 0 and json.loads(array.out) == argv
    qmp = json.loads(cli("qemu", SNP, "--qemu-version", "10.2", "--format", "qmp").out)
    assert qmp["execute"] == "object-add"
    assert qmp["arguments"]["qom-type"] == "sev-snp-guest"
    assert qmp["arguments"]["policy"] == 0x30000
    doc = json.loads(cli("qemu", SNP, "--qemu-version", "10.2", "--json").out)
    assert doc == {"argv": argv, "object": qmp["arguments"], "qemu_version": "10.2"}


def test_errors_are_one_line_exit_2(cli: CliRunner, tmp_path: Path) -> None:
    none = cli("qemu", SNP)
    assert none.code == 2 and none.err.count("\n") == 1 and "qemu.version" in none.err
    old = cli("qemu", SNP, "--qemu-version", "8.2")
    assert old.code == 2 and "qemu.version: QEMU 8.2 has no sev-snp-guest" in old.err
    by_signature = tmp_path / "sig.toml"
    text = SNP.read_text().replace('name = "EPYC-Milan"', "signature = 0xA00F11")
    by_signature.write_text(text)
    sig = cli("qemu", by_signature, "--qemu-version", "10.2")
    assert sig.code == 2 and "cpu: -cpu takes a model name" in sig.err
    hostile = tmp_path / "hostile.toml"
    hostile.write_bytes(b"technology = \x00\xff[[[")
    bad = cli("qemu", hostile, "--qemu-version", "10.2")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "TOML" in bad.err
    assert cli("qemu", tmp_path / "missing.toml").code == 2
