"""The map-memory primitive: the RFC's KVM_MAP_MEMORY semantics, lowered per kernel and VM.

`map_memory(vcpu, base_gfn, nr_pages, flags, source)` populates `nr_pages` guest pages from
`source` (and, on confidential VMs, has the platform measure them), whatever the kernel
offers (reference/kvm-abi.md §2, DESIGN.md):

| VM / kernel                  | lowering                                                      |
|------------------------------|---------------------------------------------------------------|
| any, RFC-patched kernel      | KVM_MAP_MEMORY (SNP NORMAL pages only: the RFC has no types)  |
| SEV-SNP                      | SET_MEMORY_ATTRIBUTES(PRIVATE), SNP_LAUNCH_UPDATE loop        |
| TDX                          | SET_MEMORY_ATTRIBUTES(PRIVATE), TDX_INIT_MEM_REGION loop      |
| SEV, SEV-ES (no private mem) | copy into the slot's memory, LAUNCH_UPDATE_DATA in place      |
| default VM (rehearsal)       | write through the guest_memfd mapping, then PRE_FAULT if able |

Every partial-progress loop checks that the kernel's report advances exactly by what it
says it did, and continues from there: a page skipped or measured twice changes the digest.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
from typing import Any

from cvmlaunch.abi.kvm import PAGE_SHIFT, PAGE_SIZE, MapFlag, SevCmd, TdxCmd, VmType, ffi
from cvmlaunch.abi.kvm import TDX_MEASURE_MEMORY_REGION as MEASURE
from cvmlaunch.abi.snp import PageType
from cvmlaunch.errors import KvmError
from cvmlaunch.kvm.fd import struct_fields
from cvmlaunch.kvm.objects import Vcpu, Vm
from cvmlaunch.kvm.sys import address
from cvmlaunch.namedtuple import NamedTuple

# Consecutive calls that report success without progress before the loop gives up.
_STALL_LIMIT = 1000


class MapCall(NamedTuple):
    """One map_memory call as it was made: what the kernel was given, and how often."""

    gpa: int
    pages: int
    lowering: str
    page_type: str
    source_sha256: bytes | None
    calls: int
    retries: int

    def to_json(self) -> dict[str, object]:
        return {
            "gpa": f"{self.gpa:#x}",
            "pages": self.pages,
            "type": self.page_type,
            "lowering": self.lowering,
            "source_sha256": self.source_sha256.hex() if self.source_sha256 else None,
            "calls": self.calls,
            "retries": self.retries,
        }


class _Loop:
    """Counts the calls of one partial-progress loop and stops one that makes none."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.retries = 0
        self._stalls = 0

    def issue(self, call: Any) -> bool:
        """Make one call; False if it asked to be repeated (EAGAIN/EINTR, or no progress)."""
        self.calls += 1
        try:
            call()
        except KvmError as e:
            if e.errno not in (errno.EAGAIN, errno.EINTR):
                raise
            self.retries += 1
            return False
        return True

    def progress(self, advanced: bool, fields: dict[str, int]) -> None:
        if advanced:
            self._stalls = 0
            return
        self._stalls += 1
        if self._stalls >= _STALL_LIMIT:
            raise KvmError(self.name, errno.EIO, fields)


def map_memory(
    vcpu: Vcpu,
    base_gfn: int,
    nr_pages: int,
    flags: int = 0,
    source: Any = None,
    *,
    page_type: PageType | None = None,
    measure: bool = True,
) -> MapCall:
    """Populate `nr_pages` pages at `base_gfn` from `source` (None: zero pages).

    `page_type` is the SNP page type (default NORMAL with a source, ZERO without); `measure`
    says whether a TDX section's contents enter MRTD (TDH.MR.EXTEND).
    """
    vm = vcpu.vm
    if flags & ~MapFlag.PRIVATE:
        # The RFC's access flags were dropped upstream: pre-faults act as read faults.
        raise KvmError("map_memory", errno.EINVAL, {"flags": int(flags)})
    view = memoryview(source).cast("B") if source is not None else None
    size = nr_pages << PAGE_SHIFT
    if nr_pages <= 0 or (view is not None and len(view) < size):
        raise KvmError("map_memory", errno.EINVAL, {"nr_pages": nr_pages})
    if view is not None:
        view = view[:size]
        if vm.type in (VmType.SNP, VmType.TDX) and address(view) % PAGE_SIZE:
            view = _page_aligned(view)
    td_style = page_type is None and vm.type in (VmType.TDX, VmType.DEFAULT)
    page_type = page_type or (PageType.NORMAL if view is not None else PageType.ZERO)
    kind = ("page-add+extend" if measure else "page-add") if td_style else page_type.name
    private = bool(flags & MapFlag.PRIVATE)
    if private != (vm.type in (VmType.SNP, VmType.TDX)):
        raise KvmError("map_memory", errno.EINVAL, {"flags": int(flags), "vm_type": vm.type})
    digest = hashlib.sha256(view).digest() if view is not None else None
    gpa = base_gfn << PAGE_SHIFT
    if vm.type is VmType.SNP:
        if (
            vm.capabilities is not None
            and vm.capabilities.map_memory
            and page_type is PageType.NORMAL
        ):
            loop = _rfc(vcpu, base_gfn, nr_pages, view)
        else:
            loop = _snp(vm, gpa, size, view, page_type)
    elif vm.type is VmType.TDX:
        loop = _tdx(vcpu, gpa, nr_pages, view, measure)
    elif vm.type in (VmType.SEV, VmType.SEV_ES):
        loop = _sev(vm, gpa, size, view)
    else:
        loop = _shared(vcpu, gpa, size, view)
    return MapCall(gpa, nr_pages, loop.name, kind, digest, loop.calls, loop.retries)


def _page_aligned(view: memoryview) -> memoryview:
    """A page-aligned copy: SNP `uaddr` and TDX `source_addr` must be 4 KiB aligned."""
    copy = mmap.mmap(-1, len(view))
    copy[:] = view
    return memoryview(copy)


def _zero_source(size: int) -> memoryview:
    return memoryview(mmap.mmap(-1, size))  # page-aligned, and zero pages cost nothing


def _rfc(vcpu: Vcpu, base_gfn: int, nr_pages: int, view: memoryview | None) -> _Loop:
    vcpu.vm.set_private(base_gfn << PAGE_SHIFT, nr_pages << PAGE_SHIFT)
    source = address(view) if view is not None else 0
    request: Any = ffi.new(
        "struct kvm_memory_mapping *",
        {"base_gfn": base_gfn, "nr_pages": nr_pages, "flags": MapFlag.PRIVATE, "source": source},
    )
    loop = _Loop("KVM_MAP_MEMORY")
    end = base_gfn + nr_pages
    while request.nr_pages:
        before = request.nr_pages
        loop.issue(lambda: vcpu.ioctl("KVM_MAP_MEMORY", request))
        done = before - request.nr_pages
        _check_advance(loop.name, request, request.base_gfn + request.nr_pages == end, done >= 0)
        if source and request.source != source + ((request.base_gfn - base_gfn) << PAGE_SHIFT):
            raise KvmError(loop.name, errno.EIO, struct_fields(request))
        loop.progress(done > 0, struct_fields(request))
    return loop


def _snp(vm: Vm, gpa: int, size: int, view: memoryview | None, page_type: PageType) -> _Loop:
    vm.set_private(gpa, size)
    if view is None and page_type is not PageType.ZERO:
        view = _zero_source(size)  # SECRETS/CPUID/UNMEASURED still need a source page
    source = address(view) if view is not None else 0
    update: Any = ffi.new(
        "struct kvm_sev_snp_launch_update *",
        {"gfn_start": gpa >> PAGE_SHIFT, "uaddr": source, "len": size, "type": page_type},
    )
    loop = _Loop("KVM_MEMORY_ENCRYPT_OP(SNP_LAUNCH_UPDATE)")
    end = (gpa + size) >> PAGE_SHIFT
    while update.len:
        before = update.len
        loop.issue(lambda: vm.sev_command(SevCmd.SNP_LAUNCH_UPDATE, update, vm.sev_fd))
        done = before - update.len
        consistent = update.gfn_start + (update.len >> PAGE_SHIFT) == end and done >= 0
        _check_advance(loop.name, update, consistent, update.len % PAGE_SIZE == 0)
        if source and update.uaddr != source + ((update.gfn_start << PAGE_SHIFT) - gpa):
            raise KvmError(loop.name, errno.EIO, struct_fields(update))
        loop.progress(done > 0, struct_fields(update))
    return loop


def _tdx(vcpu: Vcpu, gpa: int, nr_pages: int, view: memoryview | None, measure: bool) -> _Loop:
    vcpu.vm.set_private(gpa, nr_pages << PAGE_SHIFT)
    if view is None:
        view = _zero_source(nr_pages << PAGE_SHIFT)  # TDH.MEM.PAGE.ADD always copies a page
    source = address(view)
    region: Any = ffi.new(
        "struct kvm_tdx_init_mem_region *",
        {"source_addr": source, "gpa": gpa, "nr_pages": nr_pages},
    )
    loop = _Loop("KVM_MEMORY_ENCRYPT_OP(INIT_MEM_REGION)")
    end = gpa + (nr_pages << PAGE_SHIFT)
    flags = MEASURE if measure else 0
    while region.nr_pages:
        before = region.nr_pages
        loop.issue(lambda: vcpu.tdx_command(TdxCmd.INIT_MEM_REGION, region, flags))
        done = before - region.nr_pages
        consistent = region.gpa + (region.nr_pages << PAGE_SHIFT) == end and done >= 0
        _check_advance(
            loop.name, region, consistent, region.source_addr == source + region.gpa - gpa
        )
        loop.progress(done > 0, struct_fields(region))
    return loop


def _sev(vm: Vm, gpa: int, size: int, view: memoryview | None) -> _Loop:
    with vm.memory_at(gpa, size) as memory:
        memory[:] = view if view is not None else bytes(size)
    uaddr = vm.userspace_address(gpa, size)
    update: Any = ffi.new("struct kvm_sev_launch_update_data *", {"uaddr": uaddr, "len": size})
    loop = _Loop("KVM_MEMORY_ENCRYPT_OP(LAUNCH_UPDATE_DATA)")
    # LAUNCH_UPDATE_DATA encrypts in place and has no partial progress to resume.
    if not loop.issue(lambda: vm.sev_command(SevCmd.LAUNCH_UPDATE_DATA, update, vm.sev_fd)):
        raise KvmError(loop.name, errno.EAGAIN, struct_fields(update))
    return loop


def _shared(vcpu: Vcpu, gpa: int, size: int, view: memoryview | None) -> _Loop:
    vm = vcpu.vm
    with vm.memory_at(gpa, size) as memory:
        memory[:] = view if view is not None else bytes(size)
    loop = _Loop("guest_memfd mmap write")
    if vm.capabilities is None or not vm.capabilities.pre_fault_memory:
        return loop
    loop.name = "KVM_PRE_FAULT_MEMORY"
    request: Any = ffi.new("struct kvm_pre_fault_memory *", {"gpa": gpa, "size": size})
    while request.size:
        before = request.size
        loop.issue(lambda: vcpu.ioctl("KVM_PRE_FAULT_MEMORY", request))
        done = before - request.size
        _check_advance(loop.name, request, request.gpa + request.size == gpa + size, done >= 0)
        loop.progress(done > 0, struct_fields(request))
    return loop


def _check_advance(name: str, data: Any, consistent: bool, aligned: bool) -> None:
    """The kernel's in/out struct must still describe the rest of the original range."""
    if not (consistent and aligned):
        raise KvmError(name, errno.EIO, struct_fields(data))
