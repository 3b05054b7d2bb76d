"""Intel TDX quotes (DCAP v4 and v5, ECDSA P-256): parse, verify offline, validate claims.

Offline verification (Intel "TDX DCAP Quote Generation Library and Quote Verification"
spec) establishes that Intel's TD quoting enclave, on a platform whose PCK certificate
chains to the bundled Intel SGX Root CA, vouches for the TD report body:

* the quote signature by the attestation key covers header (+ v5 descriptor) + body;
* the PCK chain (leaf, PCK Platform/Processor CA, root) is signed up to the pinned root
  and valid now;
* the QE report is signed by the PCK leaf key, and its REPORTDATA binds the attestation
  key (SHA-256 of the key and the QE auth data);
* the QE report names Intel's TD-QE (MRSIGNER, ISVPRODID).

What needs Intel PCS collateral (TCB info for the PCK's FMSPC, QE identity JSON with its
TCB levels, CRLs) is out of scope here; the FMSPC is reported so a caller can fetch it.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from datetime import datetime
from enum import IntFlag
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cvmlaunch.abi import tdx_quote as abi
from cvmlaunch.abi.tdx import TdAttribute, XfamBit, flag_names
from cvmlaunch.attest import der
from cvmlaunch.attest.certs import CertMemo, bundled, common_name, ecdsa_p256_ok, load_chain, utc
from cvmlaunch.attest.expect import Expectations, refuse_others, refuse_out_of_range
from cvmlaunch.attest.expect import report_data as padded_report_data
from cvmlaunch.attest.result import AuditResult, Check, check
from cvmlaunch.attest.roots import INTEL_SGX_ROOT_SHA256, intel_root
from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple

if TYPE_CHECKING:
    from cvmlaunch.attest.eventlog import EventLog


class TdReportBody(NamedTuple):
    """The TD report body a quote carries (TDX 1.0, or TDX 1.5 with the last two fields)."""

    tee_tcb_svn: bytes  # TEE_TCB_SVN[16]
    mrseam: bytes  # MRSEAM: the TDX module's measurement
    mrsignerseam: bytes  # MRSIGNERSEAM: zero for Intel's module
    seam_attributes: int  # SEAMATTRIBUTES
    td_attributes: int  # TDATTRIBUTES (TdAttribute bits)
    xfam: int  # XFAM (XfamBit bits)
    mrtd: bytes  # MRTD: the build-time measurement
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]  # RTMR0..3
    report_data: bytes  # REPORTDATA[64], chosen by the TD
    tee_tcb_svn2: bytes | None  # TEE_TCB_SVN_2, TDX 1.5 body only
    mrservicetd: bytes | None  # MRSERVICETD, TDX 1.5 body only


class QeReport(NamedTuple):
    """The fields of the quoting enclave's SGX report that verification looks at."""

    cpusvn: bytes
    miscselect: int
    attributes: bytes
    mrenclave: bytes
    mrsigner: bytes
    isvprodid: int
    isvsvn: int
    report_data: bytes


class TdxQuote(NamedTuple):
    """A parsed TDX quote. Byte strings are as in the quote; `signed` is what the quote
    signature covers (header, v5 body descriptor, body)."""

    version: int
    att_key_type: int
    tee_type: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int  # the v5 descriptor's type; 2 (TDX 1.0) for a v4 quote
    body: TdReportBody
    signed: bytes
    signature_data_len: int
    signature: bytes  # r || s, big-endian
    attestation_key: bytes  # X || Y, big-endian
    cert_data_type: int  # 6: QE report certification data
    qe_report: bytes  # the raw 384-byte QE report, as signed by the PCK key
    qe: QeReport  # its fields
    qe_report_signature: bytes  # r || s, big-endian
    qe_auth_data: bytes
    inner_cert_data_type: int  # 5: PCK certificate chain
    pck_chain: bytes  # PEM, as in the quote (often with a trailing NUL)
    trailing: int  # bytes after the signature data (tolerated, not covered by anything)

    @property
    def body_size(self) -> int:
        return abi.TD_BODY_SIZES[abi.BodyType(self.body_type)]


class _Cursor:
    """Reads fields in order from `data[pos:end]`, where `end` closes the enclosing
    structure, so a field running past it is named with its offset."""

    def __init__(self, data: bytes, pos: int, end: int, container: str) -> None:
        self.data, self.pos, self.end, self.container = data, pos, end, container

    def _claim(self, size: int, what: str) -> int:
        start = self.pos
        if size > self.end - start:
            raise AttestationError(
                f"TDX quote {what}: needs {size} bytes, the {self.container} has "
                f"{self.end - start} left",
                start,
            )
        self.pos = start + size
        return start

    def take(self, size: int, what: str) -> bytes:
        start = self._claim(size, what)
        return self.data[start : self.pos]

    def unpack(self, layout: struct.Struct, what: str) -> tuple[Any, ...]:
        start = self._claim(layout.size, what)
        values: tuple[Any, ...] = layout.unpack_from(self.data, start)
        return values

    def inner(self, size: int, what: str) -> _Cursor:
        """The next `size` bytes as a structure of their own, named `what`."""
        start = self._claim(size, what)
        return _Cursor(self.data, start, self.pos, what)


def parse_tdx_quote(data: bytes) -> TdxQuote:
    """The quote in `data`; AttestationError (naming the field and its offset) when it is
    not a well-formed TDX quote v4/v5. Bytes after the signature data are tolerated."""
    quote = _Cursor(data, 0, len(data), "quote")
    version, att_key_type, tee_type, _, qe_vendor_id, user_data = quote.unpack(
        abi.HEADER, "header"
    )
    if version not in abi.QUOTE_VERSIONS:
        raise AttestationError(
            f"TDX quote version {version}: expected 4 or 5", abi.HEADER_OFFSETS["VERSION"]
        )
    if tee_type != abi.TEE_TYPE_TDX:
        raise AttestationError(
            f"TDX quote TEE type {tee_type:#x}: expected {abi.TEE_TYPE_TDX:#x}, not a TDX quote",
            abi.HEADER_OFFSETS["TEE_TYPE"],
        )
    body_type = abi.BodyType.TD_REPORT_10
    if version == 5:
        at = quote.pos
        raw_type, body_size = quote.unpack(abi.BODY_DESCRIPTOR, "v5 body descriptor")
        if raw_type not in abi.TD_BODY_SIZES:
            kind = "an SGX enclave report, " if raw_type == abi.BodyType.SGX_ENCLAVE_REPORT else ""
            raise AttestationError(
                f"TDX quote v5 body type {raw_type}: expected 2 (TDX 1.0) or 3 (TDX 1.5); "
                f"{kind}not a TD quote",
                at,
            )
        body_type = abi.BodyType(raw_type)
        if body_size != abi.TD_BODY_SIZES[body_type]:
            raise AttestationError(
                f"TDX quote v5 body size {body_size}: expected "
                f"{abi.TD_BODY_SIZES[body_type]} for body type {body_type.value}",
                at + 2,
            )
    body = _td_report_body(quote.unpack(abi.TD_REPORT_BODIES[body_type], "TD report body"))
    signed = data[: quote.pos]

    (signature_data_len,) = quote.unpack(abi.SIGNATURE_DATA_LEN, "signature data length")
    sig = quote.inner(signature_data_len, "signature data")
    signature = sig.take(abi.ECDSA_SIGNATURE_SIZE, "quote signature")
    attestation_key = sig.take(abi.ECDSA_KEY_SIZE, "attestation key")
    cert_data_type, cert_data_size = sig.unpack(abi.CERT_DATA_HEADER, "certification data header")
    if cert_data_type != abi.CertDataType.QE_REPORT:
        raise AttestationError(
            f"TDX quote certification data type {cert_data_type}: expected 6 "
            "(QE report certification data)",
            sig.pos - abi.CERT_DATA_HEADER_SIZE,
        )
    cert = sig.inner(cert_data_size, "QE report certification data")
    qe_report = cert.take(abi.QE_REPORT_SIZE, "QE report")
    qe_report_signature = cert.take(abi.ECDSA_SIGNATURE_SIZE, "QE report signature")
    (auth_len,) = cert.unpack(abi.QE_AUTH_DATA_LEN, "QE auth data length")
    qe_auth_data = cert.take(auth_len, "QE auth data")
    inner_type, inner_size = cert.unpack(abi.CERT_DATA_HEADER, "PCK certification data header")
    if inner_type != abi.CertDataType.PCK_CHAIN:
        raise AttestationError(
            f"TDX quote QE report certification data holds type {inner_type}: "
            "expected 5 (PCK certificate chain)",
            cert.pos - abi.CERT_DATA_HEADER_SIZE,
        )
    pck_chain = cert.take(inner_size, "PCK certificate chain")

    return TdxQuote(
        version=version,
        att_key_type=att_key_type,
        tee_type=tee_type,
        qe_vendor_id=qe_vendor_id,
        user_data=user_data,
        body_type=body_type.value,
        body=body,
        signed=signed,
        signature_data_len=signature_data_len,
        signature=signature,
        attestation_key=attestation_key,
        cert_data_type=cert_data_type,
        qe_report=qe_report,
        qe=QeReport(*abi.QE_REPORT.unpack(qe_report)),
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        inner_cert_data_type=inner_type,
        pck_chain=pck_chain,
        trailing=len(data) - sig.end,
    )


def _td_report_body(fields: tuple[Any, ...]) -> TdReportBody:
    """The body from its struct fields (15 for TDX 1.0, 17 for TDX 1.5)."""
    r0, r1, r2, r3 = fields[10:14]
    report_data, svn2, service_td = (*fields[14:], None, None)[:3]
    return TdReportBody._make((*fields[:10], (r0, r1, r2, r3), report_data, svn2, service_td))


# -- The PCK chain: loaded once per distinct chain --------------------------------------


class _Pck(NamedTuple):
    certs: tuple[x509.Certificate, ...]  # as in the quote: leaf, intermediate CA, root CA
    problem: str | None  # why the chain cannot be verified, if it cannot
    fmspc: str | None  # from the leaf's SGX extension, uppercase hex
    leaf_cn: str | None = None  # the leaf's subject CN


def _load_pck(chain: bytes, memo: CertMemo | None = None) -> _Pck:
    """The chain in a quote. Given a `memo`, it learns what loading read of each
    certificate (its DER, subject, public key, DER parts), which is then not read again."""
    # A root byte-identical to the bundled one is the bundled certificate: parsed, pinned
    # and its self-signature verified once per process (roots.intel_root).
    root = intel_root()
    try:
        loaded = load_chain(chain, "PCK certificate chain", {bundled(root).der: root})
    except AttestationError as e:
        return _Pck((), str(e), None)
    certs = tuple(loaded.certs)
    if memo is not None:
        for cert, cert_der, key, subject, parts in zip(certs, *loaded[1:], strict=True):
            memo.facts(cert, cert_der, subject)
            if key is not None:
                memo.public_key(cert, key)
            if parts is not None:
                memo.parts(cert_der, parts)
    fmspc = _fmspc(certs[0]) if certs else None
    leaf_cn = None
    if certs:
        leaf_cn = common_name(certs[0], loaded.subjects[0])
    problem = None
    if len(certs) != 3:
        problem = f"PCK chain holds {len(certs)} certificates, expected 3 (leaf, CA, root CA)"
    return _Pck(certs, problem, fmspc, leaf_cn)


_SGX_EXTENSION = x509.ObjectIdentifier(abi.SGX_EXTENSION_OID)


def _fmspc(leaf: x509.Certificate) -> str | None:
    """FMSPC from the PCK leaf's SGX extension (a SEQUENCE of SEQUENCE {OID, value}), or
    None when the leaf has none or it is malformed."""
    try:
        ext = leaf.extensions.get_extension_for_oid(_SGX_EXTENSION)
    except (x509.ExtensionNotFound, ValueError):
        return None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        return None
    data = ext.value.value
    # Walked in place with der.header (what der.only and der.elements read, without
    # copying each element out).
    try:
        tag, pos, end = der.header(data, 0, len(data))
        if tag != der.SEQUENCE or end != len(data):
            return None
        while pos < end:
            tag, start, pos = der.header(data, pos, end)
            if tag != der.SEQUENCE:
                continue
            parts = []
            at = start
            while at < pos:
                parts.append(der.header(data, at, pos))
                at = parts[-1][2]
            if len(parts) == 2 and parts[0][0] == der.OID:
                if not _is_fmspc_oid(data[parts[0][1] : parts[0][2]]):
                    continue
                tag, start, stop = parts[1]
                if tag == der.OCTET_STRING and stop - start == abi.FMSPC_SIZE:
                    return data[start:stop].hex().upper()
                return None
    except (ValueError, AttestationError):
        return None
    return None


_FMSPC_OID_CONTENTS = bytes.fromhex("2a864886f84d010d0104")  # 1.2.840.113741.1.13.1.4


def _is_fmspc_oid(value: bytes) -> bool:
    """`der.oid_text(value) == abi.FMSPC_OID` (AttestationError for a malformed OID alike),
    by comparing bytes when the encoding is minimal (no subidentifier opens with 0x80),
    which makes the bytes a function of the text."""
    if not value or value[-1] & 0x80 or 0x80 in value:
        return der.oid_text(value) == abi.FMSPC_OID
    return value == _FMSPC_OID_CONTENTS


# -- The parsed quote as a document -------------------------------------------------------


@functools.lru_cache(maxsize=256)  # few distinct values occur; enum walks are slow
def _bit_names(flags: type[IntFlag], value: int) -> tuple[str, ...]:
    """Names of the set bits `flags` defines, then every other set bit as hex."""
    defined = sum(member.value for member in flags)
    unknown = value & ~defined
    return (
        *flag_names(flags, value & defined),
        *(f"{1 << bit:#x}" for bit in range(64) if unknown >> bit & 1),
    )


def _bits_text(flags: type[IntFlag], value: int) -> str:
    return f"{value:#018x} [{', '.join(_bit_names(flags, value))}]"


def quote_doc(quote: TdxQuote, pck: _Pck | None = None) -> dict[str, Any]:
    """The parsed quote as JSON-ready values: bytes as hex, bit fields also by name. `pck`:
    its PCK chain, if already loaded."""
    body, qe = quote.body, quote.qe
    pck = pck if pck is not None else _load_pck(quote.pck_chain)
    return {
        "header": {
            "version": quote.version,
            "att_key_type": quote.att_key_type,
            "tee_type": f"{quote.tee_type:#x}",
            "qe_vendor_id": quote.qe_vendor_id.hex(),
            "user_data": quote.user_data.hex(),
        },
        "body_type": quote.body_type,
        "body_size": quote.body_size,
        "body": {
            "tee_tcb_svn": body.tee_tcb_svn.hex(),
            "mrseam": body.mrseam.hex(),
            "mrsignerseam": body.mrsignerseam.hex(),
            "seam_attributes": f"{body.seam_attributes:#018x}",
            "td_attributes": f"{body.td_attributes:#018x}",
            "td_attribute_names": list(_bit_names(TdAttribute, body.td_attributes)),
            "xfam": f"{body.xfam:#018x}",
            "xfam_names": list(_bit_names(XfamBit, body.xfam)),
            "mrtd": body.mrtd.hex(),
            "mrconfigid": body.mrconfigid.hex(),
            "mrowner": body.mrowner.hex(),
            "mrownerconfig": body.mrownerconfig.hex(),
            "rtmrs": [rtmr.hex() for rtmr in body.rtmrs],
            "report_data": body.report_data.hex(),
            "tee_tcb_svn2": None if body.tee_tcb_svn2 is None else body.tee_tcb_svn2.hex(),
            "mrservicetd": None if body.mrservicetd is None else body.mrservicetd.hex(),
        },
        "signed_region_end": f"{len(quote.signed):#x}",
        "signature_data_len": quote.signature_data_len,
        "signature": quote.signature.hex(),
        "attestation_key": quote.attestation_key.hex(),
        "cert_data_type": quote.cert_data_type,
        "qe_report": {
            "cpusvn": qe.cpusvn.hex(),
            "miscselect": f"{qe.miscselect:#010x}",
            "attributes": qe.attributes.hex(),
            "mrenclave": qe.mrenclave.hex(),
            "mrsigner": qe.mrsigner.hex(),
            "isvprodid": qe.isvprodid,
            "isvsvn": qe.isvsvn,
            "report_data": qe.report_data.hex(),
        },
        "qe_report_signature": quote.qe_report_signature.hex(),
        "qe_auth_data": quote.qe_auth_data.hex(),
        "inner_cert_data_type": quote.inner_cert_data_type,
        "pck": {
            "certificates": len(pck.certs),
            "leaf_cn": pck.leaf_cn,
            "fmspc": pck.fmspc,
            "problem": pck.problem,
        },
        "trailing_bytes": quote.trailing,
    }


# -- Verification and validation ----------------------------------------------------------

_PCK_CHECKS = (
    "pck.root_pinned",
    "pck.intermediate_signature",
    "pck.leaf_signature",
    "pck.root_validity",
    "pck.intermediate_validity",
    "pck.leaf_validity",
)


def _attestation_key(point: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + point)
    except ValueError:
        return None


def _quote_signature(quote: TdxQuote, memo: CertMemo) -> Check:
    name, expected = "quote.signature", "ECDSA P-256/SHA-256 by the attestation key"
    point = quote.attestation_key
    key = memo.derived("attestation-key", point, lambda: _attestation_key(point))
    if key is None:
        return check(name, expected, "attestation key is not a P-256 point", False)
    # Verified for every quote: what it signs (the TD report) differs from quote to quote.
    if ecdsa_p256_ok(key, quote.signature, quote.signed):
        return check(name, expected, expected, True)
    return check(name, expected, "signature does not verify", False)


def _pck_checks(pck: _Pck, now: datetime, memo: CertMemo) -> list[Check]:
    if pck.problem is not None:
        return [
            check(name, "a 3-certificate PCK chain", pck.problem, False) for name in _PCK_CHECKS
        ]
    leaf, intermediate, root = pck.certs
    # Trust rests on the bundled root: the quote's own root copy only has to equal it.
    trusted = intel_root()
    return [
        memo.pinned("pck.root_pinned", root, INTEL_SGX_ROOT_SHA256, "Intel SGX Root CA"),
        memo.issued_by("pck.intermediate_signature", intermediate, trusted),
        memo.issued_by("pck.leaf_signature", leaf, intermediate),
        memo.valid_at("pck.root_validity", trusted, now),
        memo.valid_at("pck.intermediate_validity", intermediate, now),
        memo.valid_at("pck.leaf_validity", leaf, now),
    ]


def _qe_report_checks(quote: TdxQuote, pck: _Pck, memo: CertMemo) -> list[Check]:
    name, expected = "qe_report.signature", "ECDSA P-256/SHA-256 by the PCK leaf key"
    key = memo.public_key(pck.certs[0]) if pck.certs else None
    if key is None:
        signature = check(name, expected, f"no PCK leaf: {pck.problem}", False)
    elif not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        signature = check(name, expected, "PCK leaf key is not ECDSA P-256", False)
    elif _qe_report_signed(quote, key, memo.facts(pck.certs[0]).der, memo):
        signature = check(name, expected, expected, True)
    else:
        signature = check(name, expected, "signature does not verify", False)
    # REPORTDATA = SHA-256(attestation key || QE auth data) || 32 zero bytes.
    binding = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + bytes(32)
    qe = quote.qe
    masked = bytes(a & m for a, m in zip(qe.attributes, abi.TD_QE_ATTRIBUTES_MASK, strict=True))
    misc = qe.miscselect & abi.TD_QE_MISCSELECT_MASK
    return [
        signature,
        check("qe_report.binding", binding, qe.report_data),
        check("qe_identity.mrsigner", abi.TD_QE_MRSIGNER, qe.mrsigner),
        check("qe_identity.isvprodid", abi.TD_QE_ISVPRODID, qe.isvprodid),
        check("qe_identity.attributes", abi.TD_QE_ATTRIBUTES, masked),
        check("qe_identity.miscselect", abi.TD_QE_MISCSELECT, misc),
    ]


def _qe_report_signed(
    quote: TdxQuote, key: ec.EllipticCurvePublicKey, leaf_der: bytes, memo: CertMemo
) -> bool:
    """The QE report signature verifies with the PCK leaf key. One platform's quotes share
    their QE report and its signature, so the verdict is remembered by the exact bytes of
    all three (the report and signature have fixed sizes: the key cannot be ambiguous)."""
    report, signature = quote.qe_report, quote.qe_report_signature
    return memo.derived(
        "qe-report-signature",
        report + signature + leaf_der,
        lambda: ecdsa_p256_ok(key, signature, report),
    )


def _module_checks(body: TdReportBody) -> list[Check]:
    """The TUD attribute bits beyond DEBUG are reserved, and Intel's TDX module is signed by
    Intel (MRSIGNERSEAM zero) with no SEAM attributes."""
    tud = body.td_attributes & abi.TD_ATTRIBUTES_TUD & ~TdAttribute.DEBUG
    return [
        check("td.tud_reserved", "bits 7:1 clear", f"{tud:#x}", tud == 0),
        check("td.seam", "Intel's module: MRSIGNERSEAM and SEAMATTRIBUTES zero",
              "zero" if not any(body.mrsignerseam) and not body.seam_attributes
              else f"MRSIGNERSEAM {body.mrsignerseam.hex()} SEAMATTRIBUTES "
              f"{body.seam_attributes:#x}",
              not any(body.mrsignerseam) and not body.seam_attributes),
    ]  # fmt: skip


def _debug_check(body: TdReportBody, allow_debug: bool) -> Check:
    if not body.td_attributes & TdAttribute.DEBUG:
        return check("td.debug", "DEBUG clear", "DEBUG clear", True)
    if allow_debug:
        return check("td.debug", "DEBUG clear, or allowed", "DEBUG set (allowed)", True)
    return check("td.debug", "DEBUG clear", "DEBUG set: the host can read and alter the TD", False)


def _claim_checks(body: TdReportBody, expect: Expectations) -> list[Check]:
    checks: list[Check] = []
    if expect.measurement is not None:
        checks.append(check("td.mrtd", expect.measurement, body.mrtd))
    if expect.td_attributes is not None:
        want = expect.td_attributes
        checks.append(
            check(
                "td.attributes",
                _bits_text(TdAttribute, want),
                _bits_text(TdAttribute, body.td_attributes),
                want == body.td_attributes,
            )
        )
    if expect.xfam is not None:
        checks.append(
            check(
                "td.xfam",
                _bits_text(XfamBit, expect.xfam),
                _bits_text(XfamBit, body.xfam),
                expect.xfam == body.xfam,
            )
        )
    for name, want_bytes, actual in (
        ("td.mrconfigid", expect.mrconfigid, body.mrconfigid),
        ("td.mrowner", expect.mrowner, body.mrowner),
        ("td.mrownerconfig", expect.mrownerconfig, body.mrownerconfig),
    ):
        if want_bytes is not None:
            checks.append(check(name, want_bytes, actual))
    if expect.report_data is not None:
        checks.append(
            check("td.report_data", padded_report_data(expect.report_data), body.report_data)
        )
    for index, want_rtmr in sorted((expect.rtmrs or {}).items()):
        if not 0 <= index < abi.RTMR_COUNT:
            raise AttestationError(f"rtmrs: index {index}, expected 0..3")
        checks.append(check(f"td.rtmr{index}", want_rtmr, body.rtmrs[index]))
    if expect.mrseam is not None:
        checks.append(check("td.mrseam", expect.mrseam, body.mrseam))
    if expect.min_tee_tcb_svn is not None:
        checks.append(_tee_tcb_svn_check(body, expect.min_tee_tcb_svn))
    return checks


def _tee_tcb_svn_check(body: TdReportBody, minimum: bytes) -> Check:
    if len(minimum) != abi.TEE_TCB_SVN_SIZE:
        raise AttestationError(f"min_tee_tcb_svn: expected 16 bytes, got {len(minimum)}")
    # Component-wise against TEE_TCB_SVN, for a TDX 1.5 body as well: TEE_TCB_SVN_2 is
    # reported (quote_doc) but not checked here; weighing it needs Intel's TCB info.
    ok = all(have >= want for have, want in zip(body.tee_tcb_svn, minimum, strict=True))
    return check("td.tee_tcb_svn", f">= {minimum.hex()} byte by byte", body.tee_tcb_svn, ok)


def audit_tdx(
    quote: TdxQuote,
    expect: Expectations,
    now: datetime,
    log: EventLog | None = None,
    memo: CertMemo | None = None,
) -> AuditResult:
    """Every verification and claim check of `quote` (none stops another) at time `now`
    (a naive `now` is taken as UTC), and, given its event `log`, that the log replays to the
    quote's RTMRs. AttestationError only for expectations a TDX quote cannot be checked
    against. `memo` keeps what depends only on certificate and chain bytes across calls
    (default: nothing is kept)."""
    memo = memo if memo is not None else CertMemo()
    refuse_others(expect, "TDX")
    refuse_out_of_range(expect)
    chain = quote.pck_chain
    pck = memo.derived("pck-chain", chain, lambda: _load_pck(chain, memo))
    checks = [
        check("quote.att_key_type", abi.ATT_KEY_TYPE_ECDSA_P256, quote.att_key_type),
        check("quote.qe_vendor_id", abi.INTEL_QE_VENDOR_ID, quote.qe_vendor_id),
        _quote_signature(quote, memo),
        *_pck_checks(pck, utc(now), memo),
        *_qe_report_checks(quote, pck, memo),
        _debug_check(quote.body, expect.allow_debug),
        *_module_checks(quote.body),
    ]
    report = quote_doc(quote, pck)
    claims = _claim_checks(quote.body, expect)
    if log is not None:
        # Imported here: the event log machinery (measure/, plan/) costs a quote without
        # a log ~15 ms of start-up.
        from cvmlaunch.attest.eventlog import event_checks, event_log_doc

        checks += _event_log_checks(quote.body, log)
        report["event_log"] = event_log_doc(log)
        if expect.events is not None:
            claims += event_checks(expect.events, log)
    return AuditResult("tdx", (*checks, *claims), report, len(claims))


def _event_log_checks(body: TdReportBody, log: EventLog) -> list[Check]:
    """The log's replay against each RTMR the quote signs: a log that does not replay to
    them is not this TD's, or was cut or altered (the first differing RTMR names where)."""
    from cvmlaunch.attest.eventlog import replay

    replayed = replay(log)
    return [
        check(f"event_log.rtmr{n}", body.rtmrs[n], replayed[n]) for n in range(len(body.rtmrs))
    ]
