"""Guest profiles: the versioned TOML file format (pydantic models) and its conversion into
a `GuestSpec`.

Profiles are strict: unknown keys, wrong types and out-of-range values are all reported at
once, each under its dotted key. Paths are resolved relative to the profile file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cvmlaunch.abi.snp import (
    GUEST_POLICY_MBO,
    GUEST_POLICY_MBZ,
    GUEST_POLICY_QEMU_DEFAULT,
    HOST_DATA_SIZE,
    KVM_VMSA_GPA,
)
from cvmlaunch.abi.tdx import TD_ATTRIBUTES_QEMU_DEFAULT, td_attributes_from_names
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.fields import HEX_KEYS
from cvmlaunch.guest.spec import (
    DEFAULT_MEMORY_MIB,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    PageOrder,
    RawDataTail,
    TdConfig,
    Technology,
    Vmm,
    td_attribute_problems,
    xfam_problems,
)

SCHEMA_VERSION = 1

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="32 bytes as hex")]
Hex48 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{96}$", description="48 bytes as hex")]
U32 = Annotated[int, Field(ge=0, le=0xFFFFFFFF)]
U64 = Annotated[int, Field(ge=0, le=(1 << 64) - 1)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Firmware(_Model):
    """The firmware image (OVMF built with SEV support)."""

    path: Path = Field(description="Firmware image; relative paths are against the profile.")
    sha256: Hex32 | None = Field(None, description="Pin: the image must have this SHA-256.")
    digest: Hex48 | None = Field(
        None,
        description="sev-snp only: precomputed launch digest after the firmware pages "
        "(what `measure --json` reports as firmware_digest); replaces hashing the image.",
    )


class Cpu(_Model):
    """The guest CPU as QEMU presents it (-cpu): a model name, a CPUID(1).EAX signature, or
    family/model/stepping. Exactly one form."""

    name: str | None = Field(None, description="QEMU CPU model, e.g. EPYC-v4, EPYC-Milan.")
    signature: U32 | None = Field(None, description="CPUID Fn0000_0001_EAX, e.g. 0x00A00F11.")
    family: Annotated[int, Field(ge=0, le=0x10E)] | None = None
    model: Annotated[int, Field(ge=0, le=0xFF)] | None = None
    stepping: Annotated[int, Field(ge=0, le=0xF)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        fms = (self.family, self.model, self.stepping)
        forms = (
            (self.name is not None)
            + (self.signature is not None)
            + any(v is not None for v in fms)
        )
        if forms != 1:
            raise ValueError("give exactly one of name, signature, or family/model/stepping")
        if any(v is not None for v in fms) and any(v is None for v in fms):
            raise ValueError("family, model and stepping go together")
        if self.name is not None:
            CpuSpec.from_name(self.name)  # raises ValueError naming the known models
        return self

    def to_spec(self) -> CpuSpec:
        if self.name is not None:
            return CpuSpec.from_name(self.name)
        if self.signature is not None:
            return CpuSpec(self.signature)
        return CpuSpec.from_family_model_stepping(
            self.family or 0, self.model or 0, self.stepping or 0
        )


class Boot(_Model):
    """Measured direct boot (QEMU -kernel/-initrd/-append with kernel-hashes=on)."""

    kernel: Path | None = None
    kernel_sha256: Hex32 | None = Field(None, description="Instead of kernel: its SHA-256.")
    initrd: Path | None = None
    initrd_sha256: Hex32 | None = Field(None, description="Instead of initrd: its SHA-256.")
    cmdline: str = Field("", description="Kernel command line (hashed with a trailing NUL).")

    @model_validator(mode="after")
    def _sources(self) -> Self:
        if (self.kernel is None) == (self.kernel_sha256 is None):
            raise ValueError("give exactly one of kernel or kernel_sha256")
        if self.initrd is not None and self.initrd_sha256 is not None:
            raise ValueError("give at most one of initrd or initrd_sha256")
        return self


class Snp(_Model):
    """SEV-SNP launch parameters."""

    guest_features: U64 = Field(
        0x1, description="VMSA SEV_FEATURES (bit 0 SNPActive, bit 5 DebugSwap, ...)."
    )
    policy: U64 = Field(
        GUEST_POLICY_QEMU_DEFAULT, description="Guest POLICY given to SNP_LAUNCH_START."
    )
    host_data: Hex32 | None = Field(None, description="HOST_DATA given to SNP_LAUNCH_FINISH.")
    vmsa_gpa: U64 = Field(KVM_VMSA_GPA, description="GPA the VMSAs are measured at.")

    @model_validator(mode="after")
    def _policy(self) -> Self:
        if self.policy & GUEST_POLICY_MBZ:
            raise ValueError(f"policy {self.policy:#x}: bits 63:26 are reserved and must be 0")
        if not self.policy & GUEST_POLICY_MBO:
            raise ValueError(f"policy {self.policy:#x}: bit 17 is reserved and must be 1")
        return self


class Sev(_Model):
    """SEV / SEV-ES launch parameters."""

    policy: U32 = Field(0, description="Guest policy given to LAUNCH_START.")


class Tdx(_Model):
    """Intel TDX: the TD_PARAMS the VMM passes to KVM_TDX_INIT_VM, and how it measures TDVF."""

    attributes: U64 | list[str] = Field(
        TD_ATTRIBUTES_QEMU_DEFAULT,
        description='TD ATTRIBUTES: a number, or bit names, e.g. ["SEPT_VE_DISABLE", '
        '"PKS"] (QEMU\'s default is SEPT_VE_DISABLE).',
    )
    xfam: U64 | None = Field(
        None, description="XFAM (e.g. 0x602E7); absent = not part of the expectations."
    )
    mrconfigid: Hex48 | None = Field(None, description="MRCONFIGID, 48 bytes hex (default 0).")
    mrowner: Hex48 | None = Field(None, description="MROWNER, 48 bytes hex (default 0).")
    mrownerconfig: Hex48 | None = Field(
        None, description="MROWNERCONFIG, 48 bytes hex (default 0)."
    )
    page_order: PageOrder = Field(
        PageOrder.PAGE,
        description="page: upstream KVM >= 6.16 (each page added, then extended); section: "
        "QEMU 8.2-era TDX builds (a section's pages all added, then extended).",
    )
    raw_data_tail: RawDataTail = Field(
        RawDataTail.IMAGE,
        description="Memory past a section's RawDataSize: image (QEMU copies the image "
        "bytes that follow) or zero (TDVF specification).",
    )

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: int | list[str]) -> int:
        if not isinstance(value, int):
            value = td_attributes_from_names(value)
        problems = td_attribute_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("xfam")
    @classmethod
    def _xfam(cls, value: int | None) -> int | None:
        problems = [] if value is None else xfam_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def to_config(self) -> TdConfig:
        return TdConfig(
            attributes=cast(int, self.attributes),  # a number once validated
            xfam=self.xfam,
            mrconfigid=_hex(self.mrconfigid) or bytes(48),
            mrowner=_hex(self.mrowner) or bytes(48),
            mrownerconfig=_hex(self.mrownerconfig) or bytes(48),
            page_order=self.page_order,
            raw_data_tail=self.raw_data_tail,
        )


class Profile(_Model):
    """A guest profile: everything that determines the guest's launch measurement."""

    schema_version: Literal[1] = Field(description="Profile format version; must be 1.")
    technology: Technology
    description: str = ""
    firmware: Firmware
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    memory_mib: Annotated[int, Field(ge=1, le=MAX_MEMORY_MIB)] = Field(
        DEFAULT_MEMORY_MIB, description="Guest RAM in MiB (tdx: shapes the TD HOB)."
    )
    cpu: Cpu | None = None
    vmm: Vmm = Vmm.QEMU
    boot: Boot | None = None
    snp: Snp | None = None
    sev: Sev | None = None
    tdx: Tdx | None = None

    @model_validator(mode="after")
    def _tables_match_technology(self) -> Self:
        tech = self.technology
        if self.snp is not None and tech is not Technology.SEV_SNP:
            raise ValueError(f"[snp] applies to sev-snp profiles, not {tech}")
        if self.sev is not None and tech not in (Technology.SEV, Technology.SEV_ES):
            raise ValueError(f"[sev] applies to sev and sev-es profiles, not {tech}")
        if self.tdx is not None and tech is not Technology.TDX:
            raise ValueError(f"[tdx] applies to tdx profiles, not {tech}")
        if self.cpu is not None and tech is Technology.TDX:
            raise ValueError(
                "[cpu] applies to SEV-family profiles (the VMSA); a TD's CPU shows in "
                "[tdx] xfam and attributes"
            )
        return self

    def to_spec(self) -> GuestSpec:
        """The measurement inputs this profile describes (validated again semantically)."""
        return GuestSpec(**self.spec_fields()).check()

    def spec_fields(self) -> dict[str, Any]:
        """The GuestSpec fields this profile gives, before semantic validation, so that
        callers (the CLI's flags) can override some of them first."""
        snp = self.snp or Snp()
        boot = None
        if self.boot is not None:
            b = self.boot
            initrd = None
            if b.initrd is not None or b.initrd_sha256 is not None:
                initrd = BootFile(b.initrd, _hex(b.initrd_sha256))
            boot = DirectBoot(BootFile(b.kernel, _hex(b.kernel_sha256)), initrd, b.cmdline)
        return dict(
            technology=self.technology,
            firmware=self.firmware.path,
            firmware_sha256=_hex(self.firmware.sha256),
            firmware_digest=_hex(self.firmware.digest),
            vcpus=self.vcpus,
            cpu=self.cpu.to_spec() if self.cpu is not None else None,
            vmm=self.vmm,
            guest_features=snp.guest_features,
            boot=boot,
            vmsa_gpa=snp.vmsa_gpa,
            sev_policy=self.sev.policy if self.sev is not None else 0,
            snp_policy=snp.policy,
            host_data=_hex(snp.host_data) or bytes(HOST_DATA_SIZE),
            memory_mib=self.memory_mib,
            td=None if self.technology is not Technology.TDX else (self.tdx or Tdx()).to_config(),
        )

    def resolve_paths(self, base: Path) -> Profile:
        """A copy with relative paths made relative to `base` (the profile's folder)."""
        fw = self.firmware.model_copy(update={"path": base / self.firmware.path})
        boot = self.boot
        if boot is not None:
            boot = boot.model_copy(
                update={
                    "kernel": None if boot.kernel is None else base / boot.kernel,
                    "initrd": None if boot.initrd is None else base / boot.initrd,
                }
            )
        return self.model_copy(update={"firmware": fw, "boot": boot})


def _hex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def parse_profile(data: Mapping[str, Any], source: str | None = None) -> Profile:
    """Validate a profile mapping; every problem is reported in one ProfileError."""
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise ProfileError([_problem(err) for err in e.errors()], source) from None


def load_profile(path: Path) -> Profile:
    """Read and validate a TOML profile; relative paths resolve against its folder."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ProfileError([FieldProblem("profile", e.strerror or str(e))], str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProfileError([FieldProblem("profile", f"not valid TOML: {e}")], str(path)) from None
    except RecursionError:
        raise ProfileError([FieldProblem("profile", "nested too deeply")], str(path)) from None
    return parse_profile(data, str(path)).resolve_paths(path.parent)


def _problem(err: Any) -> FieldProblem:
    loc = ".".join(str(part) for part in err["loc"]) or "profile"
    message = str(err["msg"])
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return FieldProblem(loc, message)


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of the profile format."""
    return Profile.model_json_schema()


def profile_document(spec: GuestSpec, description: str = "") -> dict[str, Any]:
    """The profile (as TOML-ready tables) that describes `spec`: what `solve` prints as a
    ready profile. Inputs given only by hash stay hashes; paths are written as they are."""
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "technology": str(spec.technology)}
    if description:
        doc["description"] = description
    # Absolute paths: a printed profile is saved elsewhere and must still find its inputs.
    firmware: dict[str, Any] = {"path": str(spec.firmware.absolute())}
    if spec.firmware_sha256 is not None:
        firmware["sha256"] = spec.firmware_sha256.hex()
    if spec.firmware_digest is not None:
        firmware["digest"] = spec.firmware_digest.hex()
    doc.update(vcpus=spec.vcpus, vmm=str(spec.vmm))
    if spec.technology is Technology.TDX:
        doc["memory_mib"] = spec.memory_mib
    doc["firmware"] = firmware
    if spec.cpu is not None and spec.technology is not Technology.TDX:
        doc["cpu"] = (
            {"name": spec.cpu.name} if spec.cpu.name else {"signature": spec.cpu.signature}
        )
    if spec.boot is not None:
        doc["boot"] = _boot_table(spec.boot)
    if spec.technology is Technology.SEV_SNP:
        doc["snp"] = {
            "guest_features": spec.guest_features,
            "policy": spec.snp_policy,
            "vmsa_gpa": spec.vmsa_gpa,
        }
        if any(spec.host_data):
            doc["snp"]["host_data"] = spec.host_data.hex()
    elif spec.technology in (Technology.SEV, Technology.SEV_ES):
        doc["sev"] = {"policy": spec.sev_policy}
    if spec.technology is Technology.TDX:
        td = spec.td_config
        tdx: dict[str, Any] = {"attributes": td.attributes}
        if td.xfam is not None:
            tdx["xfam"] = td.xfam
        for name in ("mrconfigid", "mrowner", "mrownerconfig"):
            if any(getattr(td, name)):
                tdx[name] = getattr(td, name).hex()
        tdx.update(page_order=str(td.page_order), raw_data_tail=str(td.raw_data_tail))
        doc["tdx"] = tdx
    return doc


def _boot_table(boot: DirectBoot) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name, file in (("kernel", boot.kernel), ("initrd", boot.initrd)):
        if file is None:
            continue
        if file.path is not None:
            table[name] = str(file.path.absolute())
        elif file.sha256 is not None:
            table[f"{name}_sha256"] = file.sha256.hex()
    table["cmdline"] = boot.cmdline
    return table


def toml_text(doc: Mapping[str, Any]) -> str:
    """`doc` (top-level keys, then one level of tables) as TOML."""
    lines = [f"{k} = {_toml_value(k, v)}" for k, v in doc.items() if not isinstance(v, Mapping)]
    for name, table in doc.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{name}]", *(f"{k} = {_toml_value(k, v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _toml_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:#x}" if key in HEX_KEYS else str(value)
    # A JSON string is a TOML basic string, except that TOML also forbids a raw DEL.
    import json

    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


__all__ = [
    "SCHEMA_VERSION",
    "Profile",
    "load_profile",
    "parse_profile",
    "profile_document",
    "profile_json_schema",
    "toml_text",
]
