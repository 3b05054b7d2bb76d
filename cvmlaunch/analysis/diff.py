"""Compare two measurements: the first step where they part, and why, in profile terms.

Both sides are `Evidence` (a profile's plan, a saved trace, or a launch record). Plans and
traces are compared step by step (kind, GPA, page type, contents, running digest); when a
launch record takes part, both sides are compared as the map_memory calls of the launch
(a record has neither digests nor VMSAs). The first mismatch is the divergence; its causes
name profile fields (`cpu.name`, `snp.guest_features`, `tdx.page_order`, ...) first, then
the registers or structures that differ.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from cvmlaunch.abi.cpu import models_with_signature, split_signature
from cvmlaunch.abi.snp import PAGE_SIZE, PageType, sev_feature_names
from cvmlaunch.abi.tdx import MR_EXTEND_CHUNK
from cvmlaunch.analysis.evidence import (
    PRECOMPUTED,
    STEP_FIELDS,
    Evidence,
    precomputed,
    section_types,
)
from cvmlaunch.firmware.ovmf import FOUR_GIB
from cvmlaunch.guest.fields import BY_KEY, listing_rank
from cvmlaunch.measure.snp import snp_digest
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.ops import LaunchPlan, Plan, TdPlan
from cvmlaunch.plan.sev import EC2_CPUID_LAST, GCE_SEC_MEM
from cvmlaunch.plan.step import TD_RECORDS, Step, StepKind, TdAction
from cvmlaunch.plan.vmsa import CLOUD_RDX


class Cause(NamedTuple):
    """Why two steps differ: a profile field (dotted) or a register/structure, both values,
    and what the difference means."""

    field: str
    a: str
    b: str
    meaning: str

    def doc(self) -> dict[str, str]:
        return self._asdict()


class Divergence(NamedTuple):
    """The first step where A and B differ.

    `step` indexes A's steps (for a comparison with a launch record: the map_memory calls);
    `a` or `b` is None when that side has no such step.
    """

    step: int
    a: Step | None
    b: Step | None
    where: str
    causes: tuple[Cause, ...]


class DiffResult(NamedTuple):
    """Two measurements compared: the verdict, the first divergence, every input difference."""

    a: Evidence
    b: Evidence
    same: bool
    divergence: Divergence | None
    input_differences: tuple[Cause, ...]

    def doc(self) -> dict[str, Any]:
        """The JSON-ready comparison."""
        d = self.divergence
        return {
            "same": self.same,
            "a": _evidence_doc(self.a),
            "b": _evidence_doc(self.b),
            "divergence": None
            if d is None
            else {
                "step": d.step,
                "where": d.where,
                "a": _step_doc(d.a),
                "b": _step_doc(d.b),
                "causes": [c.doc() for c in d.causes],
            },
            "input_differences": [c.doc() for c in self.input_differences],
        }

    def text(self) -> str:
        """The comparison for people: the verdict and the cause first."""
        d = self.divergence
        if self.same:
            lines = [f"same: A and B measure {_hex(self.a.measurement)}"]
        elif d is None:  # measurements differ and no step tells: diff() never returns this
            lines = ["different measurements"]
        else:
            lines = [f"different: first divergence at step {d.step}: {d.where}"]
            lines += [
                f"{'cause' if n == 0 else 'also':>7}  {_cause_text(c)}"
                for n, c in enumerate(d.causes)
            ]
        lines.append("")
        for name, e in (("A", self.a), ("B", self.b)):
            lines.append(f"{name}  {e.source} ({e.form}, {e.technology}): {_hex(e.measurement)}")
        if d is not None:
            lines.append(f"A step  {_step_text(d.a)}")
            lines.append(f"B step  {_step_text(d.b)}")
        if self.input_differences:
            note = " (not in this measurement)" if self.same else ""
            lines += ["", f"input differences{note}:"]
            lines += [f"  {_cause_text(c)}" for c in self.input_differences]
        return "\n".join(lines)


def diff(a: Evidence, b: Evidence) -> DiffResult:
    """Compare A and B: the first divergent step with its causes, and every input
    difference."""
    inputs = _input_differences(a, b)
    by_field = {c.field: c for c in inputs}
    if a.technology != b.technology:
        divergence: Divergence | None = Divergence(
            0,
            a.steps[0] if a.steps else None,
            b.steps[0] if b.steps else None,
            f"technology {a.technology} vs {b.technology}",
            (Cause("technology", a.technology, b.technology, "different technologies"),),
        )
    elif a.measurement is not None and a.measurement == b.measurement:
        # The same digest: whatever differs in the steps (a precomputed firmware digest, an
        # unmeasured page's contents) is not in the measurement; inputs are still listed.
        divergence = None
    elif "record" in (a.form, b.form):
        divergence = _populate_divergence(a, b, by_field)
    else:
        divergence = _step_divergence(a, b, by_field)
    same_measurement = a.measurement == b.measurement
    if divergence is None and not same_measurement:
        divergence = _unexplained(a, b, inputs)
    return DiffResult(a, b, divergence is None and same_measurement, divergence, inputs)


# ---- step by step (plans and traces) ------------------------------------------------------


def _differs(x: Step, y: Step) -> bool:
    if (x.kind, x.gpa, x.page_type, x.action, x.pages) != (
        y.kind,
        y.gpa,
        y.page_type,
        y.action,
        y.pages,
    ):
        return True
    if x.contents is not None and y.contents is not None and x.contents != y.contents:
        return True
    return x.digest is not None and y.digest is not None and x.digest != y.digest


def _call_differs(x: Step, y: Step) -> bool:
    """Whether two map_memory calls differ (a planned or traced call and a recorded one
    name the same call by its range, type and source)."""
    if (x.call_type, x.gpa, x.pages) != (y.call_type, y.gpa, y.pages):
        return True
    return x.contents is not None and y.contents is not None and x.contents != y.contents


def _first_difference(
    xs: Sequence[Step], ys: Sequence[Step], differs: Callable[[Step, Step], bool] = _differs
) -> int | None:
    for n, (x, y) in enumerate(zip(xs, ys, strict=False)):
        if differs(x, y):
            return n
    return None if len(xs) == len(ys) else min(len(xs), len(ys))


def _step_divergence(a: Evidence, b: Evidence, inputs: dict[str, Cause]) -> Divergence | None:
    xs, ys = a.steps, b.steps
    whole = _precomputed(xs) or _precomputed(ys)
    if whole:
        xs, ys = _firmware_as_one(xs), _firmware_as_one(ys)
    n = _first_difference(xs, ys)
    if n is None:
        return None
    x = xs[n] if n < len(xs) else None
    y = ys[n] if n < len(ys) else None
    if x is None or y is None:
        where, causes = _extra_step(a, b, _present(x, y), "A" if x is not None else "B", inputs)
    elif x.kind in TD_RECORDS:
        where, causes = _td_step(a, b, x, y, inputs)
    elif x.kind != y.kind:
        where, causes = _different_kinds(x, y, inputs)
    elif x.kind is StepKind.FIRMWARE and whole:
        where, causes = _precomputed_step(a, b, x, inputs)
    elif x.kind is StepKind.FIRMWARE:
        where, causes = _firmware_step(a, b, x, y, inputs)
    elif x.kind is StepKind.SEV_METADATA:
        where, causes = _metadata_step(x, y, inputs)
    elif x.kind is StepKind.KERNEL_HASHES:
        where, causes = _kernel_hashes_step(x, y, inputs)
    else:
        where, causes = x.label, _vmsa_causes(x, y, inputs)
    return Divergence(_present(x, y).number, x, y, where, _nonempty(causes, x, y, inputs))


def _precomputed(steps: Sequence[Step]) -> bool:
    return bool(steps) and precomputed(steps[0])


def _firmware_as_one(steps: Sequence[Step]) -> tuple[Step, ...]:
    """`steps` with the firmware pages as one step: the digest after them is all that a
    precomputed firmware digest can be compared with."""
    count = next((n for n, s in enumerate(steps) if s.kind is not StepKind.FIRMWARE), len(steps))
    if count == 0:
        return tuple(steps)
    last = steps[count - 1]
    whole = last._replace(label="firmware", gpa=steps[0].gpa, contents=None, size=PAGE_SIZE)
    return (whole, *steps[count:])


def _present(*steps: Step | None) -> Step:
    """The first of `steps` that is there (a divergence always has one)."""
    return next(s for s in steps if s is not None)


def _extra_step(
    a: Evidence, b: Evidence, step: Step, side: str, inputs: dict[str, Cause]
) -> tuple[str, list[Cause]]:
    where = f"{step.label} (only in {side})"
    if step.kind is StepKind.VMSA:
        counts = [sum(s.kind is StepKind.VMSA for s in e.steps) for e in (a, b)]
        vcpus = inputs.get("vcpus") or Cause("vcpus", str(counts[0]), str(counts[1]), "")
        meaning = f"vcpus {vcpus.a} vs {vcpus.b}: one VMSA per vCPU"
        return where, [vcpus._replace(meaning=meaning)]
    if step.kind is StepKind.KERNEL_HASHES:
        return where, [_boot_cause(inputs, side)]
    return where, _relevant(inputs, _fields_of(step))


def _different_kinds(x: Step, y: Step, inputs: dict[str, Cause]) -> tuple[str, list[Cause]]:
    kinds = {x.kind, y.kind}
    if x.gpa == y.gpa:
        label = y.label if y.kind is StepKind.SEV_METADATA else x.label
        found = f"{x.kind} {_name(x)} in A, {y.kind} {_name(y)} in B"
        where = f"page {x.gpa:#x} ({label}): {found}"
    else:
        where = f"{x.label} at {x.gpa:#x} vs {y.label} at {y.gpa:#x}"
    if StepKind.KERNEL_HASHES in kinds:
        side = "A" if x.kind is StepKind.KERNEL_HASHES else "B"
        return where, [_boot_cause(inputs, side)]
    return where, _relevant(inputs, (*_fields_of(x), *_fields_of(y)))


def _boot_cause(inputs: dict[str, Cause], side: str) -> Cause:
    other = "B" if side == "A" else "A"
    meaning = (
        f"measured direct boot in {side} only: {side} measures a kernel hashes page, "
        f"{other} does not (a kernel given with -kernel, or not)"
    )
    known = inputs.get("boot")
    if known is not None:
        return known._replace(meaning=meaning)
    values = ("kernel hashes", "none") if side == "A" else ("none", "kernel hashes")
    return Cause("boot", *values, meaning)


def _precomputed_step(
    a: Evidence, b: Evidence, x: Step, inputs: dict[str, Cause]
) -> tuple[str, list[Cause]]:
    """The digest after the firmware pages differs, and A or B gives it precomputed
    (firmware.digest): a wrong digest, or a different image."""
    where = f"the launch digest after the firmware pages at {x.gpa:#x} ({PRECOMPUTED})"
    digest = inputs.get(PRECOMPUTED)
    sha = inputs.get("firmware.sha256")
    if digest is None:  # unknown on one side: the steps show both
        digest = Cause(PRECOMPUTED, *_after_firmware(a, b), _digest_meaning(a, b))
    if sha is None or _wrong_digests(a, b):
        return where, [digest] if sha is None else [digest, sha]
    return where, [sha._replace(meaning="different firmware images"), digest]


def _after_firmware(a: Evidence, b: Evidence, unknown: str = "") -> tuple[str, str]:
    """A's and B's launch digest after the firmware pages, as hex (`unknown` where it is
    not known)."""
    return _after(a) or unknown, _after(b) or unknown


def _after(e: Evidence) -> str | None:
    if PRECOMPUTED in e.inputs:
        return e.inputs[PRECOMPUTED]
    return None if e.firmware_digest is None else e.firmware_digest.hex()


def _image_digest(e: Evidence) -> bytes | None:
    """What `e`'s firmware image measures to (its pages alone), where the image is at hand:
    the digest a precomputed firmware.digest must equal."""
    if PRECOMPUTED not in e.inputs:
        return e.firmware_digest
    if not isinstance(e.plan, LaunchPlan) or e.plan.spec.firmware_descriptor is not None:
        return None  # a descriptor gives the image's facts, not its pages
    firmware = tuple(op for op in e.plan.ops if op.kind is StepKind.FIRMWARE)
    return snp_digest(e.plan._replace(ops=firmware, firmware_digest=None)).firmware_digest


def _wrong_digests(*sides: Evidence) -> bool:
    """Whether any of `sides` gives a precomputed firmware.digest its own image does not
    measure to."""
    return any(
        PRECOMPUTED in e.inputs
        and (image := _image_digest(e)) is not None
        and image.hex() != e.inputs[PRECOMPUTED]
        for e in sides
    )


def _digest_meaning(a: Evidence, b: Evidence) -> str:
    parts = []
    for name, e in (("A", a), ("B", b)):
        if PRECOMPUTED not in e.inputs:
            continue
        image = _image_digest(e)
        if image is None:
            parts.append(f"{name}'s is precomputed (its firmware image is not at hand)")
        elif image.hex() != e.inputs[PRECOMPUTED]:
            found = _short(image.hex())
            parts.append(f"{name}'s is precomputed, not what its firmware measures to ({found})")
        else:
            parts.append(f"{name}'s is precomputed, as its firmware measures")
    lead = "a wrong precomputed digest" if _wrong_digests(a, b) else "different digests"
    return f"{lead} of the firmware pages: {'; '.join(parts)}"


def _digest_cause(a: Evidence, b: Evidence) -> Cause | None:
    """firmware.digest as an input difference: where A or B gives it precomputed and the
    digests after the firmware pages differ."""
    if PRECOMPUTED not in a.inputs and PRECOMPUTED not in b.inputs:
        return None
    va, vb = _after_firmware(a, b)
    if not va or not vb or va == vb:
        return None
    return Cause(PRECOMPUTED, va, vb, _digest_meaning(a, b))


def _firmware_step(
    a: Evidence, b: Evidence, x: Step, y: Step, inputs: dict[str, Cause]
) -> tuple[str, list[Cause]]:
    offset = x.file_offset if x.file_offset is not None else 0
    if x.pages > 1:
        where = f"firmware image at {x.gpa:#x} ({x.pages} pages)"
    else:
        where = f"firmware page {x.gpa:#x} (file offset {offset:#x})"
    if (x.gpa, x.pages) != (y.gpa, y.pages):
        detail = f"images of different sizes (mapped from {x.gpa:#x} vs {y.gpa:#x})"
    else:
        byte = _first_sev_byte(a.plan, b.plan, offset)
        detail = f"the page at file offset {offset:#x} differs"
        if byte is not None:
            at, va, vb = byte
            detail = f"first differing byte at file offset {at:#x} ({va:#04x} vs {vb:#04x})"
    return where, _firmware_causes(inputs, x, y, detail)


def _firmware_causes(inputs: dict[str, Cause], x: Step, y: Step, detail: str) -> list[Cause]:
    sha = inputs.get("firmware.sha256")
    if sha is None:
        first = Cause("firmware", _text(x.contents), _text(y.contents), f"firmware {detail}")
    else:
        first = sha._replace(meaning=f"different firmware images: {detail}")
    path = inputs.get("firmware.path")
    return [first] if path is None else [first, path]


def _first_sev_byte(a: Plan | None, b: Plan | None, start: int) -> tuple[int, int, int] | None:
    if not isinstance(a, LaunchPlan) or not isinstance(b, LaunchPlan):
        return None
    if a.firmware is None or b.firmware is None:  # an IGVM file: no image at 4 GiB
        return None
    return _first_byte(a.firmware.data, b.firmware.data, start, start)


def _first_byte(
    x: bytes | memoryview, y: bytes | memoryview, start: int, file_offset: int
) -> tuple[int, int, int] | None:
    """The first byte from `start` where `x` and `y` differ: (its file offset, x's, y's)."""
    end = min(len(x), len(y))
    for page in range(start, end, PAGE_SIZE):
        if x[page : page + PAGE_SIZE] != y[page : page + PAGE_SIZE]:
            for i in range(page, min(page + PAGE_SIZE, end)):
                if x[i] != y[i]:
                    return file_offset + i - start, x[i], y[i]
    return None


def _metadata_step(x: Step, y: Step, inputs: dict[str, Cause]) -> tuple[str, list[Cause]]:
    where = f"SEV metadata {_section_name(x)} page {x.gpa:#x}"
    found = f"{x.label}: {_name(x)} at {x.gpa:#x} vs {y.label}: {_name(y)} at {y.gpa:#x}"
    causes = []
    vmm = inputs.get("vmm")
    if vmm is not None:
        flavours = {vmm.a, vmm.b}
        if x.gpa != y.gpa and "ec2" in flavours:
            why = EC2_CPUID_LAST
        elif x.page_type != y.page_type and "gce" in flavours:
            why = GCE_SEC_MEM
        else:
            why = "the order and page types of the SEV metadata sections"
        causes.append(vmm._replace(meaning=f"VMM flavour {vmm.a} vs {vmm.b}: {why}"))
    sha = inputs.get("firmware.sha256")
    if sha is not None:
        causes.append(sha._replace(meaning=f"different firmware images: {found}"))
    causes.append(
        Cause(
            "sev_metadata",
            f"{_name(x)} at {x.gpa:#x}",
            f"{_name(y)} at {y.gpa:#x}",
            f"measured differently: {found}",
        )
    )
    return where, causes


def _section_name(step: Step) -> str:
    if step.section is None:
        return step.label
    return f"section {step.section} ({step.section_type})"


def _kernel_hashes_step(x: Step, y: Step, inputs: dict[str, Cause]) -> tuple[str, list[Cause]]:
    table = x.size < PAGE_SIZE  # sev/sev-es measure the table alone, snp the page it is in
    noun = "kernel hashes table" if table else "kernel hashes page"
    fields = ("boot.kernel", "boot.initrd", "boot.cmdline")
    causes = [inputs[f] for f in fields if f in inputs]
    names = [c.field.removeprefix("boot.") for c in causes]
    if len(names) == 1:
        which = f"{names[0]} hash differs"
    elif names:
        which = f"{', '.join(names[:-1])} and {names[-1]} hashes differ"
    else:
        which = "contents differ"
    return f"{noun} {x.gpa:#x} ({which})", causes


# ---- VMSA registers ------------------------------------------------------------------------


def _vmsa_causes(x: Step, y: Step, inputs: dict[str, Cause]) -> list[Cause]:
    """Profile fields first (as far as the registers tell them), then every register."""
    causes = []
    if x.gpa != y.gpa:
        gpa = inputs.get("snp.vmsa_gpa")
        causes.append(
            gpa or Cause("snp.vmsa_gpa", f"{x.gpa:#x}", f"{y.gpa:#x}", "VMSA GPA differs")
        )
    if x.vmsa is None or y.vmsa is None:
        unnamed = "the VMSA pages differ; this trace does not name their registers"
        registers = [Cause("vmsa", _text(x.contents), _text(y.contents), unnamed)]
        return causes + _relevant(inputs, STEP_FIELDS["vmsa"]) + registers
    names = dict.fromkeys([*x.vmsa, *y.vmsa])
    changed = {
        name: (x.vmsa.get(name, 0), y.vmsa.get(name, 0))
        for name in names
        if x.vmsa.get(name, 0) != y.vmsa.get(name, 0)
    }
    vmm = inputs.get("vmm")
    by_vmm = [n for n, (va, vb) in changed.items() if vmm is not None and _set_by_vmm(n, va, vb)]
    if vmm is not None and by_vmm:
        groups = ", ".join(dict.fromkeys(_VMM_GROUPS.get(n, "segment attributes") for n in by_vmm))
        causes.append(vmm._replace(meaning=f"VMM flavour {vmm.a} vs {vmm.b} ({groups})"))
    if "rdx" in changed and "rdx" not in by_vmm:
        causes.append(_cpu_cause(inputs, *changed["rdx"]))
    if "sev_features" in changed:
        fa, fb = changed["sev_features"]
        causes.append(Cause("snp.guest_features", f"{fa:#x}", f"{fb:#x}", _features(fa, fb)))
    if "rip" in changed or "cs.base" in changed:
        start = "AP start address (the firmware's SEV-ES reset block)"
        sha = inputs.get("firmware.sha256") or Cause("firmware", "", "", "")
        causes.append(sha._replace(meaning=f"different firmware images: {start}"))
    causes += [
        Cause(name, f"{va:#x}", f"{vb:#x}", _register_meaning(name, va, vb))
        for name, (va, vb) in changed.items()
    ]
    return causes


_VMM_GROUPS = {"mxcsr": "MXCSR", "x87_fcw": "x87 FCW", "g_pat": "G_PAT", "rdx": "fixed RDX"}


def _set_by_vmm(name: str, va: int, vb: int) -> bool:
    if name == "rdx":
        return CLOUD_RDX in (va, vb)
    return name.endswith(".attrib") or name in _VMM_GROUPS


def _register_meaning(name: str, va: int, vb: int) -> str:
    if name == "rdx":
        return f"CPUID signature in RDX: {_models(va)} vs {_models(vb)}"
    if name == "sev_features":
        return f"SEV_FEATURES: {_features(va, vb)}"
    if name.endswith(".attrib"):
        return f"{name.partition('.')[0].upper()} segment attributes (set by the VMM)"
    if name in _VMM_GROUPS:
        return f"{_VMM_GROUPS[name]} reset value (set by the VMM)"
    if name in ("rip", "cs.base"):
        return "start address (BSP: the reset vector; AP: the firmware's SEV-ES reset block)"
    return f"register {name}"


def _cpu_cause(inputs: dict[str, Cause], ra: int, rb: int) -> Cause:
    name = inputs.get("cpu.name")
    if name is not None:
        meaning = f"CPU model {name.a} vs {name.b} (CPUID signature {ra:#x} vs {rb:#x} in RDX)"
        return name._replace(meaning=meaning)
    return Cause(
        "cpu.signature", f"{ra:#x}", f"{rb:#x}", f"CPU model {_models(ra)} vs {_models(rb)}"
    )


def _models(signature: int) -> str:
    """The QEMU CPU models with this CPUID signature, as a family: "EPYC-Milan (and -v1..v3)"."""
    if signature == CLOUD_RDX:
        return "fixed RDX of ec2/gce"
    names = list(models_with_signature(signature))
    if not names:
        fms = split_signature(signature)
        return f"family {fms.family} model {fms.model} stepping {fms.stepping} (no QEMU model)"
    base = names[0]
    pattern = re.compile(re.escape(base) + r"-v(\d+)")
    versions = [int(m.group(1)) for n in names if (m := pattern.fullmatch(n))]
    others = [n for n in names[1:] if not pattern.fullmatch(n)]
    extra = [f"-v{min(versions)}..v{max(versions)}"] if versions else []
    return base + (f" (and {', '.join(extra + others)})" if extra or others else "")


def _features(fa: int, fb: int) -> str:
    parts = []
    for bits, side in ((fb & ~fa, "B"), (fa & ~fb, "A")):
        if bits:
            parts.append(f"{', '.join(sev_feature_names(bits))} set in {side}")
    return "; ".join(parts) or "same features"


# ---- TDX MRTD records --------------------------------------------------------------------


def _td_step(
    a: Evidence, b: Evidence, x: Step, y: Step, inputs: dict[str, Cause]
) -> tuple[str, list[Cause]]:
    where = f"TDX {x.label.removeprefix('TDVF ')} record {x.kind} at {x.gpa:#x}"
    if (x.kind, x.gpa) != (y.kind, y.gpa):
        where += f" (B: {y.label.removeprefix('TDVF ')} record {y.kind} at {y.gpa:#x})"
    causes = []
    order = inputs.get("tdx.page_order")
    if order is not None:
        causes.append(order._replace(meaning=_input_meaning(order.field, order.a, order.b, "tdx")))
    if (x.kind, x.gpa, x.section) == (y.kind, y.gpa, y.section):
        # Same record, different digest: the extended 256 bytes differ.
        byte = _first_td_byte(a.plan, b.plan, x)
        tail = inputs.get("tdx.raw_data_tail")
        if tail is not None:
            causes.append(tail)
        if x.section_type == "TD_HOB" and "memory_mib" in inputs:
            causes.append(inputs["memory_mib"])
        detail = f"the 256 bytes extended at {x.gpa:#x} differ"
        if byte is not None:
            at, va, vb = byte
            detail = f"first differing byte at file offset {at:#x} ({va:#04x} vs {vb:#04x})"
        causes += _firmware_causes(inputs, x, y, detail) if "firmware.sha256" in inputs else []
        return where, causes
    sha = inputs.get("firmware.sha256")
    if sha is not None:
        causes.append(
            sha._replace(meaning="different firmware images: their TDVF sections differ")
        )
    return where, causes


def _first_td_byte(a: Plan | None, b: Plan | None, step: Step) -> tuple[int, int, int] | None:
    if not isinstance(a, TdPlan) or not isinstance(b, TdPlan) or step.section is None:
        return None
    chunks = []
    for plan in (a, b):
        op = next((o for o in plan.ops if o.section == step.section), None)
        if op is None:
            return None
        at = step.gpa - op.gpa
        data = bytes(op.data[at : at + MR_EXTEND_CHUNK]) if op.data is not None else b""
        chunks.append(data.ljust(MR_EXTEND_CHUNK, b"\0"))
    section = a.tdvf.sections[step.section]
    return _first_byte(chunks[0], chunks[1], 0, section.data_offset + step.gpa - section.gpa)


# ---- against a launch record: the map_memory calls ---------------------------------------


def _populate_divergence(a: Evidence, b: Evidence, inputs: dict[str, Cause]) -> Divergence | None:
    xs, ys = _populate(a), _populate(b)
    n = _first_difference(xs, ys, _call_differs)
    if n is None:
        if a.measurement == b.measurement:
            return None
        return _finish_divergence(a, b, len(xs), inputs)
    x = xs[n] if n < len(xs) else None
    y = ys[n] if n < len(ys) else None
    # Name the step as the plan or trace does, if one side is not a record.
    named = [s for s in (x, y) if s is not None and s.kind is not StepKind.MAP_MEMORY]
    step = named[0] if named else _present(x, y)
    where = f"populate step {n}: {step.label} at {step.gpa:#x}"
    if x is None or y is None:
        where += f" (only in {'A' if x is not None else 'B'})"
        causes = _relevant(inputs, (*STEP_FIELDS["sev-metadata"], *STEP_FIELDS["td"]))
    else:
        if (x.call_type, x.pages) != (y.call_type, y.pages):
            where += f" ({x.call_type} x{x.pages} vs {y.call_type} x{y.pages})"
        causes = _populate_causes(a, b, x, y, inputs, named=step)
    x, y = _as_call(x), _as_call(y)
    return Divergence(n, x, y, where, _nonempty(causes, x, y, inputs))


def _as_call(step: Step | None) -> Step | None:
    """`step` shown as the map_memory call it is compared as."""
    return None if step is None else step._replace(kind=StepKind.MAP_MEMORY)


def _populate_causes(
    a: Evidence, b: Evidence, x: Step, y: Step, inputs: dict[str, Cause], *, named: Step
) -> list[Cause]:
    """Why the calls `x` and `y` differ; `named` is the one a plan or trace names."""
    section = named.section_type
    if named.kind is StepKind.KERNEL_HASHES or section == "SNP_KERNEL_HASHES":
        known = [inputs[f] for f in STEP_FIELDS["kernel-hashes"] if f in inputs]
        return known or [
            Cause(
                "boot",
                _text(x.contents) or x.call_type,
                _text(y.contents) or y.call_type,
                "the kernel hashes page differs: boot.kernel, boot.initrd or boot.cmdline "
                "(a launch record does not name which)",
            )
        ]
    if section == "TD_HOB":
        meaning = (
            "the TD HOB differs: memory_mib (guest RAM) shapes it; TDVF measures it into "
            "RTMR0, not MRTD"
        )
        return [Cause("memory_mib", *_pair(a, b, "memory_mib", inputs.get("memory_mib")), meaning)]
    firmware = named.kind is StepKind.FIRMWARE or section in ("BFV", "CFV")
    if firmware or (x.page_type is PageType.NORMAL and x.gpa + x.size == FOUR_GIB):
        return _firmware_causes(inputs, x, y, "the firmware's map_memory source differs")
    return _relevant(inputs, (*STEP_FIELDS["sev-metadata"], *STEP_FIELDS["td"]))


def _finish_divergence(
    a: Evidence, b: Evidence, step: int, inputs: dict[str, Cause]
) -> Divergence:
    if a.technology == "tdx":
        where = "the order of the MRTD records (a launch record does not show it)"
        order = inputs.get("tdx.page_order")
        meaning = (
            "every populate step agrees: the order of TDH.MEM.PAGE.ADD and TDH.MR.EXTEND "
            "differs (tdx.page_order)"
        )
        cause = Cause("tdx.page_order", *_pair(a, b, "tdx.page_order", order), meaning)
        return Divergence(step, None, None, where, (cause,))
    if _wrong_digests(a, b):
        # The calls agree, but a precomputed digest stands for the firmware pages they
        # measured, and is not what they measure to.
        where = "the launch digest after the firmware pages (firmware.digest is precomputed)"
        after = _after_firmware(a, b, "not recorded")
        digest = inputs.get(PRECOMPUTED) or Cause(PRECOMPUTED, *after, _digest_meaning(a, b))
        return Divergence(step, None, None, where, (digest,))
    populated = [c for c in inputs.values() if c.field not in STEP_FIELDS["vmsa"]]
    if populated and any(s.contents is None for s in _populate(a) + _populate(b)):
        # The populated pages could not be compared byte for byte: the inputs say more.
        where = "the populated pages (their contents are not in both A and B)"
        return Divergence(step, None, None, where, tuple(populated))
    where = "the vCPU state measured at launch finish (VMSAs; a launch record holds none)"
    meaning = (
        "every populate step agrees: the difference is in the vCPU state (VMSAs) at launch "
        "finish: vcpus, cpu.name/cpu.signature, vmm, snp.guest_features or snp.vmsa_gpa"
    )
    vcpu_state = Cause("vmsa", _vcpu_state(a), _vcpu_state(b), meaning)
    known = _relevant(inputs, STEP_FIELDS["vmsa"])
    if any(PRECOMPUTED in e.inputs and _image_digest(e) is None for e in (a, b)):
        # A precomputed digest that nothing here can check could be the cause too.
        after = _after_firmware(a, b, "not recorded")
        known.append(inputs.get(PRECOMPUTED) or Cause(PRECOMPUTED, *after, _digest_meaning(a, b)))
    return Divergence(step, None, None, where, (vcpu_state, *known))


def _pair(a: Evidence, b: Evidence, field: str, known: Cause | None) -> tuple[str, str]:
    if known is not None:
        return known.a, known.b
    return a.inputs.get(field, "not recorded"), b.inputs.get(field, "not recorded")


def _vcpu_state(e: Evidence) -> str:
    if e.form == "record":
        return "not recorded"
    vmsas = [s for s in e.steps if s.kind is StepKind.VMSA]
    parts = [f"{len(vmsas)} VMSAs"]
    if vmsas and vmsas[0].vmsa is not None:
        regs = vmsas[0].vmsa
        parts += [f"RDX {regs.get('rdx', 0):#x}", f"SEV_FEATURES {regs.get('sev_features', 0):#x}"]
    if "vmm" in e.inputs:
        parts.append(f"vmm {e.inputs['vmm']}")
    return ", ".join(parts)


def _populate(e: Evidence) -> tuple[Step, ...]:
    """The map_memory calls of `e`'s launch: as recorded, as planned, or as traced."""
    if e.form == "record":
        return e.steps
    if e.plan is not None:
        return _planned_calls(e.plan)
    return _traced_calls(e)


def _planned_calls(plan: Plan) -> tuple[Step, ...]:
    from cvmlaunch.launch.steps import plan_steps

    calls = (
        s._replace(contents=None if s.source is None else hashlib.sha256(s.source).digest())
        for s in plan_steps(plan)
    )
    return section_types(plan, (c._replace(source=None) for c in calls))


def _call_key(step: Step) -> tuple[int | None, StepKind | None]:
    """What a traced step's map_memory call is: its operation (a TD: its section)."""
    return step.section, None if step.kind in TD_RECORDS else step.kind


def _traced_calls(e: Evidence) -> tuple[Step, ...]:
    """A trace's steps grouped into map_memory calls: one per operation (TDX: section).

    Contents are known where the trace shows the SHA-256 of a call's source: the firmware
    image (its sha256 input) and, for sev/sev-es, every LAUNCH_UPDATE buffer.
    """
    groups: list[list[Step]] = []
    for s in e.steps:
        if s.kind is StepKind.VMSA:
            continue
        if groups and _call_key(groups[-1][0]) == _call_key(s):
            groups[-1].append(s)
        else:
            groups.append([s])
    calls = []
    for n, group in enumerate(groups):
        first = group[0]
        page_type, action = first.page_type, None
        if e.technology == "tdx":
            extend = any(s.kind is StepKind.MR_EXTEND for s in group)
            action = TdAction.PAGE_ADD_EXTEND if extend else TdAction.PAGE_ADD
            pages = sum(s.kind is StepKind.PAGE_ADD for s in group)
            contents = None
        else:
            pages = sum(s.pages for s in group)
            contents = first.contents if e.technology != "sev-snp" else None
            if first.kind is StepKind.FIRMWARE and not precomputed(first):
                sha = e.inputs.get("firmware.sha256")
                contents = None if sha is None else bytes.fromhex(sha)
        kind = StepKind.TD_SECTION if action is not None else first.kind
        calls.append(
            Step(n, kind, first.label, first.gpa, pages * PAGE_SIZE, page_type, action, contents,
                 section=first.section, section_type=first.section_type)
        )  # fmt: skip
    return tuple(calls)


# ---- inputs ------------------------------------------------------------------------------


def _input_differences(a: Evidence, b: Evidence) -> tuple[Cause, ...]:
    fields = [
        f for f in a.inputs if f in b.inputs and a.inputs[f] != b.inputs[f] and f != PRECOMPUTED
    ]
    tech = a.technology
    causes = [
        Cause(f, a.inputs[f], b.inputs[f], _input_meaning(f, a.inputs[f], b.inputs[f], tech))
        for f in fields
    ]
    digest = _digest_cause(a, b)
    if digest is not None:
        causes.append(digest)
    return tuple(sorted(causes, key=lambda c: (listing_rank(c.field), c.field)))


def _input_meaning(field: str, a: str, b: str, technology: str) -> str:
    row = BY_KEY.get(field)
    if row is not None and row.meaning is not None:
        return row.meaning.format(a=a, b=b, key=field)
    if field == "vcpus":
        tdx = technology == "tdx"
        return f"{a} vs {b} vCPUs" + (" (not part of MRTD)" if tdx else ": one VMSA each")
    if field == "cpu.signature":
        return f"CPU model {_models(int(a, 16))} vs {_models(int(b, 16))}"
    if field == "snp.guest_features":
        return _features(int(a, 16), int(b, 16))
    return f"{field} {a} vs {b}"


def _relevant(inputs: dict[str, Cause], fields: Sequence[str]) -> list[Cause]:
    return [inputs[f] for f in dict.fromkeys(fields) if f in inputs]


def _fields_of(step: Step) -> tuple[str, ...]:
    return STEP_FIELDS.get("td" if step.kind in TD_RECORDS else step.kind, ())


def _nonempty(
    causes: list[Cause], x: Step | None, y: Step | None, inputs: dict[str, Cause]
) -> tuple[Cause, ...]:
    """`causes`, or when nothing names one: every input difference, else the steps."""
    if causes:
        return tuple(causes)
    if inputs:
        return tuple(inputs.values())
    return (Cause("step", _step_text(x), _step_text(y), "the steps differ; no input explains it"),)


def _unexplained(a: Evidence, b: Evidence, inputs: tuple[Cause, ...]) -> Divergence:
    step = min(len(a.steps), len(b.steps))
    meaning = "every compared step agrees, yet the measurements differ"
    causes = inputs or (Cause("measurement", _hex(a.measurement), _hex(b.measurement), meaning),)
    return Divergence(step, None, None, "the final measurement", causes)


# ---- rendering ---------------------------------------------------------------------------


def _text(value: bytes | None) -> str:
    """A digest as hex ("" when there is none)."""
    return "" if value is None else value.hex()


def _name(step: Step) -> str:
    """A step's page type as a trace names it."""
    return str(None) if step.page_type is None else step.page_type.name


def _hex(value: bytes | None) -> str:
    return value.hex() if value is not None else "unknown"


_HEX = re.compile(r"(0x)?[0-9a-f]+")


def _short(value: str) -> str:
    """Long hex (digests, SHA-256s) cut to 16 digits; anything else as it is."""
    return value[:16] + "…" if len(value) > 24 and _HEX.fullmatch(value) else value


def _cause_text(c: Cause) -> str:
    if c.a in c.meaning and c.b in c.meaning:  # the meaning already shows both values
        return f"{c.field}: {c.meaning}"
    return f"{c.field} = {_short(c.a)} vs {_short(c.b)}: {c.meaning}"


def _step_text(s: Step | None) -> str:
    if s is None:
        return "(none)"
    parts = [f"#{s.number} {s.label}", f"gpa {s.gpa:#x}", s.call_type]
    if s.pages > 1:
        parts.append(f"x{s.pages}")
    if s.contents is not None:
        parts.append(f"contents {_short(s.contents.hex())}")
    if s.digest is not None:
        parts.append(f"digest {_short(s.digest.hex())}")
    return ", ".join(parts)


def _step_doc(s: Step | None) -> dict[str, Any] | None:
    if s is None:
        return None
    doc: dict[str, Any] = {
        "index": s.number,
        "kind": s.call_type if s.kind is StepKind.MAP_MEMORY else str(s.kind),
        "label": s.label,
        "gpa": f"{s.gpa:#x}",
        "pages": s.pages,
        "page_type": None if s.page_type is None else s.page_type.name,
        "contents": _text(s.contents) or None,
        "digest": _text(s.digest) or None,
    }
    for key in ("section", "vcpu"):
        if getattr(s, key) is not None:
            doc[key] = getattr(s, key)
    if s.file_offset is not None:
        doc["file_offset"] = f"{s.file_offset:#x}"
    return doc


def _evidence_doc(e: Evidence) -> dict[str, Any]:
    return {
        "source": e.source,
        "form": e.form,
        "technology": e.technology,
        "measurement": None if e.measurement is None else e.measurement.hex(),
        "steps": len(e.steps),
    }


__all__ = ["Cause", "DiffResult", "Divergence", "diff"]
