"""`cvmlaunch measure` / `firmware inspect` / `profile check` for TDX: flags, output, and
one-line errors (exit 2, nothing on stdout) for every kind of bad input."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.conftest import SNP_VECTORS, TDX_VECTORS, CliRunner

ROOT = Path(__file__).parents[2]
BASE = TDX_VECTORS / "synth-tdvf-base.bin"
TDX = ("measure", "--technology", "tdx", "--firmware", BASE)


def _bad(cli: CliRunner, *args: str | Path) -> str:
    r = cli(*args)
    assert r.code == 2, r
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    return lines[0]


def test_td_identity_flags_reach_the_json(cli: CliRunner) -> None:
    mr = "ab" * 48
    r = cli(
        *TDX, "--tdx-attributes", "SEPT_VE_DISABLE,pks", "--xfam", "0x602e7",
        "--mrconfigid", mr, "--mrowner", "cd" * 48, "--vcpus", "8", "--memory-mib", "8192",
        "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["td"]["attributes"] == "0x0000000050000000"
    assert doc["td"]["attribute_names"] == ["SEPT_VE_DISABLE", "PKS"]
    assert doc["td"]["xfam_names"] == [
        "X87", "SSE", "AVX", "AVX512_OPMASK", "AVX512_ZMM_HI256", "AVX512_HI16_ZMM", "PKRU",
        "AMX_XTILECFG", "AMX_XTILEDATA",
    ]  # fmt: skip
    assert doc["td"]["mrconfigid"] == mr and doc["td"]["mrowner"] == "cd" * 48
    assert doc["td"]["mrownerconfig"] == "00" * 48
    assert (doc["inputs"]["vcpus"], doc["inputs"]["memory_mib"]) == (8, 8192)
    # None of these are measured: MRTD is the firmware's alone.
    assert doc["mrtd"] == json.loads(cli(*TDX, "--json").out)["mrtd"]


def test_expect_compares_the_mrtd(cli: CliRunner) -> None:
    mrtd = json.loads(cli(*TDX, "--json").out)["mrtd"]
    assert cli(*TDX, "--expect", mrtd).code == 0
    r = cli(*TDX, "--expect", "00" * 48)
    assert r.code == 1 and "MISMATCH" in r.out


def test_mrtd_in_base64(cli: CliRunner) -> None:
    mrtd = bytes.fromhex(json.loads(cli(*TDX, "--json").out)["mrtd"])
    b64 = base64.b64encode(mrtd).decode()
    r = cli(*TDX, "--output-format", "base64", "--expect", b64)
    assert r.code == 0 and f"mrtd             {b64}" in r.out.splitlines(), r
    doc = json.loads(cli(*TDX, "--output-format", "base64", "--json").out)
    assert (
        doc["mrtd"] == mrtd.hex() and (doc["mrtd_base64"], doc["measurement_base64"]) == (b64,) * 2
    )
    line = _bad(cli, *TDX, "--expect", base64.b64encode(mrtd[:32]).decode())
    assert line.endswith("--expect: expected the 48-byte measurement as 96 hex digits or 64 "
                         "base64 characters, got 44 base64 characters (32 bytes)")  # fmt: skip


def test_trace_lists_every_record(cli: CliRunner) -> None:
    out = cli(*TDX, "--trace").out
    records = [line for line in out.splitlines() if "MEM.PAGE.ADD" in line or "MR.EXTEND" in line]
    # 48 BFV pages (1 add + 16 extends each), then one add per page of CFV, TEMP_MEM, TD_HOB.
    assert len(records) == 48 * 17 + 16 + 6 + 2 + 2 + 16
    assert sum("MR.EXTEND" in line for line in records) == 48 * 16
    assert records[0].split()[1:3] == ["0xfffd0000", "MEM.PAGE.ADD"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--xfam", "0x8"), "tdx.xfam: 0x8 sets MPX_BNDREGS"),
        (("--xfam", "0x23"), "AVX512_OPMASK and AVX512_ZMM_HI256 and AVX512_HI16_ZMM go together"),
        (("--tdx-attributes", str(1 << 40)), "tdx.attributes: 0x10000000000 sets reserved bit40"),
        (("--tdx-attributes", "MIGRATABLE,DEBUG"), "MIGRATABLE excludes DEBUG and PERFMON"),
        (("--tdx-attributes", "TURBO"), "--tdx-attributes: expected a number or attribute names"),
        (("--mrowner", "ab"), "--mrowner: expected 48 bytes as 96 hex digits"),
        (("--tdx-page-order", "pages"), "--tdx-page-order: expected one of page, section"),
        (("--kernel-sha256", "00" * 32), "--kernel-sha256: applies to sev, sev-es, sev-snp"),
        (("--vcpu-type", "EPYC"), "--vcpu-type: applies to sev, sev-es, sev-snp guests, not tdx"),
        (("--sev-policy", "1"), "--sev-policy: applies to sev, sev-es guests, not tdx"),
        (("--vmm", "ec2"), "vmm: tdx guests are launched by qemu, not ec2"),
        (("--memory-mib", "0"), "memory_mib: expected 1.."),
        (("--guest-features", "1", "--mrowner", "00"), "--mrowner"),
    ],
)
def test_bad_td_configuration(cli: CliRunner, flags: tuple[str, ...], expected: str) -> None:
    assert expected in _bad(cli, *TDX, *flags)


def test_firmware_without_tdvf(cli: CliRunner, tmp_path: Path) -> None:
    image = tmp_path / "plain.fd"
    image.write_bytes(bytes(0x10000))
    line = _bad(cli, "measure", "--technology", "tdx", "--firmware", image)
    assert "has no TDVF metadata" in line


def test_malformed_tdvf_names_section_and_offset(cli: CliRunner) -> None:
    # The last 4 KiB of Debian's OVMF: its BFV raw data lies before the suffix.
    suffix = SNP_VECTORS / "debian-ovmf-2022.11_OVMF.fd_suffix.bin"
    line = _bad(cli, "measure", "--technology", "tdx", "--firmware", suffix)
    assert "TDVF section 0 (BFV) raw data [0x20000, +0x1e0000) runs past the end" in line
    assert "(at file offset 0x7d0)" in line


def test_short_image_tail_past_the_end(cli: CliRunner, tmp_path: Path) -> None:
    """QEMU semantics need MemoryDataSize bytes of image; zero fill does not."""
    from tests.tdvf_images import build_image

    sections = [
        {"data_offset": 0xF000, "raw_size": 0x1000, "gpa": 0xFFFF0000, "mem_size": 0x3000,
         "type": 0, "attributes": 1},
        {"data_offset": 0, "raw_size": 0, "gpa": 0x800000, "mem_size": 0x1000, "type": 2,
         "attributes": 0},
    ]  # fmt: skip
    image = tmp_path / "short.fd"
    params = {"size": 0x11000, "seed": 7, "locator": "ovmf", "descriptor_offset": 0x10100}
    image.write_bytes(build_image({**params, "sections": sections}))
    line = _bad(cli, "measure", "--technology", "tdx", "--firmware", image)
    assert "RawDataSize 0x1000 < MemoryDataSize 0x3000" in line and "zero" in line
    r = cli("measure", "--technology", "tdx", "--firmware", image, "--raw-data-tail", "zero")
    assert r.code == 0 and "mrtd" in r.out


def test_firmware_inspect_shows_tdvf(cli: CliRunner) -> None:
    doc = json.loads(cli("firmware", "inspect", BASE, "--json").out)
    assert doc["supports"]["tdx"] is True and doc["tdvf_error"] is None
    assert doc["tdvf"]["located_by"] == "ovmf-footer-table"
    assert [s["type"] for s in doc["tdvf"]["sections"]] == [
        "BFV", "CFV", "TEMP_MEM", "TD_HOB", "TEMP_MEM", "TEMP_MEM",
    ]  # fmt: skip
    assert doc["tdvf"]["sections"][0]["attributes"] == ["MR_EXTEND"]
    text = cli("firmware", "inspect", BASE).out
    assert "TDVF metadata:   at 0x3f000 (ovmf-footer-table)" in text


def test_firmware_inspect_reports_broken_tdvf_without_failing(cli: CliRunner) -> None:
    suffix = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"
    r = cli("firmware", "inspect", suffix, "--json")
    assert r.code == 0
    doc = json.loads(r.out)
    assert doc["supports"] == {**doc["supports"], "tdx": False, "sev_snp": True}
    assert "runs past the end" in doc["tdvf_error"]


def test_profiles_and_flags(cli: CliRunner, tmp_path: Path) -> None:
    profile = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"
    r = cli("profile", "check", profile, "--json")
    assert r.code == 0 and json.loads(r.out)["technology"] == "tdx"
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'schema_version = 1\ntechnology = "sev-snp"\n[firmware]\npath = "x"\n'
        '[tdx]\nxfam = 3\n[cpu]\nname = "EPYC"\n'
    )
    assert "tdx.xfam: applies to tdx guests, not sev-snp" in _bad(cli, "profile", "check", bad)
    names = tmp_path / "names.toml"
    names.write_text(
        f'schema_version = 1\ntechnology = "tdx"\n[firmware]\npath = "{BASE}"\n'
        '[tdx]\nattributes = ["SEPT_VE_DISABLE", "LASS_X"]\n'
    )
    assert "tdx.attributes: unknown TD attribute 'LASS_X'" in _bad(cli, "measure", names)
    # Flags-only: TDX needs no vCPU count (MRTD does not depend on it); SNP still does.
    assert cli(*TDX).code == 0
    line = _bad(cli, "measure", "--technology", "sev-snp", "--firmware", BASE)
    assert "--vcpus: required for sev-snp" in line
