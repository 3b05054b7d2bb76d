"""The KVM uapi a launch uses: structs as cffi declarations, ioctl numbers, constants.

Source: Linux include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (7.3; 6.18 is
identical for everything here), Documentation/virt/kvm/api.rst, and the RFC "KVM: Prepopulate
guest memory API" (2024-03-01) for `kvm_memory_mapping`, which never shipped. Only the parts
of `kvm_run` a launch reads are declared; its union starts at offset 32 as in the kernel.

The ioctl numbers are computed from the struct sizes cffi lays out, so a wrong declaration
shows up as a wrong number in the tests, not as a kernel writing past a buffer.
"""

from __future__ import annotations

import errno
from enum import IntEnum, IntFlag

from cffi import FFI

from cvmlaunch.namedtuple import NamedTuple

CDEF = """
struct kvm_userspace_memory_region2 {
    uint32_t slot; uint32_t flags; uint64_t guest_phys_addr; uint64_t memory_size;
    uint64_t userspace_addr; uint64_t guest_memfd_offset; uint32_t guest_memfd; uint32_t pad1;
    uint64_t pad2[14];
};
struct kvm_create_guest_memfd { uint64_t size; uint64_t flags; uint64_t reserved[6]; };
struct kvm_memory_attributes {
    uint64_t address; uint64_t size; uint64_t attributes; uint64_t flags;
};
struct kvm_pre_fault_memory { uint64_t gpa; uint64_t size; uint64_t flags; uint64_t padding[5]; };
struct kvm_memory_mapping {
    uint64_t base_gfn; uint64_t nr_pages; uint64_t flags; uint64_t source;
};

struct kvm_sev_cmd { uint32_t id; uint32_t pad0; uint64_t data; uint32_t error; uint32_t sev_fd; };
struct kvm_sev_init {
    uint64_t vmsa_features; uint32_t flags; uint16_t ghcb_version; uint16_t pad1; uint32_t pad2[8];
};
struct kvm_sev_launch_start {
    uint32_t handle; uint32_t policy; uint64_t dh_uaddr; uint32_t dh_len; uint32_t pad0;
    uint64_t session_uaddr; uint32_t session_len; uint32_t pad1;
};
struct kvm_sev_launch_update_data { uint64_t uaddr; uint32_t len; uint32_t pad0; };
struct kvm_sev_launch_measure { uint64_t uaddr; uint32_t len; uint32_t pad0; };
struct kvm_sev_snp_launch_start {
    uint64_t policy; uint8_t gosvw[16]; uint16_t flags; uint8_t pad0[6]; uint64_t pad1[4];
};
struct kvm_sev_snp_launch_update {
    uint64_t gfn_start; uint64_t uaddr; uint64_t len; uint8_t type; uint8_t pad0; uint16_t flags;
    uint32_t pad1; uint64_t pad2[4];
};
struct kvm_sev_snp_launch_finish {
    uint64_t id_block_uaddr; uint64_t id_auth_uaddr; uint8_t id_block_en; uint8_t auth_key_en;
    uint8_t vcek_disabled; uint8_t host_data[32]; uint8_t pad0[3]; uint16_t flags;
    uint64_t pad1[4];
};

struct kvm_tdx_cmd { uint32_t id; uint32_t flags; uint64_t data; uint64_t hw_error; };
struct kvm_cpuid_entry2 {
    uint32_t function; uint32_t index; uint32_t flags; uint32_t eax; uint32_t ebx; uint32_t ecx;
    uint32_t edx; uint32_t padding[3];
};
struct kvm_cpuid2 { uint32_t nent; uint32_t padding; struct kvm_cpuid_entry2 entries[]; };
struct kvm_tdx_init_vm {
    uint64_t attributes; uint64_t xfam; uint64_t mrconfigid[6]; uint64_t mrowner[6];
    uint64_t mrownerconfig[6]; uint64_t reserved[12]; struct kvm_cpuid2 cpuid;
};
struct kvm_tdx_init_mem_region { uint64_t source_addr; uint64_t gpa; uint64_t nr_pages; };

struct kvm_regs {
    uint64_t rax; uint64_t rbx; uint64_t rcx; uint64_t rdx; uint64_t rsi; uint64_t rdi;
    uint64_t rsp; uint64_t rbp; uint64_t r8; uint64_t r9; uint64_t r10; uint64_t r11;
    uint64_t r12; uint64_t r13; uint64_t r14; uint64_t r15; uint64_t rip; uint64_t rflags;
};
struct kvm_segment {
    uint64_t base; uint32_t limit; uint16_t selector; uint8_t type; uint8_t present; uint8_t dpl;
    uint8_t db; uint8_t s; uint8_t l; uint8_t g; uint8_t avl; uint8_t unusable; uint8_t padding;
};
struct kvm_dtable { uint64_t base; uint16_t limit; uint16_t padding[3]; };
struct kvm_sregs {
    struct kvm_segment cs; struct kvm_segment ds; struct kvm_segment es; struct kvm_segment fs;
    struct kvm_segment gs; struct kvm_segment ss; struct kvm_segment tr; struct kvm_segment ldt;
    struct kvm_dtable gdt; struct kvm_dtable idt;
    uint64_t cr0; uint64_t cr2; uint64_t cr3; uint64_t cr4; uint64_t cr8; uint64_t efer;
    uint64_t apic_base; uint64_t interrupt_bitmap[4];
};
struct kvm_fpu {
    uint8_t fpr[8][16]; uint16_t fcw; uint16_t fsw; uint8_t ftwx; uint8_t pad1;
    uint16_t last_opcode; uint64_t last_ip; uint64_t last_dp; uint8_t xmm[16][16];
    uint32_t mxcsr; uint32_t pad2;
};
struct kvm_msr_entry { uint32_t index; uint32_t reserved; uint64_t data; };
struct kvm_msrs { uint32_t nmsrs; uint32_t pad; struct kvm_msr_entry entries[]; };

struct kvm_run_io {
    uint8_t direction; uint8_t size; uint16_t port; uint32_t count; uint64_t data_offset;
};
struct kvm_run_internal { uint32_t suberror; uint32_t ndata; uint64_t data[16]; };
struct kvm_run_memory_fault { uint64_t flags; uint64_t gpa; uint64_t size; };
union kvm_run_exit {
    struct kvm_run_io io; struct kvm_run_internal internal;
    struct kvm_run_memory_fault memory_fault; uint8_t padding[256];
};
struct kvm_run {
    uint8_t request_interrupt_window; uint8_t immediate_exit; uint8_t padding1[6];
    uint32_t exit_reason; uint8_t ready_for_interrupt_injection; uint8_t if_flag; uint16_t flags;
    uint64_t cr8; uint64_t apic_base; union kvm_run_exit exit;
};

int ioctl(int fd, unsigned long request, ...);
int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
              unsigned int flags);
"""

ffi = FFI()
ffi.cdef(CDEF)

KVMIO = 0xAE
KVM_API_VERSION = 12
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

_NONE, _WRITE, _READ = 0, 1, 2


def ioctl_number(direction: int, nr: int, size: int, kind: int = KVMIO) -> int:
    """The Linux `_IOC(dir, type, nr, size)` encoding (asm-generic/ioctl.h)."""
    return direction << 30 | size << 16 | kind << 8 | nr


class Ioctl(NamedTuple):
    """One ioctl: its name (for errors), number, and the struct its argument points to."""

    name: str
    number: int
    struct: str | None


def _ioctl(name: str, direction: int, nr: int, struct: str | None = None, size: int = 0) -> Ioctl:
    if struct is not None:
        size = ffi.sizeof(struct)
    return Ioctl(name, ioctl_number(direction, nr, size), struct)


_RW = _READ | _WRITE

# kvm_sev_cmd and kvm_tdx_cmd travel under KVM_MEMORY_ENCRYPT_OP, whose number encodes an
# `unsigned long` (8 bytes) although the argument points to the 24-byte command struct.
IOCTLS: dict[str, Ioctl] = {
    i.name: i
    for i in (
        _ioctl("KVM_GET_API_VERSION", _NONE, 0x00),
        _ioctl("KVM_CREATE_VM", _NONE, 0x01),
        _ioctl("KVM_CHECK_EXTENSION", _NONE, 0x03),
        _ioctl("KVM_GET_VCPU_MMAP_SIZE", _NONE, 0x04),
        _ioctl("KVM_CREATE_VCPU", _NONE, 0x41),
        _ioctl("KVM_SET_USER_MEMORY_REGION2", _WRITE, 0x49, "struct kvm_userspace_memory_region2"),
        _ioctl("KVM_RUN", _NONE, 0x80),
        _ioctl("KVM_GET_REGS", _READ, 0x81, "struct kvm_regs"),
        _ioctl("KVM_SET_REGS", _WRITE, 0x82, "struct kvm_regs"),
        _ioctl("KVM_GET_SREGS", _READ, 0x83, "struct kvm_sregs"),
        _ioctl("KVM_SET_SREGS", _WRITE, 0x84, "struct kvm_sregs"),
        _ioctl("KVM_SET_MSRS", _WRITE, 0x89, "struct kvm_msrs"),
        _ioctl("KVM_GET_FPU", _READ, 0x8C, "struct kvm_fpu"),
        _ioctl("KVM_SET_FPU", _WRITE, 0x8D, "struct kvm_fpu"),
        _ioctl("KVM_ENABLE_CAP", _WRITE, 0xA3, size=104),
        _ioctl("KVM_MEMORY_ENCRYPT_OP", _RW, 0xBA, size=8),
        _ioctl("KVM_SET_MEMORY_ATTRIBUTES", _WRITE, 0xD2, "struct kvm_memory_attributes"),
        _ioctl("KVM_CREATE_GUEST_MEMFD", _RW, 0xD4, "struct kvm_create_guest_memfd"),
        _ioctl("KVM_PRE_FAULT_MEMORY", _RW, 0xD5, "struct kvm_pre_fault_memory"),
        # The RFC's number: sent only when KVM_CAP_MAP_MEMORY says the kernel is RFC-patched.
        _ioctl("KVM_MAP_MEMORY", _RW, 0xD5, "struct kvm_memory_mapping"),
    )
}
IOCTL_NAMES = {i.number: i.name for i in IOCTLS.values()}


class Cap(IntEnum):
    """KVM_CHECK_EXTENSION numbers a launch probes (asked at VM scope once a VM exists)."""

    NR_MEMSLOTS = 10
    USER_MEMORY2 = 231
    MEMORY_FAULT_INFO = 232
    MEMORY_ATTRIBUTES = 233
    GUEST_MEMFD = 234
    VM_TYPES = 235
    PRE_FAULT_MEMORY = 236
    GUEST_MEMFD_FLAGS = 244


# The RFC reused 236 for KVM_CAP_MAP_MEMORY; upstream gave 236 to PRE_FAULT_MEMORY. An
# RFC-patched kernel is told apart by the RFC ioctl answering, never by the number alone.
RFC_MAP_MEMORY_CAP = 236


class VmType(IntEnum):
    """KVM_CREATE_VM argument on x86 (bit n of KVM_CAP_VM_TYPES)."""

    DEFAULT = 0
    SW_PROTECTED = 1
    SEV = 2
    SEV_ES = 3
    SNP = 4
    TDX = 5


class MemFlag(IntFlag):
    """kvm_userspace_memory_region2.flags."""

    LOG_DIRTY_PAGES = 1 << 0
    READONLY = 1 << 1
    GUEST_MEMFD = 1 << 2


class GuestMemfdFlag(IntFlag):
    """kvm_create_guest_memfd.flags (KVM_CAP_GUEST_MEMFD_FLAGS)."""

    MMAP = 1 << 0
    INIT_SHARED = 1 << 1


MEMORY_ATTRIBUTE_PRIVATE = 1 << 3


class MapFlag(IntFlag):
    """kvm_memory_mapping.flags of the RFC; only PRIVATE has an upstream meaning."""

    WRITE = 1 << 0
    EXEC = 1 << 1
    USER = 1 << 2
    PRIVATE = 1 << 3


class SevCmd(IntEnum):
    """kvm_sev_cmd.id."""

    LAUNCH_START = 2
    LAUNCH_UPDATE_DATA = 3
    LAUNCH_UPDATE_VMSA = 4
    LAUNCH_MEASURE = 6
    LAUNCH_FINISH = 7
    INIT2 = 22
    SNP_LAUNCH_START = 100
    SNP_LAUNCH_UPDATE = 101
    SNP_LAUNCH_FINISH = 102


class SevStatus(IntEnum):
    """SEV firmware status codes, passed up in kvm_sev_cmd.error with EIO
    (include/uapi/linux/psp-sev.h, SEV_RET_*)."""

    SUCCESS = 0x00
    INVALID_GUEST_STATE = 0x02
    INVALID_LEN = 0x04
    POLICY_FAILURE = 0x07
    INVALID_ADDRESS = 0x09
    BAD_SIGNATURE = 0x0A
    BAD_MEASUREMENT = 0x0B
    INVALID_PARAM = 0x16
    INVALID_PAGE_STATE = 0x1A


def sev_status_name(code: int) -> str:
    """`BAD_SIGNATURE` for 0xa; `0x<n>` for statuses not named here."""
    try:
        return SevStatus(code).name
    except ValueError:
        return f"{code:#x}"


class TdxCmd(IntEnum):
    """kvm_tdx_cmd.id."""

    CAPABILITIES = 0
    INIT_VM = 1
    INIT_VCPU = 2
    INIT_MEM_REGION = 3
    FINALIZE_VM = 4


TDX_MEASURE_MEMORY_REGION = 1 << 0

# kvm_run.exit_reason values a launch handles.
EXIT_IO = 2
EXIT_HLT = 5
EXIT_SHUTDOWN = 8
EXIT_FAIL_ENTRY = 9
EXIT_INTERNAL_ERROR = 17
EXIT_MEMORY_FAULT = 39
EXIT_IO_OUT = 1

MSR_IA32_CR_PAT = 0x277
SEV_LAUNCH_MEASURE_SIZE = 48  # MEASURE (32-byte HMAC) then MNONCE (16 bytes)
GHCB_VERSION_DEFAULT = 2


def errno_name(code: int) -> str:
    """`EAGAIN` for 11; `E<n>` for numbers the platform does not name."""
    return errno.errorcode.get(code, f"E{code}")
