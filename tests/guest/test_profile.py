"""The profile format: strictness, every problem reported at once, paths, the schema."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.profile import load_profile, parse_profile, profile_json_schema, read_profile
from cvmlaunch.guest.spec import BootFile, CpuSpec, Technology, Vmm

ROOT = Path(__file__).parents[2]
PROFILES = [*sorted((ROOT / "profiles").glob("*.toml")), ROOT / "cvmlaunch/data/default.toml"]

BASE: dict[str, Any] = {
    "schema_version": 1,
    "technology": "sev-snp",
    "firmware": {"path": "/fw.fd"},
    "vcpus": 2,
    "cpu": {"name": "EPYC-v4"},
}


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ProfileError) as e:
        parse_profile(data).to_spec()
    return {p.field: p.reason for p in e.value.problems}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_shipped_profiles_are_valid(path: Path) -> None:
    spec = load_profile(path).to_spec()
    assert spec.firmware.is_absolute()
    assert spec.technology in Technology


def test_every_problem_is_reported_at_once() -> None:
    bad = {
        **BASE,
        "schema_version": 2,
        "vcpus": 0,
        "vmm": "azure",
        "colour": "blue",
        "firmware": {"path": "/fw.fd", "sha256": "xyz"},
        "snp": {"policy": 0x10000, "guest_features": -1},
    }
    found = problems(bad)
    assert set(found) >= {
        "schema_version",
        "vcpus",
        "vmm",
        "colour",
        "firmware.sha256",
        "snp.guest_features",
    }
    assert found["colour"] == "unknown key"
    assert "azure" in found["vmm"] or "qemu" in found["vmm"]


def test_policy_reserved_bits() -> None:
    assert "bit 17" in problems({**BASE, "snp": {"policy": 0x10000}})["snp.policy"]
    assert "63:26" in problems({**BASE, "snp": {"policy": 0x30000 | 1 << 40}})["snp.policy"]


def test_cpu_forms() -> None:
    spec = parse_profile({**BASE, "cpu": {"family": 25, "model": 1, "stepping": 1}}).to_spec()
    assert spec.cpu == CpuSpec(0xA00F11)
    spec = parse_profile({**BASE, "cpu": {"name": "epyc-milan-v2"}}).to_spec()
    assert spec.cpu == CpuSpec(0xA00F11, "EPYC-Milan-v2")
    both = problems({**BASE, "cpu": {"name": "EPYC", "signature": 1}})
    assert "exactly one" in both["cpu.signature"] and "cpu" not in both
    assert "goes together" in problems({**BASE, "cpu": {"family": 25}})["cpu.family"]
    assert "known:" in problems({**BASE, "cpu": {"name": "Pentium"}})["cpu.name"]


def test_semantic_problems_name_fields() -> None:
    no_cpu = {k: v for k, v in BASE.items() if k != "cpu"}
    assert "RDX" in problems(no_cpu)["cpu"]
    # ec2 and gce put a fixed value in RDX, so they need no CPU model.
    assert parse_profile({**no_cpu, "vmm": "ec2"}).to_spec().vmm is Vmm.EC2
    found = problems({**BASE, "snp": {"guest_features": 0x20}})
    assert "SNPActive" in found["snp.guest_features"]
    found = problems({**BASE, "technology": "sev", "snp": {}})
    assert found["snp"] == "applies to sev-snp guests, not sev"


def test_boot_sources() -> None:
    found = problems({**BASE, "boot": {"kernel": "k", "kernel_sha256": "00" * 32}})
    assert "exactly one of a file path or its sha256" in found["boot.kernel"]
    spec = parse_profile({**BASE, "boot": {"kernel_sha256": "ab" * 32}}).to_spec()
    assert spec.boot is not None
    assert spec.boot.kernel == BootFile(None, bytes.fromhex("ab" * 32))
    assert spec.boot.initrd is None and spec.boot.cmdline == ""


def test_paths_resolve_against_the_profile(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    profile = tmp_path / "sub" / "p.toml"
    profile.write_text(
        'schema_version = 1\ntechnology = "sev-snp"\nvcpus = 1\n[firmware]\npath = "fw.fd"\n'
        '[cpu]\nname = "EPYC"\n[boot]\nkernel = "../k"\ninitrd = "/abs/i"\n'
    )
    spec = load_profile(profile).to_spec()
    assert spec.firmware == tmp_path / "sub" / "fw.fd"
    assert spec.boot is not None
    assert spec.boot.kernel.path == tmp_path / "sub" / ".." / "k"
    assert spec.boot.initrd is not None and spec.boot.initrd.path == Path("/abs/i")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="No such file"):
        load_profile(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("technology = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(broken)


def test_json_schema() -> None:
    schema = profile_json_schema()
    json.dumps(schema)
    props = schema["properties"]
    assert {"schema_version", "technology", "firmware", "vcpus", "cpu", "vmm"} <= set(props)
    assert schema["additionalProperties"] is False
    assert props["vcpus"]["maximum"] == 4096


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("vcpus", True),  # measured as 1 before
        ("vcpus", "4"),
        ("memory_mib", 2.0),
    ],
)
def test_lax_types_are_refused(key: str, value: object) -> None:
    assert key in problems({**BASE, key: value})


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("snp", "guest_features", "33"),
        ("snp", "policy", True),
        ("cpu", "signature", "0xa00f11"),
        ("sev", "policy", 1.0),
    ],
)
def test_lax_table_types_are_refused(table: str, key: str, value: object) -> None:
    data = {**BASE, "cpu": {"name": "EPYC-v4"}} if table != "cpu" else dict(BASE)
    if table == "sev":
        data["technology"] = "sev-es"
    data[table] = {key: value}
    assert f"{table}.{key}" in problems(data)


def test_syntax_and_semantic_problems_in_one_run() -> None:
    data = {
        **BASE,
        "technology": "tdx",
        "vcpus": True,  # syntax
        "memory_mib": "4",  # syntax
        "snp": {"policy": 0x30000},  # another technology's table
        "tdx": {"page_order": "sideways", "xfam": 0x4},  # syntax, then semantics
    }
    found = problems(data)
    assert {"vcpus", "memory_mib", "tdx.page_order", "snp.policy", "cpu.name"} <= set(found)
    assert "tdx.xfam" in found  # a semantic problem found next to the syntax ones
    assert found["snp.policy"] == "applies to sev-snp guests, not tdx"


def test_load_profile_takes_a_string_and_refuses_other_types(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('schema_version = 1\ntechnology = "sev"\n[firmware]\npath = "/fw.fd"\n')
    assert load_profile(str(path)).technology is Technology.SEV
    with pytest.raises(ProfileError, match="expected a path"):
        load_profile(5)  # type: ignore[arg-type]


def test_nul_in_a_profile_path_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot contain a NUL"):
        load_profile(str(tmp_path / "p\0.toml"))
    path = tmp_path / "nul.toml"
    path.write_text('schema_version = 1\ntechnology = "sev"\n[firmware]\npath = "/fw\\u0000.fd"\n')
    with pytest.raises(ProfileError) as e:
        load_profile(path).to_spec()
    assert {p.field for p in e.value.problems} == {"firmware.path"}


TD_BASE: dict[str, Any] = {**BASE, "technology": "tdx"}
del TD_BASE["cpu"]


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ("PKS", "Input should be a valid integer or a valid list"),
        ({}, "Input should be a valid integer or a valid list"),
        (-1, "Input should be greater than or equal to 0"),
        (["PKS", 1], "item 1: Input should be a valid string"),
    ],
)
def test_a_union_value_is_one_problem_under_its_key(attributes: object, reason: str) -> None:
    """`tdx.attributes` (a number or names) fails under its own key, once: not under
    pydantic's union members `tdx.attributes.constrained-int` and `...list[str].0`."""
    found = problems({**TD_BASE, "tdx": {"attributes": attributes}, "vcpus": 0})
    assert found == {"tdx.attributes": reason, "vcpus": found["vcpus"]}


def test_a_bad_union_value_does_not_hide_semantic_problems() -> None:
    found = problems({**TD_BASE, "tdx": {"attributes": "PKS", "xfam": 0x4}})
    assert set(found) == {"tdx.attributes", "tdx.xfam"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"a b": 1}, '"a b"'),
        ({"a.b": 1}, '"a.b"'),  # one key with a dot, not b in table a
        ({"": 1}, '""'),
        ({"line\nbreak": 1}, '"line\\u000Abreak"'),
        ({"\x7f\u202e": 1}, '"\\u007F\\u202E"'),
        ({"é😀": 1}, '"é😀"'),
        ({'quote"back\\': 1}, '"quote\\"back\\\\"'),
        ({"firmware": {"path": "/fw.fd", "tab\t": 1}}, 'firmware."tab\\u0009"'),
    ],
)
def test_unknown_keys_are_named_as_toml_writes_them(data: dict[str, Any], field: str) -> None:
    """A key that is not bare is quoted and escaped as in TOML: the name says where the key
    ends, reads back as the same key, and keeps the error on one printable line."""
    with pytest.raises(ProfileError) as e:
        parse_profile({**BASE, **data})
    assert [p.field for p in e.value.problems] == [field]
    assert e.value.problems[0].reason == "unknown key"
    assert str(e.value).isprintable()
    unknown = {k: {"tab\t": 1} if k == "firmware" else v for k, v in data.items()}
    assert tomllib.loads(f"{field} = 1") == unknown


@pytest.mark.parametrize("data", [[], [1, 2], "ab", None, 5, [("schema_version", 1)]])
def test_a_document_that_is_not_a_table_is_one_problem(data: object) -> None:
    """Through the API anything may arrive: not a TypeError from copying it for the
    semantic pass, but a ProfileError naming the profile."""
    with pytest.raises(ProfileError) as e:
        parse_profile(data)  # type: ignore[arg-type]
    assert [p.field for p in e.value.problems] == ["profile"]


@pytest.mark.parametrize("name", ["line\nbreak.toml", "cr\r.toml", "tab\t.toml", "rtl\u202e.toml"])
def test_a_profile_path_is_named_on_one_printable_line(tmp_path: Path, name: str) -> None:
    """The CLI prints a ProfileError as one line: a path with a line break or another
    unprintable character is quoted and escaped, for a missing file and an invalid one."""
    missing = tmp_path / name
    with pytest.raises(ProfileError) as e:
        load_profile(missing)
    assert str(e.value).isprintable() and repr(str(missing)) in str(e.value)
    missing.write_text("schema_version = 2\n")
    with pytest.raises(ProfileError) as e:
        load_profile(missing)
    assert str(e.value).isprintable() and repr(str(missing)) in str(e.value)


def test_bytes_already_read_are_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "guest.toml"
    path.write_text('schema_version = 1\ntechnology = "sev"\n[firmware]\npath = "fw.fd"\n')
    data = read_profile(path)
    path.write_text("not toml at all [")  # replaced after the read: the read bytes count
    profile = load_profile(path, data)
    assert profile.firmware.path == tmp_path / "fw.fd"
    with pytest.raises(ProfileError, match="profile: not valid TOML"):
        load_profile(path)
