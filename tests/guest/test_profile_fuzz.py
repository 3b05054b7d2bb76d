"""Property-based fuzzing of the profile reader: whatever a TOML profile holds, only
`ProfileError` escapes, and it names a key for every problem.

For `parse_profile` (a mapping, as tomllib returns it) and `load_profile` (a file):

* either a `Profile` comes back whose `to_spec()` passes `GuestSpec.check()` (and checking
  the result again changes nothing),
* or a `ProfileError` (a `CvmlaunchError`) whose every problem names a key: a dotted key of
  the profile format, of the field table, a key path the document itself holds, or
  `profile` for the file as a whole; and whose text is one line (the CLI prints it as one).

Inputs:

* fully random TOML documents: random tables and keys (known keys mixed with arbitrary
  unicode), values of every TOML type (integers far outside 64 bits, floats with inf and nan,
  booleans, strings with NUL, control characters, non-ASCII and thousands of characters,
  arrays, nested tables, offset and local date-times, dates, times);
* near-valid profiles: the shipped profiles with keys dropped, added (from other tables, or
  made up), retyped, numbers at and beyond their bounds, enum strings misspelt, paths with NUL,
  relative, empty or very long;
* files: those documents written as TOML text, the shipped profiles with bytes changed, and
  raw random bytes.

Runs derandomized, so CI sees the same examples every time. CVMLAUNCH_FUZZ_SCALE=N runs N
times as many examples (a longer local hunt).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cvmlaunch.errors import CvmlaunchError, ProfileError
from cvmlaunch.guest.fields import BY_KEY, MAX_MEMORY_MIB, MAX_VCPUS
from cvmlaunch.guest.profile import Profile, load_profile, parse_profile

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).parents[2]
SHIPPED = {p.name: p for p in sorted((ROOT / "profiles").glob("*.toml"))}
SHIPPED_DOCS = {name: tomllib.loads(p.read_text()) for name, p in SHIPPED.items()}
REAL_FIRMWARE = "/usr/share/ovmf/OVMF.fd"

SCALE = max(1, int(os.environ.get("CVMLAUNCH_FUZZ_SCALE", "1")))
FUZZ = settings(
    deadline=None,
    derandomize=SCALE == 1,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def examples(n: int) -> settings:
    return settings(FUZZ, max_examples=n * SCALE)


def _model_keys(model: type[Any], prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        yield prefix + name
        for kind in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(kind, type) and hasattr(kind, "model_fields"):
                yield from _model_keys(kind, f"{prefix}{name}.")


# The keys a problem may name besides the document's own: the format's and the field table's.
KNOWN_KEYS = frozenset(_model_keys(Profile)) | frozenset(BY_KEY) | {"profile"}
TABLES = ("firmware", "cpu", "boot", "snp", "sev", "tdx")
TABLE_KEYS = {
    t: sorted(k.split(".")[1] for k in KNOWN_KEYS if k.startswith(t + ".")) for t in TABLES
}
TOP_KEYS = sorted(k for k in KNOWN_KEYS if "." not in k and k != "profile")


# ---- the properties ---------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    """`key` as TOML writes it: bare if it can be, else a basic string."""
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_string(text: str) -> str:
    """`text` as a TOML basic string: control characters (and DEL) escaped."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def key_paths(doc: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path `doc` holds."""
    if isinstance(doc, Mapping):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from key_paths(value, (*prefix, key))


def named_path(field: str) -> tuple[str, ...] | None:
    """The key path `field` names when read as a TOML dotted key, or None if it is none."""
    try:
        node: object = tomllib.loads(f"{field} = 0")
    except tomllib.TOMLDecodeError:
        return None
    path: tuple[str, ...] = ()
    while isinstance(node, dict) and len(node) == 1:
        [(key, node)] = node.items()
        path += (key,)
    return path


def check_error(error: ProfileError, doc: object) -> None:
    """Every problem names a key (of the format, of the field table or of `doc`, as a TOML
    dotted key) and says why; the whole message is one printable line."""
    assert isinstance(error, CvmlaunchError)
    assert error.problems
    paths = set(key_paths(doc))
    for problem in error.problems:
        assert problem.field in KNOWN_KEYS or named_path(problem.field) in paths, problem
        assert problem.reason.strip(), problem
        event(f"problem: {problem.field if problem.field in KNOWN_KEYS else '<document key>'}")
    assert str(error).isprintable(), str(error)


def only_profile_errors(doc: Mapping[str, Any]) -> None:
    """`parse_profile(doc).to_spec()` gives a usable spec or a ProfileError naming keys."""
    try:
        spec = parse_profile(doc).to_spec()
    except ProfileError as e:
        check_error(e, doc)
        event("ProfileError")
        return
    assert spec.check() == spec
    event(f"valid {spec.technology}")


def only_profile_errors_from_file(path: Path, doc: object = None) -> None:
    """The same for `load_profile(path)`; `doc` is what the file holds, if it is TOML."""
    try:
        spec = load_profile(path).to_spec()
    except ProfileError as e:
        check_error(e, doc)
        event("ProfileError")
        return
    assert spec.check() == spec
    assert spec.firmware.is_absolute()
    event(f"valid {spec.technology}")


# ---- TOML values and documents ----------------------------------------------------------------

_HUGE = [0, -1, 1, 2**31, 2**32, 2**63 - 1, 2**63, -(2**63), 2**64 - 1, 2**64, 10**30, -(10**40)]
toml_ints = st.one_of(st.integers(), st.sampled_from(_HUGE), st.integers(-(2**200), 2**200))
toml_floats = st.floats(allow_nan=True, allow_infinity=True)
# Text that TOML can hold (no surrogates), with NUL and other control characters, long runs.
toml_text_values = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["", "\0", "a\0b", "\n", "é", "😀", "\u202e", "x" * 5000, " sev-snp"]),
)
_OFFSETS = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))])
toml_datetimes = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=_OFFSETS),
    st.dates(),
    st.times(),
)
toml_scalars = st.one_of(st.booleans(), toml_ints, toml_floats, toml_text_values, toml_datetimes)
any_key = st.one_of(
    st.sampled_from([*TOP_KEYS, *TABLES, *(k for ks in TABLE_KEYS.values() for k in ks)]),
    st.text(max_size=12),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(any_key, inner, max_size=5),
    ),
    max_leaves=20,
)


def toml_text(doc: Mapping[str, Any]) -> str:
    """`doc` as TOML text: one `key = value` line per top-level key, tables inline."""
    return "".join(f"{toml_key(k)} = {_toml_value(v)}\n" for k, v in doc.items())


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, Mapping)
    return "{" + ", ".join(f"{toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


random_documents = st.dictionaries(any_key, toml_values, max_size=8)


# ---- near-valid profiles ----------------------------------------------------------------------

_ENUM_TYPOS = ["", "SEV-SNP", "snp", "sev_snp", " qemu", "qemu ", "QEMU", "tdx\0", "page\n", "é"]
_PATHS = [
    "",
    "a\0b",
    "/usr/share/ovmf/OVMF.fd\0",
    "relative/fw.fd",
    "OVMF.fd",
    ".",
    "/",
    "/dev/zero",
    "/nonexistent/fw.fd",
    "~/fw.fd",
    "x" * 5000,
    "é/😀.fd",
    REAL_FIRMWARE,
]
_HEX = ["", "0x" + "00" * 32, "00" * 31, "00" * 32, "ff" * 48, "zz" * 32, "00" * 32 + "\0"]


def _numbers_for(key: str) -> st.SearchStrategy[object]:
    """Values at, inside and beyond the bounds of the numeric field `key`."""
    low, high = {
        "vcpus": (1, MAX_VCPUS),
        "memory_mib": (1, MAX_MEMORY_MIB),
    }.get(key, (0, 2**64 - 1))
    edges = [low - 1, low, low + 1, high - 1, high, high + 1, -(2**64), 2**64, 2**70]
    return st.one_of(st.sampled_from(edges), st.integers(low - 2, high + 2), toml_ints)


def _replacement(key: str) -> st.SearchStrategy[object]:
    """A value for `key` (last part of a dotted key) that may or may not fit its type."""
    leaf = key.rpartition(".")[2]
    if leaf in ("path", "kernel", "initrd"):
        own: st.SearchStrategy[object] = st.sampled_from(_PATHS)
    elif leaf in ("technology", "vmm", "page_order", "raw_data_tail", "name"):
        own = st.sampled_from(
            [*_ENUM_TYPOS, "sev", "sev-es", "sev-snp", "tdx", "qemu", "ec2", "gce", "page",
             "section", "image", "zero", "EPYC-v4", "EPYC-Milan"]
        )  # fmt: skip
    elif leaf in ("sha256", "digest", "host_data", "kernel_sha256", "initrd_sha256") or leaf in (
        "mrconfigid",
        "mrowner",
        "mrownerconfig",
    ):
        own = st.sampled_from(_HEX)
    elif leaf == "attributes":
        own = st.one_of(
            _numbers_for(key),
            st.lists(st.sampled_from(["SEPT_VE_DISABLE", "PKS", "DEBUG", "NOPE", "", "pks"])),
        )
    elif leaf == "schema_version":
        own = st.sampled_from([0, 1, 2, -1, 1.0, "1", True, 2**64])
    elif leaf in ("cmdline", "description"):
        own = toml_text_values
    else:
        own = _numbers_for(leaf)
    return st.one_of(own, own, toml_values)


@st.composite
def near_valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A shipped profile with a few keys dropped, added, retyped or set out of range."""
    doc = copy.deepcopy(SHIPPED_DOCS[draw(st.sampled_from(sorted(SHIPPED_DOCS)))])
    if draw(st.booleans()):
        doc["firmware"]["path"] = REAL_FIRMWARE  # relative fixture paths mean nothing here
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "add", "retype", "set", "table", "technology"]))
        paths = sorted(key_paths_raw(doc))
        if op == "drop" and paths:
            _pop(doc, draw(st.sampled_from(paths)))
        elif op == "add":
            table = draw(st.sampled_from(("", *TABLES)))
            keys = TABLE_KEYS[table] if table else TOP_KEYS
            key = draw(st.one_of(st.sampled_from(keys), st.text(max_size=8)))
            path = f"{table}.{key}" if table else key
            _put(doc, table, key, draw(_replacement(path)))
        elif op == "retype" and paths:
            path = draw(st.sampled_from(paths))
            table, _, key = path.rpartition(".")
            _put(doc, table, key, draw(toml_values))
        elif op == "set" and paths:
            path = draw(st.sampled_from(paths))
            table, _, key = path.rpartition(".")
            _put(doc, table, key, draw(_replacement(path)))
        elif op == "table":
            doc[draw(st.sampled_from(TABLES))] = draw(
                st.one_of(st.just({}), st.dictionaries(st.sampled_from(TOP_KEYS), toml_values))
            )
        elif op == "technology":
            doc["technology"] = draw(st.sampled_from(["sev", "sev-es", "sev-snp", "tdx"]))
    return doc


def key_paths_raw(doc: Mapping[str, Any]) -> Iterator[str]:
    """The dotted paths of `doc` down to its tables' keys (plain, for editing)."""
    for key, value in doc.items():
        yield key
        if isinstance(value, Mapping):
            yield from (f"{key}.{sub}" for sub in value)


def _pop(doc: dict[str, Any], path: str) -> None:
    table, _, key = path.rpartition(".")
    parent = doc.get(table) if table else doc
    if isinstance(parent, dict):
        parent.pop(key, None)


def _put(doc: dict[str, Any], table: str, key: str, value: object) -> None:
    if not table:
        doc[key] = value
        return
    if not isinstance(doc.get(table), dict):
        doc[table] = {}
    doc[table][key] = value


documents = st.one_of(random_documents, near_valid_documents())


# ---- the tests --------------------------------------------------------------------------------


@examples(400)
@given(doc=random_documents)
def test_random_documents(doc: dict[str, Any]) -> None:
    only_profile_errors(doc)


@examples(600)
@given(doc=near_valid_documents())
def test_near_valid_documents(doc: dict[str, Any]) -> None:
    only_profile_errors(doc)


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles")


@examples(300)
@given(doc=documents)
def test_documents_as_files(profile_dir: Path, doc: dict[str, Any]) -> None:
    path = profile_dir / "fuzz.toml"
    text = toml_text(doc)
    path.write_text(text, encoding="utf-8")
    parsed = tomllib.loads(text)  # the writer's own check: this is the document it meant
    assert set(parsed) == set(doc)
    only_profile_errors_from_file(path, parsed)


_EDIT = st.tuples(
    st.integers(0, 2000),
    st.sampled_from(["flip", "insert", "delete"]),
    st.binary(min_size=1, max_size=4),
)


@examples(300)
@given(
    name=st.sampled_from(sorted(SHIPPED)),
    edits=st.lists(_EDIT, min_size=1, max_size=4),
)
def test_shipped_profiles_with_bytes_changed(
    profile_dir: Path, name: str, edits: list[tuple[int, str, bytes]]
) -> None:
    data = bytearray(SHIPPED[name].read_bytes())
    for at, op, chunk in edits:
        pos = at % (len(data) + 1)
        if op == "flip" and pos < len(data):
            data[pos] ^= chunk[0] or 1
        elif op == "insert":
            data[pos:pos] = chunk
        else:
            del data[pos : pos + len(chunk)]
    # Beside the shipped profile, so that its relative paths still resolve.
    path = profile_dir / name
    path.write_bytes(bytes(data).replace(b"../tests/", str(ROOT / "tests").encode() + b"/"))
    try:
        doc: object = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        doc = None
    only_profile_errors_from_file(path, doc)


@examples(200)
@given(data=st.binary(max_size=3000))
def test_random_bytes_as_files(profile_dir: Path, data: bytes) -> None:
    path = profile_dir / "bytes.toml"
    path.write_bytes(data)
    only_profile_errors_from_file(path)


def test_errors_are_cvmlaunch_errors() -> None:
    """What these fuzz tests allow to escape is part of the library's own error tree."""
    assert issubclass(ProfileError, CvmlaunchError)
