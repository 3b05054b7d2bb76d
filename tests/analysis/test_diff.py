"""`diff`: realistic profile mistakes, each found at its first divergent step and named by
the profile field that causes it; the same from saved traces and launch records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.abi.snp import PageType
from cvmlaunch.abi.vmsa import SaveArea, Segment
from cvmlaunch.analysis.diff import Cause, DiffResult, Divergence, diff
from cvmlaunch.analysis.evidence import Evidence, evidence_from_json, evidence_from_plan
from cvmlaunch.errors import InputError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import BootFile, CpuSpec, GuestSpec, PageOrder, Technology, Vmm
from cvmlaunch.launch import Backend, launch
from cvmlaunch.measure import measure
from cvmlaunch.measure.document import measurement_json
from cvmlaunch.plan import build_plan
from cvmlaunch.plan.step import StepKind
from tests.conftest import DEBIAN_OVMF_SHA256, CliRunner

PROFILES = Path(__file__).parents[2] / "profiles"
SNP = PROFILES / "debian-ovmf-qemu-snp.toml"
TDX = PROFILES / "debian-ovmf-qemu-tdx.toml"
DIRECT_BOOT = PROFILES / "direct-boot-snp.toml"
# Debian's OVMF.fd as SEV-SNP: 512 firmware pages, 31 metadata pages, then the VMSAs.
BSP_STEP = 512 + 31
KERNEL_HASHES_GPA = 0x810000  # the SNP_KERNEL_HASHES page of the AmdSevX64 fixture


def _spec(path: Path) -> GuestSpec:
    return load_profile(path).to_spec()


def _evidence(spec: GuestSpec, source: str, firmware: bytes | None = None) -> Evidence:
    return evidence_from_plan(build_plan(spec, firmware), source)


def _diff(right: GuestSpec, wrong: GuestSpec) -> DiffResult:
    """Right profile as A, the mistake as B."""
    return diff(_evidence(right, "right"), _evidence(wrong, "wrong"))


def _divergence(result: DiffResult) -> Divergence:
    assert not result.same and result.divergence is not None
    return result.divergence


def _fields(causes: tuple[Cause, ...]) -> list[str]:
    return [c.field for c in causes]


# ---- the mistakes ------------------------------------------------------------------------


def test_wrong_vcpu_count(debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    d = _divergence(_diff(spec, spec._replace(vcpus=8)))
    assert d.step == BSP_STEP + 4 and d.a is None and d.b is not None and d.b.vcpu == 4
    assert d.where.startswith("VMSA vCPU 4 (AP)")
    assert d.causes[0] == Cause("vcpus", "4", "8", "vcpus 4 vs 8: one VMSA per vCPU")


def test_wrong_cpu_model(debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    d = _divergence(_diff(spec._replace(cpu=CpuSpec.from_name("EPYC-v4")), spec))
    assert d.step == BSP_STEP and d.where == "VMSA vCPU 0 (BSP)"
    cpu, rdx = d.causes[:2]
    assert (cpu.field, cpu.a, cpu.b) == ("cpu.name", "EPYC-v4", "EPYC-Milan")
    assert "EPYC-v4 vs EPYC-Milan" in cpu.meaning
    assert (rdx.field, rdx.a, rdx.b) == ("rdx", "0x800f12", "0xa00f11")
    # Several QEMU names share a signature: the register cause names the families.
    assert "EPYC (and -v1..v5, EPYC-IBPB)" in rdx.meaning
    assert "EPYC-Milan (and -v1..v3)" in rdx.meaning
    # Only RDX differs in the VMSA.
    assert _fields(d.causes) == ["cpu.name", "rdx"]


def test_cpu_by_signature_names_the_models(debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    genoa, unnamed = spec._replace(cpu=CpuSpec(0xA10F10)), spec._replace(cpu=CpuSpec(0xA10F11))
    d = _divergence(_diff(genoa, unnamed))
    assert d.causes[0].field == "cpu.signature"
    assert d.causes[0].meaning == (
        "CPU model EPYC-Genoa (and -v1..v2) vs family 25 model 17 stepping 1 (no QEMU model)"
    )


@pytest.mark.parametrize(
    ("vmm", "step", "where", "why"),
    [
        (Vmm.EC2, 512 + 13, "SEV metadata section 3 (CPUID) page 0x80e000", "CPUID page after"),
        (Vmm.GCE, 512, "SEV metadata section 0 (SNP_SEC_MEM) page 0x800000", "UNMEASURED"),
    ],
)
def test_wrong_vmm_flavour(vmm: Vmm, step: int, where: str, why: str, debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    # The metadata pages come before the VMSAs, so they show the flavour first.
    d = _divergence(_diff(spec, spec._replace(vmm=vmm, cpu=None)))
    assert d.step == step and d.where == where
    assert (d.causes[0].field, d.causes[0].a, d.causes[0].b) == ("vmm", "qemu", str(vmm))
    assert why in d.causes[0].meaning


def test_vmm_flavour_in_the_vcpu_state(debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    a, b = _evidence(spec, "qemu"), _evidence(spec._replace(vmm=Vmm.EC2), "ec2")
    # Compare the VMSAs alone: every register the VMM sets is named, under `vmm`.
    only_vmsas = [e._replace(steps=tuple(s for s in e.steps if s.kind == "vmsa")) for e in (a, b)]
    d = _divergence(diff(*only_vmsas))
    assert d.step == BSP_STEP and d.causes[0].field == "vmm"  # steps keep their numbers
    assert d.causes[0].meaning == (
        "VMM flavour qemu vs ec2 (segment attributes, fixed RDX, MXCSR, x87 FCW)"
    )
    registers = _fields(d.causes[1:])
    assert {"cs.attrib", "ss.attrib", "tr.attrib", "rdx", "mxcsr", "x87_fcw"} == set(registers)
    assert d.causes[registers.index("rdx") + 1].b == "0x600"


def test_wrong_guest_features(debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    d = _divergence(_diff(spec, spec._replace(guest_features=0x21)))
    assert d.step == BSP_STEP
    assert d.causes[0] == Cause("snp.guest_features", "0x1", "0x21", "DEBUG_SWAP set in B")
    assert d.causes[1].field == "sev_features"


def test_modified_firmware_build(debian_ovmf: Path, tmp_path: Path) -> None:
    image = bytearray(debian_ovmf.read_bytes())
    image[0x101234] ^= 0x01  # one byte in the middle of the BFV
    copy = tmp_path / "OVMF.fd"
    copy.write_bytes(image)
    spec = _spec(SNP)
    d = _divergence(_diff(spec, spec._replace(firmware=copy, firmware_sha256=None)))
    assert d.step == 0x101 and d.where == "firmware page 0xfff01000 (file offset 0x101000)"
    assert d.a is not None and d.a.file_offset == 0x101000
    sha = d.causes[0]
    assert (sha.field, sha.a, sha.b) == (
        "firmware.sha256",
        hashlib.sha256(debian_ovmf.read_bytes()).hexdigest(),
        hashlib.sha256(image).hexdigest(),
    )
    assert "first differing byte at file offset 0x101234" in sha.meaning
    assert d.causes[1].field == "firmware.path"


def _direct_boot(**boot: Any) -> GuestSpec:
    spec = _spec(DIRECT_BOOT)
    assert spec.boot is not None
    return spec._replace(boot=spec.boot._replace(**boot))


@pytest.mark.parametrize(
    ("mistake", "field", "which"),
    [
        ({"kernel": BootFile(sha256=bytes(32))}, "boot.kernel", "kernel hash differs"),
        ({"cmdline": "console=ttyS0"}, "boot.cmdline", "cmdline hash differs"),
        ({"initrd": None}, "boot.initrd", "initrd hash differs"),
    ],
    ids=["kernel", "cmdline", "initrd"],
)
def test_wrong_direct_boot_input(mistake: dict[str, Any], field: str, which: str) -> None:
    d = _divergence(_diff(_direct_boot(), _direct_boot(**mistake)))
    assert d.a is not None and d.a.kind == "kernel-hashes" and d.a.gpa == KERNEL_HASHES_GPA
    assert d.where == f"kernel hashes page {KERNEL_HASHES_GPA:#x} ({which})"
    assert _fields(d.causes) == [field]


def test_wrong_cmdline_shows_both_lines() -> None:
    d = _divergence(_diff(_direct_boot(), _direct_boot(cmdline="quiet")))
    assert d.causes[0].meaning == "kernel command line 'console=ttyS0 loglevel=7' vs 'quiet'"


def test_missing_kernel_hashes() -> None:
    right = _spec(DIRECT_BOOT)
    d = _divergence(_diff(right, right._replace(boot=None)))
    assert d.a is not None and d.b is not None and d.a.gpa == d.b.gpa == KERNEL_HASHES_GPA
    kinds = (d.a.kind, d.b.kind, d.b.page_type)
    assert kinds == (StepKind.KERNEL_HASHES, StepKind.SEV_METADATA, PageType.ZERO)
    assert d.causes[0].field == "boot"
    assert "measured direct boot in A only" in d.causes[0].meaning


def test_tdx_page_order(debian_ovmf: Path) -> None:
    spec = _spec(TDX)
    section = spec.td_config._replace(page_order=PageOrder.SECTION)
    d = _divergence(_diff(spec, spec._replace(td=section)))
    # page: ADD(p0), EXTEND(p0)...; section: ADD(p0), ADD(p1)...: the second record differs.
    assert d.step == 1 and d.a is not None and d.b is not None
    assert (d.a.kind, d.b.kind, d.a.section) == ("MR.EXTEND", "MEM.PAGE.ADD", 0)
    assert d.where.startswith("TDX section 0 (BFV) record MR.EXTEND at 0xffe20000")
    assert (d.causes[0].field, d.causes[0].a, d.causes[0].b) == (
        "tdx.page_order",
        "page",
        "section",
    )
    assert "page order page vs section" in d.causes[0].meaning


def test_tdx_firmware_byte(debian_ovmf: Path) -> None:
    image = bytearray(debian_ovmf.read_bytes())
    image[0x30010] ^= 0x01  # BFV: data offset 0x20000 at GPA 0xffe20000
    spec = _spec(TDX)
    right = _evidence(spec, "right")
    wrong = _evidence(spec._replace(firmware_sha256=None), "wrong", bytes(image))
    d = _divergence(diff(right, wrong))
    assert d.a is not None and (d.a.kind, d.a.gpa) == ("MR.EXTEND", 0xFFE30000)
    assert d.causes[0].field == "firmware.sha256"
    assert "first differing byte at file offset 0x30010" in d.causes[0].meaning


def test_tdx_memory_is_not_in_mrtd(debian_ovmf: Path) -> None:
    spec = _spec(TDX)
    result = _diff(spec, spec._replace(memory_mib=2048))
    # The TD HOB section is added, not extended: MRTD is the same, the TD HOB is not.
    assert result.same and result.divergence is None
    (memory,) = result.input_differences
    assert (memory.field, memory.a, memory.b) == ("memory_mib", "4096", "2048")
    assert "TD HOB" in memory.meaning and "RTMR0" in memory.meaning


def test_tdx_memory_in_a_launch_record_is_not_in_the_mrtd(debian_ovmf: Path) -> None:
    """The record's TD HOB page differs, but Debian's TDVF only adds it: the MRTDs are equal,
    so A and B measure the same, and memory_mib is listed as an input difference."""
    spec = _spec(TDX)
    record = launch(build_plan(spec._replace(memory_mib=2048)), Backend.SIM).doc
    result = diff(evidence_from_json(record, "launch.json"), _evidence(spec, "profile"))
    assert result.same and result.divergence is None
    (cause,) = [c for c in result.input_differences if c.field == "memory_mib"]
    assert (cause.a, cause.b) == ("2048", "4096") and "TD HOB" in cause.meaning


# ---- saved traces and launch records ---------------------------------------------------


def _saved_trace(cli: CliRunner, *flags: str) -> Evidence:
    r = cli("measure", SNP, *flags, "--trace", "--json")
    assert r.code == 0, r.err
    return evidence_from_json(json.loads(r.out), "measure.json")


def test_traces_give_the_same_causes_as_profiles(cli: CliRunner, debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    from_traces = diff(_saved_trace(cli, "--vcpu-type", "EPYC-v4"), _saved_trace(cli))
    from_profiles = _diff(spec._replace(cpu=CpuSpec.from_name("EPYC-v4")), spec)
    assert from_traces.a.form == "trace" and from_profiles.a.form == "profile"
    traced, profiled = _divergence(from_traces), _divergence(from_profiles)
    assert (traced.step, traced.where, traced.causes) == (
        profiled.step,
        profiled.where,
        profiled.causes,
    )
    assert traced.causes[0].field == "cpu.name"
    assert from_traces.input_differences == from_profiles.input_differences


def test_trace_json_names_vmsa_registers_and_firmware_offsets(debian_ovmf: Path) -> None:
    plan = build_plan(_spec(SNP))
    trace = measurement_json(plan, measure(plan, trace=True))["trace"]
    assert trace[1]["file_offset"] == "0x1000" and "vmsa" not in trace[1]
    assert trace[BSP_STEP - 1]["section"] == 4 and "file_offset" not in trace[BSP_STEP - 1]
    for entry in trace[BSP_STEP:]:
        regs = {k: int(v, 16) for k, v in entry["vmsa"].items()}
        assert len(regs) == 10 * 4 + 13 and regs["rdx"] == 0xA00F11
        # The named fields are the whole page: repacked, they hash to the traced contents.
        segments = {
            name: Segment(*(regs[f"{name}.{part}"] for part in Segment._fields))
            for name in ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")
        }
        fields = {**segments, **{k: v for k, v in regs.items() if "." not in k}}
        page = SaveArea._make(fields[name] for name in SaveArea._fields).pack()
        assert hashlib.sha384(page).hexdigest() == entry["contents"]
    assert [e["vcpu"] for e in trace[BSP_STEP:]] == [0, 1, 2, 3]


def test_record_against_profile_points_at_the_vcpu_state(debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    record = launch(build_plan(spec), Backend.SIM).doc
    saved = evidence_from_json(json.loads(json.dumps(record)), "launch.json")
    assert saved.form == "record" and saved.inputs["firmware.sha256"] == DEBIAN_OVMF_SHA256
    # The populate calls agree; the CPU model shows only in the VMSAs, which records lack.
    wrong = _evidence(spec._replace(cpu=CpuSpec.from_name("EPYC-v4")), "wrong")
    d = _divergence(diff(saved, wrong))
    assert d.step == 6 and d.a is None and d.b is None
    assert "vCPU state" in d.where and d.causes[0].field == "vmsa"
    assert d.causes[0].b == "4 VMSAs, RDX 0x800f12, SEV_FEATURES 0x1, vmm qemu"
    # Against its own profile (either way round), a record is the same.
    right = _evidence(spec, "right")
    assert diff(saved, right).same and diff(right, saved).same


def test_record_against_trace_compares_populate_calls(debian_ovmf: Path, tmp_path: Path) -> None:
    spec = _spec(SNP)
    image = bytearray(debian_ovmf.read_bytes())
    image[0x1000] ^= 0xFF
    record = launch(build_plan(spec._replace(firmware_sha256=None), bytes(image)), Backend.SIM)
    plan = build_plan(spec)
    trace = evidence_from_json(measurement_json(plan, measure(plan, trace=True)), "trace.json")
    d = _divergence(diff(trace, evidence_from_json(record.doc, "launch.json")))
    assert d.step == 0 and d.where == "populate step 0: firmware at 0xffe00000"
    assert d.causes[0].field == "firmware.sha256"


def test_identical_measurements_are_the_same(debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    result = _diff(spec, spec)
    assert result.same and result.divergence is None and result.input_differences == ()
    assert result.text().startswith("same: A and B measure ")
    doc = json.loads(json.dumps(result.doc()))
    assert doc["same"] and doc["divergence"] is None


def test_text_and_doc_lead_with_the_cause(debian_ovmf: Path) -> None:
    spec = _spec(SNP)
    result = _diff(spec, spec._replace(guest_features=0x21))
    first, cause = result.text().splitlines()[:2]
    assert first == f"different: first divergence at step {BSP_STEP}: VMSA vCPU 0 (BSP)"
    assert cause == "  cause  snp.guest_features = 0x1 vs 0x21: DEBUG_SWAP set in B"
    doc = json.loads(json.dumps(result.doc()))
    assert doc["divergence"]["causes"][0]["field"] == "snp.guest_features"
    assert doc["divergence"]["a"]["vcpu"] == 0 and doc["divergence"]["step"] == BSP_STEP


def test_different_technologies() -> None:
    spec = _spec(DIRECT_BOOT)
    d = _divergence(_diff(spec, spec._replace(technology=Technology.SEV_ES)))
    assert d.step == 0 and d.causes[0] == Cause(
        "technology", "sev-snp", "sev-es", "different technologies"
    )


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "expected a JSON object"),
        ({"technology": "sev-snp", "measurement": "00"}, "missing key 'trace'"),
        ({"runs": []}, "missing key 'trace'"),
        ({"technology": "sev-snp", "measurement": "00", "trace": []}, "missing key 'inputs'"),
        ({"technology": "tdx", "map_memory": []}, "missing key 'expected_measurement'"),
        (
            {"technology": "tdx", "expected_measurement": "00", "map_memory": [{"gpa": "0x0"}]},
            "missing key 'map_memory[0].type'",
        ),
        (
            {"technology": "tdx", "measurement": "zz", "inputs": {}, "trace": []},
            "'measurement': 'zz' is not hex",
        ),
    ],
)
def test_unusable_json(doc: object, reason: str) -> None:
    with pytest.raises(InputError) as e:
        evidence_from_json(doc, "saved.json")
    assert e.value.path == "saved.json" and reason in e.value.reason
    assert "\n" not in str(e.value)
