"""The KVM uapi as cvmlaunch declares it, checked against the kernel's own numbers.

Every expected value below is typed in from the research note
/work/shared/reference/kvm-abi.md (sizes, offsets and ioctl numbers there were compiled and
printed with gcc against the Linux uapi headers) or, for the x86 register structs and `kvm_run`
that the note only names, from arch/x86/include/uapi/asm/kvm.h and include/uapi/linux/kvm.h.
Nothing here is derived from `cvmlaunch.abi.kvm` itself, so a wrong declaration fails a test.
No /dev/kvm is needed.
"""

from __future__ import annotations

import errno

import pytest

from cvmlaunch.abi.kvm import (
    EXIT_HLT,
    EXIT_INTERNAL_ERROR,
    EXIT_IO,
    EXIT_IO_OUT,
    EXIT_MEMORY_FAULT,
    IOCTL_NAMES,
    IOCTLS,
    KVM_API_VERSION,
    KVMIO,
    MEMORY_ATTRIBUTE_PRIVATE,
    PAGE_SIZE,
    RFC_MAP_MEMORY_CAP,
    TDX_MEASURE_MEMORY_REGION,
    Cap,
    GuestMemfdFlag,
    MapFlag,
    MemFlag,
    SevCmd,
    TdxCmd,
    VmType,
    errno_name,
    ffi,
    ioctl_number,
)

# --- ioctl numbers (kvm-abi.md §1.1, plus the vCPU state ioctls from asm/kvm.h) -------------

# name -> (number, struct the argument points to, or None for an immediate argument)
EXPECTED_IOCTLS: dict[str, tuple[int, str | None]] = {
    "KVM_GET_API_VERSION": (0xAE00, None),
    "KVM_CREATE_VM": (0xAE01, None),
    "KVM_CHECK_EXTENSION": (0xAE03, None),
    "KVM_GET_VCPU_MMAP_SIZE": (0xAE04, None),
    "KVM_CREATE_VCPU": (0xAE41, None),
    "KVM_SET_USER_MEMORY_REGION2": (0x40A0AE49, "struct kvm_userspace_memory_region2"),
    "KVM_RUN": (0xAE80, None),
    "KVM_GET_REGS": (0x8090AE81, "struct kvm_regs"),
    "KVM_SET_REGS": (0x4090AE82, "struct kvm_regs"),
    "KVM_GET_SREGS": (0x8138AE83, "struct kvm_sregs"),
    "KVM_SET_SREGS": (0x4138AE84, "struct kvm_sregs"),
    "KVM_SET_MSRS": (0x4008AE89, "struct kvm_msrs"),
    "KVM_GET_FPU": (0x81A0AE8C, "struct kvm_fpu"),
    "KVM_SET_FPU": (0x41A0AE8D, "struct kvm_fpu"),
    "KVM_ENABLE_CAP": (0x4068AEA3, None),
    # The size field says `unsigned long`; the argument really is a kvm_sev_cmd/kvm_tdx_cmd.
    "KVM_MEMORY_ENCRYPT_OP": (0xC008AEBA, None),
    "KVM_SET_MEMORY_ATTRIBUTES": (0x4020AED2, "struct kvm_memory_attributes"),
    "KVM_CREATE_GUEST_MEMFD": (0xC040AED4, "struct kvm_create_guest_memfd"),
    "KVM_PRE_FAULT_MEMORY": (0xC040AED5, "struct kvm_pre_fault_memory"),
    # RFC v1 (2024-03-01), never merged: same nr as PRE_FAULT_MEMORY, 32-byte struct.
    "KVM_MAP_MEMORY": (0xC020AED5, "struct kvm_memory_mapping"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_IOCTLS))
def test_ioctl_number(name: str) -> None:
    number, struct = EXPECTED_IOCTLS[name]
    ioctl = IOCTLS[name]
    assert ioctl.name == name
    assert ioctl.number == number, f"{name}: {ioctl.number:#x} != {number:#x}"
    assert ioctl.struct == struct


def test_ioctl_table_has_no_unchecked_entry() -> None:
    assert set(IOCTLS) == set(EXPECTED_IOCTLS)


def test_ioctl_names_map_every_number_back() -> None:
    # PRE_FAULT_MEMORY and the RFC's MAP_MEMORY share nr 0xD5 but must not share a number.
    expected = {number: name for name, (number, _) in EXPECTED_IOCTLS.items()}
    assert expected == IOCTL_NAMES


@pytest.mark.parametrize(
    ("direction", "nr", "size", "kind", "expected"),
    [
        (0, 0x80, 0, KVMIO, 0xAE80),  # _IO(KVMIO, 0x80): KVM_RUN
        (1, 0x46, 32, KVMIO, 0x4020AE46),  # _IOW: KVM_SET_USER_MEMORY_REGION (v1)
        (2, 0xBB, 16, KVMIO, 0x8010AEBB),  # _IOR: KVM_MEMORY_ENCRYPT_REG_REGION
        (3, 0x05, 8, KVMIO, 0xC008AE05),  # _IOWR: KVM_GET_SUPPORTED_CPUID
        (3, 0xD5, 24, KVMIO, 0xC018AED5),  # _IOWR: RFC v2 KVM_MAP_MEMORY
        (3, 0x00, 16, ord("S"), 0xC0105300),  # _IOWR('S', 0, 16): SEV_ISSUE_CMD on /dev/sev
    ],
)
def test_ioctl_number_encoding(
    direction: int, nr: int, size: int, kind: int, expected: int
) -> None:
    assert ioctl_number(direction, nr, size, kind) == expected


def test_ioctl_number_defaults_to_kvmio() -> None:
    assert KVMIO == 0xAE
    assert ioctl_number(3, 0xD4, 64) == 0xC040AED4


# --- struct sizes ----------------------------------------------------------------------------

EXPECTED_SIZES: dict[str, int] = {
    "struct kvm_userspace_memory_region2": 160,
    "struct kvm_create_guest_memfd": 64,
    "struct kvm_memory_attributes": 32,
    "struct kvm_pre_fault_memory": 64,
    "struct kvm_memory_mapping": 32,
    "struct kvm_sev_cmd": 24,
    "struct kvm_sev_init": 48,
    "struct kvm_sev_launch_start": 40,
    "struct kvm_sev_launch_update_data": 16,
    "struct kvm_sev_launch_measure": 16,
    "struct kvm_sev_snp_launch_start": 64,
    "struct kvm_sev_snp_launch_update": 64,
    "struct kvm_sev_snp_launch_finish": 88,
    "struct kvm_tdx_cmd": 24,
    # 256 bytes mirroring TD_PARAMS, then kvm_cpuid2's 8-byte header; entries are flexible.
    "struct kvm_tdx_init_vm": 264,
    "struct kvm_tdx_init_mem_region": 24,
    "struct kvm_cpuid_entry2": 40,
    "struct kvm_cpuid2": 8,
    "struct kvm_regs": 144,
    "struct kvm_sregs": 312,
    "struct kvm_fpu": 416,
    "struct kvm_segment": 24,
    "struct kvm_dtable": 16,
    "struct kvm_msr_entry": 16,
    "struct kvm_msrs": 8,
    "struct kvm_run_io": 16,
    "struct kvm_run_memory_fault": 24,
    "union kvm_run_exit": 256,
}


@pytest.mark.parametrize("struct", sorted(EXPECTED_SIZES))
def test_struct_size(struct: str) -> None:
    assert ffi.sizeof(struct) == EXPECTED_SIZES[struct]


# --- field offsets ---------------------------------------------------------------------------

_SEGMENT_FIELDS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
_REGS = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "rflags",
)  # fmt: skip

EXPECTED_OFFSETS: dict[str, dict[str, int]] = {
    # kvm-abi.md §1.3
    "struct kvm_create_guest_memfd": {"size": 0, "flags": 8, "reserved": 16},
    # §1.4
    "struct kvm_userspace_memory_region2": {
        "slot": 0,
        "flags": 4,
        "guest_phys_addr": 8,
        "memory_size": 16,
        "userspace_addr": 24,
        "guest_memfd_offset": 32,
        "guest_memfd": 40,
        "pad1": 44,
        "pad2": 48,
    },
    # §1.5
    "struct kvm_memory_attributes": {"address": 0, "size": 8, "attributes": 16, "flags": 24},
    # §1.6
    "struct kvm_pre_fault_memory": {"gpa": 0, "size": 8, "flags": 16, "padding": 24},
    # §2 (RFC v1)
    "struct kvm_memory_mapping": {"base_gfn": 0, "nr_pages": 8, "flags": 16, "source": 24},
    # §3.1
    "struct kvm_sev_cmd": {"id": 0, "pad0": 4, "data": 8, "error": 16, "sev_fd": 20},
    # §3.3
    "struct kvm_sev_init": {
        "vmsa_features": 0,
        "flags": 8,
        "ghcb_version": 12,
        "pad1": 14,
        "pad2": 16,
    },
    "struct kvm_sev_launch_start": {
        "handle": 0,
        "policy": 4,
        "dh_uaddr": 8,
        "dh_len": 16,
        "pad0": 20,
        "session_uaddr": 24,
        "session_len": 32,
        "pad1": 36,
    },
    "struct kvm_sev_launch_update_data": {"uaddr": 0, "len": 8, "pad0": 12},
    "struct kvm_sev_launch_measure": {"uaddr": 0, "len": 8, "pad0": 12},
    "struct kvm_sev_snp_launch_start": {
        "policy": 0,
        "gosvw": 8,
        "flags": 24,
        "pad0": 26,
        "pad1": 32,
    },
    "struct kvm_sev_snp_launch_update": {
        "gfn_start": 0,
        "uaddr": 8,
        "len": 16,
        "type": 24,
        "pad0": 25,
        "flags": 26,
        "pad1": 28,
        "pad2": 32,
    },
    "struct kvm_sev_snp_launch_finish": {
        "id_block_uaddr": 0,
        "id_auth_uaddr": 8,
        "id_block_en": 16,
        "auth_key_en": 17,
        "vcek_disabled": 18,
        "host_data": 19,
        "pad0": 51,
        "flags": 54,
        "pad1": 56,
    },
    # §4.1
    "struct kvm_tdx_cmd": {"id": 0, "flags": 4, "data": 8, "hw_error": 16},
    "struct kvm_tdx_init_vm": {
        "attributes": 0,
        "xfam": 8,
        "mrconfigid": 16,
        "mrowner": 64,
        "mrownerconfig": 112,
        "reserved": 160,
        "cpuid": 256,
        "cpuid.nent": 256,
        "cpuid.entries": 264,
    },
    "struct kvm_tdx_init_mem_region": {"source_addr": 0, "gpa": 8, "nr_pages": 16},
    # asm/kvm.h
    "struct kvm_cpuid_entry2": {
        "function": 0,
        "index": 4,
        "flags": 8,
        "eax": 12,
        "ebx": 16,
        "ecx": 20,
        "edx": 24,
        "padding": 28,
    },
    "struct kvm_cpuid2": {"nent": 0, "padding": 4, "entries": 8},
    "struct kvm_regs": {name: 8 * i for i, name in enumerate(_REGS)},
    "struct kvm_segment": {
        "base": 0,
        "limit": 8,
        "selector": 12,
        "type": 14,
        "present": 15,
        "dpl": 16,
        "db": 17,
        "s": 18,
        "l": 19,
        "g": 20,
        "avl": 21,
        "unusable": 22,
        "padding": 23,
    },
    "struct kvm_dtable": {"base": 0, "limit": 8, "padding": 10},
    "struct kvm_sregs": {name: 24 * i for i, name in enumerate(_SEGMENT_FIELDS)}
    | {
        "gdt": 192,
        "idt": 208,
        "cr0": 224,
        "cr2": 232,
        "cr3": 240,
        "cr4": 248,
        "cr8": 256,
        "efer": 264,
        "apic_base": 272,
        "interrupt_bitmap": 280,
        "cs.selector": 12,
        "ss.base": 120,
    },
    "struct kvm_fpu": {
        "fpr": 0,
        "fcw": 128,
        "fsw": 130,
        "ftwx": 132,
        "pad1": 133,
        "last_opcode": 134,
        "last_ip": 136,
        "last_dp": 144,
        "xmm": 152,
        "mxcsr": 408,
        "pad2": 412,
    },
    "struct kvm_msr_entry": {"index": 0, "reserved": 4, "data": 8},
    "struct kvm_msrs": {"nmsrs": 0, "pad": 4, "entries": 8},
    # linux/kvm.h: the exit union starts at 32 (§1.7)
    "struct kvm_run": {
        "request_interrupt_window": 0,
        "immediate_exit": 1,
        "padding1": 2,
        "exit_reason": 8,
        "ready_for_interrupt_injection": 12,
        "if_flag": 13,
        "flags": 14,
        "cr8": 16,
        "apic_base": 24,
        "exit": 32,
        "exit.io.direction": 32 + 0,
        "exit.io.size": 32 + 1,
        "exit.io.port": 32 + 2,
        "exit.io.count": 32 + 4,
        "exit.io.data_offset": 32 + 8,
        "exit.internal.suberror": 32 + 0,
        "exit.internal.ndata": 32 + 4,
        "exit.internal.data": 32 + 8,
        "exit.memory_fault.flags": 32 + 0,
        "exit.memory_fault.gpa": 32 + 8,
        "exit.memory_fault.size": 32 + 16,
    },
}

_OFFSET_CASES = [
    pytest.param(struct, field, offset, id=f"{struct.split()[-1]}.{field}")
    for struct, fields in sorted(EXPECTED_OFFSETS.items())
    for field, offset in fields.items()
]


@pytest.mark.parametrize(("struct", "field", "offset"), _OFFSET_CASES)
def test_field_offset(struct: str, field: str, offset: int) -> None:
    assert ffi.offsetof(struct, *field.split(".")) == offset


@pytest.mark.parametrize("struct", sorted(EXPECTED_OFFSETS))
def test_offset_table_covers_every_field(struct: str) -> None:
    # A field added to (or renamed in) a declaration must show up in the expectations too.
    declared = {name for name, _ in ffi.typeof(struct).fields}
    assert declared == {f for f in EXPECTED_OFFSETS[struct] if "." not in f}


@pytest.mark.parametrize(
    ("struct", "field", "length"),
    [
        ("struct kvm_sev_snp_launch_start", "gosvw", 16),
        ("struct kvm_sev_snp_launch_finish", "host_data", 32),
        ("struct kvm_userspace_memory_region2", "pad2", 14),
        ("struct kvm_create_guest_memfd", "reserved", 6),
        ("struct kvm_pre_fault_memory", "padding", 5),
        ("struct kvm_tdx_init_vm", "mrconfigid", 6),
        ("struct kvm_tdx_init_vm", "reserved", 12),
        ("struct kvm_sregs", "interrupt_bitmap", 4),
        ("struct kvm_fpu", "xmm", 16),
    ],
)
def test_array_lengths(struct: str, field: str, length: int) -> None:
    fields = dict(ffi.typeof(struct).fields)
    assert fields[field].type.length == length


# --- constants -------------------------------------------------------------------------------


def test_cap_numbers() -> None:
    # §1.8 for 231..244; KVM_CAP_NR_MEMSLOTS is 10 in linux/kvm.h.
    assert {c.name: int(c) for c in Cap} == {
        "NR_MEMSLOTS": 10,
        "USER_MEMORY2": 231,
        "MEMORY_FAULT_INFO": 232,
        "MEMORY_ATTRIBUTES": 233,
        "GUEST_MEMFD": 234,
        "VM_TYPES": 235,
        "PRE_FAULT_MEMORY": 236,
        "GUEST_MEMFD_FLAGS": 244,
    }
    assert RFC_MAP_MEMORY_CAP == 236


def test_vm_types() -> None:
    assert {t.name: int(t) for t in VmType} == {
        "DEFAULT": 0,
        "SW_PROTECTED": 1,
        "SEV": 2,
        "SEV_ES": 3,
        "SNP": 4,
        "TDX": 5,
    }


def test_sev_command_ids() -> None:
    assert {c.name: int(c) for c in SevCmd} == {
        "LAUNCH_START": 2,
        "LAUNCH_UPDATE_DATA": 3,
        "LAUNCH_UPDATE_VMSA": 4,
        "LAUNCH_MEASURE": 6,
        "LAUNCH_FINISH": 7,
        "INIT2": 22,
        "SNP_LAUNCH_START": 100,
        "SNP_LAUNCH_UPDATE": 101,
        "SNP_LAUNCH_FINISH": 102,
    }


def test_tdx_command_ids() -> None:
    assert {c.name: int(c) for c in TdxCmd} == {
        "CAPABILITIES": 0,
        "INIT_VM": 1,
        "INIT_VCPU": 2,
        "INIT_MEM_REGION": 3,
        "FINALIZE_VM": 4,
    }
    assert TDX_MEASURE_MEMORY_REGION == 1


def test_memory_flags() -> None:
    assert {f.name: int(f) for f in GuestMemfdFlag} == {"MMAP": 1, "INIT_SHARED": 2}
    assert {f.name: int(f) for f in MemFlag} == {
        "LOG_DIRTY_PAGES": 1,
        "READONLY": 2,
        "GUEST_MEMFD": 4,
    }
    assert MEMORY_ATTRIBUTE_PRIVATE == 8
    # The RFC's access flags were bit numbers 0..3.
    assert {f.name: int(f) for f in MapFlag} == {"WRITE": 1, "EXEC": 2, "USER": 4, "PRIVATE": 8}


def test_exit_reasons_and_versions() -> None:
    assert (EXIT_IO, EXIT_HLT, EXIT_INTERNAL_ERROR, EXIT_MEMORY_FAULT) == (2, 5, 17, 39)
    assert EXIT_IO_OUT == 1  # KVM_EXIT_IO_OUT; KVM_EXIT_IO_IN is 0
    assert KVM_API_VERSION == 12
    assert PAGE_SIZE == 4096


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (errno.EAGAIN, "EAGAIN"),
        (11, "EAGAIN"),
        (22, "EINVAL"),
        (17, "EEXIST"),
        (25, "ENOTTY"),
        (9, "EBADF"),
        (9999, "E9999"),
        (0, "E0"),
    ],
)
def test_errno_name(code: int, name: str) -> None:
    assert errno_name(code) == name
