"""Start-up of the command line: what `cvmlaunch measure` and `import cvmlaunch` load.

Each probe runs in a fresh interpreter, since this process has imported everything already.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cvmlaunch.abi import tdx
from cvmlaunch.cli import _COMMANDS, _parse, build_parser, command_parser
from cvmlaunch.cli.common import terminal_columns
from cvmlaunch.guest import spec
from tests.conftest import SNP_VECTORS, CliRunner

AMDSEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"
MEASURE = ["measure", "--technology", "sev-snp", "--firmware", str(AMDSEV), "--vcpus", "4"]
MEASURE += ["--vcpu-type", "EPYC-v4"]

# Never needed to measure from flags: the profile layer, logging, attestation, launching.
NOT_ON_THE_MEASURE_PATH = (
    "pydantic",
    "structlog",
    "cryptography",
    "cffi",
    "cvmlaunch.analysis",
    "cvmlaunch.attest",
    "cvmlaunch.launch",
    "cvmlaunch.kvm",
    "cvmlaunch.sim",
    "cvmlaunch.guest.profile",
    "cvmlaunch.cli.launch",
    "cvmlaunch.cli.audit",
    "importlib.resources",  # the embedded default profile
    "shutil",  # argparse's way to the terminal width
)
# Needed by other guests, not by an SEV-SNP guest without a kernel: TDX (its IntFlag classes,
# the TDVF parser, the TD HOB), SEV/SEV-ES (LAUNCH_MEASURE's HMAC), measured direct boot.
NOT_ON_THE_SNP_PATH = (
    "cvmlaunch.abi.tdx",
    "cvmlaunch.abi.hob",
    "cvmlaunch.firmware.tdvf",
    "cvmlaunch.plan.tdx",
    "cvmlaunch.measure.tdx",
    "cvmlaunch.measure.sev",
    "hmac",
    "cvmlaunch.plan.boot",
    "cvmlaunch.abi.kernel_hashes",
)


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport sys\nprint()\nprint(' '.join(sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.splitlines()[-1].split())


def _loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_measure_from_flags_loads_only_what_it_uses() -> None:
    modules = _modules_after(f"from cvmlaunch.cli import main\nassert main({MEASURE!r}) == 0")
    assert "cvmlaunch.measure.snp" in modules  # the probe did measure
    assert [name for name in NOT_ON_THE_MEASURE_PATH if _loaded(modules, name)] == []
    assert [name for name in NOT_ON_THE_SNP_PATH if _loaded(modules, name)] == []


# Loaded by every other command line tool, each a tenth of a `measure`: typing (~3.5 ms, see
# cvmlaunch.namedtuple), contextlib with it, and collections.abc beyond the interpreter's own.
NOT_LOADED_BY_MEASURING = ("typing", "contextlib", "collections.abc")


ZERO_DIGEST = "00" * 48
# Each technology's path, with what it loads beyond SNP: the SHA-256 stream and HMAC (SEV,
# SEV-ES), the MRTD engine and, for a TD, the RTMR events and their log; and the documents.
MEASURING = {
    "sev-snp": MEASURE,
    "sev-snp json trace": [*MEASURE, "--json", "--trace"],
    "sev-es": ["measure", "--technology", "sev-es", "--vcpus", "2", "--vcpu-type", "EPYC-v4"],
    "sev": ["measure", "--technology", "sev", "--json"],
    "tdx": [
        *("measure", "--technology", "tdx", "--edk2", "202411", "--json", "--trace"),
        *("--kernel-authenticode", ZERO_DIGEST, "--initrd-sha384", ZERO_DIGEST),
    ],
}


@pytest.mark.parametrize("argv", MEASURING.values(), ids=MEASURING.keys())
def test_measuring_loads_neither_typing_nor_contextlib(argv: list[str], debian_ovmf: Path) -> None:
    # An editable install's import hook may load some of them before any code of ours runs.
    if "--firmware" not in argv:
        argv = [*argv, "--firmware", str(debian_ovmf)]
    bare = _modules_after("")
    added = _modules_after(f"from cvmlaunch.cli import main\nassert main({argv!r}) == 0") - bare
    assert "cvmlaunch.plan" in added  # the probe did measure
    assert [name for name in NOT_LOADED_BY_MEASURING if name in added] == []


def test_td_constants_the_spec_keeps_as_plain_ints_are_abi_tdx() -> None:
    # guest/spec.py restates them so that abi.tdx stays off the SEV path.
    assert spec.MR_CONFIG_SIZE == tdx.MR_CONFIG_SIZE
    assert spec.TD_ATTRIBUTES_QEMU_DEFAULT == tdx.TD_ATTRIBUTES_QEMU_DEFAULT
    assert spec.TD_ATTRIBUTES_QEMU_DEFAULT == tdx.TdAttribute.SEPT_VE_DISABLE


def test_import_cvmlaunch_loads_no_submodule() -> None:
    modules = _modules_after("import cvmlaunch")
    assert sorted(m for m in modules if m.startswith("cvmlaunch.")) == []


def test_public_names_load_on_first_use() -> None:
    # `Step` first loads the `cvmlaunch.measure` subpackage, which the import system
    # binds as `cvmlaunch.measure`: the name must still be the function.
    modules = _modules_after(
        "import cvmlaunch\n"
        "from cvmlaunch import Step, measure, Technology\n"
        "import cvmlaunch.measure.snp\n"
        "from cvmlaunch.measure import measure as engine\n"
        "assert measure is engine and cvmlaunch.measure is engine\n"
        "assert Step.__module__ == 'cvmlaunch.plan.step'\n"
        "assert all(getattr(cvmlaunch, name) is not None for name in cvmlaunch.__all__)\n"
        "assert set(cvmlaunch.__all__) <= set(dir(cvmlaunch))"
    )
    assert "cvmlaunch.guest.profile" in modules  # `Profile` and friends resolved on request


def test_main_restores_the_collector(cli: CliRunner) -> None:
    frozen = gc.get_freeze_count()
    assert cli(*MEASURE).code == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    gc.disable()
    try:
        assert cli(*MEASURE).code == 0
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("columns", [None, "120", "40", "0", "-3", "wide"])
def test_help_width_is_argparses(columns: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns


@pytest.mark.parametrize(
    "before",
    [["-h"], ["-v", "-h"], ["--verb", "-h"], ["-vh"]],
)
def test_help_before_a_command_lists_every_command(before: list[str], cli: CliRunner) -> None:
    full = cli("-h")
    r = cli(*before, "measure")
    assert (r.code, r.out) == (full.code, full.out)
    assert "firmware" in r.out and "matrix" in r.out


def test_a_command_after_verbose_flags_parses_as_alone(cli: CliRunner) -> None:
    alone = cli("measure", "-h")
    for before in (["-v"], ["-vv", "--verbose"]):
        assert cli(*before, "measure", "-h").out == alone.out
    r = cli("-v", "bogus", "measure")
    assert r.code == 2 and "invalid choice: 'bogus'" in r.err and "'matrix'" in r.err


def test_a_command_alone_parses_as_within_the_whole_parser() -> None:
    whole = build_parser()
    commands = next(a for a in whole._actions if isinstance(a, argparse._SubParsersAction))
    for name in _COMMANDS:
        within, alone = commands.choices[name], command_parser(name)
        assert alone.format_help() == within.format_help(), name
        assert alone.format_usage() == within.format_usage(), name
    argv = ["measure", "--technology", "sev-snp", "--firmware", "f.fd", "--vcpus", "2", "-v"]
    within_args = whole.parse_args(["-vv", *argv])
    alone_args = _parse(["-vv", *argv])
    assert vars(alone_args).keys() == vars(within_args).keys()
    assert {k: v for k, v in vars(alone_args).items() if k != "handler"} == {
        k: v for k, v in vars(within_args).items() if k != "handler"
    }
    assert (alone_args.verbose, alone_args.verbose_after) == (2, 1)
