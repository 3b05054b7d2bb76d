"""An auditor for many reports: one process, the same few certificate chains.

A fleet's reports come from a few platforms, so the certificate work repeats: the same VEK
or PCK chain, signed by the same ASK or PCK CA, under the same root. `Auditor` remembers
that work by the exact bytes it was done on (`CertMemo`) and does everything a report
brings of its own (its signature, its claims, the time checks) on every call.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cvmlaunch.attest.amd import AmdCerts
from cvmlaunch.attest.certs import CertMemo, now_utc, utc
from cvmlaunch.attest.evidence import TDX, read_evidence
from cvmlaunch.attest.expect import Expectations
from cvmlaunch.attest.result import AuditResult
from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple

if TYPE_CHECKING:
    from cvmlaunch.attest.amd_crl import AmdCrl
    from cvmlaunch.attest.collateral import TdxCollateral
    from cvmlaunch.attest.tcb import CollateralCache
    from cvmlaunch.attest.tdx import TdxQuote


class Collateral(NamedTuple):
    """What an audit judges the platform's currency by (offline; fetched by the user from
    Intel PCS/PCCS or AMD KDS): a TDX quote's TCB info, QE identity and CRLs, an SEV-SNP
    report's ARK-signed CRL; and which TCB statuses and advisories pass."""

    tdx: TdxCollateral | None = None
    amd_crl: AmdCrl | None = None
    accept_tcb: frozenset[str] = frozenset({"UpToDate"})
    accept_advisories: frozenset[str] = frozenset()


class Auditor:
    """Audits evidence as `cvmlaunch.attest.audit` does, keeping across calls what depends
    only on certificate bytes: signature verdicts between certificates, decoded VEK
    extensions and keys, loaded PCK chains, QE report verdicts (see `CertMemo`).

    What it keeps cannot make a verdict differ from a fresh audit's: a certificate or chain
    that differs in any byte is another entry, verified afresh, and certificate validity is
    compared with each call's `now`. `capacity` bounds each table. Safe to share between
    threads (entries are added under a lock; a race costs a repeated verification).
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.memo = CertMemo(capacity)
        self._collateral_cache: CollateralCache | None = None

    def _with_tdx_collateral(
        self, result: AuditResult, quote: TdxQuote, collateral: Collateral, now: datetime
    ) -> AuditResult:
        """`result` with the collateral's checks (signatures and chains to Intel's root,
        validity, FMSPC, revocation of the PCK chain, the TCB level and QE identity) and the
        status they give; each collateral is verified once per Auditor."""
        from cvmlaunch.attest.certs import load_certificates
        from cvmlaunch.attest.tcb import CollateralCache, tdx_collateral_checks

        if self._collateral_cache is None:
            self._collateral_cache = CollateralCache()
        if collateral.tdx is None:
            return result
        chain = load_certificates(quote.pck_chain, "the quote's PCK chain")
        checks = tdx_collateral_checks(
            quote, chain, collateral.tdx, now, accept=collateral.accept_tcb,
            advisories_accepted=collateral.accept_advisories, cache=self._collateral_cache,
        )  # fmt: skip
        status = next((c.actual for c in checks if c.name == "tcb.status"), "unknown")
        verified = all(c.ok for c in checks if c.name.startswith("collateral."))
        if not verified:
            status += " (collateral not usable: see its checks)"
        return result._replace(checks=(*result.checks, *checks), collateral=status)

    def audit(
        self,
        evidence: bytes,
        *,
        certs: AmdCerts | None = None,
        expect: Expectations | None = None,
        now: datetime | None = None,
        event_log: bytes | None = None,
        collateral: Collateral | None = None,
    ) -> AuditResult:
        """Parse, verify and validate `evidence` at `now` (default: the current time). SNP
        reports need the VCEK or VLEK in `certs`; TDX quotes carry their PCK chain. A TDX
        quote's `event_log` (CCEL, with or without its ACPI table, or dstack's JSON list)
        must replay to the quote's RTMRs: one check per RTMR. With `collateral`, the
        platform's TCB status and revocation are checked too (else the result says they
        were not evaluated)."""
        kind, data = read_evidence(evidence)
        expect = expect if expect is not None else Expectations()
        moment = utc(now) if now is not None else now_utc()
        if kind == TDX:
            from cvmlaunch.attest.tdx import audit_tdx, parse_tdx_quote

            log = None
            if event_log is not None:
                from cvmlaunch.attest.eventlog import read_event_log

                log = read_event_log(event_log)
            quote = parse_tdx_quote(data)
            result = audit_tdx(quote, expect, moment, log, self.memo)
            if collateral is not None and collateral.tdx is not None:
                result = self._with_tdx_collateral(result, quote, collateral, moment)
            return result
        if event_log is not None:
            raise AttestationError(
                "an event log is replayed against a TDX quote's RTMRs; this is an SEV-SNP report"
            )
        from cvmlaunch.attest.snp import audit_snp, parse_snp_report

        certs = certs or AmdCerts()
        result = audit_snp(parse_snp_report(data), certs, expect, moment, self.memo)
        if collateral is not None and collateral.amd_crl is not None:
            result = _with_amd_crl(result, collateral.amd_crl, certs, moment)
        return result


def _with_amd_crl(result: AuditResult, crl: AmdCrl, certs: AmdCerts, now: datetime) -> AuditResult:
    """`result` with the CRL's checks (its signature by the ARK, validity, the VEK and ASK
    not listed) and the revocation status they give."""
    from cvmlaunch.attest.amd_crl import amd_crl_checks
    from cvmlaunch.attest.result import check

    product = result.report.get("product")
    if not isinstance(product, str):
        unknown = check("collateral.amd_crl.product", "a product line", "unknown", ok=False)
        return result._replace(checks=(*result.checks, unknown), collateral="revocation unknown")
    checks = amd_crl_checks(crl, certs, product, now)
    revoked = [c for c in checks if c.name in ("vek.revoked", "ask.revoked") and not c.ok]
    status = "; ".join(c.actual for c in revoked)
    verified = all(c.ok for c in checks if c.name.startswith("collateral."))
    status = status or ("not revoked" if verified else "revocation unknown (CRL not usable)")
    return result._replace(checks=(*result.checks, *checks), collateral=status)
