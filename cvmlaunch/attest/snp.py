"""SEV-SNP attestation reports: parse (versions 2-5), verify (ECDSA P-384 by the VCEK or
VLEK, chained with RSA-PSS to the pinned ARK), bind the VEK to the report, and validate the
claims. Every check runs; none hides another.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cvmlaunch.abi.snp import GUEST_POLICY_MBO, GUEST_POLICY_MBZ, GuestPolicyBit
from cvmlaunch.abi.snp_report import (
    ECDSA_COMPONENT_SIZE,
    OFFSETS,
    REPORT,
    REPORT_SIZE,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SIGNED_SIZE,
    SIGNER_AUTHOR_KEY_EN,
    SIGNER_INFO_MBZ,
    SIGNER_MASK_CHIP_KEY,
    TCB_LAYOUTS,
    TURIN_HWID_SIZE,
    VERSIONS,
    PlatformInfoBit,
    SigningKey,
    product_of_cpuid,
    reserved_ranges,
    signing_key,
    tcb_parts,
)
from cvmlaunch.attest import certs as c
from cvmlaunch.attest.amd import AmdCerts, Vek, read_vek
from cvmlaunch.attest.expect import (
    SNP_TCB_COMPONENTS,
    Expectations,
    refuse_others,
    refuse_out_of_range,
    report_data,
)
from cvmlaunch.attest.result import AuditResult, Check, check
from cvmlaunch.attest.roots import AMD_ARK_SHA256, amd_chain
from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple


class SnpReport(NamedTuple):
    """An ATTESTATION_REPORT, field by field (names from the SNP ABI), plus its bytes."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    launch_mit_vector: int
    current_mit_vector: int
    signature_r: bytes
    signature_s: bytes
    raw: bytes

    @property
    def cpuid_product(self) -> str | None:
        """The product line from CPUID_FAM_ID/CPUID_MOD_ID (version 3 and later)."""
        if self.version < 3:
            return None
        return product_of_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)


def parse_snp_report(data: bytes) -> SnpReport:
    """The report in `data` (exactly 1184 bytes). Truncated input and versions other than
    2-5 are unusable (AttestationError); anything else parses and is judged by the audit."""
    if len(data) < REPORT_SIZE:
        raise AttestationError(
            f"SEV-SNP report: truncated: expected {REPORT_SIZE} bytes, got {len(data)}",
            len(data),
        )
    if len(data) > REPORT_SIZE:
        raise AttestationError(
            f"neither an SEV-SNP report ({REPORT_SIZE} bytes) nor a TDX quote (version 4 or "
            f"5, TEE type 0x81): {len(data)} bytes"
        )
    fields = REPORT.unpack_from(data)
    if fields[0] not in VERSIONS:
        raise AttestationError(
            f"SEV-SNP report: VERSION {fields[0]} is not one of 2, 3, 4, 5", OFFSETS["VERSION"]
        )
    return SnpReport._make((*fields, bytes(data)))


# ---- audit -----------------------------------------------------------------------------


def audit_snp(
    report: SnpReport,
    certs: AmdCerts,
    expect: Expectations,
    now: datetime,
    memo: c.CertMemo | None = None,
) -> AuditResult:
    """Verify `report` with `certs` at `now` and validate it against `expect`. `memo` keeps
    what depends only on certificate bytes across calls (default: nothing is kept)."""
    memo = memo if memo is not None else c.CertMemo()
    refuse_others(expect, "SEV-SNP")
    refuse_out_of_range(expect)
    checks = _format_checks(report)
    sk = signing_key(report.signer_info)
    wanted = "vlek" if sk == SigningKey.VLEK else "vcek"
    vek_cert = (certs.vlek or certs.vcek) if wanted == "vlek" else (certs.vcek or certs.vlek)
    if vek_cert is None:
        raise AttestationError("SEV-SNP report: no VCEK or VLEK given (--vcek, --vlek or --certs)")
    facts = memo.facts(vek_cert)
    vek = memo.derived(
        "vek", facts.der, lambda: _read_vek(vek_cert, certs.source or "VEK", facts.sha256)
    )
    checks.append(_signing_key_check(report, vek.vek))
    product = report.cpuid_product or vek.vek.product
    checks.append(_product_check(report, vek.vek))
    checks += _chain_checks(vek.vek, certs, product, now, memo)
    checks.append(_signature_check(report, vek))
    if product is not None:
        checks.append(_tcb_binding(report, vek.vek, product))
    if vek.vek.kind == "vcek":
        checks.append(_hwid_binding(report, vek.vek, product))
    checks.append(_debug_check(report, expect))
    claims = _claim_checks(report, expect, product)
    doc = report_doc(report, product)
    # A copy: the caller owns its result, and the remembered document must stay as read.
    doc["vek"] = {**vek.doc, "spl": dict(vek.doc["spl"])}
    return AuditResult("sev-snp", (*checks, *claims), doc, len(claims))


class _KnownVek(NamedTuple):
    """A VEK read once: its extensions, its P-384 key (None if it has none) and its part of
    the report document."""

    vek: Vek
    key: ec.EllipticCurvePublicKey | None
    doc: Mapping[str, Any]


def _read_vek(cert: x509.Certificate, source: str, sha256: bytes) -> _KnownVek:
    vek = read_vek(cert, source)
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return _KnownVek(vek, None, _vek_doc(vek, sha256))
    return _KnownVek(vek, key, _vek_doc(vek, sha256))


def _format_checks(report: SnpReport) -> list[Check]:
    raw = report.raw
    dirty = [
        f"{start + i:#x}"
        for start, end in reserved_ranges(report.version)
        if raw.count(0, start, end) != end - start  # the common case is all zero: cheap
        for i, byte in enumerate(raw[start:end])
        if byte
    ]
    policy_ok = not report.policy & GUEST_POLICY_MBZ and bool(report.policy & GUEST_POLICY_MBO)
    return [
        check("report.signature_algo", "1 (ECDSA P-384 with SHA-384)", report.signature_algo,
              report.signature_algo == SIGNATURE_ALGO_ECDSA_P384_SHA384),
        check("report.reserved", "all reserved bytes zero",
              "zero" if not dirty else "non-zero at " + ", ".join(dirty[:8]), not dirty),
        check("report.signer_info", "bits 31:5 zero", f"{report.signer_info:#x}",
              not report.signer_info & SIGNER_INFO_MBZ),
        check("report.policy_reserved", "bit 17 set, bits 63:26 clear", f"{report.policy:#x}",
              policy_ok),
    ]  # fmt: skip


def _signing_key_check(report: SnpReport, vek: Vek) -> Check:
    sk = signing_key(report.signer_info)
    names: dict[int, str] = {SigningKey.VCEK: "VCEK", SigningKey.VLEK: "VLEK"}
    if report.signer_info & SIGNER_MASK_CHIP_KEY:
        return check("report.signing_key", names.get(sk, "VCEK"), "MASK_CHIP_KEY: unsigned", False)
    if sk not in names:
        shown = "none (7): unsigned" if sk == SigningKey.NONE else f"reserved value {sk}"
        return check("report.signing_key", "VCEK or VLEK", shown, False)
    return check("report.signing_key", names[sk], vek.kind.upper())


def _product_check(report: SnpReport, vek: Vek) -> Check:
    if report.version < 3:
        # No CPUID in a version 2 report: the VEK's productName is all there is, and only
        # Milan and Genoa firmware write version 2 (Turin's CHIP_ID is 8 bytes).
        ok = vek.product in ("Milan", "Genoa")
        return check("vek.product", "Milan or Genoa (a version 2 report)", vek.product_name, ok)
    cpuid = report.cpuid_product
    shown = f"{cpuid} (CPUID {report.cpuid_fam_id:#x}/{report.cpuid_mod_id:#x})"
    if cpuid is None:
        shown = f"unknown CPUID family {report.cpuid_fam_id:#x} model {report.cpuid_mod_id:#x}"
    return check(
        "vek.product", shown, vek.product_name, cpuid is not None and cpuid == vek.product
    )


def _chain_checks(
    vek: Vek, certs: AmdCerts, product: str | None, now: datetime, memo: c.CertMemo
) -> list[Check]:
    if product is None:
        reason = "no pinned AMD roots: product unknown"
        return [
            check(n, "chain to a pinned ARK", reason, False)
            for n in ("ark.pinned", "vek.signature")
        ]
    pinned_ask, pinned_ark = amd_chain(product, vek.kind)
    ark_name = f"ARK-{product}"
    out: list[Check] = []
    if certs.ark is not None:
        out.append(memo.pinned("ark.pinned", certs.ark, AMD_ARK_SHA256[product], ark_name))
    else:
        out.append(check("ark.pinned", ark_name, ark_name + " (bundled)", True))
    # The ARK is the pinned one; a supplied ASK is accepted when the pinned ARK signed it.
    supplied = certs.asvk if vek.kind == "vlek" else certs.ask
    ask = supplied if supplied is not None else pinned_ask
    out += [
        memo.issued_by("ark.signature", pinned_ark, pinned_ark),
        memo.issued_by("ask.signature", ask, pinned_ark),
        memo.issued_by("vek.signature", vek.cert, ask),
        memo.valid_at("ark.validity", pinned_ark, now),
        memo.valid_at("ask.validity", ask, now),
        memo.valid_at("vek.validity", vek.cert, now),
    ]
    return out


def _signature_check(report: SnpReport, known: _KnownVek) -> Check:
    expected = f"ECDSA P-384 signature by the {known.vek.kind.upper()}"
    key = known.key
    if key is None:
        return check("report.signature", expected, "the VEK has no P-384 key", False)
    r = int.from_bytes(report.signature_r[:ECDSA_COMPONENT_SIZE], "little")
    s = int.from_bytes(report.signature_s[:ECDSA_COMPONENT_SIZE], "little")
    try:
        key.verify(encode_dss_signature(r, s), report.raw[:SIGNED_SIZE], _ECDSA_SHA384)
    except InvalidSignature:
        return check("report.signature", expected, "does not verify", False)
    return check("report.signature", expected, expected, True)


_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())


def _tcb_binding(report: SnpReport, vek: Vek, product: str) -> Check:
    parts = tcb_parts(report.reported_tcb, product)
    given = {name: vek.spl.get(name) for name in parts}
    return check("vek.tcb", _tcb_text(parts), _tcb_text(given), parts == given)


def _tcb_text(parts: dict[str, int | None] | dict[str, int]) -> str:
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in parts.items())


def _hwid_binding(report: SnpReport, vek: Vek, product: str | None) -> Check:
    chip = report.chip_id
    if product == "Turin":
        # Turin VCEKs carry the first 8 bytes of CHIP_ID; the rest of CHIP_ID must be zero.
        expected = chip[:TURIN_HWID_SIZE]
        ok = vek.hwid == expected and not any(chip[TURIN_HWID_SIZE:])
        return check("vek.hwid", expected, vek.hwid or b"", ok)
    return check("vek.hwid", chip, vek.hwid or b"")


def _debug_check(report: SnpReport, expect: Expectations) -> Check:
    """Checked by default, so not a claim: a debuggable guest's memory is open to the host."""
    debug = bool(report.policy >> GuestPolicyBit.DEBUG & 1)
    expected = "allowed" if expect.allow_debug else "DEBUG clear"
    actual = "DEBUG set" if debug else "DEBUG clear"
    return check("guest.debug", expected, actual, expect.allow_debug or not debug)


def _claim_checks(report: SnpReport, expect: Expectations, product: str | None) -> list[Check]:
    """A check for each expectation given (none by default)."""
    out: list[Check] = []
    if expect.measurement is not None:
        out.append(check("guest.measurement", expect.measurement, report.measurement))
    if expect.policy is not None:
        out.append(check("guest.policy", f"{expect.policy:#x}", f"{report.policy:#x}"))
    if expect.host_data is not None:
        out.append(check("guest.host_data", expect.host_data, report.host_data))
    if expect.report_data is not None:
        wanted = report_data(expect.report_data)
        out.append(check("guest.report_data", wanted, report.report_data))
    if expect.vmpl is not None:
        out.append(check("guest.vmpl", expect.vmpl, report.vmpl))
    for field in ("family_id", "image_id", "id_key_digest", "author_key_digest"):
        wanted_id: bytes | None = getattr(expect, field)
        if wanted_id is not None:
            out.append(check(f"guest.{field}", wanted_id, getattr(report, field)))
    if expect.min_guest_svn is not None:
        ok = report.guest_svn >= expect.min_guest_svn
        out.append(check("guest.guest_svn", f">= {expect.min_guest_svn}", report.guest_svn, ok))
    if expect.min_tcb is not None:
        out += _min_tcb_checks(report, expect.min_tcb, product)
    return out


def _min_tcb_checks(
    report: SnpReport, minimum: Mapping[str, int], product: str | None
) -> list[Check]:
    wanted = dict(minimum)
    unknown = sorted(set(wanted) - set(SNP_TCB_COMPONENTS))
    if unknown:
        raise AttestationError(
            f"min_tcb: unknown component {unknown[0]!r} (expected {', '.join(SNP_TCB_COMPONENTS)})"
        )
    shown = _tcb_text(wanted)
    out = []
    for name in ("reported", "committed", "current", "launch"):
        tcb = getattr(report, f"{name}_tcb")
        if product is None:
            out.append(check(f"tcb.{name}", f">= {shown}", "product unknown", False))
            continue
        if "fmc" in wanted and "fmc" not in TCB_LAYOUTS[product]:
            raise AttestationError(f"--min-tcb: fmc exists from Turin on, not on {product}")
        parts = tcb_parts(tcb, product)
        low = {k: parts[k] for k in wanted if parts[k] < wanted[k]}
        actual = _tcb_text({k: parts[k] for k in wanted})
        out.append(check(f"tcb.{name}", f">= {shown}", actual, not low))
    return out


# ---- the parsed report as JSON ---------------------------------------------------------


def report_doc(report: SnpReport, product: str | None, vek: Vek | None = None) -> dict[str, Any]:
    """The report as JSON-ready values: hex for byte strings, decoded bit fields."""
    r = report
    doc: dict[str, Any] = {
        "version": r.version,
        "product": product,
        "guest_svn": r.guest_svn,
        "policy": _policy_doc(r.policy),
        "family_id": r.family_id.hex(),
        "image_id": r.image_id.hex(),
        "vmpl": r.vmpl,
        "signature_algo": r.signature_algo,
        "platform_info": _bits_doc(r.platform_info, {b.value: b.name for b in PlatformInfoBit}),
        "signer_info": {
            "value": f"{r.signer_info:#x}",
            "author_key_en": bool(r.signer_info & SIGNER_AUTHOR_KEY_EN),
            "mask_chip_key": bool(r.signer_info & SIGNER_MASK_CHIP_KEY),
            "signing_key": _signing_key_name(signing_key(r.signer_info)),
        },
        "report_data": r.report_data.hex(),
        "measurement": r.measurement.hex(),
        "host_data": r.host_data.hex(),
        "id_key_digest": r.id_key_digest.hex(),
        "author_key_digest": r.author_key_digest.hex(),
        "report_id": r.report_id.hex(),
        "report_id_ma": r.report_id_ma.hex(),
        "chip_id": r.chip_id.hex(),
        "current_version": f"{r.current_major}.{r.current_minor}.{r.current_build}",
        "committed_version": f"{r.committed_major}.{r.committed_minor}.{r.committed_build}",
    }
    for name in ("current", "reported", "committed", "launch"):
        tcb = getattr(r, f"{name}_tcb")
        parts = tcb_parts(tcb, product) if product is not None else None
        doc[f"{name}_tcb"] = {"value": f"{tcb:#018x}", "parts": parts}
    if r.version >= 3:
        doc["cpuid"] = {
            "family": r.cpuid_fam_id,
            "model": r.cpuid_mod_id,
            "stepping": r.cpuid_step,
        }
    if r.version >= 5:
        doc["launch_mit_vector"] = f"{r.launch_mit_vector:#x}"
        doc["current_mit_vector"] = f"{r.current_mit_vector:#x}"
    if vek is not None:
        doc["vek"] = _vek_doc(vek, c.fingerprint(vek.cert))
    return doc


def _signing_key_name(sk: int) -> str:
    try:
        return SigningKey(sk).name
    except ValueError:
        return f"reserved({sk})"


def _policy_doc(policy: int) -> dict[str, Any]:
    bits = {b.value: b.name for b in GuestPolicyBit if b is not GuestPolicyBit.RESERVED_MBO}
    doc = _bits_doc(policy & ~0xFFFF, bits, skip=GUEST_POLICY_MBO)
    doc.update(value=f"{policy:#x}", abi_major=policy >> 8 & 0xFF, abi_minor=policy & 0xFF)
    return doc


def _bits_doc(value: int, names: dict[int, str], skip: int = 0) -> dict[str, Any]:
    """The set bits by name; bits without a name are listed, never an error."""
    named = [names[b] for b in sorted(names) if value >> b & 1]
    unknown = [b for b in range(64) if value >> b & 1 and b not in names and not skip >> b & 1]
    return {"value": f"{value:#x}", "set": named, "unknown_bits": unknown}


def _vek_doc(vek: Vek, sha256: bytes) -> dict[str, Any]:
    cert: x509.Certificate = vek.cert
    return {
        "kind": vek.kind.upper(),
        "product_name": vek.product_name,
        "struct_version": vek.struct_version,
        "spl": vek.spl,
        "hwid": vek.hwid.hex() if vek.hwid is not None else None,
        "csp_id": vek.csp_id,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": sha256.hex(),
    }
