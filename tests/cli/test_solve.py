"""`solve` on the command line: ready profiles that reproduce the digest, constraints, exit
codes and one-line errors."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from cvmlaunch.guest.profile import load_profile, parse_profile
from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan
from tests.conftest import CliRunner
from tests.sweep_checks import profile_measurement

ROOT = Path(__file__).parents[2]
SNP_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
TDX_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"


def test_solve_prints_ready_profiles_that_reproduce_the_digest(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    from cvmlaunch.guest.spec import CpuSpec, Vmm

    target = profile_measurement(SNP_PROFILE, vcpus=13, cpu=CpuSpec.from_name("EPYC-Genoa"),
                          vmm=Vmm.QEMU, guest_features=0x21)  # fmt: skip
    r = cli("solve", "--measurement", target, SNP_PROFILE, "--json")
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    assert solution["config"]["vcpus"] == 13 and solution["config"]["guest_features"] == "0x21"
    assert "EPYC-Genoa" in solution["cpu_models"]
    # The printed profile is ready to use: it loads and measures to the target.
    spec = parse_profile(tomllib.loads(solution["profile"])).to_spec()
    assert measure(build_plan(spec)).digest.hex() == target


def test_solve_constraints_and_no_solution(cli: CliRunner, debian_ovmf: Path) -> None:
    target = profile_measurement(SNP_PROFILE, vcpus=2)
    assert cli("solve", "--measurement", target, SNP_PROFILE, "--vcpus", "2").code == 0
    r = cli("solve", "--measurement", target, SNP_PROFILE, "--vcpus", "3")
    assert r.code == 1 and r.out.startswith("0 configuration(s)")
    r = cli("solve", "--measurement", "00" * 48, SNP_PROFILE, "--max-vcpus", "4", "--json")
    assert r.code == 1 and json.loads(r.out)["solutions"] == []


def test_solve_flags_only(cli: CliRunner, debian_ovmf: Path) -> None:
    from cvmlaunch.guest.spec import Vmm

    target = profile_measurement(SNP_PROFILE, vcpus=5, vmm=Vmm.EC2, cpu=None)
    r = cli("solve", "--measurement", target, "--technology", "sev-snp",
            "--firmware", debian_ovmf, "--json")  # fmt: skip
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    assert solution["config"] | {"cpu": None} == {
        "vcpus": 5, "cpu": None, "cpu_signature": None, "vmm": "ec2", "guest_features": "0x1",
    }  # fmt: skip


def test_solve_profiles_load_from_anywhere(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("fw.fd").write_bytes(debian_ovmf.read_bytes())
    target = profile_measurement(TDX_PROFILE)
    r = cli("solve", "--measurement", target, "--technology", "tdx", "--firmware", "fw.fd",
            "--append", "x", "--json")  # fmt: skip
    assert r.code == 2 and "--append" in r.err  # TDX has no measured direct boot
    r = cli("solve", "--measurement", target, "--technology", "tdx", "--firmware", "fw.fd",
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    assert solution["any"] == ["memory_mib", "raw_data_tail"]
    monkeypatch.chdir(ROOT)  # elsewhere: the printed firmware path is absolute
    spec = parse_profile(tomllib.loads(solution["profile"])).to_spec()
    assert measure(build_plan(spec)).digest.hex() == target


def test_solve_cmdline_with_control_characters(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = ROOT / "profiles" / "direct-boot-snp.toml"
    cmdline = 'console=ttyS0 a\x7fb "quoted"\ttab'
    spec = load_profile(profile).to_spec()
    assert spec.boot is not None
    target = profile_measurement(profile, boot=spec.boot._replace(cmdline=cmdline))
    r = cli("solve", "--measurement", target, profile, "--append", cmdline, "--vcpus", "1",
            "--max-vcpus", "4", "--json")  # fmt: skip
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    again = parse_profile(tomllib.loads(solution["profile"])).to_spec()
    assert again.boot is not None and again.boot.cmdline == cmdline


def test_solve_and_matrix_unusable_input(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    tik = tmp_path / "tik.bin"
    tik.write_bytes(bytes(16))
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"schema_version = 1 # \xff\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    for args, words in (
        (("solve", "--measurement", "00", SNP_PROFILE), "48 bytes"),
        (("solve", "--measurement", "00" * 48, SNP_PROFILE, "--tik", tik), "--tik"),
        (("matrix", SNP_PROFILE, "--tik", tik), "--tik"),
        (("matrix", SNP_PROFILE, "--vcpus", "1-99999"), "more than"),
        (("explain", bad), "not valid TOML"),
        (("diff", deep, SNP_PROFILE), "nested too deeply"),
        (("measure", SNP_PROFILE, "--append", "\udcff"), "--append"),
    ):
        r = cli(*args)
        assert r.code == 2 and words in r.err, (args, r)
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_solve_plain_sev_reports_any_vcpus(cli: CliRunner, debian_ovmf: Path) -> None:
    # Plain SEV measures the firmware alone: the digest is the SHA-256 of the image.
    target = hashlib.sha256(debian_ovmf.read_bytes()).hexdigest()
    flags = ("--technology", "sev", "--firmware", debian_ovmf)
    r = cli("solve", "--measurement", target, *flags, "--json")
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    assert solution["any"] == ["vcpus", "cpu", "vmm"]
    assert solution["config"]["vcpus"] is None and solution["config"]["cpu_signature"] is None
    assert (
        measure(
            build_plan(parse_profile(tomllib.loads(solution["profile"])).to_spec())
        ).digest.hex()
        == target
    )
    # A field given is fixed: it is the user's, not "any".
    r = cli("solve", "--measurement", target, *flags, "--vcpus", "2", "--vmm", "gce")
    assert r.code == 0, r.err
    assert "vcpus=2 vmm=gce guest_features=0x0; any cpu (not in the digest)" in r.out
    r = cli("solve", "--measurement", target, *flags)
    assert "; any vcpus, cpu, vmm (not in the digest)" in r.out


def test_solve_gce_genoa_reports_its_vmsa_gpa(cli: CliRunner, debian_ovmf: Path) -> None:
    gce = ROOT / "profiles" / "gce-snp.toml"
    genoa = 0xFFFFFFFFFF000  # GCE on Genoa: 52-bit physical addresses
    target = profile_measurement(gce, vcpus=3, vmsa_gpa=genoa)
    r = cli("solve", "--measurement", target, gce, "--max-vcpus", "4", "--json")
    assert r.code == 0, r.err
    (solution,) = json.loads(r.out)["solutions"]
    assert solution["config"] == {
        "vcpus": 3, "cpu": None, "cpu_signature": None, "vmm": "gce", "guest_features": "0x1",
        "vmsa_gpa": f"{genoa:#x}",
    }  # fmt: skip
    spec = parse_profile(tomllib.loads(solution["profile"])).to_spec()
    assert spec.vmsa_gpa == genoa and measure(build_plan(spec)).digest.hex() == target
    r = cli("solve", "--measurement", target, gce, "--max-vcpus", "4")
    assert f"# vcpus=3 vmm=gce guest_features=0x1 vmsa_gpa={genoa:#x}\n" in r.out
    # The Milan GPA is the default: its solutions do not name it.
    milan = profile_measurement(gce, vcpus=3)
    (solution,) = json.loads(cli("solve", "--measurement", milan, gce, "--json").out)["solutions"]
    assert "vmsa_gpa" not in solution["config"]
    # Given with --vmsa-gpa, the GPA is fixed: the Genoa digest is not found at the Milan one.
    r = cli("solve", "--measurement", target, gce, "--vmsa-gpa", "0xFFFFFFFFF000")
    assert r.code == 1 and r.out.startswith("0 configuration(s)")
