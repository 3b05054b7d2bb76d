"""The field table: every guest flag and profile key has its row, and what is derived from
it (causes, documents, writer, expectations) says what the analysis and audit rely on."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.attest.expect import for_spec
from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.fields import (
    BY_FLAG,
    BY_KEY,
    FIELDS,
    HEX_KEYS,
    Field,
    Format,
    document_fields,
    step_fields,
)
from cvmlaunch.guest.flags import add_guest_arguments
from cvmlaunch.guest.profile import Profile, parse_profile, profile_json_schema
from cvmlaunch.guest.profile_writer import profile_document
from cvmlaunch.guest.spec import (
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    CpuSpec,
    GuestSpec,
    IdBlockConfig,
    TdConfig,
    Technology,
    VmDefinition,
)

CPU = CpuSpec.from_name("EPYC-v4")


def test_every_guest_flag_has_a_row() -> None:
    parser = argparse.ArgumentParser()
    add_guest_arguments(parser)
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    assert flags - {"--help"} == set(BY_FLAG)


def test_every_profile_key_has_a_row() -> None:
    tables = ("firmware", "cpu", "boot", "snp", "sev", "tdx", "qemu", "libvirt")
    keys = {k for k in Profile.model_fields if k not in tables}
    for table in tables:
        model: Any = Profile.model_fields[table].annotation
        inner = next(a for a in getattr(model, "__args__", (model,)) if a is not type(None))
        keys |= {f"{table}.{k}" for k in inner.model_fields}
        for name, part in inner.model_fields.items():  # a table in the table: [snp.id_block]
            kinds = getattr(part.annotation, "__args__", ())
            nested = next((a for a in kinds if hasattr(a, "model_fields")), None)
            if nested is not None and f"{table}.{name}" not in BY_KEY:
                keys.remove(f"{table}.{name}")
                keys |= {f"{table}.{name}.{k}" for k in nested.model_fields}
    assert "snp.id_block.id_key_passphrase_env" in keys
    assert keys - {"schema_version", "description"} <= set(BY_KEY)


def test_causes_likeliest_first() -> None:
    assert step_fields("vmsa") == (
        *("vcpus", "cpu.name", "cpu.signature", "vmm", "snp.guest_features"),
        *("snp.vmsa_gpa", "firmware.sha256"),
    )
    assert step_fields("td") == (
        "tdx.page_order", "firmware.sha256", "tdx.raw_data_tail", "memory_mib",
    )  # fmt: skip
    assert step_fields("sev-metadata") == ("vmm", "firmware.sha256", "boot", "firmware.path")


def test_documents_and_writer() -> None:
    snp = document_fields(Technology.SEV_SNP)
    assert snp["guest_features"] == "snp.guest_features" and "sev_policy" not in snp
    assert document_fields(Technology.TDX)["page_order"] == "tdx.page_order"
    assert {"policy", "guest_features", "attributes", "xfam", "signature"} <= HEX_KEYS
    assert "vcpus" not in HEX_KEYS and "memory_mib" not in HEX_KEYS
    assert len({f.key for f in FIELDS}) == len(FIELDS)


def test_expectations_from_the_table() -> None:
    snp = GuestSpec(Technology.SEV_SNP, Path("/f"), snp_policy=0x70000, host_data=b"\1" * 32)
    e = for_spec(snp, bytes(48))
    assert (e.policy, e.host_data, e.td_attributes) == (0x70000, b"\1" * 32, None)
    td = GuestSpec(Technology.TDX, Path("/f"), td=TdConfig(attributes=1 << 28, xfam=3))
    e = for_spec(td, bytes(48))
    assert (e.td_attributes, e.xfam, e.policy, e.mrowner) == (1 << 28, 3, None, bytes(48))


def test_numbers_have_bounds() -> None:
    numbers = {f.key for f in FIELDS if f.format in (Format.DEC, Format.HEX)}
    # sev.build is given by flag only and checked with the other LAUNCH_MEASURE inputs.
    assert {f.key for f in FIELDS if f.bounds is not None} == numbers - {"sev.build"}
    assert BY_KEY["vcpus"].bounds == (1, MAX_VCPUS)
    assert BY_KEY["memory_mib"].bounds == (1, MAX_MEMORY_MIB)


def _key(row: Field) -> str:
    return row.key


def _integer_schema(schema: dict[str, Any], key: str) -> dict[str, Any]:
    table, _, name = key.rpartition(".")
    # A table's model is named by its key's parts: [snp.id_block] is SnpIdBlock.
    model = (
        schema["$defs"]["".join(p.title().replace("_", "") for p in table.split("."))]
        if table
        else schema
    )
    prop = model["properties"][name]
    return next(s for s in prop.get("anyOf", [prop]) if s.get("type") == "integer")


@pytest.mark.parametrize("row", [f for f in FIELDS if f.bounds is not None], ids=_key)
def test_bounds_are_the_profile_constraints(row: Field) -> None:
    number = _integer_schema(profile_json_schema(), row.key)
    assert (number["minimum"], number["maximum"]) == row.bounds


def _spec_with(row: Field, value: int) -> GuestSpec:
    technology = next(
        t for t in (Technology.SEV_SNP, Technology.SEV_ES, Technology.TDX) if t in row.applies
    )
    spec = GuestSpec(technology, Path("/f"), cpu=None if technology is Technology.TDX else CPU)
    if row.attr == "cpu":
        return spec._replace(cpu=CpuSpec(value))
    assert row.attr is not None
    changes: dict[str, Any] = {row.attr.removeprefix("td.").removeprefix("id_block."): value}
    if row.attr.startswith("vm."):
        changes_vm: dict[str, Any] = {row.attr.removeprefix("vm."): value}
        return spec._replace(vm=VmDefinition()._replace(**changes_vm))
    if row.attr.startswith("id_block."):
        return spec._replace(id_block=IdBlockConfig(Path("/id.pem"), **changes))
    if row.attr.startswith("td."):
        return spec._replace(td=TdConfig(**changes))
    return spec._replace(**changes)


SPEC_BOUNDED = [f for f in FIELDS if f.bounds is not None and f.attr is not None]


@pytest.mark.parametrize("row", SPEC_BOUNDED, ids=_key)
def test_bounds_are_the_spec_checks(row: Field) -> None:
    assert row.bounds is not None
    low, high = row.bounds
    for value in (low - 1, high + 1):
        assert row.key in {p.field for p in _spec_with(row, value).problems()}, value


@pytest.mark.parametrize(
    "key", ["vcpus", "memory_mib", "cpu.signature", "snp.guest_features", "sev.policy"]
)
def test_values_at_the_bounds_are_accepted(key: str) -> None:
    row = BY_KEY[key]
    assert row.bounds is not None
    for value in row.bounds:
        if key == "snp.guest_features" and not value & 1:
            continue  # SNPActive must be set
        assert key not in {p.field for p in _spec_with(row, value).problems()}, value


@pytest.mark.parametrize("part", ["family", "model", "stepping"])
def test_cpu_family_model_stepping_bounds(part: str) -> None:
    low, high = BY_KEY[f"cpu.{part}"].bounds or (0, 0)
    fms = {"family": 0x19, "model": 1, "stepping": 1}
    assert CpuSpec.from_family_model_stepping(**(fms | {part: high}))
    assert CpuSpec.from_family_model_stepping(**(fms | {part: low}))
    with pytest.raises(ProfileError, match=rf"{part} {low}\.\.{high}"):
        CpuSpec.from_family_model_stepping(**(fms | {part: high + 1}))


def test_qemu_and_libvirt_tables_say_how_the_guest_boots() -> None:
    text = (
        'schema_version = 1\ntechnology = "tdx"\n[firmware]\npath = "/f"\n[tdx]\nedk2 = 202502\n'
        '[qemu]\nversion = "10.2"\nmachine = "q35"\n[libvirt]\nversion = "11.6"\n'
    )
    spec = parse_profile(tomllib.loads(text)).to_spec()
    assert spec.vm == VmDefinition("10.2", "11.6", "q35")
    assert spec.td_config.qemu == "10.2"  # one QEMU boots the TD: its boot events follow it
    assert profile_document(spec)["qemu"] == {"version": "10.2", "machine": "q35"}
    cases = {
        text.replace(
            "edk2 = 202502", 'edk2 = 202502\nqemu = "9.2"'
        ): "tdx.qemu: 9.2, but qemu.version is 10.2",
        text.replace(
            'machine = "q35"', "cbitpos = 51"
        ): "qemu.cbitpos: applies to sev, sev-es, sev-snp",
        text.replace('"10.2"', '"ten"'): "qemu.version: expected a version like 10.2",
    }
    for bad, message in cases.items():
        with pytest.raises(ProfileError, match=re.escape(message)):
            parse_profile(tomllib.loads(bad)).to_spec()


def test_a_cpu_model_outside_our_table_is_written_by_its_signature() -> None:
    # A name no table knows (an API caller's) could not be read back: its signature is kept.
    spec = GuestSpec(Technology.SEV_ES, Path("/f"), cpu=CpuSpec(0x663, "my-model"))
    assert profile_document(spec)["cpu"] == {"signature": 0x663}
    assert profile_document(spec._replace(cpu=CPU))["cpu"] == {"name": "EPYC-v4"}
    # QEMU's qemu64 (family 6 model 6 stepping 3), libvirt's default, is named.
    assert CpuSpec.from_name("QEMU64") == CpuSpec(0x663, "qemu64")
