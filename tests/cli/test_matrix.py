"""`matrix` on the command line: lists and ranges, output forms, exit codes and one-line
errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from cvmlaunch.guest.profile import load_profile
from tests.conftest import CliRunner
from tests.sweep_checks import profile_measurement

ROOT = Path(__file__).parents[2]
SNP_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
TDX_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml"


def test_matrix_json_rows_equal_measure(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("matrix", SNP_PROFILE, "--vcpus", "1-3,8", "--vcpu-type", "EPYC-v4,EPYC-Genoa",
            "--vmm", "qemu,gce", "--guest-features", "0x1,0x21", "--json")  # fmt: skip
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    assert len(rows) == 4 * 2 * 2 + 4 * 2  # GCE does not measure the CPU: its rows come once
    from cvmlaunch.guest.spec import CpuSpec, Vmm

    for row in rows[::5]:
        cpu = None if row["cpu"] is None else CpuSpec.from_name(row["cpu"])
        expected = profile_measurement(
            SNP_PROFILE, vcpus=row["vcpus"], cpu=cpu, vmm=Vmm(row["vmm"]),
            guest_features=int(row["guest_features"], 16),
        )  # fmt: skip
        assert row["measurement"] == expected, row


def test_matrix_csv_and_text(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("matrix", "--vcpus", "1-2", "--csv")  # the embedded default guest
    assert r.code == 0, r.err
    table = list(csv.DictReader(io.StringIO(r.out)))
    assert [row["vcpus"] for row in table] == ["1", "2"]
    default = ROOT / "cvmlaunch" / "data" / "default.toml"
    assert table[1]["measurement"] == profile_measurement(default, vcpus=2)
    r = cli("matrix", "--vcpus", "4")
    assert r.code == 0 and r.out.split()[0] == profile_measurement(default)


def test_matrix_tdx_axes(cli: CliRunner, debian_ovmf: Path) -> None:
    r = cli("matrix", TDX_PROFILE, "--tdx-page-order", "page,section", "--json")
    rows = json.loads(r.out)["rows"]
    from cvmlaunch.guest.spec import PageOrder, TdConfig

    td = load_profile(TDX_PROFILE).to_spec().td or TdConfig()
    assert [row["page_order"] for row in rows] == ["page", "section"]
    assert rows[1]["measurement"] == profile_measurement(
        TDX_PROFILE, td=td._replace(page_order=PageOrder.SECTION)
    )


def test_matrix_bad_lists_are_one_line_errors(cli: CliRunner, debian_ovmf: Path) -> None:
    for args, words in (
        (("--vcpus", "8-1"), "LOW <= HIGH"),
        (("--vcpu-type", "EPYC,Nehalem"), "unknown CPU model 'Nehalem'"),
        (("--vmm", "qemu,xen"), "expected one of"),
        (("--tdx-page-order", "page"), "tdx"),
    ):
        r = cli("matrix", SNP_PROFILE, *args)
        assert r.code == 2 and words in r.err and len(r.err.strip().splitlines()) == 1, (args, r)


def _reference(vcpus: int, signature: int, vmm: str, firmware: Path) -> str:
    """sev-snp-measure's SNP digest of Debian's OVMF with `vcpus` and no kernel."""
    from sevsnpmeasure import guest
    from sevsnpmeasure.sev_mode import SevMode
    from sevsnpmeasure.vmm_types import VMMType

    kind = VMMType[vmm if vmm != "qemu" else "QEMU"]
    no_boot = (None, None, None)
    digest = guest.calc_launch_digest(
        SevMode.SEV_SNP, vcpus, signature, str(firmware), *no_boot, 0x1, "", vmm_type=kind
    )
    assert isinstance(digest, bytes)
    return digest.hex()


def test_matrix_names_no_cpu_for_cloud_rows(cli: CliRunner, debian_ovmf: Path) -> None:
    from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature

    models = ("EPYC-Milan", "EPYC-Genoa")
    args = (SNP_PROFILE, "--vcpus", "1,3", "--vcpu-type", ",".join(models),
            "--vmm", "qemu,ec2,gce")  # fmt: skip
    r = cli("matrix", *args, "--json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    signatures = [cpu_signature(*CPU_MODELS[m]) for m in models]
    clouds = [row for row in rows if row["vmm"] != "qemu"]
    assert [(row["vmm"], row["vcpus"]) for row in clouds] == [
        ("ec2", 1), ("ec2", 3), ("gce", 1), ("gce", 3)
    ]  # fmt: skip
    for row in clouds:
        assert row["cpu"] is None and row["cpu_signature"] is None
        # The digest is every listed CPU's: none of them enters it.
        for signature in signatures:
            assert (
                _reference(row["vcpus"], signature, row["vmm"], debian_ovmf) == row["measurement"]
            )
    qemu = [row for row in rows if row["vmm"] == "qemu"]
    assert [row["cpu"] for row in qemu] == [m for m in models for _ in (1, 3)]
    assert [row["measurement"] for row in qemu] == [
        _reference(n, s, "qemu", debian_ovmf) for s in signatures for n in (1, 3)
    ]
    # Text and CSV show the same rows, with no CPU for the clouds.
    text = cli("matrix", *args).out.splitlines()
    assert len(text) == len(rows)
    for line, row in zip(text, rows, strict=True):
        assert line.startswith(row["measurement"])
        assert ("cpu=" in line) == (row["vmm"] == "qemu")
    table = list(csv.DictReader(io.StringIO(cli("matrix", *args, "--csv").out)))
    assert [t["measurement"] for t in table] == [row["measurement"] for row in rows]
    assert {(t["cpu"], t["cpu_signature"]) for t in table if t["vmm"] != "qemu"} == {("", "")}


def test_matrix_of_a_td_with_a_kernel(cli: CliRunner, debian_ovmf: Path, tmp_path: Path) -> None:
    # A TD measures its kernel file itself (RTMR1), never by a SHA-256: the sweep used to
    # put one in its place and refuse the guest.
    kernel = Path(__file__).parents[1] / "vectors" / "tdx" / "vmlinuz-6.1.0-56-amd64"
    path = tmp_path / "td.toml"
    path.write_text(
        TDX_PROFILE.read_text()
        + f'edk2 = 202411\nqemu = "10.2"\n[boot]\nkernel = "{kernel}"\ncmdline = "quiet"\n'
    )
    r = cli("matrix", path, "--tdx-page-order", "page,section", "--json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)["rows"]
    for row in rows:
        measured = cli("measure", path, "--tdx-page-order", row["page_order"], "--json")
        assert row["measurement"] == json.loads(measured.out)["measurement"]
    assert len({row["measurement"] for row in rows}) == 2
