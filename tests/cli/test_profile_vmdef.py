"""`cvmlaunch profile from-qemu | from-libvirt | check`: profiles out of the VM definitions
that boot guests, against libvirt's own test pairs (a domain and the QEMU arguments libvirt
generated from it give the same profile), and a VM definition compared with a profile."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.guest.libvirt_import import spec_from_libvirt
from cvmlaunch.guest.profile_writer import profile_document
from cvmlaunch.guest.qemu_import import spec_from_qemu
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[2]
VMDEF = ROOT / "tests" / "vectors" / "vmdef"
SNP = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
OVMF = "/usr/share/ovmf/OVMF.fd"
PAIRS = [
    (args, xml)
    for args in sorted((VMDEF / "qemu-cmdlines").glob("libvirt-*.args"))
    for xml in (VMDEF / "libvirt-examples" / args.name[8:].split("__")[0]).glob(
        f"*/{args.name.split('__')[1].removesuffix('.args')}.xml"
    )
]


def libvirt_argv(path: Path) -> list[str]:
    words = shlex.split(path.read_text().replace("\\\n", " "))
    return words[next(n for n, w in enumerate(words) if w.startswith("/usr/bin/qemu")) + 1 :]


def named(xml: str) -> str:
    """libvirt's test domain with what its test harness leaves to libvirt named as the .args
    show it: the firmware image where libvirt's default (or auto-selection) picks one, KVM
    for a test domain of type 'qemu'; a <shim> (not measured) dropped."""
    xml = re.sub(r"\s*<shim>[^<]*</shim>", "", xml)
    if "<loader" not in xml:
        xml = xml.replace("</os>", f"<loader type='rom' readonly='yes'>{OVMF}</loader></os>")
    return xml.replace("<os firmware='efi'>", "<os>").replace("type='qemu'", "type='kvm'", 1)


def without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in keys}


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p[1].name.removesuffix(".xml"))
def test_a_libvirt_domain_and_its_qemu_arguments_give_one_profile(
    pair: tuple[Path, Path],
) -> None:
    args, xml = pair
    from_qemu = profile_document(spec_from_qemu(libvirt_argv(args), firmware=Path(OVMF)))
    from_libvirt = profile_document(spec_from_libvirt(named(xml.read_text()).encode()))
    # The [qemu] table says what the arguments name (machine, cbitpos): a domain leaves the
    # C-bit to the host.
    assert without(from_qemu, "qemu") == without(from_libvirt, "qemu")
    assert from_qemu["technology"] in ("sev", "sev-snp", "tdx")


def test_pairs_cover_every_technology() -> None:
    technologies = {json.dumps(profile_document(spec_from_libvirt(named(x.read_text()).encode()))
                               ["technology"]) for _, x in PAIRS}  # fmt: skip
    assert technologies == {'"sev"', '"sev-snp"', '"tdx"'} and len(PAIRS) >= 7


def measured(cli: CliRunner, profile: Path) -> str:
    r = cli("measure", profile, "--json")
    assert r.code == 0, r.err
    return str(json.loads(r.out)["measurement"])


def test_from_qemu_of_what_qemu_prints_measures_the_same(cli: CliRunner, tmp_path: Path) -> None:
    argv = json.loads(cli("qemu", SNP, "--qemu-version", "10.2", "--format", "json").out)
    out = tmp_path / "from-qemu.toml"
    r = cli("profile", "from-qemu", "--qemu-version", "10.2", "-o", out, "--", *argv)
    assert r.code == 0, r.err
    assert r.out == f"profile written to {out}\n"
    assert measured(cli, out) == measured(cli, SNP)
    assert tomllib.loads(out.read_text())["description"] == "from a QEMU command line"
    r = cli("profile", "from-qemu", "--json", "--", *argv)
    assert json.loads(r.out)["technology"] == "sev-snp"


def test_from_libvirt_of_what_libvirt_prints_measures_the_same(
    cli: CliRunner, tmp_path: Path
) -> None:
    domain = tmp_path / "guest.xml"
    domain.write_text(cli("libvirt", SNP, "--libvirt-version", "11.3").out)
    out = tmp_path / "from-libvirt.toml"
    out.write_text(cli("profile", "from-libvirt", domain).out)
    assert measured(cli, out) == measured(cli, SNP)


def test_definitions_that_cannot_be_modelled_are_named(cli: CliRunner, tmp_path: Path) -> None:
    argv = json.loads(cli("qemu", SNP, "--qemu-version", "10.2", "--format", "json").out)
    argv = [a.replace("sev-snp-guest,", "sev-snp-guest,certs-path=/x,") for a in argv]
    out = tmp_path / "not-written.toml"
    r = cli("profile", "from-qemu", "-o", out, "--", *argv)
    assert r.code == 2 and r.out == "" and len(r.err.splitlines()) == 1
    assert "certs-path" in r.err and not out.exists()
    r = cli("profile", "from-qemu")
    assert r.code == 2 and r.err == "cvmlaunch: error: --: give the QEMU arguments after --\n"


def test_check_names_each_field_a_definition_changes(cli: CliRunner, tmp_path: Path) -> None:
    argv = json.loads(cli("qemu", SNP, "--qemu-version", "10.2", "--format", "json").out)
    r = cli("profile", "check", SNP, "--qemu", "--", *argv)
    assert r.code == 0, r.out + r.err
    assert r.out.splitlines()[-1] == "same guest"
    smp = argv.index("-smp")
    changed = [*argv[: smp + 1], "2", *argv[smp + 2 :]]
    changed = [a.replace("policy=0x30000", "policy=0x30001") for a in changed]
    r = cli("profile", "check", SNP, "--json", "--qemu", "--", *changed)
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    found = {d["key"]: (d["profile"], d["qemu"], d["measured"]) for d in doc["differences"]}
    assert found["vcpus"] == (4, 2, True)
    assert found["snp.policy"] == (0x30000, 0x30001, False)
    assert not doc["same_measurement"]
    assert doc["measurements"]["profile"] == measured(cli, SNP)
    domain = tmp_path / "guest.xml"
    domain.write_text(cli("libvirt", SNP, "--libvirt-version", "11.3").out)
    assert cli("profile", "check", SNP, "--libvirt", domain).code == 0
    domain.write_text(domain.read_text().replace("EPYC-Milan", "EPYC-v4"))
    r = cli("profile", "check", SNP, "--libvirt", domain)
    assert r.code == 1 and "cpu.name: profile" in r.out and "(measured)" in r.out
