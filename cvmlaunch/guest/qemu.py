"""QEMU's command line for a measured guest, both ways: the arguments that boot exactly the
guest a GuestSpec measures, for a named QEMU version, and the GuestSpec of a command line.

Object and property names are QEMU's QAPI (qapi/qom.json: SevGuestProperties,
SevSnpGuestProperties, TdxGuestProperties, IgvmCfgProperties); the version each appeared in
comes from the schemas under tests/vectors/vmdef/qemu-qapi (TABLE.md), which the tests hold
this table to. Every refusal is a ProfileError listing all problems at once: going out, each
names the profile key QEMU cannot honour; coming in, the option (and property) cvmlaunch
cannot model.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cvmlaunch.abi.snp import KVM_VMSA_GPA, SevFeature
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    IdBlockConfig,
    IgvmConfig,
    PageOrder,
    RawDataTail,
    TdConfig,
    VmDefinition,
    Vmm,
    qemu_version,
)
from cvmlaunch.guest.technology import Technology

Version = tuple[int, int]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


SEV, SEV_ES, SEV_SNP, TDX = Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP, Technology.TDX

# Object type -> property -> the first QEMU release that has it (QAPI "Since"; TABLE.md).
_SEV = "sev-device dh-cert-file session-file policy handle cbitpos reduced-phys-bits"
_SNP = (
    "sev-device cbitpos reduced-phys-bits kernel-hashes policy guest-visible-workarounds "
    "id-block id-auth author-key-enabled host-data vcek-disabled"
)
_TDX = "attributes sept-ve-disable mrconfigid mrowner mrownerconfig quote-generation-socket"
PROPERTIES: dict[str, dict[str, Version]] = {
    "sev-guest": dict.fromkeys(_SEV.split(), (2, 12)) | {"kernel-hashes": (6, 2),
                                                          "legacy-vm-type": (9, 1)},
    "sev-snp-guest": dict.fromkeys(_SNP.split(), (9, 1)),
    "tdx-guest": dict.fromkeys(_TDX.split(), (10, 1)),
    "igvm-cfg": {"file": (10, 1)},
}  # fmt: skip
SINCE = {kind: min(props.values()) for kind, props in PROPERTIES.items()}
_OBJECT = {SEV: "sev-guest", SEV_ES: "sev-guest", SEV_SNP: "sev-snp-guest", TDX: "tdx-guest"}
_INT_PROPERTIES = _words("policy handle cbitpos reduced-phys-bits attributes")
_BOOL_PROPERTIES = _words("kernel-hashes author-key-enabled vcek-disabled sept-ve-disable")
# Read and left out of the spec, as they enter no digest and no report field we model: the
# host's SEV device, the owner's session keys (the HMAC, not the digest), an SEV context's
# handle, SNP_LAUNCH_START's GOSVW, which key signs reports, the host's quote service.
_NOT_MEASURED = _words(
    "sev-device dh-cert-file session-file handle guest-visible-workarounds vcek-disabled "
    "quote-generation-socket"
)
_BASE64_SIZES = {"id-block": 96, "host-data": 32} | dict.fromkeys(_TDX.split()[2:5], 48)
_ID_AUTH_MAX = 4096  # sev.c: decoded id-auth may be shorter, never longer
# tdx.c (tdx_validate_attributes): the TD attribute bits QEMU lets a guest set.
TD_ATTRIBUTES_QEMU = (1 << 28) | (1 << 30) | (1 << 63)  # SEPT_VE_DISABLE, PKS, PERFMON
# XFAM follows the -cpu model's XSAVE components (no property sets it): those QEMU's
# x86_ext_save_areas knows, x87..AVX-512, PT, PKRU, CET_U/S, ARCH_LBR, AMX.
XFAM_QEMU = sum(1 << b for b in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 15, 17, 18))


def qemu_version_of(spec: GuestSpec, version: str | None = None) -> str:
    """The QEMU version the arguments are for: `version`, else [qemu] version, else a TD's
    tdx.qemu. ProfileError (qemu.version) if none, or it is no version."""
    return _version(spec, version)[0]


def _version(spec: GuestSpec, version: str | None) -> tuple[str, Version]:
    td = spec.td_config if spec.technology is TDX else None
    text = version or spec.vm_definition.qemu_version or (td.qemu if td else None)
    parsed = None if text is None else qemu_version(text)
    if text is None or parsed is None:
        reason = "required: which QEMU boots the guest (its object properties differ)"
        if text is not None:
            reason = f"expected a version like 10.2 or 9.1.0, got {text!r}"
        raise ProfileError([FieldProblem("qemu.version", reason)])
    if td is not None and td.qemu is not None and qemu_version(td.qemu) != parsed:
        reason = f"{td.qemu}, but the arguments are for QEMU {text}: one QEMU boots it"
        raise ProfileError([FieldProblem("tdx.qemu", reason)])
    return text, parsed


def _problems(spec: GuestSpec, text: str, v: Version) -> Iterator[FieldProblem]:
    """Why QEMU `v` cannot boot exactly `spec`."""
    tech, obj = spec.technology, _OBJECT[spec.technology]
    if v < SINCE[obj]:
        since = ".".join(map(str, SINCE[obj]))
        yield FieldProblem("qemu.version", f"QEMU {text} has no {obj} (since {since})")
    if spec.vmm is not Vmm.QEMU:
        yield FieldProblem("vmm", f"{spec.vmm}'s initial vCPU state is its own, not QEMU's")
    for key, value in (("firmware.descriptor", spec.firmware_descriptor),
                       ("firmware.digest", spec.firmware_digest)):  # fmt: skip
        if value is not None:
            yield FieldProblem(key, "QEMU boots the firmware file itself")
    if spec.igvm is not None:
        if v < SINCE["igvm-cfg"]:
            yield FieldProblem("firmware.igvm", f"QEMU {text} has no igvm-cfg (since 10.1)")
        if not spec.igvm.native_zero:  # igvm.c: PAGE_DATA without data is a ZERO page
            yield FieldProblem("firmware.igvm_native_zero", "QEMU's loader measures empty "
                               "PAGE_DATA as SNP ZERO pages: set it true")  # fmt: skip
    if tech is not TDX and spec.cpu is not None and spec.cpu.name is None:
        yield FieldProblem("cpu", "-cpu takes a model name, not a CPUID signature")
    boot = spec.boot
    for key, item in (("boot.kernel", boot.kernel), ("boot.initrd", boot.initrd)) if boot else ():
        if item is not None and item.path is None:
            yield FieldProblem(key, "given by its SHA-256 only: QEMU boots the file")
    if tech is SEV_SNP:
        if spec.guest_features != 1 << SevFeature.SNP_ACTIVE:
            yield FieldProblem("snp.guest_features", "QEMU passes KVM_SEV_INIT2 no VMSA "
                               "features: SNPActive (0x1) only")  # fmt: skip
        if spec.vmsa_gpa != KVM_VMSA_GPA:
            yield FieldProblem("snp.vmsa_gpa", f"KVM measures VMSAs at {KVM_VMSA_GPA:#x}")
    if tech is TDX:
        td = spec.td_config
        if td.attributes & ~TD_ATTRIBUTES_QEMU:
            bad = td.attributes & ~TD_ATTRIBUTES_QEMU
            yield FieldProblem("tdx.attributes", f"QEMU refuses bits {bad:#x} (it allows "
                               "SEPT_VE_DISABLE, PKS, PERFMON)")  # fmt: skip
        if td.xfam is not None and td.xfam & ~XFAM_QEMU:
            yield FieldProblem("tdx.xfam", f"no QEMU CPU model has XSAVE components "
                               f"{td.xfam & ~XFAM_QEMU:#x}")  # fmt: skip
        if td.page_order is not PageOrder.PAGE:
            yield FieldProblem("tdx.page_order", "upstream QEMU/KVM add and extend page by page")
        if td.raw_data_tail is not RawDataTail.IMAGE:
            yield FieldProblem("tdx.raw_data_tail", "QEMU copies the section from the image")
        if td.kernel_authenticode is not None:
            yield FieldProblem("tdx.kernel_authenticode", "a boot given by digests cannot boot")


def confidential_object(spec: GuestSpec, *, version: str | None = None) -> dict[str, Any]:
    """The confidential-guest object as QMP `object-add` takes it: qom-type, id and every
    property the spec fixes, typed (QAPI int/bool/str). ProfileError: what QEMU `version`
    (else the spec's [qemu] version) cannot boot."""
    return _launch(spec, version)[1]


def qemu_args(spec: GuestSpec, *, version: str | None = None) -> list[str]:
    """The QEMU arguments (after the binary) that boot exactly the guest `spec` measures,
    for QEMU `version` (else [qemu] version, else a TD's tdx.qemu). ProfileError lists
    every key that version cannot boot."""
    return _launch(spec, version)[0]


def qemu_argv_json(spec: GuestSpec, *, version: str | None = None) -> str:
    """`qemu_args` as a JSON array."""
    return json.dumps(qemu_args(spec, version=version))


def _launch(spec: GuestSpec, version: str | None) -> tuple[list[str], dict[str, Any]]:
    spec = spec.check()
    text, v = _version(spec, version)
    problems = list(_problems(spec, text, v))
    if problems:
        raise ProfileError(problems)
    tech, vm = spec.technology, spec.vm_definition
    cgs: dict[str, Any] = {"qom-type": _OBJECT[tech], "id": "tdx0" if tech is TDX else "sev0"}
    machine = [vm.machine, f"confidential-guest-support={cgs['id']}", "memory-backend=ram0"]
    if tech is TDX:
        td = spec.td_config
        cgs["attributes"] = td.attributes  # SEPT_VE_DISABLE is its bit 28, as libvirt gives it
        for name in ("mrconfigid", "mrowner", "mrownerconfig"):
            if any(getattr(td, name)):
                cgs[name] = base64.b64encode(getattr(td, name)).decode()
        machine.append("kernel-irqchip=split")  # tdx.rst: a TD needs the split irqchip
    else:
        cgs["policy"] = spec.snp_policy if tech is SEV_SNP else spec.sev_policy
        cgs |= {"cbitpos": vm.cbitpos, "reduced-phys-bits": vm.reduced_phys_bits}
        if spec.boot is not None:
            cgs["kernel-hashes"] = True
    if tech is SEV_SNP:
        if any(spec.host_data):
            cgs["host-data"] = base64.b64encode(spec.host_data).decode()
        if spec.id_block is not None:
            cgs |= _id_block(spec, spec.id_block)
    missing = [
        p for p in cgs if p not in ("qom-type", "id") and PROPERTIES[cgs["qom-type"]][p] > v
    ]
    if missing:
        reason = f"QEMU {text}'s {cgs['qom-type']} has no {', '.join(missing)}"
        raise ProfileError([FieldProblem("qemu.version", reason)])
    args = ["-machine", ",".join(machine)]
    if spec.technology is TDX:
        args += ["-cpu", "host"]  # XFAM and CPUID follow the host's (tdx.rst)
    elif spec.cpu is not None and spec.cpu.name is not None:
        args += ["-cpu", spec.cpu.name]
    args += ["-smp", str(spec.vcpus), "-m", f"{spec.memory_mib}M"]
    args += ["-object", f"memory-backend-ram,id=ram0,size={spec.memory_mib}M"]
    if spec.igvm is not None:
        args[1] += ",igvm-cfg=igvm0"
        args += ["-object", f"igvm-cfg,id=igvm0,file={_escaped(str(spec.firmware))}"]
    else:  # SNP and TDX take no read-only pflash (tdx.rst); -bios serves SEV as well
        args += ["-bios", str(spec.firmware)]
    args += ["-object", _key_values(cgs)]
    if spec.boot is not None:
        args += ["-kernel", str(spec.boot.kernel.path)]
        if spec.boot.initrd is not None:
            args += ["-initrd", str(spec.boot.initrd.path)]
        args += ["-append", spec.boot.cmdline]
    return args, cgs


def _id_block(spec: GuestSpec, config: IdBlockConfig) -> dict[str, Any]:
    """id-block, id-auth, author-key-enabled: as given signed (measure and launch check it
    against the digest), or signed here over the digest this spec measures."""
    from cvmlaunch.measure.idblock import SignedIdBlock, id_block_for

    if config.block is not None and config.auth is not None:
        signed = SignedIdBlock(config.block, config.auth, config.author_key_enabled)
    else:
        from cvmlaunch.measure import measure
        from cvmlaunch.plan import build_plan

        ld = measure(build_plan(spec)).digest
        signed = id_block_for(config, ld=ld, policy=spec.snp_policy)
    props = signed.qemu()
    return {**props, "author-key-enabled": props["author-key-enabled"] == "on"}


def _escaped(value: str) -> str:
    return value.replace(",", ",,")  # QemuOpts: a comma inside a value is doubled


def _key_values(obj: dict[str, Any]) -> str:
    """`obj` in -object's key=value syntax: integers of bit fields in hex, booleans on/off."""
    parts = [obj["qom-type"]]
    for key, value in obj.items():
        text = str(value)
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif isinstance(value, int) and key in ("policy", "attributes"):
            text = hex(value)
        if key != "qom-type":
            parts.append(f"{key}={_escaped(text)}")
    return ",".join(parts)


# ---- in: a command line read back into a GuestSpec -------------------------------------------

# Options read below. The allowlist after it: what boots beside the measured image and
# changes no digest (devices, disks, network, consoles, monitors, process and host
# settings). ACPI/SMBIOS shape only a TD's RTMR0, which a spec takes as given digests.
_READ = _words("machine M cpu smp m bios drive pflash blockdev object kernel initrd append accel")
_IGNORED_WITH_ARG = _words(
    "device netdev nic net chardev serial parallel monitor mon qmp qmp-pretty display vga vnc "
    "spice audiodev name uuid pidfile sandbox msg overcommit rtc boot watchdog-action global "
    "fsdev virtfs d D trace k run-with usbdevice iscsi add-fd fw_cfg action incoming gdb "
    "debugcon smbios shim acpitable"
)
_IGNORED_FLAGS = _words(
    "nographic nodefaults no-user-config S no-shutdown no-reboot daemonize no-acpi no-hpet "
    "snapshot usb s full-screen enable-kvm"
)
# A TD's firmware measures what these add (RTMR0/RTMR1), which a spec does not model.
_TD_MEASURED = frozenset({"smbios", "shim", "acpitable"})
# -machine properties that shape no digest (a TD's ACPI tables enter RTMR0 as given digests).
_MACHINE_IGNORED = _words(
    "type accel kernel-irqchip kernel_irqchip usb dump-guest-core acpi hpet smm vmport nvdimm "
    "graphics mem-merge sata pic pit i8042 hmat suppress-vmdesc pflash1"
)
_MACHINE_READ = frozenset({"confidential-guest-support", "memory-backend", "igvm-cfg", "pflash0"})
_IGNORED_OBJECTS = _words(
    "secret iothread rng-random rng-builtin rng-egd tls-creds-x509 tls-creds-psk "
    "tls-creds-anon throttle-group thread-context main-loop"
)
_MEMORY_BACKENDS = frozenset({"memory-backend-ram", "memory-backend-memfd", "memory-backend-file"})
_SIZE_SUFFIX = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def _options(text: str, implied: str | None) -> dict[str, Any]:
    """A QemuOpts argument (`a=b,,c,d`) or, starting with `{`, its JSON form."""
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc
    out: dict[str, Any] = {}
    parts = text.replace(",,", "\0").split(",")
    for n, part in enumerate(p.replace("\0", ",") for p in parts):
        key, eq, value = part.partition("=")
        if not eq and n == 0 and implied is not None:
            key, value = implied, key
        elif not eq:  # QemuOpts: a bare key is a boolean switched on
            value = "on"
        out[key] = value
    return out


def _size(value: object, default_shift: int) -> int:
    """A QEMU size (`2G`, `219136k`, 4096 in MiB for -m) in bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    shift = default_shift
    if text and text[-1] in _SIZE_SUFFIX:
        text, shift = text[:-1], _SIZE_SUFFIX[text[-1]]
    if not text.isdigit():
        raise ValueError(f"not a size: {value!r}")
    return int(text) << shift


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if str(value) in ("on", "yes", "true", "y"):
        return True
    if str(value) in ("off", "no", "false", "n"):
        return False
    raise ValueError(f"not on/off: {value!r}")


def _b64(value: object, size: int | None) -> bytes:
    data = base64.b64decode(str(value), validate=True)
    if (size is not None and len(data) != size) or len(data) > _ID_AUTH_MAX:
        raise ValueError(f"base64 of {len(data)} bytes, QEMU takes {size or '<= 4096'}")
    return data


def _file(value: object, option: str, out: list[FieldProblem]) -> Path:
    if "$" in str(value):  # a script's variable: which file it names is not known here
        out.append(FieldProblem(option, f"{value!r} is an unexpanded variable, not a file"))
    return Path(str(value))


def spec_from_qemu(
    args: Sequence[str],
    *,
    version: str | None = None,
    firmware: Path | None = None,
    edk2: int | None = None,
) -> GuestSpec:
    """The GuestSpec of the guest a QEMU command line (arguments after the binary) boots.
    `version`: the QEMU that runs it (recorded, and its schema checked); `firmware`: the
    image when the line names none (libvirt's firmware auto-selection); `edk2`: a TD's
    firmware release, to predict what it measures of a kernel. ProfileError names every
    option (and property) that cannot be modelled."""
    out: list[FieldProblem] = []
    v = None if version is None else qemu_version(version)
    if version is not None and v is None:
        out.append(FieldProblem("qemu.version", f"expected a version like 10.2, got {version!r}"))
    seen: dict[str, list[dict[str, Any]]] = {}
    words = list(args)
    n = 0
    while n < len(words):
        word, n = words[n], n + 1
        name = word.lstrip("-") if word.startswith("-") else None
        if name is None:
            out.append(FieldProblem(word, "not an option: arguments start after the binary"))
            continue
        if name in _IGNORED_FLAGS:
            continue
        if name not in _READ and name not in _IGNORED_WITH_ARG:
            has_arg = n < len(words) and not words[n].startswith("-")
            n += has_arg
            out.append(FieldProblem(f"-{name}", "not an option cvmlaunch knows the effect of"))
            continue
        if n >= len(words):
            out.append(FieldProblem(f"-{name}", "takes an argument"))
            continue
        value, n = words[n], n + 1
        implied = {"machine": "type", "M": "type", "cpu": "name", "smp": "cpus", "m": "size",
                   "object": "qom-type"}.get(name)  # fmt: skip
        if name in ("kernel", "initrd", "append", "bios", "pflash", "accel"):
            seen.setdefault(name, []).append({"value": value})
        elif name in _READ or name in _TD_MEASURED:
            try:
                seen.setdefault("machine" if name == "M" else name, []).append(
                    _options(value, implied)
                )
            except ValueError as e:
                out.append(FieldProblem(f"-{name}", str(e)))
    spec = _spec(seen, out, version=version, v=v, firmware=firmware, edk2=edk2)
    if out:
        raise ProfileError(out)
    return spec.check()


def _spec(
    seen: dict[str, list[dict[str, Any]]],
    out: list[FieldProblem],
    *,
    version: str | None,
    v: Version | None,
    firmware: Path | None,
    edk2: int | None,
) -> GuestSpec:
    machine: dict[str, Any] = {}
    for m in seen.get("machine", []):
        machine |= m
    for key in sorted(machine.keys() - _MACHINE_IGNORED - _MACHINE_READ):
        out.append(FieldProblem(f"-machine {key}", "not a property cvmlaunch can model"))
    objects = {str(o["id"]): o for o in seen.get("object", []) if "id" in o}
    for o in seen.get("object", []):
        kind = str(o.get("qom-type"))
        if kind not in PROPERTIES.keys() | _MEMORY_BACKENDS | _IGNORED_OBJECTS:
            out.append(FieldProblem(f"-object {kind}", "an object cvmlaunch cannot model"))
    cgs = objects.get(str(machine.get("confidential-guest-support")))
    if cgs is None or str(cgs.get("qom-type")) not in set(_OBJECT.values()):
        reason = "required: a sev-guest, sev-snp-guest or tdx-guest's id"
        out.append(FieldProblem("-machine confidential-guest-support", reason))
        return GuestSpec(SEV_SNP, Path())
    kind = str(cgs["qom-type"])
    props = _props(kind, cgs, v, out)
    tech = {"sev-snp-guest": SEV_SNP, "tdx-guest": TDX}.get(kind)
    if tech is None:
        tech = SEV_ES if props.get("policy", 1) & 0x4 else SEV  # policy bit 2: ES
    if tech is TDX:
        for name in _TD_MEASURED & seen.keys():
            out.append(FieldProblem(f"-{name}", "a TD's firmware measures it (RTMR0/1)"))
    fields: dict[str, Any] = {"technology": tech, "vcpus": _vcpus(seen, out)}
    fields["memory_mib"] = _memory(seen, machine, objects, out)
    fields["firmware"], fields["igvm"] = _firmware(seen, machine, objects, firmware, out)
    boot = _boot(seen, props, tech, out)
    fields["boot"] = boot
    if tech is not TDX:
        fields["cpu"] = _cpu(seen, tech, out)
    vm = VmDefinition(qemu_version=version)
    if tech is TDX:
        attributes = props.get("attributes", 1 << 28)
        if "sept-ve-disable" in props:
            attributes = attributes & ~(1 << 28) | props["sept-ve-disable"] << 28
        mr = {k: props[k] for k in ("mrconfigid", "mrowner", "mrownerconfig") if k in props}
        fields["td"] = TdConfig(attributes=attributes, qemu=version, edk2=edk2, **mr)
    else:
        if "reduced-phys-bits" not in props:
            out.append(FieldProblem(f"-object {kind}.reduced-phys-bits", "required by QEMU"))
        vm = vm._replace(cbitpos=props.get("cbitpos", 51),
                         reduced_phys_bits=props.get("reduced-phys-bits", 1))  # fmt: skip
    if tech is SEV_SNP:
        fields.update(snp_policy=props.get("policy", 0x30000),
                      host_data=props.get("host-data", bytes(32)))  # fmt: skip
        if "id-block" in props or "id-auth" in props:
            config = IdBlockConfig(block=props.get("id-block"), auth=props.get("id-auth"))
            if config.auth is not None and len(config.auth) < 4096:
                config = config._replace(auth=config.auth.ljust(4096, b"\0"))
            if props.get("author-key-enabled", False) != config.author_key_enabled:
                out.append(FieldProblem("-object sev-snp-guest.author-key-enabled",
                                        "disagrees with the author key in id-auth"))  # fmt: skip
            fields["id_block"] = config
    elif tech is not TDX:
        fields["sev_policy"] = props.get("policy", 1)
    if v is not None or vm != VmDefinition():
        fields["vm"] = vm._replace(machine=str(machine.get("type", "q35")))
    return GuestSpec(**fields)


def _props(kind: str, obj: dict[str, Any], v: Version | None,
           out: list[FieldProblem]) -> dict[str, Any]:  # fmt: skip
    """The confidential object's properties in their types; problems named by property."""
    props: dict[str, Any] = {}
    if v is not None and v < SINCE[kind]:
        out.append(FieldProblem(f"-object {kind}", f"not in QEMU {'.'.join(map(str, v))}"))
    for key, value in obj.items():
        where = f"-object {kind}.{key}"
        if key in ("qom-type", "id") or key in _NOT_MEASURED:
            continue
        since = PROPERTIES[kind].get(key)
        if since is None or (v is not None and v < since):
            release = "" if v is None else " " + ".".join(map(str, v))
            out.append(FieldProblem(where, f"not a property of upstream QEMU{release}'s {kind}"))
            continue
        try:
            if key in _INT_PROPERTIES:
                props[key] = value if isinstance(value, int) else int(str(value), 0)
            elif key in _BOOL_PROPERTIES:
                props[key] = _flag(value)
            elif key == "id-auth" or key in _BASE64_SIZES:
                props[key] = _b64(value, _BASE64_SIZES.get(key))
            elif key == "legacy-vm-type" and value == "on":
                out.append(FieldProblem(where, "KVM's legacy SEV init sets VMSA features the "
                                        "measurement does not model"))  # fmt: skip
        except (ValueError, binascii.Error) as e:
            out.append(FieldProblem(where, str(e)))
    return props


def _vcpus(seen: dict[str, list[dict[str, Any]]], out: list[FieldProblem]) -> int:
    smp = (seen.get("smp") or [{}])[-1]
    try:
        if "cpus" in smp:
            return int(smp["cpus"])
        count = 1
        for part in ("sockets", "dies", "clusters", "cores", "threads"):
            count *= int(smp.get(part, 1))
        return count
    except (ValueError, TypeError):
        out.append(FieldProblem("-smp", f"not a CPU count: {smp}"))
        return 1


def _memory(seen: dict[str, list[dict[str, Any]]], machine: dict[str, Any],
            objects: dict[str, dict[str, Any]], out: list[FieldProblem]) -> int:  # fmt: skip
    size = 128 << 20  # QEMU's default -m
    try:
        if "m" in seen:
            size = _size(seen["m"][-1].get("size"), 20)
        backend = machine.get("memory-backend")
        if backend is not None:
            obj = objects.get(str(backend))
            if obj is None or obj.get("qom-type") not in _MEMORY_BACKENDS:
                out.append(
                    FieldProblem("-machine memory-backend", f"no memory backend {backend!r}")
                )
            else:
                size = _size(obj.get("size"), 0)
    except ValueError as e:
        out.append(FieldProblem("-m", str(e)))
    if size % (1 << 20):
        out.append(FieldProblem("-m", f"{size} bytes is not a whole number of MiB"))
    return size >> 20


def _firmware(seen: dict[str, list[dict[str, Any]]], machine: dict[str, Any],
              objects: dict[str, dict[str, Any]], given: Path | None,
              out: list[FieldProblem]) -> tuple[Path, IgvmConfig | None]:  # fmt: skip
    images: list[tuple[str, object]] = [("-bios", b["value"]) for b in seen.get("bios", [])]
    images += [("-pflash", p["value"]) for p in seen.get("pflash", [])[:1]]
    flash = [d for d in seen.get("drive", []) if d.get("if") == "pflash"]
    for order, drive in enumerate(flash):  # unit 0 is the code; unit 1 the unmeasured vars
        if str(drive.get("unit", order)) == "0":
            images.append(("-drive if=pflash", drive.get("file")))
    node = machine.get("pflash0")
    blockdevs = {str(b.get("node-name")): b for b in seen.get("blockdev", [])}
    for _ in range(8):  # a format node names its file node, which names the file
        if node is None or str(node) not in blockdevs:
            break
        found = blockdevs[str(node)]
        node = found.get("file") if "filename" not in found else None
        if "filename" in found:
            images.append(("-machine pflash0", found["filename"]))
    if "igvm-cfg" in machine:
        obj = objects.get(str(machine["igvm-cfg"]), {})
        if obj.get("qom-type") != "igvm-cfg" or "file" not in obj:
            out.append(FieldProblem("-machine igvm-cfg", "names no igvm-cfg object with a file"))
        images.append(("-object igvm-cfg.file", obj.get("file", "")))
    if len(images) > 1:
        out.append(FieldProblem(images[1][0], f"a second firmware beside {images[0][0]}"))
    if not images:
        if given is None:
            out.append(FieldProblem("-bios", "no firmware named: give the image QEMU loads"))
        return given or Path(), None
    option, value = images[0]
    path = _file(value, option, out)
    # QEMU's IGVM loader measures empty PAGE_DATA as SNP ZERO pages.
    return path, IgvmConfig(native_zero=True) if option.startswith("-object igvm") else None


def _boot(seen: dict[str, list[dict[str, Any]]], props: dict[str, Any], tech: Technology,
          out: list[FieldProblem]) -> DirectBoot | None:  # fmt: skip
    last = {k: seen[k][-1]["value"] for k in ("kernel", "initrd", "append") if k in seen}
    if "kernel" not in last:
        for key in ("initrd", "append"):
            if key in last:
                out.append(FieldProblem(f"-{key}", "given without -kernel"))
        return None
    if tech is not TDX and not props.get("kernel-hashes", False):
        return None  # QEMU hashes no kernel into the launch: OVMF loads it unmeasured
    initrd = None
    if "initrd" in last:
        initrd = BootFile(_file(last["initrd"], "-initrd", out))
    return DirectBoot(BootFile(_file(last["kernel"], "-kernel", out)), initrd,
                      str(last.get("append", "")))  # fmt: skip


def _cpu(seen: dict[str, list[dict[str, Any]]], tech: Technology,
         out: list[FieldProblem]) -> CpuSpec | None:  # fmt: skip
    if "cpu" not in seen:
        return None
    cpu = seen["cpu"][-1]
    model = str(cpu.get("name"))
    changed = sorted({"family", "model", "stepping"} & cpu.keys())
    found: CpuSpec | None
    try:
        found = CpuSpec.from_name(model)
    except ProfileError:
        found = None
    if tech is SEV:  # no VMSAs: the CPU enters no SEV digest
        return found
    if found is None:
        out.append(FieldProblem("-cpu", f"{model!r}: its CPUID signature (in every VMSA) is "
                                "not known; name a model"))  # fmt: skip
    if changed:
        out.append(FieldProblem(f"-cpu {changed[0]}", "changes the CPUID signature"))
    return found
