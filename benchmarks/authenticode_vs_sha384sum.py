"""Benchmark the Authenticode SHA-384 of a 64 MiB PE image against `sha384sum` of it.

The image is a PE32+ file with the Debian kernel's headers layout and one 64 MiB section of
deterministic pseudo-random bytes, plus a certificate table. Authenticode hashes nearly every
byte once (headers less two fields, the section, nothing of the certificates), so 1.0 is the
floor of the ratio; the target is 1.3. Both are whole-process wall times, interleaved, so
start-up counts on both sides; the in-process time of the engine alone is shown too.

Run: .venv/bin/python benchmarks/authenticode_vs_sha384sum.py [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvmlaunch.measure.authenticode import authenticode  # noqa: E402

MIB = 1 << 20


def build_pe(path: Path, section_size: int) -> None:
    """A PE32+ image: 4 KiB of headers, one section of `section_size`, 2 KiB of certificates."""
    pe, opt, certs = 0x40, 0x58, 0x800
    header = bytearray(0x1000)
    header[0:2] = b"MZ"
    struct.pack_into("<I", header, 0x3C, pe)
    header[pe : pe + 4] = b"PE\0\0"
    struct.pack_into("<HH", header, pe + 4, 0x8664, 1)  # machine, one section
    struct.pack_into("<H", header, pe + 20, 240)  # SizeOfOptionalHeader: 16 directories
    struct.pack_into("<H", header, opt, 0x20B)
    struct.pack_into("<I", header, opt + 60, 0x1000)  # SizeOfHeaders
    struct.pack_into("<I", header, opt + 108, 16)  # NumberOfRvaAndSizes
    struct.pack_into("<II", header, opt + 112 + 32, 0x1000 + section_size, certs)
    table = opt + 240
    header[table : table + 8] = b".text\0\0\0"
    struct.pack_into("<II", header, table + 16, section_size, 0x1000)
    rng = random.Random(64)
    with path.open("wb") as f:
        f.write(header)
        for _ in range(section_size // MIB):
            f.write(rng.randbytes(MIB))
        f.write(bytes(certs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    sha384sum = shutil.which("sha384sum")
    if sha384sum is None:
        sys.exit("sha384sum (coreutils) is needed")
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "kernel.efi"
        build_pe(image, 64 * MIB)
        ours = [sys.executable, "-c",
                "import sys; from pathlib import Path; "
                "from cvmlaunch.measure.authenticode import authenticode; "
                "print(authenticode(Path(sys.argv[1])).hex())", str(image)]  # fmt: skip
        peer = [sha384sum, str(image)]
        walls: dict[str, list[float]] = {"cvmlaunch": [], "sha384sum": []}
        for _ in range(args.rounds):
            for name, cmd in (("cvmlaunch", ours), ("sha384sum", peer)):
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                walls[name].append(time.perf_counter() - start)
        engine = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            authenticode(image)
            engine.append(time.perf_counter() - start)
    ours_s, peer_s = statistics.median(walls["cvmlaunch"]), statistics.median(walls["sha384sum"])
    print(f"Authenticode SHA-384 of a 64 MiB PE, {args.rounds} interleaved runs (median wall):")
    print(f"    cvmlaunch (process)  {ours_s * 1e3:8.1f} ms")
    print(f"    sha384sum            {peer_s * 1e3:8.1f} ms")
    print(f"    ratio cvmlaunch / sha384sum = {ours_s / peer_s:.2f}")
    print(f"    engine alone (in process) {statistics.median(engine) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
