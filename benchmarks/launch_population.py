"""Benchmark launch population: rehearsal throughput against memcpy, and map_memory overhead.

(a) Rehearsal population of a 1 GiB image on this machine's real KVM: one map_memory call
    on a default VM whose memslot is a guest_memfd (MMAP|INIT_SHARED) mapping, against a
    plain memcpy of the same bytes into fresh anonymous memory (both touch new pages). The
    map_memory figure includes the SHA-256 of the source it records; the write alone is shown
    too.
(b) Python overhead per map_memory call on the emulated kernel: N one-page SNP launch
    updates, minus the emulated firmware's own per-page work (the same pages measured by one
    N-page call), divided by N.

Run: .venv/bin/python benchmarks/launch_population.py [--gib N]
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvmlaunch.abi.kvm import GuestMemfdFlag, MapFlag, VmType  # noqa: E402
from cvmlaunch.kvm import Kvm, map_memory  # noqa: E402

GIB = 1 << 30
PAGE = 4096


def _best(samples: list[float]) -> str:
    return f"best {min(samples):.3f} s  median {statistics.median(samples):.3f} s"


def rehearsal(size: int, runs: int) -> None:
    source = memoryview(os.urandom(1 << 20) * (size >> 20))
    populate, write, copy, warm = [], [], [], []
    for _ in range(runs):
        with Kvm() as kvm:
            vm = kvm.create_vm(VmType.DEFAULT)
            gmem = vm.create_guest_memfd(size, GuestMemfdFlag.MMAP | GuestMemfdFlag.INIT_SHARED)
            vm.set_memory_region(0, 0x100000000, gmem.mmap().view, gmem)
            vcpu = vm.create_vcpu(0)
            vm.probe_capabilities(vcpu)
            start = time.perf_counter()
            map_memory(vcpu, 0x100000000 >> 12, size // PAGE, 0, source)
            populate.append(time.perf_counter() - start)
        start = time.perf_counter()
        hashlib.sha256(source).digest()
        digest = time.perf_counter() - start
        write.append(populate[-1] - digest)
        with mmap.mmap(-1, size) as target:
            start = time.perf_counter()
            target[:] = source
            copy.append(time.perf_counter() - start)
            start = time.perf_counter()
            target[:] = source
            warm.append(time.perf_counter() - start)
    gib = size / GIB
    print(f"(a) rehearsal population of {gib:g} GiB ({runs} runs)")
    print(f"    memcpy into fresh memory   {_best(copy)}  {gib / min(copy):.2f} GiB/s")
    print(f"    memcpy into touched memory {_best(warm)}  {gib / min(warm):.2f} GiB/s")
    print(
        f"    map_memory (write+SHA-256) {_best(populate)}  ratio {min(populate) / min(copy):.2f}"
    )
    print(f"    map_memory write alone     {_best(write)}  ratio {min(write) / min(copy):.2f}")


def overhead(pages: int) -> None:
    from cvmlaunch.sim import SimKernel

    def run(per_call: int) -> float:
        with Kvm(SimKernel("snp")) as kvm:
            vm = kvm.create_vm(VmType.SNP)
            vm.sev_init2(ghcb_version=2)
            vm.snp_launch_start(0x30000)
            shared = mmap.mmap(-1, pages * PAGE)
            gmem = vm.create_guest_memfd(pages * PAGE, 0)
            vm.set_memory_region(0, 0x1000000, memoryview(shared), gmem)
            vm.set_private(0x1000000, pages * PAGE)
            vcpu = vm.create_vcpu(0)
            vm.probe_capabilities(vcpu)
            data = memoryview(bytes(pages * PAGE))
            start = time.perf_counter()
            for first in range(0, pages, per_call):
                chunk = data[first * PAGE : (first + per_call) * PAGE]
                map_memory(vcpu, (0x1000000 >> 12) + first, per_call, MapFlag.PRIVATE, chunk)
            return time.perf_counter() - start

    single = min(run(1) for _ in range(3))
    batched = min(run(pages) for _ in range(3))
    print(
        f"(b) map_memory on sim (SNP): {pages} one-page calls {single * 1e3:.1f} ms, "
        f"one {pages}-page call {batched * 1e3:.1f} ms"
    )
    print(f"    Python overhead per call: {(single - batched) / pages * 1e6:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pages", type=int, default=2000)
    args = parser.parse_args()
    rehearsal(int(args.gib * GIB) // PAGE * PAGE, args.runs)
    overhead(args.pages)


if __name__ == "__main__":
    main()
