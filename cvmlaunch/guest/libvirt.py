"""The libvirt domain that boots exactly the measured guest (the other way: the GuestSpec a
domain describes, guest/libvirt_import.py).

Element and attribute names are libvirt's (formatdomain, `<launchSecurity>`); what each
version accepts is its RelaxNG schema (tests/vectors/vmdef/libvirt-rng). Every problem is
named at once, by the profile key libvirt cannot express.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

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

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element


SEV, SEV_ES, SEV_SNP, TDX = Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP, Technology.TDX
# The libvirt release that first accepts each <launchSecurity> type (NEWS; PROVENANCE.md
# of tests/vectors/vmdef: SEV-SNP "since 10.5.0", TDX merged for 11.6.0).
_SINCE = {SEV: (4, 4), SEV_ES: (4, 4), SEV_SNP: (10, 5), TDX: (11, 6)}
_KERNEL_HASHES_SINCE = (8, 0)  # launchSecurity/@kernelHashes
_TYPE = {SEV: "sev", SEV_ES: "sev", SEV_SNP: "sev-snp", TDX: "tdx"}
# Policy bit 2 (ES): QEMU's sev-guest launches SEV-ES from it; libvirt has no other switch.
SEV_POLICY_ES = 1 << 2
# The TD attributes QEMU's tdx-guest accepts (SEPT_VE_DISABLE, PKS, PERFMON); libvirt
# passes <policy> through as `attributes` (qemu-qapi/VALUE-ENCODINGS.md).
QEMU_TD_ATTRIBUTES = 1 << 28 | 1 << 30 | 1 << 63
_KVM_VMSA_GPA = GuestSpec._field_defaults["vmsa_gpa"]
_GUEST_FEATURES = GuestSpec._field_defaults["guest_features"]
# What XML 1.0 can carry in text (a CR would come back as LF).
_NOT_XML = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|\r")


def domain_xml(
    spec: GuestSpec,
    *,
    name: str = "cvmlaunch",
    version: str | None = None,
    id_block: tuple[bytes, bytes, bool] | None = None,
) -> str:
    """The libvirt domain XML that boots exactly the guest `spec` measures, for libvirt
    `version` (else the profile's `libvirt.version`). ProfileError names every profile key
    the version cannot express or boot."""
    spec = spec.check()
    given = version if version is not None else spec.vm_definition.libvirt_version
    problems = _unexpressible(spec, given)
    if not name or _NOT_XML.search(name) or "/" in name:
        problems.append(FieldProblem("name", f"not a libvirt domain name: {name!r}"))
    if problems:
        raise ProfileError(problems)
    vm, boot = spec.vm_definition, spec.boot
    domain = ET.Element("domain", type="kvm")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(domain, "vcpu", placement="static").text = str(spec.vcpus)
    os = ET.SubElement(domain, "os")
    ET.SubElement(os, "type", arch="x86_64", machine=vm.machine).text = "hvm"
    # -bios: QEMU measures the whole image. SEV-SNP and TDX boot without a varstore, and
    # QEMU loads TDVF only with -bios (qemu docs/system/i386/tdx.rst).
    loader = {"type": "rom", "readonly": "yes"}
    if spec.technology in (SEV_SNP, TDX):
        loader["stateless"] = "yes"
    ET.SubElement(os, "loader", loader).text = str(spec.firmware.absolute())
    if boot is not None:
        # Both are files here: _unexpressible refused a boot given by digests.
        for tag, file in (("kernel", boot.kernel), ("initrd", boot.initrd)):
            if file is not None and file.path is not None:
                ET.SubElement(os, tag).text = str(file.path.absolute())
        if boot.cmdline:
            ET.SubElement(os, "cmdline").text = boot.cmdline
    if spec.technology is TDX:
        # A TD's XFAM and CPUID follow the host CPU (QEMU's TDX documentation runs -cpu host).
        ET.SubElement(domain, "cpu", mode="host-passthrough")
    elif spec.cpu is not None:
        cpu = ET.SubElement(domain, "cpu", mode="custom", match="exact")
        ET.SubElement(cpu, "model", fallback="forbid").text = spec.cpu.name
    domain.append(_launch_security(spec, id_block))
    ET.indent(domain, "  ")
    return ET.tostring(domain, encoding="unicode") + "\n"


def _unexpressible(spec: GuestSpec, version: str | None) -> list[FieldProblem]:
    """Every profile key whose value libvirt `version` cannot express, or could not boot."""
    out: list[FieldProblem] = []

    def bad(key: str, reason: str) -> None:
        out.append(FieldProblem(key, reason))

    tech, boot, td = spec.technology, spec.boot, spec.td_config
    parsed = None if version is None else qemu_version(version)
    if version is None:
        bad("libvirt.version", "required: the libvirt version whose domain to write "
            "(profile [libvirt] version, or --libvirt-version)")  # fmt: skip
    elif parsed is None:
        bad("libvirt.version", f"expected a version like 11.3 or 9.0.0, got {version!r}")
    elif parsed < _SINCE[tech]:
        since, element = ".".join(map(str, _SINCE[tech])), f"type='{_TYPE[tech]}'"
        bad("libvirt.version", f"libvirt {version} has no <launchSecurity {element}> "
            f"(since {since})")  # fmt: skip
    elif boot is not None and tech is not TDX and parsed < _KERNEL_HASHES_SINCE:
        bad("libvirt.version", f"libvirt {version} cannot measure a direct boot (kernelHashes "
            "since 8.0)")  # fmt: skip
    if spec.igvm is not None:
        bad("firmware.igvm", "libvirt's domain has no element for an IGVM file (up to 12.9)")
    elif spec.firmware_descriptor is not None:
        bad("firmware.descriptor", "libvirt boots an image: give firmware.path")
    if spec.vmm is not Vmm.QEMU:
        bad("vmm", f"libvirt boots with QEMU, not {spec.vmm}")
    if spec.cpu is not None and spec.cpu.name is None and tech is not TDX:
        bad("cpu.name", "libvirt names the CPU model: a signature or family/model/stepping "
            "cannot be named")  # fmt: skip
    for name, file in () if boot is None else (("kernel", boot.kernel), ("initrd", boot.initrd)):
        if file is not None and file.path is None:
            bad(f"boot.{name}_sha256", f"libvirt boots a file: give boot.{name}")
    if boot is not None and _NOT_XML.search(boot.cmdline):
        bad("boot.cmdline", "holds a character XML cannot carry")
    # KVM chooses SEV_FEATURES and where VMSAs are measured: no element says them.
    if tech is SEV_SNP and spec.guest_features != _GUEST_FEATURES:
        bad("snp.guest_features", f"libvirt boots with KVM's {_GUEST_FEATURES:#x}")
    if tech is SEV_SNP and spec.vmsa_gpa != _KVM_VMSA_GPA:
        bad("snp.vmsa_gpa", f"QEMU/KVM measures VMSAs at {_KVM_VMSA_GPA:#x}")
    if tech in (SEV, SEV_ES) and bool(spec.sev_policy & SEV_POLICY_ES) != (tech is SEV_ES):
        bad("sev.policy", "bit 2 (ES) makes QEMU launch SEV-ES: set for sev-es, clear for sev")
    if tech is not TDX:
        return out
    # libvirt's TDX drives upstream QEMU (>= 10.1): each page added then extended, the
    # image copied past RawDataSize.
    if td.page_order is not PageOrder.PAGE:
        bad("tdx.page_order", "QEMU under libvirt adds and extends page by page ('page')")
    if td.raw_data_tail is not RawDataTail.IMAGE:
        bad("tdx.raw_data_tail", "QEMU copies the image past RawDataSize ('image')")
    if td.attributes & ~QEMU_TD_ATTRIBUTES:
        bad("tdx.attributes", f"{td.attributes:#x}: QEMU's tdx-guest takes only "
            "SEPT_VE_DISABLE, PKS and PERFMON")  # fmt: skip
    if td.kernel_authenticode is not None:
        bad("tdx.kernel_authenticode", "libvirt boots files, not digests: give [boot]")
    return out


def _launch_security(spec: GuestSpec, id_block: tuple[bytes, bytes, bool] | None) -> Element:
    tech = spec.technology
    element = ET.Element("launchSecurity", type=_TYPE[tech])
    if tech is TDX:
        td = spec.td_config
        ET.SubElement(element, "policy").text = f"0x{td.attributes:08x}"
        for tag, value in (("mrConfigId", td.mrconfigid), ("mrOwner", td.mrowner),
                           ("mrOwnerConfig", td.mrownerconfig)):  # fmt: skip
            if any(value):
                ET.SubElement(element, tag).text = base64.b64encode(value).decode()
        return element
    if spec.boot is not None:
        element.set("kernelHashes", "yes")
    vm = spec.vm_definition
    ET.SubElement(element, "cbitpos").text = str(vm.cbitpos)
    ET.SubElement(element, "reducedPhysBits").text = str(vm.reduced_phys_bits)
    if tech is not SEV_SNP:
        ET.SubElement(element, "policy").text = f"0x{spec.sev_policy:04x}"
        return element
    ET.SubElement(element, "policy").text = f"0x{spec.snp_policy:08x}"
    parts = definition_id_block(spec.id_block, id_block)
    if parts is not None:
        block, auth, author_key_enabled = parts
        if author_key_enabled:
            element.set("authorKey", "yes")
        ET.SubElement(element, "idBlock").text = base64.b64encode(block).decode()
        ET.SubElement(element, "idAuth").text = base64.b64encode(auth).decode()
    if any(spec.host_data):
        ET.SubElement(element, "hostData").text = base64.b64encode(spec.host_data).decode()
    return element
