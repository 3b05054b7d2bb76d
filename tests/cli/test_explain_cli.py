"""`cvmlaunch explain --dump-vmsa DIR`: refused, with one line naming the flag and nothing
written, for a guest without VMSAs, a DIR that is not a directory, and a file in DIR that may
not be replaced. (tests/cli/test_compat.py compares the files with sev-snp-measure's.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import SNP_VECTORS, TDX_VECTORS, CliRunner

AMDSEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"
TDVF = TDX_VECTORS / "synth-tdvf-base.bin"


def _profile(folder: Path, technology: str, firmware: Path, more: str = "") -> Path:
    path = folder / f"{technology}.toml"
    body = f'schema_version = 1\ntechnology = "{technology}"\nvcpus = 2\n{more}'
    path.write_text(f'{body}\n[firmware]\npath = "{firmware}"\n')
    return path


@pytest.fixture
def snp(tmp_path: Path) -> Path:
    return _profile(tmp_path, "sev-snp", AMDSEV, 'vmm = "ec2"')


def _refused(cli: CliRunner, *args: str | Path) -> str:
    r = cli("explain", *args)
    assert r.code == 2, r
    assert r.out == "" and r.err.count("\n") == 1 and "Traceback" not in r.err
    return r.err


def test_dump_writes_one_page_per_vcpu(cli: CliRunner, snp: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    out.mkdir()
    old = os.umask(0o027)
    try:
        r = cli("explain", snp, "--dump-vmsa", out, "--json")
    finally:
        os.umask(old)
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["vmsa0.bin", "vmsa1.bin"]
    bsp, ap = (out / "vmsa0.bin").read_bytes(), (out / "vmsa1.bin").read_bytes()
    assert len(bsp) == len(ap) == 4096 and bsp != ap
    assert stat.S_IMODE((out / "vmsa0.bin").stat().st_mode) == 0o640  # the umask's


@pytest.mark.parametrize(("technology", "firmware"), [("sev", AMDSEV), ("tdx", TDVF)])
def test_a_guest_without_vmsas_is_refused(
    cli: CliRunner, tmp_path: Path, technology: str, firmware: Path
) -> None:
    profile = _profile(tmp_path, technology, firmware)
    err = _refused(cli, profile, "--dump-vmsa", tmp_path)
    reason = f"only sev-es and sev-snp guests start from a VMSA, not {technology}"
    assert f"--dump-vmsa: {reason}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [profile.name]


def test_dir_must_be_an_existing_directory(cli: CliRunner, snp: Path, tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    err = _refused(cli, snp, "--dump-vmsa", absent)
    assert f"--dump-vmsa {absent}: no such directory; expected an existing directory" in err
    for target in (snp, Path("/dev/null")):
        err = _refused(cli, snp, "--dump-vmsa", target)
        assert f"--dump-vmsa {target}: not a directory; expected an existing directory" in err
    assert not absent.exists()
    err = _refused(cli, snp, "--dump-vmsa", "a\0b")
    assert "--dump-vmsa a\\x00b: a path cannot contain a NUL character" in err  # escaped: one line


def test_nothing_written_when_one_file_may_not_be(
    cli: CliRunner, snp: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dump"
    out.mkdir()
    os.mkfifo(out / "vmsa1.bin")
    err = _refused(cli, snp, "--dump-vmsa", out)
    assert f"--dump-vmsa {out / 'vmsa1.bin'}: a FIFO" in err
    assert [p.name for p in out.iterdir()] == ["vmsa1.bin"]  # vmsa0.bin not written
    assert stat.S_ISFIFO((out / "vmsa1.bin").stat().st_mode)


def test_an_input_is_never_replaced(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    out.mkdir()
    firmware = out / "vmsa1.bin"
    firmware.write_bytes(AMDSEV.read_bytes())
    profile = _profile(tmp_path, "sev-es", firmware, 'vmm = "gce"')
    err = _refused(cli, profile, "--dump-vmsa", out)
    assert f"--dump-vmsa {firmware}: is one of this command's inputs; not replaced" in err
    assert firmware.read_bytes() == AMDSEV.read_bytes() and len(list(out.iterdir())) == 1
