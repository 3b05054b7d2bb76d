"""Guest profiles: the versioned TOML file format (pydantic models) and its conversion into
a `GuestSpec`.

Profiles are strict: unknown keys, wrong types and out-of-range values are all reported at
once, each under its dotted key. Paths are resolved relative to the profile file.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
)

from cvmlaunch.abi.snp import (
    GUEST_POLICY_QEMU_DEFAULT,
    HOST_DATA_SIZE,
    KVM_VMSA_GPA,
)
from cvmlaunch.abi.tdx import TD_ATTRIBUTES_QEMU_DEFAULT, td_attributes_from_names
from cvmlaunch.errors import FieldProblem, InputError, ProfileError
from cvmlaunch.guest.fields import BY_KEY, bounds, inapplicable
from cvmlaunch.guest.files import MAX_PROFILE_SIZE
from cvmlaunch.guest.spec import (
    DEFAULT_MEMORY_MIB,
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    IdBlockConfig,
    IgvmConfig,
    PageOrder,
    RawDataTail,
    TdConfig,
    Technology,
    VmDefinition,
    Vmm,
    cpu_from_forms,
)
from cvmlaunch.inputs import read_input

if TYPE_CHECKING:
    from cvmlaunch.firmware.descriptor import FirmwareDescriptor

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="32 bytes as hex")]
Hex48 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{96}$", description="48 bytes as hex")]


def _range(key: str) -> Any:
    """The constraint of the field-table row `key`'s bounds (its JSON Schema minimum and
    maximum): the spec checks the same bounds."""
    low, high = bounds(key)
    return Field(ge=low, le=high)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GpaRangeModel(_Model):
    gpa: Annotated[int, Strict(), Field(ge=0, lt=1 << 32)]
    size: Annotated[int, Strict(), Field(gt=0, le=1 << 32)]

    def range(self) -> tuple[int, int]:
        return self.gpa, self.size


class SevMetadataSection(GpaRangeModel):
    type: Literal["SNP_SEC_MEM", "SNP_SECRETS", "CPUID", "SVSM_CAA", "SNP_KERNEL_HASHES"]


class TdvfSectionModel(_Model):
    type: Literal["BFV", "CFV", "TD_HOB", "TEMP_MEM", "PERM_MEM", "PAYLOAD", "PAYLOAD_PARAM",
                  "TD_INFO", "TD_PARAMS"]  # fmt: skip
    gpa: Annotated[int, Strict(), Field(ge=0, lt=1 << 64)]
    mem_size: Annotated[int, Strict(), Field(ge=0, lt=1 << 64)]
    raw_size: Annotated[int, Strict(), Field(ge=0, lt=1 << 32)] = 0
    data_offset: Annotated[int, Strict(), Field(ge=0, lt=1 << 32)] = 0
    attributes: Annotated[int, Strict(), Field(ge=0, le=3)] = Field(
        0, description="1: MR.EXTEND (measured), 2: PAGE.AUG."
    )


class Descriptor(_Model):
    """An OVMF image by what a measurement takes from it (`cvmlaunch firmware describe
    IMAGE` writes it): for sev-snp, with firmware.digest, its layout; for tdx its TDVF
    sections, its MRTD by page order and raw-data tail, and its CFV's SHA-384."""

    size: Annotated[int, Strict(), Field(gt=0, le=1 << 32)] = Field(
        description="The image's size in bytes: it is mapped to end at 4 GiB."
    )
    sha256: Hex32 = Field(description="The SHA-256 of the image described.")
    reset_eip: Annotated[int, Strict(), Field(ge=0, lt=1 << 32)] | None = Field(
        None, description="The AP start address of the SEV-ES reset block."
    )
    hash_table: GpaRangeModel | None = Field(
        None, description="The SEV hash table area: where the kernel hashes go."
    )
    sev_metadata: list[SevMetadataSection] = Field(
        [], description="sev-snp: the SEV metadata sections, in the image's order."
    )
    tdvf_sections: list[TdvfSectionModel] | None = Field(
        None, description="tdx: the TDVF sections, in the metadata's order."
    )
    mrtd: dict[Literal["page/image", "page/zero", "section/image", "section/zero"], Hex48] = Field(
        {}, description="tdx: the MRTD by page order and raw-data tail."
    )
    cfv_sha384: Hex48 | None = Field(
        None, description="tdx: the SHA-384 of the CFV raw data (RTMR0's second event)."
    )
    sha256_chaining: Hex32 | None = Field(
        None, description="sev, sev-es: the SHA-256 chaining value after the image's bytes."
    )

    def to_spec(self) -> FirmwareDescriptor:
        from cvmlaunch.abi.ovmf import SevSectionType
        from cvmlaunch.firmware.descriptor import FirmwareDescriptor
        from cvmlaunch.firmware.ovmf import GpaRange, SevSection

        sections = tuple(SevSection(n, s.gpa, s.size, SevSectionType[s.type], 0)
                         for n, s in enumerate(self.sev_metadata))  # fmt: skip
        area = None if self.hash_table is None else GpaRange(*self.hash_table.range())
        tdvf = None
        if self.tdvf_sections is not None:
            from cvmlaunch.abi.tdx import TdvfSectionType
            from cvmlaunch.firmware.tdvf import TdvfMetadata, TdvfSection

            tdvf = TdvfMetadata(0, "descriptor", tuple(
                TdvfSection(n, t.data_offset, t.raw_size, t.gpa, t.mem_size,
                            TdvfSectionType[t.type], t.attributes, 0)
                for n, t in enumerate(self.tdvf_sections)))  # fmt: skip
        mrtds = tuple((*key.split("/"), bytes.fromhex(v)) for key, v in self.mrtd.items())
        return FirmwareDescriptor(
            self.size, bytes.fromhex(self.sha256), sections, self.reset_eip, area, tdvf,
            cast("tuple[tuple[str, str, bytes], ...]", mrtds), _hex(self.cfv_sha384),
            _hex(self.sha256_chaining),
        )  # fmt: skip


class Firmware(_Model):
    """The firmware image (OVMF built with SEV support), or its descriptor."""

    path: Path | None = Field(
        None, description="Firmware image; relative paths are against the profile."
    )
    descriptor: Descriptor | None = Field(
        None, description="sev-snp: the image by its measured facts instead of its path."
    )
    igvm: Path | None = Field(
        None, description="sev-snp: an IGVM file as the whole initial image, instead of path."
    )
    igvm_native_zero: Annotated[bool, Strict()] = Field(
        False,
        description="IGVM pages without data as SNP ZERO pages (QEMU's loader, igvmmeasure "
        "--native-zero) instead of NORMAL pages of zeros (the IGVM specification).",
    )
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
    signature: Annotated[int, Strict(), _range("cpu.signature")] | None = Field(
        None, description="CPUID Fn0000_0001_EAX, e.g. 0x00A00F11."
    )
    family: Annotated[int, Strict(), _range("cpu.family")] | None = None
    model: Annotated[int, Strict(), _range("cpu.model")] | None = None
    stepping: Annotated[int, Strict(), _range("cpu.stepping")] | None = None

    def to_spec(self) -> CpuSpec | None:
        fms = (self.family, self.model, self.stepping)
        return cpu_from_forms(self.name, self.signature, fms)


class Boot(_Model):
    """Measured direct boot (QEMU -kernel/-initrd/-append with kernel-hashes=on)."""

    kernel: Path | None = None
    kernel_sha256: Hex32 | None = Field(None, description="Instead of kernel: its SHA-256.")
    initrd: Path | None = None
    initrd_sha256: Hex32 | None = Field(None, description="Instead of initrd: its SHA-256.")
    cmdline: str = Field("", description="Kernel command line (hashed with a trailing NUL).")


Hex16 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{32}$", description="16 bytes as hex")]
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class SnpIdBlock(_Model):
    """The ID block SNP_LAUNCH_FINISH checks: signed here with id_key (and author_key) over
    the computed launch digest and [snp] policy, or given signed (block, auth: base64, as
    QEMU's sev-snp-guest id-block/id-auth take them)."""

    id_key: Path | None = Field(None, description="ECDSA P-384 ID key, PEM or DER.")
    id_key_passphrase_file: Path | None = Field(None, description="Its passphrase's file.")
    id_key_passphrase_env: str | None = Field(None, description="Or its variable's name.")
    author_key: Path | None = Field(None, description="ECDSA P-384 author key (optional).")
    author_key_passphrase_file: Path | None = None
    author_key_passphrase_env: str | None = None
    family_id: Hex16 | None = Field(None, description="FAMILY_ID (default zero).")
    image_id: Hex16 | None = Field(None, description="IMAGE_ID (default zero).")
    guest_svn: Annotated[int, Strict(), _range("snp.id_block.guest_svn")] = 0
    block: Annotated[str, Field(pattern=_BASE64)] | None = Field(
        None, description="A signed 96-byte ID block, base64."
    )
    auth: Annotated[str, Field(pattern=_BASE64)] | None = Field(
        None, description="Its 4096-byte ID auth, base64."
    )

    def to_config(self) -> IdBlockConfig:
        import base64

        return IdBlockConfig(
            id_key=self.id_key,
            author_key=self.author_key,
            family_id=_hex(self.family_id) or bytes(16),
            image_id=_hex(self.image_id) or bytes(16),
            guest_svn=self.guest_svn,
            id_key_passphrase_file=self.id_key_passphrase_file,
            id_key_passphrase_env=self.id_key_passphrase_env,
            author_key_passphrase_file=self.author_key_passphrase_file,
            author_key_passphrase_env=self.author_key_passphrase_env,
            block=None if self.block is None else base64.b64decode(self.block),
            auth=None if self.auth is None else base64.b64decode(self.auth),
        )

    def resolve_paths(self, base: Path) -> SnpIdBlock:
        names = ("id_key", "author_key", "id_key_passphrase_file", "author_key_passphrase_file")
        update = {n: base / getattr(self, n) for n in names if getattr(self, n) is not None}
        return self.model_copy(update=update)


class Snp(_Model):
    """SEV-SNP launch parameters."""

    guest_features: Annotated[int, Strict(), _range("snp.guest_features")] = Field(
        0x1, description="VMSA SEV_FEATURES (bit 0 SNPActive, bit 5 DebugSwap, ...)."
    )
    policy: Annotated[int, Strict(), _range("snp.policy")] = Field(
        GUEST_POLICY_QEMU_DEFAULT, description="Guest POLICY given to SNP_LAUNCH_START."
    )
    host_data: Hex32 | None = Field(None, description="HOST_DATA given to SNP_LAUNCH_FINISH.")
    vmsa_gpa: Annotated[int, Strict(), _range("snp.vmsa_gpa")] = Field(
        KVM_VMSA_GPA, description="GPA the VMSAs are measured at."
    )
    id_block: SnpIdBlock | None = None


class Sev(_Model):
    """SEV / SEV-ES launch parameters."""

    policy: Annotated[int, Strict(), _range("sev.policy")] = Field(
        0, description="Guest policy given to LAUNCH_START."
    )


class TdxAcpi(_Model):
    """SHA-384 of QEMU's ACPI blobs as OVMF measured them into RTMR0 (before patching them);
    QEMU alone knows them: take them from a real TD's event log or from the VMM."""

    table_loader: Hex48 = Field(description="etc/table-loader")
    rsdp: Hex48 = Field(description="etc/acpi/rsdp")
    tables: Hex48 = Field(description="etc/acpi/tables")


class Tdx(_Model):
    """Intel TDX: the TD_PARAMS the VMM passes to KVM_TDX_INIT_VM, and how it measures TDVF."""

    attributes: Annotated[int, Strict(), _range("tdx.attributes")] | list[str] = Field(
        TD_ATTRIBUTES_QEMU_DEFAULT,
        description='TD ATTRIBUTES: a number, or bit names, e.g. ["SEPT_VE_DISABLE", '
        '"PKS"] (QEMU\'s default is SEPT_VE_DISABLE).',
    )
    xfam: Annotated[int, Strict(), _range("tdx.xfam")] | None = Field(
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
    edk2: Annotated[int, Strict(), _range("tdx.edk2")] | None = Field(
        None,
        description="The firmware's edk2 stable release as YYYYMM (e.g. 202502): predicts "
        "the boot events OVMF extends into RTMR0-2.",
    )
    qemu: str | None = Field(
        None,
        description="QEMU's version (e.g. 8.2.2): before 10.2 it rewrites the kernel's setup "
        "header, which RTMR1 measures.",
    )
    acpi: TdxAcpi | None = None
    kernel_authenticode: Hex48 | None = Field(
        None,
        description="Instead of [boot] kernel: its Authenticode SHA-384 as published (of the "
        "bytes QEMU served).",
    )
    initrd_sha384: Hex48 | None = Field(None, description="Instead of [boot] initrd: SHA-384.")
    load_options_sha384: Hex48 | None = Field(
        None,
        description="Instead of [boot] cmdline: SHA-384 of the LoadOptions the EFI stub "
        "measured (dstack publishes it as the cmdline digest).",
    )

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: int | list[str]) -> int:
        return value if isinstance(value, int) else td_attributes_from_names(value)

    def to_config(self) -> TdConfig:
        return TdConfig(
            attributes=cast(int, self.attributes),  # a number once validated
            xfam=self.xfam,
            mrconfigid=_hex(self.mrconfigid) or bytes(48),
            mrowner=_hex(self.mrowner) or bytes(48),
            mrownerconfig=_hex(self.mrownerconfig) or bytes(48),
            page_order=self.page_order,
            raw_data_tail=self.raw_data_tail,
            edk2=self.edk2,
            qemu=self.qemu,
            kernel_authenticode=_hex(self.kernel_authenticode),
            initrd_sha384=_hex(self.initrd_sha384),
            load_options_sha384=_hex(self.load_options_sha384),
            acpi=None
            if self.acpi is None
            else (
                bytes.fromhex(self.acpi.table_loader),
                bytes.fromhex(self.acpi.rsdp),
                bytes.fromhex(self.acpi.tables),
            ),
        )


class Qemu(_Model):
    """How QEMU boots the guest (cvmlaunch qemu): not measured."""

    version: str | None = Field(
        None,
        description="QEMU version (e.g. 10.2) whose object properties to use; a TD's "
        "boot events follow it (tdx.qemu).",
    )
    machine: str = Field("q35", description="Machine type.")
    cbitpos: Annotated[int, Strict(), _range("qemu.cbitpos")] = Field(
        51, description="SEV family: the host's C-bit position (CPUID 0x8000001F EBX[5:0])."
    )
    reduced_phys_bits: Annotated[int, Strict(), _range("qemu.reduced_phys_bits")] = Field(
        1, description="SEV family: physical address bits memory encryption takes."
    )


class Libvirt(_Model):
    """How libvirt defines the guest (cvmlaunch libvirt): not measured."""

    version: str | None = Field(None, description="libvirt version whose domain schema to use.")


class Profile(_Model):
    """A guest profile: everything that determines the guest's launch measurement."""

    schema_version: Literal[1] = Field(description="Profile format version; must be 1.")
    technology: Technology
    description: str = ""
    firmware: Firmware
    vcpus: Annotated[int, Strict(), _range("vcpus")] = 1
    memory_mib: Annotated[int, Strict(), _range("memory_mib")] = Field(
        DEFAULT_MEMORY_MIB, description="Guest RAM in MiB (tdx: shapes the TD HOB)."
    )
    cpu: Cpu | None = None
    vmm: Vmm = Vmm.QEMU
    boot: Boot | None = None
    snp: Snp | None = None
    sev: Sev | None = None
    tdx: Tdx | None = None
    qemu: Qemu | None = None
    libvirt: Libvirt | None = None

    def to_spec(self) -> GuestSpec:
        """The measurement inputs this profile describes; ProfileError lists every problem."""
        fields, problems = self._spec_fields()
        try:
            spec = GuestSpec(**fields).check()
        except ProfileError as e:
            problems += e.problems
        if problems:
            raise ProfileError(_unique(problems))
        return spec

    def spec_fields(self) -> dict[str, Any]:
        """The GuestSpec fields this profile gives, before semantic validation, so that
        callers (the CLI's flags) can override some of them first."""
        fields, problems = self._spec_fields()
        if problems:
            raise ProfileError(problems)
        return fields

    def given(self) -> list[tuple[str, str]]:
        """The keys this profile writes (not defaulted), as (key, key) pairs."""
        tables = ("firmware", "cpu", "boot", "snp", "sev", "tdx", "qemu", "libvirt")
        out = [(k, k) for k in sorted(self.model_fields_set - set(tables)) if k in BY_KEY]
        for table in tables:
            model = getattr(self, table)
            if model is not None:
                keys = [f"{table}.{k}" for k in sorted(model.model_fields_set)]
                # An empty table is given too: it names its technology.
                first = next(k for k in BY_KEY if k.startswith(f"{table}.") or k == table)
                out += [(k, k) for k in keys if k in BY_KEY] or [(table, first)]
        return out

    def _spec_fields(self) -> tuple[dict[str, Any], list[FieldProblem]]:
        problems = inapplicable(self.technology, self.given())
        cpu = None
        if self.cpu is not None:
            try:
                cpu = self.cpu.to_spec()
            except ProfileError as e:
                problems += e.problems
        snp = self.snp or Snp()
        boot = None
        if self.boot is not None:
            b = self.boot
            initrd = None
            if b.initrd is not None or b.initrd_sha256 is not None:
                initrd = BootFile(b.initrd, _hex(b.initrd_sha256))
            boot = DirectBoot(BootFile(b.kernel, _hex(b.kernel_sha256)), initrd, b.cmdline)
        tdx = self.technology is Technology.TDX
        described, igvm = self.firmware.descriptor, self.firmware.igvm
        if sum(v is not None for v in (self.firmware.path, described, igvm)) != 1:
            reason = ("give the image's path, its descriptor (firmware describe) or an IGVM "
                      "file, one of them")  # fmt: skip
            problems.append(FieldProblem("firmware.path", reason))
        if self.firmware.igvm_native_zero and igvm is None:
            problems.append(FieldProblem("firmware.igvm_native_zero", "only with firmware.igvm"))
        fields = dict(
            technology=self.technology,
            firmware=self.firmware.path or igvm or Path(),
            firmware_sha256=_hex(self.firmware.sha256),
            firmware_digest=_hex(self.firmware.digest),
            firmware_descriptor=None if described is None else described.to_spec(),
            vcpus=self.vcpus,
            cpu=None if tdx else cpu,
            vmm=self.vmm,
            guest_features=snp.guest_features,
            boot=boot,
            vmsa_gpa=snp.vmsa_gpa,
            sev_policy=self.sev.policy if self.sev is not None else 0,
            snp_policy=snp.policy,
            host_data=_hex(snp.host_data) or bytes(HOST_DATA_SIZE),
            memory_mib=self.memory_mib,
            td=(self.tdx or Tdx()).to_config() if tdx else None,
            id_block=None if snp.id_block is None else snp.id_block.to_config(),
            igvm=None if igvm is None else IgvmConfig(self.firmware.igvm_native_zero),
            vm=self._vm(),
        )
        td, vm = fields["td"], fields["vm"]
        if isinstance(td, TdConfig) and td.qemu is None and isinstance(vm, VmDefinition):
            # One QEMU boots the TD: its version is the one its boot events follow.
            fields["td"] = td._replace(qemu=vm.qemu_version)
        return fields, problems

    def _vm(self) -> VmDefinition | None:
        if self.qemu is None and self.libvirt is None:
            return None
        qemu = self.qemu or Qemu()
        libvirt = self.libvirt or Libvirt()
        return VmDefinition(qemu.version, libvirt.version, qemu.machine, qemu.cbitpos,
                            qemu.reduced_phys_bits)  # fmt: skip

    def resolve_paths(self, base: Path) -> Profile:
        """A copy with relative paths made relative to `base` (the profile's folder)."""
        update = {n: base / getattr(self.firmware, n) for n in ("path", "igvm")
                  if getattr(self.firmware, n) is not None}  # fmt: skip
        fw = self.firmware.model_copy(update=update)
        boot = self.boot
        if boot is not None:
            boot = boot.model_copy(
                update={
                    "kernel": None if boot.kernel is None else base / boot.kernel,
                    "initrd": None if boot.initrd is None else base / boot.initrd,
                }
            )
        snp = self.snp
        if snp is not None and snp.id_block is not None:
            snp = snp.model_copy(update={"id_block": snp.id_block.resolve_paths(base)})
        return self.model_copy(update={"firmware": fw, "boot": boot, "snp": snp})


def _hex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def parse_profile(data: Mapping[str, Any], source: str | None = None) -> Profile:
    """Validate a profile mapping; every problem is reported in one ProfileError, those of
    its syntax together with those its well-formed part has as a guest."""
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        problems = _problems(e.errors())
        semantic = _semantic_problems(data, e)
    raise ProfileError(_unique(problems + semantic), source)


_Loc = tuple[int | str, ...]


def _key_parts(loc: _Loc) -> tuple[_Loc, _Loc]:
    """A pydantic error location split into the key the document holds and what lies past
    it inside the value: the union member it was tried as (`constrained-int`, `list[str]`)
    and an item's index. Those are not keys a user wrote."""
    model: Any = Profile
    for i, part in enumerate(loc):
        fields = getattr(model, "model_fields", {})
        if part not in fields:  # an unknown key, or a value that is not a table
            return loc[: i + 1], loc[i + 1 :]
        annotation = fields[part].annotation
        members = [a for a in get_args(annotation) or (annotation,) if a is not type(None)]
        if len(members) != 1 or not hasattr(members[0], "model_fields"):
            return loc[: i + 1], loc[i + 1 :]
        model = members[0]
    return loc, ()


def _problems(errors: list[Any]) -> list[FieldProblem]:
    """One problem per key: a value a union tried in several forms fails once, with why
    the forms it has failed (a list with a bad item, a number out of range), or else why
    each form did not fit ("a valid integer or a valid list")."""
    by_key: dict[_Loc, list[tuple[_Loc, Any]]] = {}
    for err in errors:
        key, inside = _key_parts(tuple(err["loc"]))
        by_key.setdefault(key, []).append((inside, err))
    out = []
    for key, found in by_key.items():
        fitting = [
            (inside, err)
            for inside, err in found
            if len(inside) > 1 or not err["type"].endswith("_type")
        ]
        messages = [_message(err, inside) for inside, err in fitting or found]
        message = messages[0] + "".join(
            f" or {m.removeprefix('Input should be ')}" for m in messages[1:]
        )
        out.append(FieldProblem(_dotted(key), message))
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(key: _Loc) -> str:
    """A key path as TOML writes it: each part bare if it can be, else a basic string
    (`"a b".c`), so that the name says where each key ends and is one printable line."""
    return ".".join(map(_toml_key, key)) or "profile"


def _toml_key(part: int | str) -> str:
    text = str(part)
    if _BARE_KEY.fullmatch(text):
        return text
    return '"' + "".join(_escaped(c) for c in text) + '"'


def _escaped(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char.isprintable():
        return char
    return f"\\u{ord(char):04X}" if ord(char) < 0x10000 else f"\\U{ord(char):08X}"


def _message(err: Any, inside: _Loc) -> str:
    message = str(err["msg"])
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    items = [part for part in inside if isinstance(part, int)]
    return f"item {items[0]}: {message}" if items else message


def _semantic_problems(data: object, error: ValidationError) -> list[FieldProblem]:
    """The problems of `data` as a guest once the keys that failed validation are dropped
    (none if what is left cannot be validated either, e.g. a required key is missing)."""
    if not isinstance(data, Mapping):
        return []
    pruned: Any = copy.deepcopy(dict(data))
    for err in error.errors():
        key, _ = _key_parts(tuple(err["loc"]))
        parent = pruned
        for part in key[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and key and err["type"] != "missing":
            parent.pop(key[-1], None)
    try:
        profile = Profile.model_validate(pruned)
    except ValidationError:
        return []
    try:
        profile.to_spec()
    except ProfileError as e:
        return list(e.problems)
    return []


def _unique(problems: list[FieldProblem]) -> list[FieldProblem]:
    """`problems`, each field reported once, and a table not again once a key of it is
    (`cpu.signature: give exactly one ...` makes `cpu: required` noise)."""
    out: list[FieldProblem] = []
    for p in problems:
        if not any(p.field == q.field or q.field.startswith(p.field + ".") for q in out):
            out.append(p)
    return out


def load_profile(path: Path | str, data: bytes | None = None) -> Profile:
    """Read and validate a TOML profile; relative paths resolve against its folder. `data`:
    the file's bytes, when the caller has read them (`read_profile`) for more than this."""
    path, source = _profile_path(path)
    if data is None:
        data = read_profile(path)
    try:
        document = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProfileError([FieldProblem("profile", f"not valid TOML: {e}")], source) from None
    except RecursionError:
        raise ProfileError([FieldProblem("profile", "nested too deeply")], source) from None
    return parse_profile(document, source).resolve_paths(path.parent)


def read_profile(path: Path | str) -> bytes:
    """The bytes of the profile at `path`, read bounded (a regular file of at most 1 MiB)."""
    path, source = _profile_path(path)
    try:
        return read_input(path, limit=MAX_PROFILE_SIZE, what="a TOML profile")
    except InputError as e:
        raise ProfileError([FieldProblem("profile", e.reason)], source) from None


def _profile_path(path: object) -> tuple[Path, str]:
    """`path` as a Path, and the name errors give the file by: one printable line, whatever
    the path holds."""
    given: object = path  # through the API, anything may arrive
    if isinstance(given, str):
        given = Path(given)
    if not isinstance(given, Path):
        reason = f"expected a path, got {type(given).__name__} {given!r}"
        raise ProfileError([FieldProblem("profile", reason)])
    source = str(given) if str(given).isprintable() else repr(str(given))
    if "\0" in str(given):
        raise ProfileError([FieldProblem("profile", "a path cannot contain a NUL character")])
    return given, source


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of the profile format."""
    return Profile.model_json_schema()


__all__ = ["Profile", "load_profile", "parse_profile", "profile_json_schema"]
