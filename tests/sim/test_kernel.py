"""The emulated kernel, driven through the ioctl boundary exactly as a caller drives it.

Measurements are checked against small references written here from the specifications
(SNP PAGE_INFO chain, TDX MRTD records, SEV LAUNCH_MEASURE HMAC) and against published VMSA
hashes (reference/snp-measure.md appendix A), never against cvmlaunch.measure.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import mmap
import os
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from cvmlaunch.abi.kvm import IOCTLS, ffi
from cvmlaunch.kvm.sys import Kernel, address
from cvmlaunch.sim import Fault, Partial, SimHost, SimKernel

N = {name: ioctl.number for name, ioctl in IOCTLS.items()}
PAGE = 4096
PRIVATE = 1 << 3
# VM types, SEV and TDX command ids, written out rather than imported: the numbers are
# part of what is under test.
DEFAULT, SEV, SEV_ES, SNP, TDX = 0, 2, 3, 4, 5
INIT2, LAUNCH_START, UPDATE_DATA, UPDATE_VMSA, MEASURE, FINISH = 22, 2, 3, 4, 6, 7
SNP_START, SNP_UPDATE, SNP_FINISH = 100, 101, 102
TDX_INIT_VM, TDX_INIT_VCPU, TDX_INIT_MEM, TDX_FINALIZE = 1, 2, 3, 4
NORMAL, VMSA, ZERO, UNMEASURED, SECRETS, CPUID = 1, 2, 3, 4, 5, 6
GUEST_MEMFD = 4
SNP_POLICY = 0x30000
VMSA_GPA = 0xFFFFFFFFF000
EPYC_SIGNATURE = 0x800F12
AP_RESET = 0x80B004  # the SEV-ES reset block address of the published AP hashes

# SHA-384 of QEMU's VMSA pages (reference/snp-measure.md appendix A; sig 0x800F12).
QEMU_BSP_FEAT_1 = bytes.fromhex(
    "77920c4c629ff47e90c0e174fc1ad0eb6fa664f88cd4739488058a8c6cb1a77b"
    "3856f55378e9518d0da99452d51c553a"
)
QEMU_BSP_FEAT_21 = bytes.fromhex(
    "ae79efa6efbe1594a2717dfd42af495a0e4ed37b00e529a5fdf349bea04c3513"
    "962ffb0c74cf65b0d9a1857271833d6e"
)
QEMU_AP_FEAT_1 = bytes.fromhex(
    "8413b852790765a310d95867a8b00bfca3a802b5a80830044b45e253fe962226"
    "57e11e53fcf63eb0e0afd722385bf7b4"
)
# SHA-256 of the SEV-ES (features 0) QEMU BSP page, the same appendix.
QEMU_SEV_ES_BSP = bytes.fromhex("8295cef559b57130391d59605890ef93297720b48bef9a8c3c985b9c3fb0788c")


# ---- independent references ----------------------------------------------------------


def ref_snp_ld(records: list[tuple[int, int, bytes]]) -> bytes:
    """SNP ABI 56860 PAGE_INFO chain over (page type, gpa, page) records."""
    ld = bytes(48)
    for page_type, gpa, page in records:
        contents = hashlib.sha384(page).digest() if page_type in (NORMAL, VMSA) else bytes(48)
        tail = struct.pack("<HBB4BQ", 0x70, page_type, 0, 0, 0, 0, 0, gpa)
        ld = hashlib.sha384(ld + contents + tail).digest()
    return ld


def ref_mrtd(pages: list[tuple[int, bytes, bool]]) -> bytes:
    """MRTD over (gpa, page, extended) in the order the pages were added."""

    def record(tag: bytes, gpa: int) -> bytes:
        return tag.ljust(16, b"\0") + gpa.to_bytes(8, "little") + bytes(104)

    h = hashlib.sha384()
    for gpa, page, extended in pages:
        h.update(record(b"MEM.PAGE.ADD", gpa))
        for off in range(0, PAGE, 256) if extended else ():
            h.update(record(b"MR.EXTEND", gpa + off) + page[off : off + 256])
    return h.digest()


def ref_vmsa(
    features: int,
    rdx: int = EPYC_SIGNATURE,
    rip: int = 0xFFF0,
    cs_base: int = 0xFFFF0000,
    extra: tuple[tuple[int, str, int], ...] = (),
) -> bytes:
    """A VMSA page from KVM's reset state, at the offsets of APM vol. 2 appendix B."""
    page = bytearray(PAGE)
    segment = struct.Struct("<HHIQ")
    for offset in (0x00, 0x20, 0x30, 0x40, 0x50):  # ES SS DS FS GS
        segment.pack_into(page, offset, 0, 0x93, 0xFFFF, 0)
    segment.pack_into(page, 0x10, 0xF000, 0x9B, 0xFFFF, cs_base)
    for offset, attrib in ((0x60, 0), (0x70, 0x82), (0x80, 0), (0x90, 0x8B)):
        segment.pack_into(page, offset, 0, attrib, 0xFFFF, 0)
    fields = [
        (0xD0, "<Q", 0x1000),
        (0x148, "<Q", 0x40),
        (0x158, "<Q", 0x10),
        (0x160, "<Q", 0x400),
        (0x168, "<Q", 0xFFFF0FF0),
        (0x170, "<Q", 2),
        (0x178, "<Q", rip),
        (0x268, "<Q", 0x0007040600070406),
        (0x310, "<Q", rdx),
        (0x3B0, "<Q", features),
        (0x3E8, "<Q", 1),
        (0x408, "<I", 0x1F80),
        (0x410, "<H", 0x37F),
        *extra,
    ]
    for offset, fmt, value in fields:
        struct.pack_into(fmt, page, offset, value)
    return bytes(page)


def test_the_vmsa_reference_is_the_published_one() -> None:
    assert hashlib.sha384(ref_vmsa(0x1)).digest() == QEMU_BSP_FEAT_1
    ap = ref_vmsa(0x1, rip=AP_RESET & 0xFFFF, cs_base=AP_RESET & 0xFFFF0000)
    assert hashlib.sha384(ap).digest() == QEMU_AP_FEAT_1


# ---- driving the kernel ----------------------------------------------------------------


def fields(data: Any, *names: str) -> tuple[int, ...]:
    return tuple(getattr(data, name) for name in names)


def new(name: str, init: Any = None) -> Any:
    """A zeroed `struct name` the caller owns, as `ffi.new` gives it (typed for field access)."""
    return ffi.new(f"struct {name} *", init)


def errno_of(call: Callable[..., object], *args: Any, **kwargs: Any) -> int:
    """The errno `call(*args, **kwargs)` fails with (it must fail, as the kernel does)."""
    with pytest.raises(OSError) as info:
        call(*args, **kwargs)
    assert info.value.strerror == os.strerror(info.value.errno or 0)
    return info.value.errno or 0


class Machine:
    """A process talking to one SimKernel, with page-aligned memory for its buffers."""

    def __init__(self, host: str = "snp", faults: list[Fault | Partial] | None = None) -> None:
        self.k = SimKernel(host, faults or [])
        self.kvm = self.k.open("/dev/kvm")
        self._memory: list[mmap.mmap] = []

    def ioctl(self, fd: int, name: str, arg: Any = 0) -> int:
        return self.k.ioctl(fd, N[name], address(arg) if isinstance(arg, ffi.CData) else arg)

    def memory(self, data: bytes) -> int:
        """The page-aligned address of a private copy of `data`."""
        area = mmap.mmap(-1, max(len(data), PAGE))
        area[: len(data)] = data
        self._memory.append(area)
        return address(area)

    def vm(self, vm_type: int) -> int:
        return self.ioctl(self.kvm, "KVM_CREATE_VM", vm_type)

    def vcpu(self, vm: int, vcpu_id: int = 0) -> int:
        return self.ioctl(vm, "KVM_CREATE_VCPU", vcpu_id)

    def gmem(self, vm: int, size: int, flags: int = 0) -> int:
        request = new("kvm_create_guest_memfd", {"size": size, "flags": flags})
        return self.ioctl(vm, "KVM_CREATE_GUEST_MEMFD", request)

    def region(
        self, vm: int, slot: int, gpa: int, size: int, gmem: int | None = None, **fields: int
    ) -> int:
        """KVM_SET_USER_MEMORY_REGION2; `gmem` makes it a guest_memfd slot (offset 0 unless
        `guest_memfd_offset` says otherwise)."""
        values = {"slot": slot, "guest_phys_addr": gpa, "memory_size": size}
        if gmem is not None:
            values |= {"flags": GUEST_MEMFD, "guest_memfd": gmem}
        request = new("kvm_userspace_memory_region2", values | fields)
        return self.ioctl(vm, "KVM_SET_USER_MEMORY_REGION2", request)

    def attributes(
        self, vm: int, gpa: int, size: int, attributes: int = PRIVATE, flags: int = 0
    ) -> int:
        request = new(
            "kvm_memory_attributes",
            {"address": gpa, "size": size, "attributes": attributes, "flags": flags},
        )
        return self.ioctl(vm, "KVM_SET_MEMORY_ATTRIBUTES", request)

    def sev(self, vm: int, cmd: int, data: Any = None, sev_fd: int = 0) -> Any:
        command = new(
            "kvm_sev_cmd",
            {"id": cmd, "data": address(data) if data is not None else 0, "sev_fd": sev_fd},
        )
        self.ioctl(vm, "KVM_MEMORY_ENCRYPT_OP", command)
        return command

    def tdx(self, fd: int, cmd: int, data: Any = 0, flags: int = 0, hw_error: int = 0) -> Any:
        value = address(data) if isinstance(data, ffi.CData) else data
        command = new(
            "kvm_tdx_cmd",
            {"id": cmd, "flags": flags, "data": value, "hw_error": hw_error},
        )
        self.ioctl(fd, "KVM_MEMORY_ENCRYPT_OP", command)
        return command

    def regs(self, vcpu: int, **values: int) -> None:
        regs: Any = new("kvm_regs")
        self.ioctl(vcpu, "KVM_GET_REGS", regs)
        for name, value in values.items():
            setattr(regs, name, value)
        self.ioctl(vcpu, "KVM_SET_REGS", regs)

    def pre_fault(self, vcpu: int, gpa: int, size: int, flags: int = 0) -> Any:
        request = new("kvm_pre_fault_memory", {"gpa": gpa, "size": size, "flags": flags})
        self.ioctl(vcpu, "KVM_PRE_FAULT_MEMORY", request)
        return request


GPA = 0x100000  # where the test VMs' private memory starts
# The in/out fields of the populate commands, in the order the assertions list them.
SNP_PROGRESS = ("gfn_start", "uaddr", "len")
TD_PROGRESS = ("source_addr", "gpa", "nr_pages")
MAP_PROGRESS = ("base_gfn", "nr_pages", "source")
SLOT_PAGES = 64


class Snp(NamedTuple):
    m: Machine
    vm: int
    sev: int
    gmem: int
    vcpus: list[int]


def snp_vm(
    host: str = "snp",
    *,
    faults: list[Fault | Partial] | None = None,
    vcpus: int = 1,
    features: int = 0,
    start: bool = True,
    gmem_flags: int = 0,
) -> Snp:
    """An SNP VM after INIT2 (and SNP_LAUNCH_START), one private guest_memfd slot at GPA."""
    m = Machine(host, faults)
    vm = m.vm(SNP)
    sev = m.k.open("/dev/sev")
    m.sev(vm, INIT2, new("kvm_sev_init", {"vmsa_features": features}), sev)
    if start:
        m.sev(
            vm,
            SNP_START,
            new("kvm_sev_snp_launch_start", {"policy": SNP_POLICY}),
            sev,
        )
    gmem = m.gmem(vm, SLOT_PAGES * PAGE, gmem_flags)
    m.region(vm, 0, GPA, SLOT_PAGES * PAGE, gmem)
    m.attributes(vm, GPA, SLOT_PAGES * PAGE)
    ids = [m.vcpu(vm, i) for i in range(vcpus)]
    for fd in ids:
        m.regs(fd, rdx=EPYC_SIGNATURE)
    return Snp(m, vm, sev, gmem, ids)


def snp_update(s: Snp, gpa: int, page_type: int, data: bytes = b"", pages: int = 0) -> Any:
    update: Any = new(
        "kvm_sev_snp_launch_update",
        {
            "gfn_start": gpa // PAGE,
            "uaddr": s.m.memory(data) if data else 0,
            "len": len(data) or pages * PAGE,
            "type": page_type,
        },
    )
    s.m.sev(s.vm, SNP_UPDATE, update, s.sev)
    return update


def snp_finish(s: Snp) -> bytes:
    s.m.sev(s.vm, SNP_FINISH, new("kvm_sev_snp_launch_finish"), s.sev)
    digest = s.m.k.launch_digest(s.vm)
    assert digest is not None
    return digest


def vmsa_records(*pages: bytes) -> list[tuple[int, int, bytes]]:
    return [(VMSA, VMSA_GPA, page) for page in pages]


def random_pages(n: int) -> bytes:
    return os.urandom(n * PAGE)


# ---- hosts, VM types, capabilities ------------------------------------------------------


CAPS = {
    "USER_MEMORY2": 231,
    "MEMORY_FAULT_INFO": 232,
    "MEMORY_ATTRIBUTES": 233,
    "GUEST_MEMFD": 234,
    "VM_TYPES": 235,
    "PRE_FAULT_OR_MAP_MEMORY": 236,
    "GUEST_MEMFD_FLAGS": 244,
    "NR_MEMSLOTS": 10,
    "UNKNOWN": 200,
}
SYSTEM_CAPS = {
    "USER_MEMORY2": 1,
    "MEMORY_FAULT_INFO": 1,
    "MEMORY_ATTRIBUTES": PRIVATE,
    "GUEST_MEMFD": 1,
    "PRE_FAULT_OR_MAP_MEMORY": 1,
    "GUEST_MEMFD_FLAGS": 3,
    "NR_MEMSLOTS": 32764,
    "UNKNOWN": 0,
}


@pytest.mark.parametrize(
    ("host", "types"), [("snp", 0b11101), ("rfc", 0b11101), ("tdx", 0b100001)]
)
def test_system_scope_answers(host: str, types: int) -> None:
    m = Machine(host)
    assert m.ioctl(m.kvm, "KVM_GET_API_VERSION") == 12
    assert m.ioctl(m.kvm, "KVM_GET_VCPU_MMAP_SIZE") == 3 * PAGE
    assert m.ioctl(m.kvm, "KVM_CHECK_EXTENSION", CAPS["VM_TYPES"]) == types
    for name, value in SYSTEM_CAPS.items():
        assert m.ioctl(m.kvm, "KVM_CHECK_EXTENSION", CAPS[name]) == value, name
    for vm_type in range(8):
        if types >> vm_type & 1:
            assert m.vm(vm_type) >= 1000
        else:
            assert errno_of(m.vm, vm_type) == errno.EINVAL


@pytest.mark.parametrize(
    ("host", "vm_type", "attributes", "gmem_flags"),
    [
        ("snp", DEFAULT, 0, 3),
        ("snp", SEV, 0, 3),
        ("snp", SEV_ES, 0, 3),
        ("snp", SNP, PRIVATE, 1),
        ("rfc", SNP, PRIVATE, 1),
        ("tdx", DEFAULT, 0, 3),
        ("tdx", TDX, PRIVATE, 1),
    ],
)
def test_vm_scope_answers(host: str, vm_type: int, attributes: int, gmem_flags: int) -> None:
    m = Machine(host)
    vm = m.vm(vm_type)
    assert m.ioctl(vm, "KVM_CHECK_EXTENSION", CAPS["MEMORY_ATTRIBUTES"]) == attributes
    assert m.ioctl(vm, "KVM_CHECK_EXTENSION", CAPS["GUEST_MEMFD_FLAGS"]) == gmem_flags
    assert m.ioctl(vm, "KVM_CHECK_EXTENSION", CAPS["PRE_FAULT_OR_MAP_MEMORY"]) == 1
    assert m.ioctl(vm, "KVM_CHECK_EXTENSION", CAPS["NR_MEMSLOTS"]) == 32764
    assert m.ioctl(vm, "KVM_CHECK_EXTENSION", CAPS["UNKNOWN"]) == 0


@pytest.mark.parametrize(("host", "has_sev"), [("snp", True), ("rfc", True), ("tdx", False)])
def test_dev_sev_exists_on_amd_hosts_only(host: str, has_sev: bool) -> None:
    m = Machine(host)
    if has_sev:
        assert m.k.open("/dev/sev") >= 1000
    else:
        assert errno_of(lambda: m.k.open("/dev/sev")) == errno.ENOENT
    assert errno_of(lambda: m.k.open("/dev/tdx_guest")) == errno.ENOENT
    assert SimHost(host) is m.k.host


@pytest.mark.parametrize(("host", "rfc"), [("snp", False), ("tdx", False), ("rfc", True)])
def test_the_rfc_ioctl_answers_only_on_the_rfc_host(host: str, rfc: bool) -> None:
    m = Machine(host)
    vcpu = m.vcpu(m.vm(DEFAULT))
    empty = new("kvm_memory_mapping")  # the caller's probe: nothing to map
    if rfc:
        assert m.ioctl(vcpu, "KVM_MAP_MEMORY", empty) == 0
        # Upstream's PRE_FAULT_MEMORY is an unknown vCPU ioctl there.
        assert errno_of(lambda: m.pre_fault(vcpu, 0, PAGE)) == errno.EINVAL
    else:
        assert errno_of(lambda: m.ioctl(vcpu, "KVM_MAP_MEMORY", empty)) == errno.EINVAL


def test_unknown_ioctls_fail_as_kvm_fallbacks_do() -> None:
    m = Machine()
    vm = m.vm(DEFAULT)
    vcpu, gmem, sev = m.vcpu(vm), m.gmem(vm, PAGE), m.k.open("/dev/sev")
    assert errno_of(lambda: m.ioctl(m.kvm, "KVM_CREATE_VCPU", 0)) == errno.EINVAL
    assert errno_of(lambda: m.ioctl(m.kvm, "KVM_GET_API_VERSION", 1)) == errno.EINVAL
    assert errno_of(lambda: m.ioctl(vm, "KVM_GET_REGS", 0)) == errno.ENOTTY
    assert errno_of(lambda: m.ioctl(vm, "KVM_PRE_FAULT_MEMORY", 0)) == errno.ENOTTY
    assert errno_of(lambda: m.ioctl(vcpu, "KVM_CREATE_VCPU", 1)) == errno.EINVAL
    assert errno_of(lambda: m.ioctl(gmem, "KVM_CHECK_EXTENSION", 1)) == errno.ENOTTY
    assert errno_of(lambda: m.ioctl(sev, "KVM_CHECK_EXTENSION", 1)) == errno.EINVAL
    assert errno_of(lambda: m.ioctl(4242, "KVM_CHECK_EXTENSION", 1)) == errno.EBADF
    assert errno_of(lambda: m.ioctl(vcpu, "KVM_RUN")) == errno.ENOSYS


# ---- guest_memfd ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vm_type", "size", "flags"),
    [
        (DEFAULT, 0, 0),
        (DEFAULT, 4095, 0),
        (DEFAULT, 4097, 0),
        (DEFAULT, 2**64 - PAGE, 0),
        (DEFAULT, PAGE, 1 << 2),
        (DEFAULT, PAGE, 1 << 63),
        (SNP, PAGE, 2),
        (SNP, PAGE, 3),
    ],
)
def test_create_guest_memfd_rejections(vm_type: int, size: int, flags: int) -> None:
    m = Machine()
    vm = m.vm(vm_type)
    assert errno_of(lambda: m.gmem(vm, size, flags)) == errno.EINVAL


def test_create_guest_memfd_accepts_what_the_vm_reports() -> None:
    m = Machine()
    fds = {m.gmem(m.vm(DEFAULT), 1 << 40, 3), m.gmem(m.vm(SNP), PAGE, 1)}  # 1 TiB: sparse
    reserved = new("kvm_create_guest_memfd", {"size": PAGE, "reserved": [1] * 6})
    fds.add(m.ioctl(m.vm(SEV_ES), "KVM_CREATE_GUEST_MEMFD", reserved))  # not checked upstream
    assert len(fds) == 3 and fds <= m.k.open_fds()


def test_guest_memfd_mapping_is_a_shared_view_of_the_file() -> None:
    m = Machine()
    vm = m.vm(DEFAULT)
    gmem = m.gmem(vm, 4 * PAGE, 3)
    whole = m.k.mmap(gmem, 4 * PAGE)
    part = m.k.mmap(gmem, PAGE, 2 * PAGE)
    whole.view[2 * PAGE : 2 * PAGE + 5] = b"hello"
    assert bytes(part.view[:5]) == b"hello"
    assert part.address == whole.address + 2 * PAGE and whole.address % PAGE == 0
    assert bytes(ffi.buffer(ffi.cast("char *", part.address), 5)) == b"hello"
    part.close()
    whole.close()
    assert errno_of(lambda: m.k.mmap(gmem, PAGE, 4 * PAGE)) == errno.EINVAL  # past the end
    assert errno_of(lambda: m.k.mmap(gmem, 5 * PAGE)) == errno.EINVAL
    assert errno_of(lambda: m.k.mmap(gmem, PAGE, 100)) == errno.EINVAL
    assert errno_of(lambda: m.k.mmap(m.gmem(vm, PAGE, 0), PAGE)) == errno.ENODEV
    assert errno_of(lambda: m.k.mmap(vm, PAGE)) == errno.ENODEV


def test_vcpu_mapping_is_the_kvm_run_area() -> None:
    m = Machine()
    vcpu = m.vcpu(m.vm(DEFAULT))
    size = m.ioctl(m.kvm, "KVM_GET_VCPU_MMAP_SIZE")
    run = m.k.mmap(vcpu, size)
    assert len(run.view) == size and bytes(run.view[:64]) == bytes(64)
    assert errno_of(lambda: m.k.mmap(vcpu, size + 1)) == errno.EINVAL


def test_populate_writes_the_source_into_the_guest_memfd() -> None:
    s = snp_vm(gmem_flags=1)
    data = random_pages(2)
    snp_update(s, GPA + PAGE, NORMAL, data)
    snp_update(s, GPA + 3 * PAGE, ZERO, pages=1)
    view = s.m.k.mmap(s.gmem, 4 * PAGE).view
    assert bytes(view[PAGE : 3 * PAGE]) == data
    assert bytes(view[3 * PAGE :]) == bytes(PAGE)


# ---- memslots ---------------------------------------------------------------------------


class Slots(NamedTuple):
    m: Machine
    vm: int
    gmem: int  # 1 MiB, bound at offset 0 by slot 0 (GPA 0, 256 KiB)
    other_vm_gmem: int


def slots() -> Slots:
    m = Machine()
    vm = m.vm(DEFAULT)
    gmem = m.gmem(vm, 1 << 20)
    m.region(vm, 0, 0, 1 << 18, gmem)
    return Slots(m, vm, gmem, m.gmem(m.vm(DEFAULT), 1 << 20))


def _closed_fd(s: Slots) -> int:
    fd = s.m.gmem(s.vm, PAGE)
    s.m.k.close(fd)
    return fd


# Slot 1 requests (gmem-backed unless flags say otherwise) and what KVM says to them.
REGION_CASES: dict[str, tuple[Callable[[Slots], dict[str, int]], int]] = {
    "gpa overlap": (
        lambda s: {"guest_phys_addr": 1 << 17, "guest_memfd_offset": 1 << 19},
        errno.EEXIST,
    ),
    "plain slot over gmem gpa": (lambda s: {"flags": 0, "guest_phys_addr": 1 << 17}, errno.EEXIST),
    "gmem range overlap": (lambda s: {"guest_memfd_offset": 1 << 17}, errno.EINVAL),
    "gpa unaligned": (lambda s: {"guest_phys_addr": (1 << 20) + 1}, errno.EINVAL),
    "size unaligned": (lambda s: {"memory_size": PAGE + 1}, errno.EINVAL),
    "uaddr unaligned": (lambda s: {"userspace_addr": 0x10000001}, errno.EINVAL),
    "uaddr in the kernel": (lambda s: {"userspace_addr": 0xFFFF800000000000}, errno.EINVAL),
    "offset unaligned": (lambda s: {"guest_memfd_offset": (1 << 19) + 8}, errno.EINVAL),
    "offset+size past the file": (
        lambda s: {"guest_memfd_offset": (1 << 20) - PAGE, "memory_size": 2 * PAGE},
        errno.EINVAL,
    ),
    "offset beyond the file": (lambda s: {"guest_memfd_offset": 2 << 20}, errno.EINVAL),
    "offset wraps": (
        lambda s: {"guest_memfd_offset": 2**64 - PAGE, "memory_size": 2 * PAGE},
        errno.EINVAL,
    ),
    "gmem fd -1": (lambda s: {"guest_memfd": 0xFFFFFFFF}, errno.EBADF),
    "gmem fd closed": (lambda s: {"guest_memfd": _closed_fd(s)}, errno.EBADF),
    "not a guest_memfd": (lambda s: {"guest_memfd": s.m.kvm}, errno.EINVAL),
    "another VM's guest_memfd": (lambda s: {"guest_memfd": s.other_vm_gmem}, errno.EINVAL),
    "GUEST_MEMFD|READONLY": (lambda s: {"flags": GUEST_MEMFD | 2}, errno.EINVAL),
    "GUEST_MEMFD|LOG_DIRTY": (lambda s: {"flags": GUEST_MEMFD | 1}, errno.EINVAL),
    "unknown flag": (lambda s: {"flags": GUEST_MEMFD | 8}, errno.EINVAL),
    "slot past NR_MEMSLOTS": (lambda s: {"slot": 32764}, errno.EINVAL),
    "address space 1": (lambda s: {"slot": 1 | 1 << 16}, errno.EINVAL),
    "delete a missing slot": (lambda s: {"memory_size": 0}, errno.EINVAL),
    "gpa wraps": (
        lambda s: {"guest_phys_addr": 2**64 - PAGE, "memory_size": 2 * PAGE},
        errno.EINVAL,
    ),
    "modify a gmem slot": (
        lambda s: {
            "slot": 0,
            "guest_phys_addr": 0,
            "memory_size": 1 << 18,
            "guest_memfd_offset": 0,
        },
        errno.EINVAL,
    ),
    "gmem slot to plain": (
        lambda s: {"slot": 0, "flags": 0, "guest_phys_addr": 0, "memory_size": 1 << 18},
        errno.EINVAL,
    ),
}


@pytest.mark.parametrize("case", REGION_CASES)
def test_memory_region_rejections(case: str) -> None:
    s = slots()
    fields, expected = REGION_CASES[case]
    request = {"guest_phys_addr": 1 << 20, "memory_size": 1 << 18, "guest_memfd_offset": 1 << 19}
    request |= fields(s)
    gmem = s.gmem if request.get("flags", GUEST_MEMFD) & GUEST_MEMFD else None
    slot = request.pop("slot", 1)
    gpa, size = request.pop("guest_phys_addr"), request.pop("memory_size")
    assert errno_of(s.m.region, s.vm, slot, gpa, size, gmem, **request) == expected
    # Nothing changed: the range the request wanted is still free for a valid slot 1.
    assert s.m.region(s.vm, 1, 1 << 20, 1 << 18, s.gmem, guest_memfd_offset=1 << 19) == 0


def test_read_only_slots_only_where_state_is_not_protected() -> None:
    m = Machine()
    assert m.region(m.vm(DEFAULT), 0, 0, PAGE, flags=2) == 0
    assert m.region(m.vm(SEV), 0, 0, PAGE, flags=2) == 0
    for vm_type in (SEV_ES, SNP):
        vm = m.vm(vm_type)
        assert errno_of(m.region, vm, 0, 0, PAGE, flags=2) == errno.EINVAL


def test_a_bound_guest_memfd_outlives_its_fd_and_slots_can_be_recreated() -> None:
    s = snp_vm()
    s.m.k.close(s.gmem)
    assert s.gmem not in s.m.k.open_fds()
    snp_update(s, GPA, NORMAL, random_pages(1))  # the slot still reaches the file
    s.m.region(s.vm, 0, GPA, 0)  # delete
    assert errno_of(lambda: s.m.region(s.vm, 0, GPA, 0)) == errno.EINVAL
    # Re-created over the same range of a new file, the old page is gone with the old file.
    gmem = s.m.gmem(s.vm, SLOT_PAGES * PAGE)
    s.m.region(s.vm, 0, GPA, SLOT_PAGES * PAGE, gmem)
    assert snp_update(s, GPA, NORMAL, random_pages(1)).len == 0


def test_a_guest_memfd_range_unbound_by_delete_can_be_bound_again() -> None:
    s = slots()
    assert s.m.region(s.vm, 0, 0, 0) == 0
    assert s.m.region(s.vm, 3, 1 << 30, 1 << 18, s.gmem) == 0


def test_plain_slots_move_but_do_not_resize() -> None:
    m = Machine()
    vm = m.vm(DEFAULT)
    m.region(vm, 0, 0, 2 * PAGE, userspace_addr=0x10000000)
    m.region(vm, 1, 8 * PAGE, PAGE)
    assert m.region(vm, 0, 4 * PAGE, 2 * PAGE, userspace_addr=0x10000000) == 0  # moved
    uaddr = 0x10000000
    assert errno_of(m.region, vm, 0, 8 * PAGE, 2 * PAGE, userspace_addr=uaddr) == errno.EEXIST
    assert errno_of(m.region, vm, 0, 4 * PAGE, 4 * PAGE, userspace_addr=uaddr) == errno.EINVAL
    assert m.region(vm, 2, 0, 4 * PAGE) == 0  # the old place is free


# ---- memory attributes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vm_type", "gpa", "size", "attributes", "flags"),
    [
        (SNP, 1, PAGE, PRIVATE, 0),
        (SNP, 0, PAGE + 1, PRIVATE, 0),
        (SNP, 0, 0, PRIVATE, 0),
        (SNP, 0, PAGE, PRIVATE, 1),
        (SNP, 0, PAGE, 1 << 4, 0),
        (SNP, 2**64 - PAGE, 2 * PAGE, 0, 0),
        (DEFAULT, 0, PAGE, PRIVATE, 0),
        (SEV_ES, 0, PAGE, PRIVATE, 0),
    ],
)
def test_memory_attribute_rejections(
    vm_type: int, gpa: int, size: int, attributes: int, flags: int
) -> None:
    m = Machine()
    vm = m.vm(vm_type)
    assert errno_of(lambda: m.attributes(vm, gpa, size, attributes, flags)) == errno.EINVAL


def test_clearing_private_makes_populate_stop_there() -> None:
    s = snp_vm()
    assert s.m.attributes(s.vm, GPA + 2 * PAGE, PAGE, 0) == 0
    assert s.m.attributes(s.m.vm(DEFAULT), 0, PAGE, 0) == 0  # nothing to clear is fine
    data = random_pages(4)
    update = snp_update(s, GPA, NORMAL, data)
    # kvm_gmem_populate: the pages before the shared one count as progress.
    assert (update.gfn_start, update.len) == (GPA // PAGE + 2, 2 * PAGE)
    cmd = new(
        "kvm_sev_cmd",
        {"id": SNP_UPDATE, "data": address(update), "sev_fd": s.sev, "error": 7},
    )
    assert errno_of(lambda: s.m.ioctl(s.vm, "KVM_MEMORY_ENCRYPT_OP", cmd)) == errno.EIO
    assert cmd.error == 0  # refused by KVM before any firmware call
    s.m.attributes(s.vm, GPA + 2 * PAGE, PAGE)
    s.m.sev(s.vm, SNP_UPDATE, update, s.sev)
    records = [(NORMAL, GPA + i * PAGE, data[i * PAGE : (i + 1) * PAGE]) for i in range(4)]
    assert snp_finish(s) == ref_snp_ld(records + vmsa_records(ref_vmsa(1)))


def test_private_but_unpopulated_pages_stay_out_of_the_measurement() -> None:
    s = snp_vm()
    data = random_pages(1)
    snp_update(s, GPA + 10 * PAGE, NORMAL, data)  # GPA .. +10 pages: private, never populated
    digest = snp_finish(s)
    assert digest == ref_snp_ld([(NORMAL, GPA + 10 * PAGE, data), *vmsa_records(ref_vmsa(1))])
    # After the launch those pages can be faulted in (and a populated one too).
    assert s.m.pre_fault(s.vcpus[0], GPA, 11 * PAGE).size == 0
    assert s.m.k.launch_digest(s.vm) == digest


# ---- vCPUs ------------------------------------------------------------------------------


def test_a_new_vcpu_is_in_kvms_reset_state() -> None:
    m = Machine()
    vcpu = m.vcpu(m.vm(DEFAULT))
    regs: Any = new("kvm_regs")
    sregs: Any = new("kvm_sregs")
    fpu: Any = new("kvm_fpu")
    m.ioctl(vcpu, "KVM_GET_REGS", regs)
    m.ioctl(vcpu, "KVM_GET_SREGS", sregs)
    m.ioctl(vcpu, "KVM_GET_FPU", fpu)
    assert (regs.rip, regs.rflags, regs.rdx, regs.rax, regs.rsp) == (0xFFF0, 2, 0x600, 0, 0)
    segment = ("selector", "base", "limit", "type", "s", "present", "dpl")
    code, data = (0xF000, 0xFFFF0000, 0xFFFF, 0xB, 1, 1, 0), (0, 0, 0xFFFF, 3, 1, 1, 0)
    assert fields(sregs.cs, *segment) == code
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        assert fields(seg, *segment) == data
    assert fields(sregs.ldt, "type", "present", "s") == (2, 1, 0)
    assert fields(sregs.tr, "type", "present", "s") == (0xB, 1, 0)
    assert fields(sregs, "cr0", "cr3", "cr4", "efer") == (0x60000010, 0, 0, 0)
    assert (sregs.gdt.limit, sregs.idt.limit) == (0xFFFF, 0xFFFF)
    assert (fpu.fcw, fpu.mxcsr, fpu.fsw) == (0x37F, 0x1F80, 0)


def test_register_state_round_trips() -> None:
    m = Machine()
    vcpu = m.vcpu(m.vm(DEFAULT))
    m.regs(vcpu, rax=1, r15=2, rip=3)
    regs: Any = new("kvm_regs")
    m.ioctl(vcpu, "KVM_GET_REGS", regs)
    assert (regs.rax, regs.r15, regs.rip, regs.rflags) == (1, 2, 3, 2)
    sregs: Any = new("kvm_sregs")
    m.ioctl(vcpu, "KVM_GET_SREGS", sregs)
    sregs.cr4, sregs.cs.base = 0x20, 0x1000
    m.ioctl(vcpu, "KVM_SET_SREGS", sregs)
    again: Any = new("kvm_sregs")
    m.ioctl(vcpu, "KVM_GET_SREGS", again)
    assert (again.cr4, again.cs.base, again.cs.selector) == (0x20, 0x1000, 0xF000)


def test_set_msrs_counts_what_it_set_and_refuses_a_bad_pat() -> None:
    m = Machine()
    vcpu = m.vcpu(m.vm(DEFAULT))

    def set_msrs(*entries: tuple[int, int]) -> int:
        msrs = new(
            "kvm_msrs",
            {"nmsrs": len(entries), "entries": [(i, 0, v) for i, v in entries]},
        )
        return m.ioctl(vcpu, "KVM_SET_MSRS", msrs)

    assert set_msrs((0x277, 0x0006060606060606), (0x10, 5)) == 2
    assert set_msrs((0x10, 5), (0x277, 0x0202020202020202), (0x277, 0)) == 1  # type 2 is reserved
    assert set_msrs((0x277, 0x08)) == 0
    too_many = new("kvm_msrs", {"nmsrs": 256, "entries": 256})
    assert errno_of(lambda: m.ioctl(vcpu, "KVM_SET_MSRS", too_many)) == errno.E2BIG


def test_the_pat_msr_reaches_the_vmsa() -> None:
    s = snp_vm()
    msrs = new("kvm_msrs", {"nmsrs": 1, "entries": [(0x277, 0, 0x00070106)]})
    assert s.m.ioctl(s.vcpus[0], "KVM_SET_MSRS", msrs) == 1
    pat = ref_vmsa(1, extra=((0x268, "<Q", 0x00070106),))
    assert snp_finish(s) == ref_snp_ld(vmsa_records(pat))


def test_vcpu_creation_rejections() -> None:
    m = Machine()
    vm = m.vm(DEFAULT)
    m.vcpu(vm, 3)
    assert errno_of(lambda: m.vcpu(vm, 3)) == errno.EEXIST
    assert errno_of(lambda: m.vcpu(vm, 4096)) == errno.EINVAL
    assert m.vcpu(vm, 4095) >= 1000


# ---- SEV-SNP ----------------------------------------------------------------------------


def test_snp_launch_digest_is_the_page_info_chain_of_what_was_handed_over() -> None:
    s = snp_vm(vcpus=2, features=0x20)
    ap = s.vcpus[1]
    sregs: Any = new("kvm_sregs")
    s.m.ioctl(ap, "KVM_GET_SREGS", sregs)
    sregs.cs.base, sregs.cr3 = AP_RESET & 0xFFFF0000, 0x5000
    sregs.es.avl, sregs.ss.dpl, sregs.gs.unusable = 1, 3, 1
    sregs.fs.db, sregs.fs.g, sregs.fs.l = 1, 1, 1
    s.m.ioctl(ap, "KVM_SET_SREGS", sregs)
    s.m.regs(ap, rip=AP_RESET & 0xFFFF, rax=0xAA, rbp=0xBB, r8=0xCC, r15=0xDD)
    code, table = random_pages(3), random_pages(1)
    cpuid, secrets_page = random_pages(1), random_pages(1)
    records = []
    for gpa, page_type, data, pages in (
        (GPA + 8 * PAGE, NORMAL, code, 0),
        (GPA, ZERO, b"", 2),
        (GPA + 2 * PAGE, UNMEASURED, table, 0),
        (GPA + 3 * PAGE, SECRETS, secrets_page, 0),
        (GPA + 4 * PAGE, CPUID, cpuid, 0),
    ):
        assert s.m.k.launch_digest(s.vm) is None
        update = snp_update(s, gpa, page_type, data, pages)
        assert update.len == 0
        count = len(data) // PAGE or pages
        records += [
            (page_type, gpa + i * PAGE, data[i * PAGE : (i + 1) * PAGE]) for i in range(count)
        ]
    ap_vmsa = ref_vmsa(
        0x21,
        rip=AP_RESET & 0xFFFF,
        cs_base=AP_RESET & 0xFFFF0000,
        extra=(
            (0x150, "<Q", 0x5000),
            (0x002, "<H", 0x193),  # ES: AVL
            (0x022, "<H", 0xF3),  # SS: DPL 3, which is also the CPL
            (0x0CB, "<B", 3),
            (0x042, "<H", 0xE93),  # FS: L, D/B, G
            (0x052, "<H", 0x13),  # GS: unusable, so not present
            (0x1F8, "<Q", 0xAA),
            (0x328, "<Q", 0xBB),
            (0x340, "<Q", 0xCC),
            (0x378, "<Q", 0xDD),
        ),
    )
    assert hashlib.sha384(ref_vmsa(0x21)).digest() == QEMU_BSP_FEAT_21
    digest = snp_finish(s)
    assert len(digest) == 48
    assert digest == ref_snp_ld(records + vmsa_records(ref_vmsa(0x21), ap_vmsa))


def test_snp_launch_update_advances_the_struct() -> None:
    s = snp_vm()
    data = random_pages(3)
    source = s.m.memory(data)
    update = new(
        "kvm_sev_snp_launch_update",
        {"gfn_start": GPA // PAGE, "uaddr": source, "len": 3 * PAGE, "type": NORMAL},
    )
    s.m.sev(s.vm, SNP_UPDATE, update, s.sev)
    assert fields(update, *SNP_PROGRESS) == (GPA // PAGE + 3, source + 3 * PAGE, 0)
    zero = new(
        "kvm_sev_snp_launch_update",
        {"gfn_start": GPA // PAGE + 3, "uaddr": 0x1234, "len": 2 * PAGE, "type": ZERO},
    )
    s.m.sev(s.vm, SNP_UPDATE, zero, s.sev)
    assert fields(zero, *SNP_PROGRESS) == (GPA // PAGE + 5, 0x1234, 0)  # uaddr ignored


def test_snp_launch_update_stops_at_the_end_of_the_memslot() -> None:
    s = snp_vm()
    data = random_pages(4)
    update = snp_update(s, GPA + (SLOT_PAGES - 2) * PAGE, NORMAL, data)
    assert (update.gfn_start, update.len) == (GPA // PAGE + SLOT_PAGES, 2 * PAGE)
    assert errno_of(lambda: s.m.sev(s.vm, SNP_UPDATE, update, s.sev)) == errno.EINVAL  # no slot


def test_vmsa_pages_match_the_published_qemu_measurements() -> None:
    s = snp_vm(vcpus=2)
    s.m.regs(s.vcpus[1], rip=AP_RESET & 0xFFFF)
    sregs: Any = new("kvm_sregs")
    s.m.ioctl(s.vcpus[1], "KVM_GET_SREGS", sregs)
    sregs.cs.base = AP_RESET & 0xFFFF0000
    s.m.ioctl(s.vcpus[1], "KVM_SET_SREGS", sregs)
    info = [bytes(48)]
    for vmsa in (QEMU_BSP_FEAT_1, QEMU_AP_FEAT_1):
        tail = struct.pack("<HBB4BQ", 0x70, VMSA, 0, 0, 0, 0, 0, VMSA_GPA)
        info.append(hashlib.sha384(info[-1] + vmsa + tail).digest())
    assert snp_finish(s) == info[-1]


def test_snp_finish_protects_vcpu_state_and_allows_pre_fault() -> None:
    s = snp_vm()
    vcpu = s.vcpus[0]
    assert errno_of(lambda: s.m.pre_fault(vcpu, GPA, PAGE)) == errno.EOPNOTSUPP
    snp_finish(s)
    regs = new("kvm_regs")
    assert errno_of(lambda: s.m.ioctl(vcpu, "KVM_GET_REGS", regs)) == errno.EINVAL
    assert errno_of(lambda: s.m.ioctl(vcpu, "KVM_SET_FPU", new("kvm_fpu"))) == errno.EINVAL
    request = s.m.pre_fault(vcpu, GPA, 4 * PAGE)
    assert (request.gpa, request.size) == (GPA + 4 * PAGE, 0)


def test_a_page_populated_twice_is_refused_by_the_firmware() -> None:
    s = snp_vm()
    first, second = random_pages(2), random_pages(1)
    snp_update(s, GPA, NORMAL, first)
    update = new(
        "kvm_sev_snp_launch_update",
        {"gfn_start": GPA // PAGE + 1, "uaddr": s.m.memory(second), "len": PAGE, "type": NORMAL},
    )
    cmd = new("kvm_sev_cmd", {"id": SNP_UPDATE, "data": address(update), "sev_fd": s.sev})
    assert errno_of(lambda: s.m.ioctl(s.vm, "KVM_MEMORY_ENCRYPT_OP", cmd)) == errno.EIO
    assert cmd.error == 0x1A  # SEV_RET_INVALID_PAGE_STATE
    assert (update.gfn_start, update.len) == (GPA // PAGE + 1, PAGE)  # not copied back
    update.type = ZERO
    assert errno_of(lambda: s.m.ioctl(s.vm, "KVM_MEMORY_ENCRYPT_OP", cmd)) == errno.EIO
    records = [(NORMAL, GPA, first[:PAGE]), (NORMAL, GPA + PAGE, first[PAGE:])]
    assert snp_finish(s) == ref_snp_ld(records + vmsa_records(ref_vmsa(1)))


SNP_UPDATE_CASES = {
    "len 0": ({"len": 0}, errno.EINVAL),
    "len not pages": ({"len": PAGE + 16}, errno.EINVAL),
    "flags": ({"flags": 1}, errno.EINVAL),
    "type VMSA": ({"type": VMSA}, errno.EINVAL),
    "type 0": ({"type": 0}, errno.EINVAL),
    "type 7": ({"type": 7}, errno.EINVAL),
    "uaddr unaligned": ({"uaddr": 0x10000010}, errno.EINVAL),
    "uaddr 0": ({"uaddr": 0}, errno.EINVAL),
    "gfn in no memslot": ({"gfn_start": 0x10}, errno.EINVAL),
    "gfn in a plain memslot": ({"gfn_start": 0x200000}, errno.EINVAL),
    "bad sev fd": ({"sev_fd": 7}, errno.EBADF),
    "the vm fd as sev fd": ({"sev_fd": -1}, errno.EBADF),
}


@pytest.mark.parametrize("case", SNP_UPDATE_CASES)
def test_snp_launch_update_rejections(case: str) -> None:
    s = snp_vm()
    s.m.region(s.vm, 1, 0x200000 * PAGE, PAGE)
    fields, expected = dict(SNP_UPDATE_CASES[case][0]), SNP_UPDATE_CASES[case][1]
    values = {
        "gfn_start": GPA // PAGE,
        "uaddr": s.m.memory(bytes(PAGE)),
        "len": PAGE,
        "type": NORMAL,
    }
    sev_fd = fields.pop("sev_fd", s.sev)
    update = new("kvm_sev_snp_launch_update", values | fields)
    sev_fd = s.vm if sev_fd == -1 else sev_fd
    assert errno_of(lambda: s.m.sev(s.vm, SNP_UPDATE, update, sev_fd)) == expected
    assert snp_finish(s) == ref_snp_ld(vmsa_records(ref_vmsa(1)))  # nothing was measured


def _snp_start(m: Machine, vm: int, sev: int, *, policy: int = SNP_POLICY, flags: int = 0) -> Any:
    start = new("kvm_sev_snp_launch_start", {"policy": policy, "flags": flags})
    return m.sev(vm, SNP_START, start, sev)


def _init2(
    m: Machine, vm: int, sev: int, *, features: int = 0, ghcb: int = 0, flags: int = 0
) -> Any:
    init = new("kvm_sev_init", {"vmsa_features": features, "ghcb_version": ghcb, "flags": flags})
    return m.sev(vm, INIT2, init, sev)


@pytest.mark.parametrize(
    ("vm_type", "features", "ghcb", "flags"),
    [
        (SNP, 1, 0, 0),
        (SNP, 1 << 11, 0, 0),
        (SNP, 1 << 16, 0, 0),
        (SNP, 0, 1, 0),
        (SNP, 0, 3, 0),
        (SNP, 0, 0, 1),
        (SEV, 0, 1, 0),
        (SEV, 0x20, 0, 0),
        (SEV_ES, 0, 3, 0),
    ],
)
def test_init2_rejections(vm_type: int, features: int, ghcb: int, flags: int) -> None:
    m = Machine()
    vm, sev = m.vm(vm_type), m.k.open("/dev/sev")
    assert errno_of(_init2, m, vm, sev, features=features, ghcb=ghcb, flags=flags) == errno.EINVAL
    assert _init2(m, vm, sev).error == 0  # nothing was initialised by the refusal


def test_init2_once_and_before_any_vcpu() -> None:
    m = Machine()
    sev = m.k.open("/dev/sev")
    for vm_type, again in ((SEV, errno.EINVAL), (SEV_ES, errno.EINVAL), (SNP, errno.EPERM)):
        vm = m.vm(vm_type)
        _init2(m, vm, sev, ghcb=2 if vm_type != SEV else 0)
        assert errno_of(_init2, m, vm, sev) == again
    late = m.vm(SNP)
    m.vcpu(late)
    assert errno_of(lambda: _init2(m, late, sev)) == errno.EINVAL


@pytest.mark.parametrize(
    ("policy", "flags"),
    [(0x10000, 0), (SNP_POLICY | 1 << 26, 0), (SNP_POLICY | 1 << 63, 0), (SNP_POLICY, 1)],
)
def test_snp_launch_start_rejections(policy: int, flags: int) -> None:
    m = Machine()
    vm, sev = m.vm(SNP), m.k.open("/dev/sev")
    _init2(m, vm, sev)
    assert errno_of(_snp_start, m, vm, sev, policy=policy, flags=flags) == errno.EINVAL
    assert errno_of(lambda: _snp_start(m, vm, m.kvm)) == errno.EBADF
    _snp_start(m, vm, sev, policy=SNP_POLICY | 0xFF00FF)  # every defined bit, ABI version included
    assert errno_of(lambda: _snp_start(m, vm, sev)) == errno.EINVAL  # one launch context


def test_sev_commands_per_vm_type_and_state() -> None:
    m = Machine()
    sev = m.k.open("/dev/sev")
    default, plain, snp = m.vm(DEFAULT), m.vm(SEV_ES), m.vm(SNP)
    op = "KVM_MEMORY_ENCRYPT_OP"
    assert errno_of(m.ioctl, default, op, 0) == errno.ENOTTY  # the NULL probe
    assert m.ioctl(plain, op, 0) == 0 and m.ioctl(snp, op, 0) == 0
    assert errno_of(lambda: _init2(m, default, sev)) == errno.ENOTTY
    start = new("kvm_sev_launch_start")
    assert errno_of(lambda: m.sev(plain, LAUNCH_START, start, sev)) == errno.ENOTTY  # before INIT2
    assert errno_of(lambda: _snp_start(m, snp, sev)) == errno.ENOTTY
    assert errno_of(lambda: m.sev(snp, 99, None, sev)) == errno.EINVAL  # unknown command
    _init2(m, plain, sev)
    _init2(m, snp, sev)
    assert errno_of(lambda: _snp_start(m, plain, sev)) == errno.ENOTTY
    assert errno_of(lambda: m.sev(snp, LAUNCH_START, start, sev)) == errno.EPERM
    finish = new("kvm_sev_snp_launch_finish")
    assert errno_of(lambda: m.sev(snp, SNP_FINISH, finish, sev)) == errno.EINVAL  # not started
    update = new("kvm_sev_snp_launch_update", {"len": PAGE, "type": ZERO})
    assert errno_of(lambda: m.sev(snp, SNP_UPDATE, update, sev)) == errno.EINVAL
    vcpu = m.vcpu(m.vm(SNP))
    assert errno_of(lambda: m.ioctl(vcpu, "KVM_MEMORY_ENCRYPT_OP", 0)) == errno.ENOTTY


def test_snp_commands_after_finish_are_refused_by_the_firmware() -> None:
    s = snp_vm()
    snp_finish(s)
    for cmd, data in (
        (SNP_FINISH, new("kvm_sev_snp_launch_finish")),
        (
            SNP_UPDATE,
            new(
                "kvm_sev_snp_launch_update", {"gfn_start": GPA // PAGE, "len": PAGE, "type": ZERO}
            ),
        ),
    ):
        command = new("kvm_sev_cmd", {"id": cmd, "data": address(data), "sev_fd": s.sev})
        assert errno_of(s.m.ioctl, s.vm, "KVM_MEMORY_ENCRYPT_OP", command) == errno.EIO
        assert command.error == 2  # SEV_RET_INVALID_GUEST_STATE
    finish = new("kvm_sev_snp_launch_finish", {"flags": 1})
    assert errno_of(lambda: s.m.sev(s.vm, SNP_FINISH, finish, s.sev)) == errno.EINVAL


# ---- SEV and SEV-ES ---------------------------------------------------------------------


class Legacy(NamedTuple):
    m: Machine
    vm: int
    sev: int
    vcpu: int


def legacy_vm(vm_type: int = SEV_ES, policy: int = 0x5, start: bool = True) -> Legacy:
    m = Machine()
    vm, sev = m.vm(vm_type), m.k.open("/dev/sev")
    _init2(m, vm, sev)
    if start:
        launch = m.sev(vm, LAUNCH_START, new("kvm_sev_launch_start", {"policy": policy}), sev)
        assert launch.error == 0
    vcpu = m.vcpu(vm)
    m.regs(vcpu, rdx=EPYC_SIGNATURE)
    return Legacy(m, vm, sev, vcpu)


def update_data(v: Legacy, data: bytes) -> Any:
    update = new("kvm_sev_launch_update_data", {"uaddr": v.m.memory(data), "len": len(data)})
    return v.m.sev(v.vm, UPDATE_DATA, update, v.sev)


def launch_measure(v: Legacy) -> tuple[Any, bytes]:
    blob = bytearray(48)
    request: Any = new("kvm_sev_launch_measure", {"uaddr": address(blob), "len": len(blob)})
    v.m.sev(v.vm, MEASURE, request, v.sev)
    return request, bytes(blob)


def test_sev_es_digest_and_launch_measure() -> None:
    v = legacy_vm(policy=0x5)
    firmware, hashes = os.urandom(3 * PAGE), os.urandom(48)
    update_data(v, firmware)
    update_data(v, hashes)
    v.m.sev(v.vm, UPDATE_VMSA, None, v.sev)
    assert v.m.k.launch_digest(v.vm) is None
    query: Any = new("kvm_sev_launch_measure")
    cmd = new("kvm_sev_cmd", {"id": MEASURE, "data": address(query), "sev_fd": v.sev})
    assert errno_of(lambda: v.m.ioctl(v.vm, "KVM_MEMORY_ENCRYPT_OP", cmd)) == errno.EIO
    assert (query.len, cmd.error) == (48, 4)  # the size, and SEV_RET_INVALID_LEN
    request, blob = launch_measure(v)
    digest = hashlib.sha256(firmware + hashes + ref_vmsa(0)).digest()
    assert v.m.k.launch_digest(v.vm) == digest and request.len == 48
    tik = v.m.k._vms[v.vm].sev._tik  # type: ignore[union-attr]
    mnonce = blob[32:]
    message = bytes([0x04, 1, 55, 0]) + (0x5).to_bytes(4, "little") + digest + mnonce
    assert blob[:32] == hmac.digest(tik, message, "sha256")


def test_sev_es_vmsa_is_the_published_one() -> None:
    v = legacy_vm()
    v.m.sev(v.vm, UPDATE_VMSA, None, v.sev)
    launch_measure(v)
    assert v.m.k.launch_digest(v.vm) == QEMU_SEV_ES_BSP


def test_sev_launch_start_returns_a_handle_and_sev_measures_no_vmsa() -> None:
    v = legacy_vm(SEV, policy=0x1, start=False)
    start: Any = new("kvm_sev_launch_start", {"policy": 0x1})
    v.m.sev(v.vm, LAUNCH_START, start, v.sev)
    assert start.handle != 0
    data = os.urandom(PAGE)
    update_data(v, data)
    assert errno_of(lambda: v.m.sev(v.vm, UPDATE_VMSA, None, v.sev)) == errno.ENOTTY
    launch_measure(v)
    assert v.m.k.launch_digest(v.vm) == hashlib.sha256(data).digest()


def test_sev_es_vmsa_freezes_the_vcpus() -> None:
    v = legacy_vm()
    v.m.sev(v.vm, UPDATE_VMSA, None, v.sev)
    assert errno_of(lambda: v.m.regs(v.vcpu, rax=1)) == errno.EINVAL
    assert errno_of(lambda: v.m.sev(v.vm, UPDATE_VMSA, None, v.sev)) == errno.EINVAL
    launch_measure(v)
    assert v.m.k.launch_digest(v.vm) == QEMU_SEV_ES_BSP  # measured once


def _firmware_error(v: Legacy, cmd_id: int, data: Any) -> tuple[int, int]:
    cmd = new(
        "kvm_sev_cmd",
        {"id": cmd_id, "data": address(data) if data is not None else 0, "sev_fd": v.sev},
    )
    code = errno_of(lambda: v.m.ioctl(v.vm, "KVM_MEMORY_ENCRYPT_OP", cmd))
    return code, cmd.error


def test_sev_legacy_rejections() -> None:
    v = legacy_vm()
    empty: Any = new("kvm_sev_launch_update_data", {"uaddr": v.m.memory(b""), "len": 0})
    assert errno_of(lambda: v.m.sev(v.vm, UPDATE_DATA, empty, v.sev)) == errno.EINVAL
    unaligned = new("kvm_sev_launch_update_data", {"uaddr": v.m.memory(bytes(64)) + 8, "len": 32})
    assert _firmware_error(v, UPDATE_DATA, unaligned) == (errno.EIO, 9)  # INVALID_ADDRESS
    odd = new("kvm_sev_launch_update_data", {"uaddr": v.m.memory(bytes(64)), "len": 17})
    assert _firmware_error(v, UPDATE_DATA, odd) == (errno.EIO, 4)  # INVALID_LEN
    assert _firmware_error(v, FINISH, None) == (errno.EIO, 2)  # not measured yet
    again = new("kvm_sev_launch_start")
    assert _firmware_error(v, LAUNCH_START, again) == (errno.EIO, 2)
    launch_measure(v)
    assert _firmware_error(v, UPDATE_DATA, odd) == (errno.EIO, 2)  # measured: no more data
    v.m.sev(v.vm, FINISH, None, v.sev)
    unstarted = legacy_vm(start=False)
    assert _firmware_error(unstarted, UPDATE_DATA, odd) == (errno.EIO, 2)
    bad_fd = new("kvm_sev_launch_start")
    assert (
        errno_of(lambda: unstarted.m.sev(unstarted.vm, LAUNCH_START, bad_fd, unstarted.vcpu))
        == errno.EBADF
    )
    unstarted.m.k.close(unstarted.sev)
    start = new("kvm_sev_launch_start")
    assert (
        errno_of(lambda: unstarted.m.sev(unstarted.vm, LAUNCH_START, start, unstarted.sev))
        == errno.EBADF
    )


def test_legacy_commands_use_the_sev_fd_launch_start_recorded() -> None:
    v = legacy_vm()
    v.m.k.close(v.sev)
    assert errno_of(lambda: update_data(v, bytes(16))) == errno.EBADF


# ---- TDX --------------------------------------------------------------------------------

TD_ATTRIBUTES = 1 << 28  # SEPT_VE_DISABLE
TD_XFAM = 0x3


class Td(NamedTuple):
    m: Machine
    vm: int
    gmem: int
    vcpu: int


def td_init(m: Machine, vm: int, **fields: Any) -> Any:
    init = new("kvm_tdx_init_vm", {"attributes": TD_ATTRIBUTES, "xfam": TD_XFAM} | fields)
    return m.tdx(vm, TDX_INIT_VM, init)


def td_vm(
    faults: list[Fault | Partial] | None = None,
    *,
    attributes: int = TD_ATTRIBUTES,
    gmem_flags: int = 0,
) -> Td:
    """A TD after INIT_VM, with one initialised vCPU and one private guest_memfd slot."""
    m = Machine("tdx", faults)
    vm = m.vm(TDX)
    td_init(m, vm, attributes=attributes, mrowner=list(range(6)))
    vcpu = m.vcpu(vm)
    m.tdx(vcpu, TDX_INIT_VCPU, GPA)
    gmem = m.gmem(vm, SLOT_PAGES * PAGE, gmem_flags)
    m.region(vm, 0, GPA, SLOT_PAGES * PAGE, gmem)
    m.attributes(vm, GPA, SLOT_PAGES * PAGE)
    return Td(m, vm, gmem, vcpu)


def mem_region(
    t: Td, gpa: int, data: bytes, measure: bool = True, source: int | None = None
) -> Any:
    region: Any = new(
        "kvm_tdx_init_mem_region",
        {
            "source_addr": t.m.memory(data) if source is None else source,
            "gpa": gpa,
            "nr_pages": len(data) // PAGE,
        },
    )
    t.m.tdx(t.vcpu, TDX_INIT_MEM, region, flags=1 if measure else 0)
    return region


def td_finalize(t: Td) -> bytes:
    t.m.tdx(t.vm, TDX_FINALIZE)
    digest = t.m.k.launch_digest(t.vm)
    assert digest is not None
    return digest


def test_mrtd_is_the_record_chain_in_page_order() -> None:
    t = td_vm()
    bfv, hob, cfv = random_pages(3), random_pages(2), random_pages(1)
    source = t.m.memory(bfv)
    region = mem_region(t, GPA + 4 * PAGE, bfv, source=source)
    assert fields(region, *TD_PROGRESS) == (
        source + 3 * PAGE,
        GPA + 7 * PAGE,
        0,
    )
    mem_region(t, GPA, hob, measure=False)
    mem_region(t, GPA + 2 * PAGE, cfv)
    assert t.m.k.launch_digest(t.vm) is None
    pages = [(GPA + 4 * PAGE + i * PAGE, bfv[i * PAGE : (i + 1) * PAGE], True) for i in range(3)]
    pages += [
        (GPA, hob[:PAGE], False),
        (GPA + PAGE, hob[PAGE:], False),
        (GPA + 2 * PAGE, cfv, True),
    ]
    digest = td_finalize(t)
    assert len(digest) == 48 and digest == ref_mrtd(pages)


def test_td_pages_land_in_the_guest_memfd() -> None:
    t = td_vm(gmem_flags=1)
    data = random_pages(2)
    mem_region(t, GPA + PAGE, data)
    assert bytes(t.m.k.mmap(t.gmem, 4 * PAGE).view[PAGE : 3 * PAGE]) == data


def _td_cmd_error(
    t: Td, fd: int, cmd_id: int, data: Any, *, flags: int = 0, hw_error: int = 0
) -> tuple[int, Any]:
    value = address(data) if isinstance(data, ffi.CData) else data
    cmd = new("kvm_tdx_cmd", {"id": cmd_id, "flags": flags, "data": value, "hw_error": hw_error})
    return errno_of(lambda: t.m.ioctl(fd, "KVM_MEMORY_ENCRYPT_OP", cmd)), cmd


def test_a_page_added_twice_is_refused_by_the_module() -> None:
    t = td_vm()
    data = random_pages(2)
    mem_region(t, GPA, data)
    source = t.m.memory(data[PAGE:])
    again = new(
        "kvm_tdx_init_mem_region",
        {"source_addr": source, "gpa": GPA + PAGE, "nr_pages": 1},
    )
    code, cmd = _td_cmd_error(t, t.vcpu, TDX_INIT_MEM, again, flags=1)
    assert code == errno.EIO and cmd.hw_error != 0
    assert fields(again, *TD_PROGRESS) == (source, GPA + PAGE, 1)
    assert td_finalize(t) == ref_mrtd([(GPA, data[:PAGE], True), (GPA + PAGE, data[PAGE:], True)])


def test_init_mem_region_stops_at_a_shared_page_with_the_struct_advanced() -> None:
    t = td_vm()
    t.m.attributes(t.vm, GPA + 2 * PAGE, PAGE, 0)
    data = random_pages(3)
    source = t.m.memory(data)
    region = new("kvm_tdx_init_mem_region", {"source_addr": source, "gpa": GPA, "nr_pages": 3})
    code, cmd = _td_cmd_error(t, t.vcpu, TDX_INIT_MEM, region, flags=1)
    assert code == errno.EINVAL and cmd.hw_error == 0
    assert fields(region, *TD_PROGRESS) == (
        source + 2 * PAGE,
        GPA + 2 * PAGE,
        1,
    )
    pages = [(GPA + i * PAGE, data[i * PAGE : (i + 1) * PAGE], True) for i in range(2)]
    assert td_finalize(t) == ref_mrtd(pages)


TDX_REGION_CASES = {
    "gpa unaligned": ({"gpa": GPA + 8}, 1),
    "source unaligned": ({"source_addr": 0x10000008}, 1),
    "source 0": ({"source_addr": 0}, 1),
    "no pages": ({"nr_pages": 0}, 1),
    "wraps": ({"gpa": 2**64 - PAGE, "nr_pages": 2}, 1),
    "flags": ({}, 3),
    "no memslot": ({"gpa": GPA + SLOT_PAGES * PAGE}, 1),
}


@pytest.mark.parametrize("case", TDX_REGION_CASES)
def test_init_mem_region_rejections(case: str) -> None:
    t = td_vm()
    fields, flags = TDX_REGION_CASES[case]
    values = {"source_addr": t.m.memory(bytes(PAGE)), "gpa": GPA, "nr_pages": 1} | fields
    region = new("kvm_tdx_init_mem_region", values)
    code, cmd = _td_cmd_error(t, t.vcpu, TDX_INIT_MEM, region, flags=flags)
    assert code == errno.EINVAL and cmd.hw_error == 0
    assert (region.gpa, region.nr_pages) == (values["gpa"], values["nr_pages"])
    assert td_finalize(t) == ref_mrtd([])


def test_tdx_command_order_and_rejections() -> None:
    m = Machine("tdx")
    vm = m.vm(TDX)
    t = Td(m, vm, 0, 0)
    assert errno_of(lambda: m.vcpu(vm)) == errno.EIO  # TDH.MNG.INIT comes first
    assert m.ioctl(vm, "KVM_MEMORY_ENCRYPT_OP", 0) == 0  # the probe
    assert _td_cmd_error(t, vm, TDX_FINALIZE, 0)[0] == errno.EINVAL  # not initialised
    assert errno_of(lambda: td_init(m, vm, reserved=[1] + [0] * 11)) == errno.EINVAL
    assert errno_of(lambda: td_init(m, vm, attributes=1 << 1)) == errno.EINVAL  # reserved bit
    assert errno_of(lambda: td_init(m, vm, xfam=0)) == errno.EINVAL  # x87 and SSE are fixed 1
    assert errno_of(lambda: td_init(m, vm, xfam=1 << 20 | 3)) == errno.EINVAL
    assert errno_of(lambda: td_init(m, vm, cpuid={"nent": 257})) == errno.E2BIG
    init = new("kvm_tdx_init_vm", {"xfam": 3})
    assert _td_cmd_error(t, vm, TDX_INIT_VM, init, hw_error=1)[0] == errno.EINVAL
    assert _td_cmd_error(t, vm, TDX_INIT_VM, init, flags=1)[0] == errno.EINVAL
    assert _td_cmd_error(t, vm, 0, init)[0] == errno.EINVAL  # CAPABILITIES is not emulated
    td_init(m, vm)
    assert errno_of(lambda: td_init(m, vm)) == errno.EINVAL  # once
    vcpu = m.vcpu(vm)
    assert _td_cmd_error(t, vcpu, TDX_INIT_VM, init)[0] == errno.EINVAL  # a VM command
    region = new("kvm_tdx_init_mem_region")
    assert _td_cmd_error(t, vcpu, TDX_INIT_MEM, region)[0] == errno.EINVAL  # vCPU not initialised
    assert _td_cmd_error(t, vcpu, TDX_INIT_VCPU, 0, flags=1)[0] == errno.EINVAL
    m.tdx(vcpu, TDX_INIT_VCPU, 0x1234)
    assert _td_cmd_error(t, vcpu, TDX_INIT_VCPU, 0)[0] == errno.EINVAL  # once
    assert errno_of(lambda: m.ioctl(vcpu, "KVM_MEMORY_ENCRYPT_OP", 0)) == errno.EFAULT
    m.tdx(vm, TDX_FINALIZE)
    assert _td_cmd_error(t, vm, TDX_FINALIZE, 0)[0] == errno.EINVAL  # once
    assert _td_cmd_error(t, vcpu, TDX_INIT_VCPU, 0)[0] == errno.EINVAL  # finalised
    assert errno_of(lambda: m.ioctl(m.vm(DEFAULT), "KVM_MEMORY_ENCRYPT_OP", 0)) == errno.ENOTTY


@pytest.mark.parametrize(
    ("attributes", "protected"), [(TD_ATTRIBUTES, True), (TD_ATTRIBUTES | 1, False)]
)
def test_td_vcpu_registers_belong_to_the_module_unless_debug(
    attributes: int, protected: bool
) -> None:
    t = td_vm(attributes=attributes)
    regs = new("kvm_regs")
    if protected:
        assert errno_of(lambda: t.m.ioctl(t.vcpu, "KVM_GET_REGS", regs)) == errno.EINVAL
    else:
        assert t.m.ioctl(t.vcpu, "KVM_GET_REGS", regs) == 0 and regs.rip == 0xFFF0


def test_td_pre_fault_only_after_finalize() -> None:
    t = td_vm()
    assert errno_of(lambda: t.m.pre_fault(t.vcpu, GPA, PAGE)) == errno.EOPNOTSUPP
    td_finalize(t)
    assert t.m.pre_fault(t.vcpu, GPA, 2 * PAGE).gpa == GPA + 2 * PAGE


# ---- KVM_PRE_FAULT_MEMORY ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpa", "size", "flags", "expected"),
    [
        (GPA, PAGE, 1, errno.EINVAL),
        (GPA + 1, PAGE, 0, errno.EINVAL),
        (GPA, PAGE + 1, 0, errno.EINVAL),
        (GPA, 0, 0, errno.EINVAL),
        (2**64 - PAGE, 2 * PAGE, 0, errno.EINVAL),
        (0, PAGE, 0, errno.ENOENT),
    ],
)
def test_pre_fault_rejections(gpa: int, size: int, flags: int, expected: int) -> None:
    m = Machine()
    vm = m.vm(DEFAULT)
    m.region(vm, 0, GPA, 4 * PAGE)
    vcpu = m.vcpu(vm)
    request = new("kvm_pre_fault_memory", {"gpa": gpa, "size": size, "flags": flags})
    assert errno_of(lambda: m.ioctl(vcpu, "KVM_PRE_FAULT_MEMORY", request)) == expected
    assert (request.gpa, request.size) == (gpa, size)


def test_pre_fault_maps_up_to_a_hole_then_reports_it() -> None:
    m = Machine()
    vm = m.vm(SEV_ES)  # no private memory: pre-faulting is allowed at once
    m.region(vm, 0, GPA, 4 * PAGE)
    m.region(vm, 1, GPA + 4 * PAGE, 2 * PAGE, userspace_addr=0x20000000)
    vcpu = m.vcpu(vm)
    request = m.pre_fault(vcpu, GPA + PAGE, 8 * PAGE)
    assert (request.gpa, request.size) == (GPA + 6 * PAGE, 3 * PAGE)
    assert errno_of(lambda: m.ioctl(vcpu, "KVM_PRE_FAULT_MEMORY", request)) == errno.ENOENT
    assert (request.gpa, request.size) == (GPA + 6 * PAGE, 3 * PAGE)


# ---- KVM_MAP_MEMORY (the RFC host) ------------------------------------------------------


def map_memory(s: Snp, gfn: int, pages: int, source: int, flags: int = PRIVATE) -> Any:
    request = new(
        "kvm_memory_mapping",
        {"base_gfn": gfn, "nr_pages": pages, "flags": flags, "source": source},
    )
    s.m.ioctl(s.vcpus[0], "KVM_MAP_MEMORY", request)
    return request


def test_map_memory_populates_and_measures_like_snp() -> None:
    s = snp_vm("rfc")
    data = random_pages(3)
    source = s.m.memory(data)
    request = map_memory(s, GPA // PAGE + 1, 3, source)
    assert fields(request, *MAP_PROGRESS) == (
        GPA // PAGE + 4,
        0,
        source + 3 * PAGE,
    )
    zero = map_memory(s, GPA // PAGE + 4, 2, 0)
    assert fields(zero, *MAP_PROGRESS) == (GPA // PAGE + 6, 0, 0)
    records = [(NORMAL, GPA + PAGE * (1 + i), data[i * PAGE : (i + 1) * PAGE]) for i in range(3)]
    records += [(ZERO, GPA + 4 * PAGE, b""), (ZERO, GPA + 5 * PAGE, b"")]
    assert snp_finish(s) == ref_snp_ld(records + vmsa_records(ref_vmsa(1)))


def test_map_memory_rejections() -> None:
    s = snp_vm("rfc")
    source = s.m.memory(random_pages(2))
    gfn = GPA // PAGE
    for flags in (0, PRIVATE | 1, 1 << 4):
        assert errno_of(map_memory, s, gfn, 1, source, flags) == errno.EINVAL
    assert errno_of(lambda: map_memory(s, 0x10, 1, source)) == errno.EINVAL  # no memslot
    s.m.attributes(s.vm, GPA + PAGE, PAGE, 0)
    request = new(
        "kvm_memory_mapping",
        {"base_gfn": gfn, "nr_pages": 2, "flags": PRIVATE, "source": source},
    )
    assert errno_of(lambda: s.m.ioctl(s.vcpus[0], "KVM_MAP_MEMORY", request)) == errno.EINVAL
    assert fields(request, *MAP_PROGRESS) == (gfn + 1, 1, source + PAGE)
    assert errno_of(lambda: map_memory(s, gfn, 1, source)) == errno.EIO  # measured already
    assert map_memory(s, gfn, 0, 0, 0).base_gfn == gfn  # the empty probe succeeds untouched
    other = Machine("rfc")
    vcpu = other.vcpu(other.vm(DEFAULT))
    mapping = new("kvm_memory_mapping", {"base_gfn": 0, "nr_pages": 1, "flags": PRIVATE})
    assert errno_of(lambda: other.ioctl(vcpu, "KVM_MAP_MEMORY", mapping)) == errno.EINVAL
    unstarted = snp_vm("rfc", start=False)
    assert errno_of(lambda: map_memory(unstarted, gfn, 1, source)) == errno.EINVAL
    first = bytes(ffi.buffer(ffi.cast("char *", source), PAGE))
    assert snp_finish(s) == ref_snp_ld([(NORMAL, GPA, first), *vmsa_records(ref_vmsa(1))])


# ---- partial progress -------------------------------------------------------------------


@pytest.mark.parametrize("code", [None, errno.EINTR])
def test_partial_snp_launch_update(code: int | None) -> None:
    data = random_pages(8)
    s = snp_vm(faults=[Partial(at_page=3, errno=code), Partial(at_page=3, errno=code)])
    source = s.m.memory(data)
    update = new(
        "kvm_sev_snp_launch_update",
        {"gfn_start": GPA // PAGE, "uaddr": source, "len": 8 * PAGE, "type": NORMAL},
    )
    s.m.sev(s.vm, SNP_UPDATE, update, s.sev)  # partial progress is success
    assert fields(update, *SNP_PROGRESS) == (
        GPA // PAGE + 3,
        source + 3 * PAGE,
        5 * PAGE,
    )
    # The second stop falls before the first page of the next call: that one fails.
    failed = errno_of(lambda: s.m.sev(s.vm, SNP_UPDATE, update, s.sev))
    assert failed == (code or errno.EAGAIN)
    assert (update.gfn_start, update.len) == (GPA // PAGE + 3, 5 * PAGE)
    s.m.sev(s.vm, SNP_UPDATE, update, s.sev)
    assert fields(update, *SNP_PROGRESS) == (GPA // PAGE + 8, source + 8 * PAGE, 0)
    records = [(NORMAL, GPA + i * PAGE, data[i * PAGE : (i + 1) * PAGE]) for i in range(8)]
    assert snp_finish(s) == ref_snp_ld(records + vmsa_records(ref_vmsa(1)))


def test_partial_zero_pages_do_not_move_uaddr() -> None:
    s = snp_vm(faults=[Partial(at_page=1)])
    update = snp_update(s, GPA, ZERO, pages=3)
    assert fields(update, *SNP_PROGRESS) == (GPA // PAGE + 1, 0, 2 * PAGE)


@pytest.mark.parametrize("code", [None, errno.EINTR])
def test_partial_init_mem_region(code: int | None) -> None:
    data = random_pages(5)
    t = td_vm(faults=[Partial(at_page=2, errno=code), Partial(at_page=2, errno=code)])
    source = t.m.memory(data)
    region = new("kvm_tdx_init_mem_region", {"source_addr": source, "gpa": GPA, "nr_pages": 5})
    for _ in range(2):  # the second stop comes before the first page of the retry
        failed, cmd = _td_cmd_error(t, t.vcpu, TDX_INIT_MEM, region, flags=1)
        assert failed == (code or errno.EAGAIN) and cmd.hw_error == 0
    assert fields(region, *TD_PROGRESS) == (
        source + 2 * PAGE,
        GPA + 2 * PAGE,
        3,
    )
    t.m.tdx(t.vcpu, TDX_INIT_MEM, region, flags=1)
    assert fields(region, *TD_PROGRESS) == (
        source + 5 * PAGE,
        GPA + 5 * PAGE,
        0,
    )
    pages = [(GPA + i * PAGE, data[i * PAGE : (i + 1) * PAGE], True) for i in range(5)]
    assert td_finalize(t) == ref_mrtd(pages)


@pytest.mark.parametrize("with_source", [True, False])
def test_partial_map_memory(with_source: bool) -> None:
    data = random_pages(4)
    s = snp_vm("rfc", faults=[Partial(at_page=1)])
    source = s.m.memory(data) if with_source else 0
    request = new(
        "kvm_memory_mapping",
        {"base_gfn": GPA // PAGE, "nr_pages": 4, "flags": PRIVATE, "source": source},
    )
    assert errno_of(lambda: s.m.ioctl(s.vcpus[0], "KVM_MAP_MEMORY", request)) == errno.EAGAIN
    expected_source = source + PAGE if with_source else 0
    assert fields(request, *MAP_PROGRESS) == (
        GPA // PAGE + 1,
        3,
        expected_source,
    )
    s.m.ioctl(s.vcpus[0], "KVM_MAP_MEMORY", request)
    assert (request.base_gfn, request.nr_pages) == (GPA // PAGE + 4, 0)
    kind = NORMAL if with_source else ZERO
    records = [(kind, GPA + i * PAGE, data[i * PAGE : (i + 1) * PAGE]) for i in range(4)]
    assert snp_finish(s) == ref_snp_ld(records + vmsa_records(ref_vmsa(1)))


def test_partial_pre_fault_counts_pages_across_commands() -> None:
    # Four pages go to SNP_LAUNCH_UPDATE; the stop at page 6 lands two pages into the pre-fault.
    s = snp_vm(faults=[Partial(at_page=6), Partial(at_page=6), Partial(at_page=100)])
    snp_update(s, GPA, ZERO, pages=4)
    snp_finish(s)
    request = s.m.pre_fault(s.vcpus[0], GPA, 40 * PAGE)
    assert (request.gpa, request.size) == (GPA + 2 * PAGE, 38 * PAGE)
    assert errno_of(lambda: s.m.ioctl(s.vcpus[0], "KVM_PRE_FAULT_MEMORY", request)) == errno.EAGAIN
    s.m.ioctl(s.vcpus[0], "KVM_PRE_FAULT_MEMORY", request)
    assert (request.gpa, request.size) == (GPA + 40 * PAGE, 0)
    request = s.m.pre_fault(s.vcpus[0], GPA, 57 * PAGE)  # the stop at page 100 = 44 + 56
    assert (request.gpa, request.size) == (GPA + 56 * PAGE, PAGE)


# ---- injected failures and the fd table ---------------------------------------------------


def test_a_faulted_populate_has_no_side_effect() -> None:
    data = random_pages(2)
    clean = snp_vm()
    snp_update(clean, GPA, NORMAL, data)
    expected = snp_finish(clean)
    s = snp_vm(faults=[Fault(at_call=11, errno=errno.ENOMEM)])
    assert s.m.k.calls == 11  # the next call is the update
    held = s.m.k.open_fds()
    source = s.m.memory(data)
    update = new(
        "kvm_sev_snp_launch_update",
        {"gfn_start": GPA // PAGE, "uaddr": source, "len": 2 * PAGE, "type": NORMAL},
    )
    assert errno_of(lambda: s.m.sev(s.vm, SNP_UPDATE, update, s.sev)) == errno.ENOMEM
    assert (update.gfn_start, update.len) == (GPA // PAGE, 2 * PAGE) and s.m.k.open_fds() == held
    s.m.sev(s.vm, SNP_UPDATE, update, s.sev)  # the same call again: nothing was populated before
    assert snp_finish(s) == expected


def test_faulted_calls_create_nothing() -> None:
    faults: list[Fault | Partial] = [Fault(at_call=n, errno=errno.EINTR) for n in (1, 2, 4, 5, 8)]
    m = Machine("snp", faults)  # call 0 opens /dev/kvm
    assert errno_of(lambda: m.k.open("/dev/sev")) == errno.EINTR  # 1
    assert errno_of(lambda: m.vm(DEFAULT)) == errno.EINTR  # 2
    assert m.k.open_fds() == {m.kvm}
    vm = m.vm(DEFAULT)  # 3
    assert errno_of(lambda: m.gmem(vm, PAGE, 3)) == errno.EINTR  # 4
    assert errno_of(lambda: m.region(vm, 0, 0, PAGE)) == errno.EINTR  # 5
    assert m.region(vm, 0, 0, PAGE) == 0  # 6: not EEXIST, the failed one made no slot
    gmem = m.gmem(vm, PAGE, 3)  # 7
    assert errno_of(lambda: m.k.mmap(gmem, PAGE)) == errno.EINTR  # 8
    assert m.k.open_fds() == {m.kvm, vm, gmem}
    assert m.k.mmap(gmem, PAGE).address % PAGE == 0  # 9
    assert m.k.calls == 10


def test_calls_counts_open_ioctl_and_mmap_but_not_close() -> None:
    m = Machine()  # 1 call
    vm = m.vm(DEFAULT)
    gmem = m.gmem(vm, PAGE, 3)
    m.k.mmap(gmem, PAGE).close()
    assert errno_of(lambda: m.ioctl(9999, "KVM_RUN")) == errno.EBADF  # failed calls count too
    assert m.k.calls == 5
    kernel: Kernel = m.k  # what the kvm layer sees
    kernel.close(gmem)
    assert m.k.calls == 5


def test_open_fds_is_what_the_process_holds() -> None:
    m = Machine()
    sev = m.k.open("/dev/sev")
    vm = m.vm(SNP)
    vcpu, gmem = m.vcpu(vm), m.gmem(vm, PAGE)
    assert m.k.open_fds() == {m.kvm, sev, vm, vcpu, gmem}
    assert len({m.kvm, sev, vm, vcpu, gmem}) == 5 and min(m.k.open_fds()) >= 1000
    m.k.close(vm)
    assert m.k.open_fds() == {m.kvm, sev, vcpu, gmem}
    assert m.ioctl(vcpu, "KVM_GET_REGS", new("kvm_regs")) == 0  # the VM lives on
    assert m.k.launch_digest(vm) is None  # still known by its old fd
    assert errno_of(lambda: m.k.close(vm)) == errno.EBADF
    assert errno_of(lambda: m.ioctl(vm, "KVM_CREATE_VCPU", 1)) == errno.EBADF
    for fd in (vcpu, gmem, sev, m.kvm):
        m.k.close(fd)
    assert m.k.open_fds() == frozenset()
    assert m.k.open("/dev/kvm") not in {m.kvm, sev, vm, vcpu, gmem}  # numbers are not reused
    with pytest.raises(ValueError, match="never a VM"):
        m.k.launch_digest(vcpu)
