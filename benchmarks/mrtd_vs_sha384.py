"""Benchmark the MRTD engine against hashing the same firmware bytes with SHA-384 once.

The image is a 4 MiB TDVF firmware with the section layout of Debian trixie's OVMF.fd (a
3.5 MiB measured BFV, a 528 KiB CFV, TD_HOB and TEMP_MEM), built deterministically. MRTD
hashes every BFV chunk behind a 128-byte MR.EXTEND record, so the engine hashes about 1.3x
the image's bytes: 1.3 is the floor of the ratio (the engine builds that stream in one thread
while a second hashes it, so the floor is within reach on two free cores). Also shown: a
4 MiB image measured in full (floor 1.5), the whole pipeline (plan, which also takes the
image's SHA-256 for reports and pins, then measure), and optionally td-shim's
td_shim_tee_info_hash.py side by side.

Run: .venv/bin/python benchmarks/mrtd_vs_sha384.py [--tdshim PATH/td_shim_tee_info_hash.py]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvmlaunch.guest.spec import GuestSpec, PageOrder, TdConfig, Technology  # noqa: E402
from cvmlaunch.measure import measure  # noqa: E402
from cvmlaunch.measure.tdx import mrtd  # noqa: E402
from cvmlaunch.plan.tdx import build_td_plan  # noqa: E402
from tests.tdvf_images import build_image  # noqa: E402

MIB = 1 << 20


def _section(
    offset: int, raw: int, gpa: int, mem: int, *, kind: int, measured: bool = False
) -> dict[str, int]:
    return {
        "data_offset": offset, "raw_size": raw, "gpa": gpa, "mem_size": mem,
        "type": kind, "attributes": int(measured),
    }  # fmt: skip


TRIXIE_LAYOUT = [
    _section(0x84000, 0x37C000, 0xFFC84000, 0x37C000, kind=0, measured=True),
    _section(0, 0x84000, 0xFFC00000, 0x84000, kind=1),
    _section(0, 0, 0x811000, 0xF000, kind=3),
    _section(0, 0, 0x80B000, 0x2000, kind=3),
    _section(0, 0, 0x809000, 0x2000, kind=2),
    _section(0, 0, 0x800000, 0x6000, kind=3),
]
ALL_MEASURED = [
    _section(0, 0x400000, 0xFFC00000, 0x400000, kind=0, measured=True),
    *TRIXIE_LAYOUT[2:],
]


def image(sections: list[dict[str, int]]) -> bytes:
    params = {"size": 4 * MIB, "seed": 4, "locator": "ovmf", "descriptor_offset": 0x3FF640}
    return build_image({**params, "sections": sections})


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _pipeline(spec: GuestSpec, data: bytes) -> bytes:
    return measure(build_td_plan(spec, firmware=data)).digest


def paired(fn: Callable[[], object], base: Callable[[], object], runs: int) -> tuple[float, float]:
    """The median time of `fn` (ms) and the median of its ratios to `base`, each run timed
    right after a run of `base`: a noisy neighbour then slows both sides of a ratio alike."""
    fn(), base()
    times, ratios = [], []
    for _ in range(runs):
        start = time.perf_counter()
        base()
        middle = time.perf_counter()
        fn()
        end = time.perf_counter()
        times.append(end - middle)
        ratios.append((end - middle) / (middle - start))
    return statistics.median(times) * 1e3, statistics.median(ratios)


def bench(name: str, data: bytes, runs: int, tdshim: Path | None) -> None:
    one_sha384 = partial(lambda: hashlib.sha384(data).digest())
    base = median_ms(one_sha384, runs)
    print(f"{name}: sha384 of the 4 MiB image in one call  {base:7.2f} ms")
    for order in PageOrder:
        spec = GuestSpec(Technology.TDX, Path("x"), td=TdConfig(page_order=order))
        plan = build_td_plan(spec, firmware=data)
        engine, ratio = paired(partial(mrtd, plan), one_sha384, runs)
        total, total_ratio = paired(partial(_pipeline, spec, data), one_sha384, runs)
        print(
            f"  {order:<8} MRTD engine {engine:7.2f} ms  ratio {ratio:4.2f}   "
            f"plan+measure {total:7.2f} ms  ratio {total_ratio:4.2f}"
        )
    if tdshim is None:
        return
    loader = importlib.util.spec_from_file_location("tdshim", tdshim)
    if loader is None or loader.loader is None:
        raise SystemExit(f"cannot load {tdshim}")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()

        def peer() -> bytes:
            with open(f.name, "rb") as image_file:
                return bytes(module.build_mrtd(image_file, len(data)))

        theirs = median_ms(peer, max(5, runs // 8))
        agree = peer() == mrtd(build_td_plan(GuestSpec(Technology.TDX, Path("x")), firmware=data))
    print(f"  td-shim  build_mrtd  {theirs:7.2f} ms  ratio {theirs / base:4.2f}  {agree=}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=41)
    parser.add_argument("--tdshim", type=Path, help="td-shim's td_shim_tee_info_hash.py")
    args = parser.parse_args()
    bench("trixie layout", image(TRIXIE_LAYOUT), args.runs, args.tdshim)
    bench("all measured", image(ALL_MEASURED), args.runs, args.tdshim)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
