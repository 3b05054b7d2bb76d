"""The `measure --json` document (measure/document.py): the shape of each kind of step,
the `inputs` of each technology, and the top-level keys.

tests/analysis/test_evidence.py reads the shipped profiles' documents back; the read-back
here covers what no profile has: plain SEV with kernel hashes and a launch secret.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from cvmlaunch.analysis.evidence import evidence_from_json
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    SevLaunchSecretInputs,
    Technology,
    Vmm,
)
from cvmlaunch.measure import Measurement, measure
from cvmlaunch.measure.document import inputs_json, measurement_json, step_json
from cvmlaunch.plan import build_plan
from cvmlaunch.plan.ops import LaunchPlan, TdPlan
from cvmlaunch.plan.sev import build_sev_plan
from cvmlaunch.plan.step import StepKind, vmsa_fields
from cvmlaunch.plan.tdx import build_td_plan
from tests.conftest import SNP_VECTORS, TDX_VECTORS

AMD_SEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"
TDVF = TDX_VECTORS / "synth-tdvf-base.bin"
KERNEL_SHA256 = hashlib.sha256(b"kernel").digest()
CMDLINE = "console=ttyS0"
BOOT = DirectBoot(BootFile(sha256=KERNEL_SHA256), None, CMDLINE)
MILAN = CpuSpec.from_name("EPYC-Milan")  # family 19h (25), model 1, stepping 1
SECRET = SevLaunchSecretInputs(bytes(range(16)), 1, 55, 21, bytes(range(16, 32)))

SEV_STEP_KEYS = {"index", "kind", "label", "gpa", "size", "page_type", "contents", "digest"}
TD_RECORD_KEYS = {"index", "record", "label", "gpa", "section", "digest"}
FIRMWARE_KEYS = {"firmware", "firmware_sha256", "firmware_size"}


def _measured(spec: GuestSpec) -> tuple[LaunchPlan, Measurement]:
    plan = build_sev_plan(spec)
    return plan, measure(plan, trace=True)


def _td_measured(spec: GuestSpec) -> tuple[TdPlan, Measurement]:
    plan = build_td_plan(spec)
    return plan, measure(plan, trace=True)


def _snp(**more: Any) -> GuestSpec:
    return GuestSpec(Technology.SEV_SNP, AMD_SEV, vcpus=2, cpu=MILAN, boot=BOOT)._replace(**more)


# ---- steps ---------------------------------------------------------------------------------


def test_snp_page_steps() -> None:
    _, result = _measured(_snp())
    assert result.trace is not None
    extra = {
        StepKind.FIRMWARE: {"file_offset"},
        StepKind.SEV_METADATA: {"section"},
        StepKind.KERNEL_HASHES: {"section"},
        StepKind.VMSA: {"vcpu", "vmsa"},
    }
    for n, step in enumerate(result.trace):
        doc = step_json(step)
        assert set(doc) == SEV_STEP_KEYS | extra[step.kind], step.label
        assert (doc["index"], doc["kind"], doc["label"]) == (n, str(step.kind), step.label)
        assert doc["gpa"] == hex(step.gpa) and doc["size"] == 0x1000
        assert step.page_type is not None and doc["page_type"] == step.page_type.name
        assert isinstance(doc["contents"], str) and len(doc["contents"]) == 96
        assert step.digest is not None and doc["digest"] == step.digest.hex()
    docs = [step_json(s) for s in result.trace]
    assert docs[0]["file_offset"] == "0x0" and docs[0]["page_type"] == "NORMAL"
    kinds = [d["kind"] for d in docs]
    assert kinds.count("kernel-hashes") == 1 and kinds.count("vmsa") == 2
    hashes = docs[kinds.index("kernel-hashes")]
    assert (hashes["section"], hashes["gpa"], hashes["page_type"]) == (5, "0x810000", "NORMAL")
    assert docs[-1]["digest"] == result.digest.hex()


def test_sev_buffer_steps() -> None:
    spec = GuestSpec(Technology.SEV, AMD_SEV, boot=BOOT)
    plan, result = _measured(spec)
    assert result.trace is not None and len(result.trace) == 2
    firmware, table = (step_json(s) for s in result.trace)
    image = AMD_SEV.read_bytes()
    assert set(firmware) == SEV_STEP_KEYS | {"file_offset"}
    assert firmware["size"] == len(image) and firmware["file_offset"] == "0x0"
    assert firmware["contents"] == hashlib.sha256(image).hexdigest()
    assert set(table) == SEV_STEP_KEYS  # the SEV table is no metadata section
    assert (table["kind"], table["gpa"], table["size"]) == ("kernel-hashes", "0x810c00", 176)
    assert plan.kernel_hashes is not None  # type narrowing only
    assert table["contents"] == hashlib.sha256(plan.kernel_hashes.table).hexdigest()
    assert table["digest"] == hashlib.sha256(image + plan.kernel_hashes.table).hexdigest()


@pytest.mark.parametrize("vmm", list(Vmm))
def test_vmsa_steps_name_their_registers_in_hex(vmm: Vmm) -> None:
    plan, result = _measured(_snp(vmm=vmm, cpu=MILAN if vmm is Vmm.QEMU else None))
    assert result.trace is not None
    vmsas = [s for s in result.trace if s.kind is StepKind.VMSA]
    ops = [op for op in plan.ops if op.kind is StepKind.VMSA]
    for step, op in zip(vmsas, ops, strict=True):
        doc = step_json(step)
        assert doc["vcpu"] == op.vcpu
        assert op.state is not None
        registers = doc["vmsa"]
        assert isinstance(registers, dict)
        assert {k: int(v, 16) for k, v in registers.items()} == vmsa_fields(op.state)
        assert all(v.startswith("0x") for v in registers.values())
        assert registers["rip"] == hex(op.state.rip) and registers["cs.base"] == hex(
            op.state.cs.base
        )
    assert [step_json(s)["vcpu"] for s in vmsas] == [0, 1]


def test_td_records() -> None:
    plan, result = _td_measured(GuestSpec(Technology.TDX, TDVF))
    assert result.trace is not None
    docs = [step_json(s) for s in result.trace]
    assert all(set(d) == TD_RECORD_KEYS for d in docs)
    assert {d["record"] for d in docs} == {"MEM.PAGE.ADD", "MR.EXTEND"}
    assert [d["index"] for d in docs] == list(range(len(docs)))
    first = result.trace[0]
    assert docs[0] == {
        "index": 0, "record": "MEM.PAGE.ADD", "label": first.label, "gpa": hex(plan.ops[0].gpa),
        "section": 0, "digest": first.digest.hex() if first.digest else None,
    }  # fmt: skip
    assert docs[1]["record"] == "MR.EXTEND" and docs[1]["gpa"] == hex(plan.ops[0].gpa)
    assert docs[-1]["digest"] == result.digest.hex()


# ---- inputs --------------------------------------------------------------------------------


def test_sev_inputs() -> None:
    plan = build_plan(GuestSpec(Technology.SEV, AMD_SEV, sev_policy=0x3, boot=BOOT))
    doc = inputs_json(plan)
    boot_keys = {"kernel_sha256", "initrd_sha256", "cmdline", "cmdline_sha256"}
    assert set(doc) == FIRMWARE_KEYS | {"sev_policy"} | boot_keys
    image = AMD_SEV.read_bytes()
    assert doc["firmware"] == str(AMD_SEV) and doc["firmware_size"] == len(image)
    assert doc["firmware_sha256"] == hashlib.sha256(image).hexdigest()
    assert doc["sev_policy"] == "0x3"
    assert doc["kernel_sha256"] == KERNEL_SHA256.hex()
    assert doc["initrd_sha256"] == hashlib.sha256(b"").hexdigest()  # no initrd
    assert doc["cmdline"] == CMDLINE
    assert doc["cmdline_sha256"] == hashlib.sha256(CMDLINE.encode() + b"\0").hexdigest()


def test_sev_es_inputs() -> None:
    doc = inputs_json(build_plan(GuestSpec(Technology.SEV_ES, AMD_SEV, vcpus=3, cpu=MILAN)))
    assert set(doc) == FIRMWARE_KEYS | {"vcpus", "vmm", "cpu", "sev_policy"}
    assert (doc["vcpus"], doc["vmm"]) == (3, "qemu")
    assert doc["cpu"] == {
        "name": "EPYC-Milan", "signature": "0xa00f11", "family": 25, "model": 1, "stepping": 1,
    }  # fmt: skip
    ec2 = inputs_json(build_plan(GuestSpec(Technology.SEV_ES, AMD_SEV, vmm=Vmm.EC2)))
    assert "cpu" not in ec2 and ec2["vmm"] == "ec2"


@pytest.mark.parametrize("vmm", [Vmm.EC2, Vmm.GCE])
def test_cloud_inputs_name_no_cpu(vmm: Vmm) -> None:
    # EC2 and GCE measure a fixed RDX in the VMSAs: a CPU given for them is not measured, so
    # the document is that of the same guest without one.
    given, absent = build_plan(_snp(vmm=vmm)), build_plan(_snp(vmm=vmm, cpu=None))
    assert measure(given).digest == measure(absent).digest
    assert "cpu" not in inputs_json(given) and inputs_json(given) == inputs_json(absent)
    assert inputs_json(build_plan(_snp()))["cpu"]["name"] == "EPYC-Milan"  # QEMU measures it


def test_snp_inputs() -> None:
    doc = inputs_json(build_plan(_snp(guest_features=0x21, boot=None)))
    snp_keys = {"guest_features", "guest_feature_names", "vmsa_gpa"}
    assert set(doc) == FIRMWARE_KEYS | {"vcpus", "vmm", "cpu"} | snp_keys
    assert doc["guest_features"] == "0x21"
    assert doc["guest_feature_names"] == ["SNP_ACTIVE", "DEBUG_SWAP"]  # bits 0 and 5
    assert doc["vmsa_gpa"] == "0xfffffffff000"


def test_td_inputs() -> None:
    plan = build_td_plan(GuestSpec(Technology.TDX, TDVF, vcpus=2, memory_mib=1024))
    doc = inputs_json(plan)
    assert set(doc) == FIRMWARE_KEYS | {
        "vcpus", "memory_mib", "page_order", "raw_data_tail", "tdvf", "td_hob_sha384",
        "operations",
    }  # fmt: skip
    assert (doc["vcpus"], doc["memory_mib"]) == (2, 1024)
    assert (doc["page_order"], doc["raw_data_tail"]) == ("page", "image")
    assert doc["firmware_sha256"] == hashlib.sha256(TDVF.read_bytes()).hexdigest()
    assert [s["type"] for s in doc["tdvf"]["sections"]] == [
        "BFV", "CFV", "TEMP_MEM", "TD_HOB", "TEMP_MEM", "TEMP_MEM",
    ]  # fmt: skip
    assert doc["operations"][0] == {
        "section": 0, "type": "BFV", "gpa": "0xfffd0000", "pages": 48, "action": "page-add+extend",
    }  # fmt: skip
    assert len(doc["operations"]) == 6
    # TDVF measures the TD HOB without its 8-byte END_OF_HOB_LIST header.
    hob = plan.td_hob
    assert hob is not None and hob[-8:-6] == b"\xff\xff"
    assert doc["td_hob_sha384"] == hashlib.sha384(hob[:-8]).hexdigest()


# ---- the document --------------------------------------------------------------------------


def test_snp_document_keys() -> None:
    plan, result = _measured(_snp())
    doc = measurement_json(plan, result)
    assert set(doc) == {"technology", "measurement", "firmware_digest", "inputs", "trace"}
    assert doc["technology"] == "sev-snp" and doc["measurement"] == result.digest.hex()
    assert result.firmware_digest is not None
    assert doc["firmware_digest"] == result.firmware_digest.hex()
    assert doc["inputs"] == inputs_json(plan)
    untraced = measurement_json(plan, measure(plan))
    assert "trace" not in untraced and untraced["measurement"] == doc["measurement"]


def test_td_document_keys() -> None:
    plan, result = _td_measured(GuestSpec(Technology.TDX, TDVF))
    doc = measurement_json(plan, result)
    assert set(doc) == {"technology", "measurement", "mrtd", "td", "inputs", "trace"}
    assert doc["mrtd"] == doc["measurement"] == result.digest.hex()
    assert doc["td"]["attributes"] == "0x0000000010000000"  # QEMU's default: SEPT_VE_DISABLE
    assert doc["td"]["attribute_names"] == ["SEPT_VE_DISABLE"]


def test_sev_document_reads_back_as_the_same_steps() -> None:
    spec = GuestSpec(Technology.SEV, AMD_SEV, boot=BOOT, launch_secret=SECRET)
    plan, result = _measured(spec)
    doc = measurement_json(plan, result)
    assert set(doc) == {"technology", "measurement", "launch_measure", "inputs", "trace"}
    assert result.launch_measure is not None
    assert doc["launch_measure"] == result.launch_measure.hex()
    read = evidence_from_json(json.loads(json.dumps(doc)), "sev.json")
    assert read.steps == result.trace
    assert (read.technology, read.measurement) == ("sev", result.digest)
