"""The GuestSpec a libvirt domain describes: every element that affects the measurement read,
one cvmlaunch cannot model named by XPath (the writer: guest/libvirt.py).

Element and attribute names are libvirt's (formatdomain, `<launchSecurity>`). A domain is
read with the standard library alone: bounded, no DTD, no entities. Every problem is named at
once, by XPath.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import TYPE_CHECKING, cast
from xml.etree import ElementTree as ET

from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.libvirt import SEV_POLICY_ES
from cvmlaunch.guest.spec import (
    MR_CONFIG_SIZE,
    TD_ATTRIBUTES_QEMU_DEFAULT,
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    IdBlockConfig,
    TdConfig,
    VmDefinition,
)
from cvmlaunch.guest.technology import Technology

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

SEV, SEV_ES, SEV_SNP, TDX = Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP, Technology.TDX
HOST_DATA_SIZE, ID_BLOCK_SIZE, ID_AUTH_SIZE = 32, 96, 4096
MAX_DOMAIN_XML = 1 << 20  # bytes: a domain is a few kB; anything larger is not one
_HEXUINT = re.compile("(0[xX])?[0-9a-fA-F]+")  # libvirt parses <policy> with strtoul, base 16
_QEMU_NS = "{http://libvirt.org/schemas/domain/qemu/1.0}"
# QEMU options a <qemu:commandline> may add without changing what is measured: devices and
# their backends, consoles, displays. Any other option is named.
_GENERIC_LOADER = re.compile(r'loader(,|$)|\{.*"driver" *: *"loader"')  # -device's value
_UNMEASURED_OPTIONS = frozenset({"-device", "-netdev", "-chardev", "-serial", "-display",
                                 "-vnc", "-monitor", "-name", "-msg"})  # fmt: skip


# Children and attributes of <launchSecurity> that do not enter the launch digest or the
# values cvmlaunch checks: read past, not refused.
_UNMEASURED = frozenset({
    "handle",  # SEV: the key-sharing handle of another guest
    "dhCert", "session",  # SEV: the guest owner's launch session (the HMAC's TIK)
    "guestVisibleWorkarounds",  # SNP_LAUNCH_START GOSVW: a hint, neither measured nor reported
    "quoteGenerationService",  # TDX: where quotes are got
    "@vcek",  # SNP: which key signs reports (VCEK or VLEK); audit takes the chain given
})  # fmt: skip
_SEV_CHILDREN = frozenset({"cbitpos", "reducedPhysBits", "policy"})
_CHILDREN = {
    "sev": _SEV_CHILDREN,
    "sev-snp": _SEV_CHILDREN | {"idBlock", "idAuth", "hostData"},
    "tdx": frozenset({"policy", "mrConfigId", "mrOwner", "mrOwnerConfig"}),
}
_ATTRIBUTES = {"sev": {"kernelHashes"}, "sev-snp": {"kernelHashes", "authorKey"}, "tdx": set()}
_LS = "/domain/launchSecurity"
# Where a spec's own check names a profile key, the element of the domain that gave it.
_XPATH = {
    "vcpus": "/domain/vcpu",
    "memory_mib": "/domain/memory",
    "boot": "/domain/os/kernel",
    "qemu.machine": "/domain/os/type/@machine",
    "qemu.cbitpos": f"{_LS}/cbitpos",
    "qemu.reduced_phys_bits": f"{_LS}/reducedPhysBits",
    "snp.policy": f"{_LS}/policy",
    "tdx.attributes": f"{_LS}/policy",
}


def spec_from_libvirt(xml: bytes) -> GuestSpec:
    """The guest a libvirt domain boots, checked. ProfileError names (XPath-like) every
    element or attribute that affects the measurement and cannot be modelled."""
    domain = _parsed(xml)
    reader = _Reader()
    spec = reader.spec(domain)
    if reader.problems or spec is None:
        raise ProfileError(reader.problems)
    try:
        return spec.check()
    except ProfileError as e:
        raise ProfileError([FieldProblem(_XPATH.get(p.field, p.field), p.reason)
                            for p in e.problems]) from None  # fmt: skip


def _parsed(xml: bytes) -> Element:
    if len(xml) > MAX_DOMAIN_XML:
        reason = f"larger than {MAX_DOMAIN_XML} bytes, which no domain needs"
        raise ProfileError([FieldProblem("/domain", reason)])
    from xml.parsers import expat

    # A DTD could declare entities (billion laughs, external files): refused before any
    # tree is built. expat reports the declaration before its contents are expanded.
    def refuse(*_: object) -> None:
        raise ProfileError([FieldProblem("/domain", "a DOCTYPE (DTD) is not accepted")])

    scan = expat.ParserCreate()
    scan.StartDoctypeDeclHandler = refuse
    try:
        scan.Parse(xml, True)
        root = ET.fromstring(xml)
    except (expat.ExpatError, ET.ParseError) as e:
        raise ProfileError([FieldProblem("/domain", f"not well-formed XML: {e}")]) from None
    if root.tag != "domain":
        raise ProfileError([FieldProblem(f"/{root.tag}", "expected a libvirt <domain>")])
    return root


class _Reader:
    """Reads a domain into GuestSpec fields, collecting every problem by its XPath."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []
        self.vm: dict[str, object] = {}  # VmDefinition fields: machine, cbitpos, ...

    def bad(self, where: str, reason: str) -> None:
        self.problems.append(FieldProblem(where, reason))

    def spec(self, domain: Element) -> GuestSpec | None:
        if domain.get("type") != "kvm":
            self.bad("/domain/@type", f"{domain.get('type')!r}: a confidential guest runs "
                     "under KVM ('kvm')")  # fmt: skip
        security = domain.find("launchSecurity")
        kind = None if security is None else security.get("type")
        if security is None or kind not in _CHILDREN:
            self.bad(_LS, f"type {kind!r}: expected 'sev', 'sev-snp' or 'tdx'")
            return None
        self._qemu_commandline(domain)
        fields = self._launch_security(security, kind)
        tech = cast(Technology, fields["technology"])
        fields.update(
            vcpus=self._vcpus(domain.find("vcpu")),
            memory_mib=self._memory(domain.find("memory")),
            cpu=None if tech is TDX else self._cpu(domain.find("cpu"), tech),
        )
        fields.update(self._os(domain.find("os"), tech, security.get("kernelHashes")))
        if self.problems:
            return None
        return GuestSpec(**fields, vm=VmDefinition(**self.vm))  # type: ignore[arg-type]

    def _vcpus(self, vcpu: Element | None) -> int:
        if vcpu is None:
            return 1  # libvirt's default
        count = self._uint("/domain/vcpu", vcpu.text)
        current = vcpu.get("current")
        if current is not None and current.strip() != (vcpu.text or "").strip():
            self.bad("/domain/vcpu/@current", "vCPUs added after launch: QEMU measures the "
                     "VMSAs of the vCPUs present at launch only")  # fmt: skip
        return count

    def _memory(self, memory: Element | None) -> int:
        where = "/domain/memory"
        if memory is None:
            self.bad(where, "required")
            return 0
        unit = memory.get("unit", "KiB")
        scale = _scale(unit)
        if scale is None:
            self.bad(f"{where}/@unit", f"unknown unit {unit!r}")
            return 0
        # libvirt rounds guest RAM up to whole MiB (its tests' .args: 219100 KiB boots as
        # `-m size=219136k`).
        return -(-self._uint(where, memory.text) * scale // (1 << 20))

    def _cpu(self, cpu: Element | None, tech: Technology) -> CpuSpec | None:
        if cpu is None:  # libvirt boots it with QEMU's default model (its tests' .args)
            return CpuSpec.from_name("qemu64")
        model = cpu.find("model")
        if cpu.get("mode", "custom") != "custom":
            where, reason = "/domain/cpu/@mode", f"{cpu.get('mode')!r}: the host's CPU model"
        elif model is None or not (model.text or "").strip():
            where, reason = "/domain/cpu/model", "none: libvirt's default (qemu64)"
        elif model.get("fallback", "allow") != "forbid":
            where, reason = "/domain/cpu/model/@fallback", "libvirt may substitute a model"
        else:
            try:
                return CpuSpec.from_name((model.text or "").strip())
            except ProfileError:
                where, reason = "/domain/cpu/model", f"{model.text!r}: a model cvmlaunch has no "
                reason += "family/model/stepping for"
        # Only SEV-ES and SEV-SNP measure the CPU (its signature is in every VMSA).
        if tech is not SEV:
            self.bad(where, f"{reason}: the CPUID signature in every VMSA is not known")
        return None

    def _os(self, os: Element | None, tech: Technology, hashes: str | None) -> dict[str, object]:
        if os is None:
            self.bad("/domain/os", "required")
            return {}
        kind = os.find("type")
        if kind is not None and kind.get("arch", "x86_64") != "x86_64":
            self.bad("/domain/os/type/@arch", f"{kind.get('arch')!r}: expected x86_64")
        for tag in ("shim", "dtb"):
            if os.find(tag) is not None:
                self.bad(f"/domain/os/{tag}", "not modelled: what it loads is not measured")
        # Without a machine, libvirt takes QEMU's default for x86_64: pc (i440fx).
        self.vm["machine"] = "pc" if kind is None else kind.get("machine", "pc")
        return {"firmware": self._loader(os, tech), "boot": self._boot(os, tech, hashes)}

    def _loader(self, os: Element, tech: Technology) -> Path:
        loader, where = os.find("loader"), "/domain/os/loader"
        path = None if loader is None else (loader.text or "").strip()
        if loader is None or not path:
            chooser = os.get("firmware")
            how = f"libvirt chooses it (firmware={chooser!r})" if chooser else "default BIOS"
            self.bad(where, f"no firmware image path: {how}; name the image")
            return Path()
        kind = loader.get("type")
        if kind not in ("rom", "pflash") or (tech is TDX and kind != "rom"):
            wanted = "'rom' (-bios)" if tech is TDX else "'rom' or 'pflash'"
            self.bad(f"{where}/@type", f"{kind!r}: expected {wanted}")
        elif kind == "pflash" and loader.get("readonly") != "yes":
            self.bad(f"{where}/@readonly", "a writable flash image is not a measured firmware")
        if tech in (SEV_SNP, TDX) and os.find("nvram") is not None:
            self.bad("/domain/os/nvram", f"an {tech} guest boots stateless firmware")
        return self._file(where, path)

    def _boot(self, os: Element, tech: Technology, hashes: str | None) -> DirectBoot | None:
        kernel, initrd, cmdline = (os.findtext(tag) for tag in ("kernel", "initrd", "cmdline"))
        if kernel is None:
            if initrd is not None or cmdline is not None:
                self.bad("/domain/os/kernel", "required with <initrd> or <cmdline>")
            return None
        if tech is not TDX and hashes != "yes":
            self.bad(f"{_LS}/@kernelHashes", "required with <kernel>: else the firmware "
                     "measures no kernel, initrd or command line")  # fmt: skip
        initrd_file = None if initrd is None else BootFile(self._file("/domain/os/initrd", initrd))
        return DirectBoot(BootFile(self._file("/domain/os/kernel", kernel)), initrd_file,
                          cmdline or "")  # fmt: skip

    def _file(self, where: str, text: str) -> Path:
        # libvirt takes absolute paths only: a relative one would be read from our directory.
        if not text.startswith("/"):
            self.bad(where, f"{text!r}: expected an absolute path")
        return Path(text)

    def _launch_security(self, security: Element, kind: str) -> dict[str, object]:
        for name in sorted(set(security.attrib) - {"type"} - _ATTRIBUTES[kind]):
            if f"@{name}" not in _UNMEASURED:
                self.bad(f"{_LS}/@{name}", f"not a <launchSecurity type='{kind}'> attribute")
        for child in security:
            if child.tag not in _CHILDREN[kind] and child.tag not in _UNMEASURED:
                self.bad(f"{_LS}/{child.tag}", "not modelled")
        policy = security.find("policy")
        if kind == "tdx":
            td = TdConfig(
                attributes=TD_ATTRIBUTES_QEMU_DEFAULT if policy is None else self._policy(policy),
                mrconfigid=self._b64(security, "mrConfigId", MR_CONFIG_SIZE),
                mrowner=self._b64(security, "mrOwner", MR_CONFIG_SIZE),
                mrownerconfig=self._b64(security, "mrOwnerConfig", MR_CONFIG_SIZE),
            )
            return {"technology": TDX, "td": td}
        for tag, name in (("cbitpos", "cbitpos"), ("reducedPhysBits", "reduced_phys_bits")):
            text = security.findtext(tag)
            if text is not None:  # else the host's, which libvirt asks QEMU for
                self.vm[name] = self._uint(f"{_LS}/{tag}", text)
        value = 0
        if policy is None:
            self.bad(f"{_LS}/policy", "required")
        else:
            value = self._policy(policy, 32 if kind == "sev" else 64)
        if kind == "sev":
            return {"technology": SEV_ES if value & SEV_POLICY_ES else SEV, "sev_policy": value}
        host_data = self._b64(security, "hostData", HOST_DATA_SIZE)
        return {"technology": SEV_SNP, "snp_policy": value, "host_data": host_data,
                "id_block": self._id_block(security)}  # fmt: skip

    def _id_block(self, security: Element) -> IdBlockConfig | None:
        given = [tag for tag in ("idBlock", "idAuth") if security.find(tag) is not None]
        author_key = security.get("authorKey", "no") == "yes"
        if not given:
            if author_key:
                self.bad(f"{_LS}/@authorKey", "without an ID block")
            return None
        if len(given) == 1:
            missing = ({"idBlock", "idAuth"} - set(given)).pop()
            self.bad(f"{_LS}/{missing}", f"required with <{given[0]}>")
            return None
        block = self._b64(security, "idBlock", ID_BLOCK_SIZE)
        # QEMU copies a shorter ID auth into the zeroed 4 KiB page SNP_LAUNCH_FINISH reads.
        auth = self._b64(security, "idAuth", ID_AUTH_SIZE, exact=False).ljust(ID_AUTH_SIZE, b"\0")
        config = IdBlockConfig(block=block, auth=auth)
        if config.author_key_enabled != author_key:
            holds = "holds" if config.author_key_enabled else "holds no"
            self.bad(f"{_LS}/@authorKey", f"{'yes' if author_key else 'no'}, but the ID auth "
                     f"{holds} an author key")  # fmt: skip
        return config

    def _policy(self, policy: Element, bits: int = 64) -> int:
        text = (policy.text or "").strip()
        if not _HEXUINT.fullmatch(text) or int(text, 16) >> bits:
            self.bad(f"{_LS}/policy", f"{text!r}: expected a {bits}-bit hexadecimal number")
            return 0
        return int(text, 16)

    def _b64(self, security: Element, tag: str, size: int, exact: bool = True) -> bytes:
        text = security.findtext(tag)
        if text is None:
            return bytes(size)
        try:
            value = base64.b64decode("".join(text.split()), validate=True)
        except ValueError:  # binascii.Error
            self.bad(f"{_LS}/{tag}", "not base64")
            return bytes(size)
        if len(value) > size or (exact and len(value) < size):
            self.bad(f"{_LS}/{tag}", f"{len(value)} bytes, expected {'' if exact else 'at most '}"
                     f"{size}")  # fmt: skip
            return bytes(size)
        return value

    def _uint(self, where: str, text: str | None) -> int:
        text = (text or "").strip()
        if not text.isascii() or not text.isdigit():
            self.bad(where, f"{text!r}: expected an unsigned integer")
            return 0
        return int(text)

    def _qemu_commandline(self, domain: Element) -> None:
        for element in (e for e in domain if e.tag.startswith(_QEMU_NS)):
            tag = element.tag.removeprefix(_QEMU_NS)
            if tag != "commandline":
                self.bad(f"/domain/qemu:{tag}", "changes QEMU outside the domain: not modelled")
        for n, element in enumerate(domain.iterfind(f"{_QEMU_NS}commandline")):
            args = [a.get("value", "") for a in element.iter(f"{_QEMU_NS}arg")]
            option = None
            for i, arg in enumerate(args, 1):
                if option is not None:  # the option's value
                    if option == "-device" and _GENERIC_LOADER.match(arg):
                        self.bad(f"/domain/qemu:commandline[{n + 1}]/qemu:arg[{i}]",
                                 "a generic loader writes guest memory: not modelled")  # fmt: skip
                    option = None
                elif arg in _UNMEASURED_OPTIONS:
                    option = arg
                else:
                    reason = f"{arg!r}: a QEMU option that may change the measurement"
                    self.bad(f"/domain/qemu:commandline[{n + 1}]/qemu:arg[{i}]", reason)


def _scale(unit: str) -> int | None:
    """Bytes per `unit` as libvirt reads <memory unit=...>: k/KiB binary, KB decimal."""
    u = unit.lower()
    if u in ("b", "byte", "bytes"):
        return 1
    power = "kmgtpe".find(u[:1]) + 1 if u else 0
    if not power or u[1:] not in ("", "ib", "b"):
        return None
    base = 1000 if u[1:] == "b" else 1024
    return int(base**power)


__all__ = ["MAX_DOMAIN_XML", "spec_from_libvirt"]
