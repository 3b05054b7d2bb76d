"""The SEV/SEV-ES LAUNCH_MEASURE HMAC, against the published virtee/sev vector."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

from cvmlaunch.guest.spec import SevLaunchSecretInputs
from cvmlaunch.measure.sev import launch_measure
from tests.conftest import SNP_VECTORS, CliRunner

# virtee/sev src/session/mod.rs test `verify` (@9cf2adb): API 0.18 build 15, policy 0,
# launch digest = SHA-256 of nothing.
TIK = bytes.fromhex("66320db73158a35a255d051758e95ed4")
MNONCE = bytes.fromhex("4fbe0bedbad6c86ae8f68971d103e554")
EXPECTED = "6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea"


def test_published_vector() -> None:
    secret = SevLaunchSecretInputs(TIK, 0, 18, 15, MNONCE)
    assert launch_measure(hashlib.sha256().digest(), 0, secret).hex() == EXPECTED


def test_policy_and_version_enter_the_hmac() -> None:
    ld = hashlib.sha256(b"x").digest()
    base = launch_measure(ld, 0, SevLaunchSecretInputs(TIK, 0, 18, 15, MNONCE))
    assert launch_measure(ld, 1, SevLaunchSecretInputs(TIK, 0, 18, 15, MNONCE)) != base
    assert launch_measure(ld, 0, SevLaunchSecretInputs(TIK, 0, 18, 16, MNONCE)) != base


def test_cli_launch_measure(cli: CliRunner, tmp_path: Path) -> None:
    tek_tik = tmp_path / "tek_tik.bin"
    tek_tik.write_bytes(bytes(16) + TIK)  # TEK || TIK, as sevctl and libvirt store them
    firmware = SNP_VECTORS / "ovmf_OvmfX64_suffix.bin"
    r = cli("measure", "--json", "--technology", "sev", "--firmware", firmware,
            "--tik", tek_tik, "--sev-api", "0.24", "--sev-build", "13",
            "--sev-policy", "3", "--mnonce", MNONCE.hex())  # fmt: skip
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    digest = hashlib.sha256(firmware.read_bytes()).digest()
    message = bytes([4, 0, 24, 13]) + (3).to_bytes(4, "little") + digest + MNONCE
    assert doc["launch_measure"] == hmac.digest(TIK, message, "sha256").hex()
    # QEMU's query-sev-launch-measure is base64(MEASURE || MNONCE).
    blob = base64.b64encode(bytes.fromhex(doc["launch_measure"]) + MNONCE)
    assert len(base64.b64decode(blob)) == 48


def test_cli_launch_measure_needs_all_inputs(cli: CliRunner, tmp_path: Path) -> None:
    firmware = SNP_VECTORS / "ovmf_OvmfX64_suffix.bin"
    r = cli("measure", "--technology", "sev", "--firmware", firmware, "--mnonce", "00" * 16)
    assert r.code == 2 and "--tik" in r.err and "needs all of" in r.err
    bad_tik = tmp_path / "tik"
    bad_tik.write_bytes(b"short")
    r = cli("measure", "--technology", "sev", "--firmware", firmware, "--tik", bad_tik,
            "--sev-api", "1.0", "--sev-build", "1", "--mnonce", "00" * 16)  # fmt: skip
    assert r.code == 2 and "16-byte TIK" in r.err
