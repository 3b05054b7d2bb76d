"""The shipped example runs and prints what the profile and the reference vectors say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
# tests/vectors/tdx/tdx-vectors.json: synthetic_images.base.mrtd_two_pass
SYNTH_BASE_TWO_PASS = "34d008abbdb51351f04d1f352039570365fc1fa33489b6cad8e3d6e0c14edc7736baf96a707044aa7fce3f5367d25bec"  # noqa: E501
A05 = "6386bcf2d5bee64b4d625de26964fdc4b5a08923ece26e4c5893b6909e56210965655ed46e9963e29d476212ce1e43a0"  # noqa: E501


def _run(example: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_measure_api_example() -> None:
    lines = _run("measure_api.py")
    assert lines[0] == f"direct-boot-snp.toml: sev-snp measurement {A05}"
    assert "'VMSA': 1" in lines[1] and "'NORMAL': 2" in lines[1]
    assert lines[2].startswith("in-code spec: measurement ") and len(lines[2].split()[-1]) == 96
    assert lines[3] == f"in-code TD: MRTD {SYNTH_BASE_TWO_PASS}"


def test_audit_api_example() -> None:
    genuine, forged = _run("audit_api.py")
    assert genuine.startswith("genuine: pass, ")
    # One flipped MEASUREMENT bit: the signature no longer verifies and the claim differs.
    assert forged == "forged: fail, failed: report.signature, guest.measurement"
