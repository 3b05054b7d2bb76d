"""The launch sequences, per VM type, in QEMU's order (reference/kvm-abi.md §3.5, §4.3).

Each function creates the VM on an open `Kvm`, builds the memslots, loads the vCPUs, runs
every plan step through `map_memory`, finalizes, and fills in a `Transcript` of what the
kernel was actually given. Nothing here computes a digest: the platform (or the emulated
one) does, and `launch` compares.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from cvmlaunch.abi.kvm import (
    GHCB_VERSION_DEFAULT,
    PAGE_SHIFT,
    GuestMemfdFlag,
    MapFlag,
    VmType,
)
from cvmlaunch.abi.snp import SevFeature
from cvmlaunch.abi.tdx import XFAM_FIXED1, TdvfSectionType
from cvmlaunch.errors import KvmError, LaunchError
from cvmlaunch.firmware.ovmf import GpaRange
from cvmlaunch.guest.spec import Technology
from cvmlaunch.kvm import Kvm, MapCall, Vcpu, Vm, map_memory
from cvmlaunch.launch.layout import free_page, regions
from cvmlaunch.launch.rehearsal import (
    CHECKER_CODE,
    Checksum,
    checksum,
    flat_protected_mode,
    read_back,
)
from cvmlaunch.launch.steps import partial, whole_pages
from cvmlaunch.log import get_logger
from cvmlaunch.plan.ops import LaunchPlan, Plan, TdPlan
from cvmlaunch.plan.step import Step, StepKind, TdAction

if TYPE_CHECKING:
    from cvmlaunch.measure.idblock import SignedIdBlock

_log = get_logger("cvmlaunch.launch")


class Transcript:
    """What a launch did: memslots, map_memory calls, timings, and what the platform said."""

    def __init__(self) -> None:
        self.vm_type: VmType | None = None
        self.capabilities: dict[str, object] = {}
        self.memslots: list[dict[str, object]] = []
        self.calls: list[MapCall] = []
        self.timings: dict[str, float] = {}
        self.launch_measure: bytes | None = None
        self.readback: list[dict[str, object]] = []
        self.snp_policy: int | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase; a kernel failure inside it is named with the phase."""
        start = time.perf_counter()
        _log.info("launch.phase", phase=name)
        try:
            yield
        except KvmError as e:
            raise e.at(name) from None
        finally:
            self.timings[name] = round(time.perf_counter() - start, 6)


def vm_type_for(plan: Plan) -> VmType:
    return {
        Technology.SEV: VmType.SEV,
        Technology.SEV_ES: VmType.SEV_ES,
        Technology.SEV_SNP: VmType.SNP,
        Technology.TDX: VmType.TDX,
    }[plan.spec.technology]


def run_confidential(
    kvm: Kvm,
    plan: Plan,
    steps: list[Step],
    t: Transcript,
    memory: ExitStack,
    *,
    id_block: SignedIdBlock | None = None,
) -> Vm:
    """The real launch of `plan` on a VM of its type; returns the finalized VM.

    `memory` owns the host memory behind the memslots: close it only after the VM.
    `id_block` (SEV-SNP) goes to SNP_LAUNCH_FINISH, which checks it.
    """
    vm_type = vm_type_for(plan)
    t.vm_type = vm_type
    with t.phase("create_vm"):
        vm = kvm.create_vm(vm_type)
    if isinstance(plan, TdPlan):
        _launch_td(vm, plan, steps, t, memory)
    else:
        _launch_sev(vm, plan, steps, t, memory, id_block=id_block)
    return vm


def _memslots(vm: Vm, steps: list[Step], t: Transcript, memory: ExitStack, gmem: bool) -> None:
    """One slot per merged region: guest_memfd-backed and private, or plain (SEV/SEV-ES)."""
    for slot, region in enumerate(regions(steps)):
        shared = memoryview(_anonymous(memory, region.size))
        memory.callback(shared.release)
        backing = vm.create_guest_memfd(region.size, 0) if gmem else None
        created = vm.set_memory_region(slot, region.base, shared, backing)
        if gmem:
            vm.set_private(region.base, region.size)
        t.memslots.append(created.to_json())


def _anonymous(memory: ExitStack, size: int) -> mmap.mmap:
    """Zeroed host memory, allocated lazily by the kernel (so big zero sections are free)."""
    area = mmap.mmap(-1, size)
    memory.callback(area.close)
    return area


def _populate(vcpu: Vcpu, steps: list[Step], t: Transcript, flags: int) -> None:
    for step in steps:
        if partial(step):
            call = _update_data(vcpu.vm, step)
            _log.debug("launch.map_memory", **call.to_json())
            t.calls.append(call)
            continue
        call = map_memory(
            vcpu,
            step.gpa >> PAGE_SHIFT,
            step.pages,
            flags,
            step.source,
            page_type=step.page_type,
            measure=step.action is TdAction.PAGE_ADD_EXTEND,
        )
        _log.debug("launch.map_memory", **call.to_json())
        t.calls.append(call)


def _update_data(vm: Vm, step: Step) -> MapCall:
    """Part of a page populated and measured on an SEV or SEV-ES VM: QEMU hands the 176-byte
    kernel hashes table to LAUNCH_UPDATE_DATA as it is, at its GPA, and the firmware hashes
    those bytes alone (map_memory's lowering takes whole pages, which would measure more).

    Written into the slot's memory, then encrypted in place, as map_memory does for SEV.
    """
    name = "KVM_MEMORY_ENCRYPT_OP(LAUNCH_UPDATE_DATA)"
    if vm.type not in (VmType.SEV, VmType.SEV_ES) or step.source is None:
        raise KvmError(name, errno.EINVAL, {"gpa": step.gpa, "len": step.size})
    data = step.source
    with vm.memory_at(step.gpa, len(data)) as memory:
        memory[:] = data
    vm.sev_launch_update_data(vm.userspace_address(step.gpa, len(data)), len(data))
    page_type = step.page_type.name if step.page_type is not None else "NORMAL"
    sha256 = hashlib.sha256(data).digest()
    return MapCall(step.gpa, step.pages, name, page_type, sha256, 1, 0)


def _launch_sev(
    vm: Vm,
    plan: LaunchPlan,
    steps: list[Step],
    t: Transcript,
    mem: ExitStack,
    *,
    id_block: SignedIdBlock | None,
) -> None:
    spec = plan.spec
    snp = spec.technology is Technology.SEV_SNP
    with t.phase("init"):
        # KVM sets SNPActive itself; INIT2 takes the other SEV_FEATURES.
        features = spec.guest_features & ~(1 << SevFeature.SNP_ACTIVE) if snp else 0
        ghcb = GHCB_VERSION_DEFAULT if spec.technology is not Technology.SEV else 0
        vm.sev_init2(features, ghcb)
        if snp:
            t.snp_policy = spec.snp_policy
            vm.snp_launch_start(t.snp_policy)
        else:
            vm.sev_launch_start(spec.sev_policy)
    with t.phase("memslots"):
        _memslots(vm, steps, t, mem, gmem=snp)
    states = [op.state for op in plan.ops if op.kind is StepKind.VMSA]
    with t.phase("vcpus"):
        vcpus = [vm.create_vcpu(i) for i in range(spec.vcpus)]
        for vcpu, state in zip(vcpus, states, strict=False):
            if state is not None:
                vcpu.load_save_area(state)
        t.capabilities = vm.probe_capabilities(vcpus[0]).to_json()
    with t.phase("populate"):
        _populate(vcpus[0], steps, t, MapFlag.PRIVATE if snp else 0)
    with t.phase("finalize"):
        if snp:
            signed = None
            if id_block is not None:
                signed = (id_block.block, id_block.auth, id_block.author_key_enabled)
            vm.snp_launch_finish(spec.host_data, signed)
            return
        if spec.technology is Technology.SEV_ES:
            vm.sev_launch_update_vmsa()
        t.launch_measure = vm.sev_launch_measure()
        vm.sev_launch_finish()


def _launch_td(vm: Vm, plan: TdPlan, steps: list[Step], t: Transcript, mem: ExitStack) -> None:
    td = plan.spec.td_config
    with t.phase("init"):
        xfam = td.xfam if td.xfam is not None else XFAM_FIXED1
        vm.tdx_init_vm(
            td.attributes,
            xfam,
            mrconfigid=td.mrconfigid,
            mrowner=td.mrowner,
            mrownerconfig=td.mrownerconfig,
        )
    with t.phase("vcpus"):
        hobs = plan.tdvf.of_type(TdvfSectionType.TD_HOB)
        hob_gpa = hobs[0].gpa if hobs else 0
        vcpus = [vm.create_vcpu(i) for i in range(plan.spec.vcpus)]
        for vcpu in vcpus:
            vcpu.tdx_init_vcpu(hob_gpa)
        t.capabilities = vm.probe_capabilities(vcpus[0]).to_json()
    with t.phase("memslots"):
        _memslots(vm, steps, t, mem, gmem=True)
    with t.phase("populate"):
        _populate(vcpus[0], steps, t, MapFlag.PRIVATE)
    with t.phase("finalize"):
        vm.tdx_finalize_vm()


def run_rehearsal(kvm: Kvm, steps: list[Step], t: Transcript) -> Vm:
    """The plan's layout on a default VM, populated through guest_memfd mappings, then read
    back by a guest vCPU; raises LaunchError if any region's checksum differs."""
    t.vm_type = VmType.DEFAULT
    with t.phase("create_vm"):
        vm = kvm.create_vm(VmType.DEFAULT)
    used = regions(steps)
    code_gpa = free_page(used)
    with t.phase("memslots"):
        flags = GuestMemfdFlag.MMAP | GuestMemfdFlag.INIT_SHARED
        for slot, region in enumerate([*used, GpaRange(code_gpa, 1 << PAGE_SHIFT)]):
            gmem = vm.create_guest_memfd(region.size, flags)
            # The slot's userspace_addr is the guest_memfd mapping itself, so every path
            # (MMU and instruction emulator alike) sees the bytes written (kvm-abi.md §5.5).
            created = vm.set_memory_region(slot, region.base, gmem.mmap().view, gmem)
            t.memslots.append(created.to_json())
        with vm.memory_at(code_gpa, len(CHECKER_CODE)) as code:
            code[:] = CHECKER_CODE
    with t.phase("vcpus"):
        vcpu = vm.create_vcpu(0)
        t.capabilities = vm.probe_capabilities(vcpu).to_json()
    with t.phase("populate"):
        # A default VM takes whole pages: part of one is handed over padded to them.
        steps = [whole_pages(step) for step in steps]
        _populate(vcpu, steps, t, 0)
    with t.phase("readback"):
        flat_protected_mode(vcpu)
        _read_back(vcpu, code_gpa, steps, t)
    return vm


def _read_back(vcpu: Vcpu, code_gpa: int, steps: list[Step], t: Transcript) -> None:
    for step in steps:
        size = step.pages << PAGE_SHIFT
        expected = checksum(step.source) if step.source is not None else Checksum(0, 0)
        seen = read_back(vcpu, code_gpa, step.gpa, size)
        t.readback.append(
            {"gpa": f"{step.gpa:#x}", "size": size, "expected": str(expected), "guest": str(seen)}
        )
        if seen != expected:
            raise LaunchError(
                f"rehearsal readback differs for {step.label} at {step.gpa:#x}: the guest "
                f"saw checksum {seen}, the plan says {expected}"
            )
