"""Record every command's stdout, stderr and exit code over the shipped profiles, the real
firmware, the vectors and the analysis commands, one file per invocation.

A restructuring must leave every file byte-identical (launch timings aside, which are
removed): run this before and after, then `diff -r BEFORE AFTER`.

    python tests/golden/capture.py OUTDIR
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "profiles").glob("*.toml"))
OVMF = "/usr/share/ovmf/OVMF.fd"
SNP_VEC = ROOT / "tests/vectors/snp"
TDX_VEC = ROOT / "tests/vectors/tdx"
ATT = ROOT / "tests/vectors/attestation"
NOW = "2025-09-01T00:00:00Z"
TDX_NOW = "2026-06-20T00:00:00Z"


def _cases(work: Path) -> list[tuple[str, list[str]]]:
    tik = work / "tik.bin"
    tik.write_bytes(bytes(range(16)))
    cases: list[tuple[str, list[str]]] = []
    for p in [None, *PROFILES]:
        name = p.stem if p else "default"
        arg = [str(p)] if p else []
        cases += [
            (f"measure-{name}", ["measure", *arg]),
            (f"measure-{name}-json", ["measure", *arg, "--json"]),
            (f"measure-{name}-trace", ["measure", *arg, "--trace"]),
            (f"measure-{name}-trace-json", ["measure", *arg, "--trace", "--json"]),
            (f"explain-{name}", ["explain", *arg]),
            (f"explain-{name}-json", ["explain", *arg, "--json"]),
            (f"launch-{name}-sim", ["launch", *arg, "--backend", "sim"]),
            (f"launch-{name}-sim-json", ["launch", *arg, "--backend", "sim", "--json"]),
        ]
        if p:
            cases += [
                (f"profile-check-{name}", ["profile", "check", str(p)]),
                (f"profile-check-{name}-json", ["profile", "check", str(p), "--json"]),
            ]
    snp = str(ROOT / "profiles/debian-ovmf-qemu-snp.toml")
    sev_es = str(ROOT / "profiles/debian-ovmf-qemu-sev-es.toml")
    tdx = str(ROOT / "profiles/debian-ovmf-qemu-tdx.toml")
    kernel, initrd = str(SNP_VEC / "fake-kernel.bin"), str(SNP_VEC / "test-initrd.cpio")
    flag_sets = {
        "snp-flags": ["--technology", "sev-snp", "--firmware", OVMF, "--vcpus", "2",
                      "--vcpu-type", "EPYC-Genoa"],
        "snp-flags-sig": ["--technology", "sev-snp", "--firmware", OVMF, "--vcpus", "3",
                          "--vcpu-sig", "0xa00f11", "--guest-features", "0x21"],
        "snp-flags-fms": ["--technology", "sev-snp", "--firmware", OVMF, "--vcpus", "1",
                          "--vcpu-family", "25", "--vcpu-model", "1", "--vcpu-stepping", "1"],
        "snp-ec2": ["--technology", "sev-snp", "--firmware", OVMF, "--vcpus", "4",
                    "--vmm", "ec2"],
        "snp-gce": ["--technology", "sev-snp", "--firmware", OVMF, "--vcpus", "4",
                    "--vmm", "gce", "--vmsa-gpa", "0xFFFFFFFFFF000"],
        "snp-kernel": ["--technology", "sev-snp", "--firmware",
                       str(SNP_VEC / "ovmf_AmdSev_suffix.bin"), "--vcpus", "1", "--vcpu-type",
                       "EPYC-v4", "--kernel", kernel, "--initrd", initrd, "--append",
                       "console=ttyS0"],
        "snp-kernel-sha": ["--technology", "sev-snp", "--firmware",
                           str(SNP_VEC / "ovmf_AmdSev_suffix.bin"), "--vcpus", "1",
                           "--vcpu-type", "EPYC-v4", "--kernel-sha256", "ab" * 32],
        "sev-es-flags": ["--technology", "sev-es", "--firmware", OVMF, "--vcpus", "2",
                         "--vcpu-type", "EPYC-v4", "--sev-policy", "5"],
        "sev-flags": ["--technology", "sev", "--firmware", OVMF],
        "sev-hmac": ["--technology", "sev", "--firmware", OVMF, "--tik", str(tik),
                     "--sev-api", "0.24", "--sev-build", "15", "--mnonce", "11" * 16,
                     "--sev-policy", "1"],
        "tdx-flags": ["--technology", "tdx", "--firmware", OVMF, "--vcpus", "2",
                      "--memory-mib", "2048", "--tdx-page-order", "section"],
        "tdx-flags-td": ["--technology", "tdx", "--firmware", OVMF, "--tdx-attributes",
                         "SEPT_VE_DISABLE,PKS", "--xfam", "0x602e7", "--mrowner", "aa" * 48],
        "tdx-synth": ["--technology", "tdx", "--firmware", str(TDX_VEC / "synth-tdvf-base.bin"),
                      "--raw-data-tail", "zero"],
        "snp-profile-override": [snp, "--vcpus", "8", "--vcpu-type", "EPYC-v4"],
        "sev-es-profile-override": [sev_es, "--vcpus", "1"],
        "tdx-profile-override": [tdx, "--memory-mib", "8192", "--tdx-page-order", "section"],
        "snp-precomputed": ["--technology", "sev-snp", "--firmware", OVMF, "--vcpus", "1",
                            "--vcpu-type", "EPYC-v4", "--firmware-digest", "cd" * 48],
    }  # fmt: skip
    for name, flags in flag_sets.items():
        cases += [
            (f"measure-{name}", ["measure", *flags]),
            (f"measure-{name}-json", ["measure", *flags, "--json"]),
        ]
    errors = {
        "no-firmware": ["measure", "--technology", "sev-snp"],
        "bad-cpu": ["measure", "--technology", "sev-snp", "--firmware", OVMF, "--vcpus", "1",
                    "--vcpu-type", "nope"],
        "missing-file": ["measure", str(work / "absent.toml")],
        "bad-vcpus": ["measure", snp, "--vcpus", "0"],
        "expect-match": ["measure", "--expect", "00" * 48],
        "kernel-and-sha": ["measure", snp, "--kernel", kernel, "--kernel-sha256", "ab" * 32],
        "fam-without": ["measure", snp, "--vcpu-family", "25"],
        "solve-short": ["solve", "--measurement", "00"],
        "launch-missing": ["launch", str(work / "absent.toml")],
        "diff-missing": ["diff", snp, str(work / "absent.json")],
        "inspect-missing": ["firmware", "inspect", str(work / "absent.fd")],
        "audit-missing": ["audit", "--report", str(work / "absent.bin")],
    }  # fmt: skip
    cases += [(f"error-{k}", v) for k, v in errors.items()]
    for image in [OVMF, *sorted(map(str, SNP_VEC.glob("*.bin"))),
                  *sorted(map(str, TDX_VEC.glob("synth-*.bin")))]:  # fmt: skip
        stem = Path(image).stem
        cases += [
            (f"inspect-{stem}", ["firmware", "inspect", image]),
            (f"inspect-{stem}-json", ["firmware", "inspect", image, "--json"]),
        ]
    cases.append(("profile-schema", ["profile", "schema"]))
    s, t = ATT / "snp", ATT / "tdx"
    audits = {
        "genoa": ["--report", str(s / "oak_genoa_report_v5.bin"), "--vcek",
                  str(s / "oak_genoa_vcek.der"), "--now", NOW],
        "turin": ["--report", str(s / "oak_turin_report_v5.bin"), "--vcek",
                  str(s / "oak_turin_vcek.der"), "--now", NOW],
        "milan-debug": ["--report", str(s / "gosevguest_milan_report_v2.bin"), "--vcek",
                        str(s / "gosevguest_milan_vcek.der"), "--now", NOW],
        "milan-vlek": ["--report", str(s / "trustee_milan_vlek_report.bin"), "--vlek",
                       str(s / "trustee_milan_vlek.der"), "--now", NOW],
        "milan-vcek": ["--report", str(s / "trustee_milan_vcek_report.bin"), "--vcek",
                       str(s / "trustee_milan_vcek.der"), "--now", NOW],
        "virtee-hex": ["--report", str(s / "virtee_milan_report.hex"), "--vcek",
                       str(s / "virtee_milan_vcek.der"), "--now", NOW],
        "genoa-profile": ["--report", str(s / "oak_genoa_report_v5.bin"), "--vcek",
                          str(s / "oak_genoa_vcek.der"), "--now", NOW, "--profile", snp],
        "genoa-expect": ["--report", str(s / "oak_genoa_report_v5.bin"), "--vcek",
                         str(s / "oak_genoa_vcek.der"), "--now", NOW, "--expect-policy",
                         "0x30000", "--min-tcb", "bl=1,tee=0,snp=1,ucode=1"],
        "tdx-v4": ["--report", str(t / "dcapqvl_tdx_quote_v4.dat"), "--now", TDX_NOW],
        "tdx-gotdx": ["--report", str(t / "gotdxguest_quote_v4_SPR_E4.dat"), "--now", TDX_NOW],
        "tdx-v5": ["--report", str(t / "gotdxguest_quote_v5_sample.dat"), "--now", TDX_NOW],
        "tdx-trustee": ["--report", str(t / "trustee_tdx_quote_4.dat"), "--now", TDX_NOW],
        "tdx-profile": ["--report", str(t / "trustee_tdx_quote_4.dat"), "--now", TDX_NOW,
                        "--profile", tdx],
        "tdx-rtmr": ["--report", str(t / "trustee_tdx_quote_4.dat"), "--now", TDX_NOW,
                     "--expect-rtmr", "1=" + "00" * 48],
    }  # fmt: skip
    for name, flags in audits.items():
        cases += [
            (f"audit-{name}", ["audit", *flags]),
            (f"audit-{name}-json", ["audit", *flags, "--json"]),
        ]
    # Analysis: traces and records saved first, then compared.
    traces = {}
    for p in PROFILES:
        trace = work / f"{p.stem}.trace.json"
        trace.write_bytes(_run(["measure", str(p), "--trace", "--json"])[0])
        record = work / f"{p.stem}.record.json"
        _run(["launch", str(p), "--backend", "sim", "--record", str(record)])
        traces[p.stem] = (trace, record)
    pairs = {
        "snp-vs-sev-es": (snp, sev_es),
        "snp-vs-ec2": (snp, str(ROOT / "profiles/ec2-snp.toml")),
        "snp-vs-gce": (snp, str(ROOT / "profiles/gce-snp.toml")),
        "snp-vs-self-trace": (snp, str(traces["debian-ovmf-qemu-snp"][0])),
        "snp-vs-record": (snp, str(traces["debian-ovmf-qemu-snp"][1])),
        "ec2-trace-vs-snp-record": (str(traces["ec2-snp"][0]),
                                    str(traces["debian-ovmf-qemu-snp"][1])),
        "tdx-vs-record": (tdx, str(traces["debian-ovmf-qemu-tdx"][1])),
        "tdx-vs-snp": (tdx, snp),
        "direct-vs-snp": (str(ROOT / "profiles/direct-boot-snp.toml"), snp),
    }  # fmt: skip
    for name, (a, b) in pairs.items():
        cases += [
            (f"diff-{name}", ["diff", a, b]),
            (f"diff-{name}-json", ["diff", a, b, "--json"]),
        ]
    # Profiles that differ from the shipped ones in one field each.
    for field, old, new in (
        ("vcpus", "vcpus = 4", "vcpus = 2"),
        ("cpu", 'name = "EPYC-Milan"', 'name = "EPYC-Genoa"'),
        ("features", "guest_features = 0x1", "guest_features = 0x21"),
    ):
        changed = work / f"snp-{field}.toml"
        text = Path(snp).read_text().replace(old, new)
        changed.write_text(text.replace('path = "/usr', 'path = "/usr'))
        cases += [(f"diff-snp-{field}", ["diff", snp, str(changed)]),
                  (f"diff-snp-{field}-json", ["diff", snp, str(changed), "--json"])]  # fmt: skip
    digest = json.loads(_run(["measure", snp, "--json"])[0])["measurement"]
    tdx_digest = json.loads(_run(["measure", tdx, "--json"])[0])["measurement"]
    ec2 = ["measure", "--technology", "sev-snp", "--firmware", OVMF, "--vcpus", "7", "--vmm"]
    ec2_digest = json.loads(_run([*ec2, "ec2", "--json"])[0])["measurement"]
    cases += [
        ("solve-snp", ["solve", "--measurement", digest, snp]),
        ("solve-snp-json", ["solve", "--measurement", digest, snp, "--json"]),
        ("solve-default", ["solve", "--measurement", digest]),
        ("solve-fixed", ["solve", "--measurement", digest, snp, "--vcpus", "4"]),
        ("solve-ec2", ["solve", "--measurement", ec2_digest, snp]),
        ("solve-miss", ["solve", "--measurement", "00" * 48, snp, "--max-vcpus", "8"]),
        ("solve-tdx", ["solve", "--measurement", tdx_digest, tdx]),
        ("solve-tdx-json", ["solve", "--measurement", tdx_digest, tdx, "--json"]),
        ("matrix-default", ["matrix"]),
        ("matrix-snp", ["matrix", snp, "--vcpus", "1-4,8", "--vcpu-type",
                        "EPYC-Milan,EPYC-Genoa", "--vmm", "qemu,ec2,gce"]),
        ("matrix-snp-json", ["matrix", snp, "--vcpus", "1-3", "--guest-features",
                             "0x1,0x21", "--json"]),
        ("matrix-snp-csv", ["matrix", snp, "--vcpus", "1-3", "--vcpu-sig",
                            "0xa00f11,0x800f12", "--csv"]),
        ("matrix-sev-es", ["matrix", sev_es, "--vcpus", "1-4"]),
        ("matrix-tdx", ["matrix", tdx, "--tdx-page-order", "page,section", "--memory-mib",
                        "2048,4096", "--raw-data-tail", "image,zero"]),
        ("matrix-tdx-json", ["matrix", tdx, "--memory-mib", "1024,2048", "--json"]),
    ]  # fmt: skip
    cases += _wave2_cases(work, snp, tdx)
    return cases


def _wave2_cases(work: Path, snp: str, tdx: str) -> list[tuple[str, list[str]]]:
    """Firmware descriptors, RTMR solving and publishing."""
    amdsev = str(SNP_VEC / "ovmf_AmdSev_suffix.bin")
    kernel = str(TDX_VEC / "vmlinuz-6.1.0-56-amd64")
    booted = work / "td-boot.toml"
    booted.write_text(Path(tdx).read_text() + 'edk2 = 202502\nqemu = "8.2"\n'
                      f'[boot]\nkernel = "{kernel}"\ncmdline = "console=ttyS0"\n')  # fmt: skip
    # The Debian kernel's RTMR1 unpatched, edk2 before 202411 (tests/vectors/tdx).
    rtmr1 = json.loads((TDX_VEC / "tdx-vectors.json").read_text())["kernel_examples"]["unpatched"][
        "rtmr1_edk2_lt_202411"
    ]
    cases = [
        ("describe-ovmf", ["firmware", "describe", OVMF]),
        (
            "describe-ovmf-tdx-json",
            ["firmware", "describe", OVMF, "--technology", "tdx", "--json"],
        ),
        ("describe-amdsev", ["firmware", "describe", amdsev]),
        ("measure-td-boot-json", ["measure", str(booted), "--json"]),
        ("solve-td-rtmr1", ["solve", str(booted), "--rtmr1", rtmr1]),
        ("solve-td-rtmr1-json", ["solve", str(booted), "--rtmr1", rtmr1, "--json"]),
    ]
    for name in ("json", "rvps", "go-sev-guest", "corim"):
        cases.append((f"publish-snp-{name}", ["publish", snp, "--format", name]))
    for name in ("json", "rvps", "go-tdx-guest"):
        cases.append((f"publish-td-{name}", ["publish", str(booted), "--format", name]))
    return cases  # fmt: skip


def _run(argv: list[str]) -> tuple[bytes, bytes, int]:
    exe = str(Path(sys.executable).parent / "cvmlaunch")
    r = subprocess.run([exe, *argv], capture_output=True, stdin=subprocess.DEVNULL, check=False)
    return r.stdout, r.stderr, r.returncode


# Launch timings and the emulated SEV firmware's random MNONCE (and so the LAUNCH_MEASURE
# HMAC) change from run to run; nothing else may.
_TIMINGS = re.compile(rb'"timings": \{[^}]*\}', re.S)
_NONCE = re.compile(rb'"launch_measure": "[0-9a-f]+"')


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.gettempdir()) / "cvmlaunch-golden-work"
    work.mkdir(exist_ok=True)
    os.chdir(ROOT)
    cases = _cases(work)
    for name, argv in cases:
        stdout, stderr, code = _run(argv)
        if name.startswith("launch-"):
            stdout = _NONCE.sub(b'"launch_measure": "-"', _TIMINGS.sub(b'"timings": {}', stdout))
        (out / f"{name}.out").write_bytes(stdout)
        (out / f"{name}.err").write_bytes(stderr)
        (out / f"{name}.code").write_text(f"{code}\n{' '.join(argv)}\n")
    print(f"{len(cases)} invocations recorded in {out}")


if __name__ == "__main__":
    main()
