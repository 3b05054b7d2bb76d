"""Launch digests of many configurations of one guest, measuring what they share once.

`analysis/space.py` asks for a digest per point of a product of vCPU counts, CPU models, VMM
flavours, SNP guest features and VMSA GPAs (TDX: page orders, raw-data tails and memory
sizes); an ordinary `matrix` or `solve` asks for a thousand. Measured one by one, each
would hash the same firmware again; here the points are taken in an order that lets them
share a prefix:

* sev-snp: the launch digest is a chain, and only its end depends on the varied fields. The
  firmware pages are measured once per call, the SEV metadata pages once per VMM (the page
  types differ per VMM); each initial vCPU state (VMM, CPU signature, SEV_FEATURES) is hashed
  once as a BSP and once as an AP page, and the chain (per VMSA GPA) is extended one
  PAGE_INFO per vCPU (through `snp.extend`, the step every SNP measurement takes), yielding
  the digest of every vCPU count on the way.
* sev-es: the same over the SHA-256 stream (`sev.sev_stream`), copying the hash state after
  the prefix.
* sev: nothing varied enters the digest, which is measured once.
* tdx: no vCPU, CPU or VMM field enters MRTD. Each page order, raw-data tail and memory size
  is planned, and plans whose measured records coincide (memory changes only the TD HOB,
  which OVMF adds without extending) are measured once.

EC2 and GCE put a fixed value instead of the CPU signature into every VMSA, so their digests
are computed once for all the CPUs of an axis.

The points are described here (`point`, `Axes`, `Row`) because their order is what the
sharing rests on; which points to ask for, and what a digest says about them, is analysis.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from hashlib import sha384
from itertools import product
from typing import TYPE_CHECKING, Any

from cvmlaunch.abi.snp import KVM_VMSA_GPA, PageType
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.files import read_firmware, sha256_file
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    GuestSpec,
    PageOrder,
    RawDataTail,
    Technology,
    Vmm,
)
from cvmlaunch.measure import measure
from cvmlaunch.measure.sev import sev_stream
from cvmlaunch.measure.snp import extend, snp_digest
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan import TdPlan, build_sev_plan
from cvmlaunch.plan.step import Step, StepKind, TdAction
from cvmlaunch.plan.vmsa import BSP_RESET_ADDRESS, save_area

if TYPE_CHECKING:
    from hashlib import _Hash

    from cvmlaunch.measure.sha256 import Sha256From

    # An SEV-ES launch digest's running SHA-256 (from a described firmware: resumed).
    _Stream = _Hash | Sha256From

# The technologies whose launch digest measures one VMSA per vCPU (so vCPUs, CPU and VMM).
VMSA_TECHNOLOGIES = frozenset({Technology.SEV_ES, Technology.SEV_SNP})


def point(
    base: GuestSpec,
    vcpus: int,
    cpu: CpuSpec | None,
    vmm: Vmm,
    guest_features: int,
    *,
    page_order: PageOrder | None = None,
    raw_data_tail: RawDataTail | None = None,
    memory_mib: int | None = None,
    vmsa_gpa: int | None = None,
    edk2: int | None = None,
    qemu: str | None = None,
) -> GuestSpec:
    """`base` at one point of a sweep: the swept fields replaced, a TD's field by field and
    an SNP guest's VMSA GPA (None: the base's value). `cpu` None is a VMM that puts no CPU
    in the VMSA (ec2, gce) or a guest without VMSAs; `guest_features` is 0 but for sev-snp."""
    spec = base._replace(vcpus=vcpus, cpu=cpu, vmm=vmm, guest_features=guest_features)
    if vmsa_gpa is not None:
        spec = spec._replace(vmsa_gpa=vmsa_gpa)
    if memory_mib is not None:
        spec = spec._replace(memory_mib=memory_mib)
    td_fields: dict[str, Any] = {"page_order": page_order, "raw_data_tail": raw_data_tail,
                                 "edk2": edk2, "qemu": qemu}  # fmt: skip
    given = {name: value for name, value in td_fields.items() if value is not None}
    if given:
        spec = spec._replace(td=base.td_config._replace(**given))
    return spec


def point_doc(
    spec: GuestSpec, free: tuple[str, ...] = (), *, boot: bool = False
) -> dict[str, Any]:
    """The swept fields of a point, JSON-ready (a TD: only its TDX fields, with `boot` its
    edk2 era and QEMU kind (where it has a version) too; the VMSA GPA only where it is not
    KVM's); those named in `free` (any value gives the same digest) are None, and a free cpu
    has no signature."""
    if spec.technology is Technology.TDX:
        td = spec.td_config
        doc: dict[str, Any] = {
            "page_order": str(td.page_order),
            "raw_data_tail": str(td.raw_data_tail),
            "memory_mib": spec.memory_mib,
        }
        if boot:
            from cvmlaunch.measure.rtmr import edk2_era, era_text, rewrites_header

            doc["edk2"] = None if td.edk2 is None else era_text(edk2_era(td.edk2))
            if td.qemu is not None:  # None: no kernel file, whose bytes QEMU would serve
                doc["qemu"] = "<10.2" if rewrites_header(td.qemu) else ">=10.2"
    else:
        cpu = spec.cpu
        doc = {
            "vcpus": spec.vcpus,
            "cpu": None if cpu is None else (cpu.name or f"{cpu.signature:#x}"),
            "cpu_signature": None if cpu is None else f"{cpu.signature:#x}",
            "vmm": str(spec.vmm),
            "guest_features": f"{spec.guest_features:#x}",
        }
        if spec.vmsa_gpa != KVM_VMSA_GPA:
            doc["vmsa_gpa"] = f"{spec.vmsa_gpa:#x}"
        if "cpu" in free:
            doc["cpu_signature"] = None
    return doc | dict.fromkeys(free)


def point_text(spec: GuestSpec, free: tuple[str, ...] = (), *, boot: bool = False) -> str:
    doc = point_doc(spec, free, boot=boot)
    return " ".join(f"{k}={v}" for k, v in doc.items() if v is not None)


class Axes(NamedTuple):
    """The values to combine; a sweep is their product, in the order vmm, cpu,
    guest_features, vmsa_gpa, vcpus, then (tdx) page_order, raw_data_tail, memory_mib.

    An empty tdx axis or `vmsa_gpas` stands for the base's value; non-tdx guests take no tdx
    axes, and only sev-snp guests a `vmsa_gpas` axis.
    """

    vcpus: tuple[int, ...]
    cpus: tuple[CpuSpec | None, ...]
    vmms: tuple[Vmm, ...]
    guest_features: tuple[int, ...]
    page_orders: tuple[PageOrder, ...] = ()
    raw_data_tails: tuple[RawDataTail, ...] = ()
    memory_mibs: tuple[int, ...] = ()
    vmsa_gpas: tuple[int, ...] = ()
    edk2s: tuple[int, ...] = ()  # the boot of a TD (`boot_sweep`)
    qemus: tuple[str, ...] = ()


class Row(NamedTuple):
    """One point of a sweep (its guest) and its launch digest."""

    spec: GuestSpec
    measurement: bytes


def sweep(base: GuestSpec, axes: Axes, *, cloud_cpu: bool = False) -> Iterator[Row]:
    """One Row per combination of `axes` applied to `base`, in product order.

    Each measurement equals `measure(build_plan(row.spec)).digest`. With
    `cloud_cpu`, EC2 and GCE rows (which do not measure the CPU) come once with cpu None
    instead of once per CPU. Raises ProfileError naming the first combination that is not a
    usable guest, before measuring.
    """
    points = _td_points(base, axes)
    groups = _groups(base, axes, cloud_cpu=cloud_cpu)
    if not groups or not axes.vcpus:
        return
    _check(base, groups, axes.vcpus, points)
    if base.igvm is not None:  # the file holds the VMSAs: every row measures the same
        from cvmlaunch.plan import build_plan

        digest = measure(build_plan(base)).digest
        for (vmm, cpu, features, gpa), vcpus in product(groups, axes.vcpus):
            yield Row(point(base, vcpus, cpu, vmm, features, vmsa_gpa=gpa), digest)
        return
    given, base = base, _boot_digests(base)
    firmware = b"" if base.firmware_descriptor is not None else read_firmware(base.firmware)
    if base.technology in VMSA_TECHNOLOGIES:
        chains = _VcpuChains(base, firmware, axes.vcpus)
        for vmm, cpu, features, gpa in groups:
            digests = chains.digests(vmm, cpu, features, gpa)
            for vcpus in axes.vcpus:
                yield Row(point(given, vcpus, cpu, vmm, features, vmsa_gpa=gpa), digests[vcpus])
        return
    (vmm, cpu, features, _), count = groups[0], axes.vcpus[0]
    if base.technology is Technology.TDX:
        digests_at = _mrtds(point(base, count, cpu, vmm, features), points, firmware)
    else:
        first = point(base, count, cpu, vmm, features)
        digests_at = {_NOT_TD: measure(build_sev_plan(first, firmware)).digest}
    for (vmm, cpu, features, _), vcpus, at in product(groups, axes.vcpus, points):
        yield Row(point(given, vcpus, cpu, vmm, features, **at._asdict()), digests_at[at])


class BootRow(NamedTuple):
    """One point of a TD's boot sweep (its guest), its boot events and the RTMR0-3 they give
    (None: a register holding a digest not known offline)."""

    spec: GuestSpec
    events: list[Step]
    rtmrs: tuple[bytes | None, ...]


def boot_sweep(base: GuestSpec, axes: Axes) -> Iterator[BootRow]:
    """One BootRow per edk2 release, QEMU version and memory size of `axes` (empty: the
    base's), in that product order, for TD `base`.

    Each row's RTMRs equal `rtmrs(boot_events(plan_boot_inputs(plan)))` of its plan. The TD
    HOB is planned once per memory size, the kernel's Authenticode digest taken once per
    header QEMU serves and the initrd hashed once.
    """
    from cvmlaunch.measure.rtmr import BootFiles, boot_events, boot_inputs, firmware_digests, rtmrs
    from cvmlaunch.plan.tdx import build_td_plan

    if base.technology is not Technology.TDX:
        raise ProfileError(
            [FieldProblem("technology", f"RTMRs are a TD's, not {base.technology}'s")]
        )
    td = base.td_config
    at = partial(point, base, base.vcpus, base.cpu, base.vmm, base.guest_features)
    specs = [
        at(edk2=edk2, qemu=qemu, memory_mib=memory)
        for edk2, qemu, memory in product(
            axes.edk2s or (td.edk2,),
            axes.qemus or (td.qemu,),
            axes.memory_mibs or (base.memory_mib,),
        )
    ]
    for spec in specs:  # every point is checked before any is measured
        problems = spec.problems()
        if problems:
            raise ProfileError(problems, source=f"configuration {point_text(spec, boot=True)}")
    firmware = b"" if base.firmware_descriptor is not None else read_firmware(base.firmware)
    files = BootFiles(base)
    digests: dict[int, tuple[bytes | None, bytes | None]] = {}
    for spec in specs:
        memory = spec.memory_mib
        if memory not in digests:
            digests[memory] = firmware_digests(build_td_plan(spec, firmware))
        events = boot_events(boot_inputs(spec, *digests[memory], files))
        yield BootRow(spec, events, rtmrs(events))


class _TdPoint(NamedTuple):
    page_order: PageOrder | None
    raw_data_tail: RawDataTail | None
    memory_mib: int | None


_NOT_TD = _TdPoint(None, None, None)

# (vmm, cpu, guest_features, vmsa_gpa): what fixes the initial vCPU state of an SEV-ES/SNP
# guest, and where SNP measures it.
_Group = tuple[Vmm, CpuSpec | None, int, int]


def _td_points(base: GuestSpec, axes: Axes) -> list[_TdPoint]:
    tdx_axes = {
        "page_orders": axes.page_orders,
        "raw_data_tails": axes.raw_data_tails,
        "memory_mibs": axes.memory_mibs,
    }
    if base.technology is not Technology.TDX:
        given = [name for name, values in tdx_axes.items() if values]
        if given:
            reason = f"varies tdx guests only, not {base.technology}"
            raise ProfileError([FieldProblem(name, reason) for name in given])
        return [_NOT_TD]
    td = base.td_config
    return [
        _TdPoint(*point)
        for point in product(
            axes.page_orders or (td.page_order,),
            axes.raw_data_tails or (td.raw_data_tail,),
            axes.memory_mibs or (base.memory_mib,),
        )
    ]


def _groups(base: GuestSpec, axes: Axes, *, cloud_cpu: bool) -> list[_Group]:
    if axes.vmsa_gpas and base.technology is not Technology.SEV_SNP:
        reason = f"varies sev-snp guests only, not {base.technology}"
        raise ProfileError([FieldProblem("vmsa_gpas", reason)])
    gpas = axes.vmsa_gpas or (base.vmsa_gpa,)
    out: list[_Group] = []
    for vmm in axes.vmms:
        cpus = axes.cpus
        if cloud_cpu and cpus and vmm is not Vmm.QEMU and base.technology in VMSA_TECHNOLOGIES:
            cpus = (None,)
        out += product((vmm,), cpus, axes.guest_features, gpas)
    return out


def _check(
    base: GuestSpec, groups: list[_Group], vcpus: tuple[int, ...], points: list[_TdPoint]
) -> None:
    """ProfileError for the first combination that is not a usable guest.

    The vCPU count is only range-checked, so its extremes stand for the whole axis.
    """
    extremes = sorted({min(vcpus), max(vcpus)})
    for (vmm, cpu, features, gpa), count, at in product(groups, extremes, points):
        spec = point(base, count, cpu, vmm, features, **at._asdict(), vmsa_gpa=gpa)
        problems = spec.problems()
        if problems:
            raise ProfileError(problems, source=f"configuration {point_text(spec)}")


def _boot_digests(base: GuestSpec) -> GuestSpec:
    """`base` with its kernel and initrd given by digest, so each file is hashed once (a TD's
    boot enters no MRTD: it is left as it is)."""
    boot = base.boot
    if boot is None or base.technology is Technology.TDX:
        return base

    def hashed(item: BootFile, key: str) -> BootFile:
        return BootFile(sha256=sha256_file(item.path, key)) if item.path is not None else item

    initrd = hashed(boot.initrd, "boot.initrd") if boot.initrd is not None else None
    kernel = hashed(boot.kernel, "boot.kernel")
    return base._replace(boot=boot._replace(kernel=kernel, initrd=initrd))


class _VcpuChains:
    """SEV-ES and SEV-SNP launch digests by vCPU count, for each initial vCPU state.

    The digest before the VMSAs is measured once per VMM; the chain behind it once per
    distinct VMSA contents (VMM, signature if the VMM measures it, SEV_FEATURES).
    """

    def __init__(self, base: GuestSpec, firmware: bytes, vcpus: tuple[int, ...]) -> None:
        self._base = base
        self._firmware = firmware
        self._wanted = frozenset(vcpus)
        self._top = max(vcpus)
        self._snp = base.technology is Technology.SEV_SNP
        self._after_firmware = base.firmware_digest
        self._prefixes: dict[Vmm, tuple[int, bytes | _Stream]] = {}
        self._chains: dict[tuple[Vmm, int, int, int], dict[int, bytes]] = {}

    def digests(
        self, vmm: Vmm, cpu: CpuSpec | None, guest_features: int, vmsa_gpa: int
    ) -> dict[int, bytes]:
        """The launch digest of every wanted vCPU count."""
        # QEMU puts the CPU signature in RDX, EC2 and GCE a fixed value; only SNP has features
        # and measures the VMSA's GPA.
        signature = cpu.signature if cpu is not None and vmm is Vmm.QEMU else 0
        features = guest_features if self._snp else 0
        key = (vmm, signature, features, vmsa_gpa if self._snp else 0)
        chain = self._chains.get(key)
        if chain is None:
            ap_eip, prefix = self._prefix(vmm, cpu, guest_features)
            bsp = save_area(vmm, BSP_RESET_ADDRESS, signature, features, bsp=True).pack()
            ap = save_area(vmm, ap_eip, signature, features, bsp=False).pack()
            if isinstance(prefix, bytes):
                chain = self._snp_chain(prefix, bsp, ap, vmsa_gpa)
            else:
                chain = self._es_chain(prefix, bsp, ap)
            self._chains[key] = chain
        return chain

    def _prefix(
        self, vmm: Vmm, cpu: CpuSpec | None, guest_features: int
    ) -> tuple[int, bytes | _Stream]:
        """The AP start address and the digest (SNP) or hash state (SEV-ES) before the VMSAs."""
        found = self._prefixes.get(vmm)
        if found is not None:
            return found
        # Two vCPUs make build_sev_plan check the AP start address too, when APs are wanted;
        # no CPU for EC2 and GCE, which do not measure it (and would warn that it is ignored).
        cpu = cpu if vmm is Vmm.QEMU else None
        at = point(self._base, min(self._top, 2), cpu, vmm, guest_features)
        plan = build_sev_plan(at, self._firmware)
        head = tuple(op for op in plan.ops if op.kind is not StepKind.VMSA)
        prefix: bytes | _Stream
        if self._snp:
            # The firmware pages come first under every VMM: measure them only once.
            digests = snp_digest(plan._replace(ops=head, firmware_digest=self._after_firmware))
            self._after_firmware = digests.firmware_digest
            prefix = digests.launch_digest
        else:
            prefix = sev_stream(plan._replace(ops=head))
        # build_sev_plan refuses firmware without an SEV-ES reset block (and IGVM files are
        # swept whole, in `sweep`).
        reset = 0 if plan.firmware is None else plan.firmware.sev_es_reset_address
        found = (reset or 0, prefix)
        self._prefixes[vmm] = found
        return found

    def _snp_chain(self, ld: bytes, bsp: bytes, ap: bytes, gpa: int) -> dict[int, bytes]:
        wanted = self._wanted
        contents = sha384(bsp).digest()
        out = {}
        for count in range(1, self._top + 1):
            if count == 2:
                contents = sha384(ap).digest()
            ld = extend(ld, contents, PageType.VMSA, gpa)
            if count in wanted:
                out[count] = ld
        return out

    def _es_chain(self, prefix: _Stream, bsp: bytes, ap: bytes) -> dict[int, bytes]:
        stream = prefix.copy()
        out = {}
        for count in range(1, self._top + 1):
            stream.update(bsp if count == 1 else ap)
            if count in self._wanted:
                out[count] = stream.copy().digest()
        return out


def _mrtds(first: GuestSpec, points: list[_TdPoint], firmware: bytes) -> dict[_TdPoint, bytes]:
    """The MRTD at every point; plans with the same measured records are measured once."""
    from cvmlaunch.plan.tdx import build_td_plan  # the TDVF parser loads only for a TD

    by_records: dict[tuple[object, ...], bytes] = {}
    out = {}
    for at in points:
        plan = build_td_plan(
            point(first, first.vcpus, first.cpu, first.vmm, first.guest_features, **at._asdict()),
            firmware,
        )
        records = _measured_records(plan)
        digest = by_records.get(records)
        if digest is None:
            digest = by_records[records] = measure(plan).digest
        out[at] = digest
    return out


def _measured_records(plan: TdPlan) -> tuple[object, ...]:
    """What MRTD depends on: the page order, and each added section's GPA range and, when
    extended, contents (an added page's contents are not measured); or a descriptor's MRTD."""
    sections = tuple(
        (
            op.gpa,
            op.size,
            op.action,
            bytes(op.data) if op.action is TdAction.PAGE_ADD_EXTEND and op.data else None,
        )
        for op in plan.ops
        if op.action is not TdAction.PAGE_AUG
    )
    return (plan.spec.td_config.page_order, sections, plan.mrtd)
