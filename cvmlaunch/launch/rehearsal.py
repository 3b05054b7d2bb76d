"""The rehearsal's proof: a tiny guest reads the populated pages back at their GPAs.

The guest runs in 32-bit flat protected mode without paging (so it reaches every GPA below
4 GiB), starting with ESI = the region's first byte and ECX = its length in dwords:

    again: lodsd            ; AD          eax = [esi], esi += 4
           add ebx, eax     ; 01 C3       s1 += dword
           add edi, ebx     ; 01 DF       s2 += s1   (order-sensitive: catches moved pages)
           loop again       ; E2 F9
           mov eax, ebx     ; 89 D8
           out 0x10, eax    ; E7 10       report s1
           mov eax, edi     ; 89 F8
           out 0x10, eax    ; E7 10       report s2
           hlt              ; F4

Both sums are mod 2^32 (a Fletcher-style checksum over little-endian dwords); one changed
byte always changes s1. The host computes the same sums from the plan's bytes.
"""

from __future__ import annotations

from array import array
from typing import Any

from cvmlaunch.abi.kvm import EXIT_HLT, EXIT_IO, EXIT_IO_OUT, PAGE_SIZE
from cvmlaunch.errors import LaunchError
from cvmlaunch.kvm import Vcpu
from cvmlaunch.namedtuple import NamedTuple

CHECKER_CODE = bytes.fromhex("AD 01C3 01DF E2F9 89D8 E710 89F8 E710 F4")
CHECKER_PORT = 0x10
_MASK = 0xFFFFFFFF
_REACH = 1 << 32  # what 32-bit addressing reaches


class Checksum(NamedTuple):
    s1: int
    s2: int

    def __str__(self) -> str:
        return f"{self.s1:08x}:{self.s2:08x}"


def checksum(data: Any) -> Checksum:
    """The guest's checksum of `data` (a whole number of dwords), computed on the host."""
    dwords = array("I")
    dwords.frombytes(data)
    s1 = s2 = 0
    for d in dwords:
        s1 += d
        s2 += s1
    return Checksum(s1 & _MASK, s2 & _MASK)


def flat_protected_mode(vcpu: Vcpu) -> None:
    """Load 32-bit flat code and data segments directly (no GDT needed), paging off."""
    sregs = vcpu.get_sregs()
    for name in ("cs", "ds", "es", "fs", "gs", "ss"):
        seg = getattr(sregs, name)
        seg.base, seg.limit, seg.g, seg.db, seg.present, seg.s, seg.dpl, seg.l = (
            0, 0xFFFFFFFF, 1, 1, 1, 1, 0, 0,
        )  # fmt: skip
        seg.type = 0xB if name == "cs" else 0x3  # execute/read accessed; read/write accessed
        seg.selector = 0x8 if name == "cs" else 0x10
    sregs.cr0 = (sregs.cr0 | 1) & ~(1 << 31)  # PE on, PG off
    sregs.efer = 0
    vcpu.set_sregs(sregs)


def read_back(vcpu: Vcpu, code_gpa: int, gpa: int, size: int) -> Checksum:
    """Run the checker over [gpa, gpa+size) inside the guest; its two reported sums."""
    if gpa + size > _REACH or size % PAGE_SIZE or not size:
        raise LaunchError(f"the rehearsal guest cannot read [{gpa:#x}, +{size:#x})")
    vcpu.set_regs(rip=code_gpa, rflags=0x2, rsi=gpa, rcx=size // 4)
    sums: list[int] = []
    while True:
        run = vcpu.run()
        if run.exit_reason == EXIT_HLT and len(sums) == 2:
            return Checksum(sums[0], sums[1])
        io = run.exit.io
        if run.exit_reason != EXIT_IO or io.direction != EXIT_IO_OUT or io.port != CHECKER_PORT:
            raise LaunchError(
                f"the rehearsal guest stopped unexpectedly (exit reason {run.exit_reason}) "
                f"reading [{gpa:#x}, +{size:#x})"
            )
        offset = io.data_offset
        sums.append(int.from_bytes(vcpu.run_area[offset : offset + io.size], "little"))
