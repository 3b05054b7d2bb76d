"""`explain`: the trace told as runs, each with its inputs, causes and running digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvmlaunch.analysis.explain import explain
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import GuestSpec, Vmm
from cvmlaunch.measure import measure
from cvmlaunch.plan import LaunchPlan, build_plan
from tests.conftest import CliRunner

ROOT = Path(__file__).parents[2]
PROFILES = [*sorted((ROOT / "profiles").glob("*.toml")), ROOT / "cvmlaunch/data/default.toml"]


def _spec(name: str) -> GuestSpec:
    return load_profile(ROOT / "profiles" / name).to_spec()


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_runs_tile_the_trace_and_end_at_the_measurement(profile: Path, debian_ovmf: Path) -> None:
    plan = build_plan(load_profile(profile).to_spec())
    story = explain(plan)
    trace = measure(plan, trace=True).trace
    assert trace is not None and story.runs
    assert story.measurement == measure(plan).digest
    # Every step belongs to exactly one run, in order, and each run ends at its digest.
    assert story.runs[0].first == 0 and story.runs[-1].last == len(trace) - 1
    for before, after in zip(story.runs, story.runs[1:], strict=False):
        assert after.first == before.last + 1
    for run in story.runs:
        assert run.digest == trace[run.last].digest and run.fields
    assert story.runs[-1].digest == story.measurement


def test_snp_story(debian_ovmf: Path) -> None:
    story = explain(build_plan(_spec("debian-ovmf-qemu-snp.toml")._replace(vcpus=4)))
    titles = [run.title for run in story.runs]
    assert titles[0] == "firmware: 0xffe00000-0xffffffff NORMAL x512"
    assert story.runs[0].inputs["file_offsets"] == "0x0-0x1fffff"
    assert story.runs[0].pages == 512 and story.runs[0].fields[0] == "firmware.sha256"
    assert [t for t in titles if t.startswith("CPUID")] == [
        "CPUID section 3: 0x80e000-0x80efff CPUID x1"
    ]
    bsp, aps = story.runs[-2:]
    assert bsp.title.startswith("VMSA vCPU 0 (BSP) x1") and aps.title.startswith(
        "VMSA vCPU 1-3 (AP) x3"
    )
    assert "EPYC-Milan" in bsp.inputs["rdx"] and bsp.inputs["sev_features"] == "0x1 [SNP_ACTIVE]"
    assert aps.last - aps.first == 2 and "vcpus" in aps.fields


def test_cloud_vmm_says_the_cpu_is_not_measured(debian_ovmf: Path) -> None:
    spec = _spec("debian-ovmf-qemu-snp.toml")._replace(vmm=Vmm.EC2, cpu=None)
    story = explain(build_plan(spec))
    assert "fixed by ec2, not the CPU model" in story.runs[-1].inputs["rdx"]


def test_direct_boot_kernel_hashes_run(debian_ovmf: Path) -> None:
    spec = load_profile(ROOT / "profiles" / "direct-boot-snp.toml").to_spec()
    plan = build_plan(spec)
    assert isinstance(plan, LaunchPlan) and plan.kernel_hashes is not None
    story = explain(plan)
    (run,) = [r for r in story.runs if r.title.startswith("kernel hashes")]
    assert run.inputs["kernel_sha256"] == plan.kernel_hashes.kernel.hex()
    assert run.inputs["cmdline"] == (spec.boot.cmdline if spec.boot else None)


def test_precomputed_firmware_digest_is_one_step(debian_ovmf: Path) -> None:
    spec = _spec("debian-ovmf-qemu-snp.toml")
    digest = measure(build_plan(spec)).firmware_digest
    assert digest is not None
    story = explain(build_plan(spec._replace(firmware_digest=digest)))
    first = story.runs[0]
    assert first.first == first.last == 0 and first.inputs["precomputed_digest"] == digest.hex()
    assert story.measurement == measure(build_plan(spec)).digest


def test_tdx_story(debian_ovmf: Path) -> None:
    plan = build_plan(_spec("debian-ovmf-qemu-tdx.toml"))
    story = explain(plan)
    bfv = story.runs[0]
    assert bfv.inputs["section"] == "0 BFV" and bfv.inputs["action"] == "page-add+extend"
    assert bfv.inputs["records"] == "480 MEM.PAGE.ADD, 7680 MR.EXTEND"
    assert "tdx.page_order" in bfv.fields
    (hob,) = [r for r in story.runs if "TD_HOB" in r.inputs["section"]]
    # Debian's TDVF adds the TD HOB without extending it: RAM size is not in the MRTD.
    assert "memory_mib" not in hob.fields and "4096 MiB" in hob.inputs["td_hob"]


def test_cli_explain(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
    r = cli("explain", profile, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert (
        doc["measurement"] == measure(build_plan(_spec("debian-ovmf-qemu-snp.toml"))).digest.hex()
    )
    assert (
        doc["runs"][0]["title"].startswith("firmware")
        and doc["runs"][-1]["digest"] == doc["measurement"]
    )
    r = cli("explain", profile)
    assert r.code == 0 and "digest after:" in r.out and r.out.startswith("sev-snp measurement ")
    r = cli("explain", ROOT / "nonexistent.toml")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
