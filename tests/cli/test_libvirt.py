"""`cvmlaunch libvirt`: the domain XML on stdout, validated by libvirt's schema; errors as
one line with exit code 2."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from cvmlaunch.guest.libvirt_import import MAX_DOMAIN_XML
from tests.conftest import VECTORS, CliRunner
from tests.guest.test_libvirt import schema_errors

ROOT = Path(__file__).parents[2]
SNP = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
TDX = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"
CANONICAL = VECTORS / "vmdef" / "libvirt-examples" / "third-party" / "canonical-tdx-b24078e6"


@pytest.mark.parametrize(("profile", "version"), [(SNP, "11.3.0"), (TDX, "12.9.0")])
def test_prints_a_domain_the_schema_validates(
    profile: Path, version: str, cli: CliRunner, debian_ovmf: Path
) -> None:
    r = cli("libvirt", profile, "--libvirt-version", version, "--name", "guest-1")
    assert r.code == 0, r.err
    assert r.out.startswith('<domain type="kvm">\n  <name>guest-1</name>\n')
    assert schema_errors(r.out, version) == []


def test_json(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("libvirt", SNP, "--libvirt-version", "12.9", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["libvirt_version"] == "12.9"
    assert doc["xml"] == cli("libvirt", SNP, "--libvirt-version", "12.9").out
    assert schema_errors(doc["xml"], "12.9.0") == []


def test_the_profile_names_the_version(cli: CliRunner, tmp_path: Path, debian_ovmf: Path) -> None:
    profile = tmp_path / "snp.toml"
    profile.write_text(SNP.read_text() + '\n[libvirt]\nversion = "11.3"\n')
    r = cli("libvirt", profile, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["libvirt_version"] == "11.3"
    # The flag overrides it, and is refused where that libvirt has no SEV-SNP.
    r = cli("libvirt", profile, "--libvirt-version", "9.0")
    assert (r.code, r.out) == (2, "")
    assert r.err.startswith("cvmlaunch: error: libvirt.version: libvirt 9.0 has no")


def test_errors_are_one_line_with_exit_2(cli: CliRunner, debian_ovmf: Path) -> None:
    for argv, start in (
        ((SNP,), "libvirt.version: required"),
        ((SNP, "--libvirt-version", "9.0"), "libvirt.version: libvirt 9.0 has no <launchSecurity"),
        ((TDX, "--libvirt-version", "11.3.0"), "libvirt.version: libvirt 11.3.0 has no"),
        ((SNP, "--libvirt-version", "12"), "libvirt.version: expected a version"),
        ((ROOT / "profiles" / "gce-snp.toml", "--libvirt-version", "12.9"), "vmm: "),
    ):
        r = cli("libvirt", *argv)
        assert (r.code, r.out) == (2, ""), r
        assert r.err.startswith(f"cvmlaunch: error: {start}"), r.err
        assert r.err.count("\n") == 1


def test_a_domain_gives_its_profile(cli: CliRunner) -> None:
    template = CANONICAL / "trust_domain.xml.template"
    r = cli("profile", "from-libvirt", template)
    assert r.code == 0, r.err
    doc = tomllib.loads(r.out)
    assert (doc["technology"], doc["vcpus"], doc["memory_mib"]) == ("tdx", 32, 16384)
    assert doc["firmware"]["path"] == "/usr/share/qemu/OVMF.fd"
    assert doc["tdx"]["attributes"] == 0x10000000
    as_json = json.loads(cli("profile", "from-libvirt", template, "--json").out)
    assert as_json == doc


@pytest.mark.parametrize(
    ("content", "start"),
    [
        (b'<!DOCTYPE d [<!ENTITY a "a">]><domain>&a;</domain>', "/domain: a DOCTYPE"),
        (b"<domain>" + b" " * MAX_DOMAIN_XML + b"</domain>", "DOMAIN.xml "),
        (b"<domain type='kvm'><launchSecurity type='sev-es'/></domain>", "/domain/launchSecur"),
    ],
    ids=["doctype", "oversized", "sev-es type"],
)
def test_a_domain_that_cannot_be_read_is_refused(
    content: bytes, start: str, cli: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "domain.xml"
    path.write_bytes(content)
    r = cli("profile", "from-libvirt", path)
    assert (r.code, r.out) == (2, ""), r
    assert r.err.startswith(f"cvmlaunch: error: {start}"), r.err
    assert r.err.count("\n") == 1


def test_domain_errors(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("profile", "from-libvirt", tmp_path / "absent.xml")
    assert r.code == 2 and r.err.startswith(f"cvmlaunch: error: DOMAIN.xml {tmp_path}/absent.xml")
    os.mkfifo(tmp_path / "fifo.xml")
    r = cli("profile", "from-libvirt", tmp_path / "fifo.xml")
    assert r.code == 2 and "a FIFO; expected a regular file" in r.err


@pytest.mark.parametrize("name", ["direct-boot-snp", "debian-ovmf-qemu-tdx"])
def test_profile_to_domain_to_profile_measures_the_same(
    name: str, cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    profile = ROOT / "profiles" / f"{name}.toml"
    domain, again = tmp_path / "domain.xml", tmp_path / "again.toml"
    domain.write_text(cli("libvirt", profile, "--libvirt-version", "12.9").out)
    again.write_text(cli("profile", "from-libvirt", domain).out)
    measured = [
        json.loads(cli("measure", p, "--json").out)["measurement"] for p in (profile, again)
    ]
    assert measured[0] == measured[1]
