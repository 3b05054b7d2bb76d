"""KVM_PRE_FAULT_MEMORY: map guest pages into the stage-2 tables without running the vCPU.

kvm-abi.md §1.6: generic checks first (EINVAL), then whether this VM may pre-fault yet
(EOPNOTSUPP), then page by page, where a GPA outside every memslot is ENOENT. Success
means at least one page was mapped; gpa and size are advanced past what was done. Nothing
is copied or measured, so the emulated stage-2 tables hold nothing observable: only the
struct, the errno and the populate page count show what happened.
"""

from __future__ import annotations

import errno

from cvmlaunch.abi.kvm import PAGE_SHIFT, PAGE_SIZE
from cvmlaunch.sim.faults import PageBudget
from cvmlaunch.sim.usercopy import fail, read_struct, write_struct
from cvmlaunch.sim.vm import Vm


def pre_fault(vm: Vm, arg: int, budget: PageBudget) -> int:
    request = read_struct("kvm_pre_fault_memory", arg)
    gpa, size = request.gpa, request.size
    if request.flags or (gpa | size) % PAGE_SIZE or size == 0 or gpa + size >= 1 << 64:
        fail(errno.EINVAL)
    if not vm.pre_fault_allowed:
        fail(errno.EOPNOTSUPP)
    done, stop = 0, None
    while request.size and stop is None:
        gfn = request.gpa >> PAGE_SHIFT
        slot = vm.memory.slot_at(gfn)
        if slot is None:
            stop = errno.ENOENT
            break
        # Whole memslot spans at a time: a multi-GiB pre-fault must not loop per page.
        span = min(request.size >> PAGE_SHIFT, slot.end_gfn - gfn)
        pages = budget.grant(span)
        budget.spend(pages)
        request.gpa += pages << PAGE_SHIFT
        request.size -= pages << PAGE_SHIFT
        done += pages
        if pages < span:
            stop = budget.due()
    if done == 0 and stop is not None:
        fail(stop)
    write_struct(arg, request)
    return 0
