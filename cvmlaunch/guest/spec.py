"""GuestSpec: the validated inputs of a launch measurement, independent of any file format.

A `Profile` (TOML, pydantic) converts into a GuestSpec; so do command-line flags on their
own, which keeps the measure path free of heavy imports. Every check here reports all the
problems it finds at once, each under the name a user wrote it with.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature, lookup_model
from cvmlaunch.abi.snp import (
    GUEST_POLICY_MBO,
    GUEST_POLICY_MBZ,
    GUEST_POLICY_QEMU_DEFAULT,
    HOST_DATA_SIZE,
    KVM_VMSA_GPA,
    LD_SIZE,
    PAGE_SIZE,
    SevFeature,
)
from cvmlaunch.abi.tdx import (
    MR_CONFIG_SIZE,
    TD_ATTRIBUTES_DEFINED,
    TD_ATTRIBUTES_QEMU_DEFAULT,
    XFAM_FIXED0,
    XFAM_FIXED1,
    XFAM_GROUPS,
    TdAttribute,
    XfamBit,
    flag_names,
)
from cvmlaunch.errors import FieldProblem, ProfileError

MAX_VCPUS = 4096
SHA256_SIZE = 32
DEFAULT_MEMORY_MIB = 2048
MAX_MEMORY_MIB = 1 << 24  # 16 TiB


class Technology(StrEnum):
    """The confidential-computing technology a guest is launched with."""

    SEV = "sev"
    SEV_ES = "sev-es"
    SEV_SNP = "sev-snp"
    TDX = "tdx"


class Vmm(StrEnum):
    """Whose VMM (and so whose initial vCPU state and page types) launches the guest."""

    QEMU = "qemu"
    EC2 = "ec2"
    GCE = "gce"


class CpuSpec(NamedTuple):
    """The guest CPU as its CPUID(1).EAX signature; `name` is the QEMU model if given by name."""

    signature: int
    name: str | None = None

    @classmethod
    def from_name(cls, name: str) -> CpuSpec:
        canonical = lookup_model(name)
        if canonical is None:
            raise ValueError(f"unknown CPU model {name!r} (known: {', '.join(CPU_MODELS)})")
        return cls(cpu_signature(*CPU_MODELS[canonical]), canonical)

    @classmethod
    def from_family_model_stepping(cls, family: int, model: int, stepping: int) -> CpuSpec:
        if not (0 <= family <= 0xFF + 0xF and 0 <= model <= 0xFF and 0 <= stepping <= 0xF):
            raise ValueError(
                f"family/model/stepping {family}/{model}/{stepping} out of range "
                "(family 0..270, model 0..255, stepping 0..15)"
            )
        return cls(cpu_signature(family, model, stepping))


class BootFile(NamedTuple):
    """A measured direct-boot input: a file to hash, or its SHA-256 given in advance."""

    path: Path | None = None
    sha256: bytes | None = None


class DirectBoot(NamedTuple):
    """QEMU -kernel/-initrd/-append with the firmware's kernel hashes."""

    kernel: BootFile
    initrd: BootFile | None = None
    cmdline: str = ""


class SevLaunchSecretInputs(NamedTuple):
    """What the SEV/SEV-ES firmware mixes into its reported LAUNCH_MEASURE HMAC."""

    tik: bytes
    api_major: int
    api_minor: int
    build: int
    mnonce: bytes


class PageOrder(StrEnum):
    """The order of a measured TDVF section's TDH.MEM.PAGE.ADD and TDH.MR.EXTEND calls."""

    # Upstream KVM (Linux >= 6.16, QEMU >= 10.1): each page is added, then extended.
    PAGE = "page"
    # QEMU 8.2-era TDX builds (e.g. Ubuntu 24.04): a section's pages are all added first.
    SECTION = "section"


class RawDataTail(StrEnum):
    """What fills a TDVF section's memory past its RawDataSize."""

    # QEMU copies MemoryDataSize bytes from the image at DataOffset.
    IMAGE = "image"
    # The TDVF and td-shim specifications: the VMM zero-fills the rest.
    ZERO = "zero"


ZERO_MR = bytes(MR_CONFIG_SIZE)


class TdConfig(NamedTuple):
    """The TD_PARAMS a VMM chooses (reported, not measured) and how it measures TDVF."""

    attributes: int = TD_ATTRIBUTES_QEMU_DEFAULT
    xfam: int | None = None
    mrconfigid: bytes = ZERO_MR
    mrowner: bytes = ZERO_MR
    mrownerconfig: bytes = ZERO_MR
    page_order: PageOrder = PageOrder.PAGE
    raw_data_tail: RawDataTail = RawDataTail.IMAGE


class GuestSpec(NamedTuple):
    """Everything that determines a launch digest (SEV family or TDX).

    Construction does not validate (a NamedTuple cannot); `check()` does, and `build_plan`
    calls it, so no plan is ever built from an unusable spec.
    """

    technology: Technology
    firmware: Path
    firmware_sha256: bytes | None = None
    firmware_digest: bytes | None = None
    vcpus: int = 1
    cpu: CpuSpec | None = None
    vmm: Vmm = Vmm.QEMU
    guest_features: int = 1 << SevFeature.SNP_ACTIVE
    boot: DirectBoot | None = None
    vmsa_gpa: int = KVM_VMSA_GPA
    sev_policy: int = 0
    # SNP launch parameters: not measured, but reported (POLICY, HOST_DATA) and so audited.
    snp_policy: int = GUEST_POLICY_QEMU_DEFAULT
    host_data: bytes = bytes(HOST_DATA_SIZE)
    launch_secret: SevLaunchSecretInputs | None = None
    memory_mib: int = DEFAULT_MEMORY_MIB
    td: TdConfig | None = None

    @property
    def td_config(self) -> TdConfig:
        """The TD configuration, defaults filled in."""
        return self.td if self.td is not None else TdConfig()

    def check(self) -> GuestSpec:
        """This spec, if usable; otherwise ProfileError listing every problem."""
        problems = self.problems()
        if problems:
            raise ProfileError(problems)
        return self

    def problems(self) -> list[FieldProblem]:
        """Every semantic problem of this spec; empty when it is usable."""
        out: list[FieldProblem] = []

        def bad(name: str, reason: str) -> None:
            out.append(FieldProblem(name, reason))

        if self.firmware_sha256 is not None and len(self.firmware_sha256) != SHA256_SIZE:
            bad("firmware.sha256", "expected 32 bytes (64 hex digits)")
        if self.firmware_digest is not None:
            if self.technology is not Technology.SEV_SNP:
                bad("firmware.digest", "a precomputed firmware digest applies to sev-snp only")
            elif len(self.firmware_digest) != LD_SIZE:
                bad("firmware.digest", "expected 48 bytes (96 hex digits) of SHA-384")
        tdx = self.technology is Technology.TDX
        needs_vcpus = self.technology is not Technology.SEV
        if needs_vcpus and not 1 <= self.vcpus <= MAX_VCPUS:
            bad("vcpus", f"expected 1..{MAX_VCPUS}, got {self.vcpus}")
        if not 1 <= self.memory_mib <= MAX_MEMORY_MIB:
            bad("memory_mib", f"expected 1..{MAX_MEMORY_MIB}, got {self.memory_mib}")
        if tdx:
            out += _tdx_problems(self)
        elif self.td is not None:
            bad("tdx", f"applies to tdx guests, not {self.technology}")
        if needs_vcpus and not tdx and self.vmm is Vmm.QEMU and self.cpu is None:
            bad(
                "cpu",
                "required with vmm 'qemu', which puts the CPUID signature in RDX of every VMSA "
                "(profile [cpu], or --vcpu-type / --vcpu-sig / --vcpu-family)",
            )
        if self.cpu is not None and not 0 <= self.cpu.signature <= 0xFFFFFFFF:
            bad("cpu.signature", f"expected a 32-bit value, got {self.cpu.signature:#x}")
        if not 0 <= self.guest_features < 1 << 64:
            bad("snp.guest_features", "expected a 64-bit value")
        elif self.technology is Technology.SEV_SNP and not self.guest_features & 1:
            bad("snp.guest_features", "bit 0 (SNPActive) must be set for an SEV-SNP guest")
        if self.vmsa_gpa % PAGE_SIZE or not 0 <= self.vmsa_gpa < 1 << 52:
            bad("snp.vmsa_gpa", "expected a 4 KiB aligned GPA below 2^52")
        if not 0 <= self.sev_policy <= 0xFFFFFFFF:
            bad("sev.policy", "expected a 32-bit value")
        if self.technology is Technology.SEV_SNP:
            if not 0 <= self.snp_policy < 1 << 64 or self.snp_policy & GUEST_POLICY_MBZ:
                bad("snp.policy", "bits 63:26 are reserved and must be 0")
            elif not self.snp_policy & GUEST_POLICY_MBO:
                bad("snp.policy", "bit 17 is reserved and must be 1")
        if len(self.host_data) != HOST_DATA_SIZE:
            bad("snp.host_data", "expected 32 bytes (64 hex digits)")
        if self.boot is not None:
            out += _boot_problems(self.boot)
        if self.launch_secret is not None:
            out += _launch_secret_problems(self.launch_secret, self.technology)
        return out


def _tdx_problems(spec: GuestSpec) -> list[FieldProblem]:
    out = []
    if spec.vmm is not Vmm.QEMU:
        out.append(FieldProblem("vmm", f"tdx guests are launched by qemu, not {spec.vmm}"))
    if spec.boot is not None:
        out.append(
            FieldProblem(
                "boot",
                "TDX direct boot is measured into RTMR1/RTMR2 by the firmware, not into MRTD; "
                "remove [boot] (MRTD depends on the firmware alone)",
            )
        )
    if spec.launch_secret is not None:
        out.append(FieldProblem("sev.tik", "LAUNCH_MEASURE exists for sev and sev-es only"))
    return out + td_config_problems(spec.td_config)


def td_config_problems(td: TdConfig) -> list[FieldProblem]:
    """Every problem of a TD configuration, as the TDX module's TDH.MNG.INIT would see it."""
    out = [FieldProblem("tdx.attributes", r) for r in td_attribute_problems(td.attributes)]
    if td.xfam is not None:
        out += [FieldProblem("tdx.xfam", r) for r in xfam_problems(td.xfam)]
    for name in ("mrconfigid", "mrowner", "mrownerconfig"):
        value: bytes = getattr(td, name)
        if len(value) != MR_CONFIG_SIZE:
            out.append(
                FieldProblem(f"tdx.{name}", f"expected 48 bytes (96 hex digits), got {len(value)}")
            )
    return out


def td_attribute_problems(attributes: int) -> list[str]:
    """Why `attributes` cannot be a TD's ATTRIBUTES; empty when it can."""
    if not 0 <= attributes < 1 << 64:
        return ["expected a 64-bit value"]
    out = []
    reserved = attributes & ~TD_ATTRIBUTES_DEFINED
    if reserved:
        out.append(f"{attributes:#x} sets reserved {', '.join(flag_names(TdAttribute, reserved))}")
    not_migratable = TdAttribute.DEBUG | TdAttribute.PERFMON
    if attributes & TdAttribute.MIGRATABLE and attributes & not_migratable:
        out.append(f"{attributes:#x}: MIGRATABLE excludes DEBUG and PERFMON")
    if attributes & TdAttribute.PERFMON and attributes & TdAttribute.ICSSD:
        out.append(f"{attributes:#x}: PERFMON excludes ICSSD")
    return out


def xfam_problems(xfam: int) -> list[str]:
    """Why `xfam` cannot be a TD's XFAM (TDX module check_xfam); empty when it can."""
    if not 0 <= xfam < 1 << 64:
        return ["expected a 64-bit value"]
    out = []
    not_allowed = xfam & ~XFAM_FIXED0
    if not_allowed:
        bits = ", ".join(flag_names(XfamBit, not_allowed))
        out.append(f"{xfam:#x} sets {bits}, which a TD cannot have")
    if xfam & XFAM_FIXED1 != XFAM_FIXED1:
        out.append(f"{xfam:#x} must set X87 and SSE (bits 0 and 1)")
    for group in XFAM_GROUPS:
        if xfam & group not in (0, group):
            out.append(f"{xfam:#x}: {' and '.join(flag_names(XfamBit, group))} go together")
    if xfam & XfamBit.AVX512_OPMASK and not xfam & XfamBit.AVX:
        out.append(f"{xfam:#x}: AVX-512 state needs AVX (bit 2)")
    return out


def _boot_problems(boot: DirectBoot) -> list[FieldProblem]:
    out = []
    for name, item in (("boot.kernel", boot.kernel), ("boot.initrd", boot.initrd)):
        if item is None:
            continue
        if (item.path is None) == (item.sha256 is None):
            out.append(FieldProblem(name, "give exactly one of a file path or its sha256"))
        elif item.sha256 is not None and len(item.sha256) != SHA256_SIZE:
            out.append(FieldProblem(name + "_sha256", "expected 32 bytes (64 hex digits)"))
    if "\0" in boot.cmdline:
        out.append(FieldProblem("boot.cmdline", "must not contain NUL characters"))
    return out


def _launch_secret_problems(
    secret: SevLaunchSecretInputs, technology: Technology
) -> list[FieldProblem]:
    out = []
    if technology is Technology.SEV_SNP:
        out.append(FieldProblem("sev.tik", "LAUNCH_MEASURE exists for sev and sev-es only"))
    if len(secret.tik) != 16:
        out.append(FieldProblem("sev.tik", f"expected 16 bytes, got {len(secret.tik)}"))
    if len(secret.mnonce) != 16:
        out.append(FieldProblem("sev.mnonce", f"expected 16 bytes, got {len(secret.mnonce)}"))
    for name, value in (
        ("sev.api_major", secret.api_major),
        ("sev.api_minor", secret.api_minor),
        ("sev.build", secret.build),
    ):
        if not 0 <= value <= 0xFF:
            out.append(FieldProblem(name, f"expected 0..255, got {value}"))
    return out
