"""Audit attestation evidence from Python: a real SEV-SNP report from an AMD Genoa host, and
the same report with one byte of its MEASUREMENT changed.

Run: python examples/audit_api.py
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cvmlaunch.attest import Expectations, audit
from cvmlaunch.attest.amd import gather

EVIDENCE = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "attestation" / "snp"
NOW = datetime(2025, 9, 1, tzinfo=UTC)  # inside the VCEK's validity


def main() -> None:
    report = (EVIDENCE / "oak_genoa_report_v5.bin").read_bytes()
    certs = gather(vcek=EVIDENCE / "oak_genoa_vcek.der")
    measurement = report[0x90:0xC0]  # what `cvmlaunch measure` would compute for this guest
    expect = Expectations(measurement=measurement, policy=0x30000)

    result = audit(report, certs=certs, expect=expect, now=NOW)
    print(f"genuine: {result.verdict}, {len(result.checks)} checks")

    forged = bytearray(report)
    forged[0x90] ^= 1
    result = audit(bytes(forged), certs=certs, expect=expect, now=NOW)
    print(f"forged: {result.verdict}, failed: {', '.join(c.name for c in result.failures)}")


if __name__ == "__main__":
    main()
