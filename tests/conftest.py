"""Shared test helpers: where the vectors live, and running the CLI in-process."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from cvmlaunch.cli import main

VECTORS = Path(__file__).parent / "vectors"
SNP_VECTORS = VECTORS / "snp"
TDX_VECTORS = VECTORS / "tdx"
DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")
DEBIAN_OVMF_SHA256 = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773"


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Run `cvmlaunch ARGS…` in-process; returns exit code, stdout and stderr."""

    def run(*args: str | Path) -> CliResult:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors exit through SystemExit
            code = e.code if isinstance(e.code, int) else 2
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def debian_ovmf() -> Path:
    """Debian's OVMF.fd (package ovmf 2022.11-6+deb12u2), or skip naming the reason."""
    if not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    if hashlib.sha256(DEBIAN_OVMF.read_bytes()).hexdigest() != DEBIAN_OVMF_SHA256:
        pytest.skip(f"{DEBIAN_OVMF} is not the 2022.11-6+deb12u2 build the vectors use")
    return DEBIAN_OVMF
