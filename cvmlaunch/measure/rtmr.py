"""The boot events OVMF (TDVF) extends into RTMR0-2 on a QEMU direct kernel boot, and the
RTMRs they give (reference/tdx-measure.md §2).

Each event is a `Step` of kind EVENT: its RTMR, TCG event type, the event data OVMF logs, the
SHA-384 it extends (`contents`) and the register after it (`digest`). An event whose digest
cannot be known offline (QEMU's ACPI blobs when only the VMM knows them) has `contents` None,
and so has every later value of its register: such a value is reported unknown, never
invented.

Which events come, and in which form, depends on the edk2 release the OVMF build is from,
given as its stable tag's year and month (202411 for edk2-stable202411):
* before 202411 the ReadyToBoot separator goes to RTMR0 (a second one, after Boot0000) and
  none to RTMR1; from 202411 it goes to RTMR1 (edk2 efaf8931bb);
* from 202508 the kernel command line follows `initrd=initrd ` instead of preceding
  ` initrd=initrd` in the LoadOptions the Linux EFI stub measures (edk2 a2ac0fea49);
* from 202505 OVMF also measures some fw_cfg items into RTMR0 when QEMU provides them; a
  plain QEMU direct boot provides none of them, so none appear here.
"""

from __future__ import annotations

from hashlib import sha384

from cvmlaunch.abi.eventlog import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    RTMR_COUNT,
    VARIABLE_DATA_HEADER,
    EventType,
)
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.fields import EDK2
from cvmlaunch.guest.files import file_digest
from cvmlaunch.guest.spec import ACPI_BLOBS, GuestSpec, qemu_version
from cvmlaunch.measure.authenticode import SetupHeaderPatch, authenticode
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.ops import TdPlan
from cvmlaunch.plan.step import Step, StepKind

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# QEMU 10.2 stopped rewriting the kernel's setup header for confidential guests (a7542a38f399).
QEMU_KEEPS_KERNEL_HEADER = (10, 2)
RTMR_SIZE = 48
# The registers the firmware's boot extends (RTMR3 is the running guest's).
BOOT_RTMRS = 3
# The first edk2 stable tags whose OVMF changed the events (see the module's text).
SEPARATOR_IN_RTMR1 = 202411
INITRD_OPTION_FIRST = 202508
SEPARATOR_DATA = bytes(4)
# The edk2 releases whose OVMF extends the same boot events, as (first, last) stable tags
# (last None: to date); 202408 and 202505 are the last tags before each change.
EDK2_ERAS = ((EDK2[0], 202408), (SEPARATOR_IN_RTMR1, 202505), (INITRD_OPTION_FIRST, None))
# A QEMU version of each kind: one that rewrites the kernel's setup header, one that does not.
QEMU_REWRITES_HEADER, QEMU_KEEPS_HEADER = "10.1", "10.2"
# Boot0000 on a direct boot: OVMF's hidden UiApp entry (attributes 0x109, "UiApp", its FV
# and file device-path nodes).
UIAPP_LOAD_OPTION = bytes.fromhex(
    "090100002c0055006900410070007000000004071400c9bdb87cebf8344faaea3ee4af6516a1"
    "0406140021aa2c4614760345836e8ab6f46623317fff0400"
)
BOOT_ORDER = bytes(2)  # Boot0000 alone
CALLING_EFI_APPLICATION = b"Calling EFI Application from Boot Option"
EXIT_BOOT_SERVICES = b"Exit Boot Services Invocation"
EXIT_BOOT_SERVICES_DONE = b"Exit Boot Services Returned with Success"


class BootInputs(NamedTuple):
    """The SHA-384 digests the boot events of a TD extend, and the command line (a digest
    given as None is not known offline: the RTMRs it enters are then unknown)."""

    edk2: int  # the edk2 stable tag as YYYYMM (202502 for edk2-stable202502)
    td_hob_sha384: bytes | None  # of the TD HOB, without its END_OF_HOB_LIST HOB
    cfv_sha384: bytes | None  # of the firmware's CFV raw data (the initial variable store)
    acpi: Sequence[bytes | None]  # of table-loader, rsdp, tables, as OVMF got them
    kernel_authenticode: bytes | None  # measure/authenticode.py, of the bytes QEMU serves
    cmdline: str | None  # None: no direct boot (no kernel events)
    initrd_sha384: bytes | None  # None: no initrd
    # The SHA-384 of the LoadOptions, where only it is published (dstack's cmdline digest):
    # it stands for the command line's.
    load_options_sha384: bytes | None = None
    # The kernel's and initrd's digests are the profile's own (tdx.kernel_authenticode,
    # tdx.initrd_sha384), not computed from files.
    published: bool = False


# The profile fields behind each predicted event, likeliest first (by its label's start).
EVENT_CAUSES = (
    ("TdxTable", ("memory_mib", "firmware.path")),
    ("CFV", ("firmware.path",)),
    ("etc/", ("tdx.acpi",)),
    ("kernel (published Authenticode)", ("tdx.kernel_authenticode",)),
    ("LoadOptions (published digest)", ("tdx.load_options_sha384", "tdx.edk2")),
    ("initrd (published SHA-384)", ("tdx.initrd_sha384",)),
    ("kernel", ("boot.kernel", "tdx.qemu", "memory_mib", "boot.initrd")),
    ("separator (ReadyToBoot)", ("tdx.edk2",)),
    ("LoadOptions", ("boot.cmdline", "tdx.edk2", "boot.initrd")),
    ("initrd", ("boot.initrd",)),
)


def event_causes(step: Step) -> tuple[str, ...]:
    """The profile fields that shape predicted event `step` (none for a constant one, which
    only the firmware's edk2 release could move)."""
    return next((keys for start, keys in EVENT_CAUSES if step.label.startswith(start)),
                ("tdx.edk2",))  # fmt: skip


def plan_boot_inputs(plan: TdPlan) -> BootInputs:
    """What `plan`'s boot events measure: its TD HOB and CFV, the profile's ACPI digests, and
    the kernel (Authenticode, of the bytes its QEMU serves), initrd and command line."""
    hob, cfv = firmware_digests(plan)
    return boot_inputs(plan.spec, hob, cfv, BootFiles(plan.spec))


def firmware_digests(plan: TdPlan) -> tuple[bytes | None, bytes | None]:
    """The SHA-384 of `plan`'s TD HOB and of its firmware's CFV raw data, as TDVF measures
    them (None: the plan has none)."""
    from cvmlaunch.abi.hob import HOB_HEADER
    from cvmlaunch.abi.tdx import TdvfSectionType

    # As TDVF measures it: without the END_OF_HOB_LIST header at its end.
    hob = None if plan.td_hob is None else sha384(plan.td_hob[: -HOB_HEADER.size]).digest()
    described = plan.spec.firmware_descriptor
    if described is not None and described.tdvf is not None:
        return hob, described.cfv_sha384
    for op in plan.ops:
        if op.section_type is TdvfSectionType.CFV and op.data is not None:
            raw = plan.tdvf.sections[op.section].raw_size
            return hob, sha384(op.data[:raw]).digest()
    return hob, None


class BootFiles:
    """The digests of a guest's kernel and initrd files, each computed once however many QEMU
    versions and memory sizes ask for them (a sweep asks for many)."""

    def __init__(self, spec: GuestSpec) -> None:
        boot = spec.boot
        self._kernel = boot.kernel.path if boot is not None else None
        self._initrd_path = boot.initrd.path if boot is not None and boot.initrd else None
        self._initrd: tuple[bytes, int] | None = None
        self._authenticode: dict[tuple[int, int | None] | None, bytes] = {}

    def initrd(self) -> tuple[bytes, int] | None:
        """The initrd's SHA-384 and size (None: no initrd file)."""
        if self._initrd is None and self._initrd_path is not None:
            self._initrd = file_digest(self._initrd_path, "boot.initrd", "sha384")
        return self._initrd

    def kernel(self, qemu: str | None, memory_mib: int) -> bytes | None:
        """The kernel's Authenticode digest as OVMF computes it, of the bytes QEMU `qemu`
        serves a guest of `memory_mib` (None: no kernel file)."""
        if self._kernel is None:
            return None
        patch = None
        if rewrites_header(qemu):
            initrd = self.initrd()
            patch = SetupHeaderPatch(memory_mib, None if initrd is None else initrd[1])
        # Without an initrd the patch does not depend on the memory size.
        key = None
        if patch is not None:
            with_initrd = patch.initrd_size is not None
            key = (patch.memory_mib if with_initrd else 0, patch.initrd_size)
        digest = self._authenticode.get(key)
        if digest is None:
            digest = self._authenticode[key] = authenticode(self._kernel, patch=patch)
        return digest


def boot_inputs(
    spec: GuestSpec, td_hob_sha384: bytes | None, cfv_sha384: bytes | None, files: BootFiles
) -> BootInputs:
    """What the boot events of `spec` measure, given its TD HOB and CFV digests and the
    digests of its kernel and initrd (`files`, of `spec`'s boot)."""
    td = spec.td_config
    if td.edk2 is None:
        raise ProfileError([FieldProblem("tdx.edk2", "required to predict the boot events")])
    acpi = td.acpi if td.acpi is not None else (None,) * len(ACPI_BLOBS)
    boot = spec.boot
    if td.kernel_authenticode is not None:  # a boot given by its published digests
        cmdline = boot.cmdline if boot is not None else ""
        return BootInputs(td.edk2, td_hob_sha384, cfv_sha384, acpi, td.kernel_authenticode,
                          cmdline, td.initrd_sha384, td.load_options_sha384,
                          published=True)  # fmt: skip
    if boot is None or boot.kernel.path is None:
        return BootInputs(td.edk2, td_hob_sha384, cfv_sha384, acpi, None, None, None)
    initrd = files.initrd()
    kernel = files.kernel(td.qemu, spec.memory_mib)
    return BootInputs(td.edk2, td_hob_sha384, cfv_sha384, acpi, kernel, boot.cmdline,
                      None if initrd is None else initrd[0])  # fmt: skip


def edk2_era(tag: int) -> tuple[int, int | None]:
    """The era of EDK2_ERAS that edk2 release `tag` (YYYYMM) belongs to."""
    return next(era for era in reversed(EDK2_ERAS) if tag >= era[0])


def era_text(era: tuple[int, int | None]) -> str:
    first, last = era
    return f"{first}.." if last is None else f"{first}..{last}"


def rewrites_header(qemu: str | None) -> bool:
    """Whether QEMU `qemu` rewrites a confidential guest's kernel setup header (before 10.2)."""
    version = qemu_version(qemu or "")
    return version is not None and version < QEMU_KEEPS_KERNEL_HEADER


def variable_data(vendor: bytes, name: str, data: bytes = b"") -> bytes:
    """UEFI_VARIABLE_DATA: VariableName GUID, name and data lengths, UTF-16LE name, data."""
    encoded = name.encode("utf-16-le")
    return VARIABLE_DATA_HEADER.pack(vendor, len(name), len(data)) + encoded + data


def load_options(cmdline: str, *, initrd: bool, edk2: int) -> bytes:
    """The LoadOptions OVMF gives the kernel (UTF-16LE, NUL-terminated): the command line
    with `initrd=initrd` after it (before 202508) or before it, when there is an initrd."""
    if initrd:
        prefix = edk2 >= INITRD_OPTION_FIRST
        text = f"initrd=initrd {cmdline}" if prefix else f"{cmdline} initrd=initrd"
    else:
        text = cmdline
    return (text + "\0").encode("utf-16-le")


def _event(
    rtmr: int, kind: EventType, label: str, digest: bytes | None, data: bytes | None = None
) -> Step:
    """An event extending `digest` (None: unknown) into `rtmr`; `data` is the event data OVMF
    logs with it, where the digest is of that data."""
    return Step(0, StepKind.EVENT, label, 0, len(data or b""), contents=digest, rtmr=rtmr,
                mr_index=rtmr + 1, event_type=kind, event_data=data)  # fmt: skip


def _logged(rtmr: int, kind: EventType, label: str, data: bytes) -> Step:
    """An event whose digest is SHA-384 of the event data it logs."""
    return _event(rtmr, kind, label, sha384(data).digest(), data)


def _of(data: bytes) -> bytes:
    return sha384(data).digest()


def boot_events(inputs: BootInputs) -> list[Step]:
    """Every RTMR0-2 event OVMF extends on a QEMU direct boot, in the order it extends them,
    each with the register's value after it (None once an unknown digest is in it)."""
    e = EventType
    events = [
        _event(0, e.EV_EFI_HANDOFF_TABLES2, "TdxTable (TD HOB)", inputs.td_hob_sha384),
        _event(0, e.EV_EFI_PLATFORM_FIRMWARE_BLOB2, "CFV (variable store)", inputs.cfv_sha384),
    ]
    for vendor, name in (
        (EFI_GLOBAL_VARIABLE, "SecureBoot"),
        (EFI_GLOBAL_VARIABLE, "PK"),
        (EFI_GLOBAL_VARIABLE, "KEK"),
        (EFI_IMAGE_SECURITY_DATABASE, "db"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx"),
    ):
        data = variable_data(vendor, name)
        events.append(_logged(0, e.EV_EFI_VARIABLE_DRIVER_CONFIG, f"{name} (not set)", data))
    events.append(_logged(0, e.EV_SEPARATOR, "separator", SEPARATOR_DATA))
    for item, digest in zip(ACPI_BLOBS, inputs.acpi, strict=True):
        events.append(_event(0, e.EV_PLATFORM_CONFIG_FLAGS, item, digest))
    # The boot variables are logged whole (UEFI_VARIABLE_DATA) but measured by their data.
    boot_order = variable_data(EFI_GLOBAL_VARIABLE, "BootOrder", BOOT_ORDER)
    events.append(_event(0, e.EV_EFI_VARIABLE_BOOT, "BootOrder", _of(BOOT_ORDER), boot_order))
    boot0000 = variable_data(EFI_GLOBAL_VARIABLE, "Boot0000", UIAPP_LOAD_OPTION)
    events.append(
        _event(0, e.EV_EFI_VARIABLE_BOOT, "Boot0000 (UiApp)", _of(UIAPP_LOAD_OPTION), boot0000)
    )
    if inputs.cmdline is not None:
        label = "kernel (published Authenticode)" if inputs.published else "kernel (Authenticode)"
        events.append(_event(1, e.EV_EFI_BOOT_SERVICES_APPLICATION, label,
                             inputs.kernel_authenticode))  # fmt: skip
    events.append(_logged(1, e.EV_EFI_ACTION, CALLING_EFI_APPLICATION.decode(),
                          CALLING_EFI_APPLICATION))  # fmt: skip
    # ReadyToBoot: to RTMR0 before edk2-stable202411 (which then gets none), RTMR1 after.
    separator_rtmr = 1 if inputs.edk2 >= SEPARATOR_IN_RTMR1 else 0
    events.append(_logged(separator_rtmr, e.EV_SEPARATOR, "separator (ReadyToBoot)",
                          SEPARATOR_DATA))  # fmt: skip
    events.append(_logged(1, e.EV_EFI_ACTION, EXIT_BOOT_SERVICES.decode(), EXIT_BOOT_SERVICES))
    events.append(_logged(1, e.EV_EFI_ACTION, EXIT_BOOT_SERVICES_DONE.decode(),
                          EXIT_BOOT_SERVICES_DONE))  # fmt: skip
    if inputs.cmdline is not None:
        initrd = inputs.initrd_sha384 is not None
        digest = inputs.load_options_sha384
        if digest is None:
            digest = _of(load_options(inputs.cmdline, initrd=initrd, edk2=inputs.edk2))
        label = f"LoadOptions {inputs.cmdline!r}"
        if inputs.load_options_sha384 is not None:
            label = "LoadOptions (published digest)"
        events.append(_event(2, e.EV_EVENT_TAG, label, digest))
        if initrd:
            label = "initrd (published SHA-384)" if inputs.published else "initrd"
            events.append(_event(2, e.EV_EVENT_TAG, label, inputs.initrd_sha384))
    return _numbered(events)


def _numbered(events: Iterable[Step]) -> list[Step]:
    """`events` numbered in order, each with its register's value after it."""
    registers: list[bytes | None] = [bytes(RTMR_SIZE)] * RTMR_COUNT
    out = []
    for number, step in enumerate(events):
        index = step.rtmr if step.rtmr is not None else 0
        before = registers[index]
        after = None if before is None or step.contents is None else extend(before, step.contents)
        registers[index] = after
        out.append(step._replace(number=number, digest=after))
    return out


def extend(rtmr: bytes, digest: bytes) -> bytes:
    """TDG.MR.RTMR.EXTEND: the register after extending `digest` into it."""
    return sha384(rtmr + digest).digest()


def rtmrs(events: Iterable[Step]) -> tuple[bytes | None, ...]:
    """RTMR0..3 after `events` (None for a register holding an unknown digest)."""
    registers: list[bytes | None] = [bytes(RTMR_SIZE)] * RTMR_COUNT
    for step in events:
        if step.rtmr is not None:
            registers[step.rtmr] = step.digest
    return tuple(registers)
