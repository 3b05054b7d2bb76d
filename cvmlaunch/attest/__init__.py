"""Audit attestation evidence offline: is the running guest the one its profile describes?

    from cvmlaunch.attest import audit, Expectations
    from cvmlaunch.attest.amd import gather
    result = audit(report_bytes, certs=gather(vcek=Path("vcek.der")),
                   expect=Expectations(measurement=expected_digest))
    result.verdict, [c for c in result.checks if not c.ok]

The evidence kind (SEV-SNP report or TDX quote; raw, hex or base64) is detected from its
bytes.
Unusable evidence raises AttestationError; evidence that parses is always judged by checks.

To audit many reports, give them to one `Auditor`: it verifies each certificate chain once
(remembered by its exact bytes) and each report's own signature and claims every time.
"""

from __future__ import annotations

from datetime import datetime

from cvmlaunch.attest.amd import AmdCerts
from cvmlaunch.attest.auditor import Auditor, Collateral
from cvmlaunch.attest.evidence import SEV_SNP, TDX, Evidence, read_evidence
from cvmlaunch.attest.expect import Expectations
from cvmlaunch.attest.result import AuditResult, Check

# `audit` shares one Auditor across calls. What it keeps is a pure function of exact
# certificate bytes (a different certificate is a different entry, and validity is checked
# against each call's `now`), so sharing it changes no verdict, only the time a second
# report from the same platform takes; its tables are bounded.
_SHARED = Auditor()


def audit(
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
    quote's `event_log` (CCEL, with or without its ACPI table, or dstack's JSON list) must
    replay to the quote's RTMRs: one check per RTMR. With `collateral` the platform's TCB
    status and revocation are checked (else the result says they were not evaluated)."""
    return _SHARED.audit(evidence, certs=certs, expect=expect, now=now, event_log=event_log,
                         collateral=collateral)  # fmt: skip


__all__ = [
    "SEV_SNP",
    "TDX",
    "AmdCerts",
    "AuditResult",
    "Auditor",
    "Check",
    "Collateral",
    "Evidence",
    "Expectations",
    "audit",
    "read_evidence",
]
