"""The GuestSpec of a QEMU command line: every option that affects the measurement read, and
one cvmlaunch cannot model named (a ProfileError listing all of them); what boots beside the
measured image and changes no digest is on an explicit allowlist. The other way, and the
object/property table both follow: guest/qemu.py.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.qemu import (
    BASE64_SIZES,
    BOOL_PROPERTIES,
    ID_AUTH_MAX,
    INT_PROPERTIES,
    NOT_MEASURED,
    OBJECT_TYPES,
    PROPERTIES,
    SINCE,
    Version,
    words,
)
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    IdBlockConfig,
    IgvmConfig,
    TdConfig,
    VmDefinition,
    qemu_version,
)
from cvmlaunch.guest.technology import Technology

SEV, SEV_ES, SEV_SNP, TDX = Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP, Technology.TDX

# Options read below. The allowlist after it: what boots beside the measured image and
# changes no digest (devices, disks, network, consoles, monitors, process and host
# settings). ACPI/SMBIOS shape only a TD's RTMR0, which a spec takes as given digests.
_READ = words("machine M cpu smp m bios drive pflash blockdev object kernel initrd append accel")
_IGNORED_WITH_ARG = words(
    "device netdev nic net chardev serial parallel monitor mon qmp qmp-pretty display vga vnc "
    "spice audiodev name uuid pidfile sandbox msg overcommit rtc boot watchdog-action global "
    "fsdev virtfs d D trace k run-with usbdevice iscsi add-fd fw_cfg action incoming gdb "
    "debugcon smbios shim acpitable"
)
_IGNORED_FLAGS = words(
    "nographic nodefaults no-user-config S no-shutdown no-reboot daemonize no-acpi no-hpet "
    "snapshot usb s full-screen enable-kvm"
)
# A TD's firmware measures what these add (RTMR0/RTMR1), which a spec does not model.
_TD_MEASURED = frozenset({"smbios", "shim", "acpitable"})
# -machine properties that shape no digest (a TD's ACPI tables enter RTMR0 as given digests).
_MACHINE_IGNORED = words(
    "type accel kernel-irqchip kernel_irqchip usb dump-guest-core acpi hpet smm vmport nvdimm "
    "graphics mem-merge sata pic pit i8042 hmat suppress-vmdesc pflash1"
)
_MACHINE_READ = frozenset({"confidential-guest-support", "memory-backend", "igvm-cfg", "pflash0"})
_IGNORED_OBJECTS = words(
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
    if (size is not None and len(data) != size) or len(data) > ID_AUTH_MAX:
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
    if cgs is None or str(cgs.get("qom-type")) not in set(OBJECT_TYPES.values()):
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
        if key in ("qom-type", "id") or key in NOT_MEASURED:
            continue
        since = PROPERTIES[kind].get(key)
        if since is None or (v is not None and v < since):
            release = "" if v is None else " " + ".".join(map(str, v))
            out.append(FieldProblem(where, f"not a property of upstream QEMU{release}'s {kind}"))
            continue
        try:
            if key in INT_PROPERTIES:
                props[key] = value if isinstance(value, int) else int(str(value), 0)
            elif key in BOOL_PROPERTIES:
                props[key] = _flag(value)
            elif key == "id-auth" or key in BASE64_SIZES:
                props[key] = _b64(value, BASE64_SIZES.get(key))
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
