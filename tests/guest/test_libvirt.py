"""The libvirt domain XML codec against libvirt's own RelaxNG schemas and test domains."""

from __future__ import annotations

import base64
import re
from functools import cache
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmlaunch.abi.cpu import CPU_MODELS
from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.libvirt import domain_xml
from cvmlaunch.guest.libvirt_import import MAX_DOMAIN_XML, spec_from_libvirt
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    IdBlockConfig,
    TdConfig,
    Technology,
    VmDefinition,
)
from cvmlaunch.measure import measure
from cvmlaunch.measure.idblock import signed_for
from cvmlaunch.plan import build_plan
from tests.conftest import DEBIAN_OVMF, SNP_VECTORS, VECTORS

VMDEF = VECTORS / "vmdef"
RNG_VERSIONS = ("9.0.0", "11.3.0", "12.9.0")
PROFILES = sorted((Path(__file__).parents[2] / "profiles").glob("*.toml"))
AMDSEV_OVMF = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"  # has the kernel-hashes table
ID_KEYS = VECTORS / "idblock" / "sev-snp-measure"
SEV, SEV_ES, SEV_SNP, TDX = Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP, Technology.TDX


@cache
def domain_of(spec: GuestSpec, **kw: Any) -> str:
    """`domain_xml` with the ID block signed over the spec's digest, as the command does."""
    signed = signed_for(spec) if spec.id_block is not None else None
    return domain_xml(spec, id_block=None if signed is None else signed.parts, **kw)


def relaxng(version: str) -> Any:
    """libvirt's domain schema of `version`, as lxml's RelaxNG (its includes by path)."""
    from lxml import etree

    return etree.RelaxNG(file=str(VMDEF / "libvirt-rng" / version / "domain.rng"))


def schema_errors(xml: str, version: str) -> list[str]:
    from lxml import etree

    schema = relaxng(version)
    if schema.validate(etree.fromstring(xml.encode())):
        return []
    return [str(e) for e in schema.error_log]


def digest(spec: GuestSpec) -> bytes:
    return measure(build_plan(spec)).digest


def shipped(name: str) -> GuestSpec:
    return load_profile(Path(__file__).parents[2] / "profiles" / f"{name}.toml").to_spec()


def guests() -> dict[str, GuestSpec]:
    """One guest per technology and per libvirt element the codec writes."""
    snp, sev_es = shipped("debian-ovmf-qemu-snp"), shipped("debian-ovmf-qemu-sev-es")
    tdx = shipped("debian-ovmf-qemu-tdx")
    id_block = IdBlockConfig(ID_KEYS / "id_key_test.pem", ID_KEYS / "author_key_test.pem")
    return {
        "sev": sev_es._replace(technology=SEV, sev_policy=0x1),
        "sev-es": sev_es,
        "sev-direct": shipped("direct-boot-snp")._replace(technology=SEV, sev_policy=0x1),
        "sev-snp": snp._replace(host_data=bytes(range(32))),
        "sev-snp-direct": shipped("direct-boot-snp"),
        "sev-snp-id-block": snp._replace(id_block=id_block),
        "tdx": tdx._replace(td=tdx.td_config._replace(mrowner=bytes(range(48)), xfam=None)),
    }


def supported(spec: GuestSpec, version: str) -> bool:
    since = {SEV_SNP: (10, 5), TDX: (11, 6)}.get(spec.technology, (0, 0))
    return tuple(int(p) for p in version.split(".")[:2]) >= since


@pytest.mark.parametrize("version", RNG_VERSIONS)
@pytest.mark.parametrize("case", list(guests()))
def test_every_domain_validates_or_is_refused_as_the_schema_refuses(
    case: str, version: str, debian_ovmf: Path
) -> None:
    spec = guests()[case]
    if supported(spec, version):
        xml = domain_of(spec, version=version)
        assert schema_errors(xml, version) == []
        return
    with pytest.raises(ProfileError) as refused:
        domain_of(spec, version=version)
    assert [p.field for p in refused.value.problems] == ["libvirt.version"]
    # The same domain as a newer libvirt takes it: this version's schema rejects it too,
    # at its <launchSecurity>.
    errors = schema_errors(domain_of(spec, version="12.9.0"), version)
    assert any("launchSecurity" in e for e in errors), errors


def test_supported_matrix_covers_every_technology_and_version(debian_ovmf: Path) -> None:
    valid = {
        (str(spec.technology), version)
        for spec in guests().values()
        for version in RNG_VERSIONS
        if supported(spec, version)
        and not schema_errors(domain_of(spec, version=version), version)
    }
    assert valid == {(t, v) for t in ("sev", "sev-es") for v in RNG_VERSIONS} | {
        ("sev-snp", "11.3.0"),
        ("sev-snp", "12.9.0"),
        ("tdx", "12.9.0"),
    }


def test_snp_before_10_5_and_tdx_before_11_6_are_refused(debian_ovmf: Path) -> None:
    snp, tdx = guests()["sev-snp"], guests()["tdx"]
    for spec, old, new in ((snp, "10.4", "10.5"), (tdx, "11.5.0", "11.6")):
        with pytest.raises(ProfileError, match=r"^libvirt\.version: libvirt .* has no"):
            domain_of(spec, version=old)
        assert "<launchSecurity" in domain_of(spec, version=new)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_shipped_profiles_round_trip_to_their_digest(profile: Path, debian_ovmf: Path) -> None:
    spec = load_profile(profile).to_spec()
    if spec.vmm != "qemu":  # EC2 and GCE boot their own VMM
        with pytest.raises(ProfileError, match=r"^vmm: libvirt boots with QEMU, not"):
            domain_of(spec, version="12.9")
        return
    xml = domain_of(spec, version="12.9")
    assert schema_errors(xml, "12.9.0") == []
    assert digest(spec_from_libvirt(xml.encode())) == digest(spec)


@pytest.fixture(scope="module")
def boot_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Kernels and initrds to boot: real files, distinct contents."""
    folder = tmp_path_factory.mktemp("boot")
    files = []
    for n in range(4):
        path = folder / f"file {n}.bin"  # a space: paths are XML text, not tokens
        path.write_bytes(bytes([n]) * (1000 + 4096 * n))
        files.append(path)
    return files


SEV_FAMILY_MODELS = sorted(CPU_MODELS)
TD_ATTRIBUTE_SETS = [0, 1 << 28, 1 << 28 | 1 << 30, 1 << 28 | 1 << 63, 1 << 30 | 1 << 63]


@st.composite
def specs(draw: st.DrawFn, files: list[Path]) -> tuple[GuestSpec, str]:
    tech = draw(st.sampled_from([SEV, SEV_ES, SEV_SNP, TDX]))
    # Each version has its schema here (libvirt-rng): every domain is validated by it.
    ok = [v for v in RNG_VERSIONS if supported(GuestSpec(tech, DEBIAN_OVMF), v)]
    version = draw(st.sampled_from(ok).flatmap(lambda v: st.sampled_from([v, v[:-2]])))
    fields: dict[str, Any] = {
        "technology": tech,
        "firmware": DEBIAN_OVMF,
        "vcpus": draw(st.integers(1, 64)),
        "memory_mib": draw(st.integers(64, 1 << 20)),
        "vm": VmDefinition(
            machine=draw(st.sampled_from(["q35", "pc-q35-8.2", "pc"])),
            cbitpos=draw(st.integers(32, 63)),
            reduced_phys_bits=draw(st.integers(1, 63)),
        ),
    }
    if tech is TDX:
        mr = st.one_of(st.just(bytes(48)), st.binary(min_size=48, max_size=48))
        fields["td"] = TdConfig(
            attributes=draw(st.sampled_from(TD_ATTRIBUTE_SETS)),
            mrconfigid=draw(mr),
            mrowner=draw(mr),
            mrownerconfig=draw(mr),
        )
        return GuestSpec(**fields), version
    fields["cpu"] = CpuSpec.from_name(draw(st.sampled_from(SEV_FAMILY_MODELS)))
    if draw(st.booleans()):
        initrd = draw(st.sampled_from([None, *files[2:]]))
        cmdline = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
        boot = DirectBoot(
            BootFile(draw(st.sampled_from(files[:2]))),
            None if initrd is None else BootFile(initrd),
            cmdline,
        )
        fields.update(boot=boot, firmware=AMDSEV_OVMF)
    if tech is SEV_SNP:
        fields["snp_policy"] = draw(st.integers(0, (1 << 26) - 1)) | 1 << 17
        fields["host_data"] = draw(
            st.one_of(st.just(bytes(32)), st.binary(min_size=32, max_size=32))
        )
    else:
        es = 1 << 2 if tech is SEV_ES else 0
        fields["sev_policy"] = draw(st.integers(0, 0xFFFF)) & ~(1 << 2) | es
    return GuestSpec(**fields), version


ROUND_TRIPS = settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_generated_guests_round_trip(boot_files: list[Path], debian_ovmf: Path) -> None:
    seen: set[str] = set()
    runs: list[str] = []

    @ROUND_TRIPS
    @given(specs(boot_files))
    def round_trip(case: tuple[GuestSpec, str]) -> None:
        spec, version = case
        spec = spec.check()
        xml = domain_of(spec, version=version)
        schema = next(v for v in RNG_VERSIONS if v.startswith(version))
        assert schema_errors(xml, schema) == []
        back = spec_from_libvirt(xml.encode())
        assert digest(back) == digest(spec)
        same = (
            "technology",
            "vcpus",
            "memory_mib",
            "sev_policy",
            "snp_policy",
            "host_data",
            "boot",
            "td",
        )
        assert {k: getattr(back, k) for k in same} == {k: getattr(spec, k) for k in same}
        vm = spec.vm_definition._replace(libvirt_version=None)
        if spec.technology is TDX:  # a TD has no C-bit
            vm = VmDefinition(machine=vm.machine)
        else:
            assert back.cpu == spec.cpu
        assert back.vm == vm
        seen.add(f"{spec.technology}{'+boot' if spec.boot else ''}")
        runs.append(version)

    round_trip()
    assert len(runs) >= 200 and set(runs) >= set(RNG_VERSIONS)
    assert seen == {"sev", "sev+boot", "sev-es", "sev-es+boot", "sev-snp", "sev-snp+boot", "tdx"}


def test_a_td_boots_its_kernel_but_its_rtmr_inputs_are_the_profiles(
    boot_files: list[Path], debian_ovmf: Path
) -> None:
    tdx = guests()["tdx"]
    spec = tdx._replace(
        boot=DirectBoot(BootFile(boot_files[0]), BootFile(boot_files[2]), "console=hvc0"),
        td=tdx.td_config._replace(edk2=202502, qemu="10.1"),
    )
    xml = domain_of(spec, version="12.9")
    assert f"<kernel>{boot_files[0]}</kernel>" in xml and "kernelHashes" not in xml
    assert schema_errors(xml, "12.9.0") == []
    # The domain does not say which edk2 release the firmware is: RTMR1-2 need it.
    with pytest.raises(ProfileError, match=r"^/domain/os/kernel: a TD's kernel"):
        spec_from_libvirt(xml.encode())


def test_an_id_block_is_signed_over_the_digest_and_comes_back(debian_ovmf: Path) -> None:
    from cvmlaunch.measure.idblock import id_block_and_refusals

    spec = guests()["sev-snp-id-block"]
    xml = domain_of(spec, version="11.3")
    assert 'authorKey="yes"' in xml
    back = spec_from_libvirt(xml.encode())
    assert back.id_block is not None and back.id_block.author_key_enabled
    _, refused = id_block_and_refusals(back.id_block, ld=digest(back), policy=back.snp_policy)
    assert refused == []  # the firmware would take it: it signs this launch digest


EXAMPLES = VMDEF / "libvirt-examples"
XML_EXAMPLES = sorted(EXAMPLES.glob("*/qemuxml*data/launch-security-*.xml"))
CANONICAL = sorted(EXAMPLES.glob("third-party/canonical-tdx-*/trust_domain*.xml.template"))
NO_IMAGE, SHIM, CPU_MODEL = "/domain/os/loader", "/domain/os/shim", "/domain/cpu/model"
# What each of libvirt's test domains is refused for, as it is: no firmware image (libvirt's
# default BIOS, or one it chooses: firmware='efi'), a <shim>, the CPU model qemu64 (no
# signature known), TCG.
REFUSED = {
    "11.3.0/qemuxmlconfdata/launch-security-sev-direct.x86_64-latest+amdsev.xml": {NO_IMAGE, SHIM},
    "11.3.0/qemuxmlconfdata/launch-security-sev-direct.x86_64-latest.xml": {NO_IMAGE, SHIM},
    "11.3.0/qemuxmlconfdata/launch-security-sev-direct.xml": {NO_IMAGE, SHIM},
    "11.3.0/qemuxmlconfdata/launch-security-sev-missing-platform-info.x86_64-latest+amdsev.xml": {
        NO_IMAGE
    },
    "11.3.0/qemuxmlconfdata/launch-security-sev-missing-platform-info.xml": {NO_IMAGE},
    # Without <cpu>, libvirt boots QEMU's default model, qemu64 (its .args): imported.
    "11.3.0/qemuxmlconfdata/launch-security-sev-snp.x86_64-latest+amdsev.xml": set(),
    "11.3.0/qemuxmlconfdata/launch-security-sev-snp.x86_64-latest.xml": set(),
    "11.3.0/qemuxmlconfdata/launch-security-sev-snp.xml": {NO_IMAGE},
    "11.3.0/qemuxmlconfdata/launch-security-sev.x86_64-latest+amdsev.xml": {NO_IMAGE},
    "11.3.0/qemuxmlconfdata/launch-security-sev.xml": {NO_IMAGE},
    "9.0.0/qemuxml2argvdata/launch-security-sev-direct.xml": {NO_IMAGE},
    "9.0.0/qemuxml2argvdata/launch-security-sev-missing-platform-info.xml": {NO_IMAGE},
    "9.0.0/qemuxml2argvdata/launch-security-sev.xml": {NO_IMAGE},
    "master-798f7482/qemuxmlconfdata/launch-security-tdx.x86_64-latest+inteltdx.xml": {
        "/domain/@type",
        NO_IMAGE,
    },
    "master-798f7482/qemuxmlconfdata/launch-security-tdx.xml": {"/domain/@type", NO_IMAGE},
}


@pytest.mark.parametrize("path", XML_EXAMPLES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_libvirt_test_domains_are_refused_naming_what(path: Path) -> None:
    if not REFUSED[str(path.relative_to(EXAMPLES))]:
        assert spec_from_libvirt(path.read_bytes()).cpu == CpuSpec(0x663, "qemu64")
        return
    with pytest.raises(ProfileError) as refused:
        spec_from_libvirt(path.read_bytes())
    fields = {p.field for p in refused.value.problems}
    assert fields == REFUSED[str(path.relative_to(EXAMPLES))]
    reasons = " ".join(p.reason for p in refused.value.problems)
    if "<os firmware='efi'>" in path.read_text() and NO_IMAGE in fields:
        assert "libvirt chooses it (firmware='efi')" in reasons


def completed(text: str) -> str:
    """libvirt's test domain with what it leaves to libvirt named: the firmware image, a CPU
    model whose signature is known, KVM; its <shim> dropped."""
    text = re.sub(r"\s*<(loader|nvram|shim)[^>]*(/>|>[^<]*</\1>)", "", text)
    loader = f"<loader type='rom' readonly='yes'>{DEBIAN_OVMF}</loader>"
    text = text.replace("</os>", loader + "</os>").replace("<os firmware='efi'>", "<os>")
    if "<cpu" not in text:
        text = text.replace("</os>", "</os><cpu><model fallback='forbid'>qemu64</model></cpu>")
    text = text.replace(">qemu64<", ">EPYC-Milan<")
    return text.replace("<domain type='qemu'>", "<domain type='kvm'>")


# launchSecurity content that enters no digest or checked value: not carried (the codec's
# list of them).
UNMEASURED = {"dhCert", "session", "guestVisibleWorkarounds", "quoteGenerationService"}


def launch_security(xml: str) -> dict[str, str]:
    """<launchSecurity> as {attribute or child: value}, base64 decoded to hex."""
    element = ET.fromstring(xml).find("launchSecurity")
    assert element is not None
    out = {f"@{k}": v for k, v in element.attrib.items() if k != "vcek"}
    for child in element:
        if child.tag not in UNMEASURED:
            text = (child.text or "").strip()
            binary = child.tag[0].islower() and child.tag not in (
                "policy",
                "cbitpos",
                "reducedPhysBits",
            )
            out[child.tag] = base64.b64decode(text).hex() if binary else text
    return out


@pytest.mark.parametrize(
    "path", XML_EXAMPLES + CANONICAL, ids=lambda p: str(p.relative_to(EXAMPLES))
)
def test_libvirt_domains_import_and_come_back_with_their_launch_security(
    path: Path, debian_ovmf: Path
) -> None:
    # Canonical's templates name everything; libvirt's test domains leave some to libvirt.
    text = path.read_text() if path in CANONICAL else completed(path.read_text())
    spec = spec_from_libvirt(text.encode())
    security = launch_security(text)
    kind = security["@type"]
    assert spec.technology == {"sev": SEV, "sev-snp": SEV_SNP, "tdx": TDX}[kind]
    assert str(spec.firmware) == re.findall(r"<loader[^>]*>([^<]+)</loader>", text)[0]
    assert spec.vcpus == int(re.findall(r"<vcpu[^>]*>(\d+)</vcpu>", text)[0])
    assert (spec.boot is not None) == ("<kernel>" in text)
    if kind == "tdx":
        assert spec.td_config.attributes == 0x10000000
        assert spec.td_config.mrowner.hex() == security.get("mrOwner", "00" * 48)
        if path in CANONICAL:
            assert spec.memory_mib == 1024 * int(re.findall(r"'GiB'>(\d+)<", text)[0])
    else:
        assert spec.cpu == (CpuSpec.from_name("EPYC-Milan") if "<cpu" in text else None)
        assert spec.memory_mib == 214  # 219100 KiB, rounded up to MiB as libvirt boots it
        policy = int(security["policy"], 16)
        assert (spec.snp_policy if kind == "sev-snp" else spec.sev_policy) == policy
    if spec.id_block is not None:
        # libvirt's test ID block is filler: SNP_LAUNCH_FINISH would refuse it, so no domain
        # is written for it; the rest of the guest is.
        with pytest.raises(ProfileError, match=r"^snp\.id_block\.ld: "):
            signed_for(spec)  # what `cvmlaunch libvirt` checks before it writes a domain
        spec = spec._replace(id_block=None)
        security = {k: v for k, v in security.items() if k not in ID_BLOCK}
    ours = domain_of(spec, version="12.9.0")
    assert schema_errors(ours, "12.9.0") == []
    back = launch_security(ours)
    # Where libvirt's domain leaves the C-bit to the host, ours names the profile's.
    assert {k: v for k, v in back.items() if k in security} == security
    assert set(back) - set(security) <= {"cbitpos", "reducedPhysBits"}


ID_BLOCK = {"idBlock", "idAuth", "@authorKey"}


MEMORY = {
    "libvirt-examples SEV (KiB, rounded up as libvirt does)": (
        "<memory unit='KiB'>219100</memory>",
        214,
    ),
    "no unit is KiB": ("<memory>4194304</memory>", 4096),
    "GiB": ("<memory unit='GiB'>16</memory>", 16384),
    "G": ("<memory unit='G'>2</memory>", 2048),
    "MB is decimal": ("<memory unit='MB'>1048576</memory>", 1000000),
    "bytes": ("<memory unit='bytes'>1073741824</memory>", 1024),
}


def minimal(
    *parts: str, security: str = "<launchSecurity type='sev'><policy>0x1</policy></launchSecurity>"
) -> bytes:
    body = "".join(parts)
    if "<memory" not in body:
        body += "<memory unit='MiB'>1024</memory>"
    if "<os" not in body:
        body += f"<os><type machine='q35'>hvm</type><loader type='rom'>{DEBIAN_OVMF}</loader></os>"
    return f"<domain type='kvm'><name>g</name>{body}{security}</domain>".encode()


@pytest.mark.parametrize("case", list(MEMORY))
def test_memory_units_are_read_as_libvirt_reads_them(case: str) -> None:
    element, mib = MEMORY[case]
    assert spec_from_libvirt(minimal(element)).memory_mib == mib


def test_policy_is_hexadecimal_as_libvirt_parses_it() -> None:
    def policy(text: str) -> int:
        sec = f"<launchSecurity type='sev'><policy>{text}</policy></launchSecurity>"
        return spec_from_libvirt(minimal(security=sec)).sev_policy

    assert policy("51") == 0x51 == policy("0x51") == policy("0X51")
    es = minimal(
        "<cpu><model fallback='forbid'>EPYC</model></cpu>",
        security="<launchSecurity type='sev'><policy>0x5</policy></launchSecurity>",
    )
    assert spec_from_libvirt(es).technology is SEV_ES  # bit 2: QEMU launches SEV-ES
    for bad in ("0x1_0", "-1", "", "0x100000000"):
        with pytest.raises(ProfileError, match=r"^/domain/launchSecurity/policy: "):
            policy(bad)


REFUSALS = {
    "/domain/cpu/@mode": minimal(
        "<cpu mode='host-passthrough'/>",
        security=("<launchSecurity type='sev-snp'><policy>0x30000</policy></launchSecurity>"),
    ),
    "/domain/cpu/model/@fallback": minimal(
        "<cpu><model>EPYC</model></cpu>",
        security=("<launchSecurity type='sev' ><policy>0x5</policy></launchSecurity>"),
    ),
    "/domain/os/loader/@readonly": minimal(
        f"<os><type>hvm</type><loader type='pflash'>{DEBIAN_OVMF}</loader></os>"
    ),
    "/domain/os/loader/@type": minimal(f"<os><type>hvm</type><loader>{DEBIAN_OVMF}</loader></os>"),
    "/domain/os/nvram": minimal(
        f"<os><type>hvm</type><loader type='rom'>{DEBIAN_OVMF}</loader><nvram>/v</nvram></os>",
        security="<launchSecurity type='tdx'/>",
    ),
    "/domain/launchSecurity/@kernelHashes": minimal(
        f"<os><type>hvm</type><loader type='rom'>{DEBIAN_OVMF}</loader><kernel>/k</kernel></os>"
    ),
    "/domain/launchSecurity/hostData": minimal(
        "<cpu><model fallback='forbid'>EPYC</model></cpu>",
        security="<launchSecurity type='sev-snp'><policy>0x30000</policy><hostData>"
        "AAAA</hostData></launchSecurity>",
    ),
    "/domain/launchSecurity/idAuth": minimal(
        "<cpu><model fallback='forbid'>EPYC</model></cpu>",
        security="<launchSecurity type='sev-snp'><policy>0x30000</policy><idBlock>"
        f"{base64.b64encode(bytes(96)).decode()}</idBlock></launchSecurity>",
    ),
    "/domain/launchSecurity/@authorKey": minimal(
        security=("<launchSecurity type='sev' authorKey='yes'><policy>0</policy></launchSecurity>")
    ),
    "/domain/launchSecurity/handled": minimal(
        security=("<launchSecurity type='sev'><policy>0</policy><handled/></launchSecurity>")
    ),
    "/domain/launchSecurity": minimal(security="<launchSecurity type='s390-pv'/>"),
    "/domain/vcpu/@current": minimal("<vcpu current='1'>4</vcpu>"),
    "/domain/memory/@unit": minimal("<memory unit='parsecs'>1</memory>"),
    "/domain/qemu:commandline[1]/qemu:arg[3]": minimal(
        "<commandline xmlns='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<arg value='-netdev'/><arg value='user,id=n'/><arg value='-bios'/><arg value='/x'/>"
        "</commandline>"
    ),
    "/domain/os/kernel": minimal(
        f"<os><type>hvm</type><loader type='rom'>{DEBIAN_OVMF}</loader><kernel>vmlinuz</kernel>"
        "</os>",
        security="<launchSecurity type='sev' kernelHashes='yes'><policy>0</policy>"
        "</launchSecurity>",
    ),
    "/domain/qemu:commandline[1]/qemu:arg[2]": minimal(
        "<commandline xmlns='http://libvirt.org/schemas/domain/qemu/1.0'>"
        """<arg value='-device'/><arg value='{"driver":"loader","addr":4096}'/></commandline>"""
    ),
    "/domain/memory": minimal("<memory unit='MiB'>0</memory>"),  # the spec's own check
}


@pytest.mark.parametrize("where", list(REFUSALS))
def test_what_cannot_be_modelled_is_named(where: str) -> None:
    with pytest.raises(ProfileError) as refused:
        spec_from_libvirt(REFUSALS[where])
    fields = [p.field for p in refused.value.problems]
    assert fields[0] == where, fields


def test_every_problem_is_named_at_once() -> None:
    xml = minimal(
        "<vcpu current='1'>4</vcpu>",
        "<memory unit='parsecs'>1</memory>",
        security="<launchSecurity type='tdx' kernelHashes='yes'><mrOwner>!"
        "</mrOwner></launchSecurity>",
    )
    with pytest.raises(ProfileError) as refused:
        spec_from_libvirt(xml)
    assert {p.field for p in refused.value.problems} == {
        "/domain/vcpu/@current",
        "/domain/memory/@unit",
        "/domain/launchSecurity/@kernelHashes",
        "/domain/launchSecurity/mrOwner",
    }


HOSTILE = {
    "DOCTYPE": b'<!DOCTYPE domain [<!ENTITY a "aaaa">]><domain type="kvm">&a;</domain>',
    "oversized": b"<domain type='kvm'>" + b" " * MAX_DOMAIN_XML + b"</domain>",
    "not well-formed": b"<domain type='kvm'>",
    "not a domain": b"<network/>",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_documents_are_refused(case: str) -> None:
    with pytest.raises(ProfileError, match=r"^/(domain|network)"):
        spec_from_libvirt(HOSTILE[case])


def test_what_libvirt_cannot_express_is_refused_by_profile_key(debian_ovmf: Path) -> None:
    snp = guests()["sev-snp"]
    from cvmlaunch.guest.spec import IgvmConfig

    cases = {
        "cpu.name": snp._replace(cpu=CpuSpec(snp.cpu.signature if snp.cpu else 0)),
        "boot.kernel_sha256": guests()["sev-snp-direct"]._replace(
            boot=DirectBoot(BootFile(sha256=bytes(32)))
        ),
        "snp.guest_features": snp._replace(guest_features=0x21),
        "sev.policy": guests()["sev"]._replace(sev_policy=0x5),
        "tdx.page_order": guests()["tdx"]._replace(td=TdConfig(page_order="section")),  # type: ignore[arg-type]
        "tdx.attributes": guests()["tdx"]._replace(td=TdConfig(attributes=1 << 28 | 1)),
        "firmware.igvm": snp._replace(igvm=IgvmConfig(), cpu=None),
        "libvirt.version": snp._replace(vm=None),
    }
    for key, spec in cases.items():
        with pytest.raises(ProfileError) as refused:
            domain_of(spec)
        assert key in [p.field for p in refused.value.problems], (key, refused.value)
