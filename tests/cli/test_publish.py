"""`publish` on the command line: a 960-guest matrix in each format whose values are
`matrix`'s, the output file, and one-line errors."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from cvmlaunch.publish import FORMATS, bundle, rvps
from tests.conftest import CliRunner

ROOT = Path(__file__).parents[2]
SNP_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
TDX_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"
# 96 vCPU counts x (3 CPUs on QEMU + EC2 + GCE, which do not measure the CPU) x 2 feature
# sets: 960 guests, 960 distinct measurements.
MATRIX = ("--vcpus", "1-96", "--vcpu-type", "EPYC-Milan,EPYC-Genoa,EPYC-Turin",
          "--vmm", "qemu,ec2,gce", "--guest-features", "0x1,0x21")  # fmt: skip


@pytest.fixture
def matrix_rows(cli: CliRunner, debian_ovmf: Path) -> list[dict[str, object]]:
    r = cli("matrix", SNP_PROFILE, *MATRIX, "--json")
    assert r.code == 0, r.err
    rows: list[dict[str, object]] = json.loads(r.out)["rows"]
    assert len(rows) == 960 and len({row["measurement"] for row in rows}) == 960
    return rows


def test_the_json_document_of_a_matrix_holds_matrix_values(
    cli: CliRunner, matrix_rows: list[dict[str, object]]
) -> None:
    r = cli("publish", SNP_PROFILE, *MATRIX, "--format", "json")
    assert r.code == 0 and r.err == "", r.err
    refs = bundle.read(r.out.encode())
    assert len(refs) == len(matrix_rows)
    for ref, row in zip(refs, matrix_rows, strict=True):
        assert {**ref.config, "measurement": ref.expect["measurement"].hex()} == row
        assert ref.expect["policy"] == 0x30000
    profile_sha256 = refs[0].provenance["profile_sha256"]
    import hashlib

    assert profile_sha256 == hashlib.sha256(SNP_PROFILE.read_bytes()).hexdigest()


def test_the_rvps_message_of_a_matrix_lists_matrix_measurements(
    cli: CliRunner, matrix_rows: list[dict[str, object]]
) -> None:
    r = cli("publish", SNP_PROFILE, *MATRIX, "--format", "rvps", "--min-tcb",
            "bl=3,tee=0,snp=8,ucode=115")  # fmt: skip
    assert r.code == 0 and r.err == "", r.err
    message = json.loads(r.out)
    values = json.loads(base64.b64decode(message["payload"]))
    assert values["snp_launch_measurement"] == [row["measurement"] for row in matrix_rows]
    assert values["snp_microcode"] == list(range(115, 256))
    refs = rvps.read(r.out.encode())
    assert [ref.expect["measurement"].hex() for ref in refs] == values["snp_launch_measurement"]
    assert {tuple(ref.expect["min_tcb"].items()) for ref in refs} == {
        (("bl", 3), ("tee", 0), ("snp", 8), ("ucode", 115))
    }


def test_output_file_is_written_whole(cli: CliRunner, tmp_path: Path, debian_ovmf: Path) -> None:
    out = tmp_path / "refs.json"
    out.write_text("old")
    os.chmod(out, 0o640)
    r = cli("publish", TDX_PROFILE, "--format", "json", "--expiration", "2027-01-01T00:00:00Z",
            "-o", out)  # fmt: skip
    assert r.code == 0 and r.err == "", r.err
    assert r.out == f"1 reference(s) written to {out} as json\n"
    doc = json.loads(out.read_text())
    assert doc["expiration"] == "2027-01-01T00:00:00Z"
    assert doc["references"][0]["technology"] == "tdx"
    assert out.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    assert [p.name for p in tmp_path.iterdir()] == ["refs.json"]  # no temporary left


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--format", "rvps", "--expiration", "2027-01-01"),
         "--expiration: applies to --format json or corim, not rvps"),
        (("--format", "json", "--signing-key", "k.pem"),
         "--signing-key: applies to --format corim"),
        (("--format", "rvps", "--protojson"), "--protojson: applies to --format go-sev-guest"),
        (("--expiration", "soon"), "--expiration: expected an ISO 8601 time"),
        (("--min-tcb", "bl=300"), "--min-tcb: expected COMPONENT=0..255"),
        ((str(TDX_PROFILE), "--min-tcb", "bl=1"), "--min-tcb: SNP TCB component minimums"),
        (("--vcpus", "1-2", "-o", "/dev/null"), "--output /dev/null"),
        ((str(SNP_PROFILE), "-o", str(SNP_PROFILE)), "is one of this command's inputs"),
        (("--tik", "x"), "--tik: publish works on launch digests"),
        ((str(SNP_PROFILE), "--format", "go-tdx-guest"),
         "--format: go-tdx-guest checks tdx guests; this guest is sev-snp"),
        ((str(TDX_PROFILE), "--format", "go-sev-guest"),
         "--format: go-sev-guest checks sev-snp guests; this guest is tdx"),
    ],
)  # fmt: skip
def test_errors_are_one_line_exit_2(
    args: tuple[str, ...], words: str, cli: CliRunner, debian_ovmf: Path
) -> None:
    r = cli("publish", *args)
    assert r.code == 2 and r.out == "", r
    assert words in r.err and len(r.err.splitlines()) == 1, r.err


def test_an_unknown_format_is_refused_by_the_parser(cli: CliRunner) -> None:
    r = cli("publish", "--format", "yaml")
    assert r.code == 2 and "--format" in r.err and len(r.err.splitlines()) == 1


def test_a_format_this_build_lacks_is_one_line(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, debian_ovmf: Path
) -> None:
    monkeypatch.setitem(FORMATS, "corim", "cvmlaunch.publish.not_written_yet")
    r = cli("publish", "--format", "corim")
    assert r.code == 2 and len(r.err.splitlines()) == 1, r.err
    assert "--format: corim is not available in this cvmlaunch" in r.err


def test_the_policy_values_come_from_the_profile(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    single = tmp_path / "single-socket.toml"
    single.write_text(SNP_PROFILE.read_text().replace("policy = 0x30000", "policy = 0x130000"))
    r = cli("publish", single, "--format", "rvps")
    assert r.code == 0, r.err
    values = json.loads(base64.b64decode(json.loads(r.out)["payload"]))
    assert values["snp_single_socket"] is True and values["snp_smt_allowed"] is True


def test_a_td_with_its_boot_predicted_publishes_in_every_format(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    # references() carries a TD's boot events with its RTMRs: Trustee's policy checks the
    # kernel's and its parameters' events by themselves; the other formats claim the RTMRs,
    # which bind those events.
    from cvmlaunch.publish import codec

    kernel = ROOT / "tests" / "vectors" / "tdx" / "vmlinuz-6.1.0-56-amd64"
    profile = tmp_path / "td.toml"
    profile.write_text(TDX_PROFILE.read_text() + 'edk2 = 202502\nqemu = "8.2"\n'
                       f'[boot]\nkernel = "{kernel}"\ncmdline = "console=ttyS0"\n')  # fmt: skip
    measured = json.loads(cli("measure", profile, "--json").out)
    for name in ("json", "rvps", "go-tdx-guest", "corim"):
        out = tmp_path / f"refs.{name}"
        r = cli("publish", profile, "--format", name, "-o", out)
        assert r.code == 0, (name, r.err)
        (reference,) = codec(name).read(out.read_bytes())
        assert reference.expect["measurement"].hex() == measured["measurement"], name
        for index in (1, 2):
            assert reference.expect["rtmrs"][index].hex() == measured["rtmrs"][index], name
    payload = json.loads(
        base64.b64decode(json.loads((tmp_path / "refs.rvps").read_text())["payload"])
    )
    assert payload["tdvfkernel"] and payload["tdvfkernelparams"]


def test_each_td_of_a_matrix_carries_its_own_boot_rtmrs(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    # One kernel hash serves the matrix; the RTMRs still differ by memory (RTMR0's TD HOB,
    # RTMR1's header QEMU 8.2 writes) and must be each guest's own.
    kernel = ROOT / "tests" / "vectors" / "tdx" / "vmlinuz-6.1.0-56-amd64"
    initrd = tmp_path / "initrd"
    initrd.write_bytes(bytes(4096))
    acpi = "".join(f'{k} = "{d * 96}"\n' for k, d in (("table_loader", "1"), ("rsdp", "2"),
                                                      ("tables", "3")))  # fmt: skip
    profile = tmp_path / "td.toml"
    boot = f'[boot]\nkernel = "{kernel}"\ninitrd = "{initrd}"\ncmdline = "quiet"\n'
    td = f'edk2 = 202502\nqemu = "8.2"\n[tdx.acpi]\n{acpi}'
    profile.write_text(TDX_PROFILE.read_text() + td + boot)
    out = tmp_path / "refs.json"
    r = cli("publish", profile, "--memory-mib", "1024,2048", "--tdx-page-order", "page,section",
            "--format", "json", "-o", out)  # fmt: skip
    assert r.code == 0, r.err
    references = bundle.read(out.read_bytes())
    assert len(references) == 4
    seen = set()
    for reference in references:
        config = reference.config
        point = (
            "--memory-mib",
            str(config["memory_mib"]),
            "--tdx-page-order",
            config["page_order"],
        )
        measured = json.loads(cli("measure", profile, *point, "--json").out)
        rtmrs = reference.expect["rtmrs"]
        assert [rtmrs[i].hex() for i in (0, 1, 2)] == measured["rtmrs"][:3]
        seen.add(rtmrs[0])
    assert len(seen) == 2  # the memory sizes' TD HOBs
