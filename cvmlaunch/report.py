"""Rendering of results for people (text) and for scripts (JSON-ready dicts)."""

from __future__ import annotations

import hashlib
from typing import Any

from cvmlaunch.abi.cpu import split_signature
from cvmlaunch.abi.ovmf import SevSectionType
from cvmlaunch.abi.snp import sev_feature_names
from cvmlaunch.firmware.ovmf import OvmfImage
from cvmlaunch.measure import Measurement
from cvmlaunch.plan.ops import LaunchPlan
from cvmlaunch.spec import Technology


def _inputs(plan: LaunchPlan) -> dict[str, Any]:
    spec = plan.spec
    doc: dict[str, Any] = {
        "firmware": str(spec.firmware),
        "firmware_sha256": plan.firmware_sha256.hex(),
        "firmware_size": plan.firmware.size,
    }
    if spec.technology is not Technology.SEV:
        doc.update(vcpus=spec.vcpus, vmm=str(spec.vmm))
        if spec.cpu is not None:
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


def measurement_json(plan: LaunchPlan, result: Measurement) -> dict[str, Any]:
    """The `measure --json` object."""
    doc: dict[str, Any] = {
        "technology": str(result.technology),
        "measurement": result.digest.hex(),
    }
    if result.firmware_digest is not None:
        doc["firmware_digest"] = result.firmware_digest.hex()
    if result.launch_measure is not None:
        doc["launch_measure"] = result.launch_measure.hex()
    doc["inputs"] = _inputs(plan)
    if result.trace is not None:
        doc["trace"] = [step.to_json() for step in result.trace]
    return doc


def measurement_text(plan: LaunchPlan, result: Measurement, expected: bytes | None) -> str:
    """A short human summary; with a trace, one line per step before it."""
    lines = []
    if result.trace is not None:
        lines.append(
            f"{'step':>6}  {'gpa':>14}  {'type':<10}  {'contents':<16}  {'digest':<16}  op"
        )
        for s in result.trace:
            lines.append(
                f"{s.step:>6}  {s.gpa:>#14x}  {s.page_type.name:<10}  {s.contents.hex()[:16]}  "
                f"{s.digest.hex()[:16]}  {s.label}"
            )
        lines.append("")
    inputs = _inputs(plan)
    lines.append(f"technology       {result.technology}")
    lines.append(f"firmware         {inputs['firmware']} (sha256 {inputs['firmware_sha256']})")
    if "vcpus" in inputs:
        cpu = inputs.get("cpu")
        cpu_text = f" x {cpu['name'] or 'signature'} {cpu['signature']}" if cpu else ""
        lines.append(f"vcpus            {inputs['vcpus']}{cpu_text}, vmm {inputs['vmm']}")
    if "guest_features" in inputs:
        names = ", ".join(inputs["guest_feature_names"]) or "none"
        lines.append(f"guest features   {inputs['guest_features']} ({names})")
    if "kernel_sha256" in inputs:
        lines.append(f"kernel sha256    {inputs['kernel_sha256']}")
        lines.append(f"initrd sha256    {inputs['initrd_sha256']}")
        lines.append(f"cmdline          {inputs['cmdline']!r}")
    if result.firmware_digest is not None:
        lines.append(f"firmware digest  {result.firmware_digest.hex()}")
    if result.launch_measure is not None:
        lines.append(f"launch measure   {result.launch_measure.hex()}")
    lines.append(f"measurement      {result.digest.hex()}")
    if expected is not None:
        verdict = "match" if expected == result.digest else f"MISMATCH (expected {expected.hex()})"
        lines.append(f"expected         {verdict}")
    return "\n".join(lines)


def firmware_json(image: OvmfImage) -> dict[str, Any]:
    """The `firmware inspect --json` object."""

    def gpa_range(r: Any) -> dict[str, str] | None:
        return None if r is None else {"base": f"{r.base:#x}", "size": f"{r.size:#x}"}

    return {
        "size": image.size,
        "sha256": hashlib.sha256(image.data).hexdigest(),
        "gpa": f"{image.gpa:#x}",
        "footer_table": [
            {"guid": e.guid_text, "name": e.name, "offset": e.offset, "data": e.data.hex()}
            for e in image.entries
        ],
        "sev_metadata": None
        if image.sev_metadata is None
        else [
            {"index": s.number, "gpa": f"{s.gpa:#x}", "size": f"{s.size:#x}", "type": s.type.name}
            for s in image.sev_metadata
        ],
        "sev_es_reset_address": None
        if image.sev_es_reset_address is None
        else f"{image.sev_es_reset_address:#x}",
        "hash_table_area": gpa_range(image.hash_table_area),
        "secret_area": gpa_range(image.secret_area),
        "tdx_metadata_offset": image.tdx_metadata_offset,
        "supports": {
            "sev_snp": image.sev_metadata is not None,
            "measured_direct_boot_sev": image.hash_table_area is not None,
            "measured_direct_boot_snp": bool(image.sections(SevSectionType.SNP_KERNEL_HASHES)),
        },
    }


def firmware_text(image: OvmfImage) -> str:
    doc = firmware_json(image)
    lines = [
        f"size             {doc['size']} bytes, mapped at {doc['gpa']}..0x100000000",
        f"sha256           {doc['sha256']}",
        "footer table:",
    ]
    lines += [
        f"  {e['offset']:>#10x}  {e['guid']}  {e['name']:<22} {e['data']}"
        for e in doc["footer_table"]
    ]
    if image.sev_metadata is None:
        lines.append("SEV metadata:    none (cannot launch as SEV-SNP)")
    else:
        lines.append("SEV metadata:")
        lines += [
            f"  {s.number:>2}  {s.type.name:<18} gpa {s.gpa:#x} size {s.size:#x}"
            for s in image.sev_metadata
        ]
    for key in ("sev_es_reset_address", "hash_table_area", "secret_area", "tdx_metadata_offset"):
        lines.append(f"{key.replace('_', ' '):<17}{doc[key] if doc[key] is not None else 'none'}")
    return "\n".join(lines)
