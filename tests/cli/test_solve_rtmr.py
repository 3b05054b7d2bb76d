"""`solve` for a TD's RTMRs on the command line: the Debian kernel's published RTMR1/RTMR2
in each edk2 era and QEMU kind, dstack's real log, a launch digest and RTMRs together, and
the errors that name their flag."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from cvmlaunch.guest.profile import parse_profile
from cvmlaunch.measure.rtmr import boot_events, plan_boot_inputs, rtmrs
from cvmlaunch.plan.tdx import build_td_plan
from tests.conftest import TDX_VECTORS, CliRunner

KERNEL = TDX_VECTORS / "vmlinuz-6.1.0-56-amd64"
VECTORS = json.loads((TDX_VECTORS / "tdx-vectors.json").read_text())["kernel_examples"]
PATCHED = VECTORS["qemu_patched_mem2GiB_initrd1MiB"]
UNPATCHED = VECTORS["unpatched"]
DSTACK = TDX_VECTORS.parent / "eventlog" / "dstack"
HIGH = [2048, 3072, 4096, 8192, 16384, 32768, 65536, 131072]


@pytest.fixture
def profile(tmp_path: Path, debian_ovmf: Path) -> Path:
    """The vectors' guest (1 MiB zero initrd, console=ttyS0) with neither edk2 nor QEMU
    version: solve finds them."""
    initrd = tmp_path / "initrd"
    initrd.write_bytes(bytes(1 << 20))
    path = tmp_path / "td.toml"
    path.write_text(
        'schema_version = 1\ntechnology = "tdx"\nvcpus = 2\nmemory_mib = 4096\n'
        f'[firmware]\npath = "{debian_ovmf}"\n'
        f'[boot]\nkernel = "{KERNEL}"\ninitrd = "{initrd}"\ncmdline = "console=ttyS0"\n'
    )
    return path


def configs(cli: CliRunner, *args: object) -> list[dict[str, object]]:
    r = cli("solve", *args, "--json")
    assert r.code == 0, r.err
    return [s["config"] for s in json.loads(r.out)["solutions"]]


@pytest.mark.parametrize(
    ("rtmr1", "expected"),
    [
        (UNPATCHED["rtmr1_edk2_lt_202411"],
         [{"memory_mib": None, "edk2": "202302..202408", "qemu": ">=10.2"}]),
        (UNPATCHED["rtmr1_edk2_ge_202411"],
         [{"memory_mib": None, "edk2": "202411..202505", "qemu": ">=10.2"},
          {"memory_mib": None, "edk2": "202508..", "qemu": ">=10.2"}]),
        (PATCHED["rtmr1_edk2_lt_202411"],
         [{"memory_mib": HIGH, "edk2": "202302..202408", "qemu": "<10.2"}]),
        (PATCHED["rtmr1_edk2_ge_202411"],
         [{"memory_mib": HIGH, "edk2": "202411..202505", "qemu": "<10.2"},
          {"memory_mib": HIGH, "edk2": "202508..", "qemu": "<10.2"}]),
    ],
)  # fmt: skip
def test_the_debian_kernel_rtmr1_vectors_name_their_era_and_qemu(
    cli: CliRunner, profile: Path, rtmr1: str, expected: list[dict[str, object]]
) -> None:
    assert configs(cli, profile, "--rtmr1", rtmr1) == expected


def test_rtmr2_names_the_load_options_form(cli: CliRunner, profile: Path) -> None:
    rtmr2 = VECTORS["rtmr2"]
    suffix = configs(cli, profile, "--rtmr2", rtmr2["rtmr2_suffix_form"])
    assert [c["edk2"] for c in suffix] == ["202302..202408", "202411..202505"]
    (prefix,) = configs(cli, profile, "--rtmr2", rtmr2["rtmr2_prefix_form"])
    # RTMR2 is the LoadOptions and the initrd: neither QEMU nor the memory enters it.
    assert prefix == {"memory_mib": None, "edk2": "202508..", "qemu": None}


def test_rtmr1_and_rtmr2_together_narrow_to_one(cli: CliRunner, profile: Path) -> None:
    (config,) = configs(cli, profile, "--rtmr1", PATCHED["rtmr1_edk2_ge_202411"],
                        "--rtmr2", VECTORS["rtmr2"]["rtmr2_prefix_form"])  # fmt: skip
    assert config == {"memory_mib": HIGH, "edk2": "202508..", "qemu": "<10.2"}


def test_each_printed_profile_measures_to_the_target(cli: CliRunner, profile: Path) -> None:
    target = PATCHED["rtmr1_edk2_lt_202411"]
    r = cli("solve", profile, "--rtmr1", target, "--json")
    (solution,) = json.loads(r.out)["solutions"]
    spec = parse_profile(tomllib.loads(solution["profile"])).to_spec()
    assert spec.td_config.edk2 == 202302 and spec.td_config.qemu == "10.1"
    assert spec.memory_mib == 2048  # the first size of the fold
    assert rtmrs(boot_events(plan_boot_inputs(build_td_plan(spec))))[1] == bytes.fromhex(target)
    # The text form: one header per solution naming what was found, then the profile.
    text = cli("solve", profile, "--rtmr1", target).out
    assert text.startswith(f"1 configuration(s) reproduce rtmr1 {target}\n")
    assert f"\n# memory_mib={','.join(map(str, HIGH))} edk2=202302..202408 qemu=<10.2\n" in text


def test_a_profiles_own_values_are_kept_where_they_are_of_the_kind_found(
    cli: CliRunner, profile: Path
) -> None:
    r = cli("solve", profile, "--edk2", "202405", "--qemu-version", "8.2.2",
            "--rtmr1", PATCHED["rtmr1_edk2_lt_202411"], "--json")  # fmt: skip
    (solution,) = json.loads(r.out)["solutions"]
    assert "edk2 = 202405" in solution["profile"] and 'qemu = "8.2.2"' in solution["profile"]
    assert json.loads(r.out)["fixed"] == ["edk2", "qemu"]


def test_no_configuration_says_which_register_none_gives(cli: CliRunner, profile: Path) -> None:
    wrong = "00" * 48
    r = cli("solve", profile, "--rtmr1", PATCHED["rtmr1_edk2_ge_202411"], "--rtmr2", wrong)
    assert r.code == 1
    assert "rtmr1: given by 16 of 60 configurations searched\n" in r.out
    assert ("rtmr2: given by 0 of 60 configurations searched; the fields behind its events: "
            "boot.cmdline, tdx.edk2, boot.initrd\n") in r.out  # fmt: skip
    doc = json.loads(cli("solve", profile, "--rtmr2", wrong, "--json").out)
    assert doc["solutions"] == []
    assert doc["reproduced_by"]["rtmr2"]["configurations"] == 0


def test_a_launch_digest_and_rtmrs_together(cli: CliRunner, profile: Path) -> None:
    mrtd = json.loads(cli("measure", profile, "--edk2", "202411", "--qemu-version", "10.2",
                          "--json").out)["measurement"]  # fmt: skip
    r = cli("solve", profile, "--measurement", mrtd, "--rtmr1",
            UNPATCHED["rtmr1_edk2_lt_202411"], "--json")  # fmt: skip
    doc = json.loads(r.out)
    assert doc["measurement"] == mrtd and set(doc) >= {"rtmr1", "solutions"}
    (config,) = [s["config"] for s in doc["solutions"]]
    assert config["page_order"] == "page" and config["edk2"] == "202302..202408"
    assert config["memory_mib"] is None
    # Another launch digest: no configuration, though the RTMR alone has one.
    r = cli("solve", profile, "--measurement", "11" * 48, "--rtmr1",
            UNPATCHED["rtmr1_edk2_lt_202411"])  # fmt: skip
    assert r.code == 1 and r.out.startswith("0 configuration(s)")


def dstack_profile(tmp_path: Path, debian_ovmf: Path) -> Path:
    """dstack-0.6.0's boot by its published digests, on Debian's OVMF (whose CFV is not
    dstack's: RTMR0 cannot match)."""
    doc = json.loads((DSTACK / "dstack_tdx_lite_recompute.json").read_text())["measurement_doc"]
    path = tmp_path / "dstack.toml"
    path.write_text(
        'schema_version = 1\ntechnology = "tdx"\nvcpus = 2\nmemory_mib = 2048\n'
        f'[firmware]\npath = "{debian_ovmf}"\n[tdx]\n'
        f'kernel_authenticode = "{doc["kernel_authenticode"]}"\n'
        f'initrd_sha384 = "{doc["initrd_sha384"]}"\n'
        f'load_options_sha384 = "{doc["cmdline_sha384"]}"\n'
    )
    return path


def test_a_real_tds_event_log(cli: CliRunner, tmp_path: Path, debian_ovmf: Path) -> None:
    from cvmlaunch.attest.tdx import parse_tdx_quote

    quote = parse_tdx_quote((DSTACK / "tdx-lite-quote.bin").read_bytes())
    path = dstack_profile(tmp_path, debian_ovmf)
    log = DSTACK / "tdx-lite-getquote.json"
    r = cli("solve", path, "--event-log", log, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["rtmr1"] == quote.body.rtmrs[1].hex() and doc["rtmr2"] == quote.body.rtmrs[2].hex()
    assert "rtmr0" not in doc and "tdx.acpi" in doc["not_searched"]
    # The published LoadOptions digest fixes the form: only the separator tells the era, and
    # dstack's OVMF (edk2-stable202502) puts it in RTMR1. No kernel file: no QEMU kind.
    assert [s["config"] for s in doc["solutions"]] == [
        {"memory_mib": None, "edk2": "202411..202505"},
        {"memory_mib": None, "edk2": "202508.."},
    ]
    text = cli("solve", path, "--event-log", log).out
    assert "(not searched: rtmr0, whose ACPI events the profile does not give (tdx.acpi))" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rtmr1", "00" * 47], "--rtmr1: an RTMR is 48 bytes (96 hex digits), got 47"),
        (["--rtmr0", "00" * 48], "--rtmr0: RTMR0 holds QEMU's ACPI blobs: give their SHA-384"),
        (["--rtmr2", "00" * 48, "--event-log", "x"], "--rtmr2: give RTMR values or an event "
         "log, not both"),
        ([], "--measurement: give the launch digest to reproduce, or (TDX) --rtmrN or "
         "--event-log"),
        (["--event-log", "/nonexistent/log"], "--event-log /nonexistent/log"),
    ],
)  # fmt: skip
def test_errors_name_the_flag(
    cli: CliRunner, profile: Path, args: list[str], message: str
) -> None:
    r = cli("solve", profile, *args)
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_rtmrs_belong_to_a_td(cli: CliRunner) -> None:
    snp = Path(__file__).parents[2] / "profiles" / "debian-ovmf-qemu-snp.toml"
    r = cli("solve", snp, "--rtmr1", "00" * 48)
    assert r.code == 2 and "--rtmr1: a TD's, not a sev-snp guest's" in r.err


def test_flags_alone(cli: CliRunner, profile: Path, debian_ovmf: Path) -> None:
    spec_dir = profile.parent
    (config,) = configs(cli, "--technology", "tdx", "--firmware", debian_ovmf, "--kernel",
                        KERNEL, "--initrd", spec_dir / "initrd", "--append", "console=ttyS0",
                        "--rtmr1", UNPATCHED["rtmr1_edk2_lt_202411"])  # fmt: skip
    assert config == {"memory_mib": None, "edk2": "202302..202408", "qemu": ">=10.2"}


def test_rtmr0_with_the_acpi_digests_tells_the_memory_size(cli: CliRunner, profile: Path) -> None:
    # RTMR0 measures the TD HOB, whose memory map is the guest's RAM.
    acpi = "".join(
        f'{name} = "{digit * 96}"\n'
        for name, digit in (("table_loader", "1"), ("rsdp", "2"), ("tables", "3"))
    )
    path = profile.with_name("acpi.toml")
    path.write_text(profile.read_text() + f"[tdx.acpi]\n{acpi}")  # fmt: skip
    measured = cli("measure", path, "--memory-mib", "3072", "--edk2", "202405",
                   "--qemu-version", "10.2", "--json")  # fmt: skip
    rtmr0 = json.loads(measured.out)["rtmrs"][0]
    (config,) = configs(cli, path, "--rtmr0", rtmr0)
    # RTMR0 holds no kernel: QEMU's kind is any.
    assert config == {"memory_mib": 3072, "edk2": "202302..202408", "qemu": None}
