"""Rendering for people (text) and scripts (JSON-ready dicts) of what the commands print:
measurements and firmware images."""

from __future__ import annotations

from cvmlaunch.measure.document import inputs_json, td_identity, td_inputs, tdvf_json
from cvmlaunch.plan.ops import TdPlan

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)

if TYPE_CHECKING:  # the TDX and firmware-inspection modules load where they are used
    from typing import Any

    from cvmlaunch.firmware.ovmf import OvmfImage
    from cvmlaunch.firmware.tdvf import TdvfMetadata
    from cvmlaunch.measure import Measurement
    from cvmlaunch.measure.idblock import SignedIdBlock
    from cvmlaunch.plan.ops import Plan


def _hex16(value: bytes | None) -> str:
    return "" if value is None else value.hex()[:16]


def digest_text(value: bytes, output_format: str = "hex") -> str:
    """A digest as `measure` prints it: lowercase hex, or base64 as sev-snp-measure's
    `--output-format base64` does."""
    if output_format == "base64":
        import base64  # only for this output

        return base64.b64encode(value).decode()
    return value.hex()


def _verdict(expected: bytes | None, digest: bytes, output_format: str) -> list[str]:
    if expected is None:
        return []
    wanted = digest_text(expected, output_format)
    verdict = "match" if expected == digest else f"MISMATCH (expected {wanted})"
    return [f"expected         {verdict}"]


def _td_text(plan: TdPlan, result: Measurement, expected: bytes | None, output_format: str) -> str:
    from cvmlaunch.abi.tdx import PAGE_SIZE

    lines = []
    if result.trace is not None:
        lines.append(f"{'step':>6}  {'gpa':>14}  {'record':<12}  {'digest':<16}  section")
        for t in result.trace:
            digest = _hex16(t.digest)
            lines.append(f"{t.number:>6}  {t.gpa:>#14x}  {t.kind:<12}  {digest}  {t.label}")
        lines.append("")
    inputs = td_inputs(plan)
    identity = td_identity(plan)
    lines.append(f"technology       {result.technology}")
    lines.append(f"firmware         {inputs['firmware']} (sha256 {inputs['firmware_sha256']})")
    lines.append(f"TDVF metadata    at {plan.tdvf.offset:#x} ({plan.tdvf.locator})")
    for op in plan.ops:
        lines.append(
            f"  {op.section:>2}  {op.section_type.name:<13} gpa {op.gpa:#012x}  "
            f"{op.size // PAGE_SIZE:>5} pages  {op.action}"
        )
    lines.append(f"page order       {inputs['page_order']}")
    names = ", ".join(identity["attribute_names"]) or "none"
    lines.append(f"attributes       {identity['attributes']} ({names})")
    if identity["xfam"] is not None:
        lines.append(f"xfam             {identity['xfam']} ({', '.join(identity['xfam_names'])})")
    for key in ("mrconfigid", "mrowner", "mrownerconfig"):
        if set(identity[key]) != {"0"}:
            lines.append(f"{key:<17}{identity[key]}")
    lines.append(f"vcpus, memory    {inputs['vcpus']}, {inputs['memory_mib']} MiB")
    if inputs["td_hob_sha384"] is not None:
        lines.append(f"TD HOB sha384    {inputs['td_hob_sha384']}")
    lines.append(f"mrtd             {digest_text(result.digest, output_format)}")
    if result.rtmrs is not None and result.events is not None:
        if result.trace is not None:
            lines += ["", f"{'event':>6}  {'rtmr':>4}  {'digest':<16}  {'after':<16}  event"]
            lines += [
                f"{e.number:>6}  {e.rtmr:>4}  {_hex16(e.contents)}  {_hex16(e.digest)}  {e.label}"
                for e in result.events
            ]
            lines.append("")
        for n, value in enumerate(result.rtmrs):
            text = "unknown (a digest it holds is not known offline)"
            if value is not None:
                text = digest_text(value, output_format)
            lines.append(f"rtmr{n}            {text}")
    return "\n".join(lines + _verdict(expected, result.digest, output_format))


def measurement_text(
    plan: Plan, result: Measurement, expected: bytes | None, output_format: str = "hex"
) -> str:
    """A short human summary; with a trace, one line per step before it. The digests
    (measurement, firmware digest, launch measure, expected) are in `output_format`: hex or
    base64; the trace's abbreviated digests and input hashes stay hex."""
    if isinstance(plan, TdPlan):
        return _td_text(plan, result, expected, output_format)
    lines = []
    if result.trace is not None:
        lines.append(
            f"{'step':>6}  {'gpa':>14}  {'type':<10}  {'contents':<16}  {'digest':<16}  op"
        )
        for s in result.trace:
            lines.append(
                f"{s.number:>6}  {s.gpa:>#14x}  {s.call_type:<10}  "
                f"{_hex16(s.contents)}  {_hex16(s.digest)}  {s.label}"
            )
        lines.append("")
    inputs = inputs_json(plan)
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
        lines.append(f"firmware digest  {digest_text(result.firmware_digest, output_format)}")
    if result.launch_measure is not None:
        lines.append(f"launch measure   {digest_text(result.launch_measure, output_format)}")
    lines.append(f"measurement      {digest_text(result.digest, output_format)}")
    return "\n".join(lines + _verdict(expected, result.digest, output_format))


def firmware_json(image: OvmfImage, tdvf: TdvfMetadata | str | None = None) -> dict[str, Any]:
    """The `firmware inspect --json` object; `tdvf` is the TDVF metadata, or why it is
    unusable."""
    import hashlib

    from cvmlaunch.abi.ovmf import SevSectionType
    from cvmlaunch.firmware.tdvf import TdvfMetadata

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
        "tdvf": tdvf_json(tdvf) if isinstance(tdvf, TdvfMetadata) else None,
        "tdvf_error": tdvf if isinstance(tdvf, str) else None,
        "supports": {
            "tdx": isinstance(tdvf, TdvfMetadata),
            "sev_snp": image.sev_metadata is not None,
            "measured_direct_boot_sev": image.hash_table_area is not None,
            "measured_direct_boot_snp": bool(image.sections(SevSectionType.SNP_KERNEL_HASHES)),
        },
    }


def firmware_text(image: OvmfImage, tdvf: TdvfMetadata | str | None = None) -> str:
    from cvmlaunch.abi.tdx import TdvfAttribute, flag_names

    doc = firmware_json(image, tdvf)
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
        label = key.replace("_", " ")
        lines.append(f"{label:<16} {doc[key] if doc[key] is not None else 'none'}")
    if tdvf is None:
        lines.append("TDVF metadata:   none (cannot boot a TDX guest)")
    elif isinstance(tdvf, str):
        lines.append(f"TDVF metadata:   unusable: {tdvf}")
    else:
        lines.append(f"TDVF metadata:   at {tdvf.offset:#x} ({tdvf.locator})")
        lines += [
            f"  {s.number:>2}  {s.type.name:<13} data {s.data_offset:#x}+{s.raw_size:#x}  "
            f"gpa {s.gpa:#x} size {s.mem_size:#x}  "
            f"{'|'.join(flag_names(TdvfAttribute, s.attributes)) or '-'}"
            for s in tdvf.sections
        ]
    return "\n".join(lines)


def id_block_text(signed: SignedIdBlock) -> str:
    """The ID block as an operator hands it to QEMU, and what the report will carry."""
    doc = signed.to_json()
    qemu = ",".join(f"{k}={v}" for k, v in doc["qemu"].items())
    lines = [
        f"ID block:            FAMILY_ID {doc['family_id']}, IMAGE_ID {doc['image_id']}, "
        f"GUEST_SVN {doc['guest_svn']}, POLICY {doc['policy']}",
        f"ID_KEY_DIGEST:       {doc['id_key_digest']}",
        f"AUTHOR_KEY_DIGEST:   {doc['author_key_digest'] or '(no author key)'}",
        f"QEMU sev-snp-guest:  {qemu}",
    ]
    return "\n".join(lines)
