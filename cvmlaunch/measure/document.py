"""The `measure --json` document: what went into a plan's measurement (`inputs`), the TD's
identity fields, and the trace, JSON-ready. Launch records carry the same `inputs`."""

from __future__ import annotations

import hashlib

from cvmlaunch.abi.cpu import split_signature
from cvmlaunch.abi.snp import sev_feature_names
from cvmlaunch.guest.spec import Technology, Vmm, firmware_name
from cvmlaunch.measure import Measurement
from cvmlaunch.plan.ops import LaunchPlan, Plan, TdPlan
from cvmlaunch.plan.step import TD_RECORDS, Step

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)

if TYPE_CHECKING:  # the TDX modules load only for a TD (CLI start-up)
    from collections.abc import Sequence
    from typing import Any

    from cvmlaunch.firmware.tdvf import TdvfMetadata


def _inputs(plan: LaunchPlan) -> dict[str, Any]:
    spec = plan.spec
    if plan.firmware is None:  # an IGVM file: it holds the VMSAs and the policy too
        return _igvm_inputs(plan)
    doc: dict[str, Any] = {
        "firmware": firmware_name(spec),
        "firmware_sha256": plan.firmware_sha256.hex(),
        "firmware_size": plan.firmware.size,
    }
    if spec.technology is not Technology.SEV:
        doc.update(vcpus=spec.vcpus, vmm=str(spec.vmm))
        # EC2 and GCE put a fixed RDX in the VMSAs, not the CPU signature: a CPU given for
        # them is not measured, so it is not named (the guest without one is the same guest).
        if spec.cpu is not None and spec.vmm is Vmm.QEMU:
            fms = split_signature(spec.cpu.signature)
            doc["cpu"] = {
                "name": spec.cpu.name,
                "signature": f"{spec.cpu.signature:#x}",
                "family": fms.family,
                "model": fms.model,
                "stepping": fms.stepping,
            }
    if spec.technology is Technology.SEV_SNP:
        doc.update(
            guest_features=f"{spec.guest_features:#x}",
            guest_feature_names=sev_feature_names(spec.guest_features),
            vmsa_gpa=f"{spec.vmsa_gpa:#x}",
        )
    else:
        doc["sev_policy"] = f"{spec.sev_policy:#x}"
    if plan.kernel_hashes is not None and spec.boot is not None:
        doc.update(
            kernel_sha256=plan.kernel_hashes.kernel.hex(),
            initrd_sha256=plan.kernel_hashes.initrd.hex(),
            cmdline=spec.boot.cmdline,
            cmdline_sha256=plan.kernel_hashes.cmdline.hex(),
        )
    return doc


def _igvm_inputs(plan: LaunchPlan) -> dict[str, Any]:
    spec, igvm = plan.spec, plan.igvm
    native_zero = spec.igvm is not None and spec.igvm.native_zero
    return {
        "firmware": firmware_name(spec),
        "firmware_sha256": plan.firmware_sha256.hex(),
        "firmware_format": "igvm",
        "firmware_size": None if igvm is None else igvm.total_file_size,
        "igvm_native_zero": native_zero,
        "snp_policy": f"{spec.snp_policy:#x}",
    }


def td_identity(plan: TdPlan) -> dict[str, Any]:
    """The TD's expected identity fields besides MRTD, as a TDREPORT / quote shows them."""
    from cvmlaunch.abi.tdx import TdAttribute, XfamBit, flag_names

    td = plan.spec.td_config
    return {
        "attributes": f"{td.attributes:#018x}",
        "attribute_names": flag_names(TdAttribute, td.attributes),
        "xfam": None if td.xfam is None else f"{td.xfam:#018x}",
        "xfam_names": None if td.xfam is None else flag_names(XfamBit, td.xfam),
        "mrconfigid": td.mrconfigid.hex(),
        "mrowner": td.mrowner.hex(),
        "mrownerconfig": td.mrownerconfig.hex(),
    }


def td_inputs(plan: TdPlan, events: Sequence[Step] | None = None) -> dict[str, Any]:
    """What went into a TD's MRTD and, where its boot is predicted (`tdx.edk2`), its RTMRs:
    the boot's settings, and the digests its `events` extend."""
    from cvmlaunch.abi.hob import HOB_HEADER
    from cvmlaunch.abi.tdx import PAGE_SIZE

    spec = plan.spec
    td = spec.td_config
    mrtd_inputs = {
        "firmware": firmware_name(spec),
        "firmware_sha256": plan.firmware_sha256.hex(),
        "firmware_size": plan.firmware_size,
        "vcpus": spec.vcpus,
        "memory_mib": spec.memory_mib,
        "page_order": str(td.page_order),
        "raw_data_tail": str(td.raw_data_tail),
        "tdvf": tdvf_json(plan.tdvf),
        # As TDVF measures it into RTMR0: without the END_OF_HOB_LIST header at its end.
        "td_hob_sha384": None
        if plan.td_hob is None
        else hashlib.sha384(plan.td_hob[: -HOB_HEADER.size]).hexdigest(),
        "operations": [
            {
                "section": op.section,
                "type": op.section_type.name,
                "gpa": f"{op.gpa:#x}",
                "pages": op.size // PAGE_SIZE,
                "action": str(op.action),
            }
            for op in plan.ops
        ],
    }
    return mrtd_inputs | _td_boot_inputs(plan, events)


def _td_boot_inputs(plan: TdPlan, events: Sequence[Step] | None) -> dict[str, Any]:
    spec = plan.spec
    td = spec.td_config
    if td.edk2 is None:
        return {}
    boot = spec.boot
    doc: dict[str, Any] = {
        "edk2": td.edk2,
        "qemu": td.qemu,
        "acpi_sha384": None if td.acpi is None else [d.hex() for d in td.acpi],
        "kernel": None if boot is None or boot.kernel.path is None else str(boot.kernel.path),
        "initrd": None
        if boot is None or boot.initrd is None or boot.initrd.path is None
        else str(boot.initrd.path),
        "cmdline": None if boot is None else boot.cmdline,
    }
    # The digests as the events extend them (a file's: only once measured), by label.
    labels = {"kernel_authenticode": "kernel", "load_options_sha384": "LoadOptions",
              "initrd_sha384": "initrd"}  # fmt: skip
    for key, start in labels.items():
        found = next((e for e in events or () if e.label.startswith(start)), None)
        doc[key] = None if found is None else _hex(found.contents)
    return doc


def tdvf_json(tdvf: TdvfMetadata) -> dict[str, Any]:
    from cvmlaunch.abi.tdx import TdvfAttribute, flag_names

    return {
        "descriptor_offset": tdvf.offset,
        "located_by": tdvf.locator,
        "sections": [
            {
                "index": s.number,
                "type": s.type.name,
                "data_offset": f"{s.data_offset:#x}",
                "raw_size": f"{s.raw_size:#x}",
                "gpa": f"{s.gpa:#x}",
                "mem_size": f"{s.mem_size:#x}",
                "attributes": flag_names(TdvfAttribute, s.attributes),
            }
            for s in tdvf.sections
        ],
    }


def inputs_json(plan: Plan, events: Sequence[Step] | None = None) -> dict[str, Any]:
    """What went into `plan`'s measurement (the `inputs` of `measure --json`; a TD's boot
    digests from its predicted `events`)."""
    return td_inputs(plan, events) if isinstance(plan, TdPlan) else _inputs(plan)


def measurement_json(plan: Plan, result: Measurement) -> dict[str, Any]:
    """The `measure --json` object."""
    doc: dict[str, Any] = {
        "technology": str(result.technology),
        "measurement": result.digest.hex(),
    }
    if isinstance(plan, TdPlan):
        doc["mrtd"] = result.digest.hex()
        if result.rtmrs is not None and result.events is not None:
            doc["rtmrs"] = [_hex(value) for value in result.rtmrs]
            doc["events"] = [event_json(step) for step in result.events]
        doc["td"] = td_identity(plan)
        doc["inputs"] = td_inputs(plan, result.events)
        if result.trace is not None:
            doc["trace"] = [step_json(step) for step in result.trace]
        return doc
    if result.firmware_digest is not None:
        doc["firmware_digest"] = result.firmware_digest.hex()
    if result.launch_measure is not None:
        doc["launch_measure"] = result.launch_measure.hex()
    doc["inputs"] = _inputs(plan)
    if result.trace is not None:
        doc["trace"] = [step_json(step) for step in result.trace]
    return doc


def event_json(step: Step) -> dict[str, object]:
    """An RTMR event as `measure --json` predicts it and `audit --event-log` reads it: its
    register, TCG type, digest, the register after it (None: unknown) and what it is."""
    from cvmlaunch.abi.eventlog import event_type_name

    return {
        "index": step.number,
        "rtmr": step.rtmr,
        "type": event_type_name(step.event_type or 0),
        "digest": _hex(step.contents),
        "rtmr_after": _hex(step.digest),
        "label": step.label,
    }


def step_json(step: Step) -> dict[str, object]:
    """A measured step as `measure --trace --json` shows it."""
    if step.kind in TD_RECORDS:
        return {
            "index": step.number,
            "record": str(step.kind),
            "label": step.label,
            "gpa": f"{step.gpa:#x}",
            "section": step.section,
            "digest": _hex(step.digest),
        }
    doc: dict[str, object] = {
        "index": step.number,
        "kind": str(step.kind),
        "label": step.label,
        "gpa": f"{step.gpa:#x}",
        "size": step.size,
        "page_type": step.page_type.name if step.page_type is not None else None,
        "contents": _hex(step.contents),
        "digest": _hex(step.digest),
    }
    if step.file_offset is not None:
        doc["file_offset"] = f"{step.file_offset:#x}"
    if step.section is not None:
        doc["section"] = step.section
    if step.vmsa is not None:
        doc["vcpu"] = step.vcpu
        doc["vmsa"] = {name: f"{v:#x}" for name, v in step.vmsa.items()}
    return doc


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


# The digests of `measure --json`, in lowercase hex.
DIGEST_KEYS = ("measurement", "mrtd", "firmware_digest", "launch_measure", "expected")


def with_base64(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with each digest also in base64 as sev-snp-measure prints it (`KEY_base64`,
    right after `KEY`). The hex values stay: the document reads back as before."""
    import base64  # only for this output

    out: dict[str, Any] = {}
    for key, value in doc.items():
        out[key] = value
        if key in DIGEST_KEYS:
            out[f"{key}_base64"] = base64.b64encode(bytes.fromhex(value)).decode()
    return out
