"""Compute expected launch measurements (SEV-SNP MEASUREMENT, TDX MRTD) with the cvmlaunch
Python API.

1. From a profile file, as an operator or a CI pipeline would.
2. From a GuestSpec built in code, as cloud launch tooling would, with the kernel given by
   its SHA-256 only (a verifier does not need the kernel image itself).
3. A TD's MRTD, as a QEMU 8.2-era TDX host (section order) would measure it.

Run: .venv/bin/python examples/measure_api.py [PROFILE]
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from cvmlaunch import (
    BootFile,
    CpuSpec,
    CvmlaunchError,
    DirectBoot,
    GuestSpec,
    PageOrder,
    TdConfig,
    Technology,
    Vmm,
    build_plan,
    load_profile,
    measure,
)

ROOT = Path(__file__).resolve().parent.parent


def from_profile(path: Path) -> None:
    plan = build_plan(load_profile(path).to_spec())
    result = measure(plan, trace=True)
    trace = result.trace or ()
    # SEV-family steps are pages (by type); TDX steps are PAGE.ADD / MR.EXTEND records.
    kinds = Counter(s.call_type for s in trace)
    print(f"{path.name}: {result.technology} measurement {result.digest.hex()}")
    print(f"  {len(trace)} measured steps: {dict(kinds)}")


def from_code() -> None:
    spec = GuestSpec(
        technology=Technology.SEV_SNP,
        firmware=ROOT / "tests/vectors/snp/ovmf_AmdSev_suffix.bin",
        vcpus=2,
        cpu=CpuSpec.from_name("EPYC-Genoa"),
        vmm=Vmm.QEMU,
        boot=DirectBoot(
            kernel=BootFile(sha256=bytes.fromhex("ab" * 32)),
            cmdline="console=ttyS0 root=/dev/vda1",
        ),
    )
    print(f"in-code spec: measurement {measure(build_plan(spec)).digest.hex()}")
    td = GuestSpec(
        technology=Technology.TDX,
        firmware=ROOT / "tests/vectors/tdx/synth-tdvf-base.bin",
        td=TdConfig(page_order=PageOrder.SECTION),
    )
    print(f"in-code TD: MRTD {measure(build_plan(td)).digest.hex()}")


def main() -> int:
    profile = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "profiles/direct-boot-snp.toml"
    try:
        from_profile(profile)
        from_code()
    except CvmlaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
