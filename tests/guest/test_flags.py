"""Flags to GuestSpec: a flag of another technology is refused exactly as the profile
refuses its key (one rule, the field table's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvmlaunch.cli import build_parser
from cvmlaunch.guest.fields import BY_FLAG, FIELDS
from cvmlaunch.guest.technology import MODE_ALIASES, Technology
from tests.conftest import CliRunner

ROOT = Path(__file__).parents[2]
PROFILES = {
    "sev-snp": ROOT / "profiles/debian-ovmf-qemu-snp.toml",
    "sev-es": ROOT / "profiles/debian-ovmf-qemu-sev-es.toml",
    "tdx": ROOT / "profiles/debian-ovmf-qemu-tdx.toml",
}
# A value each flag accepts, so only the technology can make it wrong.
VALUES = {
    "--firmware-sha256": "00" * 32, "--firmware-digest": "00" * 48, "--vcpu-type": "EPYC",
    "--vcpu-sig": "0x800f12", "--vcpu-family": "23", "--vcpu-model": "1",
    "--vcpu-stepping": "2", "--guest-features": "0x1", "--vmsa-gpa": "0x1000",
    "--kernel": "/k", "--kernel-sha256": "00" * 32, "--initrd": "/i",
    "--initrd-sha256": "00" * 32, "--append": "x", "--tdx-page-order": "page",
    "--raw-data-tail": "image", "--sev-policy": "1", "--tdx-attributes": "0",
    "--mrconfigid": "00" * 48, "--mrowner": "00" * 48, "--mrownerconfig": "00" * 48,
    "--xfam": "3", "--tik": "/t", "--sev-api": "1.0", "--sev-build": "1", "--mnonce": "00" * 16,
    "--edk2": "202411", "--qemu-version": "8.2", "--kernel-authenticode": "00" * 48,
    "--initrd-sha384": "00" * 48, "--load-options-sha384": "00" * 48,
}  # fmt: skip


def _cases() -> list[tuple[str, str]]:
    """Every (technology, flag) pair the field table says does not go together."""
    return [
        (tech, f.flag)
        for f in FIELDS
        if f.flag in VALUES
        for tech in PROFILES
        if tech not in {t.value for t in f.applies}
    ]


def test_every_guest_flag_has_a_value_here() -> None:
    measured = {f for f in BY_FLAG if f not in ("--technology", "--firmware", "--vcpus",
                                                "--vmm", "--memory-mib")}  # fmt: skip
    assert measured == set(VALUES)


@pytest.mark.parametrize(("technology", "flag"), _cases())
def test_flag_of_another_technology_is_refused(cli: CliRunner, technology: str, flag: str) -> None:
    r = cli("measure", PROFILES[technology], flag, VALUES[flag])
    assert r.code == 2, r.err
    assert f"{flag}: applies to " in r.err and f"not {technology}" in r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err and r.out == ""


def test_memory_is_every_guests(cli: CliRunner) -> None:
    # QEMU's -m: accepted for every technology, measured for a TD only (its TD HOB).
    r = cli("measure", PROFILES["sev-snp"], "--memory-mib", "4096", "--json")
    assert r.code == 0, r.err


# ---- --technology: sev-snp-measure's mode names --------------------------------------------


@pytest.mark.parametrize("command", ["measure", "solve", "matrix"])
@pytest.mark.parametrize(("mode", "technology"), [*MODE_ALIASES.items(), ("sev", "sev")])
def test_technology_takes_sev_snp_measure_mode_names(
    command: str, mode: str, technology: Technology
) -> None:
    required = ["--measurement", "00" * 48] if command == "solve" else []
    args = build_parser().parse_args([command, "--technology", mode, *required])
    assert args.technology is Technology(technology)


def test_technology_help_and_error_name_the_aliases(cli: CliRunner) -> None:
    text = cli("measure", "--help").out
    assert "--technology sev|sev-es|sev-snp|tdx" in text and "snp, seves" in text
    r = cli("measure", "--technology", "snp:svsm")
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1
    assert "--technology: expected one of sev, sev-es, sev-snp, tdx (or snp, seves" in r.err


def test_profile_keeps_one_spelling(cli: CliRunner, tmp_path: Path) -> None:
    # The profile is the canonical format: sev-snp-measure's names are for the flag only.
    profile = tmp_path / "p.toml"
    text = PROFILES["sev-snp"].read_text()
    profile.write_text(text.replace('technology = "sev-snp"', 'technology = "snp"'))
    r = cli("profile", "check", profile)
    assert r.code == 2 and "technology" in r.err and "snp" in r.err
