"""Property-based fuzzing of the command line: whatever argument vector arrives, only our
errors escape, and they keep the exit-code contract.

Every command (measure, launch --backend sim, audit, explain, diff, solve, matrix, profile
schema/check, firmware inspect) gets argument vectors built from its own parser's flags (read
from `build_parser()`, so a flag added later is fuzzed too) with hostile values: empty,
huge, negative and malformed numbers, hex of every length, unicode, very long strings, comma
lists and ranges; paths to /dev/zero, /dev/null, directories, nonexistent files, a FIFO,
symlinks, an empty file, random bytes, over-long names, the real profiles, firmware, kernel,
reports and certificates, and near-valid profiles written by the profile fuzzer. Options come
in any order, sometimes repeated, abbreviated, unknown, or with `-v`. (A NUL cannot be in an
argument vector: the OS refuses it.)

Each vector runs in-process through `cvmlaunch.cli.main(argv)`:

* the exit code is 0, 1 or 2 (argparse's SystemExit only with 0 or 2; nothing else raised);
* stderr holds no traceback, and on exit 2 exactly one line (besides log events with -v),
  starting with `cvmlaunch` (our `cvmlaunch: error: ...`, or the parser's
  `cvmlaunch COMMAND: error: ...`: `common.Parser` prints no usage lines);
* nothing hangs (a timer fails the example after HANG_SECONDS);
* a FIFO, a directory and a symlink are left as they were, and so is every file the vector
  names as an input.

Outputs (`--record`, and any Path flag not known to be an input) only ever point into the
example's own temporary folder: the fuzzer runs as whatever user runs the tests.

Runs derandomized, so CI sees the same examples every time. CVMLAUNCH_FUZZ_SCALE=N runs N
times as many examples (a longer local hunt).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import json
import os
import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st

from cvmlaunch.abi.cpu import CPU_MODELS
from cvmlaunch.cli import build_parser, main
from tests.guest.test_profile_fuzz import near_valid_documents, toml_text

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).parents[2]
VECTORS = ROOT / "tests" / "vectors"
SCALE = max(1, int(os.environ.get("CVMLAUNCH_FUZZ_SCALE", "1")))
FUZZ = settings(
    deadline=None,
    derandomize=SCALE == 1,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A trivially bad input is refused in well under a second; a valid one measures in well
# under one too. This is "hangs", not "slow on a loaded machine".
HANG_SECONDS = 30


# ---- the commands and their flags, from the parser ---------------------------------------------


class Option(NamedTuple):
    flag: str | None  # None: a positional
    dest: str
    takes_value: bool
    required: bool
    kind: str  # what values to generate (see _value and _fitting)
    choices: tuple[str, ...]  # its choices, or the words its metavar lists (qemu|ec2|gce)
    size: int | None  # the byte count a HEX value must have, if fixed


def _size(action: argparse.Action) -> int | None:
    """The size `argtypes.hex_bytes(size)` closed over for this flag's reader, if it did."""
    cells = getattr(action.type, "__closure__", None) or ()
    sizes = [c.cell_contents for c in cells if type(c.cell_contents) is int]
    return sizes[0] if sizes else None


def _kind(action: argparse.Action) -> str:
    """What kind of value `action` reads, from its type, metavar and name."""
    type_name = getattr(action.type, "__name__", "")
    metavar = str(action.metavar or "")
    if action.type is Path:
        return "input" if action.dest in INPUTS else "output"
    if action.choices is not None:
        return "choice"
    if "|" in metavar and metavar != "INT|NAMES":
        return "list-words" if type_name == "parse_list" else "words"
    by_metavar = {
        "HEX": "hex",
        "INT|NAMES": "td-attributes",
        "MAJOR.MINOR": "api",
        "N=HEX": "rtmr",
        "CMDLINE": "text",
        "TCB": "tcb",
        "ISO8601": "time",
    }
    if metavar in by_metavar:
        return by_metavar[metavar]
    if type_name == "range_list":
        return "ranges"
    if metavar == "NAME":
        return "list-cpu" if type_name == "parse_list" else "cpu"
    if type_name == "parse_list":
        return "list-int"
    if type_name == "integer":
        return "int"
    return "text"


# The Path flags (by dest) that name files to read. Any other Path flag is taken for an output
# and only ever given a path inside the example's folder.
INPUTS = frozenset(
    {"profile", "firmware", "kernel", "initrd", "tik", "report", "vcek", "vlek", "certs"}
    | {"a", "b", "image", "event_log"}
)
# Backends that would create real VMs through /dev/kvm: not fuzzed here.
REAL_BACKENDS = frozenset({"auto", "kvm", "rehearsal"})


def _commands() -> dict[tuple[str, ...], list[Option]]:
    found: dict[tuple[str, ...], list[Option]] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and path:
            for name, sub in subs[0].choices.items():
                walk(sub, (*path, name))
            return
        if subs:
            for name, sub in subs[0].choices.items():
                walk(sub, (name,))
            return
        options = []
        for action in parser._actions:
            flag = max(action.option_strings, key=len) if action.option_strings else None
            required = action.required or (flag is None and action.nargs is None)
            choices = tuple(str(c) for c in action.choices or ())
            if not choices and "|" in str(action.metavar or ""):
                choices = tuple(str(action.metavar).split("|"))
            kind = _kind(action)
            takes_value = action.nargs != 0
            options.append(
                Option(flag, action.dest, takes_value, required, kind, choices, _size(action))
            )
        found[path] = options

    walk(build_parser(), ())
    return found


COMMANDS = _commands()


# ---- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """A path in the example's own folder, made there before the run."""

    name: str


@dataclass(frozen=True)
class Document:
    """A near-valid profile, written into the example's folder before the run."""

    text: str


@dataclass(frozen=True)
class Input:
    """A value given where a file is read: whatever it names must be left as it was."""

    arg: str | Place | Document


Arg = str | Place | Document | Input

# What every example's folder holds (see `make_places`).
PLACES = (
    "fifo",
    "dir",
    "empty",
    "random.bin",
    "profile-copy.toml",
    "link-to-profile.toml",
    "dangling-link",
    "missing",
    "missing-dir/x",
    "n" * 300,  # longer than NAME_MAX
    "line\nbreak",
    "sp ace é😀",
    "-",
    "fresh.json",
)
SHIPPED_PROFILES = sorted(str(p) for p in (ROOT / "profiles").glob("*.toml"))
REAL_FILES = [
    *SHIPPED_PROFILES,
    str(ROOT / "cvmlaunch" / "data" / "default.toml"),
    "/usr/share/ovmf/OVMF.fd",
    *(str(p) for p in sorted((VECTORS / "snp").glob("*.bin"))),
    str(VECTORS / "snp" / "test-initrd.cpio"),
    *(str(p) for p in sorted((VECTORS / "attestation" / "snp").iterdir())),
    *(str(p) for p in sorted((VECTORS / "attestation" / "tdx").iterdir())),
    str(VECTORS / "attestation" / "snp"),  # a --certs directory
]
SYSTEM_PATHS = ["/dev/zero", "/dev/null", "/dev/urandom", "/", "/proc/self/status", "", ".", "~"]

# Every line break str.splitlines knows: an argument holding one must still give a one-line
# error (the CLI escapes what would break the line).
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


input_paths: st.SearchStrategy[Arg] = st.one_of(
    st.sampled_from(REAL_FILES),
    st.sampled_from(SHIPPED_PROFILES),
    st.sampled_from(SYSTEM_PATHS),
    st.sampled_from(PLACES).map(Place),
    near_valid_documents().map(lambda doc: Document(toml_text(doc))),
).map(Input)
output_paths: st.SearchStrategy[Arg] = st.sampled_from(PLACES).map(Place)

# Text an argument vector can carry: no NUL (execve refuses it), no lone surrogates.
_ARG_CHARS = st.characters(codec="utf-8", exclude_characters="\0")
texts = st.one_of(
    st.text(_ARG_CHARS, max_size=30),
    st.sampled_from(["", " ", "-", "--", "-1", "é", "😀", "\t", "x" * 5000, "\u202e", "--json"]),
    st.sampled_from(LINE_BREAKS).map(lambda c: f"a{c}b"),
)
_INTS = "0 1 -1 2 4 15 64 255 256 4095 4096 4097 0x10 -0x1 1_000 0b11 0o7 0x +5 1e3 0xFFFFFFFF"
ints = st.one_of(
    st.sampled_from(_INTS.split()),
    st.sampled_from(["", " 1", "\u0663", "1" * 5000, "99999999999", str(2**64 - 1), str(2**64)]),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 2**64).map(hex),
)
_HEX_SIZES = [0, 1, 16, 31, 32, 33, 47, 48, 49, 64, 96]
hexes = st.one_of(
    st.sampled_from(_HEX_SIZES).map(lambda n: "ab" * n),
    st.sampled_from(_HEX_SIZES).map(lambda n: "0x" + "00" * n),
    st.binary(max_size=100).map(bytes.hex),
    st.sampled_from(["0", "abc", "zz" * 48, "AB" * 48, "0X" + "00" * 48, " " + "00" * 48]),
    texts,
)
_TD_NAMES = ["SEPT_VE_DISABLE", "PKS", "DEBUG", "PERFMON", "MIGRATABLE", "NOPE", "", " pks"]
CPU_NAMES = [*CPU_MODELS, "epyc-v4", "EPYC-v9", "", "host"]


def _words(option: Option) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(option.choices or ("",)), texts)


def _comma_list(item: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # At most three values a list: matrix multiplies its lists.
    return st.lists(item, max_size=3).map(",".join)


# A range spans at most 64 values (and one list item at most 4096, argtypes' own cap).
_ranges_item = st.one_of(
    ints,
    st.tuples(st.integers(-2, 4100), st.integers(0, 64)).map(lambda t: f"{t[0]}-{t[0] + t[1]}"),
    st.sampled_from(["1-4096", "0-4095", "4-1", "1-", "-3", "1--2", "a-b"]),
)


def _value(option: Option) -> st.SearchStrategy[Arg]:
    """Any value for `option`, hostile or not."""
    kind = option.kind
    if kind == "input":
        return input_paths
    if kind == "output":
        return output_paths
    if kind == "choice":
        choices = [c for c in option.choices if option.dest != "backend" or c not in REAL_BACKENDS]
        return st.one_of(st.sampled_from(choices), texts.filter(lambda t: t not in REAL_BACKENDS))
    strategies: dict[str, st.SearchStrategy[str]] = {
        "int": ints,
        "hex": hexes,
        "words": _words(option),
        "list-words": _comma_list(st.one_of(_words(option), texts)),
        "cpu": st.one_of(st.sampled_from(CPU_NAMES), texts),
        "list-cpu": _comma_list(st.one_of(st.sampled_from(CPU_NAMES), texts)),
        "list-int": _comma_list(ints),
        "ranges": _comma_list(_ranges_item),
        "td-attributes": st.one_of(ints, _comma_list(st.sampled_from(_TD_NAMES))),
        "api": st.one_of(
            st.sampled_from(["1.55", "0.24", "1.", ".1", "256.0", "99999999999.1"]), texts
        ),
        "rtmr": st.one_of(st.tuples(ints, hexes).map("=".join), texts),
        "tcb": st.one_of(st.sampled_from(["", "0", "1:2:3:4", "bl=1,tee=0", "x" * 300]), texts),
        "time": st.one_of(st.sampled_from(["2025-09-01T00:00:00Z", "2025-13-01", "0"]), texts),
        "text": texts,
    }
    return strategies[kind]


# Inputs that fit their flag (by dest), so that a deep run gets past the reading.
_ATTESTATION = VECTORS / "attestation"
_FITTING_INPUTS: dict[str, list[str]] = {
    "profile": SHIPPED_PROFILES,
    "a": SHIPPED_PROFILES,
    "b": SHIPPED_PROFILES,
    "firmware": ["/usr/share/ovmf/OVMF.fd", *(p for p in REAL_FILES if p.endswith("suffix.bin"))],
    "image": ["/usr/share/ovmf/OVMF.fd", *(p for p in REAL_FILES if p.endswith("suffix.bin"))],
    "kernel": [str(VECTORS / "snp" / "fake-kernel.bin")],
    "initrd": [str(VECTORS / "snp" / "test-initrd.cpio")],
    "report": [
        *(str(p) for p in sorted((_ATTESTATION / "snp").glob("*report*"))),
        *(str(p) for p in sorted((_ATTESTATION / "tdx").glob("*.dat"))),
    ],
    "vcek": [str(p) for p in sorted((_ATTESTATION / "snp").glob("*vcek.der"))],
    "vlek": [str(p) for p in sorted((_ATTESTATION / "snp").glob("*vlek.der"))],
    "certs": [
        str(_ATTESTATION / "snp"),
        *(str(p) for p in sorted((_ATTESTATION / "snp").glob("*.der"))),
    ],
}


def _fitting(option: Option) -> st.SearchStrategy[Arg]:
    """A value `option` reads without complaint (mostly: a flag added later gets any value),
    for runs that reach the checks behind the parser."""
    kind = option.kind
    if kind == "input":
        fitting = _FITTING_INPUTS.get(option.dest)
        if option.dest == "tik":
            return st.just(Input(Place("tik16.bin")))
        return st.sampled_from(fitting).map(Input) if fitting else input_paths
    if kind == "choice":
        choices = [c for c in option.choices if option.dest != "backend" or c not in REAL_BACKENDS]
        return st.sampled_from(choices)
    number = st.one_of(st.integers(0, 64).map(str), st.integers(0, 2**64 - 1).map(hex))
    word = st.sampled_from(option.choices or ("",))
    strategies: dict[str, st.SearchStrategy[str]] = {
        "int": number,
        "hex": (st.just(option.size) if option.size else st.sampled_from([16, 32, 48])).flatmap(
            lambda n: st.binary(min_size=n, max_size=n).map(bytes.hex)
        ),
        "words": word,
        "list-words": _comma_list(word),
        "cpu": st.sampled_from(sorted(CPU_MODELS)),
        "list-cpu": _comma_list(st.sampled_from(sorted(CPU_MODELS))),
        "list-int": _comma_list(number),
        "ranges": st.sampled_from(["1", "1-4", "2,4,8", "1-64"]),
        "td-attributes": st.sampled_from(["SEPT_VE_DISABLE", "SEPT_VE_DISABLE,PKS", "0x10000000"]),
        "api": st.sampled_from(["1.55", "0.24"]),
        "rtmr": st.tuples(st.integers(0, 3), st.binary(min_size=48, max_size=48)).map(
            lambda t: f"{t[0]}={t[1].hex()}"
        ),
        "tcb": st.sampled_from(["bl=3,tee=0,snp=8,ucode=115", "00" * 16, "fmc=1"]),
        "time": st.sampled_from(["2025-09-01T00:00:00Z", "2025-09-01T00:00Z", "2030-01-01"]),
    }
    return strategies.get(kind, _value(option))


@functools.cache
def shipped_measurements() -> dict[str, dict[str, Any]]:
    """`measure --json` of each shipped profile (what solve and audit can be asked about)."""
    found = {}
    for path in SHIPPED_PROFILES:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(["measure", path, "--json"])
        if code == 0:
            found[path] = json.loads(out.getvalue())
    return found


_EVIDENCE: dict[str, dict[str, Any]] = json.loads(
    (_ATTESTATION / "expected_fields.json").read_text()
)["snp"]
_NOW = "2025-09-01T00:00:00Z"


@st.composite
def matching_inputs(draw: st.DrawFn, command: tuple[str, ...]) -> dict[str, list[Arg]]:
    """Inputs that belong together, by dest: a profile and its own measurement for solve;
    a report, its VCEK or VLEK, a time they are valid at and some of the report's own
    values as claims for audit. Deep runs start from these half the time."""
    if command == ("solve",):
        path, doc = draw(st.sampled_from(sorted(shipped_measurements().items())))
        return {"profile": [Input(path)], "measurement": ["--measurement", doc["measurement"]]}
    if command == ("audit",):
        name = draw(st.sampled_from(sorted(_EVIDENCE)))
        fields = _EVIDENCE[name]
        vek = str(_ATTESTATION / "snp" / fields["vek_file"])
        kind = "vlek" if "vlek" in fields["vek_file"] else "vcek"
        chosen: dict[str, list[Arg]] = {
            "report": ["--report", Input(str(_ATTESTATION / "snp" / name))],
            kind: [f"--{kind}", Input(vek)],
            "now": ["--now", _NOW if "2025-12" not in fields["vek_not_after"] else "2025-06-01"],
        }
        claims = {
            "expect_measurement": fields["measurement"],
            "expect_policy": fields["policy"],
            "expect_vmpl": str(fields["vmpl"]),
            "expect_host_data": fields["host_data"],
            "expect_report_data": fields["report_data"],
        }
        for dest in draw(st.lists(st.sampled_from(sorted(claims)), unique=True)):
            chosen[dest] = ["--" + dest.replace("_", "-"), claims[dest]]
        return chosen
    return {}


@st.composite
def argv_for(draw: st.DrawFn, command: tuple[str, ...], deep: bool = False) -> list[Arg]:
    """An argument vector for `command`: its positionals and some of its options, in any
    order. Shallow: hostile values, abbreviations, noise. Deep: mostly values that fit, so
    that the run reaches the checks behind the parser, with now and then a hostile one."""
    options = COMMANDS[command]

    def value(option: Option) -> Arg:
        fits = deep and draw(st.integers(0, 9)) > 0
        return draw(_fitting(option) if fits else _value(option))

    given = draw(matching_inputs(command)) if deep and draw(st.booleans()) else {}
    chunks: list[list[Arg]] = list(given.values())
    for option in options:
        if option.flag is None and option.dest not in given:
            needed = option.required and (deep or draw(st.integers(0, 9)) > 0)
            present = needed or draw(st.integers(0, 9)) < (8 if deep else 5)
            if present:
                chunks.append([value(option)])
    flagged = [o for o in options if o.flag is not None and o.dest not in given]
    for option in draw(st.lists(st.sampled_from(flagged), max_size=7)):
        if option.flag in ("-h", "--help") and (deep or draw(st.integers(0, 9))):
            continue  # help, now and then
        assert option.flag is not None
        flag: str = option.flag
        if not deep and draw(st.integers(0, 19)) == 0:
            flag = flag[: draw(st.integers(3, len(flag)))]  # an abbreviation, or not
        chunks.append([flag, value(option)] if option.takes_value else [flag])
    if command == ("launch",) and not any(c[0] == "--backend" for c in chunks):
        chunks.append(["--backend", "sim"])
    for option in options:
        needed = option.required and option.flag is not None and option.dest not in given
        if needed and (deep or draw(st.integers(0, 9))):
            assert option.flag is not None
            chunks.append([option.flag, value(option)])
    if not deep:
        noise: st.SearchStrategy[list[Arg]] = st.sampled_from(
            [["--nope"], ["-v"], ["--"], ["-x"], ["--json"], ["stray"]]
        )
        chunks += draw(st.lists(noise, max_size=1))
    order = draw(st.permutations(range(len(chunks))))
    front = draw(st.sampled_from([[], [], [], ["-v"], ["-vv"], ["--verbose"]]))
    return [*front, *command, *(arg for i in order for arg in chunks[i])]


# ---- running one vector -----------------------------------------------------------------------


class Hung(BaseException):
    """Raised by the timer: an example ran past HANG_SECONDS (BaseException: no handler in
    the code under test may swallow it)."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hung


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def make_places(folder: Path) -> None:
    """The example's folder: each of PLACES (those that exist) made afresh."""
    folder.mkdir(parents=True)
    os.mkfifo(folder / "fifo")
    (folder / "dir").mkdir()
    (folder / "empty").write_bytes(b"")
    (folder / "tik16.bin").write_bytes(bytes(range(16)))
    (folder / "random.bin").write_bytes(bytes(range(256)) * 9)
    (folder / "profile-copy.toml").write_bytes(Path(SHIPPED_PROFILES[0]).read_bytes())
    (folder / "link-to-profile.toml").symlink_to(folder / "profile-copy.toml")
    (folder / "dangling-link").symlink_to(folder / "missing")


def _kind_of(path: Path) -> str:
    try:
        mode = path.lstat().st_mode
    except OSError:
        return "absent"
    return (
        "fifo"
        if stat.S_ISFIFO(mode)
        else "dir"
        if stat.S_ISDIR(mode)
        else ("link" if stat.S_ISLNK(mode) else "file")
    )


_examples = itertools.count()


class Outcome(NamedTuple):
    code: int
    out: str
    err: str


def run(base: Path, argv: list[Arg]) -> Outcome:
    """Run `argv` in a fresh folder; check the properties every run must have."""
    folder = base / f"ex{next(_examples)}"
    make_places(folder)
    docs = itertools.count()
    inputs: dict[str, bytes] = {}

    def resolve(arg: Arg) -> str:
        if isinstance(arg, Input):
            given = resolve(arg.arg)
            if given.startswith((str(folder), str(ROOT))) and _is_regular(given):
                inputs[given] = Path(given).read_bytes()
            return given
        if isinstance(arg, Place):
            return str(folder / arg.name)
        if isinstance(arg, Document):
            path = folder / f"doc{next(docs)}.toml"
            path.write_text(arg.text, encoding="utf-8")
            return str(path)
        return arg

    args = [resolve(a) for a in argv]
    if currently_in_test_context():
        note(f"argv: {args!r}")
    kinds = {name: _kind_of(folder / name) for name in ("fifo", "dir", "link-to-profile.toml")}
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            time_limit(HANG_SECONDS),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = main(args)
            except SystemExit as e:  # argparse: --help, or a usage error
                assert e.code in (0, 2), (e.code, args)
                code = int(e.code or 0)
    except Hung:
        raise AssertionError(f"no answer within {HANG_SECONDS} s: {args!r}") from None
    result = Outcome(code, out.getvalue(), err.getvalue())
    check(result, args)
    for name, kind in kinds.items():
        assert _kind_of(folder / name) == kind, (name, args)
    for path, data in inputs.items():
        assert Path(path).read_bytes() == data, (path, "an input was changed", args)
    return result


def _is_regular(arg: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(arg).st_mode) and os.stat(arg).st_size < 1 << 22
    except (OSError, ValueError):
        return False


def check(result: Outcome, args: list[str]) -> None:
    """The exit-code contract and the one-line error."""
    code, out, err = result
    if currently_in_test_context():
        event(f"exit {code}")
    assert code in (0, 1, 2), (code, err, args)
    assert "Traceback" not in err, (err, args)
    # With -v, log events (key=value lines) come before the error.
    lines = [line for line in err.splitlines() if not line.startswith("timestamp=")]
    if code == 2:
        assert len(lines) == 1, (err, args)
        assert lines[0].startswith("cvmlaunch"), (err, args)
        assert not out, ("output before an input error", out[:300], args)
        return
    assert out.strip(), ("exit {code} with nothing on stdout", err, args)
    if _wants_json(args):
        assert isinstance(json.loads(out), dict), (out[:300], args)


def _wants_json(args: list[str]) -> bool:
    """Whether `args` asks for --json (as the parser reads them: not a value, not after --)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return bool(getattr(build_parser().parse_args(args), "json", False))
        except SystemExit:  # --help
            return False


# ---- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("argv")


# Examples per command and mode; the whole module runs in about 30 s.
BUDGET = {
    ("measure",): 200,
    ("launch",): 120,
    ("audit",): 150,
    ("explain",): 80,
    ("diff",): 100,
    ("solve",): 120,
    ("matrix",): 150,
    ("profile", "schema"): 20,
    ("profile", "check"): 80,
    ("firmware", "inspect"): 80,
}


@pytest.mark.parametrize("deep", [False, True], ids=["shallow", "deep"])
@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_only_our_errors_escape(base: Path, command: tuple[str, ...], deep: bool) -> None:
    @settings(FUZZ, max_examples=BUDGET.get(command, 80) * SCALE)
    @given(argv=argv_for(command, deep))
    def fuzz(argv: list[Arg]) -> None:
        run(base, argv)

    fuzz()


def test_every_command_is_fuzzed() -> None:
    """The commands come from the parser; a new one gets the default budget."""
    assert {c[0] for c in COMMANDS} >= {
        "measure", "launch", "audit", "explain", "diff", "solve", "matrix", "profile",
        "firmware",
    }  # fmt: skip
    assert ("launch",) in COMMANDS and ("firmware", "inspect") in COMMANDS


def test_a_fifo_is_refused_not_waited_on(base: Path) -> None:
    fifo = Place("fifo")
    argvs: list[list[Arg]] = [
        ["measure", fifo],
        ["profile", "check", fifo],
        ["firmware", "inspect", fifo],
        ["launch", "--backend", "sim", "--record", fifo],
    ]
    for argv in argvs:
        assert run(base, argv).code == 2


def test_the_timer_fails_a_hang() -> None:
    with pytest.raises(Hung), time_limit(0.05):
        signal.pause()
