"""Benchmark parsing (with event-data decoding) and replaying the real CC event logs.

Logs from tests/vectors/eventlog: the largest by bytes used (trustee's GKE log, 21.9 KiB of
events in a 256 KiB area), the largest file (trustee's early-TDVF CCEL_data, 1 MiB area of
which 9.6 KiB is events, the rest zero fill that must be scanned), the one with the most
events (Alibaba, 87), and a synthetic 1 MiB log of the smallest valid records (15,887
events) for the per-event cost. Each time is the median of N runs of parse_ccel + replay.

Run: .venv/bin/python benchmarks/eventlog_replay.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvmlaunch.attest import eventlog as el  # noqa: E402

VECTORS = ROOT / "tests" / "vectors" / "eventlog"


def _logs() -> dict[str, bytes]:
    head = (VECTORS / "trustee/CCEL_data.head16k").read_bytes()
    small = (VECTORS / "go-eventlog/CCEL_unpadded.data.bin").read_bytes()
    record = struct.pack("<IIIH", 1, 4, 1, 0x000C) + bytes(48) + b"\0\0\0\0"
    return {
        "trustee/CCEL_data_grub_gke (256 KiB, 35 events)": (
            VECTORS / "trustee/CCEL_data_grub_gke"
        ).read_bytes(),
        "trustee/CCEL_data (1 MiB, 5 events)": head + bytes((1 << 20) - len(head)),
        "trustee/CCEL_AAEL_alibabacloud (11 KiB, 87 events)": (
            VECTORS / "trustee/CCEL_AAEL_alibabacloud"
        ).read_bytes(),
        "synthetic 1 MiB of minimal records": small[:65] + record * ((1 << 20) // len(record)),
    }


def _parse_and_replay(data: bytes) -> tuple[bytes, ...]:
    return el.replay(el.parse_ccel(data, allow_padding=True))


def _median_ms(run: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=51)
    args = parser.parse_args()
    for name, data in _logs().items():
        log = el.parse_ccel(data, allow_padding=True)
        runs = args.runs if len(log.events) < 1000 else max(5, args.runs // 10)
        parse = _median_ms(partial(el.parse_ccel, data, allow_padding=True), runs)
        replay = _median_ms(partial(el.replay, log), runs)
        both = _median_ms(partial(_parse_and_replay, data), runs)
        per_event = both * 1000 / max(1, len(log.events))
        print(
            f"{name}: parse {parse:.3f} ms, replay {replay:.3f} ms, parse+replay {both:.3f} ms "
            f"({per_event:.1f} us/event, median of {runs})"
        )


if __name__ == "__main__":
    main()
