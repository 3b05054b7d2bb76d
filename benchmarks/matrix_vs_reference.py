"""Benchmark `matrix` (the engine of `cvmlaunch matrix` and `solve`) against sev-snp-measure.

(a) Debian OVMF.fd, sev-snp, guest features 0x1: vCPUs 1-64 x EPYC-v4, EPYC-Rome, EPYC-Milan,
    EPYC-Genoa, EPYC-Turin x qemu, ec2, gce (960 configurations). cvmlaunch: one `matrix`
    call, best of 3. Reference: `guest.calc_launch_digest` once per configuration in this
    process, called as its command line calls it (every configuration by default; with
    --sample N, a random N of them, timed and scaled to 960, as the output says). Every
    configuration the reference computes must equal cvmlaunch's row.
(b) cvmlaunch alone for vCPUs 1-512 (7680 configurations), best of 3.

Run: `.venv/bin/python benchmarks/matrix_vs_reference.py`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sevsnpmeasure import guest as ref_guest  # noqa: E402
from sevsnpmeasure import vcpu_types as ref_vcpu_types  # noqa: E402
from sevsnpmeasure import vmm_types as ref_vmm_types  # noqa: E402
from sevsnpmeasure.sev_mode import SevMode as RefSevMode  # noqa: E402

from cvmlaunch.analysis.space import matrix  # noqa: E402
from cvmlaunch.guest.spec import CpuSpec, GuestSpec, Technology, Vmm  # noqa: E402
from cvmlaunch.measure.sweep import Axes, Row  # noqa: E402

OVMF = Path("/usr/share/ovmf/OVMF.fd")
MODELS = ("EPYC-v4", "EPYC-Rome", "EPYC-Milan", "EPYC-Genoa", "EPYC-Turin")
VMMS = (Vmm.QEMU, Vmm.EC2, Vmm.GCE)
GUEST_FEATURES = 0x1
_REF_VMMS = {
    Vmm.QEMU: ref_vmm_types.VMMType.QEMU,
    Vmm.EC2: ref_vmm_types.VMMType.ec2,
    Vmm.GCE: ref_vmm_types.VMMType.gce,
}


def axes(max_vcpus: int) -> Axes:
    cpus = tuple(CpuSpec.from_name(name) for name in MODELS)
    return Axes(tuple(range(1, max_vcpus + 1)), cpus, VMMS, (GUEST_FEATURES,))


def best_of(rounds: int, base: GuestSpec, space: Axes) -> tuple[float, list[Row]]:
    """The fastest of `rounds` matrix calls, in seconds, and the rows."""
    best, rows = float("inf"), []
    for _ in range(rounds):
        start = time.perf_counter()
        rows = matrix(base, space)
        best = min(best, time.perf_counter() - start)
    return best, rows


def reference_digest(config: GuestSpec) -> bytes:
    """sev-snp-measure's digest of `config` on OVMF, with the arguments its CLI passes."""
    if config.cpu is None or config.cpu.name is None:
        raise SystemExit(f"{config} names no CPU model")
    digest = ref_guest.calc_launch_digest(
        RefSevMode.SEV_SNP,
        config.vcpus,
        ref_vcpu_types.CPU_SIGS[config.cpu.name],
        str(OVMF),
        None,
        None,
        None,
        config.guest_features,
        snp_ovmf_hash_str="",
        vmm_type=_REF_VMMS[config.vmm],
    )
    if not isinstance(digest, bytes):
        raise SystemExit(f"sev-snp-measure returned {digest!r}")
    return digest


def versus_reference(sample: int | None) -> None:
    base = GuestSpec(Technology.SEV_SNP, OVMF)
    ours, rows = best_of(3, base, axes(64))
    checked = rows if sample is None else random.Random(0xBE7C).sample(rows, sample)
    start = time.perf_counter()
    for row in checked:
        theirs = reference_digest(row.spec)
        if theirs != row.measurement:
            raise SystemExit(f"digests differ for {row.spec}: {row.measurement.hex()} != "
                             f"{theirs.hex()}")  # fmt: skip
    looped = time.perf_counter() - start
    reference = looped * len(rows) / len(checked)
    print(f"(a) Debian OVMF.fd, sev-snp, {len(rows)} configurations "
          f"(vCPUs 1-64 x {len(MODELS)} CPU models x {len(VMMS)} VMMs):")  # fmt: skip
    print(f"    cvmlaunch matrix    {ours * 1000:9.1f} ms  (best of 3)")
    if sample is None:
        print(
            f"    sev-snp-measure     {reference * 1000:9.1f} ms  (one loop over all {len(rows)})"
        )
    else:
        print(
            f"    sev-snp-measure     {reference * 1000:9.1f} ms  (a random {len(checked)} "
            f"took {looped * 1000:.1f} ms, scaled to {len(rows)})"
        )
    print(f"    all {len(checked)} reference digests equal cvmlaunch's rows")
    print(f"    ratio sev-snp-measure / cvmlaunch = {reference / ours:.0f}x")


def wide() -> None:
    base = GuestSpec(Technology.SEV_SNP, OVMF)
    seconds, rows = best_of(3, base, axes(512))
    print(f"(b) vCPUs 1-512: {len(rows)} configurations")
    print(f"    cvmlaunch matrix    {seconds * 1000:9.1f} ms  (best of 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sample", type=int, metavar="N", help="loop the reference over a random N configs"
    )
    args = parser.parse_args()
    if not OVMF.exists():
        raise SystemExit(f"{OVMF} missing: apt-get install ovmf")
    versus_reference(args.sample)
    wide()


if __name__ == "__main__":
    main()
