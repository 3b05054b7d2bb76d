"""`measure` of a TD with `tdx.edk2`: RTMR0-3 from the boot events OVMF extends, from a
profile or flags, against the Debian kernel's published vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.profile_writer import profile_document, toml_text
from tests.conftest import DEBIAN_OVMF, TDX_VECTORS, CliRunner

KERNEL = TDX_VECTORS / "vmlinuz-6.1.0-56-amd64"
VECTORS = json.loads((TDX_VECTORS / "tdx-vectors.json").read_text())["kernel_examples"]
PATCHED = VECTORS["qemu_patched_mem2GiB_initrd1MiB"]


@pytest.fixture
def initrd(tmp_path: Path) -> Path:
    path = tmp_path / "initrd"
    path.write_bytes(bytes(1 << 20))  # the vectors' initrd: 1 MiB of zeros
    return path


def profile(tmp_path: Path, initrd: Path, *, tdx: str, boot: bool = True) -> Path:
    if not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    text = (
        'schema_version = 1\ntechnology = "tdx"\nvcpus = 2\nmemory_mib = 2048\n'
        f'[firmware]\npath = "{DEBIAN_OVMF}"\n'
    )
    if boot:
        text += f'[boot]\nkernel = "{KERNEL}"\ninitrd = "{initrd}"\ncmdline = "console=ttyS0"\n'
    path = tmp_path / "td.toml"
    path.write_text(text + f"[tdx]\n{tdx}\n")
    return path


def rtmrs(cli: CliRunner, *args: object) -> list[str | None]:
    r = cli("measure", *args, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert len(doc["rtmrs"]) == 4
    return list(doc["rtmrs"])


@pytest.mark.parametrize(
    "case",
    [
        (202411, "8.2.2", PATCHED["rtmr1_edk2_ge_202411"], "rtmr2_suffix_form"),
        (202405, "8.2", PATCHED["rtmr1_edk2_lt_202411"], "rtmr2_suffix_form"),
        (202508, "9.2.1", PATCHED["rtmr1_edk2_ge_202411"], "rtmr2_prefix_form"),
        (202411, "10.2", VECTORS["unpatched"]["rtmr1_edk2_ge_202411"], "rtmr2_suffix_form"),
        (202302, "11.0.0", VECTORS["unpatched"]["rtmr1_edk2_lt_202411"], "rtmr2_suffix_form"),
    ],
)
def test_rtmrs_from_a_profile(
    case: tuple[int, str, str, str], tmp_path: Path, initrd: Path, cli: CliRunner
) -> None:
    edk2, qemu, rtmr1, rtmr2 = case
    path = profile(tmp_path, initrd, tdx=f'edk2 = {edk2}\nqemu = "{qemu}"')
    values = rtmrs(cli, path)
    assert values[1] == rtmr1
    assert values[2] == VECTORS["rtmr2"][rtmr2]
    assert values[0] is None  # QEMU's ACPI blobs were not given: never invented
    assert values[3] == "00" * 48
    text = cli("measure", path).out
    assert f"rtmr1            {rtmr1}\n" in text
    assert "rtmr0            unknown" in text


def test_the_same_from_flags(tmp_path: Path, initrd: Path, cli: CliRunner) -> None:
    if not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    values = rtmrs(
        cli, "--technology", "tdx", "--firmware", DEBIAN_OVMF, "--memory-mib", "2048",
        "--kernel", KERNEL, "--initrd", initrd, "--append", "console=ttyS0",
        "--edk2", "202411", "--qemu-version", "8.2",
    )  # fmt: skip
    assert values[1:3] == [PATCHED["rtmr1_edk2_ge_202411"], VECTORS["rtmr2"]["rtmr2_suffix_form"]]


def test_acpi_digests_make_rtmr0_known_and_events_are_listed(
    tmp_path: Path, initrd: Path, cli: CliRunner
) -> None:
    acpi = "\n".join(f'{name} = "{n:02x}{"00" * 47}"' for n, name in
                     enumerate(("table_loader", "rsdp", "tables")))  # fmt: skip
    path = profile(tmp_path, initrd, tdx=f'edk2 = 202502\nqemu = "8.2"\n[tdx.acpi]\n{acpi}')
    r = cli("measure", path, "--json")
    doc = json.loads(r.out)
    assert doc["rtmrs"][0] is not None
    events = doc["events"]
    assert [e["rtmr"] for e in events if e["type"] == "EV_PLATFORM_CONFIG_FLAGS"] == [0, 0, 0]
    # Each register's last event leaves it at the value reported.
    for n in range(3):
        assert [e["rtmr_after"] for e in events if e["rtmr"] == n][-1] == doc["rtmrs"][n]
    trace = cli("measure", path, "--trace").out
    assert "LoadOptions 'console=ttyS0'" in trace and "kernel (Authenticode)" in trace


def test_no_edk2_no_rtmrs(tmp_path: Path, initrd: Path, cli: CliRunner) -> None:
    path = profile(tmp_path, initrd, tdx='page_order = "page"', boot=False)
    r = cli("measure", path, "--json")
    assert "rtmrs" not in json.loads(r.out) and "rtmr0" not in cli("measure", path).out


@pytest.mark.parametrize(
    ("tdx", "words"),
    [
        ('page_order = "page"', "boot: a TD's kernel, initrd and command line enter RTMR1-2 only"),
        ("edk2 = 202411", "tdx.qemu: required with a kernel"),
        ('edk2 = 202413\nqemu = "8.2"', "tdx.edk2: expected an edk2 stable release as YYYYMM"),
        ('edk2 = 201911\nqemu = "8.2"', "tdx.edk2"),
        ('edk2 = 202411\nqemu = "eight"', "tdx.qemu: expected a version like 8.2"),
        ('edk2 = "202411"\nqemu = "8.2"', "tdx.edk2"),
    ],
)
def test_unusable_rtmr_inputs(
    tdx: str, words: str, tmp_path: Path, initrd: Path, cli: CliRunner
) -> None:
    r = cli("measure", profile(tmp_path, initrd, tdx=tdx))
    assert r.code == 2 and r.out == "" and words in r.err, r.err
    assert len(r.err.splitlines()) == 1


def test_a_td_kernel_given_by_digest_is_refused(
    tmp_path: Path, initrd: Path, cli: CliRunner
) -> None:
    path = profile(tmp_path, initrd, tdx='edk2 = 202411\nqemu = "8.2"')
    text = path.read_text().replace(f'kernel = "{KERNEL}"', f'kernel_sha256 = "{"ab" * 32}"')
    path.write_text(text)
    r = cli("measure", path)
    assert r.code == 2 and "kernel_sha256" in r.err


def test_the_profile_writer_keeps_the_rtmr_fields(tmp_path: Path, initrd: Path) -> None:
    acpi = "\n".join(f'{name} = "{"cd" * 48}"' for name in ("table_loader", "rsdp", "tables"))
    path = profile(tmp_path, initrd, tdx=f'edk2 = 202502\nqemu = "8.2.2"\n[tdx.acpi]\n{acpi}')
    spec = load_profile(path).to_spec()
    written = tmp_path / "written.toml"
    written.write_text(toml_text(profile_document(spec, "round trip")))
    assert load_profile(written).to_spec() == spec


def test_audit_claims_the_rtmrs_the_profile_predicts(
    tmp_path: Path, initrd: Path, cli: CliRunner
) -> None:
    from tests.conftest import VECTORS

    quote = VECTORS / "eventlog" / "go-tdx-guest" / "cos-113-tdx-quote.dat"
    path = profile(tmp_path, initrd, tdx='edk2 = 202411\nqemu = "8.2"')
    r = cli("audit", "--report", quote, "--profile", path, "--json")
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    # RTMR1 and RTMR2 are claimed (this is another TD: they fail); RTMR0 holds ACPI digests
    # the profile does not give, and RTMR3 is not the boot's: neither is claimed.
    assert {n for n in checks if n.startswith("td.rtmr")} == {"td.rtmr1", "td.rtmr2"}
    assert checks["td.rtmr1"]["expected"] == PATCHED["rtmr1_edk2_ge_202411"]
    assert not checks["td.rtmr1"]["ok"] and r.code == 1


def test_explain_tells_the_boot_events(tmp_path: Path, initrd: Path, cli: CliRunner) -> None:
    path = profile(tmp_path, initrd, tdx='edk2 = 202411\nqemu = "8.2"')
    doc = json.loads(cli("explain", path, "--json").out)
    events = [run for run in doc["runs"] if run["title"].startswith("RTMR")]
    kernel = next(run for run in events if "kernel (Authenticode)" in run["title"])
    assert kernel["profile_fields"] == ["boot.kernel", "tdx.qemu", "memory_mib", "boot.initrd"]
    rtmr1 = [run for run in events if run["title"].startswith("RTMR1 ")]
    assert rtmr1[-1]["digest"] == PATCHED["rtmr1_edk2_ge_202411"]
    acpi = next(run for run in events if "etc/acpi/rsdp" in run["title"])
    assert acpi["inputs"] == {"extends": "not known offline"} and acpi["digest"] == ""
    text = cli("explain", path).out
    assert "RTMR2 EV_EVENT_TAG: LoadOptions 'console=ttyS0'  [event " in text
    assert "digest after: unknown (a digest before it is not known offline)" in text


DSTACK = TDX_VECTORS.parent / "eventlog" / "dstack"


def dstack_profile(tmp_path: Path, extra: str = "") -> Path:
    """dstack-0.6.0's TD by its published digests (2 GiB, OVMF before 202505), on Debian's
    OVMF.fd: the firmware differs from dstack's (MRTD, CFV), the boot does not."""
    if not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    published = json.loads((DSTACK / "dstack_tdx_lite_recompute.json").read_text())
    doc = published["measurement_doc"]
    path = tmp_path / "dstack.toml"
    path.write_text(
        'schema_version = 1\ntechnology = "tdx"\nvcpus = 2\nmemory_mib = 2048\n'
        f'[firmware]\npath = "{DEBIAN_OVMF}"\n[tdx]\nedk2 = 202502\n'
        f'kernel_authenticode = "{doc["kernel_authenticode"]}"\n'
        f'initrd_sha384 = "{doc["initrd_sha384"]}"\n'
        f'load_options_sha384 = "{doc["cmdline_sha384"]}"\n{extra}'
    )
    return path


def test_a_real_td_by_its_published_digests(tmp_path: Path, cli: CliRunner) -> None:
    from cvmlaunch.attest.tdx import parse_tdx_quote

    quote = parse_tdx_quote((DSTACK / "tdx-lite-quote.bin").read_bytes())
    path = dstack_profile(tmp_path)
    values = rtmrs(cli, path)
    assert values[1:3] == [quote.body.rtmrs[1].hex(), quote.body.rtmrs[2].hex()]
    r = cli("audit", "--report", DSTACK / "tdx-lite-quote.bin", "--event-log",
            DSTACK / "tdx-lite-getquote.json", "--profile", path, "--json")  # fmt: skip
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    for name in ("td.rtmr1", "td.rtmr2", "event_log.rtmr1.events", "event_log.rtmr2.events"):
        assert checks[name]["ok"], checks[name]
    # The boot is dstack's; the firmware is not: RTMR0 parts at its CFV, named.
    rtmr0 = checks["event_log.rtmr0.events"]
    assert not rtmr0["ok"] and rtmr0["actual"].startswith("event 1 CFV (variable store)")
    assert rtmr0["actual"].endswith("(check firmware.path)")


@pytest.mark.parametrize(
    ("change", "check", "named"),
    [
        (("memory_mib = 2048", "memory_mib = 4096"), "event_log.rtmr0.events",
         "event 0 TdxTable (TD HOB): the log has 0b8772e5b0b41b83…, the profile 5b684faf8d02a733… "
         "(check memory_mib, firmware.path)"),
        (("load_options_sha384 = \"78", "load_options_sha384 = \"87"), "event_log.rtmr2.events",
         "event 16 LoadOptions (published digest): the log has 786280842b736428…, the profile "
         "876280842b736428… (check tdx.load_options_sha384, tdx.edk2)"),
        (("edk2 = 202502", "edk2 = 202408"), "event_log.rtmr1.events",
         "(check tdx.edk2)"),
    ],
)  # fmt: skip
def test_the_real_td_with_a_wrong_field_fails_naming_it(
    change: tuple[str, str], check: str, named: str, tmp_path: Path, cli: CliRunner
) -> None:
    path = dstack_profile(tmp_path)
    path.write_text(path.read_text().replace(*change))
    r = cli("audit", "--report", DSTACK / "tdx-lite-quote.bin", "--event-log",
            DSTACK / "tdx-lite-getquote.json", "--profile", path, "--json")  # fmt: skip
    assert r.code == 1
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    assert not checks[check]["ok"] and named in checks[check]["actual"], checks[check]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('[boot]\nkernel = "/k"\n', "tdx.kernel_authenticode: given with [boot]"),
        ('[tdx.acpi]\ntable_loader = "00"\nrsdp = "00"\ntables = "00"\n', "tdx.acpi.table_loader"),
    ],
)
def test_published_digests_refused_where_they_do_not_fit(
    extra: str, words: str, tmp_path: Path, cli: CliRunner
) -> None:
    r = cli("measure", dstack_profile(tmp_path, extra))
    assert r.code == 2 and words in r.err and len(r.err.splitlines()) == 1, r.err


def test_published_digests_need_the_edk2_release(tmp_path: Path, cli: CliRunner) -> None:
    path = dstack_profile(tmp_path)
    path.write_text(path.read_text().replace("edk2 = 202502\n", ""))
    r = cli("measure", path)
    assert r.code == 2 and "tdx.kernel_authenticode: a boot given by its digests" in r.err


def test_the_inputs_document_carries_the_boot(
    tmp_path: Path, initrd: Path, cli: CliRunner
) -> None:
    path = profile(tmp_path, initrd, tdx='edk2 = 202411\nqemu = "8.2"')
    r = cli("measure", path, "--json", "--trace")
    inputs = json.loads(r.out)["inputs"]
    assert inputs["edk2"] == 202411 and inputs["qemu"] == "8.2"
    assert inputs["kernel"] == str(KERNEL) and inputs["initrd"] == str(initrd)
    assert inputs["cmdline"] == "console=ttyS0" and inputs["acpi_sha384"] is None
    assert inputs["kernel_authenticode"] == PATCHED["authenticode_sha384"]
    rtmr2 = VECTORS["rtmr2"]
    assert inputs["load_options_sha384"] == rtmr2["cmdline_digest_suffix_form_edk2_lt_202508"]
    assert inputs["initrd_sha384"] == VECTORS["initrd"]["sha384"]
    # Two saved traces of one MRTD: diff names the boot inputs that part.
    a = tmp_path / "a.json"
    a.write_text(r.out)
    b = tmp_path / "b.json"
    b.write_text(cli("measure", path, "--edk2", "202508", "--qemu-version", "10.2",
                     "--json", "--trace").out)  # fmt: skip
    text = cli("diff", a, b).out
    assert "tdx.edk2: edk2 release 202411 vs 202508" in text
    unpatched = VECTORS["unpatched"]["authenticode_sha384"]
    assert (f"tdx.kernel_authenticode = {PATCHED['authenticode_sha384'][:16]}… vs "
            f"{unpatched[:16]}…") in text  # fmt: skip
    # Without tdx.edk2 no boot is predicted: the document has no boot keys.
    plain = profile(tmp_path, initrd, tdx="", boot=False)
    assert "edk2" not in json.loads(cli("measure", plain, "--json").out)["inputs"]
