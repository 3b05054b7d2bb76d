"""An auditor for many reports: one process, the same few certificate chains.

A fleet's reports come from a few platforms, so the certificate work repeats: the same VEK
or PCK chain, signed by the same ASK or PCK CA, under the same root. `Auditor` remembers
that work by the exact bytes it was done on (`CertMemo`) and does everything a report
brings of its own (its signature, its claims, the time checks) on every call.
"""

from __future__ import annotations

from datetime import datetime

from cvmlaunch.attest.amd import AmdCerts
from cvmlaunch.attest.certs import CertMemo, now_utc, utc
from cvmlaunch.attest.evidence import TDX, read_evidence
from cvmlaunch.attest.expect import Expectations
from cvmlaunch.attest.result import AuditResult
from cvmlaunch.errors import AttestationError


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

    def audit(
        self,
        evidence: bytes,
        *,
        certs: AmdCerts | None = None,
        expect: Expectations | None = None,
        now: datetime | None = None,
        event_log: bytes | None = None,
    ) -> AuditResult:
        """Parse, verify and validate `evidence` at `now` (default: the current time). SNP
        reports need the VCEK or VLEK in `certs`; TDX quotes carry their PCK chain. A TDX
        quote's `event_log` (CCEL, with or without its ACPI table, or dstack's JSON list)
        must replay to the quote's RTMRs: one check per RTMR."""
        kind, data = read_evidence(evidence)
        expect = expect if expect is not None else Expectations()
        moment = utc(now) if now is not None else now_utc()
        if kind == TDX:
            from cvmlaunch.attest.tdx import audit_tdx, parse_tdx_quote

            log = None
            if event_log is not None:
                from cvmlaunch.attest.eventlog import read_event_log

                log = read_event_log(event_log)
            return audit_tdx(parse_tdx_quote(data), expect, moment, log, self.memo)
        if event_log is not None:
            raise AttestationError(
                "an event log is replayed against a TDX quote's RTMRs; this is an SEV-SNP report"
            )
        from cvmlaunch.attest.snp import audit_snp, parse_snp_report

        return audit_snp(parse_snp_report(data), certs or AmdCerts(), expect, moment, self.memo)
