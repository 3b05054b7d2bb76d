"""The field table: one row per configuration field, read by every codec and analysis that
names a field, so that none of them restates it.

A row says how the field is written (profile key, flag, hex or decimal), where it lives in a
`GuestSpec`, which technologies it applies to, whether it can enter a launch digest or is only
reported, which kinds of measured step it shapes, how it is named in the `inputs` document of
`measure --json`, which audit expectation it yields, and the range a number must lie in (the
profile's constraints and JSON Schema, and the spec's range checks, both read it).
"""

from __future__ import annotations

from enum import StrEnum

from cvmlaunch.errors import FieldProblem
from cvmlaunch.guest.technology import Technology
from cvmlaunch.namedtuple import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterable


class Format(StrEnum):
    """How a value is written in a profile, a flag and a document."""

    DEC = "dec"  # counts
    HEX = "hex"  # bit fields and addresses
    BYTES = "bytes"  # digests and identifiers, as hex digits
    TEXT = "text"
    PATH = "path"
    ENUM = "enum"


SEV, SEV_ES, SEV_SNP, TDX = Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP, Technology.TDX
_ALL = frozenset(Technology)
_SEV_FAMILY = frozenset({SEV, SEV_ES, SEV_SNP})
_WITH_VMSAS = frozenset({SEV_ES, SEV_SNP})

MAX_VCPUS = 4096
MAX_MEMORY_MIB = 1 << 24  # 16 TiB
U32 = (0, 0xFFFF_FFFF)
U64 = (0, (1 << 64) - 1)
# OVMF measures a TD's boot into RTMRs from edk2-stable202302 (OvmfPkgX64).
EDK2 = (202302, 209912)
# CPUID(1).EAX: the family is 0xF plus an 8-bit extended family.
CPU_FAMILY, CPU_MODEL, CPU_STEPPING = (0, 0xF + 0xFF), (0, 0xFF), (0, 0xF)

# The kinds of measured step (the plan's operation kinds; "td" for a TDVF section's records).
FIRMWARE, METADATA, KERNEL_HASHES, VMSA, TD = (
    *("firmware", "sev-metadata", "kernel-hashes"),
    *("vmsa", "td"),
)


class Field(NamedTuple):
    key: str  # dotted profile key, the name every problem and cause uses
    flag: str | None  # the command-line flag that sets it
    format: Format
    applies: frozenset[Technology]
    attr: str | None  # where the value lives in a GuestSpec ("td.xfam"); None: spelling only
    measured: bool = False  # can enter a launch digest (else only reported)
    shapes: tuple[str, ...] = ()  # the kinds of step it shapes
    # Among the fields that shape one step, the lower is named first as its cause: the
    # likelier mistake.
    cause: int = 99
    document: str | None = None  # its key in the `inputs` of `measure --json`
    expectation: str | None = None  # the audit expectation it yields (attest.Expectations)
    bounds: tuple[int, int] | None = None  # a number's least and greatest value
    # What a difference in it means, for diff: a template of the two values {a} and {b}.
    meaning: str | None = None

    @property
    def attr_name(self) -> str:
        """The attribute that holds the value, in the GuestSpec or in the part of it that `attr`
        names first (`td.xfam`: the TdConfig's `xfam`)."""
        return (self.attr or "").rpartition(".")[2]


_TD_REPORTED = "{key}: reported in the TD report and quote, not part of MRTD"

# In the order input differences are listed.
FIELDS = (
    Field("technology", "--technology", Format.ENUM, _ALL, "technology", True),
    Field("firmware.sha256", "--firmware-sha256", Format.BYTES, _ALL, "firmware_sha256", True,
          (FIRMWARE, METADATA, VMSA, TD), 7, "firmware_sha256",
          meaning="different firmware images"),
    Field("firmware.path", "--firmware", Format.PATH, _ALL, "firmware", True,
          (FIRMWARE, METADATA), 14, "firmware", meaning="firmware file {a} vs {b}"),
    Field("vcpus", "--vcpus", Format.DEC, _ALL, "vcpus", True, (VMSA,), 1, "vcpus",
          bounds=(1, MAX_VCPUS)),
    Field("cpu.name", "--vcpu-type", Format.TEXT, _SEV_FAMILY, "cpu", True, (VMSA,), 2,
          meaning="CPU model {a} vs {b}"),
    Field("cpu.signature", "--vcpu-sig", Format.HEX, _SEV_FAMILY, "cpu", True, (VMSA,), 3,
          bounds=U32),
    Field("vmm", "--vmm", Format.ENUM, _ALL, "vmm", True, (METADATA, VMSA), 4, "vmm",
          meaning="VMM flavour {a} vs {b}"),
    Field("snp.guest_features", "--guest-features", Format.HEX, frozenset({SEV_SNP}),
          "guest_features", True, (VMSA,), 5, "guest_features", bounds=U64),
    Field("snp.vmsa_gpa", "--vmsa-gpa", Format.HEX, frozenset({SEV_SNP}), "vmsa_gpa", True,
          (VMSA,), 6, "vmsa_gpa", bounds=U64, meaning="VMSA GPA {a} vs {b}"),
    Field("boot", None, Format.TEXT, _ALL, "boot", True, (METADATA, KERNEL_HASHES), 13,
          meaning="direct boot: {a} vs {b}"),
    Field("boot.kernel", "--kernel", Format.PATH, _ALL, "boot.kernel", True,
          (KERNEL_HASHES,), 10, "kernel_sha256", meaning="a different kernel (SHA-256)"),
    Field("boot.initrd", "--initrd", Format.PATH, _ALL, "boot.initrd", True,
          (KERNEL_HASHES,), 11, "initrd_sha256", meaning="a different initrd (SHA-256)"),
    Field("boot.cmdline", "--append", Format.TEXT, _ALL, "boot.cmdline", True,
          (KERNEL_HASHES,), 12, "cmdline", meaning="kernel command line {a!r} vs {b!r}"),
    # The guest's RAM: every VMM needs it; only a TD measures it (in its TD HOB).
    Field("memory_mib", "--memory-mib", Format.DEC, _ALL, "memory_mib", True, (TD,), 9,
          "memory_mib", bounds=(1, MAX_MEMORY_MIB),
          meaning="guest RAM {a} vs {b} MiB: shapes the TD HOB, which TDVF measures into RTMR0 "
          "(not MRTD)"),
    Field("tdx.page_order", "--tdx-page-order", Format.ENUM, frozenset({TDX}), "td.page_order",
          True, (TD,), 0, "page_order",
          meaning="page order {a} vs {b}: 'page' adds then extends each page (upstream KVM, "
          "Linux >= 6.16); 'section' adds all of a section's pages before extending them "
          "(QEMU 8.2-era builds)"),
    Field("tdx.raw_data_tail", "--raw-data-tail", Format.ENUM, frozenset({TDX}),
          "td.raw_data_tail", True, (TD,), 8, "raw_data_tail",
          meaning="memory past a section's RawDataSize: {a} vs {b}"),
    Field("sev.policy", "--sev-policy", Format.HEX, frozenset({SEV, SEV_ES}), "sev_policy",
          document="sev_policy", bounds=U32,
          meaning="guest policy: not in the launch digest (it enters the LAUNCH_MEASURE HMAC)"),
    Field("snp.host_data", None, Format.BYTES, frozenset({SEV_SNP}), "host_data",
          expectation="host_data",
          meaning="HOST_DATA: reported in the attestation report, not measured"),
    Field("snp.policy", None, Format.HEX, frozenset({SEV_SNP}), "snp_policy",
          expectation="policy", bounds=U64,
          meaning="guest POLICY: reported in the attestation report, not measured"),
    # The ID block: reported (its key digests, FAMILY_ID, IMAGE_ID, GUEST_SVN), never
    # measured; audit takes its expectations from the signed block (attest.expect).
    Field("snp.id_block.id_key", None, Format.PATH, frozenset({SEV_SNP}), "id_block.id_key",
          meaning="ID key: its digest is reported (ID_KEY_DIGEST), not measured"),
    Field("snp.id_block.author_key", None, Format.PATH, frozenset({SEV_SNP}),
          "id_block.author_key",
          meaning="author key: its digest is reported (AUTHOR_KEY_DIGEST), not measured"),
    Field("snp.id_block.family_id", None, Format.BYTES, frozenset({SEV_SNP}),
          "id_block.family_id", meaning="FAMILY_ID: reported, not measured"),
    Field("snp.id_block.image_id", None, Format.BYTES, frozenset({SEV_SNP}),
          "id_block.image_id", meaning="IMAGE_ID: reported, not measured"),
    Field("snp.id_block.guest_svn", None, Format.DEC, frozenset({SEV_SNP}),
          "id_block.guest_svn", bounds=U32, meaning="GUEST_SVN: reported, not measured"),
    *(Field(f"snp.id_block.{name}", None, form, frozenset({SEV_SNP}), f"id_block.{name}")
      for name, form in (("id_key_passphrase_file", Format.PATH),
                         ("id_key_passphrase_env", Format.TEXT),
                         ("author_key_passphrase_file", Format.PATH),
                         ("author_key_passphrase_env", Format.TEXT))),
    Field("snp.id_block.block", None, Format.BYTES, frozenset({SEV_SNP}), "id_block.block",
          meaning="a signed ID block: reported by its parts, not measured"),
    Field("snp.id_block.auth", None, Format.BYTES, frozenset({SEV_SNP}), "id_block.auth",
          meaning="a signed ID auth: reported by its key digests, not measured"),
    # How the guest is booted (cvmlaunch qemu / libvirt): not measured.
    Field("qemu.version", None, Format.TEXT, _ALL, "vm.qemu_version",
          meaning="QEMU {a} vs {b}: not measured (a TD's boot follows it: tdx.qemu)"),
    Field("qemu.machine", None, Format.TEXT, _ALL, "vm.machine",
          meaning="machine type {a} vs {b}: not measured"),
    Field("qemu.cbitpos", None, Format.DEC, _SEV_FAMILY, "vm.cbitpos", bounds=(0, 63),
          meaning="C-bit position {a} vs {b}: the host's, not measured"),
    Field("qemu.reduced_phys_bits", None, Format.DEC, _SEV_FAMILY, "vm.reduced_phys_bits",
          bounds=(1, 63), meaning="reduced physical address bits {a} vs {b}: not measured"),
    Field("libvirt.version", None, Format.TEXT, _ALL, "vm.libvirt_version",
          meaning="libvirt {a} vs {b}: not measured"),
    Field("tdx.attributes", "--tdx-attributes", Format.HEX, frozenset({TDX}), "td.attributes",
          expectation="td_attributes", bounds=U64, meaning=_TD_REPORTED),
    Field("tdx.mrconfigid", "--mrconfigid", Format.BYTES, frozenset({TDX}), "td.mrconfigid",
          expectation="mrconfigid", meaning=_TD_REPORTED),
    Field("tdx.mrowner", "--mrowner", Format.BYTES, frozenset({TDX}), "td.mrowner",
          expectation="mrowner", meaning=_TD_REPORTED),
    Field("tdx.mrownerconfig", "--mrownerconfig", Format.BYTES, frozenset({TDX}),
          "td.mrownerconfig", expectation="mrownerconfig", meaning=_TD_REPORTED),
    Field("tdx.xfam", "--xfam", Format.HEX, frozenset({TDX}), "td.xfam", expectation="xfam",
          bounds=U64, meaning=_TD_REPORTED),
    Field("tdx.edk2", "--edk2", Format.DEC, frozenset({TDX}), "td.edk2", document="edk2",
          bounds=EDK2,
          meaning="edk2 release {a} vs {b}: moves the ReadyToBoot separator (202411) and the "
          "initrd= form of the LoadOptions (202508): RTMR0-2, not MRTD"),
    Field("tdx.qemu", "--qemu-version", Format.TEXT, frozenset({TDX}), "td.qemu",
          document="qemu",
          meaning="QEMU {a} vs {b}: before 10.2 it rewrites the kernel's setup header, which "
          "RTMR1 measures"),
    Field("tdx.acpi", None, Format.BYTES, frozenset({TDX}), "td.acpi", document="acpi_sha384",
          meaning="QEMU's ACPI blobs (their SHA-384): RTMR0, not MRTD"),
    Field("tdx.kernel_authenticode", "--kernel-authenticode", Format.BYTES, frozenset({TDX}),
          "td.kernel_authenticode", document="kernel_authenticode",
          meaning="a different kernel (Authenticode): RTMR1"),
    Field("tdx.initrd_sha384", "--initrd-sha384", Format.BYTES, frozenset({TDX}),
          "td.initrd_sha384", document="initrd_sha384",
          meaning="a different initrd (SHA-384): RTMR2"),
    Field("tdx.load_options_sha384", "--load-options-sha384", Format.BYTES, frozenset({TDX}),
          "td.load_options_sha384", document="load_options_sha384",
          meaning="different LoadOptions (command line): RTMR2"),
    Field("firmware.digest", "--firmware-digest", Format.BYTES, frozenset({SEV_SNP}),
          "firmware_digest", True),
    # An IGVM file as the firmware: its path is firmware.path's (the spec's `firmware`).
    # (No steps of their own to shape: an IGVM file's directives are named by the file's
    # path and SHA-256, like an image's pages.)
    Field("firmware.igvm", None, Format.PATH, frozenset({SEV_SNP}), None, True,
          meaning="IGVM file {a} vs {b}"),
    Field("firmware.igvm_native_zero", None, Format.TEXT, frozenset({SEV_SNP}),
          "igvm.native_zero", True,
          meaning="IGVM pages without data as ZERO pages (QEMU's loader): {a} vs {b}"),
    Field("firmware.descriptor", None, Format.TEXT, _ALL,
          "firmware_descriptor",
          True, meaning="the firmware by its descriptor: {a} vs {b}"),
    Field("cpu.family", "--vcpu-family", Format.DEC, _SEV_FAMILY, None, bounds=CPU_FAMILY),
    Field("cpu.model", "--vcpu-model", Format.DEC, _SEV_FAMILY, None, bounds=CPU_MODEL),
    Field("cpu.stepping", "--vcpu-stepping", Format.DEC, _SEV_FAMILY, None, bounds=CPU_STEPPING),
    Field("boot.kernel_sha256", "--kernel-sha256", Format.BYTES, _SEV_FAMILY, None),
    Field("boot.initrd_sha256", "--initrd-sha256", Format.BYTES, _SEV_FAMILY, None),
    # LAUNCH_MEASURE: what the SEV firmware mixes into the HMAC it reports.
    Field("sev.tik", "--tik", Format.PATH, frozenset({SEV, SEV_ES}), "launch_secret.tik"),
    Field("sev.api", "--sev-api", Format.TEXT, frozenset({SEV, SEV_ES}), None),
    Field("sev.build", "--sev-build", Format.DEC, frozenset({SEV, SEV_ES}), "launch_secret.build"),
    Field("sev.mnonce", "--mnonce", Format.BYTES, frozenset({SEV, SEV_ES}),
          "launch_secret.mnonce"),
)  # fmt: skip

BY_KEY = {f.key: f for f in FIELDS}
BY_FLAG = {f.flag: f for f in FIELDS if f.flag is not None}
# The profile keys whose values read best in hex.
HEX_KEYS = frozenset(f.key.rpartition(".")[2] for f in FIELDS if f.format is Format.HEX)


def bounds(key: str) -> tuple[int, int]:
    """The least and greatest value of the number field `key`."""
    limits = BY_KEY[key].bounds
    if limits is None:
        raise KeyError(f"{key} has no bounds")
    return limits


def within(key: str, value: int) -> bool:
    """Whether `value` lies in the bounds of the number field `key`."""
    low, high = bounds(key)
    return low <= value <= high


def step_fields(kind: str) -> tuple[str, ...]:
    """The fields that shape a step of `kind`, likeliest cause first."""
    return tuple(f.key for f in sorted(FIELDS, key=lambda f: f.cause) if kind in f.shapes)


def document_fields(*technologies: Technology) -> dict[str, str]:
    """`inputs` document key -> profile key, for guests of any of `technologies`."""
    return {
        f.document: f.key
        for f in FIELDS
        if f.document is not None and not f.applies.isdisjoint(technologies)
    }


def listing_rank(key: str) -> int:
    """Where a field is listed among differences (fields of no row follow, by name)."""
    return next((n for n, f in enumerate(FIELDS) if f.key == key), len(FIELDS))


def inapplicable(technology: Technology, given: Iterable[tuple[str, str]]) -> list[FieldProblem]:
    """The fields among `given` ((name as written, profile key) pairs) that do not apply to
    a `technology` guest: the one rule behind the profile's tables and the flags."""
    out = []
    for name, key in given:
        field = BY_KEY[key]
        if technology not in field.applies:
            techs = ", ".join(t.value for t in Technology if t in field.applies)
            out.append(FieldProblem(name, f"applies to {techs} guests, not {technology}"))
    return out
