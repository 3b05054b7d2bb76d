"""The field table: every guest flag and profile key has its row, and what is derived from
it (causes, documents, writer, expectations) says what the analysis and audit rely on."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cvmlaunch.attest.expect import for_spec
from cvmlaunch.guest.fields import (
    BY_FLAG,
    BY_KEY,
    FIELDS,
    HEX_KEYS,
    document_fields,
    step_fields,
)
from cvmlaunch.guest.flags import add_guest_arguments
from cvmlaunch.guest.profile import Profile
from cvmlaunch.guest.spec import GuestSpec, TdConfig, Technology


def test_every_guest_flag_has_a_row() -> None:
    parser = argparse.ArgumentParser()
    add_guest_arguments(parser)
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    assert flags - {"--help"} == set(BY_FLAG)


def test_every_profile_key_has_a_row() -> None:
    tables = ("firmware", "cpu", "boot", "snp", "sev", "tdx")
    keys = {k for k in Profile.model_fields if k not in tables}
    for table in tables:
        model: Any = Profile.model_fields[table].annotation
        inner = next(a for a in getattr(model, "__args__", (model,)) if a is not type(None))
        keys |= {f"{table}.{k}" for k in inner.model_fields}
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
