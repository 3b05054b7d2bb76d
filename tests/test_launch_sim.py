"""Launches on the emulated kernel: every shipped profile matches, wrong executors are caught,
and faults injected at every page and every call are recovered from or end cleanly."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.abi.kvm import VmType
from cvmlaunch.errors import KvmError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.kvm import MapCall, Vcpu
from cvmlaunch.kvm import map_memory as real_map_memory
from cvmlaunch.launch import Backend, Verdict, launch
from cvmlaunch.launch.steps import plan_steps
from cvmlaunch.measure import measure
from cvmlaunch.plan import Plan, build_plan
from cvmlaunch.sim import Fault, Partial, SimKernel
from tests.conftest import CliRunner

ROOT = Path(__file__).parent.parent
PROFILES = [*sorted((ROOT / "profiles").glob("*.toml")), ROOT / "cvmlaunch/data/default.toml"]
DEBIAN = {"snp": "debian-ovmf-qemu-snp.toml", "tdx": "debian-ovmf-qemu-tdx.toml",
          "sev-es": "debian-ovmf-qemu-sev-es.toml"}  # fmt: skip


@cache
def _plan(path: Path) -> Plan:
    return build_plan(load_profile(path).to_spec())


def _host(plan: Plan) -> str:
    return "tdx" if plan.spec.technology == "tdx" else "snp"


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_shipped_profile_matches_on_sim(profile: Path, debian_ovmf: Path) -> None:
    plan = _plan(profile)
    kernel = SimKernel(_host(plan))
    record = launch(plan, Backend.SIM, kernel=kernel)
    assert record.verdict is Verdict.MATCH
    assert record.reported == record.expected == measure(plan).digest
    assert kernel.open_fds() == frozenset()
    calls = record.doc["map_memory"]
    assert isinstance(calls, list) and len(calls) == len(plan_steps(plan))


def test_rfc_host_lowers_normal_pages_to_kvm_map_memory(debian_ovmf: Path) -> None:
    plan = _plan(ROOT / "profiles" / DEBIAN["snp"])
    record = launch(plan, Backend.SIM, kernel=SimKernel("rfc"))
    assert record.verdict is Verdict.MATCH
    calls: Any = record.doc["map_memory"]
    lowering = {c["type"]: c["lowering"] for c in calls}
    assert lowering["NORMAL"] == "KVM_MAP_MEMORY"
    assert lowering["ZERO"] == "KVM_MEMORY_ENCRYPT_OP(SNP_LAUNCH_UPDATE)"
    assert record.doc["host"]["map_memory_rfc"] is True  # type: ignore[index]
    assert record.doc["host"]["pre_fault_memory"] is False  # type: ignore[index]


# ---- a deliberately wrong executor is caught ------------------------------------------


def _wrong_bytes(vcpu: Vcpu, base_gfn: int, nr_pages: int, flags: int = 0, source: Any = None,
                 **kw: Any) -> MapCall:  # fmt: skip
    if source is not None and nr_pages > 8:
        changed = bytearray(source)
        changed[4096 * 3 + 17] ^= 0x01
        source = changed
    return real_map_memory(vcpu, base_gfn, nr_pages, flags, source, **kw)


def _skipped_page(vcpu: Vcpu, base_gfn: int, nr_pages: int, flags: int = 0, source: Any = None,
                  **kw: Any) -> MapCall:  # fmt: skip
    if nr_pages > 8:  # the last page of the firmware is never handed over
        real_map_memory(vcpu, base_gfn, nr_pages - 1, flags, source, **kw)
        return MapCall(base_gfn << 12, nr_pages, "wrong", "wrong", None, 0, 0)
    return real_map_memory(vcpu, base_gfn, nr_pages, flags, source, **kw)


@pytest.mark.parametrize("technology", ["snp", "tdx", "sev-es"])
@pytest.mark.parametrize("wrong", [_wrong_bytes, _skipped_page], ids=["bytes", "skip"])
def test_wrong_executor_is_a_mismatch(
    technology: str, wrong: Any, debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(ROOT / "profiles" / DEBIAN[technology])
    monkeypatch.setattr("cvmlaunch.launch.executor.map_memory", wrong)
    record = launch(plan, Backend.SIM, kernel=SimKernel(_host(plan)))
    assert record.verdict is Verdict.MISMATCH and record.reported != record.expected
    divergence: Any = record.doc["divergence"]
    firmware = next(i for i, s in enumerate(plan_steps(plan)) if s.pages > 8)
    assert divergence["step"] == firmware
    assert divergence["expected"] != divergence["actual"]


def test_wrong_vcpu_state_diverges_at_finalize(
    debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(ROOT / "profiles" / DEBIAN["snp"])
    from cvmlaunch.launch import executor

    real = executor.load_save_area

    def wrong_rdx(vcpu: Vcpu, state: Any) -> None:
        real(vcpu, state._replace(rdx=state.rdx ^ 1))

    monkeypatch.setattr(executor, "load_save_area", wrong_rdx)
    record = launch(plan, Backend.SIM, kernel=SimKernel("snp"))
    assert record.verdict is Verdict.MISMATCH
    assert record.doc["divergence"]["step"] == "finalize"  # type: ignore[index]


# ---- fault injection ------------------------------------------------------------------


def _pages(plan: Plan) -> int:
    return sum(s.pages for s in plan_steps(plan))


def _sweep(plan: Plan, stride: int) -> Iterator[int]:
    yield from range(1, _pages(plan), stride)


@pytest.mark.parametrize("technology", ["snp", "tdx"])
def test_partial_progress_at_every_page_keeps_the_measurement(
    technology: str, debian_ovmf: Path
) -> None:
    plan = _plan(ROOT / "profiles" / DEBIAN[technology])
    expected = measure(plan).digest
    for k in _sweep(plan, 1):
        kernel = SimKernel(_host(plan), faults=[Partial(at_page=k)])
        record = launch(plan, Backend.SIM, kernel=kernel)
        assert record.reported == expected, f"partial progress after page {k}"
        calls: Any = record.doc["map_memory"]
        assert sum(c["calls"] for c in calls) == len(calls) + 1, k
        assert kernel.open_fds() == frozenset()


@pytest.mark.parametrize("host", ["snp", "rfc", "tdx"])
@pytest.mark.parametrize("code", [errno.EINTR, errno.EAGAIN])
def test_interrupted_populate_resumes_exactly(host: str, code: int, debian_ovmf: Path) -> None:
    plan = _plan(ROOT / "profiles" / DEBIAN["tdx" if host == "tdx" else "snp"])
    expected = measure(plan).digest
    for k in _sweep(plan, 37):
        kernel = SimKernel(host, faults=[Partial(at_page=k, errno=code)])
        assert launch(plan, Backend.SIM, kernel=kernel).reported == expected, k


def _clean_calls(plan: Plan, host: str) -> int:
    kernel = SimKernel(host)
    launch(plan, Backend.SIM, kernel=kernel)
    return kernel.calls


@pytest.mark.parametrize("technology", ["snp", "tdx", "sev-es"])
@pytest.mark.parametrize("code", [errno.ENOMEM, errno.EFAULT, errno.EIO])
def test_hard_failure_at_any_call_ends_cleanly(
    technology: str, code: int, debian_ovmf: Path, cli: CliRunner, tmp_path: Path
) -> None:
    plan = _plan(ROOT / "profiles" / DEBIAN[technology])
    host = _host(plan)
    total = _clean_calls(plan, host)
    assert total > 10
    for n in range(total):
        kernel = SimKernel(host, faults=[Fault(at_call=n, errno=code)])
        try:
            record = launch(plan, Backend.SIM, kernel=kernel)
        except KvmError as e:
            assert e.errno == code, n
            assert e.step is not None, n
            assert errno.errorcode[code] in str(e)
        else:
            # Only a probe may fail without consequence (capabilities answer "no").
            assert record.verdict is Verdict.MATCH, n
        assert kernel.open_fds() == frozenset(), f"fds left open after a failure at call {n}"


def test_eintr_at_any_call_is_retried(debian_ovmf: Path) -> None:
    plan = _plan(ROOT / "profiles" / DEBIAN["snp"])
    expected = measure(plan).digest
    for n in range(_clean_calls(plan, "snp")):
        kernel = SimKernel("snp", faults=[Fault(at_call=n, errno=errno.EINTR)])
        assert launch(plan, Backend.SIM, kernel=kernel).reported == expected, n


def test_a_thousand_launches_leak_no_fds(debian_ovmf: Path) -> None:
    plan = _plan(ROOT / "profiles" / DEBIAN["tdx"])
    before = len(os.listdir("/proc/self/fd"))
    for i in range(1000):
        kernel = SimKernel(
            "tdx", faults=[Fault(at_call=i % 40, errno=errno.ENOMEM)] if i % 2 else []
        )
        with contextlib.suppress(KvmError):
            launch(plan, Backend.SIM, kernel=kernel)
        assert kernel.open_fds() == frozenset(), i
    assert len(os.listdir("/proc/self/fd")) == before


# ---- CLI ------------------------------------------------------------------------------


def test_cli_launch_sim_json_and_record(cli: CliRunner, debian_ovmf: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    profile = ROOT / "profiles" / DEBIAN["tdx"]
    result = cli("launch", profile, "--backend", "sim", "--json", "--record", record)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc == json.loads(record.read_text())
    assert doc["verdict"] == "match" and doc["vm_type"] == "tdx"
    assert doc["reported_measurement"] == doc["expected_measurement"]
    assert doc["backend"] == {"requested": "sim", "chosen": "sim",
                              "reason": "the emulated kernel was asked for"}  # fmt: skip
    assert all(m["guest_memfd"] for m in doc["memslots"])
    planned = [s.page_type for s in plan_steps(_plan(profile))]
    assert [c["type"] for c in doc["map_memory"]] == planned
    assert planned[0] == "page-add+extend" and "page-add" in planned


def test_cli_auto_falls_back_to_sim_and_says_why(cli: CliRunner, debian_ovmf: Path) -> None:
    result = cli("launch", "--json")  # the embedded default profile
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    if doc["backend"]["chosen"] == "kvm":  # an SNP host: the digest reaches only the guest
        assert doc["verdict"] == "unattested" and doc["vm_type"] == "snp"
    else:
        assert doc["backend"]["chosen"] == "sim"
        assert "needs snp" in doc["backend"]["reason"]
        assert doc["verdict"] == "match"
        assert doc["reported_measurement"] == doc["expected_measurement"]


def test_cli_backend_kvm_without_the_vm_type_fails_in_one_line(
    cli: CliRunner, debian_ovmf: Path
) -> None:
    if os.path.exists("/dev/kvm") and VmType.TDX in _real_types():
        pytest.skip("this host offers TDX: the kvm backend would really launch")
    result = cli("launch", ROOT / "profiles" / DEBIAN["tdx"], "--backend", "kvm")
    assert result.code == 2
    assert result.err.startswith("cvmlaunch: error: --backend: kvm: this kernel offers")
    assert result.err.count("\n") == 1


def _real_types() -> frozenset[VmType]:
    from cvmlaunch.kvm import Kvm
    from cvmlaunch.kvm.caps import vm_types

    with Kvm() as kvm:
        return vm_types(kvm)
