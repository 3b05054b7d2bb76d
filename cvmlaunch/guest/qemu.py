"""QEMU's command line for a measured guest: the arguments that boot exactly the guest a
GuestSpec measures, for a named QEMU version (the other way: guest/qemu_import.py).

Object and property names are QEMU's QAPI (qapi/qom.json: SevGuestProperties,
SevSnpGuestProperties, TdxGuestProperties, IgvmCfgProperties); the version each appeared in
comes from the schemas under tests/vectors/vmdef/qemu-qapi (TABLE.md), which the tests hold
this table to; the reader shares it. Every refusal is a ProfileError listing all problems at
once, each naming the profile key QEMU cannot honour.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from cvmlaunch.abi.snp import KVM_VMSA_GPA, SevFeature
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.spec import (
    GuestSpec,
    PageOrder,
    RawDataTail,
    Vmm,
    definition_id_block,
    qemu_version,
)
from cvmlaunch.guest.technology import Technology

Version = tuple[int, int]
# An ID block signed over the guest's launch digest: (block, auth, AUTHOR_KEY_EN).
SignedParts = tuple[bytes, bytes, bool]


def words(text: str) -> frozenset[str]:
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
OBJECT_TYPES = {SEV: "sev-guest", SEV_ES: "sev-guest", SEV_SNP: "sev-snp-guest", TDX: "tdx-guest"}
INT_PROPERTIES = words("policy handle cbitpos reduced-phys-bits attributes")
BOOL_PROPERTIES = words("kernel-hashes author-key-enabled vcek-disabled sept-ve-disable")
# Read and left out of the spec, as they enter no digest and no report field we model: the
# host's SEV device, the owner's session keys (the HMAC, not the digest), an SEV context's
# handle, SNP_LAUNCH_START's GOSVW, which key signs reports, the host's quote service.
NOT_MEASURED = words(
    "sev-device dh-cert-file session-file handle guest-visible-workarounds vcek-disabled "
    "quote-generation-socket"
)
BASE64_SIZES = {"id-block": 96, "host-data": 32} | dict.fromkeys(_TDX.split()[2:5], 48)
ID_AUTH_MAX = 4096  # sev.c: decoded id-auth may be shorter, never longer
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
    tech, obj = spec.technology, OBJECT_TYPES[spec.technology]
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


def confidential_object(
    spec: GuestSpec, *, version: str | None = None, id_block: SignedParts | None = None
) -> dict[str, Any]:
    """The confidential-guest object as QMP `object-add` takes it: qom-type, id and every
    property the spec fixes, typed (QAPI int/bool/str). ProfileError: what QEMU `version`
    (else the spec's [qemu] version) cannot boot."""
    return _launch(spec, version, id_block)[1]


def qemu_args(
    spec: GuestSpec, *, version: str | None = None, id_block: SignedParts | None = None
) -> list[str]:
    """The QEMU arguments (after the binary) that boot exactly the guest `spec` measures,
    for QEMU `version` (else [qemu] version, else a TD's tdx.qemu). ProfileError lists
    every key that version cannot boot."""
    return _launch(spec, version, id_block)[0]


def qemu_argv_json(
    spec: GuestSpec, *, version: str | None = None, id_block: SignedParts | None = None
) -> str:
    """`qemu_args` as a JSON array."""
    return json.dumps(qemu_args(spec, version=version, id_block=id_block))


def _launch(
    spec: GuestSpec, version: str | None, id_block: SignedParts | None
) -> tuple[list[str], dict[str, Any]]:
    spec = spec.check()
    text, v = _version(spec, version)
    problems = list(_problems(spec, text, v))
    if problems:
        raise ProfileError(problems)
    tech, vm = spec.technology, spec.vm_definition
    cgs: dict[str, Any] = {"qom-type": OBJECT_TYPES[tech], "id": "tdx0" if tech is TDX else "sev0"}
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
        parts = definition_id_block(spec.id_block, id_block)
        if parts is not None:
            block, auth, author_key_enabled = parts
            cgs["id-block"] = base64.b64encode(block).decode()
            cgs["id-auth"] = base64.b64encode(auth).decode()
            cgs["author-key-enabled"] = author_key_enabled
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
