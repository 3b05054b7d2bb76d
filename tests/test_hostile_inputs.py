"""Hostile inputs and outputs through the whole command line, one process each.

Every case gives some command a path that is the wrong kind of file (a character device, a
FIFO nobody writes, a directory, a 4 GiB sparse file, a missing file, garbage), or names an
output that must not be replaced. Each must end with exit 2 and one stderr line naming the
flag or key, no traceback, in bounded time and memory (measured on the child itself), with
nothing written or replaced.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import DEBIAN_OVMF, SNP_VECTORS, VECTORS

PROFILES = Path(__file__).resolve().parents[1] / "profiles"

AMDSEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"
SNP_PROFILE = PROFILES / "debian-ovmf-qemu-snp.toml"
GENOA_REPORT = VECTORS / "attestation" / "snp" / "oak_genoa_report_v5.bin"
MAX_SECONDS = 2.0
MAX_RSS_MIB = 100


class Hostile(NamedTuple):
    """The hostile files of one run, in a folder of their own."""

    folder: Path
    zero: Path  # a character device that never ends
    fifo: Path  # a FIFO nobody writes
    sparse: Path  # 4 GiB, all holes
    absent: Path
    garbage: Path  # 64 KiB of random bytes
    profile: Path  # a valid profile, to be protected as an output


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    folder = tmp_path_factory.mktemp("hostile")
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    sparse = folder / "sparse"
    with sparse.open("wb") as f:
        f.truncate(4 << 30)
    garbage = folder / "garbage"
    garbage.write_bytes(os.urandom(64 << 10))
    profile = folder / "guest.toml"
    profile.write_bytes(SNP_PROFILE.read_bytes())  # its firmware path is absolute
    yield Hostile(folder, Path("/dev/zero"), fifo, sparse, folder / "absent", garbage, profile)


class Run(NamedTuple):
    code: int
    out: str
    err: str
    seconds: float
    rss_mib: float


# Starts the command and reports its peak RSS. A child's ru_maxrss keeps the high-water mark
# of the process it was forked from (Linux carries it across exec), so the command must be
# forked by a small process, not by pytest.
_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.executable, [sys.executable, "-c",
    "from cvmlaunch.cli import main; main()", *sys.argv[2:]], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


def run_cli(argv: list[str]) -> Run:
    """`cvmlaunch ARGV` in a child process: its result, wall time and peak RSS (wait4)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, rss.name, *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"cvmlaunch {' '.join(argv)} still ran after 30 s")
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Run(
            code, out.read().decode(), err.read().decode(), seconds,
            int(rss.read() or 0) / 1024,  # KiB on Linux
        )  # fmt: skip


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for entry in folder.iterdir():
        st = entry.lstat()
        out[entry.name] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


def assert_refused(run: Run, names: str) -> None:
    assert run.code == 2, run
    assert "Traceback" not in run.err, run.err
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("cvmlaunch: error: ") and names in lines[0], lines[0]
    assert run.out == ""
    assert run.seconds < MAX_SECONDS, run
    assert run.rss_mib < MAX_RSS_MIB, run


SNP_FLAGS = ["--technology", "sev-snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4"]
KERNEL = ["--kernel", str(SNP_VECTORS / "fake-kernel.bin")]
SECRET = ["--sev-api", "1.55", "--sev-build", "21", "--mnonce", "00" * 16]
# Each command line that takes a path, by the role of the path, and the name its error must
# carry: the flag, the profile key, or the argument.
TAKERS: dict[str, tuple[Callable[[str], list[str]], str]] = {
    "measure-profile": (lambda p: ["measure", p], "profile"),
    "explain-profile": (lambda p: ["explain", p], "profile"),
    "launch-profile": (lambda p: ["launch", "--backend", "sim", p], "profile"),
    "check-profile": (lambda p: ["profile", "check", p], "profile"),
    "solve-profile": (lambda p: ["solve", "--measurement", "00" * 48, p], "profile"),
    "matrix-profile": (lambda p: ["matrix", p], "profile"),
    "diff-a": (lambda p: ["diff", p, str(SNP_PROFILE)], "A "),
    "diff-b": (lambda p: ["diff", str(SNP_PROFILE), p], "B "),
    "measure-firmware": (lambda p: ["measure", *SNP_FLAGS, "--firmware", p], "firmware.path"),
    "matrix-firmware": (lambda p: ["matrix", *SNP_FLAGS, "--firmware", p], "firmware.path"),
    "solve-firmware": (
        lambda p: ["solve", "--measurement", "00" * 48, *SNP_FLAGS, "--firmware", p],
        "firmware.path",
    ),
    "inspect-image": (lambda p: ["firmware", "inspect", p], "image "),
    "measure-kernel": (
        lambda p: ["measure", *SNP_FLAGS, "--firmware", str(AMDSEV), "--kernel", p],
        "boot.kernel",
    ),
    "measure-initrd": (
        lambda p: ["measure", *SNP_FLAGS, "--firmware", str(AMDSEV), *KERNEL, "--initrd", p],
        "boot.initrd",
    ),
    "measure-tik": (
        lambda p: [
            "measure",
            "--technology",
            "sev",
            "--firmware",
            str(AMDSEV),
            "--tik",
            p,
            *SECRET,
        ],
        "sev.tik",
    ),
    "audit-report": (lambda p: ["audit", "--report", p], "--report "),
    "audit-vcek": (lambda p: ["audit", "--report", str(GENOA_REPORT), "--vcek", p], "--vcek "),
    "audit-certs": (lambda p: ["audit", "--report", str(GENOA_REPORT), "--certs", p], "--certs "),
}
# The wrong kinds of path: attributes of Hostile.
KINDS = ("zero", "fifo", "folder", "sparse", "absent")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("taker", sorted(TAKERS))
def test_a_wrong_path_is_refused_at_once(taker: str, kind: str, hostile: Hostile) -> None:
    argv, name = TAKERS[taker]
    path = getattr(hostile, kind)
    before = _snapshot(hostile.folder)
    run = run_cli(argv(str(path)))
    assert_refused(run, f"{name}{path}" if name.endswith(" ") else name or str(path))
    assert _snapshot(hostile.folder) == before


def test_garbage_is_refused_by_what_it_should_be(hostile: Hostile) -> None:
    garbage = str(hostile.garbage)
    for argv, words in (
        (["measure", garbage], "profile: not valid TOML"),
        (["diff", garbage, str(SNP_PROFILE)], "profile: not valid TOML"),
        (["measure", *SNP_FLAGS, "--firmware", garbage], "the firmware has no SEV metadata"),
    ):
        assert_refused(run_cli(argv), words)


@pytest.mark.parametrize(
    "target",
    ["/dev/null", "fifo", "folder", "profile", "link-to-profile", "firmware", "dot"],
)
def test_record_never_replaces_what_is_not_an_output(target: str, hostile: Hostile) -> None:
    link = hostile.folder / "link-to-profile"
    if not link.is_symlink():
        link.symlink_to(hostile.profile)
    path = {
        "/dev/null": Path("/dev/null"),
        "fifo": hostile.fifo,
        "folder": hostile.folder,
        "profile": hostile.profile,
        "link-to-profile": link,
        "firmware": DEBIAN_OVMF,
        "dot": Path("."),
    }[target]
    if target == "firmware" and not DEBIAN_OVMF.exists():
        pytest.skip(f"{DEBIAN_OVMF} missing: apt-get install ovmf")
    before = _snapshot(hostile.folder)
    st = os.stat(path)
    run = run_cli(["launch", "--backend", "sim", str(hostile.profile), "--record", str(path)])
    assert_refused(run, "--record")
    assert _snapshot(hostile.folder) == before
    after = os.stat(path)
    assert (after.st_mode, after.st_ino, after.st_size, after.st_mtime_ns) == (
        st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns,
    )  # fmt: skip
    assert link.is_symlink()


def test_record_writes_through_a_symlink_with_the_umask(hostile: Hostile, tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    run = run_cli(["launch", "--backend", "sim", str(hostile.profile), "--record", str(link)])
    assert run.code == 0, run.err
    assert link.is_symlink() and target.read_text().startswith("{")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
