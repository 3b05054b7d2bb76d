"""Audits per second on one core with TDX verification collateral, side by side with
dcap-qvl 0.7.0 (which always evaluates collateral).

Each of ours is a full audit (`Auditor.audit`: quote signature, PCK chain to the pinned
root, QE report) plus every collateral check (`tdx_collateral_checks`: TCB info and QE
identity signatures and chains, CRLs, validity, FMSPC, TCB level, TDX module, QE identity,
PCK revocation):

* warm: one long-lived `Auditor` and `CollateralCache`, the collateral loaded once, quote
  after quote from one platform: each collateral signature is verified once;
* cold: a fresh `Auditor` and cache, and the collateral JSON read and parsed, every audit.

dcap-qvl keeps nothing between calls (its collateral object is parsed once, outside the
loop, as a caller would): its warm is its cold. Measurements take turns (0.1 s each) and
keep each one's best turn. Run: .venv-bench/bin/python benchmarks/collateral_audit.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from audit_throughput import rates  # noqa: E402

from cvmlaunch.attest import Auditor  # noqa: E402
from cvmlaunch.attest.collateral import collateral_from_json  # noqa: E402
from cvmlaunch.attest.tcb import CollateralCache, tdx_collateral_checks  # noqa: E402
from cvmlaunch.attest.tdx import _load_pck, parse_tdx_quote  # noqa: E402

SAMPLES = ROOT / "tests" / "vectors" / "attestation" / "collateral" / "dcap-qvl"
NOW = datetime(2025, 6, 25, tzinfo=UTC)  # inside the sample collateral's validity


def ours(raw: bytes, collateral_json: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    """(warm, cold) audits of the quote `raw` with its collateral."""

    def one(auditor: Auditor, cache: CollateralCache, collateral_bytes: bytes | None) -> object:
        result = auditor.audit(raw, now=NOW)
        quote = parse_tdx_quote(raw)
        collateral = shared if collateral_bytes is None else collateral_from_json(
            collateral_bytes, "collateral")  # fmt: skip
        pck = cache.get("pck-chain", quote.pck_chain, lambda: _load_pck(quote.pck_chain).certs)
        checks = tdx_collateral_checks(quote, pck, collateral, NOW, cache=cache)
        if not result.passed or not all(c.ok for c in checks):
            raise SystemExit(f"audit failed: {result.failures} {checks}")
        return checks

    shared = collateral_from_json(collateral_json, "collateral")
    auditor, cache = Auditor(), CollateralCache()
    return (
        lambda: one(auditor, cache, None),
        lambda: one(Auditor(), CollateralCache(), collateral_json),
    )


def dcap_qvl_verify(raw: bytes, collateral_json: bytes) -> Callable[[], object] | None:
    try:
        import dcap_qvl
    except ImportError:
        return None
    collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json.decode())
    now = int(NOW.timestamp())
    return lambda: dcap_qvl.verify(raw, collateral, now)


def measure(seconds: float) -> dict[str, float]:
    raw = (SAMPLES / "tdx_quote").read_bytes()
    collateral_json = (SAMPLES / "tdx_quote_collateral.json").read_bytes()
    warm, cold = ours(raw, collateral_json)
    fns: dict[str, Callable[[], object]] = {"ours warm": warm, "ours cold": cold}
    peer = dcap_qvl_verify(raw, collateral_json)
    if peer is not None:
        fns["dcap-qvl"] = peer
    return rates(fns, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0, help="per figure")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    rows = measure(args.seconds)
    for label, value in rows.items():
        print(f"{label:<12}{value:>9.0f} audits/s (TDX v4 quote with collateral, one core)")
    if "dcap-qvl" in rows:
        for kind in ("warm", "cold"):
            print(f"ours {kind} / dcap-qvl: {rows[f'ours {kind}'] / rows['dcap-qvl']:.2f}x")
    else:
        print("dcap-qvl: not installed (pip install dcap-qvl==0.7.0)")
    print(json.dumps({label: round(value) for label, value in rows.items()}))


if __name__ == "__main__":
    main()
