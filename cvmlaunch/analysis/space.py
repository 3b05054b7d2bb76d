"""The configuration space of a launch measurement: one digest per combination of axes.

`matrix` tabulates the launch digest over a product of vCPU counts, CPU models, VMM flavours
and SNP guest features (TDX: page orders, raw-data tails and memory sizes); `solve` searches
such a product for the configurations that give a reported digest. Both run one engine that
measures no page twice:

* sev-snp: the launch digest is a chain, and only its end depends on the varied fields. The
  firmware pages are measured once per call, the SEV metadata pages once per VMM (the page
  types differ per VMM); each initial vCPU state (VMM, CPU signature, SEV_FEATURES) is hashed
  once as a BSP and once as an AP page, and the chain is extended one PAGE_INFO per vCPU,
  yielding the digest of every vCPU count on the way.
* sev-es: the same over the SHA-256 stream, copying the hash state after the prefix.
* sev: nothing varied enters the digest, which is measured once.
* tdx: no vCPU, CPU or VMM field enters MRTD. Each page order, raw-data tail and memory size
  is planned, and plans whose measured records coincide (memory changes only the TD HOB,
  which OVMF adds without extending) are measured once.

EC2 and GCE put a fixed value instead of the CPU signature into every VMSA, so their digests
are computed once for all the CPUs of an axis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from hashlib import sha384
from itertools import product
from typing import TYPE_CHECKING, Any, NamedTuple

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature
from cvmlaunch.abi.snp import PAGE_INFO, PAGE_INFO_SIZE, PageType, SevFeature
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.files import read_firmware, sha256_file
from cvmlaunch.guest.spec import (
    MAX_VCPUS,
    BootFile,
    CpuSpec,
    GuestSpec,
    PageOrder,
    RawDataTail,
    Technology,
    Vmm,
)
from cvmlaunch.measure import measure
from cvmlaunch.measure.snp import snp_digest
from cvmlaunch.plan import OpKind, TdPlan, build_sev_plan
from cvmlaunch.plan.ops import TdAction
from cvmlaunch.plan.vmsa import BSP_RESET_ADDRESS, save_area

if TYPE_CHECKING:
    from hashlib import _Hash

# The names of the fields a configuration varies (the names `search_axes` takes as `fixed`).
FIELDS = ("vcpus", "cpu", "vmm", "guest_features", "page_order", "raw_data_tail", "memory_mib")

# SNPActive alone, and with DebugSwap, which host kernels 6.6 to 6.8 turn on by themselves.
SNP_GUEST_FEATURES = (
    1 << SevFeature.SNP_ACTIVE,
    1 << SevFeature.SNP_ACTIVE | 1 << SevFeature.DEBUG_SWAP,
)
TDX_MEMORY_MIBS = (512, 1024, 2048, 3072, 4096, 8192, 16384, 32768, 65536, 131072)

_WITH_VMSAS = frozenset({Technology.SEV_ES, Technology.SEV_SNP})


class Config(NamedTuple):
    """One point of the configuration space (fields that do not apply are None)."""

    vcpus: int
    # None: the VMM does not put the CPU in the VMSA (ec2, gce), or a guest without VMSAs.
    cpu: CpuSpec | None
    vmm: Vmm
    guest_features: int  # SNP SEV_FEATURES (0 for sev-es, sev and tdx)
    page_order: PageOrder | None = None  # tdx only
    raw_data_tail: RawDataTail | None = None  # tdx only
    memory_mib: int | None = None  # tdx only (it enters the TD HOB)

    def doc(self) -> dict[str, Any]:
        """The fields that enter the digest, JSON-ready (a TD: only its TDX fields)."""
        if self.page_order is not None:
            tail = self.raw_data_tail
            return {
                "page_order": str(self.page_order),
                "raw_data_tail": None if tail is None else str(tail),
                "memory_mib": self.memory_mib,
            }
        cpu = self.cpu
        return {
            "vcpus": self.vcpus,
            "cpu": None if cpu is None else (cpu.name or f"{cpu.signature:#x}"),
            "cpu_signature": None if cpu is None else f"{cpu.signature:#x}",
            "vmm": str(self.vmm),
            "guest_features": f"{self.guest_features:#x}",
        }

    def text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.doc().items() if v is not None)

    def spec(self, base: GuestSpec) -> GuestSpec:
        """`base` with this configuration's fields (the TD configuration field by field)."""
        spec = base._replace(
            vcpus=self.vcpus, cpu=self.cpu, vmm=self.vmm, guest_features=self.guest_features
        )
        if self.memory_mib is not None:
            spec = spec._replace(memory_mib=self.memory_mib)
        if self.page_order is not None or self.raw_data_tail is not None:
            td = base.td_config
            if self.page_order is not None:
                td = td._replace(page_order=self.page_order)
            if self.raw_data_tail is not None:
                td = td._replace(raw_data_tail=self.raw_data_tail)
            spec = spec._replace(td=td)
        return spec


class Axes(NamedTuple):
    """The values to combine; a matrix is their product, in the order vmm, cpu,
    guest_features, vcpus, then (tdx) page_order, raw_data_tail, memory_mib.

    An empty tdx axis stands for the base's value; non-tdx guests take no tdx axes.
    """

    vcpus: tuple[int, ...]
    cpus: tuple[CpuSpec | None, ...]
    vmms: tuple[Vmm, ...]
    guest_features: tuple[int, ...]
    page_orders: tuple[PageOrder, ...] = ()
    raw_data_tails: tuple[RawDataTail, ...] = ()
    memory_mibs: tuple[int, ...] = ()


class Row(NamedTuple):
    """One configuration and its launch digest."""

    config: Config
    measurement: bytes


def matrix(base: GuestSpec, axes: Axes) -> list[Row]:
    """One Row per combination of `axes` applied to `base`, in product order.

    Each measurement equals `measure(build_plan(row.config.spec(base))).digest`. Raises
    ProfileError naming the first combination that is not a usable guest, before measuring.
    """
    return list(_rows(base, axes, cloud_cpu=False))


def solve(target: bytes, base: GuestSpec, axes: Axes) -> list[Config]:
    """Every configuration of `axes` whose launch digest is `target`, in product order.

    EC2 and GCE do not measure the CPU: their configurations are reported once, with cpu None,
    instead of once per CPU of the axis.
    """
    return [row.config for row in _rows(base, axes, cloud_cpu=True) if row.measurement == target]


class Solution(NamedTuple):
    """Configurations that reproduce a digest, folded: every value of the `free` fields'
    axes (None in `config`) gives the same digest with the rest of `config`."""

    config: Config
    free: tuple[str, ...]


# Config fields and the Axes field that lists their values.
_AXIS_OF = {"memory_mib": "memory_mibs", "raw_data_tail": "raw_data_tails"}


def fold(configs: list[Config], axes: Axes) -> list[Solution]:
    """`configs` with each field that takes every value of its axis (for fixed values of
    the others) folded into one solution, so that e.g. the memory sizes that never enter a
    firmware's MRTD read as "any" rather than as ten profiles."""
    solutions = [Solution(c, ()) for c in configs]
    for field, axis_name in _AXIS_OF.items():
        values = set(getattr(axes, axis_name))
        if len(values) < 2:
            continue
        groups: dict[Solution, list[Solution]] = {}  # in first-seen order
        for s in solutions:
            groups.setdefault(Solution(_with(s.config, field, None), s.free), []).append(s)
        folded: list[Solution] = []
        for key, members in groups.items():
            if {getattr(m.config, field) for m in members} == values:
                folded.append(Solution(key.config, (*key.free, field)))
            else:
                folded += members
        solutions = folded
    return solutions


def _with(config: Config, field: str, value: Any) -> Config:
    changed: Config = config._replace(**{field: value})
    return changed


def search_axes(
    base: GuestSpec, *, fixed: frozenset[str] = frozenset(), max_vcpus: int = 64
) -> Axes:
    """The default search space of `solve` for `base`'s technology.

    Each field in `fixed` (names: FIELDS) keeps the base's value; every other field takes
    every value it can have: vCPUs 1..max_vcpus, one CpuSpec per distinct signature of
    CPU_MODELS (named by its first model; `models_with_signature` lists the others), every
    VMM, SNP_GUEST_FEATURES; for tdx both page orders, both raw-data tails and
    TDX_MEMORY_MIBS. Fields that do not enter the digest keep the base's value (sev: vCPUs,
    CPU and VMM; tdx: vCPUs and CPU, and the VMM is QEMU), so that a solution is not repeated
    once per value of each; guest_features is 0 for all but sev-snp.
    """
    problems = [
        FieldProblem("fixed", f"unknown field {name!r} (known: {', '.join(FIELDS)})")
        for name in sorted(fixed - set(FIELDS))
    ]
    if not 1 <= max_vcpus <= MAX_VCPUS:
        problems.append(FieldProblem("max_vcpus", f"expected 1..{MAX_VCPUS}, got {max_vcpus}"))
    if problems:
        raise ProfileError(problems)
    technology = base.technology
    vcpus: tuple[int, ...] = (base.vcpus,)
    cpus: tuple[CpuSpec | None, ...] = (base.cpu,)
    vmms: tuple[Vmm, ...] = (base.vmm,)
    features: tuple[int, ...] = (0,)
    if technology in _WITH_VMSAS:
        if "vcpus" not in fixed:
            vcpus = tuple(range(1, max_vcpus + 1))
        if "vmm" not in fixed:
            vmms = tuple(Vmm)
        if "cpu" not in fixed:
            cpus = distinct_cpus() if Vmm.QEMU in vmms else (None,)
        elif base.cpu is None:
            vmms = tuple(v for v in vmms if v is not Vmm.QEMU)  # QEMU needs a CPU
        if technology is Technology.SEV_SNP:
            features = (
                SNP_GUEST_FEATURES if "guest_features" not in fixed else (base.guest_features,)
            )
    if technology is not Technology.TDX:
        return Axes(vcpus, cpus, vmms, features)
    td = base.td_config
    return Axes(
        vcpus,
        cpus,
        (Vmm.QEMU,) if "vmm" not in fixed else vmms,
        features,
        tuple(PageOrder) if "page_order" not in fixed else (td.page_order,),
        tuple(RawDataTail) if "raw_data_tail" not in fixed else (td.raw_data_tail,),
        TDX_MEMORY_MIBS if "memory_mib" not in fixed else (base.memory_mib,),
    )


def distinct_cpus() -> tuple[CpuSpec, ...]:
    """One CpuSpec per distinct signature of CPU_MODELS, named by the first model with it."""
    first: dict[int, str] = {}
    for name, fms in CPU_MODELS.items():
        first.setdefault(cpu_signature(*fms), name)
    return tuple(CpuSpec(signature, name) for signature, name in first.items())


# --------------------------------------------------------------------------------------------
# The engine


class _TdPoint(NamedTuple):
    page_order: PageOrder | None
    raw_data_tail: RawDataTail | None
    memory_mib: int | None


_NOT_TD = _TdPoint(None, None, None)

# (vmm, cpu, guest_features): what fixes the initial vCPU state of an SEV-ES/SNP guest.
_Group = tuple[Vmm, CpuSpec | None, int]


def _rows(base: GuestSpec, axes: Axes, *, cloud_cpu: bool) -> Iterator[Row]:
    """The rows of `axes` in product order; with `cloud_cpu`, EC2 and GCE rows once with cpu
    None instead of once per CPU."""
    points = _td_points(base, axes)
    groups = _groups(base, axes, cloud_cpu=cloud_cpu)
    if not groups or not axes.vcpus:
        return
    _check(base, groups, axes.vcpus, points)
    base = _boot_digests(base)
    firmware = read_firmware(base.firmware)
    if base.technology in _WITH_VMSAS:
        chains = _VcpuChains(base, firmware, axes.vcpus)
        for vmm, cpu, features in groups:
            digests = chains.digests(vmm, cpu, features)
            for vcpus in axes.vcpus:
                yield Row(Config(vcpus, cpu, vmm, features), digests[vcpus])
        return
    first = Config(axes.vcpus[0], groups[0][1], groups[0][0], groups[0][2])
    if base.technology is Technology.TDX:
        digests_at = _mrtds(base, first, points, firmware)
    else:
        digests_at = {_NOT_TD: measure(build_sev_plan(first.spec(base), firmware)).digest}
    for (vmm, cpu, features), vcpus, point in product(groups, axes.vcpus, points):
        yield Row(Config(vcpus, cpu, vmm, features, *point), digests_at[point])


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
    out: list[_Group] = []
    for vmm in axes.vmms:
        cpus = axes.cpus
        if cloud_cpu and cpus and vmm is not Vmm.QEMU and base.technology in _WITH_VMSAS:
            cpus = (None,)
        out += [(vmm, cpu, features) for cpu in cpus for features in axes.guest_features]
    return out


def _check(
    base: GuestSpec, groups: list[_Group], vcpus: tuple[int, ...], points: list[_TdPoint]
) -> None:
    """ProfileError for the first combination that is not a usable guest.

    The vCPU count is only range-checked, so its extremes stand for the whole axis.
    """
    extremes = sorted({min(vcpus), max(vcpus)})
    for (vmm, cpu, features), count, point in product(groups, extremes, points):
        config = Config(count, cpu, vmm, features, *point)
        problems = config.spec(base).problems()
        if problems:
            raise ProfileError(problems, source=f"configuration {config.text()}")


def _boot_digests(base: GuestSpec) -> GuestSpec:
    """`base` with its kernel and initrd given by digest, so each file is hashed once."""
    boot = base.boot
    if boot is None:
        return base

    def hashed(item: BootFile) -> BootFile:
        return BootFile(sha256=sha256_file(item.path)) if item.path is not None else item

    initrd = hashed(boot.initrd) if boot.initrd is not None else None
    return base._replace(boot=boot._replace(kernel=hashed(boot.kernel), initrd=initrd))


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
        self._prefixes: dict[Vmm, tuple[int, bytes | _Hash]] = {}
        self._chains: dict[tuple[Vmm, int, int], dict[int, bytes]] = {}

    def digests(self, vmm: Vmm, cpu: CpuSpec | None, guest_features: int) -> dict[int, bytes]:
        """The launch digest of every wanted vCPU count."""
        # QEMU puts the CPU signature in RDX, EC2 and GCE a fixed value; only SNP has features.
        signature = cpu.signature if cpu is not None and vmm is Vmm.QEMU else 0
        features = guest_features if self._snp else 0
        key = (vmm, signature, features)
        chain = self._chains.get(key)
        if chain is None:
            ap_eip, prefix = self._prefix(vmm, cpu, guest_features)
            bsp = save_area(vmm, BSP_RESET_ADDRESS, signature, features, bsp=True).pack()
            ap = save_area(vmm, ap_eip, signature, features, bsp=False).pack()
            if isinstance(prefix, bytes):
                chain = self._snp_chain(prefix, bsp, ap)
            else:
                chain = self._es_chain(prefix, bsp, ap)
            self._chains[key] = chain
        return chain

    def _prefix(
        self, vmm: Vmm, cpu: CpuSpec | None, guest_features: int
    ) -> tuple[int, bytes | _Hash]:
        """The AP start address and the digest (SNP) or hash state (SEV-ES) before the VMSAs."""
        found = self._prefixes.get(vmm)
        if found is not None:
            return found
        # Two vCPUs make build_sev_plan check the AP start address too, when APs are wanted;
        # no CPU for EC2 and GCE, which do not measure it (and would warn that it is ignored).
        config = Config(min(self._top, 2), cpu if vmm is Vmm.QEMU else None, vmm, guest_features)
        plan = build_sev_plan(config.spec(self._base), self._firmware)
        head = tuple(op for op in plan.ops if op.kind is not OpKind.VMSA)
        prefix: bytes | _Hash
        if self._snp:
            # The firmware pages come first under every VMM: measure them only once.
            digests = snp_digest(plan._replace(ops=head, firmware_digest=self._after_firmware))
            self._after_firmware = digests.firmware_digest
            prefix = digests.launch_digest
        else:
            prefix = hashlib.sha256()
            for op in head:
                if op.data is not None:
                    prefix.update(op.data)
        # build_sev_plan refuses firmware without an SEV-ES reset block.
        found = (plan.firmware.sev_es_reset_address or 0, prefix)
        self._prefixes[vmm] = found
        return found

    def _snp_chain(self, ld: bytes, bsp: bytes, ap: bytes) -> dict[int, bytes]:
        pack, gpa, wanted = PAGE_INFO.pack, self._base.vmsa_gpa, self._wanted
        contents = sha384(bsp).digest()
        out = {}
        for count in range(1, self._top + 1):
            if count == 2:
                contents = sha384(ap).digest()
            info = pack(ld, contents, PAGE_INFO_SIZE, PageType.VMSA, 0, 0, 0, 0, 0, gpa)
            ld = sha384(info).digest()
            if count in wanted:
                out[count] = ld
        return out

    def _es_chain(self, prefix: _Hash, bsp: bytes, ap: bytes) -> dict[int, bytes]:
        stream = prefix.copy()
        out = {}
        for count in range(1, self._top + 1):
            stream.update(bsp if count == 1 else ap)
            if count in self._wanted:
                out[count] = stream.copy().digest()
        return out


def _mrtds(
    base: GuestSpec, first: Config, points: list[_TdPoint], firmware: bytes
) -> dict[_TdPoint, bytes]:
    """The MRTD at every point; plans with the same measured records are measured once."""
    from cvmlaunch.plan.tdx import build_td_plan  # the TDVF parser loads only for a TD

    by_records: dict[tuple[object, ...], bytes] = {}
    out = {}
    for point in points:
        config = Config(first.vcpus, first.cpu, first.vmm, first.guest_features, *point)
        plan = build_td_plan(config.spec(base), firmware)
        records = _measured_records(plan)
        digest = by_records.get(records)
        if digest is None:
            digest = by_records[records] = measure(plan).digest
        out[point] = digest
    return out


def _measured_records(plan: TdPlan) -> tuple[object, ...]:
    """What MRTD depends on: the page order, and each added section's GPA range and, when
    extended, contents (an added page's contents are not measured)."""
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
    return (plan.spec.td_config.page_order, sections)
