"""Benchmark the SEV-SNP launch digest of IGVM files against igvm-tooling's measurer.

The inputs are igvm-tooling's five test files (tests/vectors/igvm). igvm-tooling computes the
digest only while it builds a file (`igvm.igvmfile.IGVMHeaders._update_digest`, one ctypes
PAGE_INFO and SHA-384 per page) and has no reader for a finished file, so its side is that
digest chain replayed over the pages igvmgen fed it (taken from our page operations, split
into 4 KiB pages, prepared before timing). Our side is `snp_launch_digest` of the parsed file
(page operations included); the parse is shown beside it. Both digests must equal the one
igvm-tooling recorded in expected.json. Medians, and the ratio theirs / ours.

Run: .venv/bin/python benchmarks/igvm_measure.py [--igvm-tooling SRC]
where SRC is igvm-tooling's src/ directory with its dependencies importable, e.g.
  git --git-dir=$(mirror of microsoft/igvm-tooling) archive HEAD | tar x -C /tmp/igvm-tooling
  pip install --target /tmp/igvm-deps cached_property ecdsa 'setuptools<80'
  PYTHONPATH=/tmp/igvm-deps .venv/bin/python benchmarks/igvm_measure.py \
      --igvm-tooling /tmp/igvm-tooling/src
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvmlaunch.abi.snp import PAGE_SIZE  # noqa: E402
from cvmlaunch.firmware.igvm import IgvmFile, parse_igvm  # noqa: E402
from cvmlaunch.measure.igvm import snp_launch_digest  # noqa: E402
from cvmlaunch.plan.igvm import snp_page_ops  # noqa: E402

VECTORS = ROOT / "tests" / "vectors" / "igvm"

Page = tuple[int, bytes, int]  # gpa, 4 KiB page, SNP page type


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def pages(igvm: IgvmFile) -> list[Page]:
    """Every 4 KiB page the launch measures, as igvmgen hands them to its digest chain."""
    out = []
    for op in snp_page_ops(igvm):
        data = op.data or bytes(op.size)
        for offset in range(0, op.size, PAGE_SIZE):
            out.append((op.gpa + offset, data[offset : offset + PAGE_SIZE], int(op.page_type)))
    return out


def load_igvm_tooling(src: Path | None) -> tuple[Any, str]:
    """igvm-tooling's IGVMHeaders class, or None and why it cannot be run."""
    if src is None:
        return None, "no --igvm-tooling SRC given"
    sys.path.insert(0, str(src))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its package __init__ imports pkg_resources
            module = importlib.import_module("igvm.igvmfile")
    except ImportError as e:
        return None, f"cannot import igvm-tooling from {src}: {e}"
    return module.IGVMHeaders, ""


def theirs(headers_class: Any, file_pages: list[Page]) -> bytes:
    """igvm-tooling's digest chain over `file_pages` (VTL and policy do not enter it)."""
    chain = headers_class(2, 0)
    for gpa, page, page_type in file_pages:
        chain._update_digest(gpa, page, page_type)
    return bytes(chain.curr_digest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--igvm-tooling", type=Path, help="igvm-tooling's src/ directory")
    args = parser.parse_args()
    headers_class, reason = load_igvm_tooling(args.igvm_tooling)
    if headers_class is None:
        print(f"igvm-tooling skipped: {reason}")
    expected = json.loads((VECTORS / "expected.json").read_text())
    for entry in expected:
        data = (VECTORS / entry["file"]).read_bytes()
        want = bytes.fromhex(entry["igvm_tooling_launch_digest"])
        igvm = parse_igvm(data)
        ours_ok = snp_launch_digest(igvm) == want
        parse = median_ms(lambda: parse_igvm(data), args.runs)  # noqa: B023
        ours = median_ms(lambda: snp_launch_digest(igvm), args.runs)  # noqa: B023
        line = (
            f"{entry['file']:<24} {len(data) >> 10:4} KiB  parse {parse:7.2f} ms  "
            f"digest {ours:7.2f} ms  agree={ours_ok}"
        )
        if headers_class is not None:
            file_pages = pages(igvm)
            their_ok = theirs(headers_class, file_pages) == want
            their_ms = median_ms(lambda: theirs(headers_class, file_pages), args.runs)  # noqa: B023
            line += (
                f"  | igvm-tooling {their_ms:8.2f} ms  agree={their_ok}"
                f"  ratio {their_ms / ours:5.2f} "
                f"(to parse+digest {their_ms / (parse + ours):5.2f})"
            )
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
