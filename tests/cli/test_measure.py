"""The `cvmlaunch` command line: contract, overrides, errors as one line with exit code 2."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SNP_VECTORS, CliRunner

ROOT = Path(__file__).parents[2]
AMDSEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"
D01 = "11570979c77a0adb515761a702527c8b9e11554e730552621d950988613a3a75c6ff1703f540bd22a9beede8fe7a97e3"  # noqa: E501
D02 = "32ac9d7a17d28f7cd4404a4516d2f00519668c40ada2062351c36767e908eb3f090d66c33ab10f80150e00a4385b6d0f"  # noqa: E501
A07 = "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"  # noqa: E501
SNP_AMDSEV = ("--technology", "sev-snp", "--firmware", str(AMDSEV), "--vcpus", "1")


def test_embedded_default(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("measure", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["technology"] == "sev-snp" and doc["measurement"] == D02
    assert doc["inputs"]["vcpus"] == 4 and doc["inputs"]["cpu"]["name"] == "EPYC-v4"
    human = cli("measure")
    assert human.code == 0 and human.out.splitlines()[-1] == f"measurement      {D02}"


def test_flags_override_the_profile(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"  # 4 x EPYC-Milan
    r = cli("measure", profile, "--json", "--vcpus", "1", "--vcpu-type", "EPYC-v4")
    assert json.loads(r.out)["measurement"] == D01
    r = cli("measure", profile, "--json", "--vcpus", "1", "--vcpu-sig", "0x800F12")
    assert json.loads(r.out)["measurement"] == D01


def test_other_firmware_drops_the_profile_pin(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
    r = cli("measure", profile, "--firmware", AMDSEV, "--vcpus", "1", "--vcpu-type", "EPYC-v4")
    assert r.code == 0, r.err
    assert r.out.splitlines()[-1].endswith(A07)


def test_firmware_pin_mismatch(cli: CliRunner) -> None:
    r = cli("measure", *SNP_AMDSEV, "--vcpu-type", "EPYC-v4", "--firmware-sha256", "00" * 32)
    assert r.code == 2 and "but the profile pins" in r.err


def test_expect(cli: CliRunner) -> None:
    args = ("measure", *SNP_AMDSEV, "--vcpu-type", "EPYC-v4")
    assert cli(*args, "--expect", A07).code == 0
    r = cli(*args, "--expect", "00" * 48, "--json")
    assert r.code == 1
    assert json.loads(r.out)["match"] is False


@pytest.mark.parametrize("vmm", ["ec2", "gce"])
def test_cloud_guest_names_no_cpu(cli: CliRunner, vmm: str) -> None:
    # EC2 and GCE put a fixed RDX in the VMSAs: the CPU model given is not what is measured.
    args = ("measure", "--technology", "sev-snp", "--firmware", AMDSEV, "--vmm", vmm)
    given = cli(*args, "--vcpus", "2", "--vcpu-type", "EPYC-Milan")
    assert given.code == 0, given.err
    assert "vcpus            2, vmm " + vmm in given.out.splitlines()
    assert "EPYC" not in given.out and "0xa00f11" not in given.out
    assert given.out == cli(*args, "--vcpus", "2").out
    doc = json.loads(cli(*args, "--vcpus", "2", "--vcpu-sig", "0xa00f11", "--json").out)
    assert "cpu" not in doc["inputs"]


def test_trace_chains_page_info(cli: CliRunner) -> None:
    r = cli("measure", *SNP_AMDSEV, "--vcpu-type", "EPYC-v4", "--json", "--trace")
    doc = json.loads(r.out)
    trace = doc["trace"]
    # 1 firmware page, 7 metadata sections of 9+3+1+1+1+1+15 pages, 1 VMSA.
    assert len(trace) == 1 + 31 + 1
    assert [s["index"] for s in trace] == list(range(len(trace)))
    assert trace[-1]["digest"] == doc["measurement"] == A07
    assert trace[-1]["page_type"] == "VMSA" and trace[-1]["gpa"] == "0xfffffffff000"
    assert trace[0]["contents"] == hashlib.sha384(AMDSEV.read_bytes()).hexdigest()
    # Recompute every step independently from the PAGE_INFO definition.
    types = {"NORMAL": 1, "VMSA": 2, "ZERO": 3, "UNMEASURED": 4, "SECRETS": 5, "CPUID": 6}
    digest = bytes(48)
    for step in trace:
        record = digest + bytes.fromhex(step["contents"]) + struct.pack("<HB5xQ", 0x70,
            types[step["page_type"]], int(step["gpa"], 16))  # fmt: skip
        digest = hashlib.sha384(record).digest()
        assert digest.hex() == step["digest"], step


def test_human_trace(cli: CliRunner) -> None:
    r = cli("measure", *SNP_AMDSEV, "--vcpu-type", "EPYC-v4", "--trace")
    assert r.code == 0
    assert "SNP_KERNEL_HASHES section 5" in r.out and "VMSA vCPU 0 (BSP)" in r.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("measure", "--vcpus", "1"), "--technology: required without a PROFILE"),
        (("measure", *SNP_AMDSEV), "cpu: required with vmm 'qemu'"),
        (("measure", *SNP_AMDSEV, "--vcpu-type", "Pentium"), "unknown CPU model 'Pentium'"),
        (("measure", *SNP_AMDSEV, "--vcpus", "x"), "expected an integer"),
        (("measure", *SNP_AMDSEV, "--vmm", "azure"), "expected one of qemu, ec2, gce"),
        (("measure", *SNP_AMDSEV, "--vcpu-type", "EPYC", "--vcpus", "0"), "vcpus: expected 1.."),
        (("measure", *SNP_AMDSEV, "--vcpu-sig", "1", "--firmware-digest", "ab"), "48 bytes"),
        (("measure", "--technology", "sev", "--firmware", "/nonexistent"), "No such file"),
        (
            ("measure", "--technology", "sev", "--firmware", "/"),
            "firmware.path /: a directory; expected a regular file (a firmware image)",
        ),
        (("measure", "/nonexistent.toml"), "No such file"),
        (
            ("measure", *SNP_AMDSEV, "--vcpu-sig", "1", "--kernel", "/"),
            "boot.kernel /: a directory; expected a regular file or a pipe (a kernel image)",
        ),
        (("measure", *SNP_AMDSEV, "--vcpu-sig", "1", "--guest-features", "0x20"), "SNPActive"),
        (
            (
                "measure",
                "--technology",
                "sev",
                "--firmware",
                AMDSEV,
                "--firmware-digest",
                "00" * 48,
            ),
            "--firmware-digest: applies to sev-snp guests, not sev",
        ),
        (("measure", "--expect", "00"), "--expect: expected the 48-byte measurement as 96 hex"),
        (("measure", "--expect", "ab" * 32), "or 64 base64 characters, got 64 hex digits"),
        (("measure", "--expect", "zz!"), "got 3 characters, neither hex nor base64"),
        (("measure", "--expect", ""), "--expect: expected the 48-byte measurement"),
        (("measure", "--expect", "QUJD"), "got 4 base64 characters (3 bytes)"),
        (("measure", "--output-format", "b64"), "argument --output-format: invalid choice"),
        (("firmware", "inspect", "/nonexistent"), "No such file"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: tuple[str, ...], message: str, cli: CliRunner) -> None:
    r = cli(*args)
    assert r.code == 2
    assert message in r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert r.out == ""


def test_hostile_firmware_names_the_offset(cli: CliRunner, tmp_path: Path) -> None:
    image = bytearray(AMDSEV.read_bytes())
    struct.pack_into("<I", image, 0xF6E, 0xFFFFFF)  # SEV metadata offset entry's data
    bad = tmp_path / "bad.fd"
    bad.write_bytes(image)
    r = cli("measure", *SNP_AMDSEV, "--vcpu-sig", "1", "--firmware", bad)
    assert r.code == 2 and "points outside" in r.err and "at file offset 0xf6e" in r.err
    bad.write_bytes(image[:100])
    r = cli("measure", "--technology", "sev", "--firmware", bad)
    assert r.code == 2 and "not a non-zero multiple of 4096" in r.err


def test_firmware_inspect(cli: CliRunner) -> None:
    r = cli("firmware", "inspect", AMDSEV, "--json")
    doc = json.loads(r.out)
    assert [s["type"] for s in doc["sev_metadata"]] == [
        "SNP_SEC_MEM", "SNP_SEC_MEM", "SNP_SECRETS", "CPUID", "SVSM_CAA",
        "SNP_KERNEL_HASHES", "SNP_SEC_MEM",
    ]  # fmt: skip
    assert doc["sev_es_reset_address"] == "0x80b004"
    assert doc["hash_table_area"] == {"base": "0x810c00", "size": "0x400"}
    assert doc["supports"]["measured_direct_boot_snp"] is True
    text = cli("firmware", "inspect", SNP_VECTORS / "ovmf_OvmfX64_suffix.bin").out
    assert "SEV hash table area" in text and "hash table area  none" in text


def test_profile_commands(cli: CliRunner) -> None:
    schema = json.loads(cli("profile", "schema").out)
    assert schema["title"] == "Profile"
    r = cli("profile", "check", ROOT / "profiles" / "direct-boot-snp.toml", "--json")
    assert json.loads(r.out) == {
        "profile": str(ROOT / "profiles" / "direct-boot-snp.toml"),
        "valid": True,
        "technology": "sev-snp",
    }


def test_verbose_logs_to_stderr(cli: CliRunner) -> None:
    r = cli("-v", "measure", *SNP_AMDSEV, "--vcpu-type", "EPYC-v4")
    assert r.code == 0
    assert "event='measure.done'" in r.err and f"measurement='{A07}'" in r.err
    assert A07 in r.out


def test_cpu_model_ignored_by_cloud_vmm_is_warned(cli: CliRunner) -> None:
    args = ("measure", *SNP_AMDSEV, "--vmm", "ec2", "--json")
    plain = cli(*args)
    with_cpu = cli(*args, "--vcpu-type", "EPYC-Milan")
    assert json.loads(plain.out)["measurement"] == json.loads(with_cpu.out)["measurement"]
    assert plain.err == ""
    assert "event='plan.cpu_ignored'" in with_cpu.err and "vmm='ec2'" in with_cpu.err


def test_stepping_with_a_named_model_is_refused(cli: CliRunner) -> None:
    default = Path(__file__).parents[2] / "cvmlaunch" / "data" / "default.toml"
    r = cli("measure", default, "--vcpu-type", "EPYC-v4", "--vcpu-stepping", "9")
    assert r.code == 2 and "--vcpu-stepping: give exactly one of --vcpu-type" in r.err


def _cvmlaunch() -> str:
    return str(Path(sys.executable).parent / "cvmlaunch")


def test_output_that_cannot_be_written_is_exit_2_one_line() -> None:
    # The process flushes its output itself before it leaves (without the interpreter's
    # teardown): a full disk is one line and exit 2, not a traceback at shutdown.
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [_cvmlaunch(), "measure", "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            check=False,
        )
    assert r.returncode == 2, r.stderr
    assert r.stderr == "cvmlaunch: error: cannot write the output: No space left on device\n"


def test_reader_going_away_is_141() -> None:
    script = (
        f"{_cvmlaunch()} measure --trace --json | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"
    )
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert r.stdout.strip() == "141" and "Traceback" not in r.stderr
