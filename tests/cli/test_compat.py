"""For people coming from sev-snp-measure 0.0.13: its mode names as `--technology`, its
output formats, its `--dump-vmsa` files. Expected values come from running the peer itself
(its `cli.main`, in-process) on the same guest."""

from __future__ import annotations

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
