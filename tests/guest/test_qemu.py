"""guest/qemu.py: QEMU arguments out of a GuestSpec, checked against the real QAPI schemas of
each QEMU version, and a GuestSpec back out of QEMU command lines (ours, libvirt's own test
outputs, and real-world launchers')."""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.qemu import (
    PROPERTIES,
    confidential_object,
    qemu_args,
    qemu_argv_json,
)
from cvmlaunch.guest.qemu_import import spec_from_qemu
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    IdBlockConfig,
    IgvmConfig,
    TdConfig,
    Technology,
    VmDefinition,
)
from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan
from tests.conftest import DEBIAN_OVMF, VECTORS

VMDEF = VECTORS / "vmdef"
QAPI = VMDEF / "qemu-qapi"
CMDLINES = VMDEF / "qemu-cmdlines"
PROFILES = Path(__file__).parents[2] / "profiles"
SEV, SEV_ES, SNP, TDX = Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP, Technology.TDX
_KINDS = {"uint32": int, "uint64": int, "int": int, "bool": bool, "boolean": bool,
          "str": str, "string": str}  # fmt: skip


def _source_schema(path: Path) -> dict[str, dict[str, type]]:
    """qom.json's confidential types (tools/qapi_parse.py output), bases flattened."""
    doc = json.loads(path.read_text())
    out = {}
    for kind, branch in doc["ObjectOptions_branches"].items():
        name = branch if isinstance(branch, str) else branch["type"]
        props: dict[str, type] = {}
        while name is not None:
            for key, t in doc[name]["data"].items():
                props[key.lstrip("*")] = _KINDS.get(t, object) if isinstance(t, str) else object
            name = doc[name]["base"]
        out[kind] = props
    return out


def _introspected(path: Path) -> dict[str, dict[str, type]]:
    doc = json.loads(path.read_text())
    return {kind: {p: _KINDS.get(d["type"], object) if isinstance(d["type"], str) else object
                   for p, d in doc[kind].items()}
            for kind in doc["_confidential_qom_types_present"] if kind in doc}  # fmt: skip


SCHEMAS = {
    ("7.2", "qom.json"): _source_schema(QAPI / "7.2.0/confidential-types.json"),
    ("8.2", "introspection"): _introspected(
        QAPI / "8.2.0/introspection/caps_8.2.0_x86_64.confidential.json"),
    ("9.1", "introspection"): _introspected(
        QAPI / "9.1.0/introspection/caps_9.1.0_x86_64.confidential.json"),
    ("9.2", "introspection"): _introspected(
        QAPI / "9.2.0/introspection/caps_9.2.0_x86_64+amdsev.confidential.json"),
    ("10.0", "qom.json"): _source_schema(QAPI / "10.0.13/confidential-types.json"),
    ("10.0", "introspection"): _introspected(
        QAPI / "10.0.13/introspection/caps_10.0.0_x86_64+amdsev.confidential.json"),
    ("10.2", "qom.json"): _source_schema(QAPI / "10.2.2/confidential-types.json"),
    ("11.1", "introspection"): _introspected(
        QAPI / "11.1.3/introspection/confidential-from-introspection.json"),
}  # fmt: skip
_BASE64 = {"id-block": (96, 96), "id-auth": (1, 4096), "host-data": (32, 32),
           "mrconfigid": (48, 48), "mrowner": (48, 48), "mrownerconfig": (48, 48)}  # fmt: skip


def _spec(technology: Technology, firmware: Path, **kw: Any) -> GuestSpec:
    if technology is not TDX and "cpu" not in kw:
        kw["cpu"] = CpuSpec.from_name("EPYC-v4")
    return GuestSpec(technology, firmware, **kw).check()


def _full(technology: Technology, firmware: Path, boot: DirectBoot) -> GuestSpec:
    """A guest that fixes every property its object can carry."""
    if technology is TDX:
        mr = bytes(range(48))
        td = TdConfig(attributes=(1 << 28) | (1 << 30), mrconfigid=mr, mrowner=mr[::-1],
                      mrownerconfig=bytes(47) + b"\1")  # fmt: skip
        return _spec(TDX, firmware, vcpus=2, memory_mib=4096, td=td)
    if technology is SNP:
        return _spec(SNP, firmware, boot=boot, vcpus=2, host_data=bytes(range(32)),
                     id_block=IdBlockConfig(block=b"\1" * 96, auth=b"\2" * 4096))  # fmt: skip
    return _spec(technology, firmware, boot=boot, sev_policy=0x5 if technology is SEV_ES else 1)


@pytest.fixture
def boot(tmp_path: Path) -> DirectBoot:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"MZ" + bytes(4094))
    initrd.write_bytes(b"initrd")
    return DirectBoot(BootFile(kernel), BootFile(initrd), "console=ttyS0")


@pytest.mark.parametrize("where", list(SCHEMAS), ids="-".join)
@pytest.mark.parametrize("technology", [SEV, SEV_ES, SNP, TDX], ids=str)
def test_objects_follow_the_schema_of_the_version(
    where: tuple[str, str], technology: Technology, boot: DirectBoot
) -> None:
    version, _ = where
    schema = SCHEMAS[where]
    spec = _full(technology, DEBIAN_OVMF, boot)
    kind = (
        "tdx-guest" if technology is TDX else "sev-snp-guest" if technology is SNP else "sev-guest"
    )
    if kind not in schema:  # that QEMU cannot boot it: refused naming the version
        with pytest.raises(ProfileError) as e:
            qemu_args(spec, version=version)
        assert [p.field for p in e.value.problems] == ["qemu.version"]
        assert kind in str(e.value)
        return
    obj = confidential_object(spec, version=version)
    assert obj["qom-type"] == kind
    props = {k: v for k, v in obj.items() if k not in ("qom-type", "id")}
    assert props.keys() <= schema[kind].keys()
    for name, value in props.items():
        assert type(value) is schema[kind][name], name  # int vs bool vs str as the schema says
        if name in _BASE64:
            low, high = _BASE64[name]
            assert low <= len(base64.b64decode(str(value), validate=True)) <= high
    if "reduced-phys-bits" in schema[kind]:  # mandatory in every version
        assert "reduced-phys-bits" in props
    # Our own table says the same as the schema.
    assert {p for p, since in PROPERTIES[kind].items()
            if since <= tuple(map(int, version.split(".")))} >= props.keys()  # fmt: skip
    argv = qemu_args(spec, version=version)
    assert argv[argv.index("-object", argv.index("-bios")) + 1].startswith(kind + ",id=")


def test_the_property_table_matches_every_schema() -> None:
    for (version, _), schema in SCHEMAS.items():
        v = tuple(map(int, version.split(".")))
        for kind, props in PROPERTIES.items():
            ours = {p for p, since in props.items() if since <= v}
            if kind in schema:
                assert ours == schema[kind].keys(), (version, kind)
            elif kind != "igvm-cfg":  # built without CONFIG_IGVM
                assert not ours, (version, kind)


@pytest.mark.parametrize(
    ("technology", "version", "reason"),
    [(SNP, "8.2", "sev-snp-guest (since 9.1)"), (SNP, "9.0", "sev-snp-guest"),
     (TDX, "9.2", "tdx-guest (since 10.1)"), (TDX, "10.0", "tdx-guest")],
)  # fmt: skip
def test_versions_that_cannot_boot_refuse(
    technology: Technology, version: str, reason: str
) -> None:
    with pytest.raises(ProfileError, match=re.escape(reason)) as e:
        qemu_args(_spec(technology, DEBIAN_OVMF), version=version)
    assert [p.field for p in e.value.problems] == ["qemu.version"]


def test_refusals_name_every_key_at_once() -> None:
    td = TdConfig(attributes=1 | 1 << 28)
    spec = _spec(TDX, DEBIAN_OVMF, td=td, vm=VmDefinition(qemu_version="10.2"))
    with pytest.raises(ProfileError) as e:
        qemu_args(spec)
    fields = {p.field for p in e.value.problems}
    assert {"tdx.attributes"} <= fields
    snp = _spec(SNP, DEBIAN_OVMF, guest_features=0x21, cpu=CpuSpec(0x00A00F11))
    with pytest.raises(ProfileError) as e:
        qemu_args(snp, version="9.1")
    assert {p.field for p in e.value.problems} == {"snp.guest_features", "cpu"}
    ec2 = _spec(SNP, DEBIAN_OVMF, vmm="ec2")
    with pytest.raises(ProfileError, match="vmm"):
        qemu_args(ec2, version="10.2")
    with pytest.raises(ProfileError, match=r"qemu\.version"):
        qemu_args(snp)
    hashed = _spec(SNP, DEBIAN_OVMF, boot=DirectBoot(BootFile(sha256=bytes(32))))
    with pytest.raises(ProfileError, match=r"boot\.kernel"):
        qemu_args(hashed, version="10.2")


def test_argv_json_is_the_argv() -> None:
    spec = _spec(SNP, DEBIAN_OVMF)
    assert json.loads(qemu_argv_json(spec, version="10.2")) == qemu_args(spec, version="10.2")


def _digest(spec: GuestSpec) -> bytes:
    return measure(build_plan(spec)).digest


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_profile_round_trips(path: Path, debian_ovmf: Path) -> None:
    spec = load_profile(path).to_spec()
    if spec.vmm.value != "qemu":
        with pytest.raises(ProfileError, match="vmm"):
            qemu_args(spec, version="10.2")
        return
    back = spec_from_qemu(qemu_args(spec, version="10.2"), version="10.2")
    assert back.technology is spec.technology
    assert _digest(back) == _digest(spec)


_MODELS = ["EPYC", "EPYC-v4", "EPYC-Rome", "EPYC-Milan-v2", "EPYC-Genoa", "EPYC-Turin"]


@st.composite
def guests(draw: st.DrawFn, files: tuple[Path, Path]) -> tuple[GuestSpec, str]:
    technology = draw(st.sampled_from([SEV, SEV_ES, SNP, TDX]))
    version = draw(st.sampled_from(["10.1", "10.2", "11.1"] if technology is TDX
                                   else ["9.1", "9.2", "10.0", "10.2", "11.1"]))  # fmt: skip
    kw: dict[str, Any] = {"vcpus": draw(st.integers(1, 16)),
                          "memory_mib": draw(st.sampled_from([512, 2048, 6144]))}  # fmt: skip
    if technology is not TDX and draw(st.booleans()):
        initrd = BootFile(files[1]) if draw(st.booleans()) else None
        kw["firmware"] = VECTORS / "snp" / "ovmf_AmdSev_suffix.bin"  # has the hashes area
        kw["boot"] = DirectBoot(BootFile(files[0]), initrd, draw(st.text(max_size=20).filter(
            lambda t: "\0" not in t)))  # fmt: skip
    if technology is TDX:
        attributes = draw(st.sampled_from([0, 1 << 28, 1 << 30, 1 << 28 | 1 << 63]))
        mr = draw(st.binary(min_size=48, max_size=48))
        kw["td"] = TdConfig(attributes=attributes, mrconfigid=mr)
    else:
        kw["cpu"] = CpuSpec.from_name(draw(st.sampled_from(_MODELS)))
        kw["vm"] = VmDefinition(cbitpos=draw(st.sampled_from([47, 51])))
    if technology is SNP:
        kw["snp_policy"] = 0x30000 | draw(st.sampled_from([0, 1 << 19, 1 << 16 | 0x1F]))
        kw["host_data"] = draw(st.binary(min_size=32, max_size=32))
    elif technology is not TDX:
        kw["sev_policy"] = draw(st.integers(0, 0xFF)) | (4 if technology is SEV_ES else 0)
        kw["sev_policy"] &= ~0 if technology is SEV_ES else ~4
    firmware = kw.pop("firmware", DEBIAN_OVMF)
    return GuestSpec(technology, firmware, **kw).check(), version


def test_generated_guests_round_trip(debian_ovmf: Path, tmp_path: Path) -> None:
    kernel, initrd = tmp_path / "bzImage", tmp_path / "initrd.img"
    kernel.write_bytes(b"MZ" + bytes(8190))
    initrd.write_bytes(b"\x07\x07" * 100)
    seen: list[Technology] = []

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(guests((kernel, initrd)))
    def check(guest: tuple[GuestSpec, str]) -> None:
        spec, version = guest
        argv = qemu_args(spec, version=version)
        back = spec_from_qemu(shlex.split(shlex.join(argv)), version=version)
        assert _digest(back) == _digest(spec)
        assert confidential_object(back, version=version) == confidential_object(
            spec, version=version)  # fmt: skip
        seen.append(spec.technology)

    check()
    assert len(seen) >= 200 and set(seen) == {SEV, SEV_ES, SNP, TDX}


def _libvirt_argv(path: Path) -> list[str]:
    words = shlex.split(path.read_text().replace("\\\n", " "))
    return words[next(n for n, w in enumerate(words) if w.startswith("/usr/bin/qemu")) + 1 :]


def _object(argv: list[str], kind: str) -> dict[str, Any]:
    docs = [json.loads(a) for a in argv if a.startswith("{")]
    return next(d for d in docs if d.get("qom-type") == kind)


_NOT_MODELLED = {"dh-cert-file", "session-file", "guest-visible-workarounds", "vcek-disabled",
                 "quote-generation-socket"}  # fmt: skip
LIBVIRT = sorted(CMDLINES.glob("libvirt-*.args"))


@pytest.mark.parametrize("path", LIBVIRT, ids=lambda p: p.name.split("__")[1][:-5])
def test_libvirt_args_import_and_carry_the_same_object(path: Path) -> None:
    argv = _libvirt_argv(path)
    firmware = Path("/usr/share/ovmf/OVMF.fd")  # libvirt's auto-selected firmware
    spec = spec_from_qemu(argv, firmware=firmware)
    kind = next(
        k for k in ("sev-snp-guest", "tdx-guest", "sev-guest") if f'"{k}"' in "".join(argv)
    )
    theirs = _object(argv, kind)
    if kind == "tdx-guest":
        assert spec.technology is TDX and spec.vcpus == 4 and spec.memory_mib == 4096
        assert spec.td_config.attributes == 1 << 28
        assert spec.td_config.mrowner == bytes.fromhex("0123456789abcdef") * 6
    elif kind == "sev-snp-guest":
        assert spec.technology is SNP and spec.snp_policy == 0x30000
        assert spec.cpu == CpuSpec(0x663, "qemu64")  # family 6 model 6 stepping 3
        assert spec.firmware == Path("/usr/share/edk2/ovmf/OVMF.amdsev.fd")  # pflash0 node
        assert spec.host_data == b"libvirtlibvirtlibvirtlibvirtlibv"
        assert spec.id_block is not None and spec.id_block.author_key_enabled
    else:
        assert spec.technology is SEV and spec.sev_policy == 1
        assert spec.cpu == CpuSpec(0x663, "qemu64")
        assert (spec.boot is not None) == ("direct" in path.name)
        if spec.boot is not None:
            assert spec.boot == DirectBoot(BootFile(Path("/vmlinuz")), BootFile(Path("/initrd")),
                                           "runme")  # fmt: skip
    assert spec.vcpus == (4 if kind == "tdx-guest" else 1)
    assert spec.memory_mib == (4096 if kind == "tdx-guest" else 214)
    ours = confidential_object(spec, version="11.1")
    drop = _NOT_MODELLED | {"id"}
    want = {k: v for k, v in theirs.items() if k not in drop}
    if kind == "sev-snp-guest":  # libvirt's ID auth is 4-byte aligned text; ours as QEMU pads it
        want["id-auth"] = base64.b64encode(base64.b64decode(want["id-auth"]).ljust(4096, b"\0"))
        want["id-auth"] = want["id-auth"].decode()
    assert {k: v for k, v in ours.items() if k != "id"} == want


def _quoted(path: Path, text: str) -> str:
    assert text in path.read_text(), text  # the line as the source wrote it
    return text


def test_real_world_command_lines() -> None:
    run_td = CMDLINES / "canonical-tdx__guest-tools_run_td.L150-192.txt"
    canonical = [
        "-accel", "kvm", "-m", "8G", "-smp", "4", "-name", "td,process=td,debug-threads=on",
        "-cpu", "host,-avx10",
        "-object", _quoted(run_td, '{"qom-type":"tdx-guest","id":"tdx","quote-generation-socket":'
                                   '{"type": "vsock", "cid":"2","port":"4050"}}'),
        "-object", "memory-backend-ram,id=mem0,size=8G",
        "-machine", _quoted(run_td, "q35,kernel_irqchip=split,confidential-guest-support=tdx,"
                                    "memory-backend=mem0"),
        "-bios", "/usr/share/ovmf/OVMF.fd", "-nographic", "-nodefaults", "-vga", "none",
        "-device", "virtio-net-pci,netdev=nic0_td", "-netdev", "user,id=nic0_td",
        "-drive", "file=td.qcow2,if=none,id=virtio-disk0",
        "-device", "virtio-blk-pci,drive=virtio-disk0", "-pidfile", "td.pid", "-daemonize",
    ]  # fmt: skip
    td = spec_from_qemu(canonical, version="10.2")
    assert (td.technology, td.vcpus, td.memory_mib, td.td_config.attributes) == (
        TDX, 4, 8192, 1 << 28)  # fmt: skip

    runner = CMDLINES / "dstack-312dc605__tools_vm-runner.py.L517-535.txt"
    dstack = ["-accel", "kvm", "-m", "2G", "-smp", "1", "-cpu", "host", "-machine",
              _quoted(runner, "q35,kernel_irqchip=split,confidential-guest-support=tdx,hpet=off"),
              "-object", _quoted(runner, "tdx-guest,id=tdx"), "-nographic", "-nodefaults",
              "-chardev", "stdio,id=ser0,signal=on", "-serial", "chardev:ser0",
              "-bios", "/srv/dstack/ovmf.fd",
              "-virtfs", "local,path=/srv/cfg,mount_tag=host-shared,id=virtfs0",
              "-device", "vhost-vsock-pci,guest-cid=3"]  # fmt: skip
    assert spec_from_qemu(dstack).memory_mib == 2048
    # With its kernel, a TD's RTMR1-2 need the firmware's edk2 release and QEMU's version.
    with pytest.raises(ProfileError) as e:
        spec_from_qemu([*dstack, "-kernel", "/srv/dstack/bzImage"])
    assert {p.field for p in e.value.problems} >= {"boot"}

    kata = CMDLINES / "kata-4.1.0__govmm_qemu.go.L500-582.txt"
    assert '`json:"debug,omitempty"`' in kata.read_text()
    debug = '{"qom-type":"tdx-guest","id":"tdx","debug":true}'
    with pytest.raises(ProfileError) as e:
        spec_from_qemu(["-machine", "q35,confidential-guest-support=tdx", "-object", debug,
                        "-bios", "/srv/OVMF.fd"], version="10.2")  # fmt: skip
    assert [p.field for p in e.value.problems] == ["-object tdx-guest.debug"]

    rs = CMDLINES / "kata-4.1.0__runtime-rs_cmdline_generator.rs.L3256-3315.txt"
    assert 'self.cpu.set_type("EPYC-v4")' in rs.read_text()
    host_data = base64.b64encode(bytes(range(32))).decode()
    kata_snp = ["-machine", "q35,kernel_irqchip=split,confidential-guest-support=snp,nvdimm=off",
                "-cpu", "EPYC-v4", "-smp", "2", "-m", "2048M",
                "-object", f"sev-snp-guest,id=snp,cbitpos=51,reduced-phys-bits=1,"
                           f"kernel-hashes=on,policy=0x30000,host-data={host_data}",
                "-bios", "/opt/kata/share/ovmf/AMDSEV.fd"]  # fmt: skip
    snp = spec_from_qemu(kata_snp)
    assert (snp.technology, snp.host_data, snp.boot) == (SNP, bytes(range(32)), None)

    vmm = CMDLINES / "dstack-312dc605__vmm_src_app_qemu.rs.L825-926.txt"
    dstack_snp = [
        "-machine", _quoted(vmm, "q35,kernel-irqchip=split,confidential-guest-support=sev0,"
                                 "memory-backend=ram1,hpet=off"),
        "-object", "memory-backend-memfd,id=ram1,size=4G", "-cpu", "EPYC-Genoa",
        "-object", f"sev-snp-guest,id=sev0,policy=0x30000,sev-device=/dev/sev,"
                   f"kernel-hashes=on,host-data={host_data},cbitpos=51,reduced-phys-bits=1",
        "-bios", "/srv/ovmf.fd", "-kernel", "/srv/bzImage", "-append", "console=ttyS0",
    ]  # fmt: skip
    snp = spec_from_qemu(dstack_snp)
    assert snp.memory_mib == 4096 and snp.boot is not None and snp.boot.initrd is None

    install = CMDLINES / "coconut-svsm-f4bc4bcd__INSTALL.md.L311-327.sh"
    text = install.read_text().replace("\\\n", " ")
    words = shlex.split(text[text.index("qemu-system-x86_64") :].split("```")[0])[1:]
    with pytest.raises(ProfileError) as e:
        spec_from_qemu(words)
    # COCONUT's QEMU fork plane property, and the IGVM file the script names by a variable.
    assert [p.field for p in e.value.problems] == ["-machine device-plane",
                                                   "-object igvm-cfg.file"]  # fmt: skip
    assert "$IGVM" in str(e.value)


@pytest.mark.parametrize(
    ("args", "field"),
    [(["-machine", "q35", "-bios", "x"], "-machine confidential-guest-support"),
     (["-machine", "q35,confidential-guest-support=s", "-bios", "x", "-object",
       "sev-snp-guest,id=s,reduced-phys-bits=1,certs-path=/srv/certs"],
      "-object sev-snp-guest.certs-path"),
     (["-machine", "q35,confidential-guest-support=s", "-bios", "x", "-object",
       "sev-guest,id=s,reduced-phys-bits=1", "-L", "/srv/fw"], "-L"),
     (["-machine", "q35,confidential-guest-support=s", "-bios", "x", "-object",
       "sev-snp-guest,id=s,reduced-phys-bits=1,host-data=" + "ab" * 32, "-cpu", "EPYC"],
      "-object sev-snp-guest.host-data"),
     (["-machine", "q35,confidential-guest-support=s", "-bios", "x", "-object",
       "sev-snp-guest,id=s,reduced-phys-bits=1", "-cpu", "host"], "-cpu"),
     (["-machine", "q35,confidential-guest-support=s", "-object", "sev-guest,id=s,policy=1"],
      "-bios"),
     (["-machine", "q35,confidential-guest-support=t", "-bios", "x", "-object",
       "tdx-guest,id=t", "-smbios", "type=1,serial=1"], "-smbios")],
)  # fmt: skip
def test_import_names_what_it_cannot_model(args: list[str], field: str) -> None:
    with pytest.raises(ProfileError) as e:
        spec_from_qemu(args)
    assert field in [p.field for p in e.value.problems]


def test_import_checks_the_named_version() -> None:
    args = ["-machine", "q35,confidential-guest-support=s", "-bios", "x", "-cpu", "EPYC",
            "-object", "sev-snp-guest,id=s,reduced-phys-bits=1"]  # fmt: skip
    assert spec_from_qemu(args, version="9.1").technology is SNP
    with pytest.raises(ProfileError, match=r"not in QEMU 8\.2"):
        spec_from_qemu(args, version="8.2")


def test_igvm_goes_through_igvm_cfg_from_10_1() -> None:
    spec = GuestSpec(SNP, Path("/srv/coconut.igvm"), igvm=IgvmConfig(native_zero=True)).check()
    argv = qemu_args(spec, version="10.1")
    assert "-bios" not in argv
    assert argv[1].endswith(",igvm-cfg=igvm0")
    assert "igvm-cfg,id=igvm0,file=/srv/coconut.igvm" in argv
    back = spec_from_qemu(argv)
    assert (back.firmware, back.igvm) == (spec.firmware, spec.igvm)
    with pytest.raises(ProfileError) as e:
        qemu_args(spec, version="9.2")
    assert [p.field for p in e.value.problems] == ["firmware.igvm"]
    with pytest.raises(ProfileError, match="igvm_native_zero"):
        qemu_args(spec._replace(igvm=IgvmConfig()), version="10.2")


def test_pflash_forms_name_the_firmware() -> None:
    base = ["-machine", "q35,confidential-guest-support=s", "-object",
            "sev-guest,id=s,cbitpos=47,reduced-phys-bits=1,policy=0x1"]  # fmt: skip
    kata = CMDLINES / "kata-4.1.0__govmm_qemu.go.L428-460.txt"
    assert '"if=pflash,format=raw,readonly=on"' in kata.read_text()  # Kata's SEV firmware
    code = ["-drive", "if=pflash,format=raw,readonly=on,file=/srv/OVMF_CODE.fd"]
    vars_ = ["-drive", "if=pflash,format=raw,file=/srv/OVMF_VARS.fd"]
    assert spec_from_qemu([*base, *code, *vars_]).firmware == Path("/srv/OVMF_CODE.fd")
    assert spec_from_qemu([*base, "-pflash", "/srv/a,b.fd"]).firmware == Path("/srv/a,b.fd")
    with pytest.raises(ProfileError, match="a second firmware"):
        spec_from_qemu([*base, *code, "-bios", "/srv/OVMF.fd"])


def test_a_td_is_booted_by_the_qemu_it_names() -> None:
    spec = _spec(TDX, DEBIAN_OVMF, td=TdConfig(qemu="10.1"))
    assert qemu_args(spec) == qemu_args(spec, version="10.1.0")
    with pytest.raises(ProfileError) as e:
        qemu_args(spec, version="10.2")
    assert [p.field for p in e.value.problems] == ["tdx.qemu"]


_VOCABULARY = [
    "-machine",
    "-object",
    "-cpu",
    "-smp",
    "-m",
    "-bios",
    "-drive",
    "-kernel",
    "-blockdev",
    "-append",
    "-device",
    "-nographic",
    "-M",
    "-pflash",
    "-initrd",
    "q35,confidential-guest-support=s",
    "sev-snp-guest,id=s,reduced-phys-bits=1",
    "tdx-guest,id=s",
    '{"qom-type":"sev-guest","id":"s","policy":[1]}',
    "{",
    "[]",
    '{"qom-type":["x"]}',
    '{"cpus":{}}',
    "EPYC",
    "2G",
    "x" * 3,
    "$X",
    ",,,=",
    "if=pflash",
    "unit=9",
    "memory-backend=r",
    "memory-backend-ram,id=r,size=1",
]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_VOCABULARY) | st.text(max_size=12), max_size=16))
def test_any_command_line_is_a_spec_or_a_profile_error(args: list[str]) -> None:
    try:
        spec_from_qemu(args)
    except ProfileError as e:
        assert e.problems


def test_an_id_block_signed_with_keys_comes_from_the_caller(debian_ovmf: Path) -> None:
    # The codec does not measure: a block to sign over the digest is signed by the caller
    # (`cvmlaunch qemu` does it with measure.idblock.signed_for).
    from cvmlaunch.measure.idblock import signed_for

    keys = Path(__file__).resolve().parents[1] / "vectors" / "idblock" / "virtee-sev"
    spec = _spec(SNP, debian_ovmf, id_block=IdBlockConfig(keys / "test_id_key.pem"))
    with pytest.raises(ProfileError, match=r"^snp\.id_block: signed over the launch digest"):
        qemu_args(spec, version="10.2")
    signed = signed_for(spec)
    assert signed is not None
    obj = confidential_object(spec, version="10.2", id_block=signed.parts)
    assert base64.b64decode(obj["id-block"]) == signed.block
    assert base64.b64decode(obj["id-auth"]) == signed.auth and obj["author-key-enabled"] is False
