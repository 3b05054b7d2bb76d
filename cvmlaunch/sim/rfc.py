"""KVM_MAP_MEMORY of the 2024 RFC "KVM: Prepopulate guest memory API", on an SNP VM.

The RFC (kvm-abi.md §2, DESIGN.md "The map-memory primitive") never shipped; the RFC host
profile plays a kernel that carries it. Here it populates like SNP_LAUNCH_UPDATE: each
page of a private guest_memfd range is copied from `source` and measured as a NORMAL page,
or, with no source, zeroed and measured as a ZERO page. It is in/out: on a stop it fails
with the struct advanced past the pages done (-EAGAIN on partial progress), and an empty
request succeeds at once, which is how callers tell this kernel from an upstream one.
"""

from __future__ import annotations

import errno
from typing import Any

from cvmlaunch.abi.kvm import PAGE_SHIFT, PAGE_SIZE, MapFlag, VmType
from cvmlaunch.abi.snp import PageType
from cvmlaunch.sim.faults import PageBudget
from cvmlaunch.sim.memory import GuestMemfd
from cvmlaunch.sim.psp import Psp
from cvmlaunch.sim.sev_guest import GuestState, SevGuest
from cvmlaunch.sim.usercopy import copy_from_user, fail, read_struct, write_struct
from cvmlaunch.sim.vm import Vm

_ZERO_PAGE = bytes(PAGE_SIZE)


def map_memory(vm: Vm, arg: int, psp: Psp, budget: PageBudget) -> int:
    request = read_struct("kvm_memory_mapping", arg)
    if request.nr_pages == 0:
        return 0
    if request.flags != MapFlag.PRIVATE:
        fail(errno.EINVAL)
    sev = vm.sev
    if vm.type is not VmType.SNP or sev is None or sev.state is not GuestState.LUPDATE:
        fail(errno.EINVAL)  # only an SNP launch in progress can measure pages
    if (request.base_gfn + request.nr_pages) << PAGE_SHIFT >= 1 << 64:
        fail(errno.EINVAL)
    psp.firmware_fd(sev.fd)
    try:
        while request.nr_pages:
            _map_one(vm, sev, request, budget)
            request.base_gfn += 1
            request.nr_pages -= 1
            if request.source:
                request.source += PAGE_SIZE
    finally:
        write_struct(arg, request)
    return 0


def _map_one(vm: Vm, sev: SevGuest, request: Any, budget: PageBudget) -> None:
    def fill(gfn: int, gmem: GuestMemfd, index: int) -> None:
        source = request.source
        page = copy_from_user(source, PAGE_SIZE) if source else _ZERO_PAGE
        gmem.write_page(index, page)
        sev.snp_measure(PageType.NORMAL if source else PageType.ZERO, gfn << PAGE_SHIFT, page)

    result = vm.memory.populate(request.base_gfn, 1, budget, fill)
    if result.stop == errno.EEXIST:
        fail(errno.EIO)  # the firmware refuses a page it has measured already
    if result.stop is not None:
        fail(result.stop)
