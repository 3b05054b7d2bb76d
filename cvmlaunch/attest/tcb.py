"""TCB status of a TDX quote from verified collateral: Intel's TCB level matching, the QE
identity, revocation of the PCK chain, each as a named `Check`.

TCB level matching (Intel "SGX/TDX PCK Certificate and TCB Info" and DCAP QVL): the first
tcbLevel, in the order Intel lists them (highest first), whose SGX components
(sgxtcbcomponents) are each <= the PCK certificate's SGX TCB component SVNs, whose pcesvn
<= the certificate's PCESVN, and whose TDX components (tdxtcbcomponents) are each <= the
quote's TEE_TCB_SVN. The TDX module is then matched: MRSIGNERSEAM and SEAMATTRIBUTES
(under its mask) against tcbInfo.tdxModule, or, when TEE_TCB_SVN[1] (the module's major
version) is not 0, against the tdxModuleIdentities entry "TDX_<TEE_TCB_SVN[1]:02X>",
whose tcbLevels (first with isvsvn <= TEE_TCB_SVN[0]) give the module's own status.

Statuses combine as Intel's QVL converges them: the worst of platform, module and QE
identity status by severity (order of `collateral.TCB_STATUSES`), except that a QE
OutOfDate on a platform needing configuration gives OutOfDateConfigurationNeeded (where
dcap-qvl, which takes the plain maximum, says OutOfDate); advisory IDs are the union,
platform first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from cvmlaunch.attest import der
from cvmlaunch.attest.certs import common_name, ecdsa_p256_ok, issuer_problem, utc
from cvmlaunch.attest.collateral import (
    TCB_STATUSES,
    Crl,
    IsvTcbLevel,
    QeIdentity,
    Signed,
    TcbInfo,
    TdxCollateral,
)
from cvmlaunch.attest.result import Check, check
from cvmlaunch.attest.roots import intel_root
from cvmlaunch.attest.tdx import TdxQuote
from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_T = TypeVar("_T")
_MISSING = object()


class PckFacts(NamedTuple):
    """What TCB matching reads from the PCK leaf's SGX extension (OID 1.2.840.113741.1.13.1)."""

    sgx_svns: tuple[int, ...]  # .2.1 .. .2.16: SGX TCB component SVNs
    pcesvn: int  # .2.17: PCESVN
    cpusvn: bytes  # .2.18: CPUSVN
    pce_id: str  # .3: PCE-ID, uppercase hex
    fmspc: str  # .4: FMSPC, uppercase hex


def pck_facts(leaf: x509.Certificate) -> PckFacts:
    """The SGX extension of a PCK leaf; AttestationError when it is absent or malformed."""
    try:
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except (x509.ExtensionNotFound, ValueError):
        raise AttestationError("PCK certificate: no SGX extension") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise AttestationError("PCK certificate: SGX extension unreadable")
    values = _oid_values(der.only(ext.value.value, der.SEQUENCE, "SGX extension"))
    prefix = SGX_EXTENSION_OID + "."
    tcb = values.get(prefix + "2")
    pce_id, fmspc = values.get(prefix + "3"), values.get(prefix + "4")
    if tcb is None or pce_id is None or fmspc is None:
        raise AttestationError("PCK certificate: SGX extension lacks TCB, PCE-ID or FMSPC")
    components = _oid_values(der.only(tcb, der.SEQUENCE, "SGX extension TCB"))
    try:
        svns = tuple(
            der.integer(components[f"{prefix}2.{n}"], f"SGX TCB component {n}")
            for n in range(1, 18)
        )
        cpusvn = der.only(components[f"{prefix}2.18"], der.OCTET_STRING, "CPUSVN")
    except KeyError as e:
        raise AttestationError(f"PCK certificate: SGX extension lacks {e.args[0]}") from None
    return PckFacts(
        svns[:16],
        svns[16],
        cpusvn,
        der.only(pce_id, der.OCTET_STRING, "PCE-ID").hex().upper(),
        der.only(fmspc, der.OCTET_STRING, "FMSPC").hex().upper(),
    )


def _oid_values(data: bytes) -> dict[str, bytes]:
    """OID text -> the whole value element, of a SEQUENCE OF SEQUENCE {OID, value}."""
    values = {}
    for entry in der.elements(data, "SGX extension"):
        parts = list(der.elements(entry.value, "SGX extension entry"))
        if entry.tag != der.SEQUENCE or len(parts) != 2 or parts[0].tag != der.OID:
            raise AttestationError("PCK certificate: malformed SGX extension entry")
        values[der.oid_text(parts[0].value)] = entry.value[parts[0].end :]
    return values


class Status(NamedTuple):
    status: str
    advisory_ids: tuple[str, ...]

    def text(self) -> str:
        ids = f" ({', '.join(self.advisory_ids)})" if self.advisory_ids else ""
        return self.status + ids


def converge(platform: Status, other: Status) -> Status:
    """`platform` and a QE or TDX module status, as Intel's QVL converges them."""
    rank = TCB_STATUSES.index
    status = max(platform.status, other.status, key=rank)
    if other.status == "OutOfDate" and platform.status.startswith("Configuration"):
        status = "OutOfDateConfigurationNeeded"
    ids = platform.advisory_ids + tuple(
        i for i in other.advisory_ids if i not in platform.advisory_ids
    )
    return Status(status, ids)


def _isv_level(levels: Sequence[IsvTcbLevel], isvsvn: int) -> Status | None:
    for level in levels:
        if isvsvn >= level.isvsvn:
            return Status(level.tcb_status, level.advisory_ids)
    return None


def platform_status(
    info: TcbInfo, facts: PckFacts, quote: TdxQuote
) -> tuple[Status | None, Status | None, str | None]:
    """(platform status, TDX module status, why the module does not match) of the first
    tcbLevel the PCK and the quote meet."""
    svn = quote.body.tee_tcb_svn
    level_status = None
    for level in info.tcb_levels:
        if (
            facts.pcesvn >= level.pcesvn
            and all(a >= b for a, b in zip(facts.sgx_svns, level.sgx_svns, strict=True))
            and all(a >= b for a, b in zip(svn, level.tdx_svns, strict=True))
        ):
            level_status = Status(level.tcb_status, level.advisory_ids)
            break
    module = info.tdx_module
    if svn[1] != 0 and info.tdx_module_identities:
        wanted = f"TDX_{svn[1]:02X}"
        module = next((m for m in info.tdx_module_identities if m.id.upper() == wanted), None)
        if module is None:
            return level_status, None, f"no tdxModuleIdentities entry {wanted}"
    if module is None:
        return level_status, None, "no tdxModule in the TCB info"
    body = quote.body
    seam = body.seam_attributes.to_bytes(8, "little")
    masked = bytes(a & m for a, m in zip(seam, module.attributes_mask, strict=True))
    want = bytes(a & m for a, m in zip(module.attributes, module.attributes_mask, strict=True))
    if body.mrsignerseam != module.mrsigner or masked != want:
        return (
            level_status,
            None,
            f"MRSIGNERSEAM/SEAMATTRIBUTES differ from {module.id or 'tdxModule'}",
        )
    if not module.tcb_levels:
        return level_status, Status("UpToDate", ()), None
    module_status = _isv_level(module.tcb_levels, svn[0])
    why = None if module_status else f"TEE_TCB_SVN[0] {svn[0]} below every {module.id} level"
    return level_status, module_status, why


class CollateralCache:
    """Verdicts on collateral (signatures, issuer chains, parsed PCK extensions) by the
    exact bytes they depend on, so a long-lived auditor verifies each TCB info, QE identity
    and CRL once. Holds at most `size` verdicts, the least recently used dropped first."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._verdicts: OrderedDict[tuple[str, bytes], object] = OrderedDict()

    def get(self, kind: str, key: bytes, make: Callable[[], _T]) -> _T:
        """`make()`, remembered under (`kind`, `key`); `make` depends on `key` alone."""
        value = self._verdicts.get((kind, key), _MISSING)
        if value is _MISSING:
            value = make()
            self._verdicts[kind, key] = value
            if len(self._verdicts) > self.size:
                self._verdicts.popitem(last=False)
        else:
            self._verdicts.move_to_end((kind, key))
        return cast(_T, value)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _chain_problem(chain: Sequence[x509.Certificate], root: x509.Certificate) -> str | None:
    """Why `chain` (signer first) does not lead to `root`, or None when each certificate
    is signed by the next and the last by `root`."""
    for child, parent in zip(chain, [*chain[1:], root], strict=True):
        if _der(child) == _der(root):
            return None
        problem = issuer_problem(child, parent)
        if problem is not None:
            return f"{common_name(child)}: {problem}"
    return None


def _period(name: str, start: datetime, end: datetime, now: datetime) -> Check:
    period = f"{start.isoformat()} .. {end.isoformat()}"
    if now < start:
        return check(name, period, f"not yet issued at {now.isoformat()}", False)
    if now > end:
        return check(name, period, f"expired at {now.isoformat()}", False)
    return check(name, period, period, True)


def _signed_checks(
    name: str, signed: Signed, window: tuple[datetime, datetime], now: datetime, *,
    root: x509.Certificate, cache: CollateralCache,
) -> list[Check]:  # fmt: skip
    ders = b"".join(_der(c) for c in signed.issuer_chain) + _der(root)
    chain = cache.get("chain", ders, lambda: _chain_problem(signed.issuer_chain, root))
    signer = signed.issuer_chain[0]
    ok = cache.get(
        "signature",
        signed.signature + _der(signer) + signed.body,
        lambda: ecdsa_p256_ok(signer.public_key(), signed.signature, signed.body),
    )
    expected = f"ECDSA P-256 by {common_name(signer)}"
    chain_expected = f"{common_name(signer)} issued under {common_name(root)}"
    return [
        check(f"{name}.signature", expected, expected if ok else "does not verify", ok),
        check(f"{name}.chain", chain_expected, chain or chain_expected, chain is None),
        _period(f"{name}.validity", *window, now),
        _period(f"{name}.signer_validity", signer.not_valid_before_utc,
                signer.not_valid_after_utc, now),
    ]  # fmt: skip


def _crl_checks(
    name: str, crl: Crl | None, issuer: x509.Certificate | None, now: datetime, *,
    cache: CollateralCache, missing: str,
) -> list[Check]:  # fmt: skip
    if crl is None or issuer is None:
        return [
            check(f"{name}.{what}", "a CRL", missing, False) for what in ("signature", "validity")
        ]
    expected = f"signed by {common_name(issuer)}"

    def verdict() -> bool:
        key = issuer.public_key()
        # Intel's CAs are P-256; another key type cannot have signed Intel's CRL.
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        return crl.crl.issuer == issuer.subject and crl.crl.is_signature_valid(key)

    ok = cache.get("crl", crl.der + _der(issuer), verdict)
    end = crl.crl.next_update_utc
    return [
        check(f"{name}.signature", expected, expected if ok else "does not verify", ok),
        _period(f"{name}.validity", crl.crl.last_update_utc, end or now, now),
    ]


def _revoked(certs: Sequence[tuple[x509.Certificate, Crl | None]]) -> Check:
    listed = [
        f"{common_name(cert)} serial {cert.serial_number:x}"
        for cert, crl in certs
        if crl is not None
        and crl.crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    ]
    unchecked = [common_name(cert) for cert, crl in certs if crl is None]
    actual = "; ".join([*(f"{t} revoked" for t in listed), *(f"{t}: no CRL" for t in unchecked)])
    return check("pck.revoked", "not listed", actual or "not listed", not (listed or unchecked))


def _qe_check(qe: QeIdentity, quote: TdxQuote) -> tuple[Check, Status | None]:
    report = quote.qe
    masked = bytes(a & m for a, m in zip(report.attributes, qe.attributes_mask, strict=True))
    want = bytes(a & m for a, m in zip(qe.attributes, qe.attributes_mask, strict=True))
    misc_mask = qe.miscselect_mask
    misc_want = qe.miscselect & misc_mask
    problems = [
        what for what, ok in (
            ("MRSIGNER", report.mrsigner == qe.mrsigner),
            ("ISVPRODID", report.isvprodid == qe.isvprodid),
            ("MISCSELECT", report.miscselect & misc_mask == misc_want),
            ("ATTRIBUTES", masked == want),
        ) if not ok
    ]  # fmt: skip
    status = _isv_level(qe.tcb_levels, report.isvsvn)
    expected = "TD_QE identity and a TCB level"
    if problems:
        return check("qe.identity", expected, f"{', '.join(problems)} differ", False), None
    if status is None:
        return check("qe.identity", expected, f"ISVSVN {report.isvsvn}: no TCB level", False), None
    return check("qe.identity", expected, f"ISVSVN {report.isvsvn}: {status.text()}", True), status


def tdx_collateral_checks(
    quote: TdxQuote,
    pck_chain: Sequence[x509.Certificate],
    collateral: TdxCollateral,
    now: datetime,
    *,
    accept: frozenset[str] = frozenset({"UpToDate"}),
    advisories_accepted: frozenset[str] = frozenset(),
    root: x509.Certificate | None = None,
    cache: CollateralCache | None = None,
) -> list[Check]:
    """Every collateral check of `quote`, whose PCK chain is `pck_chain` (leaf, PCK CA,
    [root]), at `now`. `tcb.status` passes when the status is in `accept`, or when it is
    not Revoked and every one of its advisory IDs is in `advisories_accepted`. `root`: the
    trusted root (default: the pinned Intel SGX Root CA); `cache`: verdicts kept across
    calls (default: none)."""
    now = utc(now)
    root = intel_root() if root is None else root
    cache = CollateralCache() if cache is None else cache
    if len(pck_chain) < 2:
        raise AttestationError("PCK chain: expected the leaf and its CA")
    leaf, pck_ca = pck_chain[0], pck_chain[1]
    facts = cache.get("pck", _der(leaf), lambda: pck_facts(leaf))
    info = collateral.tcb_info_for(facts.fmspc)
    qe = collateral.qe_identity
    pck_crl = next((c for c in collateral.pck_crls if c.crl.issuer == pck_ca.subject), None)
    ca_problem = cache.get("chain", _der(pck_ca) + _der(root),
                           lambda: _chain_problem([pck_ca], root))  # fmt: skip
    checks = [
        *_signed_checks("collateral.tcb_info", info.signed, (info.issue_date,
                        info.next_update), now, root=root, cache=cache),
        check("collateral.tcb_info.fmspc", facts.fmspc, info.fmspc),
        *_signed_checks("collateral.qe_identity", qe.signed, (qe.issue_date,
                        qe.next_update), now, root=root, cache=cache),
        *_crl_checks("collateral.pck_crl", pck_crl, None if ca_problem else pck_ca, now,
                     cache=cache, missing=ca_problem or f"no CRL from {common_name(pck_ca)}"),
        *_crl_checks("collateral.root_crl", collateral.root_crl, root, now,
                     cache=cache, missing=""),
        _revoked([(leaf, pck_crl), (pck_ca, collateral.root_crl)]),
    ]  # fmt: skip
    qe_check, qe_status = _qe_check(qe, quote)
    level, module, why = platform_status(info, facts, quote)
    checks.append(check("tcb.tdx_module", "module identity and a TCB level",
                        why or (module.text() if module else ""), why is None))  # fmt: skip
    status: Status | None = None
    if level is not None and module is not None and qe_status is not None:
        status = converge(converge(level, module), qe_status)
    wanted = " or ".join(sorted(accept, key=TCB_STATUSES.index))
    if advisories_accepted:
        wanted += f", or only advisories {', '.join(sorted(advisories_accepted))}"
    if status is None:
        actual = "no TCB level matches" if level is None else "not evaluated (QE or module)"
        checks.append(check("tcb.status", wanted, actual, False))
    else:
        ok = status.status in accept or (
            status.status != "Revoked"
            and bool(status.advisory_ids)
            and set(status.advisory_ids) <= advisories_accepted
        )
        checks.append(check("tcb.status", wanted, status.text(), ok))
    checks.append(qe_check)
    return checks
