"""The exit-status contract: one table, every error class through every command, and the
process-level cases (closed streams, --version, -v anywhere)."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cvmlaunch
from cvmlaunch import cli, errors
from cvmlaunch.cli.common import (
    ERROR_STATUS,
    EXIT_BAD_INPUT,
    EXIT_MISMATCH,
    EXIT_STATUS,
    error_status,
)
from cvmlaunch.errors import CvmlaunchError, FieldProblem
from tests.conftest import CliRunner

# An instance of every error class the library defines, as it would raise it.
ERRORS: dict[type[CvmlaunchError], CvmlaunchError] = {
    errors.CvmlaunchError: errors.CvmlaunchError("plain"),
    errors.ProfileError: errors.ProfileError([FieldProblem("vcpus", "expected 1..4096")]),
    errors.InputError: errors.InputError("firmware.path /x", "No such file or directory"),
    errors.OutputError: errors.OutputError("--record /dev/null", "a character device"),
    errors.FirmwareError: errors.FirmwareError("no SEV metadata", offset=0x10),
    errors.KvmError: errors.KvmError("KVM_CREATE_VM", 22),
    errors.LaunchError: errors.LaunchError("the host lacks SNP"),
    errors.AttestationError: errors.AttestationError("report truncated", offset=0x20),
}
FAILED_CHECK = {errors.KvmError, errors.LaunchError}


def _defined_errors() -> set[type[CvmlaunchError]]:
    """Every CvmlaunchError subclass in the package (a new one must join ERRORS above)."""
    found: set[type[CvmlaunchError]] = {CvmlaunchError}
    todo = [CvmlaunchError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("cvmlaunch.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_error_class_has_a_status() -> None:
    for module in ("cvmlaunch.attest", "cvmlaunch.launch", "cvmlaunch.analysis.diff"):
        importlib.import_module(module)  # load the modules that might define more
    assert _defined_errors() == set(ERRORS)
    for kind, error in ERRORS.items():
        code, words = error_status(error)
        assert code == (EXIT_MISMATCH if kind in FAILED_CHECK else EXIT_BAD_INPUT), kind
        assert words == ("launch failed" if kind in FAILED_CHECK else "error")
    assert ERROR_STATUS[-1][0] is CvmlaunchError  # the catch-all comes last


@pytest.mark.parametrize("command", sorted(cli._COMMANDS))
@pytest.mark.parametrize("kind", list(ERRORS), ids=lambda k: k.__name__)
def test_each_error_class_through_each_command(
    command: str, kind: type[CvmlaunchError], cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module(f"cvmlaunch.cli.{cli_module(command)}")
    error = ERRORS[kind]

    def fail(args: object) -> int:
        raise error

    # The handler the command's parser registers: each module's `run` (or its subcommands').
    for name, member in inspect.getmembers(module, inspect.isfunction):
        if member.__module__ == module.__name__ and _is_handler(name):
            monkeypatch.setattr(module, name, fail)
    argv = {
        "diff": ["diff", "a", "b"], "solve": ["solve", "--measurement", "00" * 48],
        "profile": ["profile", "check", "x.toml"], "firmware": ["firmware", "inspect", "x"],
        "audit": ["audit", "--report", "r"],
    }.get(command, [command])  # fmt: skip
    result = cli(*argv)
    code, words = error_status(error)
    assert result.code == code, result
    assert result.err == f"cvmlaunch: {words}: {error}\n"
    assert result.out == ""


def cli_module(command: str) -> str:
    return cli._COMMANDS[command][1]


def _is_handler(name: str) -> bool:
    return name in {"run", "_check", "_schema", "_inspect"}


def test_help_lists_the_exit_statuses(cli: CliRunner) -> None:
    for argv in (["--help"], ["measure", "--help"], ["audit", "--help"]):
        result = cli(*argv)
        assert result.code == 0
        table = result.out[result.out.index("exit status:") :]
        for code, meaning in EXIT_STATUS:
            assert f"  {code:<4} {meaning}\n" in table


def test_the_readme_shows_the_same_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) +\| (.+?) \|$", readme, re.MULTILINE)
    assert [(int(code), meaning) for code, meaning in rows] == list(EXIT_STATUS)


def test_version(cli: CliRunner) -> None:
    result = cli("--version")
    assert (result.code, result.out) == (0, f"cvmlaunch {cvmlaunch.__version__}\n")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = "from cvmlaunch.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
    )


def test_verbose_anywhere_on_the_line() -> None:
    for argv, debug in (
        (["-v", "measure"], False),
        (["measure", "-v"], False),
        (["-v", "measure", "--json", "-v"], True),  # counted on both sides
        (["measure", "-vv"], True),
    ):
        proc = _run(argv)
        assert proc.returncode == 0, proc.stderr
        assert "event='measure.done'" in proc.stderr, argv
        assert ("level='debug'" in proc.stderr) is debug, argv
    quiet = _run(["measure"])
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_closed_streams() -> None:
    # stdout closed: no result can be delivered, so not success.
    proc = subprocess.run(
        [sys.executable, "-c", "from cvmlaunch.cli import main; main()", "measure"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
        preexec_fn=lambda: __import__("os").close(1),
    )  # fmt: skip
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr == "cvmlaunch: error: standard output is closed\n"
    # stderr closed: an error goes nowhere (never into the output), the status still says it.
    proc = subprocess.run(
        [sys.executable, "-c", "from cvmlaunch.cli import main; main()", "measure", "/absent"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False,
        preexec_fn=lambda: __import__("os").close(2),
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (EXIT_BAD_INPUT, "")


def test_sim_host_needs_the_emulated_kernel(cli: CliRunner, tmp_path: Path) -> None:
    for backend in ("kvm", "rehearsal"):
        result = cli("launch", "--backend", backend, "--sim-host", "snp")
        assert result.code == EXIT_BAD_INPUT
        assert result.err == (
            "cvmlaunch: error: --sim-host: plays a host for the emulated kernel; "
            f"--backend {backend} does not use it\n"
        )


@pytest.mark.parametrize(
    "argv",
    [
        ["diff", "a\nb", "c"],
        ["firmware", "inspect", "x\u2028y"],
        ["measure", "--technology", "sev", "--firmware", "f\rg"],
        ["measure", "--vcpus", "1\n2"],  # argparse's own message
        ["launch", "--backend", "sim", "--record", "/nodir\nx/out.json"],
    ],
)
def test_an_error_stays_one_line_whatever_the_argument_holds(
    argv: list[str], cli: CliRunner
) -> None:
    result = cli(*argv)
    assert result.code == EXIT_BAD_INPUT and result.out == ""
    assert result.err.count("\n") == 1 and result.err.endswith("\n"), result.err
    assert len(result.err.splitlines()) == 1
    bad = next(a for a in argv if not a.isprintable())
    assert bad.encode("unicode_escape").decode() in result.err
