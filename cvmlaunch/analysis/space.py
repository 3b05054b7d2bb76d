"""The configuration space of a launch measurement: which configurations to measure, and
which of them give a digest.

`matrix` tabulates the launch digest over a product of vCPU counts, CPU models, VMM flavours
and SNP guest features (TDX: page orders, raw-data tails and memory sizes); `solve` searches
such a product for the configurations that give a reported digest, `search_axes` is the
product it searches by default, and `fold` reads a field that takes every value of its axis
as "any". `fixed_fields`, `placeholders` and `axes_from_lists` read the guest flags of
`solve` and `matrix` as a search space. The digests come from the measure layer's sweep
(measure/sweep.py), which shares the work the configurations have in common; this module
decides only what to ask it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature
from cvmlaunch.abi.snp import SevFeature
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.fields import BY_KEY
from cvmlaunch.guest.spec import (
    ACPI_BLOBS,
    MAX_VCPUS,
    CpuSpec,
    GuestSpec,
    PageOrder,
    RawDataTail,
    Technology,
    Vmm,
)
from cvmlaunch.measure.sweep import (
    VMSA_TECHNOLOGIES,
    Axes,
    BootRow,
    Row,
    boot_sweep,
    point,
    sweep,
)
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.sev import GCE_GENOA_VMSA_GPA

# The names of the fields a configuration varies (the names `search_axes` takes as `fixed`).
FIELDS = (
    *("vcpus", "cpu", "vmm", "guest_features", "vmsa_gpa"),
    *("page_order", "raw_data_tail", "memory_mib", "edk2", "qemu"),
)
# The fields no value of which enters a technology's launch digest: a solution holds any.
NOT_MEASURED = {Technology.SEV: ("vcpus", "cpu", "vmm")}

# SNPActive alone, and with DebugSwap, which host kernels 6.6 to 6.8 turn on by themselves.
SNP_GUEST_FEATURES = (
    1 << SevFeature.SNP_ACTIVE,
    1 << SevFeature.SNP_ACTIVE | 1 << SevFeature.DEBUG_SWAP,
)
TDX_MEMORY_MIBS = (512, 1024, 2048, 3072, 4096, 8192, 16384, 32768, 65536, 131072)


def matrix(base: GuestSpec, axes: Axes, *, cloud_cpu: bool = False) -> list[Row]:
    """One Row per combination of `axes` applied to `base`, in product order.

    Each measurement equals `measure(build_plan(row.spec)).digest`. With `cloud_cpu`, EC2
    and GCE rows (whose VMSAs hold no CPU) come once, with cpu None, instead of once per CPU.
    Raises ProfileError naming the first combination that is not a usable guest, before
    measuring.
    """
    return list(sweep(base, axes, cloud_cpu=cloud_cpu))


def solve(
    target: bytes | None,
    base: GuestSpec,
    axes: Axes,
    rtmrs: Mapping[int, bytes] | None = None,
) -> list[GuestSpec]:
    """Every guest of `axes` applied to `base` whose launch digest is `target` (None: any)
    and, for a TD, whose boot gives the RTMRs in `rtmrs` (index -> value), in product order
    (a TD's: page order, raw-data tail, memory size, then edk2 release and QEMU version).

    EC2 and GCE do not measure the CPU: their guests are reported once, with cpu None,
    instead of once per CPU of the axis. ProfileError names `rtmrN` where the profile
    cannot predict RTMR N (RTMR0 without the ACPI digests).
    """
    if not rtmrs:
        if target is None:
            raise ProfileError([FieldProblem("target", "a launch digest or RTMRs to reproduce")])
        return [r.spec for r in sweep(base, axes, cloud_cpu=True) if r.measurement == target]
    boots = [row.spec for row in boot_sweep(base, axes) if _gives(row, rtmrs)]
    if target is None:
        return boots
    found = []
    for row in sweep(base, axes._replace(edk2s=(), qemus=()), cloud_cpu=True):
        if row.measurement == target:
            td = row.spec.td_config
            found += [
                b._replace(td=b.td_config._replace(page_order=td.page_order,
                                                   raw_data_tail=td.raw_data_tail))
                for b in boots
                if b.memory_mib == row.spec.memory_mib
            ]  # fmt: skip
    return found


class RegisterMatch(NamedTuple):
    """How many of the boots searched give an RTMR, and the profile fields behind its
    events (likeliest first)."""

    matched: int
    searched: int
    causes: tuple[str, ...]


def rtmr_matches(
    base: GuestSpec, axes: Axes, rtmrs: Mapping[int, bytes]
) -> dict[int, RegisterMatch]:
    """For each RTMR of `rtmrs` (index -> value): how many boots of `axes` applied to `base`
    give it, to say which register no configuration reproduces and what shapes it."""
    from cvmlaunch.measure.rtmr import event_causes

    counts = dict.fromkeys(rtmrs, 0)
    searched = 0
    causes: dict[int, dict[str, None]] = {index: {} for index in rtmrs}
    for row in boot_sweep(base, axes):
        searched += 1
        for index, value in rtmrs.items():
            counts[index] += row.rtmrs[index] == value
        if searched == 1:
            for event in row.events:
                if event.rtmr in causes:
                    causes[event.rtmr].update(dict.fromkeys(event_causes(event)))
    return {i: RegisterMatch(counts[i], searched, tuple(causes[i])) for i in rtmrs}


def _gives(row: BootRow, rtmrs: Mapping[int, bytes]) -> bool:
    for index, value in rtmrs.items():
        predicted = row.rtmrs[index]
        if predicted is None:
            unknown = next(e.label for e in row.events if e.rtmr == index and e.contents is None)
            reason = f"not predictable: the digest of its {unknown!r} event is not known offline"
            if unknown in ACPI_BLOBS:
                reason += " (give tdx.acpi)"
            raise ProfileError([FieldProblem(f"rtmr{index}", reason)])
        if predicted != value:
            return False
    return True


class Solution(NamedTuple):
    """Guests that reproduce a digest, folded: every value of the `free` fields' axes gives
    the same digest with the rest of `spec` (which holds the base's value of each), and so
    does each memory size of `memory_mibs` where more than one but not all do (`spec` holds
    the first)."""

    spec: GuestSpec
    free: tuple[str, ...]
    memory_mibs: tuple[int, ...] = ()


# The fields a solution can leave free (as solutions name them), their field-table rows, and
# the Axes field that lists their values.
_AXIS_OF = {
    "memory_mib": (BY_KEY["memory_mib"], "memory_mibs"),
    "raw_data_tail": (BY_KEY["tdx.raw_data_tail"], "raw_data_tails"),
    "edk2": (BY_KEY["tdx.edk2"], "edk2s"),
    "qemu": (BY_KEY["tdx.qemu"], "qemus"),
}


def fold(
    found: list[GuestSpec], axes: Axes, base: GuestSpec, *, fixed: frozenset[str] = frozenset()
) -> list[Solution]:
    """`found` with each field that takes every value of its axis (for fixed values of
    the others) folded into one solution, so that e.g. the memory sizes that never enter a
    firmware's MRTD read as "any" rather than as ten profiles. A field no value of which
    enters the digest (NOT_MEASURED: the vCPUs of a plain SEV guest) is free too, unless it
    is in `fixed` (names: FIELDS). Memory sizes some of which give a digest (a TD's RTMR1
    when QEMU places the initrd below 2 GiB) fold into one solution listing them."""
    unmeasured = tuple(f for f in NOT_MEASURED.get(base.technology, ()) if f not in fixed)
    solutions = [Solution(spec, unmeasured) for spec in found]
    for field, (row, axis_name) in _AXIS_OF.items():
        values = set(getattr(axes, axis_name))
        if len(values) < 2:
            continue
        groups: dict[Solution, list[Solution]] = {}  # in first-seen order
        for s in solutions:
            key = s._replace(spec=_with(s.spec, field, base.value(row)))
            groups.setdefault(key, []).append(s)
        folded: list[Solution] = []
        for key, members in groups.items():
            taken = [m.spec.value(row) for m in members]
            if set(taken) == values:
                folded.append(key._replace(free=(*key.free, field)))
            elif field == "memory_mib" and len(members) > 1:
                folded.append(members[0]._replace(memory_mibs=tuple(taken)))
            else:
                folded += members
        solutions = folded
    return solutions


def _with(spec: GuestSpec, field: str, value: Any) -> GuestSpec:
    at = point(spec, spec.vcpus, spec.cpu, spec.vmm, spec.guest_features, **{field: value})
    return at


def search_axes(
    base: GuestSpec,
    *,
    fixed: frozenset[str] = frozenset(),
    max_vcpus: int = 64,
    mrtd: bool = True,
    boot: bool = False,
) -> Axes:
    """The default search space of `solve` for `base`'s technology.

    Each field in `fixed` (names: FIELDS) keeps the base's value; every other field takes
    every value it can have: vCPUs 1..max_vcpus, one CpuSpec per distinct signature of
    CPU_MODELS (named by its first model; `models_with_signature` lists the others), every
    VMM, SNP_GUEST_FEATURES and, where GCE is searched, its Genoa VMSA GPA besides the
    base's; for tdx both page orders, both raw-data tails and TDX_MEMORY_MIBS. Fields that do
    not enter the digest keep the base's value (sev: vCPUs, CPU and VMM, which `fold` reads
    as any; tdx: vCPUs and CPU, and the VMM is QEMU), so that a solution is not repeated once
    per value of each; guest_features is 0 for all but sev-snp.

    A TD's `mrtd` (False: page order and raw-data tail keep the base's value: no launch digest
    is searched) and `boot`: with it, one edk2 release of each era of EDK2_ERAS and a QEMU
    version that rewrites the kernel's setup header and one that does not (where the kernel
    is a file); each is the base's value where that is of its kind.
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
    gpas: tuple[int, ...] = ()
    if technology in VMSA_TECHNOLOGIES:
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
            if "vmsa_gpa" not in fixed and Vmm.GCE in vmms:
                gpas = tuple(dict.fromkeys((base.vmsa_gpa, GCE_GENOA_VMSA_GPA)))
    if technology is not Technology.TDX:
        return Axes(vcpus, cpus, vmms, features, vmsa_gpas=gpas)
    td = base.td_config
    searched = frozenset(FIELDS) - fixed
    edk2s, qemus = _boot_axes(base, searched) if boot else ((), ())
    return Axes(
        vcpus,
        cpus,
        (Vmm.QEMU,) if "vmm" not in fixed else vmms,
        features,
        tuple(PageOrder) if mrtd and "page_order" in searched else (td.page_order,),
        tuple(RawDataTail) if mrtd and "raw_data_tail" in searched else (td.raw_data_tail,),
        TDX_MEMORY_MIBS if "memory_mib" in searched else (base.memory_mib,),
        edk2s=edk2s,
        qemus=qemus,
    )


def _boot_axes(
    base: GuestSpec, searched: frozenset[str]
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The edk2 releases and QEMU versions of `search_axes` with `boot`."""
    from cvmlaunch.measure.rtmr import (
        EDK2_ERAS,
        QEMU_KEEPS_HEADER,
        QEMU_REWRITES_HEADER,
        edk2_era,
        rewrites_header,
    )

    td = base.td_config
    edk2s: tuple[int, ...] = ()
    qemus: tuple[str, ...] = ()
    if "edk2" in searched:
        given = td.edk2
        edk2s = tuple(given if given is not None and edk2_era(given) == era else era[0]
                      for era in EDK2_ERAS)  # fmt: skip
    if "qemu" in searched and base.boot is not None and base.boot.kernel.path is not None:
        kinds = {rewrites_header(q): q for q in (QEMU_KEEPS_HEADER, QEMU_REWRITES_HEADER)}
        if td.qemu is not None:
            kinds[rewrites_header(td.qemu)] = td.qemu
        qemus = (kinds[True], kinds[False])
    return edk2s, qemus


def distinct_cpus() -> tuple[CpuSpec, ...]:
    """One CpuSpec per distinct signature of CPU_MODELS, named by the first model with it."""
    first: dict[int, str] = {}
    for name, fms in CPU_MODELS.items():
        first.setdefault(cpu_signature(*fms), name)
    return tuple(CpuSpec(signature, name) for signature, name in first.items())


# The profile keys (field-table rows) each field of the search is written with: the flag of
# any of them fixes the field in `solve` (cpu.model and cpu.stepping go with cpu.family).
_KEYS = {
    "vcpus": ("vcpus",),
    "cpu": ("cpu.name", "cpu.signature", "cpu.family"),
    "vmm": ("vmm",),
    "guest_features": ("snp.guest_features",),
    "vmsa_gpa": ("snp.vmsa_gpa",),
    "page_order": ("tdx.page_order",),
    "raw_data_tail": ("tdx.raw_data_tail",),
    "memory_mib": ("memory_mib",),
    "edk2": ("tdx.edk2",),
    "qemu": ("tdx.qemu",),
}
# field -> the guest flags that fix it.
_FIXED_BY = {field: tuple(BY_KEY[k].flag for k in keys) for field, keys in _KEYS.items()}


def fixed_fields(given: Collection[str]) -> frozenset[str]:
    """The fields (names: FIELDS) that `solve` keeps at the base's value, given the guest
    flags in `given` (e.g. `--vcpus`, `--vcpu-sig`); every other field is searched."""
    return frozenset(f for f, flags in _FIXED_BY.items() if any(g in flags for g in given))


# What a guest given by flags alone holds for the fields the search varies anyway.
PLACEHOLDER_VCPUS = 1
PLACEHOLDER_CPU = "EPYC-v4"


def placeholders(technology: str | None, fixed: frozenset[str]) -> dict[str, object]:
    """Guest flag -> value for the fields `solve` searches that a guest given by flags alone
    (no profile) still needs to be a usable base: a vCPU count, and a CPU where the VMSAs
    hold one (sev-es, sev-snp). Fields in `fixed` are the user's."""
    out: dict[str, object] = {}
    if "vcpus" not in fixed:
        out["--vcpus"] = PLACEHOLDER_VCPUS
    if "cpu" not in fixed and technology in (Technology.SEV_ES, Technology.SEV_SNP):
        out["--vcpu-type"] = PLACEHOLDER_CPU
    return out


# The guest flags `matrix` takes as lists (its base spec takes each list's first value).
MATRIX_FLAGS = (
    *("--vcpus", "--vcpu-type", "--vcpu-sig", "--vmm", "--guest-features"),
    *("--tdx-page-order", "--raw-data-tail", "--memory-mib"),
)


def axes_from_lists(base: GuestSpec, lists: Mapping[str, Sequence[Any] | None]) -> Axes:
    """The axes of `matrix` from the value lists given with guest flags (MATRIX_FLAGS ->
    values; None or absent: not given). Each list is an axis; an axis without one holds the
    base's value (guest_features: 0 for all but sev-snp, whose VMSAs alone hold it; the TDX
    axes stay empty, which the sweep reads as the base's value and refuses for other
    guests). ProfileError names `--vcpu-type` for an unknown CPU model."""
    unknown = sorted(set(lists) - set(MATRIX_FLAGS))
    if unknown:
        raise ProfileError([FieldProblem(flag, "not a matrix axis") for flag in unknown])

    def given(flag: str) -> Sequence[Any]:
        return lists.get(flag) or ()

    cpus: tuple[CpuSpec | None, ...] = (base.cpu,)
    if given("--vcpu-type"):
        cpus = tuple(_cpu_named(name) for name in given("--vcpu-type"))
    elif given("--vcpu-sig"):
        cpus = tuple(CpuSpec(signature) for signature in given("--vcpu-sig"))
    snp = base.technology is Technology.SEV_SNP
    return Axes(
        vcpus=tuple(given("--vcpus") or (base.vcpus,)),
        cpus=cpus,
        vmms=tuple(given("--vmm") or (base.vmm,)),
        guest_features=tuple(
            given("--guest-features") or ((base.guest_features,) if snp else (0,))
        ),
        page_orders=tuple(PageOrder(o) for o in given("--tdx-page-order")),
        raw_data_tails=tuple(RawDataTail(t) for t in given("--raw-data-tail")),
        memory_mibs=tuple(given("--memory-mib")),
    )


def _cpu_named(name: str) -> CpuSpec:
    try:
        return CpuSpec.from_name(name)
    except ProfileError as e:
        raise ProfileError([FieldProblem("--vcpu-type", p.reason) for p in e.problems]) from None
