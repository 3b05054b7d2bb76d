"""The rehearsal backend on this machine's real /dev/kvm: Debian OVMF profiles, readback."""

from __future__ import annotations

import json
import os
from hashlib import sha256
from pathlib import Path

import pytest

from cvmlaunch.abi.kvm import GuestMemfdFlag
from cvmlaunch.errors import KvmError, LaunchError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.kvm import Kvm, Vcpu, map_memory
from cvmlaunch.launch import Backend, Verdict, launch
from cvmlaunch.launch.rehearsal import Checksum, checksum, read_back
from cvmlaunch.launch.steps import plan_steps
from cvmlaunch.plan import Plan, build_plan
from tests.conftest import CliRunner

PROFILES = Path(__file__).parents[2] / "profiles"


def _kvm_or_skip() -> None:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        pytest.skip(f"/dev/kvm cannot be opened here: {e.strerror}")


def _plan(name: str) -> Plan:
    return build_plan(load_profile(PROFILES / name).to_spec())


@pytest.mark.kvm
@pytest.mark.parametrize("profile", ["debian-ovmf-qemu-snp.toml", "debian-ovmf-qemu-tdx.toml"])
def test_rehearsal_reads_every_populated_page_back(debian_ovmf: Path, profile: str) -> None:
    _kvm_or_skip()
    plan = _plan(profile)
    record = launch(plan, Backend.REHEARSAL)
    assert record.verdict is Verdict.UNATTESTED and record.reported is None
    steps = plan_steps(plan)
    calls = record.doc["map_memory"]
    readback = record.doc["readback"]
    assert isinstance(calls, list) and isinstance(readback, list)
    # Every plan step was handed to the kernel as planned, and read back by the guest.
    assert [(c["gpa"], c["pages"]) for c in calls] == [(hex(s.gpa), s.pages) for s in steps]
    sources = [c["source_sha256"] for c in calls]
    assert sources == [None if s.source is None else sha256(s.source).hexdigest() for s in steps]
    assert len(readback) == len(steps)
    for entry, step in zip(readback, steps, strict=True):
        assert entry["guest"] == entry["expected"]
        if step.source is not None:
            assert entry["expected"] == str(checksum(step.source))
    assert any(entry["guest"] != "00000000:00000000" for entry in readback)
    slots = record.doc["memslots"]
    assert isinstance(slots, list)
    for step in steps:  # each populated range lies inside one guest_memfd memslot
        end = step.gpa + step.pages * 4096
        assert any(
            int(m["gpa"], 16) <= step.gpa
            and end <= int(m["gpa"], 16) + m["size"]
            and m["guest_memfd"]
            for m in slots
        )


@pytest.mark.kvm
def test_readback_fails_when_one_byte_changes_behind_the_executor(
    debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kvm_or_skip()
    plan = _plan("debian-ovmf-qemu-snp.toml")
    firmware = plan_steps(plan)[0]

    def tampered(vcpu: Vcpu, code_gpa: int, gpa: int, size: int) -> Checksum:
        if gpa == firmware.gpa:
            vcpu.vm.memory_at(gpa + 0x1234, 1)[0] ^= 0x01
        return read_back(vcpu, code_gpa, gpa, size)

    monkeypatch.setattr("cvmlaunch.launch.executor.read_back", tampered)
    with pytest.raises(LaunchError, match=f"readback differs for firmware at {firmware.gpa:#x}"):
        launch(plan, Backend.REHEARSAL)


@pytest.mark.kvm
def test_cli_rehearsal_failure_exits_1_and_writes_no_record(
    cli: CliRunner, debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _kvm_or_skip()

    def tampered(vcpu: Vcpu, code_gpa: int, gpa: int, size: int) -> Checksum:
        vcpu.vm.memory_at(gpa + size - 1, 1)[0] ^= 0x80
        return read_back(vcpu, code_gpa, gpa, size)

    monkeypatch.setattr("cvmlaunch.launch.executor.read_back", tampered)
    record = tmp_path / "launch.json"
    result = cli("launch", PROFILES / "debian-ovmf-qemu-snp.toml", "--backend", "rehearsal",
                 "--record", record)  # fmt: skip
    assert result.code == 1
    assert result.err.count("\n") == 1 and "readback differs" in result.err
    assert "Traceback" not in result.err
    assert not record.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.kvm
def test_cli_rehearsal_record(cli: CliRunner, debian_ovmf: Path, tmp_path: Path) -> None:
    _kvm_or_skip()
    record = tmp_path / "launch.json"
    profile = PROFILES / "debian-ovmf-qemu-snp.toml"
    result = cli("launch", profile, "--backend", "rehearsal", "--record", record, "--json")
    assert result.code == 0
    doc = json.loads(result.out)
    assert doc == json.loads(record.read_text())
    assert doc["verdict"] == "unattested" and doc["vm_type"] == "default"
    assert doc["host"]["guest_memfd_flags"] == ["mmap", "init_shared"]
    assert set(doc["timings"]) >= {"create_vm", "memslots", "populate", "readback", "total"}
    assert doc["profile"]["path"] == str(profile)


def test_checksum_sees_every_single_byte_change_and_moved_pages() -> None:
    data = bytearray(os.urandom(3 * 4096))
    base = checksum(data)
    for position in range(0, len(data), 97):
        data[position] ^= 0x5A
        assert checksum(data).s1 != base.s1
        data[position] ^= 0x5A
    swapped = data[4096:8192] + data[:4096] + data[8192:]
    moved = checksum(swapped)
    assert moved.s1 == base.s1 and moved.s2 != base.s2


def test_checksum_matches_the_guest_arithmetic() -> None:
    # Dwords 1, 2, 0xFFFFFFFF: s1 = 1, 3, 2 (mod 2^32); s2 = 1, 4, 6.
    data = (1).to_bytes(4, "little") + (2).to_bytes(4, "little") + b"\xff" * 4
    assert checksum(data) == Checksum(2, 6)


@pytest.mark.kvm
def test_a_thousand_real_launch_layouts_leak_no_fds() -> None:
    _kvm_or_skip()
    flags = GuestMemfdFlag.MMAP | GuestMemfdFlag.INIT_SHARED
    source = os.urandom(16 * 4096)
    before = len(os.listdir("/proc/self/fd"))
    failures = 0
    for i in range(1000):
        try:
            with Kvm() as kvm:
                vm = kvm.create_vm()
                gmem = vm.create_guest_memfd(len(source), flags)
                vm.set_memory_region(0, 0xFFFF0000, gmem.mmap().view, gmem)
                vcpu = vm.create_vcpu(0)
                vm.probe_capabilities(vcpu)
                map_memory(vcpu, 0xFFFF0, 16, 0, source)
                assert bytes(vm.memory_at(0xFFFF0000, len(source))) == source
                if i % 2:  # every other launch fails half-way: the GPA is taken
                    vm.set_memory_region(1, 0xFFFF0000, gmem.mmap().view, gmem)
        except KvmError as e:
            assert e.errno_name == "EEXIST"
            failures += 1
    assert failures == 500
    assert len(os.listdir("/proc/self/fd")) == before
