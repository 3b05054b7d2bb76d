"""A firmware by its descriptor (`firmware describe`) measures as the image does: every
shipped SEV-SNP profile and generated configurations, the dstack-style case (descriptor plus
kernel hashes only, no files), and descriptors that contradict themselves refused."""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmlaunch.abi.cpu import CPU_MODELS
from cvmlaunch.errors import ProfileError
from cvmlaunch.firmware.descriptor import FirmwareDescriptor, describe
from cvmlaunch.firmware.ovmf import parse_ovmf
from cvmlaunch.guest.profile import load_profile, parse_profile
from cvmlaunch.guest.spec import BootFile, CpuSpec, DirectBoot, GuestSpec, Technology, Vmm
from cvmlaunch.measure import measure
from cvmlaunch.measure.sha256 import chaining_value
from cvmlaunch.measure.snp import firmware_pages_digest
from cvmlaunch.plan import build_plan
from tests.conftest import DEBIAN_OVMF, SNP_VECTORS, CliRunner

ROOT = Path(__file__).parents[2]
SNP_PROFILES = sorted(p for p in (ROOT / "profiles").glob("*.toml")
                      if '"sev-snp"' in p.read_text())  # fmt: skip
AMDSEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"


def described(spec: GuestSpec) -> GuestSpec:
    """`spec` with its firmware given by descriptor and digest, its image not read."""
    data = spec.firmware.read_bytes()
    image = parse_ovmf(data)
    descriptor = describe(image, hashlib.sha256(data).digest())
    return spec._replace(firmware=Path("/nonexistent/firmware"), firmware_descriptor=descriptor,
                         firmware_digest=firmware_pages_digest(image))  # fmt: skip


def digest(spec: GuestSpec) -> bytes:
    return measure(build_plan(spec)).digest


@pytest.mark.parametrize("path", SNP_PROFILES, ids=lambda p: p.name)
def test_every_shipped_snp_profile_measures_the_same_from_its_descriptor(
    path: Path, debian_ovmf: Path
) -> None:
    spec = load_profile(path).to_spec()
    assert digest(described(spec)) == digest(spec)


@settings(max_examples=200, deadline=None)
@given(
    firmware=st.sampled_from(["debian", "amdsev"]),
    vcpus=st.integers(1, 64),
    cpu=st.sampled_from(sorted(CPU_MODELS)),
    vmm_features=st.tuples(st.sampled_from(list(Vmm)), st.sampled_from([0x1, 0x21, 0x5])),
    cmdline=st.one_of(
        st.none(), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
    ),  # None: no direct boot
)
def test_generated_guests_measure_the_same_from_the_descriptor(
    firmware: str, vcpus: int, cpu: str, vmm_features: tuple[Vmm, int], cmdline: str | None
) -> None:
    vmm, features = vmm_features
    if not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    path = DEBIAN_OVMF if firmware == "debian" else AMDSEV
    direct = None
    if cmdline is not None and firmware == "amdsev":  # only AmdSevX64 has the hashes section
        direct = DirectBoot(BootFile(SNP_VECTORS / "fake-kernel.bin"),
                            BootFile(SNP_VECTORS / "test-initrd.cpio"), cmdline)  # fmt: skip
    spec = GuestSpec(Technology.SEV_SNP, path, vcpus=vcpus, cpu=CpuSpec.from_name(cpu), vmm=vmm,
                     guest_features=features, boot=direct).check()  # fmt: skip
    assert digest(described(spec)) == digest(spec)


def test_the_dstack_style_case_needs_neither_image_nor_files(tmp_path: Path) -> None:
    # A verifier holding only what dstack publishes: the firmware's facts and digest, and the
    # SHA-256 of kernel and initrd (the command line is short enough to give as text).
    kernel, initrd = SNP_VECTORS / "fake-kernel.bin", SNP_VECTORS / "test-initrd.cpio"
    full = GuestSpec(
        Technology.SEV_SNP,
        AMDSEV,
        vcpus=4,
        cpu=CpuSpec.from_name("EPYC-Milan"),
        boot=DirectBoot(BootFile(kernel), BootFile(initrd), "console=ttyS0"),
    )
    kernel_sha256 = hashlib.sha256(kernel.read_bytes()).digest()
    initrd_sha256 = hashlib.sha256(initrd.read_bytes()).digest()
    boot = DirectBoot(BootFile(sha256=kernel_sha256), BootFile(sha256=initrd_sha256),
                      "console=ttyS0")  # fmt: skip
    hashes_only = described(full)._replace(boot=boot)
    assert hashes_only.files() == []
    assert digest(hashes_only) == digest(full.check())


def fragment(cli: CliRunner, image: Path) -> dict[str, Any]:
    r = cli("firmware", "describe", image)
    assert r.code == 0, r.err
    text = tomllib.loads(r.out)
    as_json = json.loads(cli("firmware", "describe", image, "--json").out)
    assert text == as_json  # the two forms say the same
    return dict(text["firmware"])


def test_the_printed_fragment_replaces_the_path_in_a_profile(
    cli: CliRunner, tmp_path: Path
) -> None:
    original = ROOT / "profiles" / "direct-boot-snp.toml"
    table = fragment(cli, AMDSEV)
    text = original.read_text()
    head, _, rest = text.partition("[firmware]\n")
    rest = rest.split("\n\n", 1)[1]  # drop the [firmware] table's path and pin
    profile = tmp_path / "described.toml"
    descriptor = table["descriptor"]
    lines = [
        f'digest = "{table["digest"]}"',
        "",
        "[firmware.descriptor]",
        f"size = {descriptor['size']}",
        f'sha256 = "{descriptor["sha256"]}"',
        f"reset_eip = {descriptor['reset_eip']}",
        f"hash_table = {{ gpa = {descriptor['hash_table']['gpa']}, "
        f"size = {descriptor['hash_table']['size']} }}",
        "sev_metadata = [",
    ]
    lines += [f'  {{ gpa = {s["gpa"]}, size = {s["size"]}, type = "{s["type"]}" }},'
              for s in descriptor["sev_metadata"]]  # fmt: skip
    boot = rest.replace("../tests/vectors/snp/", f"{SNP_VECTORS}/")
    profile.write_text(head + "[firmware]\n" + "\n".join(lines) + "\n]\n\n" + boot)
    ours = json.loads(cli("measure", profile, "--json").out)
    theirs = json.loads(cli("measure", original, "--json").out)
    assert ours["measurement"] == theirs["measurement"]
    assert ours["inputs"]["firmware_sha256"] == theirs["inputs"]["firmware_sha256"]


def test_a_non_snp_image_is_not_described(cli: CliRunner, tmp_path: Path) -> None:
    image = tmp_path / "plain.fd"
    image.write_bytes(bytes(8192))
    r = cli("firmware", "describe", image)
    assert r.code == 2 and len(r.err.splitlines()) == 1, r.err


def _profile(descriptor: str, *, digest: bool = True, technology: str = "sev-snp") -> str:
    head = f'schema_version = 1\ntechnology = "{technology}"\nvcpus = 1\n'
    pin = f'digest = "{"00" * 48}"\n' if digest else ""
    return (f"{head}[cpu]\nname = \"EPYC-v4\"\n[firmware]\n{pin}[firmware.descriptor]\n"
            f'sha256 = "{"11" * 32}"\n{descriptor}')  # fmt: skip


@pytest.mark.parametrize(
    ("descriptor", "digest", "technology", "named"),
    [
        ("size = 4097\nsev_metadata = []\n", True, "sev-snp", "firmware.descriptor.size"),
        ("size = 4096\nsev_metadata = [{gpa = 0x1000, size = 0x2000, type = \"CPUID\"},"
         " {gpa = 0x2000, size = 0x1000, type = \"SNP_SECRETS\"}]\n", True, "sev-snp",
         "firmware.descriptor.sev_metadata[1]: overlaps sev_metadata[0]"),
        ("size = 4096\nsev_metadata = [{gpa = 0x1000, size = 0x1000, "
         "type = \"SNP_KERNEL_HASHES\"}]\nhash_table = {gpa = 0x3000, size = 0x400}\n",
         True, "sev-snp",
         "firmware.descriptor.hash_table: lies outside the SNP_KERNEL_HASHES section"),
        ("size = 4096\nsev_metadata = []\n", False, "sev-snp", "firmware.digest: required"),
        ("size = 4096\nsev_metadata = []\n", True, "sev-es", "firmware.descriptor"),
        ("size = 4096\nsev_metadata = [{gpa = 1, size = 2, type = \"NOPE\"}]\n", True, "sev-snp",
         "firmware.descriptor.sev_metadata.0: Input should be 'SNP_SEC_MEM'"),
    ],
)  # fmt: skip
def test_a_descriptor_that_contradicts_itself_is_refused(
    descriptor: str, digest: bool, technology: str, named: str
) -> None:
    with pytest.raises(ProfileError) as error:
        parse_profile(tomllib.loads(_profile(descriptor, digest=digest,
                                             technology=technology))).to_spec()  # fmt: skip
    assert named in str(error.value), str(error.value)


def test_neither_or_both_of_path_and_descriptor_is_refused() -> None:
    text = _profile("size = 4096\nsev_metadata = []\n")
    both = text.replace("[firmware]\n", '[firmware]\npath = "/x"\n')
    neither = text.split("[firmware.descriptor]")[0]
    for case in (both, neither):
        wanted = r"firmware\.path: give the image's path, its descriptor \(firmware describe\) or"
        with pytest.raises(ProfileError, match=wanted):
            parse_profile(tomllib.loads(case)).to_spec()


# ---- TDX ---------------------------------------------------------------------------------


def td_described(spec: GuestSpec, cli: CliRunner) -> GuestSpec:
    """`spec` with its firmware given by the descriptor `firmware describe` prints."""
    r = cli("firmware", "describe", spec.firmware, "--technology", "tdx", "--json")
    assert r.code == 0, r.err
    table = json.loads(r.out)["firmware"]
    assert set(table) == {"descriptor"}  # no firmware.digest: a TD refuses it
    profile = {"schema_version": 1, "technology": "tdx", "firmware": table}
    descriptor = parse_profile(profile).firmware.descriptor
    assert descriptor is not None
    return spec._replace(firmware=Path("/nonexistent/firmware"),
                         firmware_descriptor=descriptor.to_spec())  # fmt: skip


def td_values(spec: GuestSpec) -> tuple[bytes, tuple[bytes | None, ...] | None]:
    result = measure(build_plan(spec))
    return result.digest, result.rtmrs


@pytest.mark.parametrize("page_order", ["page", "section"])
@pytest.mark.parametrize("tail", ["image", "zero"])
@pytest.mark.parametrize("memory", [512, 2048, 3072, 8192])
@pytest.mark.usefixtures("debian_ovmf")
def test_a_td_measures_the_same_from_its_descriptor(
    page_order: str, tail: str, memory: int, cli: CliRunner, tmp_path: Path
) -> None:
    # MRTD, and with the boot predicted RTMR0 (TD HOB from the sections, CFV) to RTMR2.
    initrd = tmp_path / "initrd"
    initrd.write_bytes(bytes(4096))
    text = (ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml").read_text()
    text = text.replace('page_order = "page"', f'page_order = "{page_order}"')
    text = text.replace('raw_data_tail = "image"', f'raw_data_tail = "{tail}"')
    text = text.replace("memory_mib = 4096", f"memory_mib = {memory}")
    kernel = Path(__file__).parents[1] / "vectors" / "tdx" / "vmlinuz-6.1.0-56-amd64"
    acpi = "".join(f'{k} = "{d * 96}"\n' for k, d in (("table_loader", "1"), ("rsdp", "2"),
                                                      ("tables", "3")))  # fmt: skip
    text += (f'edk2 = 202502\nqemu = "8.2"\n[tdx.acpi]\n{acpi}'
             f'[boot]\nkernel = "{kernel}"\ninitrd = "{initrd}"\ncmdline = "quiet"\n')  # fmt: skip
    spec = parse_profile(tomllib.loads(text)).to_spec()
    ours = td_values(td_described(spec, cli))
    assert ours == td_values(spec)
    assert ours[1] is not None and all(value is not None for value in ours[1])


def test_a_real_td_by_published_values_alone(
    cli: CliRunner, debian_ovmf: Path, tmp_path: Path
) -> None:
    """dstack-0.6.0's TD from what is published about it, no image, no files: its firmware
    by descriptor (Debian bookworm's TDVF section layout, the MRTD its measurement document
    gives for QEMU 8.2's two-pass (section) order, the empty-varstore CFV digest), its boot
    by digests, the ACPI digests its log names. MRTD and RTMR0-2 equal its real quote."""
    from cvmlaunch.attest.tdx import parse_tdx_quote
    from tests.published_td import QUOTE, published_dstack_profile

    quote = parse_tdx_quote(QUOTE.read_bytes())
    profile = published_dstack_profile(cli, tmp_path, debian_ovmf)
    spec = load_profile(profile).to_spec()
    assert spec.files() == []
    digest, rtmrs = td_values(spec)
    assert digest == quote.body.mrtd
    assert rtmrs is not None and rtmrs[:3] == quote.body.rtmrs[:3]


def test_a_td_descriptor_needs_the_mrtd_of_its_page_order(
    debian_ovmf: Path, cli: CliRunner
) -> None:
    r = cli("firmware", "describe", debian_ovmf, "--technology", "tdx", "--json")
    descriptor = json.loads(r.out)["firmware"]["descriptor"]
    descriptor["mrtd"] = {"page/image": descriptor["mrtd"]["page/image"]}
    profile = {"schema_version": 1, "technology": "tdx", "firmware": {"descriptor": descriptor},
               "tdx": {"page_order": "section"}}  # fmt: skip
    with pytest.raises(ProfileError, match=r"firmware\.descriptor\.mrtd: no MRTD for this page"):
        parse_profile(profile).to_spec()
    del descriptor["tdvf_sections"]
    with pytest.raises(ProfileError, match=r"tdvf_sections: required for a tdx guest"):
        parse_profile(profile).to_spec()


# ---- SEV and SEV-ES: one SHA-256 stream, resumed after the image -----------------------------


@functools.cache
def stream_descriptor(path: Path) -> FirmwareDescriptor:
    data = path.read_bytes()
    image = parse_ovmf(data)
    return FirmwareDescriptor(len(data), hashlib.sha256(data).digest(), (),
                              image.sev_es_reset_address, image.hash_table_area,
                              sha256_chaining=chaining_value(data))  # fmt: skip


def test_the_shipped_sev_es_profile_measures_the_same_from_its_descriptor(
    debian_ovmf: Path, cli: CliRunner
) -> None:
    spec = load_profile(ROOT / "profiles" / "debian-ovmf-qemu-sev-es.toml").to_spec()
    described = spec._replace(firmware=Path("/nonexistent"),
                              firmware_descriptor=stream_descriptor(spec.firmware))  # fmt: skip
    assert digest(described) == digest(spec)
    # What `firmware describe --technology sev-es` prints is that descriptor.
    r = cli("firmware", "describe", debian_ovmf, "--technology", "sev-es", "--json")
    table = json.loads(r.out)["firmware"]["descriptor"]
    assert table["sha256_chaining"] == stream_descriptor(debian_ovmf).sha256_chaining.hex()  # type: ignore[union-attr]


@settings(max_examples=40, deadline=None)
@given(
    technology=st.sampled_from([Technology.SEV, Technology.SEV_ES]),
    vcpus=st.integers(1, 8),
    cpu=st.sampled_from(sorted(CPU_MODELS)),
    vmm=st.sampled_from(list(Vmm)),
    cmdline=st.one_of(st.none(), st.text(st.characters(min_codepoint=0x20,
                                                       max_codepoint=0x7E), max_size=20)),
)  # fmt: skip
def test_generated_sev_guests_measure_the_same_from_the_descriptor(
    technology: Technology, vcpus: int, cpu: str, vmm: Vmm, cmdline: str | None
) -> None:
    direct = None
    if cmdline is not None:
        direct = DirectBoot(BootFile(SNP_VECTORS / "fake-kernel.bin"),
                            BootFile(SNP_VECTORS / "test-initrd.cpio"), cmdline)  # fmt: skip
    spec = GuestSpec(technology, AMDSEV, vcpus=vcpus, cpu=CpuSpec.from_name(cpu), vmm=vmm,
                     boot=direct).check()  # fmt: skip
    described = spec._replace(firmware=Path("/nonexistent"),
                              firmware_descriptor=stream_descriptor(AMDSEV))  # fmt: skip
    assert digest(described) == digest(spec)


def test_an_sev_es_descriptor_needs_its_chaining_value() -> None:
    text = _profile("size = 4096\n", digest=False, technology="sev-es")
    with pytest.raises(ProfileError, match=r"sha256_chaining: required for an sev-es guest"):
        parse_profile(tomllib.loads(text)).to_spec()


def test_a_described_firmware_cannot_be_launched(cli: CliRunner, tmp_path: Path) -> None:
    # The descriptor measures; a launch must load the image's bytes into guest memory.
    table = fragment(cli, AMDSEV)
    descriptor = table["descriptor"]
    profile = {"schema_version": 1, "technology": "sev-snp", "vcpus": 1,
               "cpu": {"name": "EPYC-v4"},
               "firmware": {"digest": table["digest"], "descriptor": descriptor}}  # fmt: skip
    path = tmp_path / "described.toml"
    path.write_text(tomlkit.dumps(profile))
    assert cli("measure", path).code == 0
    r = cli("launch", path, "--backend", "sim")
    assert r.code == 2 and "firmware.descriptor: a launch loads the image itself" in r.err


def test_diff_does_not_invent_what_a_described_image_measures_to(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    snp = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
    table = fragment(cli, debian_ovmf)
    profile = tomlkit.parse(snp.read_text())
    profile["firmware"] = table
    same = tmp_path / "same.toml"
    same.write_text(tomlkit.dumps(profile))
    assert cli("diff", snp, same).out.startswith("same: ")
    profile["firmware"] = {"digest": "00" * 48, "descriptor": table["descriptor"]}
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(tomlkit.dumps(profile))
    r = cli("diff", snp, wrong)
    assert r.code == 1
    assert "B's is precomputed (its firmware image is not at hand)" in r.out
