"""GuestSpec: the validated inputs of a launch measurement, independent of any file format.

A `Profile` (TOML, pydantic) converts into a GuestSpec; so do command-line flags on their
own, which keeps the measure path free of heavy imports. Every check here reports all the
problems it finds at once, each under the name a user wrote it with.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature, lookup_model, model_signature
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
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.fields import (
    BY_KEY,
    FIELDS,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    Field,
    bounds,
    inapplicable,
    within,
)
from cvmlaunch.guest.technology import Technology
from cvmlaunch.namedtuple import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from cvmlaunch.firmware.descriptor import FirmwareDescriptor

SHA256_SIZE = 32
DEFAULT_MEMORY_MIB = 2048
# abi.tdx's MR_CONFIG_SIZE and TD_ATTRIBUTES_QEMU_DEFAULT (SEPT_VE_DISABLE), as plain ints:
# abi.tdx and its IntFlag classes load only when a TD is checked (CLI start-up). A test
# holds them equal.
MR_CONFIG_SIZE = 48
TD_ATTRIBUTES_QEMU_DEFAULT = 1 << 28


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
        """The named QEMU model; ProfileError (field `cpu.name`) if there is none."""
        canonical = lookup_model(name) if isinstance(name, str) else None
        if canonical is None:
            known = ", ".join(CPU_MODELS)
            raise ProfileError(
                [FieldProblem("cpu.name", f"unknown CPU model {name!r} (known: {known})")]
            )
        return cls(model_signature(canonical), canonical)

    @classmethod
    def from_family_model_stepping(cls, family: int, model: int, stepping: int) -> CpuSpec:
        """ProfileError (field `cpu`) for values no CPUID signature can hold."""
        parts = {"family": family, "model": model, "stepping": stepping}
        if not all(_is_int(v) and within(f"cpu.{k}", v) for k, v in parts.items()):
            ranges = ", ".join(f"{k} {_range_text(f'cpu.{k}')}" for k in parts)
            reason = f"family/model/stepping {family}/{model}/{stepping} out of range ({ranges})"
            raise ProfileError([FieldProblem("cpu", reason)])
        return cls(cpu_signature(family, model, stepping))


CPU_KEYS = ("cpu.name", "cpu.signature", "cpu.family", "cpu.model", "cpu.stepping")


def cpu_from_forms(
    name: str | None,
    signature: int | None,
    fms: tuple[int | None, int | None, int | None],
    keys: tuple[str, ...] = CPU_KEYS,
) -> CpuSpec | None:
    """The CPU given as a model name, a signature, or family/model/stepping: at most one
    form, the last whole. ProfileError names the parts as `keys` (profile keys or flags)."""
    given = [k for k, v in zip(keys, (name, signature, *fms), strict=True) if v is not None]
    forms = (name is not None) + (signature is not None) + any(v is not None for v in fms)
    if forms > 1:
        one_of = f"{keys[0]}, {keys[1]} or {keys[2]}/{keys[3]}/{keys[4]}"
        raise ProfileError([FieldProblem(given[1], f"give exactly one of {one_of}")])
    if name is not None:
        try:
            return CpuSpec.from_name(name)
        except ProfileError as e:
            raise ProfileError([FieldProblem(keys[0], p.reason) for p in e.problems]) from None
    if signature is not None:
        return CpuSpec(signature)
    family, model, stepping = fms
    if family is None or model is None or stepping is None:
        if given:
            others = [k for k in keys[2:] if k != given[0]]
            reason = f"goes together with {others[0]} and {others[1]}"
            raise ProfileError([FieldProblem(given[0], reason)])
        return None
    try:
        return CpuSpec.from_family_model_stepping(family, model, stepping)
    except ProfileError as e:
        raise ProfileError([FieldProblem(keys[2], p.reason) for p in e.problems]) from None


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
SHA384_SIZE = 48
# QEMU's fw_cfg items OVMF measures into RTMR0, in that order.
ACPI_BLOBS = ("etc/table-loader", "etc/acpi/rsdp", "etc/acpi/tables")


class TdConfig(NamedTuple):
    """The TD_PARAMS a VMM chooses (reported, not measured) and how it measures TDVF."""

    attributes: int = TD_ATTRIBUTES_QEMU_DEFAULT
    xfam: int | None = None
    mrconfigid: bytes = ZERO_MR
    mrowner: bytes = ZERO_MR
    mrownerconfig: bytes = ZERO_MR
    page_order: PageOrder = PageOrder.PAGE
    raw_data_tail: RawDataTail = RawDataTail.IMAGE
    # The boot events OVMF extends into RTMR0-2 (measure/rtmr.py), predicted when `edk2`
    # (the firmware's edk2 stable release, YYYYMM) is given.
    edk2: int | None = None
    qemu: str | None = None  # QEMU's version: before 10.2 it rewrites the kernel's header
    # SHA-384 of QEMU's etc/table-loader, etc/acpi/rsdp, etc/acpi/tables as OVMF got them;
    # None: not known offline (RTMR0 is then unknown).
    acpi: tuple[bytes, bytes, bytes] | None = None
    # A direct boot given by its published digests instead of files (as dstack publishes
    # them): the kernel's Authenticode SHA-384 (of the bytes QEMU served), the initrd's
    # SHA-384, and the SHA-384 of the LoadOptions the EFI stub measured.
    kernel_authenticode: bytes | None = None
    initrd_sha384: bytes | None = None
    load_options_sha384: bytes | None = None


class IgvmConfig(NamedTuple):
    """[firmware] igvm: the guest's initial image is the IGVM file `GuestSpec.firmware`
    (its page data, parameter areas, VMSAs, guest policy and ID block)."""

    # PAGE_DATA without file data as SNP ZERO pages (QEMU's loader; igvmmeasure
    # --native-zero), not NORMAL pages of zeros (the IGVM specification, the igvm crate,
    # igvmmeasure and igvm-tooling).
    native_zero: bool = False


class VmDefinition(NamedTuple):
    """[qemu] and [libvirt]: how the measured guest is booted. Not measured (but for a TD,
    QEMU's version shapes its boot events: `tdx.qemu` follows `qemu_version`)."""

    qemu_version: str | None = None  # "X.Y[.Z]": whose object properties the arguments use
    libvirt_version: str | None = None  # whose domain schema the XML follows
    machine: str = "q35"
    # SEV family: the host's C-bit position (CPUID 0x8000001F EBX[5:0]) and how many
    # physical address bits encryption takes: QEMU checks both at KVM init.
    cbitpos: int = 51
    reduced_phys_bits: int = 1


ID_SIZE = 16  # FAMILY_ID, IMAGE_ID (abi.idblock, which loads only with an ID block)
ID_BLOCK_SIZE, ID_AUTH_SIZE = 96, 4096


class IdBlockConfig(NamedTuple):
    """[snp.id_block]: the ID block SNP_LAUNCH_FINISH takes, signed with the keys named here
    over the computed launch digest and the launch policy, or given signed (`block` and
    `auth`, as QEMU's sev-snp-guest takes them) by a guest owner who keeps the keys."""

    id_key: Path | None = None  # ECDSA P-384, PEM or DER; private to sign, public for digests
    author_key: Path | None = None
    family_id: bytes = bytes(ID_SIZE)
    image_id: bytes = bytes(ID_SIZE)
    guest_svn: int = 0
    # A key's passphrase comes from a file or an environment variable, never a value.
    id_key_passphrase_file: Path | None = None
    id_key_passphrase_env: str | None = None
    author_key_passphrase_file: Path | None = None
    author_key_passphrase_env: str | None = None
    block: bytes | None = None
    auth: bytes | None = None

    @property
    def author_key_enabled(self) -> bool:
        """Whether SNP_LAUNCH_FINISH checks an author key (AUTHOR_KEY_EN): one is named, or
        the given ID auth holds one (its AUTHOR_KEY field is not zero)."""
        if self.auth is not None:
            return any(self.auth[0x880 : 0x880 + 0x404])
        return self.author_key is not None


def definition_id_block(
    config: IdBlockConfig | None, signed: tuple[bytes, bytes, bool] | None
) -> tuple[bytes, bytes, bool] | None:
    """The ID block a VM definition of a guest carries, as (block, auth, AUTHOR_KEY_EN):
    `signed` (signed over the guest's launch digest by the caller, measure.idblock's
    `signed_for`: the codecs do not measure), else the block the profile gives signed; a
    ProfileError where keys are named and nothing was signed."""
    if config is None or signed is not None:
        return signed
    if config.block is not None and config.auth is not None:
        return config.block, config.auth, config.author_key_enabled
    reason = "signed over the launch digest: sign it first (measure.idblock.signed_for)"
    raise ProfileError([FieldProblem("snp.id_block", reason)])


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
    # The firmware by its measured facts instead of the image (sev-snp; `firmware` is then
    # not read).
    firmware_descriptor: FirmwareDescriptor | None = None
    id_block: IdBlockConfig | None = None
    igvm: IgvmConfig | None = None
    vm: VmDefinition | None = None

    @property
    def vm_definition(self) -> VmDefinition:
        """How the guest is booted, defaults filled in."""
        return self.vm if self.vm is not None else VmDefinition()

    @property
    def td_config(self) -> TdConfig:
        """The TD configuration, defaults filled in."""
        return self.td if self.td is not None else TdConfig()

    def value(self, field: Field) -> Any:
        """The value of the field-table row `field` here (None where this spec has none)."""
        obj: Any = self
        for part in (field.attr or "").split("."):
            if obj is None:
                return None
            if obj is self and part in ("td", "vm"):  # defaults filled in
                obj = self.td_config if part == "td" else self.vm_definition
            else:
                obj = getattr(obj, part)
        return obj

    def files(self) -> list[Path]:
        """The files this guest is measured from: its firmware, kernel and initrd."""
        boot = self.boot
        items = () if boot is None else (boot.kernel, boot.initrd)
        firmware = [self.firmware] if self.firmware_descriptor is None else []
        return firmware + [i.path for i in items if i is not None and i.path is not None]

    def expectations(self) -> dict[str, Any]:
        """The audit expectations this spec fixes: Expectations field -> value."""
        return {
            f.expectation: self.value(f)
            for f in FIELDS
            if f.expectation is not None and self.technology in f.applies
        }

    def check(self) -> GuestSpec:
        """This spec with every value in its own type (an enum's value string becomes the
        enum, a path string a Path), if usable; otherwise ProfileError listing every
        problem. Measure only what `check` returns."""
        spec, problems = self._normalized()
        problems += [p for p in spec.problems() if p.field not in {q.field for q in problems}]
        if problems:
            raise ProfileError(problems)
        return spec

    def _normalized(self) -> tuple[GuestSpec, list[FieldProblem]]:
        """This spec with convertible values converted; a value of a wrong type is a problem
        and is replaced by the default, so that the semantic checks can still run."""
        fields = self._asdict()
        problems = _typed_fields(fields, _TYPES, _FALLBACK | GuestSpec._field_defaults)
        td, td_problems = _normalized_td(fields["td"])
        boot, boot_problems = _normalized_boot(fields["boot"])
        fields.update(td=td, boot=boot)
        if fields["firmware_descriptor"] is not None:
            from cvmlaunch.firmware.descriptor import FirmwareDescriptor

            if not isinstance(fields["firmware_descriptor"], FirmwareDescriptor):
                problems.append(FieldProblem("firmware.descriptor",
                                             "expected a FirmwareDescriptor or None"))  # fmt: skip
                fields["firmware_descriptor"] = None
        igvm = fields["igvm"]
        if igvm is not None and not (isinstance(igvm, IgvmConfig)
                                     and isinstance(igvm.native_zero, bool)):  # fmt: skip
            problems.append(FieldProblem("firmware.igvm", "expected an IgvmConfig or None"))
            fields["igvm"] = None
        vm, vm_problems = _normalized_vm(fields["vm"])
        fields["vm"] = vm
        problems += vm_problems
        id_block, id_block_problems = _normalized_id_block(fields["id_block"])
        fields["id_block"] = id_block
        problems += id_block_problems
        for name, kind in (("cpu", CpuSpec), ("launch_secret", SevLaunchSecretInputs)):
            value = fields[name]
            if value is not None and not isinstance(value, kind):
                problems.append(FieldProblem(name, f"expected a {kind.__name__} or None"))
                fields[name] = None
        return GuestSpec(**fields), problems + td_problems + boot_problems

    def problems(self) -> list[FieldProblem]:
        """Every semantic problem of this (normalized) spec; empty when it is usable."""
        out: list[FieldProblem] = []

        def bad(name: str, reason: str) -> None:
            out.append(FieldProblem(name, reason))

        if self.firmware_sha256 is not None and len(self.firmware_sha256) != SHA256_SIZE:
            bad("firmware.sha256", "expected 32 bytes (64 hex digits)")
        # Parts given that do not apply to the technology (the field table's rule).
        given = (
            ("firmware.digest", self.firmware_digest),
            ("firmware.descriptor", self.firmware_descriptor),
            ("cpu", self.cpu),
            ("boot", self.boot),
            ("sev.tik", self.launch_secret),
            ("tdx", self.td),
            ("snp.id_block", self.id_block),
            ("firmware.igvm", self.igvm),
        )
        out += inapplicable(
            self.technology,
            [(name, _GIVEN_AS.get(name, name)) for name, v in given if v is not None],
        )
        if self.firmware_digest is not None and len(self.firmware_digest) != LD_SIZE:
            bad("firmware.digest", "expected 48 bytes (96 hex digits) of SHA-384")
        if self.firmware_descriptor is not None:
            out += _descriptor_problems(self, self.firmware_descriptor)
        tdx = self.technology is Technology.TDX
        needs_vcpus = self.technology is not Technology.SEV
        if needs_vcpus and not within("vcpus", self.vcpus):
            bad("vcpus", f"expected {_range_text('vcpus')}, got {self.vcpus}")
        if not within("memory_mib", self.memory_mib):
            bad("memory_mib", f"expected {_range_text('memory_mib')}, got {self.memory_mib}")
        if tdx:
            out += _tdx_problems(self)
        if self.igvm is not None:
            # The file holds the whole initial image and every VMSA.
            for name, value in (("firmware.digest", self.firmware_digest),
                                ("firmware.descriptor", self.firmware_descriptor),
                                ("boot", self.boot)):  # fmt: skip
                if value is not None:
                    bad(name, "the IGVM file holds the whole initial image; not given with it")
        elif needs_vcpus and not tdx and self.vmm is Vmm.QEMU and self.cpu is None:
            bad(
                "cpu",
                "required with vmm 'qemu', which puts the CPUID signature in RDX of every VMSA "
                "(profile [cpu], or --vcpu-type / --vcpu-sig / --vcpu-family)",
            )
        if self.cpu is not None and not within("cpu.signature", self.cpu.signature):
            bad("cpu.signature", f"expected a 32-bit value, got {self.cpu.signature:#x}")
        if not within("snp.guest_features", self.guest_features):
            bad("snp.guest_features", "expected a 64-bit value")
        elif self.technology is Technology.SEV_SNP and not self.guest_features & 1:
            bad("snp.guest_features", "bit 0 (SNPActive) must be set for an SEV-SNP guest")
        if self.vmsa_gpa % PAGE_SIZE or not 0 <= self.vmsa_gpa < 1 << 52:
            bad("snp.vmsa_gpa", "expected a 4 KiB aligned GPA below 2^52")
        if not within("sev.policy", self.sev_policy):
            bad("sev.policy", "expected a 32-bit value")
        if self.technology is Technology.SEV_SNP:
            if not within("snp.policy", self.snp_policy) or self.snp_policy & GUEST_POLICY_MBZ:
                bad("snp.policy", "bits 63:26 are reserved and must be 0")
            elif not self.snp_policy & GUEST_POLICY_MBO:
                bad("snp.policy", "bit 17 is reserved and must be 1")
        if len(self.host_data) != HOST_DATA_SIZE:
            bad("snp.host_data", "expected 32 bytes (64 hex digits)")
        if self.boot is not None:
            out += _boot_problems(self.boot)
        if self.launch_secret is not None:
            out += _launch_secret_problems(self.launch_secret, self.technology)
        if self.id_block is not None and self.technology is Technology.SEV_SNP:
            out += _id_block_problems(self.id_block)
        if self.vm is not None:
            out += _vm_problems(self.vm, self.td_config if tdx else None)
        return out


# The structured parts of a spec, by the field-table row that says where they apply.
_GIVEN_AS = {"cpu": "cpu.name", "tdx": "tdx.attributes", "snp.id_block": "snp.id_block.id_key"}


def _range_text(key: str) -> str:
    low, high = bounds(key)
    return f"{low}..{high}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_OPTIONAL = object()  # marks a kind that also takes None


def _typed(value: object, kind: object) -> tuple[object, str | None]:
    """`value` in `kind` (int, bytes, Path or a StrEnum; in a tuple with _OPTIONAL, None
    too), converted where the conversion cannot change what is measured; or why not."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is None and _OPTIONAL in kinds:
        return None, None
    base = kinds[0]
    if base is int:
        if _is_int(value):
            return value, None
        return value, f"expected an integer, got {type(value).__name__} {value!r}"
    if base is str:
        if isinstance(value, str):
            return value, None
        return value, f"expected a string, got {type(value).__name__}"
    if base is bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value), None
        return value, f"expected bytes, got {type(value).__name__}"
    if base is Path:
        if not isinstance(value, str | Path):
            return value, f"expected a path, got {type(value).__name__}"
        if "\0" in str(value):  # no system call takes it
            return value, "a path cannot contain a NUL character"
        return Path(value), None
    if not (isinstance(base, type) and issubclass(base, StrEnum)):
        raise TypeError(f"no conversion to {base!r}")  # a kind table names a new kind
    if isinstance(value, str):
        try:
            return base(value), None
        except ValueError:
            pass
    values = ", ".join(repr(v.value) for v in base)
    return value, f"expected one of {values}, got {value!r}"


def _typed_fields(
    fields: dict[str, object],
    kinds: tuple[tuple[str, object], ...],
    defaults: Mapping[str, object],
) -> list[FieldProblem]:
    """Each of `fields` that `kinds` names by its profile key, in its kind (`_typed`); one of a
    wrong kind is a problem under its key and takes its default, so that the other checks
    can still run."""
    problems = []
    for key, kind in kinds:
        name = _attr(key)
        fields[name], problem = _typed(fields[name], kind)
        if problem is not None:
            problems.append(FieldProblem(key, problem))
            fields[name] = defaults.get(name)
    return problems


# The kind of each plain field, by its key (the field table says where it lives).
_TYPES: tuple[tuple[str, object], ...] = (
    ("technology", Technology),
    ("firmware.path", Path),
    ("firmware.sha256", (bytes, _OPTIONAL)),
    ("firmware.digest", (bytes, _OPTIONAL)),
    ("vcpus", int),
    ("vmm", Vmm),
    ("snp.guest_features", int),
    ("snp.vmsa_gpa", int),
    ("sev.policy", int),
    ("snp.policy", int),
    ("snp.host_data", bytes),
    ("memory_mib", int),
)
# What a wrongly typed field without a default is replaced by while the rest is checked.
_FALLBACK: dict[str, object] = {"technology": Technology.SEV_SNP, "firmware": Path()}

_TD_TYPES: tuple[tuple[str, object], ...] = (
    ("tdx.attributes", int),
    ("tdx.xfam", (int, _OPTIONAL)),
    ("tdx.mrconfigid", bytes),
    ("tdx.mrowner", bytes),
    ("tdx.mrownerconfig", bytes),
    ("tdx.page_order", PageOrder),
    ("tdx.raw_data_tail", RawDataTail),
    ("tdx.edk2", (int, _OPTIONAL)),
    ("tdx.qemu", (str, _OPTIONAL)),
    ("tdx.kernel_authenticode", (bytes, _OPTIONAL)),
    ("tdx.initrd_sha384", (bytes, _OPTIONAL)),
    ("tdx.load_options_sha384", (bytes, _OPTIONAL)),
)


def _attr(key: str) -> str:
    """The attribute that holds field `key`, in the GuestSpec or the part it belongs to."""
    return BY_KEY[key].attr_name


def _normalized_td(td: object) -> tuple[TdConfig | None, list[FieldProblem]]:
    if td is None:
        return None, []
    if not isinstance(td, TdConfig):
        return None, [FieldProblem("tdx", "expected a TdConfig or None")]
    fields = td._asdict()
    problems = _typed_fields(fields, _TD_TYPES, TdConfig._field_defaults)
    acpi = fields["acpi"]
    if acpi is not None:
        digests = [_typed(d, bytes) for d in acpi] if isinstance(acpi, tuple | list) else []
        if len(digests) != len(ACPI_BLOBS) or any(p is not None for _, p in digests):
            reason = f"expected the SHA-384 of {', '.join(ACPI_BLOBS)}, as bytes"
            problems.append(FieldProblem("tdx.acpi", reason))
            fields["acpi"] = None
        else:
            fields["acpi"] = tuple(d for d, _ in digests if isinstance(d, bytes))
    return TdConfig(**fields), problems


def _normalized_boot(boot: object) -> tuple[DirectBoot | None, list[FieldProblem]]:
    if boot is None:
        return None, []
    if not isinstance(boot, DirectBoot):
        return None, [FieldProblem("boot", "expected a DirectBoot or None")]
    problems: list[FieldProblem] = []
    files: list[BootFile | None] = []
    for name, item in (("boot.kernel", boot.kernel), ("boot.initrd", boot.initrd)):
        if item is None and name == "boot.initrd":
            files.append(None)
            continue
        if not isinstance(item, BootFile):
            problems.append(FieldProblem(name, "expected a BootFile"))
            files.append(BootFile(sha256=bytes(SHA256_SIZE)))
            continue
        path, bad_path = _typed(item.path, (Path, _OPTIONAL))
        sha, bad_sha = _typed(item.sha256, (bytes, _OPTIONAL))
        problems += [FieldProblem(name, p) for p in (bad_path, bad_sha) if p is not None]
        files.append(
            BootFile(
                path if bad_path is None and isinstance(path, Path) else None,
                sha if bad_sha is None and isinstance(sha, bytes) else None,
            )
        )
    cmdline: object = boot.cmdline
    if not isinstance(cmdline, str):
        problems.append(
            FieldProblem("boot.cmdline", f"expected a string, got {type(cmdline).__name__}")
        )
        cmdline = ""
    kernel = files[0] if files[0] is not None else BootFile(sha256=bytes(SHA256_SIZE))
    return DirectBoot(kernel, files[1], cmdline), problems


_VM_TYPES: tuple[tuple[str, object], ...] = (
    ("qemu.version", (str, _OPTIONAL)),
    ("libvirt.version", (str, _OPTIONAL)),
    ("qemu.machine", str),
    ("qemu.cbitpos", int),
    ("qemu.reduced_phys_bits", int),
)


def _normalized_vm(vm: object) -> tuple[VmDefinition | None, list[FieldProblem]]:
    if vm is None:
        return None, []
    if not isinstance(vm, VmDefinition):
        return None, [FieldProblem("qemu", "expected a VmDefinition or None")]
    fields = vm._asdict()
    problems = _typed_fields(fields, _VM_TYPES, VmDefinition._field_defaults)
    return VmDefinition(**fields), problems


def _vm_problems(vm: VmDefinition, td: TdConfig | None) -> list[FieldProblem]:
    out = []
    for key, version in (("qemu.version", vm.qemu_version),
                         ("libvirt.version", vm.libvirt_version)):  # fmt: skip
        if version is not None and qemu_version(version) is None:
            out.append(
                FieldProblem(key, f"expected a version like 10.2 or 9.1.0, got {version!r}")
            )
    for key, value in (("qemu.cbitpos", vm.cbitpos),
                       ("qemu.reduced_phys_bits", vm.reduced_phys_bits)):  # fmt: skip
        if not within(key, value):
            out.append(FieldProblem(key, f"expected {_range_text(key)}, got {value}"))
    if not vm.machine or not vm.machine.replace("-", "").replace(".", "").isalnum():
        out.append(FieldProblem("qemu.machine", f"expected a machine type, got {vm.machine!r}"))
    booted, named = None if td is None else td.qemu, vm.qemu_version
    if booted is not None and named is not None and qemu_version(booted) != qemu_version(named):
        reason = f"{booted}, but qemu.version is {named}: one QEMU boots it"
        out.append(FieldProblem("tdx.qemu", reason))
    return out


_ID_BLOCK_TYPES: tuple[tuple[str, object], ...] = (
    ("snp.id_block.id_key", (Path, _OPTIONAL)),
    ("snp.id_block.author_key", (Path, _OPTIONAL)),
    ("snp.id_block.family_id", bytes),
    ("snp.id_block.image_id", bytes),
    ("snp.id_block.guest_svn", int),
    ("snp.id_block.id_key_passphrase_file", (Path, _OPTIONAL)),
    ("snp.id_block.id_key_passphrase_env", (str, _OPTIONAL)),
    ("snp.id_block.author_key_passphrase_file", (Path, _OPTIONAL)),
    ("snp.id_block.author_key_passphrase_env", (str, _OPTIONAL)),
    ("snp.id_block.block", (bytes, _OPTIONAL)),
    ("snp.id_block.auth", (bytes, _OPTIONAL)),
)


def _normalized_id_block(config: object) -> tuple[IdBlockConfig | None, list[FieldProblem]]:
    if config is None:
        return None, []
    if not isinstance(config, IdBlockConfig):
        return None, [FieldProblem("snp.id_block", "expected an IdBlockConfig or None")]
    fields = config._asdict()
    problems = _typed_fields(fields, _ID_BLOCK_TYPES, IdBlockConfig._field_defaults)
    return IdBlockConfig(**fields), problems


def checked_id_block(config: object) -> IdBlockConfig:
    """`config` as an IdBlockConfig with its values in their types, if usable; otherwise
    ProfileError listing every problem (the checks GuestSpec.check makes of it)."""
    normalized, problems = _normalized_id_block(config)
    if normalized is not None and not problems:
        problems = _id_block_problems(normalized)
    if problems or normalized is None:
        raise ProfileError(problems)
    return normalized


def _id_block_problems(config: IdBlockConfig) -> list[FieldProblem]:
    out: list[FieldProblem] = []
    key = "snp.id_block"
    signed = config.block is not None or config.auth is not None
    if signed:
        if config.block is None or config.auth is None:
            out.append(FieldProblem(f"{key}.block", "give the ID block and its auth together"))
        # What the signed block says is the guest owner's: giving it twice could disagree.
        signing = ("id_key", "author_key", "id_key_passphrase_file", "id_key_passphrase_env",
                   "author_key_passphrase_file", "author_key_passphrase_env")  # fmt: skip
        defaults = IdBlockConfig._field_defaults
        for name in (*signing, "family_id", "image_id", "guest_svn"):
            if getattr(config, name) != defaults[name]:
                reason = "is the signed ID block's (block, auth); not given again"
                out.append(FieldProblem(f"{key}.{name}", reason))
    elif config.id_key is None:
        out.append(FieldProblem(f"{key}.id_key", "required: the key that signs the ID block "
                                "(or give block and auth, signed elsewhere)"))  # fmt: skip
    sizes = (("family_id", ID_SIZE), ("image_id", ID_SIZE), ("block", ID_BLOCK_SIZE),
             ("auth", ID_AUTH_SIZE))  # fmt: skip
    for name, size in sizes:
        value = getattr(config, name)
        if value is not None and len(value) != size:
            out.append(FieldProblem(f"{key}.{name}", f"expected {size} bytes, got {len(value)}"))
    if not 0 <= config.guest_svn <= 0xFFFF_FFFF:
        out.append(FieldProblem(f"{key}.guest_svn", "expected a 32-bit GUEST_SVN"))
    for name in ("id_key", "author_key"):
        if (
            getattr(config, f"{name}_passphrase_file") is not None
            and getattr(config, f"{name}_passphrase_env") is not None
        ):
            reason = "give the passphrase once: a file or an environment variable"
            out.append(FieldProblem(f"{key}.{name}_passphrase_env", reason))
        given = getattr(config, f"{name}_passphrase_file") or getattr(
            config, f"{name}_passphrase_env"
        )
        if given is not None and getattr(config, name) is None:
            out.append(FieldProblem(f"{key}.{name}_passphrase_file", f"no {name} to decrypt"))
    return out


def firmware_name(spec: GuestSpec) -> str:
    """How the firmware is named in documents: its path, or that a descriptor stands for it."""
    return "(descriptor)" if spec.firmware_descriptor is not None else str(spec.firmware)


def _descriptor_problems(spec: GuestSpec, descriptor: FirmwareDescriptor) -> list[FieldProblem]:
    key = "firmware.descriptor"
    out = [FieldProblem(f"{key}.{name}", reason) for name, reason in descriptor.problems()]
    if spec.technology is Technology.TDX:
        td = spec.td_config
        if descriptor.tdvf is None:
            out.append(FieldProblem(f"{key}.tdvf_sections", "required for a tdx guest"))
        elif descriptor.mrtd(str(td.page_order), str(td.raw_data_tail)) is None:
            pair = f"{td.page_order!s}/{td.raw_data_tail!s}"
            reason = f"no MRTD for this page order and raw-data tail (key {pair!r})"
            out.append(FieldProblem(f"{key}.mrtd", reason))
        return out
    if spec.technology is not Technology.SEV_SNP:  # sev, sev-es: one SHA-256 stream
        if descriptor.sha256_chaining is None:
            reason = f"required for an {spec.technology} guest (firmware describe writes it)"
            out.append(FieldProblem(f"{key}.sha256_chaining", reason))
        return out
    if not descriptor.sev_metadata:
        out.append(FieldProblem(f"{key}.sev_metadata", "required for an sev-snp guest"))
    if spec.firmware_digest is None:
        reason = "required with firmware.descriptor: the launch digest after the firmware pages"
        out.append(FieldProblem("firmware.digest", reason))
    pin = spec.firmware_sha256
    if pin is not None and pin != descriptor.sha256:
        out.append(FieldProblem("firmware.sha256", "differs from firmware.descriptor.sha256"))
    return out


def _tdx_problems(spec: GuestSpec) -> list[FieldProblem]:
    out = []
    if spec.vmm is not Vmm.QEMU:
        out.append(FieldProblem("vmm", f"tdx guests are launched by qemu, not {spec.vmm}"))
    td = spec.td_config
    boot = spec.boot
    if boot is not None:
        # A TD's kernel enters no MRTD: only RTMR1 (its Authenticode digest) and RTMR2.
        if td.edk2 is None:
            out.append(FieldProblem("boot", "a TD's kernel, initrd and command line enter "
                                    "RTMR1-2 only: give tdx.edk2 to predict them"))  # fmt: skip
        for name, item in (("boot.kernel", boot.kernel), ("boot.initrd", boot.initrd)):
            if item is not None and item.path is None:
                out.append(FieldProblem(f"{name}_sha256", "a TD measures the file itself "
                                        "(Authenticode, SHA-384): give the file"))  # fmt: skip
        if td.kernel_authenticode is not None:
            out.append(FieldProblem("tdx.kernel_authenticode", "given with [boot]: the kernel "
                                    "is the file or its digest, not both"))  # fmt: skip
        if td.edk2 is not None and td.qemu is None:
            out.append(
                FieldProblem(
                    "tdx.qemu",
                    "required with a kernel: QEMU before 10.2 "
                    "rewrites the kernel's setup header, which RTMR1 measures",
                )
            )
    published = (td.kernel_authenticode, td.initrd_sha384, td.load_options_sha384)
    if any(d is not None for d in published):
        key = "tdx.kernel_authenticode"
        if td.edk2 is None:
            reason = "a boot given by its digests enters RTMR1-2 only: give tdx.edk2"
            out.append(FieldProblem(key, reason))
        if td.kernel_authenticode is None and boot is None:
            reason = "required with tdx.initrd_sha384 or tdx.load_options_sha384"
            out.append(FieldProblem(key, reason))
    return out + td_config_problems(td)


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
    if td.edk2 is not None and not (within("tdx.edk2", td.edk2) and 1 <= td.edk2 % 100 <= 12):
        low, high = bounds("tdx.edk2")
        reason = f"expected an edk2 stable release as YYYYMM, {low}..{high}, got {td.edk2}"
        out.append(FieldProblem("tdx.edk2", reason))
    if td.qemu is not None and qemu_version(td.qemu) is None:
        out.append(
            FieldProblem("tdx.qemu", f"expected a version like 8.2 or 10.2.0, got {td.qemu!r}")
        )
    for name in ("kernel_authenticode", "initrd_sha384", "load_options_sha384"):
        digest: bytes | None = getattr(td, name)
        if digest is not None and len(digest) != SHA384_SIZE:
            out.append(FieldProblem(f"tdx.{name}", "expected 48 bytes (96 hex digits)"))
    if td.acpi is not None and any(len(d) != SHA384_SIZE for d in td.acpi):
        out.append(FieldProblem("tdx.acpi", "expected SHA-384 digests, 48 bytes (96 hex digits)"))
    return out


def qemu_version(text: str) -> tuple[int, int] | None:
    """QEMU's (major, minor) from "8.2" or "10.2.0"; None if it is no such version."""
    parts = text.split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def td_attribute_problems(attributes: int) -> list[str]:
    """Why `attributes` cannot be a TD's ATTRIBUTES; empty when it can."""
    from cvmlaunch.abi.tdx import TD_ATTRIBUTES_DEFINED, TdAttribute, flag_names

    if not within("tdx.attributes", attributes):
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
    from cvmlaunch.abi.tdx import XFAM_FIXED0, XFAM_FIXED1, XFAM_GROUPS, XfamBit, flag_names

    if not within("tdx.xfam", xfam):
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


__all__ = [
    "CPU_KEYS",
    "DEFAULT_MEMORY_MIB",
    "MAX_MEMORY_MIB",
    "MAX_VCPUS",
    "SHA256_SIZE",
    "ZERO_MR",
    "BootFile",
    "CpuSpec",
    "DirectBoot",
    "GuestSpec",
    "IdBlockConfig",
    "IgvmConfig",
    "PageOrder",
    "RawDataTail",
    "SevLaunchSecretInputs",
    "TdConfig",
    "Technology",
    "VmDefinition",
    "Vmm",
    "checked_id_block",
    "cpu_from_forms",
    "definition_id_block",
    "td_attribute_problems",
    "td_config_problems",
    "xfam_problems",
]
