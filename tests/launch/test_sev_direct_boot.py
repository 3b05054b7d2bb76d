"""SEV and SEV-ES measured direct boot on the emulated kernel: the 176-byte kernel hashes
table, which lies in part of a page, reaches the platform at its GPA and is measured as QEMU
measures it, so the launch digest is the one sev-snp-measure computes.

The table, its GPA and the digests come from the reference tool (sev-snp-measure), not from
the plan under test.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from sevsnpmeasure import guest as ref_guest
from sevsnpmeasure.ovmf import OVMF as REF_OVMF
from sevsnpmeasure.sev_hashes import SevHashes
from sevsnpmeasure.sev_mode import SevMode as RefSevMode

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature
from cvmlaunch.abi.kvm import PAGE_SIZE
from cvmlaunch.guest.spec import BootFile, CpuSpec, DirectBoot, GuestSpec, Technology
from cvmlaunch.launch import Backend, Verdict, launch
from cvmlaunch.launch.layout import regions
from cvmlaunch.launch.rehearsal import checksum
from cvmlaunch.launch.steps import plan_steps
from cvmlaunch.plan import build_plan
from cvmlaunch.sim import SimKernel
from cvmlaunch.sim import psp as sim_psp
from cvmlaunch.sim.usercopy import copy_from_user, read_struct
from tests.conftest import SNP_VECTORS

AMDSEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"  # the fixture build with a hashes area
KERNEL = SNP_VECTORS / "fake-kernel.bin"
INITRD = SNP_VECTORS / "test-initrd.cpio"
CMDLINE = "console=ttyS0 root=/dev/vda1"
CPU = "EPYC-v4"
_REF_MODES = {Technology.SEV: RefSevMode.SEV, Technology.SEV_ES: RefSevMode.SEV_ES}


def _spec(technology: Technology, vcpus: int) -> GuestSpec:
    boot = DirectBoot(BootFile(path=KERNEL), BootFile(path=INITRD), CMDLINE)
    cpu = CpuSpec.from_name(CPU)
    return GuestSpec(technology, AMDSEV, vcpus=vcpus, cpu=cpu, boot=boot)


def _reference_digest(technology: Technology, vcpus: int) -> bytes:
    digest = ref_guest.calc_launch_digest(
        _REF_MODES[technology], vcpus, cpu_signature(*CPU_MODELS[CPU]), str(AMDSEV),
        str(KERNEL), str(INITRD), CMDLINE, 0,
    )  # fmt: skip
    assert isinstance(digest, bytes)
    return digest


class _Received:
    """Every LAUNCH_UPDATE_DATA buffer the emulated firmware measures, by guest address."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.buffers: list[tuple[int, bytes]] = []
        real = sim_psp.Psp._launch_update_data

        def record(psp: Any, vm: Any, cmd: Any) -> None:
            params = read_struct("kvm_sev_launch_update_data", cmd.data)
            real(psp, vm, cmd)  # refuses what the firmware would refuse
            slot = next(
                s
                for s in vm.memory.slots.values()
                if s.userspace_addr <= params.uaddr < s.userspace_addr + s.npages * PAGE_SIZE
            )
            gpa = slot.base_gfn * PAGE_SIZE + params.uaddr - slot.userspace_addr
            self.buffers.append((gpa, bytes(copy_from_user(params.uaddr, params.len))))

        monkeypatch.setattr(sim_psp.Psp, "_launch_update_data", record)


@pytest.mark.reference
@pytest.mark.parametrize(
    ("technology", "vcpus"), [(Technology.SEV, 1), (Technology.SEV_ES, 1), (Technology.SEV_ES, 3)]
)
def test_kernel_hashes_table_reaches_the_platform(
    technology: Technology, vcpus: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = SevHashes(str(KERNEL), str(INITRD), CMDLINE).construct_table()
    table_gpa = REF_OVMF(str(AMDSEV)).sev_hashes_table_gpa()
    assert len(table) == 176 and table_gpa % PAGE_SIZE  # part of a page
    received = _Received(monkeypatch)
    plan = build_plan(_spec(technology, vcpus))
    record = launch(plan, Backend.SIM, kernel=SimKernel("snp"))
    # The kernel was handed the table itself, at its GPA, and measured exactly it.
    assert (table_gpa, table) in received.buffers
    assert received.buffers[-1] == (table_gpa, table)
    assert record.verdict is Verdict.MATCH
    assert record.reported == record.expected == _reference_digest(technology, vcpus)
    # The record names the call by the page it lies in and the SHA-256 of what it handed.
    calls: Any = record.doc["map_memory"]
    assert calls[-1]["gpa"] == f"{table_gpa:#x}" and calls[-1]["pages"] == 1
    assert calls[-1]["source_sha256"] == hashlib.sha256(table).hexdigest()
    assert record.doc["divergence"] is None


def test_a_partial_page_is_one_page_of_memory() -> None:
    plan = build_plan(_spec(Technology.SEV, 1))
    *_, step = plan_steps(plan)
    table_gpa = REF_OVMF(str(AMDSEV)).sev_hashes_table_gpa()
    assert (step.gpa, step.size, step.pages) == (table_gpa, 176, 1)
    page = table_gpa - table_gpa % PAGE_SIZE
    assert any(r.base <= page and page + PAGE_SIZE <= r.end for r in regions([step]))
    assert all(r.base % PAGE_SIZE == 0 and r.size % PAGE_SIZE == 0 for r in regions([step]))


@pytest.mark.kvm
@pytest.mark.parametrize("technology", [Technology.SEV, Technology.SEV_ES])
def test_rehearsal_reads_the_table_back_in_its_page(technology: Technology) -> None:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        pytest.skip(f"/dev/kvm cannot be opened here: {e.strerror}")
    table = SevHashes(str(KERNEL), str(INITRD), CMDLINE).construct_table()
    table_gpa = REF_OVMF(str(AMDSEV)).sev_hashes_table_gpa()
    page = bytearray(PAGE_SIZE)  # a default VM takes whole pages: the table, zero around it
    page[table_gpa % PAGE_SIZE : table_gpa % PAGE_SIZE + len(table)] = table
    record = launch(build_plan(_spec(technology, 2)), Backend.REHEARSAL)
    readback: Any = record.doc["readback"]
    assert readback[-1] == {
        "gpa": f"{table_gpa - table_gpa % PAGE_SIZE:#x}",
        "size": PAGE_SIZE,
        "expected": str(checksum(page)),
        "guest": str(checksum(page)),
    }
