"""`cvmlaunch audit` end to end: exit codes, one-line errors, JSON shape, expectations drawn
from a profile, and the profile's launch parameters reaching the (emulated) platform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvmlaunch.attest import audit
from cvmlaunch.attest.amd import gather
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.launch import Backend, launch
from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan
from cvmlaunch.sim import SimKernel
from tests.conftest import VECTORS, CliRunner

SNP = VECTORS / "attestation" / "snp"
TDX = VECTORS / "attestation" / "tdx"
ROOT = Path(__file__).parents[2]
NOW = "2025-09-01T00:00:00Z"
GENOA = ("--report", SNP / "oak_genoa_report_v5.bin", "--vcek", SNP / "oak_genoa_vcek.der")
DEBUG_REPORT = ("--report", SNP / "gosevguest_milan_report_v2.bin")
DEBUG_VCEK = ("--vcek", SNP / "gosevguest_milan_vcek.der")
CLAIM = ("--expect-policy", "0x30000")  # true of the Genoa report


def _doc(out: str) -> dict[str, object]:
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def _checks(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    checks = doc["checks"]
    assert isinstance(checks, list)
    return {c["name"]: c for c in checks}


def test_real_report_passes_with_json(cli: CliRunner) -> None:
    r = cli("audit", *GENOA, "--now", NOW, "--json", *CLAIM)
    assert r.code == 0, r.err
    doc = _doc(r.out)
    assert doc["verdict"] == "pass" and doc["kind"] == "sev-snp" and doc["claims_checked"] == 1
    checks = _checks(doc)
    assert all(c["ok"] for c in checks.values())
    assert {"report.signature", "vek.signature", "ark.pinned", "vek.tcb", "vek.hwid"} <= set(
        checks
    )
    report = doc["report"]
    assert isinstance(report, dict) and report["product"] == "Genoa" and report["version"] == 5


def test_text_output_lists_checks_and_verdict(cli: CliRunner) -> None:
    r = cli("audit", *GENOA, "--now", NOW, *CLAIM)
    assert r.code == 0
    assert "report.signature" in r.out and r.out.rstrip().splitlines()[-1].startswith(
        "verdict: pass"
    )


def test_debug_guest_fails_unless_allowed(cli: CliRunner) -> None:
    r = cli("audit", *DEBUG_REPORT, *DEBUG_VCEK, "--now", NOW)
    assert r.code == 1
    assert "FAIL  guest.debug" in r.out
    allowed = ("--allow-debug", "--allow-no-claims")
    assert cli("audit", *DEBUG_REPORT, *DEBUG_VCEK, "--now", NOW, *allowed).code == 0


def test_all_mismatches_reported_at_once(cli: CliRunner) -> None:
    r = cli("audit", *DEBUG_REPORT, *DEBUG_VCEK, "--now", NOW, "--json",
            "--expect-measurement", "00" * 48, "--expect-report-data", "0102030405",
            "--expect-host-data", "11" * 32, "--min-tcb", "snp=6")  # fmt: skip
    assert r.code == 1
    checks = _checks(_doc(r.out))
    failed = {n for n, c in checks.items() if not c["ok"]}
    # report_data 01 02 03 04 05 zero-padded is exactly what the report holds.
    assert failed == {"guest.debug", "guest.measurement", "guest.host_data", "tcb.reported",
                      "tcb.committed", "tcb.current", "tcb.launch"}  # fmt: skip
    assert checks["guest.report_data"]["ok"]


def test_expired_certificate_fails_with_reason(cli: CliRunner) -> None:
    r = cli("audit", "--report", SNP / "trustee_milan_vlek_report.bin",
            "--vlek", SNP / "trustee_milan_vlek.der", "--now", "2026-01-01", "--json")  # fmt: skip
    assert r.code == 1
    check = _checks(_doc(r.out))["vek.validity"]
    assert not check["ok"] and "expired" in str(check["actual"])


def test_other_product_line_certificate_fails(cli: CliRunner) -> None:
    r = cli("audit", "--report", SNP / "oak_genoa_report_v5.bin",
            "--vcek", SNP / "oak_turin_vcek.der", "--now", NOW, "--json")  # fmt: skip
    assert r.code == 1
    checks = _checks(_doc(r.out))
    assert not checks["vek.product"]["ok"] and checks["vek.product"]["actual"] == "Turin"
    assert not checks["report.signature"]["ok"]


def test_wrong_root_in_certs_fails_pinning(cli: CliRunner, tmp_path: Path) -> None:
    # The Genoa ARK handed in for a Milan report: not the pinned ARK-Milan.
    genoa_chain = (ROOT / "cvmlaunch/data/roots/amd_ask_ark_genoa.pem").read_bytes()
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "chain.pem").write_bytes(genoa_chain)
    (certs / "vcek.der").write_bytes((SNP / "virtee_milan_vcek.der").read_bytes())
    r = cli("audit", "--report", SNP / "virtee_milan_report.hex", "--certs", certs,
            "--now", NOW, "--json")  # fmt: skip
    assert r.code == 1
    checks = _checks(_doc(r.out))
    assert not checks["ark.pinned"]["ok"] and "ARK-Genoa" in str(checks["ark.pinned"]["actual"])
    assert not checks["ask.signature"]["ok"]  # SEV-Genoa is not signed by ARK-Milan
    assert checks["report.signature"]["ok"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--report", SNP / "oak_genoa_vcek.der", "--vcek", SNP / "oak_genoa_vcek.der"),
         "neither an SEV-SNP report"),
        (("--report", "/nonexistent/report.bin"), "report.bin: No such file or directory"),
        (("--vcek", SNP / "oak_genoa_report_v5.bin"), "not a DER or PEM"),
        (("--vcek", SNP / "trustee_milan_vlek.der"), "expected a SEV-VCEK"),
        (("--now", "yesterday"), "--now"),
        (("--min-tcb", "snp=x"), "--min-tcb"),
        (("--min-tcb", "fmc=1"), "fmc exists from Turin on"),
        (("--expect-rtmr", f"0={'00' * 48}"), "--expect-rtmr: applies to TDX quotes"),
        (("--expect-report-data", "00" * 65), "at most 64 bytes"),
    ],
)  # fmt: skip
def test_unusable_input_is_one_line_exit_2(
    cli: CliRunner, args: tuple[str | Path, ...], words: str, tmp_path: Path
) -> None:
    base: tuple[str | Path, ...] = GENOA
    if "--report" in args:
        base = ()
    elif "--vcek" in args:
        base = ("--report", SNP / "oak_genoa_report_v5.bin")
    now = () if "--now" in args else ("--now", NOW)
    r = cli("audit", *base, *args, *now)
    assert r.code == 2, r
    assert words in r.err and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert r.out == ""


def test_truncated_report_names_the_offset(cli: CliRunner, tmp_path: Path) -> None:
    cut = tmp_path / "cut.bin"
    cut.write_bytes((SNP / "oak_genoa_report_v5.bin").read_bytes()[:1000])
    r = cli("audit", "--report", cut, "--vcek", SNP / "oak_genoa_vcek.der")
    assert r.code == 2 and "truncated" in r.err and "0x3e8" in r.err


def test_snp_profile_expectations(cli: CliRunner, debian_ovmf: Path, tmp_path: Path) -> None:
    """The profile's measurement, policy and host data become checks; only the measurement
    differs for a report from another guest."""
    profile = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
    expected = measure(build_plan(load_profile(profile).to_spec())).digest
    r = cli("audit", *GENOA, "--now", NOW, "--profile", profile, "--json")
    assert r.code == 1
    checks = _checks(_doc(r.out))
    assert checks["guest.measurement"]["expected"] == expected.hex()
    assert not checks["guest.measurement"]["ok"]
    assert checks["guest.policy"]["ok"] and checks["guest.policy"]["expected"] == "0x30000"
    assert checks["guest.host_data"]["ok"]
    # Flags override the profile: with the report's own measurement, everything passes.
    measurement = _doc(r.out)["report"]
    assert isinstance(measurement, dict)
    r = cli("audit", *GENOA, "--now", NOW, "--profile", profile,
            "--expect-measurement", measurement["measurement"])  # fmt: skip
    assert r.code == 0, r.out


def test_profile_technology_must_match_the_evidence(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"
    r = cli("audit", *GENOA, "--profile", profile)
    assert r.code == 2 and "--profile" in r.err and "tdx profile" in r.err


def test_sev_es_profile_has_nothing_to_audit(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = ROOT / "profiles" / "debian-ovmf-qemu-sev-es.toml"
    r = cli("audit", *GENOA, "--profile", profile)
    assert r.code == 2 and "sev-es" in r.err


def test_policy_and_host_data_reach_snp_launch(debian_ovmf: Path, tmp_path: Path) -> None:
    """What the audit expects is what the launch gives the platform: the profile's POLICY
    and HOST_DATA arrive in SNP_LAUNCH_START / SNP_LAUNCH_FINISH on the emulated PSP."""
    text = (ROOT / "profiles" / "debian-ovmf-qemu-snp.toml").read_text()
    text = text.replace("policy = 0x30000", f'policy = 0x70000\nhost_data = "{"5a" * 32}"')
    assert "0x70000" in text, "the profile sets the policy"
    path = tmp_path / "guest.toml"
    path.write_text(text)  # its firmware path is absolute
    spec = load_profile(path).to_spec()
    assert (spec.snp_policy, spec.host_data) == (0x70000, b"\x5a" * 32)

    seen: list[int] = []

    class Recording(SimKernel):
        def launch_digest(self, vm_fd: int) -> bytes | None:
            seen.append(vm_fd)
            return super().launch_digest(vm_fd)

    kernel = Recording("snp")
    record = launch(build_plan(spec), Backend.SIM, kernel=kernel)
    assert kernel.snp_report_fields(seen[-1]) == (0x70000, b"\x5a" * 32)
    assert record.doc["snp_policy"] == "0x70000" and record.doc["host_data"] == "5a" * 32


def test_library_audit_needs_a_vek_for_snp() -> None:
    from cvmlaunch.errors import AttestationError

    data = (SNP / "oak_genoa_report_v5.bin").read_bytes()
    with pytest.raises(AttestationError, match="no VCEK or VLEK"):
        audit(data)
    result = audit(data, certs=gather(vcek=SNP / "oak_genoa_vcek.der"))
    # The default `now` is today, inside the VCEK's 7 years.
    assert result.passed and result.verdict == "no-claims"


TDX_NOW = "2026-06-20T00:00:00Z"  # inside every fixture quote's PCK chain validity
DCAP = ("--report", TDX / "dcapqvl_tdx_quote_v4.dat")


def test_tdx_quote_passes_and_names_its_checks(cli: CliRunner) -> None:
    r = cli("audit", *DCAP, "--now", TDX_NOW, "--json", "--allow-no-claims")
    assert r.code == 0, r.out
    doc = _doc(r.out)
    assert doc["kind"] == "tdx" and doc["verdict"] == "no-claims"
    assert {"quote.signature", "pck.root_pinned", "qe_report.binding", "td.debug"} <= set(
        _checks(doc)
    )


def test_tdx_expectations_from_flags(cli: CliRunner) -> None:
    report = _doc(cli("audit", *DCAP, "--now", TDX_NOW, "--json").out)["report"]
    assert isinstance(report, dict)
    body = report["body"]
    good = (
        *("--expect-measurement", body["mrtd"], "--expect-rtmr", f"0={body['rtmrs'][0]}"),
        *("--min-tcb", body["tee_tcb_svn"], "--expect-report-data", body["report_data"]),
    )
    assert cli("audit", *DCAP, "--now", TDX_NOW, *good).code == 0
    higher = "ff" + body["tee_tcb_svn"][2:]
    r = cli("audit", *DCAP, "--now", TDX_NOW, "--json", "--min-tcb", higher,
            "--expect-rtmr", f"3={'11' * 48}")  # fmt: skip
    assert r.code == 1
    failed = {n for n, c in _checks(_doc(r.out)).items() if not c["ok"]}
    assert failed == {"td.tee_tcb_svn", "td.rtmr3"}


def test_debug_td_fails_unless_allowed(cli: CliRunner) -> None:
    quote = ("--report", TDX / "trustee_tdx_quote_4.dat", "--now", TDX_NOW)
    r = cli("audit", *quote)
    assert r.code == 1 and "FAIL  td.debug" in r.out
    assert cli("audit", *quote, "--allow-debug", "--allow-no-claims").code == 0


def test_tdx_profile_expectations(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"
    expected = measure(build_plan(load_profile(profile).to_spec())).digest
    r = cli("audit", *DCAP, "--now", TDX_NOW, "--profile", profile, "--json")
    assert r.code == 1
    checks = _checks(_doc(r.out))
    assert checks["td.mrtd"]["expected"] == expected.hex() and not checks["td.mrtd"]["ok"]
    # The profile's TD_PARAMS identity fields are checked too.
    assert {"td.attributes", "td.mrconfigid", "td.mrowner", "td.mrownerconfig"} <= set(checks)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--vcek", SNP / "oak_genoa_vcek.der"), "--vcek: a TDX quote carries its own PCK"),
        (("--expect-policy", "0x30000"), "--expect-policy: applies to SEV-SNP reports"),
        (("--min-tcb", "snp=3"), "TEE_TCB_SVN as 32 hex digits"),
    ],
)
def test_tdx_unusable_input(cli: CliRunner, args: tuple[str | Path, ...], words: str) -> None:
    r = cli("audit", *DCAP, "--now", TDX_NOW, *args)
    assert r.code == 2 and words in r.err and len(r.err.strip().splitlines()) == 1


def test_hex_quote_is_detected(cli: CliRunner, tmp_path: Path) -> None:
    text = tmp_path / "quote.hex"
    text.write_text((TDX / "dcapqvl_tdx_quote_v4.dat").read_bytes().hex() + "\n")
    r = cli("audit", "--report", text, "--now", TDX_NOW, "--json", "--allow-no-claims")
    assert r.code == 0 and _doc(r.out)["kind"] == "tdx"


def test_snp_id_block_expectations(cli: CliRunner) -> None:
    """The trustee report was launched with an ID block: family 01.., image 02.., SVN 4."""
    base = ("--report", SNP / "trustee_milan_vcek_report.bin",
            "--vcek", SNP / "trustee_milan_vcek.der", "--now", NOW)  # fmt: skip
    doc = _doc(cli("audit", *base, "--json").out)
    report = doc["report"]
    assert isinstance(report, dict) and report["guest_svn"] == 4
    good = (
        *("--expect-family-id", report["family_id"], "--expect-image-id", report["image_id"]),
        *("--expect-id-key-digest", report["id_key_digest"], "--min-guest-svn", "4"),
        *("--expect-author-key-digest", "00" * 48),
    )
    r = cli("audit", *base, *good)
    assert r.code == 0, r.out
    assert "guest.id_key_digest" in r.out and "guest.guest_svn" in r.out
    bad = ("--expect-family-id", "00" * 16, "--min-guest-svn", "5")
    r = cli("audit", *base, *bad, "--json")
    failed = {n for n, c in _checks(_doc(r.out)).items() if not c["ok"]}
    assert r.code == 1 and failed == {"guest.family_id", "guest.guest_svn"}
    r = cli("audit", *DCAP, "--now", TDX_NOW, "--min-guest-svn", "1")
    assert r.code == 2 and "--min-guest-svn: applies to SEV-SNP reports" in r.err


# ---- regressions found by review --------------------------------------------------------


def test_a_closed_pipe_never_reports_success(tmp_path: Path) -> None:
    """A failing audit piped into a reader that goes away must not exit 0."""
    import subprocess
    import sys

    forged = bytearray((SNP / "oak_genoa_report_v5.bin").read_bytes())
    forged[0x90] ^= 1
    path = tmp_path / "forged.bin"
    path.write_bytes(bytes(forged))
    code = (
        "import sys; from cvmlaunch.cli import main; "
        f"sys.exit(main(['audit', '--report', {str(path)!r}, '--vcek', "
        f"{str(SNP / 'oak_genoa_vcek.der')!r}, '--now', {NOW!r}, '--json']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes away before anything is written
    assert proc.wait() != 0
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()
    proc.stderr.close()


def test_repeated_expectations_are_refused(cli: CliRunner) -> None:
    r = cli("audit", *GENOA, "--now", NOW, "--min-tcb", "bl=9,bl=0")
    assert r.code == 2 and "bl given twice" in r.err
    rtmr = ("--expect-rtmr", f"0={'11' * 48}", "--expect-rtmr", f"0={'22' * 48}")
    r = cli("audit", *DCAP, "--now", TDX_NOW, *rtmr)
    assert r.code == 2 and "RTMR0 given twice" in r.err
    for bad in ("bl=\u00b2", "bl=\u0663"):  # a superscript two; an Arabic-Indic three
        r = cli("audit", *GENOA, "--now", NOW, "--min-tcb", bad)
        assert r.code == 2 and "--min-tcb" in r.err
    r = cli("audit", *GENOA, "--now", NOW, "--expect-report-data", "")
    assert r.code == 2 and "empty" in r.err


def test_extreme_now_is_a_one_line_error(cli: CliRunner) -> None:
    for now in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00+01:00"):
        r = cli("audit", *GENOA, "--now", now)
        assert r.code == 2 and "--now" in r.err and "Traceback" not in r.err


def test_sev_guest_response_and_0x_hex(cli: CliRunner, tmp_path: Path) -> None:
    report = (SNP / "oak_genoa_report_v5.bin").read_bytes()
    response = tmp_path / "resp.bin"  # struct snp_report_resp: header, report, zeros
    response.write_bytes((0).to_bytes(4, "little") + (1184).to_bytes(4, "little") + bytes(24)
                         + report + bytes(4000 - 32 - 1184))  # fmt: skip
    hex_file = tmp_path / "report.hex"
    hex_file.write_text("0x" + report.hex())
    for path in (response, hex_file):
        r = cli("audit", "--report", path, "--vcek", SNP / "oak_genoa_vcek.der", "--now", NOW,
                *CLAIM)  # fmt: skip
        assert r.code == 0, r.err


def test_quote_truncated_to_report_size_is_named_a_quote(cli: CliRunner, tmp_path: Path) -> None:
    cut = tmp_path / "cut.dat"
    cut.write_bytes((TDX / "dcapqvl_tdx_quote_v4.dat").read_bytes()[:1184])
    r = cli("audit", "--report", cut, "--now", TDX_NOW)
    assert r.code == 2 and r.err.startswith("cvmlaunch: error: TDX quote")


def test_certificate_sources_are_bounded(cli: CliRunner, tmp_path: Path) -> None:
    vcek = (SNP / "oak_genoa_vcek.der").read_bytes()
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "vcek.der").write_bytes(vcek)
    (certs / "crl.der").write_bytes(b"not a certificate: skipped as a CRL")
    r = cli("audit", "--report", SNP / "oak_genoa_report_v5.bin", "--certs", certs, "--now", NOW,
            *CLAIM)  # fmt: skip
    assert r.code == 0, r.err
    for n in range(20):
        (certs / f"copy{n}.der").write_bytes(vcek)
    r = cli("audit", "--report", SNP / "oak_genoa_report_v5.bin", "--certs", certs, "--now", NOW)
    assert r.code == 2 and "more than 16" in r.err
