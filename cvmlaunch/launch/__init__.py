"""Launch: plan → backend → LaunchRecord.

`launch(plan, backend)` runs the plan on real KVM (`kvm`), on the emulated kernel (`sim`), or
as a `rehearsal` (the plan's layout on a default VM of the real kernel, read back by a guest
vCPU), and compares what the platform reports with the expected measurement.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from enum import StrEnum
from typing import Protocol, runtime_checkable

from cvmlaunch.abi.kvm import VmType
from cvmlaunch.errors import FieldProblem, KvmError, LaunchError, ProfileError
from cvmlaunch.kvm import Kernel, Kvm, LinuxKernel
from cvmlaunch.kvm.caps import vm_types
from cvmlaunch.launch.executor import Transcript, run_confidential, run_rehearsal, vm_type_for
from cvmlaunch.launch.record import FirmwareDigests, LaunchRecord, Verdict, divergence
from cvmlaunch.launch.steps import plan_steps
from cvmlaunch.log import get_logger
from cvmlaunch.measure import measure
from cvmlaunch.measure.document import inputs_json
from cvmlaunch.measure.snp import snp_digest
from cvmlaunch.plan.ops import LaunchPlan, Plan, TdPlan
from cvmlaunch.plan.step import StepKind

_log = get_logger("cvmlaunch.launch")


class Backend(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    SIM = "sim"
    REHEARSAL = "rehearsal"


@runtime_checkable
class Attesting(Protocol):
    """A kernel that can say what the platform measured (the emulated one can)."""

    def launch_digest(self, vm_fd: int) -> bytes | None: ...


def launch(
    plan: Plan,
    backend: Backend = Backend.AUTO,
    *,
    kernel: Kernel | None = None,
    sim_host: str | None = None,
) -> LaunchRecord:
    """Launch `plan`; `kernel` replaces the one the backend would use (tests, embedding)."""
    if plan.spec.firmware_descriptor is not None:
        # A descriptor has the image's measured facts, not the bytes to put in guest memory.
        reason = "a launch loads the image itself: give firmware.path (a descriptor measures)"
        raise ProfileError([FieldProblem("firmware.descriptor", reason)])
    if isinstance(plan, LaunchPlan) and plan.igvm is not None:
        _check_igvm_launchable(plan)
    steps = plan_steps(plan)
    expected = measure(plan).digest
    signed = None
    config = plan.spec.id_block
    if config is not None:  # signed, or checked as the firmware will, before any VM exists
        from cvmlaunch.measure.idblock import id_block_for

        signed = id_block_for(config, ld=expected, policy=plan.spec.snp_policy)
    chosen, reason, kernel = _choose(plan, backend, kernel, sim_host)
    _log.info("launch.backend", requested=str(backend), chosen=str(chosen), reason=reason)
    t = Transcript()
    started = time.perf_counter()
    reported = None
    with ExitStack() as memory:
        with t.phase("open"):
            kvm = memory.enter_context(Kvm(kernel))
        if chosen is Backend.REHEARSAL:
            run_rehearsal(kvm, steps, t)
        else:
            vm = run_confidential(kvm, plan, steps, t, memory, id_block=signed)
            if isinstance(kernel, Attesting):
                reported = kernel.launch_digest(vm.fd)
    t.timings["total"] = round(time.perf_counter() - started, 6)
    if reported is None:
        verdict = Verdict.UNATTESTED
    else:
        verdict = Verdict.MATCH if reported == expected else Verdict.MISMATCH
    _log.info("launch.verdict", verdict=str(verdict))
    doc: dict[str, object] = {
        "technology": str(plan.spec.technology),
        "inputs": inputs_json(plan),
        "backend": {"requested": str(backend), "chosen": str(chosen), "reason": reason},
        "vm_type": t.vm_type.name.lower() if t.vm_type is not None else None,
        "host": t.capabilities,
        "memslots": t.memslots,
        "map_memory": [c.to_json() for c in t.calls],
        "expected_measurement": expected.hex(),
        "reported_measurement": reported.hex() if reported is not None else None,
        "verdict": str(verdict),
        "divergence": divergence(steps, t.calls, _firmware_digests(plan))
        if verdict is Verdict.MISMATCH
        else None,
        "timings": t.timings,
    }
    if t.snp_policy is not None:
        doc["snp_policy"] = f"{t.snp_policy:#x}"
        doc["host_data"] = plan.spec.host_data.hex()
    if signed is not None:
        doc["id_block"] = signed.to_json()
    if t.launch_measure is not None:
        doc["launch_measure"] = t.launch_measure.hex()
    if t.readback:
        doc["readback"] = t.readback
    return LaunchRecord(verdict, expected, reported, str(chosen), reason, doc)


def _check_igvm_launchable(plan: LaunchPlan) -> None:
    """Refuse an IGVM guest KVM would measure differently from its file: KVM builds each
    vCPU's VMSA from the registers the VMM sets and measures it at its own GPA, for every
    vCPU, with the SEV_FEATURES INIT2 was given."""
    from cvmlaunch.abi.snp import KVM_VMSA_GPA

    vmsas = [op for op in plan.ops if op.kind is StepKind.VMSA]
    problems = []
    later = [op for op in plan.ops[plan.ops.index(vmsas[0]) :] if op.kind is not StepKind.VMSA] \
        if vmsas else []  # fmt: skip
    if later:
        problems.append(f"{vmsas[0].label} comes before {later[0].label}; KVM measures the "
                        "VMSAs after every page, at SNP_LAUNCH_FINISH")  # fmt: skip
    for op in vmsas:
        if op.gpa != KVM_VMSA_GPA:
            problems.append(f"{op.label}: its VMSA is at GPA {op.gpa:#x}; KVM measures every "
                            f"VMSA at {KVM_VMSA_GPA:#x}")  # fmt: skip
        if op.state is None:
            problems.append(f"{op.label}: its VMSA sets fields KVM does not take from a VMM")
        elif op.state.sev_features != plan.spec.guest_features:
            problems.append(f"{op.label}: its SEV_FEATURES are {op.state.sev_features:#x}, "
                            f"snp.guest_features {plan.spec.guest_features:#x}")  # fmt: skip
    if len(vmsas) != plan.spec.vcpus:
        problems.append(f"the file has {len(vmsas)} VMSA(s) and KVM measures one per vCPU: "
                        f"vcpus is {plan.spec.vcpus}")  # fmt: skip
    if problems:
        raise LaunchError("this IGVM file cannot be launched through KVM as measured: "
                          + "; ".join(problems))  # fmt: skip


def _firmware_digests(plan: Plan) -> FirmwareDigests | None:
    """A precomputed firmware digest, and what the plan's firmware pages measure to."""
    if isinstance(plan, TdPlan) or plan.firmware_digest is None:
        return None
    pages = tuple(op for op in plan.ops if op.kind is StepKind.FIRMWARE)
    measured = snp_digest(plan._replace(ops=pages, firmware_digest=None)).firmware_digest
    return FirmwareDigests(plan.firmware_digest, measured)


def _choose(
    plan: Plan, backend: Backend, kernel: Kernel | None, sim_host: str | None
) -> tuple[Backend, str, Kernel]:
    if sim_host is not None and backend in (Backend.KVM, Backend.REHEARSAL):
        reason = f"plays a host for the emulated kernel; --backend {backend} does not use it"
        raise ProfileError([FieldProblem("--sim-host", reason)])
    if backend is Backend.SIM or (backend is Backend.AUTO and kernel is None and sim_host):
        return Backend.SIM, "the emulated kernel was asked for", kernel or _sim(plan, sim_host)
    if backend is Backend.REHEARSAL:
        return backend, "default VM on the real kernel", kernel or LinuxKernel()
    needed = vm_type_for(plan)
    real = kernel or LinuxKernel()
    offered = _offered(real)
    if needed in offered:
        return Backend.KVM, f"this kernel offers the {needed.name.lower()} VM type", real
    names = ", ".join(sorted(t.name.lower() for t in offered)) or "none (no /dev/kvm)"
    needs = needed.name.lower()
    why = f"this kernel offers VM types [{names}]; {plan.spec.technology} needs {needs}"
    if backend is Backend.KVM:
        raise ProfileError([FieldProblem("--backend", f"kvm: {why}")])
    return Backend.SIM, f"{why}: using the emulated kernel", _sim(plan, sim_host)


def _offered(kernel: Kernel) -> frozenset[VmType]:
    if isinstance(kernel, LinuxKernel) and not os.path.exists("/dev/kvm"):
        return frozenset()
    try:
        with Kvm(kernel) as kvm:
            return frozenset(vm_types(kvm))
    except KvmError:
        return frozenset()


def _sim(plan: Plan, host: str | None) -> Kernel:
    from cvmlaunch.sim import SimKernel  # the emulator loads only when it is used
    from cvmlaunch.sim.hosts import PROFILES, SimHost

    if host is not None and host not in set(SimHost):
        known = ", ".join(SimHost)
        raise ProfileError([FieldProblem("--sim-host", f"expected one of {known}, got {host!r}")])
    chosen = SimHost(host) if host else SimHost.TDX if isinstance(plan, TdPlan) else SimHost.SNP
    needed = vm_type_for(plan)
    if needed not in PROFILES[chosen].vm_types:
        reason = (
            f"the {chosen} host offers no {needed.name.lower()} VM type, which a "
            f"{plan.spec.technology} guest needs"
        )
        raise ProfileError([FieldProblem("--sim-host", reason)])
    return SimKernel(str(chosen))


__all__ = ["Backend", "LaunchRecord", "Verdict", "launch"]
