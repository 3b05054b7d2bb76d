"""Audits per second on one core: parse + verify + validate, for SEV-SNP and TDX.

Each audit checks everything `cvmlaunch audit` checks (signatures, the chain to the pinned
root, the VEK/PCK bindings, every expectation). Two figures per kind: "warm", the steady
state of a verifier that sees many reports from one platform (certificate-chain verdicts
are memoised by certificate bytes; the report signature is verified every time), and
"cold", with that memo cleared before every audit.

Side by side, when installed (`make bench` installs both):
* omne-attest 0.1.0 (PyPI, Python + cryptography): SNP parse, report signature, chain to a
  pinned ARK, VCEK binding, policy — on the Milan report, the one layout it supports;
* dcap-qvl 0.7.0 (PyPI, Rust core): TDX quote verification, which also evaluates the TCB
  info, QE identity and CRLs from the collateral, so it does more work than our offline
  checks.

Run: .venv-bench/bin/python benchmarks/audit_throughput.py
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvmlaunch.attest import audit  # noqa: E402
from cvmlaunch.attest import certs as certs_module  # noqa: E402
from cvmlaunch.attest.amd import AmdCerts, gather  # noqa: E402
from cvmlaunch.attest.expect import Expectations  # noqa: E402

VECTORS = ROOT / "tests" / "vectors" / "attestation"
SNP_NOW = datetime(2025, 9, 1, tzinfo=UTC)
TDX_NOW = datetime(2025, 6, 19, 14, tzinfo=UTC)  # inside the dcap-qvl collateral's validity


def rate(fn: Callable[[], object], seconds: float = 2.0) -> float:
    """Calls per second, best of three runs of about `seconds` / 3 each."""
    fn()
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            fn()
            n += 1
        best = max(best, n / elapsed)
    return best


def cold(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        certs_module._issuer_problem.cache_clear()
        return fn()

    return run


def snp_cases() -> dict[str, Callable[[], object]]:
    snp = VECTORS / "snp"
    out: dict[str, Callable[[], object]] = {}
    for label, report, vcek in (
        ("Genoa v5", "oak_genoa_report_v5.bin", "oak_genoa_vcek.der"),
        ("Milan v2", "virtee_milan_report.hex", "virtee_milan_vcek.der"),
    ):
        data = (snp / report).read_bytes()
        certs = gather(vcek=snp / vcek)
        first = audit(data, certs=certs, now=SNP_NOW)
        raw = bytes.fromhex(first.report["measurement"])
        expect = Expectations(measurement=raw, policy=0x30000, allow_debug=False)

        def one(
            data: bytes = data, certs: AmdCerts = certs, expect: Expectations = expect
        ) -> object:
            result = audit(data, certs=certs, expect=expect, now=SNP_NOW)
            assert result.passed
            return result

        out[label] = one
    return out


def tdx_case() -> Callable[[], object]:
    data = (VECTORS / "tdx" / "dcapqvl_tdx_quote_v4.dat").read_bytes()
    mrtd = bytes.fromhex(audit(data, now=TDX_NOW).report["body"]["mrtd"])
    expect = Expectations(measurement=mrtd)

    def one() -> object:
        result = audit(data, expect=expect, now=TDX_NOW)
        assert result.passed
        return result

    return one


def omne_snp() -> Callable[[], object] | None:
    try:
        from omne_attest import snp as omne  # type: ignore[import-not-found]
    except ImportError:
        return None
    snp = VECTORS / "snp"
    report = bytes.fromhex((snp / "virtee_milan_report.hex").read_text())
    vcek = (snp / "virtee_milan_vcek.der").read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = (ROOT / "cvmlaunch/data/roots/amd_ask_ark_milan.pem").read_bytes()
    ask, ark = (c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem))
    pin = hashlib.sha256(ark).digest()
    policy = omne.Policy(measurement=report[0x90:0xC0])
    return lambda: omne.verify(report, vcek, ask, ark, pin, policy)


def dcap_qvl_tdx() -> Callable[[], object] | None:
    try:
        import dcap_qvl  # type: ignore[import-not-found]
    except ImportError:
        return None
    tdx = VECTORS / "tdx"
    quote = (tdx / "dcapqvl_tdx_quote_v4.dat").read_bytes()
    collateral = dcap_qvl.QuoteCollateralV3.from_json(
        (tdx / "dcapqvl_tdx_quote_v4_collateral.json").read_text()
    )
    now = int(TDX_NOW.timestamp())
    return lambda: dcap_qvl.verify(quote, collateral, now)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core
    rows: list[tuple[str, float, float | None]] = []
    for label, fn in snp_cases().items():
        rows.append((f"SEV-SNP {label}", rate(fn), rate(cold(fn))))
    tdx = tdx_case()
    rows.append(("TDX quote v4", rate(tdx), rate(cold(tdx))))
    print(f"{'audit':<24}{'warm/s':>10}{'cold/s':>10}")
    for label, warm, cold_rate in rows:
        print(f"{label:<24}{warm:>10.0f}{cold_rate:>10.0f}")
    peers = {"omne-attest SNP Milan v2": omne_snp(), "dcap-qvl TDX quote v4": dcap_qvl_tdx()}
    ours = {"omne-attest SNP Milan v2": rows[1], "dcap-qvl TDX quote v4": rows[2]}
    for label, peer in peers.items():
        if peer is None:
            print(f"{label}: not installed (pip install omne-attest==0.1.0 dcap-qvl==0.7.0)")
            continue
        theirs = rate(peer)
        _, warm, cold_rate = ours[label]
        assert cold_rate is not None
        print(
            f"{label:<24}{theirs:>10.0f}/s   ours/theirs: warm {warm / theirs:.2f}, "
            f"cold {cold_rate / theirs:.2f}"
        )
    print(json.dumps({label: round(warm) for label, warm, _ in rows}))


if __name__ == "__main__":
    main()
