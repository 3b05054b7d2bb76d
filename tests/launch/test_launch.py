"""Launches on the emulated kernel: every shipped profile matches, wrong executors are caught,
and faults injected at every page and every call are recovered from or end cleanly. Each
vendor command of the kvm layer (kvm/sev.py, kvm/tdx.py) is also checked on its own."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.abi.kvm import SevCmd, TdxCmd, VmType
from cvmlaunch.abi.snp import SevFeature
from cvmlaunch.abi.tdx import XFAM_FIXED1, TdAttribute
from cvmlaunch.abi.vmsa import SaveArea
from cvmlaunch.errors import KvmError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import Vmm
from cvmlaunch.kvm import Kvm, MapCall, Vcpu, Vm
from cvmlaunch.kvm import map_memory as real_map_memory
from cvmlaunch.launch import Backend, Verdict, launch
from cvmlaunch.launch.steps import plan_steps
from cvmlaunch.measure import measure
from cvmlaunch.plan import Plan, build_plan
from cvmlaunch.plan.vmsa import EFER_SVME, save_area
from cvmlaunch.sim import Fault, Partial, SimKernel
from cvmlaunch.sim.vm import Vm as SimVm
from cvmlaunch.sim.vmsa import vmsa_page
from tests.conftest import CliRunner

ROOT = Path(__file__).parents[2]
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
    real = Vcpu.load_save_area

    def wrong_rdx(vcpu: Vcpu, state: Any) -> None:
        real(vcpu, state._replace(rdx=state.rdx ^ 1))

    monkeypatch.setattr(Vcpu, "load_save_area", wrong_rdx)
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
    planned = [s.call_type for s in plan_steps(_plan(profile))]
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


# ---- the vendor commands, one typed method at a time -----------------------------------


def _sim_vm(kernel: SimKernel, vm: Vm) -> SimVm:
    """The emulated kernel's own record of `vm` (what its PSP or TDX module was handed)."""
    return kernel._vms[vm.fd]


def _snp_vm(kvm: Kvm, policy: int = 0x30000) -> Vm:
    vm = kvm.create_vm(VmType.SNP)
    vm.sev_init2(0, 2)
    vm.snp_launch_start(policy)
    return vm


def test_sev_init2_opens_dev_sev_as_a_child_and_hands_over_the_features() -> None:
    kernel = SimKernel("snp")
    with Kvm(kernel) as kvm:
        vm = kvm.create_vm(VmType.SNP)
        before = kernel.open_fds()
        vm.sev_init2(1 << SevFeature.DEBUG_SWAP, 2)
        assert kernel.open_fds() - before == {vm.sev_fd}
        guest = _sim_vm(kernel, vm).sev
        assert guest is not None
        # KVM adds SNPActive itself; the rest is what INIT2 was given.
        assert guest.vmsa_features == 1 << SevFeature.DEBUG_SWAP | 1 << SevFeature.SNP_ACTIVE
        vm.close()
        assert vm.sev_fd not in kernel.open_fds()
    assert kernel.open_fds() == frozenset()


@pytest.mark.parametrize(
    ("features", "ghcb"), [(1 << SevFeature.SNP_ACTIVE, 2), (0, 1)], ids=["snp-active", "ghcb-1"]
)
def test_sev_init2_refused_names_init2_and_the_values(features: int, ghcb: int) -> None:
    kernel = SimKernel("snp")
    with Kvm(kernel) as kvm:
        vm = kvm.create_vm(VmType.SNP)
        with pytest.raises(KvmError) as info:
            vm.sev_init2(features, ghcb)
        e = info.value
        assert (e.call, e.errno) == ("KVM_MEMORY_ENCRYPT_OP(INIT2)", errno.EINVAL)
        assert e.fields["id"] == SevCmd.INIT2 and e.fields["sev_fd"] == vm.sev_fd != 0
        assert (e.fields["vmsa_features"], e.fields["ghcb_version"]) == (features, ghcb)
        assert str(e).startswith("KVM_MEMORY_ENCRYPT_OP(INIT2) failed with EINVAL (")
    assert kernel.open_fds() == frozenset()  # /dev/sev went with the VM


def test_snp_launch_start_and_finish_reach_the_psp() -> None:
    kernel = SimKernel("snp")
    with Kvm(kernel) as kvm:
        vm = _snp_vm(kvm, 0x30000)
        guest = _sim_vm(kernel, vm).sev
        assert guest is not None and guest.fd == vm.sev_fd  # the fd SNP_LAUNCH_START recorded
        assert kernel.launch_digest(vm.fd) is None
        vm.snp_launch_finish(b"\x5a" * 32)
        assert kernel.snp_report_fields(vm.fd) == (0x30000, b"\x5a" * 32)
        assert kernel.launch_digest(vm.fd) == bytes(48)  # no page, no vCPU: the empty chain


@pytest.mark.parametrize("policy", [0x0, 0x30000 | 1 << 63], ids=["no-mbo", "reserved-bit"])
def test_snp_launch_start_refused_names_the_command_and_policy(policy: int) -> None:
    with Kvm(SimKernel("snp")) as kvm:
        vm = kvm.create_vm(VmType.SNP)
        vm.sev_init2(0, 2)
        with pytest.raises(KvmError) as info:
            vm.snp_launch_start(policy)
    e = info.value
    assert (e.call, e.errno_name) == ("KVM_MEMORY_ENCRYPT_OP(SNP_LAUNCH_START)", "EINVAL")
    assert (e.fields["id"], e.fields["policy"], e.fields["flags"]) == (100, policy, 0)
    assert f"policy={policy:#x}" in str(e)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda vm: vm.snp_launch_finish(bytes(31)), ("SNP_LAUNCH_FINISH", "host_data_len", 31)),
        (lambda vm: vm.snp_launch_start(1 << 64), ("SNP_LAUNCH_START", "policy", 1 << 64)),
        (lambda vm: vm.sev_launch_start(-1), ("LAUNCH_START", "policy", -1)),
    ],
    ids=["short-host-data", "wide-policy", "negative-policy"],
)
def test_values_the_struct_cannot_hold_are_einval_before_the_kernel(
    call: Any, expected: tuple[str, str, int]
) -> None:
    kernel = SimKernel("snp")
    with Kvm(kernel) as kvm:
        vm = _snp_vm(kvm)
        issued = kernel.calls
        with pytest.raises(KvmError) as info:
            call(vm)
        assert kernel.calls == issued
    command, field, value = expected
    e = info.value
    assert (e.call, e.errno) == (f"KVM_MEMORY_ENCRYPT_OP({command})", errno.EINVAL)
    assert e.fields[field] == value


def test_sev_es_launch_start_update_vmsa_measure_finish() -> None:
    kernel = SimKernel("snp")
    with Kvm(kernel) as kvm:
        vm = kvm.create_vm(VmType.SEV_ES)
        vm.sev_init2(0, 2)
        handle = vm.sev_launch_start(0x5)
        guest = _sim_vm(kernel, vm).sev
        assert guest is not None
        assert handle == guest.handle != 0 and guest.policy == 0x5
        vcpu = vm.create_vcpu(0)
        vm.sev_launch_update_vmsa()
        with pytest.raises(KvmError):
            vcpu.get_sregs()  # the VMSA is encrypted: the registers are protected now
        blob = vm.sev_launch_measure()
        digest = kernel.launch_digest(vm.fd)
        assert digest is not None and len(blob) == 48
        # MEASURE = HMAC-SHA256(TIK, 04h ‖ API 1.55 build 0 ‖ POLICY ‖ digest ‖ MNONCE).
        message = bytes([0x04, 1, 55, 0]) + (0x5).to_bytes(4, "little") + digest + blob[32:]
        assert blob[:32] == hmac.digest(guest._tik, message, "sha256")
        vm.sev_launch_finish()
        with pytest.raises(KvmError) as info:
            vm.sev_launch_finish()  # RUNNING already: the firmware refuses
    e = info.value
    assert (e.call, e.errno_name) == ("KVM_MEMORY_ENCRYPT_OP(LAUNCH_FINISH)", "EIO")
    invalid_guest_state = 0x02  # SEV_RET_INVALID_GUEST_STATE, in kvm_sev_cmd.error
    assert (e.fields["id"], e.fields["error"]) == (SevCmd.LAUNCH_FINISH, invalid_guest_state)


def test_sev_launch_update_vmsa_on_plain_sev_is_enotty() -> None:
    with Kvm(SimKernel("snp")) as kvm:
        vm = kvm.create_vm(VmType.SEV)
        vm.sev_init2()
        vm.sev_launch_start(0x1)
        with pytest.raises(KvmError) as info:
            vm.sev_launch_update_vmsa()
    assert (info.value.call, info.value.errno) == (
        "KVM_MEMORY_ENCRYPT_OP(LAUNCH_UPDATE_VMSA)",
        errno.ENOTTY,
    )


def _every_attribute_bit(state: SaveArea) -> SaveArea:
    """`state` with AVL, L, D/B and G each set in one segment (no VMM sets them at reset)."""
    es, cs, ss, ds = (s._replace(attrib=s.attrib | bit) for s, bit in
                      ((state.es, 1 << 8), (state.cs, 1 << 9), (state.ss, 1 << 10),
                       (state.ds, 1 << 11)))  # fmt: skip
    return state._replace(es=es, cs=cs, ss=ss, ds=ds)


@pytest.mark.parametrize(
    ("vmm", "all_bits"),
    [(Vmm.QEMU, False), (Vmm.EC2, False), (Vmm.GCE, False), (Vmm.QEMU, True)],
    ids=["qemu", "ec2", "gce", "every-attribute-bit"],
)
def test_load_save_area_gives_kvm_the_vmsa_the_plan_expects(vmm: Vmm, all_bits: bool) -> None:
    state = save_area(vmm, 0xFFFFFFF0, 0xA00F11, 1, bsp=True)
    if all_bits:
        state = _every_attribute_bit(state)
    kernel = SimKernel("snp")
    with Kvm(kernel) as kvm:
        vm = _snp_vm(kvm)
        vcpu = vm.create_vcpu(0)
        vcpu.load_save_area(state)
        # KVM sets EFER.SVME in the VMSA itself; userspace must not ask for it.
        assert vcpu.get_sregs().efer == state.efer & ~EFER_SVME
        sim_vcpu = _sim_vm(kernel, vm).vcpus[0]
        # The VMSA the emulated KVM builds from the registers is the plan's page, byte for byte.
        assert vmsa_page(sim_vcpu, state.sev_features) == state.pack()
        assert sim_vcpu.pat == state.g_pat


def test_tdx_init_vm_hands_the_module_attributes_xfam_and_identity() -> None:
    kernel = SimKernel("tdx")
    mrconfigid, mrowner, mrownerconfig = bytes(range(48)), b"\x11" * 47 + b"\x22", os.urandom(48)
    attributes = TdAttribute.SEPT_VE_DISABLE | TdAttribute.DEBUG
    with Kvm(kernel) as kvm:
        vm = kvm.create_vm(VmType.TDX)
        vm.tdx_init_vm(
            attributes,
            XFAM_FIXED1 | 0x4,
            mrconfigid=mrconfigid,
            mrowner=mrowner,
            mrownerconfig=mrownerconfig,
        )
        td = _sim_vm(kernel, vm).td
        assert td is not None
        assert (td.attributes, td.xfam) == (attributes, XFAM_FIXED1 | 0x4)
        assert td.mrconfigid == mrconfigid
        assert td.mrowner == mrowner
        assert td.mrownerconfig == mrownerconfig


def test_tdx_init_vm_refused_names_the_command_and_values() -> None:
    kernel = SimKernel("tdx")
    with Kvm(kernel) as kvm:
        vm = kvm.create_vm(VmType.TDX)
        with pytest.raises(KvmError) as info:
            vm.tdx_init_vm(0, 0)  # XFAM without x87/SSE
        issued = kernel.calls
        with pytest.raises(KvmError) as short:
            vm.tdx_init_vm(0, XFAM_FIXED1, mrowner=bytes(47))
        assert kernel.calls == issued  # refused before the kernel
    for e in (info.value, short.value):
        assert (e.call, e.errno_name) == ("KVM_MEMORY_ENCRYPT_OP(INIT_VM)", "EINVAL")
    fields = info.value.fields
    assert (fields["id"], fields["attributes"], fields["xfam"]) == (TdxCmd.INIT_VM, 0, 0)
    assert short.value.fields == {"mrowner_len": 47}


def test_tdx_init_vcpu_and_finalize_vm() -> None:
    kernel = SimKernel("tdx")
    with Kvm(kernel) as kvm:
        vm = kvm.create_vm(VmType.TDX)
        vm.tdx_init_vm(0, XFAM_FIXED1)
        vcpu = vm.create_vcpu(0)
        vcpu.tdx_init_vcpu(0x809000)
        assert _sim_vm(kernel, vm).vcpus[0].initial_rcx == 0x809000
        with pytest.raises(KvmError) as again:
            vcpu.tdx_init_vcpu(0x809000)
        vm.tdx_finalize_vm()
        assert kernel.launch_digest(vm.fd) == hashlib.sha384().digest()  # no page was added
        with pytest.raises(KvmError) as twice:
            vm.tdx_finalize_vm()
    assert (again.value.call, again.value.errno_name) == (
        "KVM_MEMORY_ENCRYPT_OP(INIT_VCPU)",
        "EINVAL",
    )
    assert again.value.fields == {"id": TdxCmd.INIT_VCPU, "flags": 0, "data": 0x809000,
                                  "hw_error": 0}  # fmt: skip
    assert (twice.value.call, twice.value.errno) == (
        "KVM_MEMORY_ENCRYPT_OP(FINALIZE_VM)",
        errno.EINVAL,
    )


@pytest.mark.parametrize(("host", "rfc"), [("snp", False), ("rfc", True)])
def test_probe_capabilities_is_kept_on_the_vm(host: str, rfc: bool) -> None:
    with Kvm(SimKernel(host)) as kvm:
        vm = kvm.create_vm(VmType.SNP)
        unprobed = vm.capabilities
        caps = vm.probe_capabilities(vm.create_vcpu(0))
    assert unprobed is None and vm.capabilities is caps
    assert (caps.map_memory, caps.pre_fault_memory) == (rfc, not rfc)
    assert caps.vm_types == {VmType.DEFAULT, VmType.SEV, VmType.SEV_ES, VmType.SNP}
