"""`Kvm`, `Vm`, `Vcpu` and `GuestMemfd` against the real /dev/kvm of this machine.

The expected errnos are the ones probed on this host and recorded in
/work/shared/reference/kvm-abi.md §5 (6.18 nested PVM: VM type 0 only, guest_memfd with
MMAP|INIT_SHARED, no memory attributes, no pre-fault, no SEV/TDX). Tests whose expectation is
specific to that host skip, naming the difference, when the kernel answers its capability
questions differently; the gate asks the kernel directly (fcntl), not through cvmlaunch.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from typing import Any

import pytest

from cvmlaunch.abi.kvm import (
    EXIT_HLT,
    EXIT_IO,
    EXIT_IO_OUT,
    MEMORY_ATTRIBUTE_PRIVATE,
    Cap,
    GuestMemfdFlag,
    MemFlag,
    SevCmd,
    TdxCmd,
    VmType,
    ffi,
)
from cvmlaunch.errors import KvmError
from cvmlaunch.kvm.caps import has_rfc_map_memory, probe, vm_types
from cvmlaunch.kvm.objects import GuestMemfd, Kvm, Vm
from cvmlaunch.kvm.sys import Mapping, address

MIB = 1 << 20
SHARED = GuestMemfdFlag.MMAP | GuestMemfdFlag.INIT_SHARED  # 3

# What kvm-abi.md §5.1 recorded for this host, asked at system scope (cap number -> answer):
# USER_MEMORY2, MEMORY_ATTRIBUTES, GUEST_MEMFD, VM_TYPES, PRE_FAULT_MEMORY, GUEST_MEMFD_FLAGS.
DOCUMENTED_CAPS = {231: 1, 233: 0, 234: 1, 235: 1, 236: 0, 244: 3}
_KVM_CHECK_EXTENSION = 0xAE03  # _IO(0xAE, 0x03), typed in so the gate does not trust the code


def _system_caps() -> dict[int, int] | str:
    """The host's answers to DOCUMENTED_CAPS, or why /dev/kvm cannot be asked."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"/dev/kvm cannot be opened: {e.strerror}"
    try:
        return {cap: fcntl.ioctl(fd, _KVM_CHECK_EXTENSION, cap) for cap in DOCUMENTED_CAPS}
    except OSError as e:
        return f"KVM_CHECK_EXTENSION on /dev/kvm failed: {e.strerror}"
    finally:
        os.close(fd)


_CAPS = _system_caps()

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(isinstance(_CAPS, str), reason=_CAPS if isinstance(_CAPS, str) else ""),
]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def gmem_host() -> None:
    """Skip unless the kernel has memslot2 and a guest_memfd that can be MMAP|INIT_SHARED."""
    assert isinstance(_CAPS, dict)
    if not (_CAPS[231] and _CAPS[234] and _CAPS[244] & SHARED == SHARED):
        pytest.skip(f"no memslot2 / guest_memfd MMAP|INIT_SHARED on this kernel: caps {_CAPS}")


@pytest.fixture
def documented_host() -> None:
    """Skip unless the kernel answers like the 6.18 PVM host of kvm-abi.md §5."""
    if _CAPS != DOCUMENTED_CAPS:
        pytest.skip(f"expectation is for the kvm-abi.md §5 host {DOCUMENTED_CAPS}; here {_CAPS}")


@pytest.fixture
def kvm(gmem_host: None) -> Iterator[Kvm]:
    with Kvm() as k:
        yield k


@pytest.fixture
def vm(kvm: Kvm) -> Vm:
    return kvm.create_vm()


def shared_gmem(vm: Vm, size: int = MIB) -> tuple[GuestMemfd, Mapping]:
    gmem = vm.create_guest_memfd(size, SHARED)
    return gmem, gmem.mmap()


def raised(info: pytest.ExceptionInfo[KvmError]) -> tuple[str, int, str]:
    err = info.value
    return err.call, err.errno, err.errno_name


# --- guest_memfd creation (§5.2) -------------------------------------------------------------


def test_guest_memfd_is_a_regular_file_of_its_size(vm: Vm) -> None:
    gmem = vm.create_guest_memfd(2 * MIB, SHARED)
    assert (gmem.size, gmem.flags) == (2 * MIB, SHARED)
    info = os.fstat(gmem.fd)
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == 2 * MIB


@pytest.mark.parametrize("flags", [1 << 2, 1 << 63, SHARED | 1 << 3])
def test_guest_memfd_unknown_flags_einval(vm: Vm, flags: int) -> None:
    with pytest.raises(KvmError) as info:
        vm.create_guest_memfd(2 * MIB, flags)
    assert raised(info) == ("KVM_CREATE_GUEST_MEMFD", errno.EINVAL, "EINVAL")
    # `reserved` is an array and stays out of the fields; size and flags are what was sent.
    assert info.value.fields == {"size": 2 * MIB, "flags": flags}


@pytest.mark.parametrize("size", [0, 4095, 4097, MIB + 1])
def test_guest_memfd_unaligned_size_einval(vm: Vm, size: int) -> None:
    with pytest.raises(KvmError) as info:
        vm.create_guest_memfd(size, SHARED)
    assert raised(info) == ("KVM_CREATE_GUEST_MEMFD", errno.EINVAL, "EINVAL")
    assert info.value.fields == {"size": size, "flags": SHARED}


def test_guest_memfd_without_mmap_flag_cannot_be_mapped(vm: Vm) -> None:
    gmem = vm.create_guest_memfd(MIB, 0)
    with pytest.raises(KvmError) as info:
        gmem.mmap()
    assert raised(info) == ("mmap", errno.ENODEV, "ENODEV")
    assert info.value.fields == {"length": MIB, "offset": 0}


# --- memslots (§5.3) -------------------------------------------------------------------------


def region_fields(
    slot: int, gpa: int, memory: memoryview, gmem: GuestMemfd, offset: int
) -> dict[str, int]:
    """The fields a KVM_SET_USER_MEMORY_REGION2 over guest_memfd carries (pads left out)."""
    return {
        "slot": slot,
        "flags": MemFlag.GUEST_MEMFD,
        "guest_phys_addr": gpa,
        "memory_size": len(memory),
        "userspace_addr": address(memory),
        "guest_memfd_offset": offset,
        "guest_memfd": gmem.fd,
    }


def test_memslot_is_recorded_and_reaches_the_mapping(vm: Vm) -> None:
    gmem, mapping = shared_gmem(vm)
    created = vm.set_memory_region(3, 0x100000, mapping.view, gmem, 0)
    assert (created.slot, created.gpa, created.size) == (3, 0x100000, MIB)
    assert (created.guest_memfd, created.guest_memfd_offset) == (gmem.fd, 0)
    assert vm.slots == [created]
    vm.memory_at(0x100010, 4)[:] = b"\xde\xad\xbe\xef"
    assert bytes(mapping.view[0x10:0x14]) == b"\xde\xad\xbe\xef"


@pytest.mark.parametrize(("gpa", "size"), [(0x200000, 1), (0x0FFFFF, 2), (0x1FFFFF, 2)])
def test_memory_at_outside_every_slot(vm: Vm, gpa: int, size: int) -> None:
    gmem, mapping = shared_gmem(vm)
    vm.set_memory_region(0, 0x100000, mapping.view, gmem, 0)
    with pytest.raises(KvmError) as info:
        vm.memory_at(gpa, size)
    assert raised(info) == ("memslot lookup", errno.ENOENT, "ENOENT")
    assert info.value.fields == {"gpa": gpa, "size": size}


def test_memslot_gpa_overlap_eexist(vm: Vm) -> None:
    first, first_map = shared_gmem(vm)
    second, second_map = shared_gmem(vm)
    vm.set_memory_region(0, 0, first_map.view, first, 0)
    with pytest.raises(KvmError) as info:
        vm.set_memory_region(1, 0x80000, second_map.view, second, 0)
    assert raised(info) == ("KVM_SET_USER_MEMORY_REGION2", errno.EEXIST, "EEXIST")
    assert info.value.fields == region_fields(1, 0x80000, second_map.view, second, 0)
    assert [s.slot for s in vm.slots] == [0]  # the refused slot is not recorded


def test_memslot_guest_memfd_range_overlap_einval(vm: Vm, documented_host: None) -> None:
    # EINVAL on 6.18 (probed); 7.3 source answers EEXIST.
    gmem = vm.create_guest_memfd(2 * MIB, SHARED)
    _, backing = shared_gmem(vm)
    vm.set_memory_region(0, 0, backing.view, gmem, 0)
    with pytest.raises(KvmError) as info:
        vm.set_memory_region(1, 0x400000, backing.view, gmem, 0x80000)
    assert raised(info) == ("KVM_SET_USER_MEMORY_REGION2", errno.EINVAL, "EINVAL")
    assert info.value.fields == region_fields(1, 0x400000, backing.view, gmem, 0x80000)
    assert [s.slot for s in vm.slots] == [0]


@pytest.mark.parametrize(
    ("gmem_size", "memory_size", "offset"),
    [
        (MIB, MIB, 0x1000),  # offset + size one page past the end
        (MIB, 0x1000, 2 * MIB),  # offset beyond the file
        (MIB, 2 * MIB, 0),  # slot larger than the file
    ],
)
def test_memslot_past_the_guest_memfd_einval(
    vm: Vm, gmem_size: int, memory_size: int, offset: int
) -> None:
    gmem = vm.create_guest_memfd(gmem_size, SHARED)
    _, backing = shared_gmem(vm, memory_size)
    with pytest.raises(KvmError) as info:
        vm.set_memory_region(0, 0, backing.view, gmem, offset)
    assert raised(info) == ("KVM_SET_USER_MEMORY_REGION2", errno.EINVAL, "EINVAL")
    assert info.value.fields == region_fields(0, 0, backing.view, gmem, offset)
    assert vm.slots == []


def test_memslot_unaligned_gpa_einval(vm: Vm) -> None:
    gmem, mapping = shared_gmem(vm)
    with pytest.raises(KvmError) as info:
        vm.set_memory_region(0, 0x800, mapping.view, gmem, 0)
    assert raised(info) == ("KVM_SET_USER_MEMORY_REGION2", errno.EINVAL, "EINVAL")
    assert info.value.fields["guest_phys_addr"] == 0x800


def test_memslot_on_a_closed_guest_memfd_ebadf(vm: Vm) -> None:
    _, backing = shared_gmem(vm)
    gone = vm.create_guest_memfd(MIB, SHARED)
    stale = gone.fd
    gone.close()
    with pytest.raises(KvmError) as info:
        vm.set_memory_region(0, 0, backing.view, gone, 0)
    assert raised(info) == ("KVM_SET_USER_MEMORY_REGION2", errno.EBADF, "EBADF")
    assert info.value.fields["guest_memfd"] == stale


# --- what this host lacks (§5.1, §5.4) -------------------------------------------------------


@pytest.mark.parametrize(
    "vm_type", [VmType.SW_PROTECTED, VmType.SEV, VmType.SEV_ES, VmType.SNP, VmType.TDX]
)
def test_create_vm_of_missing_type_einval(
    kvm: Kvm, documented_host: None, vm_type: VmType
) -> None:
    before = open_fds()
    with pytest.raises(KvmError) as info:
        kvm.create_vm(vm_type)
    assert raised(info) == (f"KVM_CREATE_VM({vm_type.name})", errno.EINVAL, "EINVAL")
    assert info.value.fields == {}
    assert open_fds() == before


def test_set_private_enotty(vm: Vm, documented_host: None) -> None:
    with pytest.raises(KvmError) as info:
        vm.set_private(0x200000, 0x3000)
    assert raised(info) == ("KVM_SET_MEMORY_ATTRIBUTES", errno.ENOTTY, "ENOTTY")
    assert info.value.fields == {
        "address": 0x200000,
        "size": 0x3000,
        "attributes": MEMORY_ATTRIBUTE_PRIVATE,
        "flags": 0,
    }


def test_sev_command_enotty_carries_command_and_data_fields(vm: Vm, documented_host: None) -> None:
    init: Any = ffi.new("struct kvm_sev_init *", {"vmsa_features": 1, "ghcb_version": 2})
    with pytest.raises(KvmError) as info:
        vm.sev_command(SevCmd.INIT2, init, sev_fd=7)
    assert raised(info) == ("KVM_MEMORY_ENCRYPT_OP(INIT2)", errno.ENOTTY, "ENOTTY")
    assert info.value.fields == {
        "id": 22,
        "data": address(init),
        "error": 0,
        "sev_fd": 7,
        "vmsa_features": 1,
        "flags": 0,
        "ghcb_version": 2,
    }


def test_tdx_command_enotty(vm: Vm, documented_host: None) -> None:
    with pytest.raises(KvmError) as info:
        vm.tdx_command(TdxCmd.FINALIZE_VM)
    assert raised(info) == ("KVM_MEMORY_ENCRYPT_OP(FINALIZE_VM)", errno.ENOTTY, "ENOTTY")
    assert info.value.fields == {"id": 4, "flags": 0, "data": 0, "hw_error": 0}


def test_pre_fault_memory_unsupported(vm: Vm, documented_host: None) -> None:
    gmem, mapping = shared_gmem(vm)
    vm.set_memory_region(0, 0, mapping.view, gmem, 0)
    vcpu = vm.create_vcpu(0)
    request: Any = ffi.new("struct kvm_pre_fault_memory *", {"gpa": 0x1000, "size": 0x2000})
    with pytest.raises(KvmError) as info:
        vcpu.ioctl("KVM_PRE_FAULT_MEMORY", request)
    assert (info.value.call, info.value.errno) == ("KVM_PRE_FAULT_MEMORY", errno.EOPNOTSUPP)
    assert info.value.fields == {"gpa": 0x1000, "size": 0x2000, "flags": 0}
    assert (request.gpa, request.size) == (0x1000, 0x2000)  # no progress recorded
    request.flags = 1  # the generic checks come first
    with pytest.raises(KvmError) as info:
        vcpu.ioctl("KVM_PRE_FAULT_MEMORY", request)
    assert raised(info) == ("KVM_PRE_FAULT_MEMORY", errno.EINVAL, "EINVAL")


def test_rfc_map_memory_einval(vm: Vm, documented_host: None) -> None:
    vcpu = vm.create_vcpu(0)
    mapping: Any = ffi.new("struct kvm_memory_mapping *", {"base_gfn": 1, "nr_pages": 2})
    with pytest.raises(KvmError) as info:
        vcpu.ioctl("KVM_MAP_MEMORY", mapping)
    assert raised(info) == ("KVM_MAP_MEMORY", errno.EINVAL, "EINVAL")
    assert info.value.fields == {"base_gfn": 1, "nr_pages": 2, "flags": 0, "source": 0}
    assert has_rfc_map_memory(vcpu) is False


def test_probe(vm: Vm, documented_host: None) -> None:
    caps = probe(vm, vm.create_vcpu(0))
    assert caps.vm_types == frozenset({VmType.DEFAULT})
    assert caps.user_memory2 is True
    assert caps.guest_memfd is True
    assert caps.guest_memfd_flags == 3
    assert caps.memory_attributes == 0
    assert caps.pre_fault_memory is False
    assert caps.map_memory is False
    assert caps.nr_memslots == 32764
    assert vm_types(vm.kvm) == frozenset({VmType.DEFAULT})
    assert vm.check_extension(Cap.GUEST_MEMFD_FLAGS) == 3
    assert vm.kvm.check_extension(Cap.VM_TYPES) == 1


def test_probe_of_unknown_capability_is_zero(vm: Vm) -> None:
    # An unknown number answers 0 rather than failing; probe() must pass that through.
    assert vm.probe(0x7FFF) == 0  # type: ignore[arg-type]


# --- KvmError ----------------------------------------------------------------------------------


def test_kvm_error_message_names_call_errno_and_values(vm: Vm) -> None:
    with pytest.raises(KvmError) as info:
        vm.create_guest_memfd(0x1800, SHARED)
    message = str(info.value)
    assert "KVM_CREATE_GUEST_MEMFD" in message
    assert "EINVAL" in message
    assert "size=0x1800" in message
    assert "flags=0x3" in message
    assert "step-x: " in str(info.value.at("step-x"))


def test_open_of_missing_device(gmem_host: None, tmp_path: Any) -> None:
    before = open_fds()
    missing = f"{tmp_path}/no-kvm"
    with pytest.raises(KvmError) as info:
        Kvm(path=missing)
    assert raised(info) == (f"open {missing}", errno.ENOENT, "ENOENT")
    assert open_fds() == before


# --- fd hygiene ------------------------------------------------------------------------------


def _build(kvm: Kvm) -> tuple[Vm, list[GuestMemfd]]:
    """A VM with 2 vCPUs, 3 guest_memfds (the first mapped) and a memslot on each."""
    vm = kvm.create_vm()
    vm.create_vcpu(0)
    vm.create_vcpu(1)
    gmems = [vm.create_guest_memfd(MIB, SHARED) for _ in range(3)]
    view = gmems[0].mmap().view
    for slot, gmem in enumerate(gmems):
        # Every slot's userspace_addr may alias the one mapping; KVM allows that.
        vm.set_memory_region(slot, slot * MIB, view, gmem, 0)
    return vm, gmems


def test_with_block_closes_every_fd(gmem_host: None) -> None:
    before = open_fds()
    with Kvm() as kvm:
        vm, gmems = _build(kvm)
        # /dev/kvm, the VM, 2 vCPUs, 3 guest_memfds, and the mapping's own dup of its fd.
        assert open_fds() == before + 8
    assert open_fds() == before
    assert kvm.closed and vm.closed
    assert all(v.closed for v in vm.vcpus)
    assert all(g.closed for g in gmems)


def test_escaping_error_closes_every_fd(gmem_host: None) -> None:
    before = open_fds()
    with pytest.raises(KvmError) as info, Kvm() as kvm:
        vm, gmems = _build(kvm)
        vm.set_memory_region(9, MIB // 2, gmems[0].mmap().view, gmems[1], 0)
    assert raised(info) == ("KVM_SET_USER_MEMORY_REGION2", errno.EEXIST, "EEXIST")
    assert open_fds() == before
    assert kvm.closed and vm.closed
    assert all(g.closed for g in gmems)


def test_closing_the_parent_closes_children_once(gmem_host: None) -> None:
    before = open_fds()
    kvm = Kvm()
    vm = kvm.create_vm()
    vcpu = vm.create_vcpu(0)
    kept, mapping = shared_gmem(vm)
    early = vm.create_guest_memfd(MIB, SHARED)
    early.close()
    # The number `early` held is free again; a second close of it would hit this file.
    bystander = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert bystander == early.fd
        kvm.close()
        assert (kvm.closed, vm.closed, vcpu.closed, kept.closed) == (True, True, True, True)
        with pytest.raises(ValueError, match="released"):
            len(mapping.view)
        assert open_fds() == before + 1
        kvm.close()
        vm.close()
        kept.close()
        assert open_fds() == before + 1
        assert stat.S_ISCHR(os.fstat(bystander).st_mode)
    finally:
        os.close(bystander)
    assert open_fds() == before


def test_slot_over_a_slice_of_a_mapping_still_closes(gmem_host: None) -> None:
    before = open_fds()
    with Kvm() as kvm:
        vm = kvm.create_vm()
        gmem, mapping = shared_gmem(vm, 2 * MIB)
        vm.set_memory_region(0, 0, mapping.view[:MIB], gmem, 0)
        vm.set_memory_region(1, 4 * MIB, mapping.view[MIB:], gmem, MIB)
    assert open_fds() == before


# --- KVM_RUN ---------------------------------------------------------------------------------

# mov al, 0x42 ; out 0x10, al ; hlt  (real mode)
GUEST_CODE = bytes.fromhex("B042E610F4")


def test_run_tiny_real_mode_guest(vm: Vm) -> None:
    gmem, mapping = shared_gmem(vm)
    mapping.view[0x1000 : 0x1000 + len(GUEST_CODE)] = GUEST_CODE
    vm.set_memory_region(0, 0, mapping.view, gmem, 0)
    vcpu = vm.create_vcpu(0)
    sregs = vcpu.get_sregs()
    sregs.cs.base = 0
    sregs.cs.selector = 0
    vcpu.set_sregs(sregs)
    vcpu.set_regs(rip=0x1000, rflags=0x2)

    run = vcpu.run()
    assert run.exit_reason == EXIT_IO
    io = run.exit.io
    assert (io.direction, io.size, io.port, io.count) == (EXIT_IO_OUT, 1, 0x10, 1)
    assert vcpu.run_area[io.data_offset] == 0x42

    run = vcpu.run()
    assert run.exit_reason == EXIT_HLT
