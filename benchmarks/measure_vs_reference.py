"""Benchmark `cvmlaunch measure` against the reference tool `sev-snp-measure`, side by side.

(a) Debian OVMF.fd, sev-snp, 4 vCPUs EPYC-v4: whole-process wall and CPU time, both tools run
    interleaved many times; medians and their ratio.
(b) A 1 GiB initrd for measured direct boot (AmdSev firmware fixture): cvmlaunch's wall time
    and peak RSS against `sha256sum` of the same file (and the reference tool's, which reads
    the whole file into memory).

Run: `make bench`, which installs both tools regularly (non-editable) into .venv-bench;
start-up times of an editable install are not comparable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVMF = Path("/usr/share/ovmf/OVMF.fd")
AMDSEV = ROOT / "tests" / "vectors" / "snp" / "ovmf_AmdSev_suffix.bin"
BIN = Path(sys.executable).parent


def run(cmd: list[str]) -> tuple[float, float, bytes]:
    """Wall seconds, CPU seconds (user + system, from the child's rusage) and stdout of one
    child process. CPU time is the steadier figure on a shared machine."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if child.returncode != 0:
            raise subprocess.CalledProcessError(child.returncode, cmd)
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, out.read()


def peak_rss_kib(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS of `cmd`, measured by GNU time in a fresh process."""
    gnu_time = shutil.which("time") or "/usr/bin/time"
    with tempfile.NamedTemporaryFile("r") as out:
        start = time.perf_counter()
        subprocess.run(
            [gnu_time, "-f", "%M", "-o", out.name, *cmd], check=True, capture_output=True
        )
        wall = time.perf_counter() - start
        return wall, int(out.read().strip().splitlines()[-1])


def startup(rounds: int) -> None:
    ours = [str(BIN / "cvmlaunch"), "measure", "--technology", "sev-snp", "--firmware", str(OVMF)]
    ours += ["--vcpus", "4", "--vcpu-type", "EPYC-v4"]
    peer = [str(BIN / "sev-snp-measure"), "--mode", "snp", "--vcpus", "4"]
    peer += ["--vcpu-type", "EPYC-v4", "--ovmf", str(OVMF)]
    walls: dict[str, list[float]] = {"cvmlaunch": [], "sev-snp-measure": []}
    cpus: dict[str, list[float]] = {"cvmlaunch": [], "sev-snp-measure": []}
    outputs = {}
    for _ in range(rounds):
        for name, cmd in (("cvmlaunch", ours), ("sev-snp-measure", peer)):
            wall, cpu, out = run(cmd)
            walls[name].append(wall)
            cpus[name].append(cpu)
            outputs[name] = out.split()[-1]
    if outputs["cvmlaunch"] != outputs["sev-snp-measure"]:
        raise SystemExit(f"digests differ: {outputs}")
    print(f"(a) Debian OVMF.fd, sev-snp, 4 vCPUs, {rounds} interleaved runs each (medians):")
    print(f"    {'':<16} {'wall':>9} {'CPU':>9}")
    med = {}
    for name, wall_times in walls.items():
        med[name] = statistics.median(wall_times) * 1000, statistics.median(cpus[name]) * 1000
        print(f"    {name:<16} {med[name][0]:6.1f} ms {med[name][1]:6.1f} ms")
    ratio = [med["cvmlaunch"][i] / med["sev-snp-measure"][i] for i in (0, 1)]
    print(f"    ratio cvmlaunch / sev-snp-measure = {ratio[0]:.2f} wall, {ratio[1]:.2f} CPU")


def big_initrd(size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        initrd = Path(tmp) / "initrd.img"
        with initrd.open("wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
        # Warm the page cache so every tool reads from memory, not disk.
        subprocess.run(["cat", str(initrd)], check=True, stdout=subprocess.DEVNULL)
        ours = [str(BIN / "cvmlaunch"), "measure", "--technology", "sev-snp"]
        ours += ["--firmware", str(AMDSEV), "--vcpus", "4", "--vcpu-type", "EPYC-v4"]
        ours += ["--kernel", str(AMDSEV), "--initrd", str(initrd), "--append", "console=ttyS0"]
        peer = [str(BIN / "sev-snp-measure"), "--mode", "snp", "--vcpus", "4"]
        peer += ["--vcpu-type", "EPYC-v4", "--ovmf", str(AMDSEV), "--kernel", str(AMDSEV)]
        peer += ["--initrd", str(initrd), "--append", "console=ttyS0"]
        results = {}
        for name, cmd in (
            ("sha256sum", ["sha256sum", str(initrd)]),
            ("cvmlaunch", ours),
            ("sev-snp-measure", peer),
        ):
            samples = [peak_rss_kib(cmd) for _ in range(3)]
            results[name] = (min(s[0] for s in samples), max(s[1] for s in samples))
        print(f"(b) {size >> 20} MiB initrd (best of 3 wall, peak RSS):")
        for name, (wall, rss) in results.items():
            print(f"    {name:<16} {wall:7.3f} s  {rss / 1024:7.1f} MiB")
        ratio = results["cvmlaunch"][0] / results["sha256sum"][0]
        print(f"    ratio cvmlaunch / sha256sum wall = {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 64 MiB initrd")
    args = parser.parse_args()
    if not OVMF.exists():
        raise SystemExit(f"{OVMF} missing: apt-get install ovmf")
    startup(10 if args.quick else 40)
    big_initrd((64 if args.quick else 1024) << 20)


if __name__ == "__main__":
    main()
