"""The measurement as a story: every measured step grouped into runs (the firmware's
pages, one metadata section, the kernel hashes page, the BSP's VMSA, the APs' VMSAs, one
TDVF section), each with its inputs, the profile fields that cause it, and the running
digest at its end.
"""

from __future__ import annotations

from typing import Any

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature
from cvmlaunch.abi.snp import PAGE_SIZE, sev_feature_names
from cvmlaunch.abi.tdx import TdvfSectionType
from cvmlaunch.analysis.evidence import STEP_FIELDS
from cvmlaunch.guest.spec import Technology, Vmm, firmware_name
from cvmlaunch.measure import Measurement, measure
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.ops import LaunchPlan, PageOp, Plan, TdPageOp, TdPlan
from cvmlaunch.plan.step import Step, StepKind, TdAction


class Run(NamedTuple):
    """A slice of the trace with one cause: its steps, told with their inputs and the
    profile fields behind them."""

    steps: tuple[Step, ...]
    title: str
    gpa: int
    pages: int
    inputs: dict[str, str]
    fields: tuple[str, ...]

    @property
    def first(self) -> int:
        return self.steps[0].number

    @property
    def last(self) -> int:
        return self.steps[-1].number

    @property
    def digest(self) -> bytes:
        """The digest after the run's last step (every traced step has one)."""
        digest = self.steps[-1].digest
        return digest if digest is not None else b""

    def doc(self) -> dict[str, Any]:
        return {
            "steps": [self.first, self.last],
            "title": self.title,
            "gpa": f"{self.gpa:#x}",
            "pages": self.pages,
            "inputs": self.inputs,
            "profile_fields": list(self.fields),
            "digest": self.digest.hex(),
        }


class Explanation(NamedTuple):
    technology: Technology
    measurement: bytes
    runs: tuple[Run, ...]

    def doc(self) -> dict[str, Any]:
        return {
            "technology": str(self.technology),
            "measurement": self.measurement.hex(),
            "runs": [run.doc() for run in self.runs],
        }

    def text(self) -> str:
        lines = [f"{self.technology} measurement {self.measurement.hex()}", ""]
        for n, run in enumerate(self.runs, 1):
            what = "event" if run.steps[0].kind is StepKind.EVENT else "step"
            steps = (
                f"{what} {run.first}" if run.first == run.last else f"steps {run.first}-{run.last}"
            )
            lines.append(f"{n:>3}. {run.title}  [{steps}]")
            lines += [f"       {key}: {value}" for key, value in run.inputs.items()]
            lines.append(f"       from: {', '.join(run.fields)}")
            after = run.digest.hex() or "unknown (a digest before it is not known offline)"
            lines.append(f"       digest after: {after}")
        return "\n".join(lines)


def explain(plan: Plan) -> Explanation:
    """Measure `plan` with a trace and tell it as runs."""
    result = measure(plan, trace=True)
    runs = _td_runs(plan, result) if isinstance(plan, TdPlan) else _sev_runs(plan, result)
    return Explanation(plan.spec.technology, result.digest, tuple(runs))


# ---- SEV, SEV-ES, SEV-SNP ----------------------------------------------------------------


def _sev_runs(plan: LaunchPlan, result: Measurement) -> list[Run]:
    trace = result.trace or ()
    snp = plan.spec.technology is Technology.SEV_SNP
    # (ops, their trace steps); consecutive AP VMSAs form one group: they are one cause.
    groups: list[tuple[list[PageOp], list[Step]]] = []
    pos = 0
    for op in plan.ops:
        if snp:
            precomputed = op.kind is StepKind.FIRMWARE and plan.firmware_digest is not None
            count = 1 if precomputed else op.size // PAGE_SIZE
        else:
            count = 0 if op.data is None else 1
        if count == 0:
            continue
        steps = list(trace[pos : pos + count])
        pos += count
        if groups and _is_ap(op) and _is_ap(groups[-1][0][-1]):
            groups[-1][0].append(op)
            groups[-1][1].extend(steps)
        else:
            groups.append(([op], steps))
    return [_sev_run(plan, ops, steps) for ops, steps in groups]


def _is_ap(op: PageOp) -> bool:
    return op.kind is StepKind.VMSA and op.vcpu not in (None, 0)


def _sev_run(plan: LaunchPlan, ops: list[PageOp], steps: list[Step]) -> Run:
    spec = plan.spec
    op = ops[0]
    pages = -(-sum(o.size for o in ops) // PAGE_SIZE)  # SEV's kernel hashes: part of a page
    fields = STEP_FIELDS[op.kind]
    page_type = op.page_type.name
    inputs: dict[str, str] = {}
    title = f"{op.label}: {op.gpa:#x}-{op.gpa + op.size - 1:#x} {page_type} x{pages}"
    image = plan.firmware
    if op.kind is StepKind.FIRMWARE:
        inputs = {"file": firmware_name(spec), "sha256": plan.firmware_sha256.hex()}
        if image is not None:  # (an IGVM directive's pages are not at one image's offsets)
            base = (1 << 32) - image.size
            offsets = f"{op.gpa - base:#x}-{op.gpa - base + op.size - 1:#x}"
            inputs = {"file": inputs["file"], "file_offsets": offsets, "sha256": inputs["sha256"]}
        if plan.firmware_digest is not None:
            inputs["precomputed_digest"] = plan.firmware_digest.hex()
    elif op.kind is StepKind.SEV_METADATA:
        inputs = {"section": str(op.section), "measured_as": page_type}
    elif op.kind is StepKind.KERNEL_HASHES and plan.kernel_hashes is not None:
        hashes = plan.kernel_hashes
        inputs = {
            "kernel_sha256": hashes.kernel.hex(),
            "initrd_sha256": hashes.initrd.hex(),
            "cmdline_sha256": hashes.cmdline.hex(),
            "cmdline": spec.boot.cmdline if spec.boot is not None else "",
            "contents": _hex(steps[-1].contents),
        }
    elif op.kind is StepKind.VMSA and op.state is not None:
        state = op.state
        last = ops[-1].vcpu
        vcpus = f"vCPU {op.vcpu}" if len(ops) == 1 else f"vCPU {op.vcpu}-{last}"
        title = f"VMSA {vcpus} ({'BSP' if op.vcpu == 0 else 'AP'}) x{len(ops)}"
        if spec.technology is Technology.SEV_SNP:
            title += f" at {op.gpa:#x}"
        else:
            fields = tuple(f for f in fields if not f.startswith("snp."))
        inputs = {
            "vmm": str(spec.vmm),
            "rdx": f"{state.rdx:#x} ({_cpu_text(state.rdx, spec.vmm)})",
            "sev_features": f"{state.sev_features:#x} "
            f"[{', '.join(sev_feature_names(state.sev_features))}]",
            "start": f"CS base {state.cs.base:#x} RIP {state.rip:#x}",
            "page_contents": _hex(steps[-1].contents),
        }
    return Run(tuple(steps), title, op.gpa, pages, inputs, fields)


def _cpu_text(rdx: int, vmm: Vmm) -> str:
    if vmm is not Vmm.QEMU:
        return f"fixed by {vmm}, not the CPU model"
    names = [name for name, fms in CPU_MODELS.items() if cpu_signature(*fms) == rdx]
    return "CPU " + (", ".join(names) if names else "signature not of a named QEMU model")


# ---- TDX -----------------------------------------------------------------------------------


def _td_runs(plan: TdPlan, result: Measurement) -> list[Run]:
    trace = result.trace or ()
    by_section: dict[int | None, list[Step]] = {}
    for step in trace:
        by_section.setdefault(step.section, []).append(step)
    runs = []
    for op in plan.ops:
        steps = by_section.get(op.section)
        if op.action is TdAction.PAGE_AUG or not steps:
            continue
        runs.append(_td_run(plan, op, steps))
    return runs + [_event_run(event) for event in result.events or ()]


def _event_run(event: Step) -> Run:
    """One boot event OVMF extends into an RTMR, with the register after it."""
    from cvmlaunch.abi.eventlog import event_type_name
    from cvmlaunch.measure.rtmr import event_causes

    kind = event_type_name(event.event_type or 0)
    digest = "not known offline" if event.contents is None else event.contents.hex()
    title = f"RTMR{event.rtmr} {kind}: {event.label}"
    return Run((event,), title, 0, 0, {"extends": digest}, event_causes(event))


def _td_run(plan: TdPlan, op: TdPageOp, steps: list[Step]) -> Run:
    section = plan.tdvf.sections[op.section]
    pages = op.size // PAGE_SIZE
    adds = sum(1 for s in steps if s.kind is StepKind.PAGE_ADD)
    extends = len(steps) - adds
    inputs = {
        "section": f"{op.section} {op.section_type.name}",
        "action": str(op.action),
        "records": f"{adds} MEM.PAGE.ADD, {extends} MR.EXTEND",
        "order": str(plan.spec.td_config.page_order),
    }
    if section.raw_size:
        inputs["file_offsets"] = (
            f"{section.data_offset:#x}-{section.data_offset + section.raw_size - 1:#x}"
        )
    if op.section_type is TdvfSectionType.TD_HOB and plan.td_hob is not None:
        inputs["td_hob"] = f"{len(plan.td_hob)} bytes for {plan.spec.memory_mib} MiB of RAM"
    # A section's pages enter MRTD by GPA; only an extended section's contents and record
    # order do (so the TD HOB, and memory_mib with it, only when its section is extended).
    fields: tuple[str, ...] = ("firmware.sha256",)
    if op.action is TdAction.PAGE_ADD_EXTEND:
        fields = ("tdx.page_order", "firmware.sha256", "tdx.raw_data_tail")
        if op.section_type is TdvfSectionType.TD_HOB:
            fields = ("memory_mib", *fields)
    title = f"{op.label}: {op.gpa:#x}-{op.gpa + op.size - 1:#x} {op.action} x{pages}"
    return Run(tuple(steps), title, op.gpa, pages, inputs, fields)


def _hex(value: bytes | None) -> str:
    return "" if value is None else value.hex()
