"""`cvmlaunch launch` on the command line: the emulated host must fit the guest, and a
mismatch says where the launch left the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvmlaunch.errors import ProfileError
from cvmlaunch.launch import Backend, launch
from cvmlaunch.plan import build_plan
from tests.conftest import DEBIAN_OVMF, CliRunner

PROFILES = Path(__file__).parents[2] / "profiles"
SNP, TDX = PROFILES / "debian-ovmf-qemu-snp.toml", PROFILES / "debian-ovmf-qemu-tdx.toml"


@pytest.mark.parametrize(
    ("profile", "host", "needs"),
    [(SNP, "tdx", "snp"), (TDX, "snp", "tdx"), (TDX, "rfc", "tdx"), (None, "tdx", "snp")],
)
def test_a_sim_host_without_the_guests_vm_type_is_refused(
    profile: Path | None, host: str, needs: str, cli: CliRunner
) -> None:
    if profile is not None and not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    args = [] if profile is None else [profile]
    r = cli("launch", *args, "--backend", "sim", "--sim-host", host)
    assert r.code == 2 and r.out == ""
    assert r.err.startswith(f"cvmlaunch: error: --sim-host: the {host} host offers no {needs} ")


def test_the_api_refuses_a_sim_host_the_backend_does_not_use() -> None:
    from cvmlaunch.guest.flags import default_profile
    from cvmlaunch.guest.profile import load_profile

    plan = build_plan(load_profile(default_profile()).to_spec())
    for backend in (Backend.KVM, Backend.REHEARSAL):
        with pytest.raises(ProfileError, match="--sim-host: plays a host for the emulated"):
            launch(plan, backend, sim_host="snp")


def test_a_mismatch_says_where_it_diverged(tmp_path: Path, cli: CliRunner) -> None:
    if not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    wrong = tmp_path / "wrong-digest.toml"
    text = SNP.read_text().replace("[firmware]\n", '[firmware]\ndigest = "' + "ab" * 48 + '"\n')
    wrong.write_text(text)
    r = cli("launch", wrong, "--backend", "sim")
    assert r.code == 1, r
    diverged = [line for line in r.out.splitlines() if line.startswith("diverged:")]
    assert len(diverged) == 1 and "firmware.digest is wrong for this image" in diverged[0]
    assert "step 0 (" in diverged[0]
