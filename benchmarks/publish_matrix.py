"""Benchmark `publish` of a 960-guest matrix in each reference-value format.

The matrix: profiles/debian-ovmf-qemu-snp.toml (Debian's OVMF.fd), vCPUs 1-96 x EPYC-Milan,
EPYC-Genoa, EPYC-Turin on QEMU, plus EC2 and GCE (whose VMSAs hold no CPU) x guest features
0x1 and 0x21: 960 guests, as `cvmlaunch publish PROFILE --vcpus 1-96 --vcpu-type ... --vmm
qemu,ec2,gce --guest-features 0x1,0x21 --format F` computes them. Timed, median of N runs, in
this process (no interpreter start-up):

* the references (publish.references: the matrix's digests, each guest's expectations and
  provenance), once per run;
* per format, writing the document of those references (the codec alone), and the whole
  publish (references + document).

A format whose module is missing, or that has no document for SEV-SNP references
(go-tdx-guest), is skipped with the reason. Target: the whole publish < 0.2 s per format.

Run: `.venv/bin/python benchmarks/publish_matrix.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvmlaunch.analysis.space import axes_from_lists  # noqa: E402
from cvmlaunch.errors import CvmlaunchError  # noqa: E402
from cvmlaunch.guest.profile import load_profile  # noqa: E402
from cvmlaunch.guest.spec import Vmm  # noqa: E402
from cvmlaunch.publish import (  # noqa: E402
    FORMATS,
    Format,
    PublishOptions,
    Reference,
    codec,
    references,
)

PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
OVMF = Path("/usr/share/ovmf/OVMF.fd")
LISTS: dict[str, list[Any]] = {
    "--vcpus": list(range(1, 97)),
    "--vcpu-type": ["EPYC-Milan", "EPYC-Genoa", "EPYC-Turin"],
    "--vmm": [Vmm.QEMU, Vmm.EC2, Vmm.GCE],
    "--guest-features": [0x1, 0x21],
}
MIN_TCB = {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}
TARGET_SECONDS = 0.2


def median_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=11, help="runs per timing (median)")
    args = parser.parse_args()
    if not OVMF.exists():
        raise SystemExit(f"{OVMF} missing: apt-get install ovmf")
    profile_bytes = PROFILE.read_bytes()
    spec = load_profile(PROFILE).to_spec()
    base = spec._replace(vcpus=1)  # as publish makes it: the first value of each list
    axes = axes_from_lists(base, LISTS)

    def publish_references() -> list[Reference]:
        return references(base, axes, profile_bytes=profile_bytes, min_tcb=MIN_TCB)

    def publish_with(module: Format, options: PublishOptions) -> bytes:
        return module.write(publish_references(), options)

    refs = publish_references()
    if len(refs) != 960:
        raise SystemExit(f"expected 960 guests, got {len(refs)}")
    seconds = median_of(args.runs, publish_references)
    print(f"{len(refs)} guests, median of {args.runs} runs")
    print(f"  references()                      {seconds * 1000:8.1f} ms")
    print(f"  {'format':14} {'write':>10} {'publish':>10} {'document':>12}")
    failed = []
    for name in FORMATS:
        try:
            module = codec(name)
        except (ImportError, CvmlaunchError) as e:
            print(f"  {name:14} skipped: module not available ({e})")
            continue
        if name == "go-tdx-guest":  # its module writes by technology: go-sev-guest's here
            print(f"  {name:14} skipped: checks TDX guests; these are SEV-SNP")
            continue
        options = PublishOptions()
        try:
            document = module.write(refs, options)
        except CvmlaunchError as e:
            print(f"  {name:14} skipped: {e}")
            continue
        write = median_of(args.runs, partial(module.write, refs, options))
        whole = median_of(args.runs, partial(publish_with, module, options))
        verdict = "" if whole < TARGET_SECONDS else f"  over {TARGET_SECONDS * 1000:.0f} ms"
        if verdict:
            failed.append(name)
        print(
            f"  {name:14} {write * 1000:8.1f} ms {whole * 1000:8.1f} ms "
            f"{len(document):>9,} B{verdict}"
        )
    if failed:
        raise SystemExit(f"over the {TARGET_SECONDS} s target: {', '.join(failed)}")


if __name__ == "__main__":
    main()
