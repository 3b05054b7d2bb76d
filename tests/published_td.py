"""dstack-0.6.0's real TD as a profile of what is published about it, no image and no
files: its firmware by descriptor (Debian bookworm's TDVF layout, the MRTD its measurement
document gives for QEMU 8.2's two-pass order, the empty-varstore CFV digest), its boot by
digests, the ACPI digests its log names. Its quote's MRTD and RTMR0-2 follow from it
(tests/firmware/test_descriptor.py); the audit and publish tests use it as a real guest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomlkit

from tests.conftest import VECTORS, CliRunner

DSTACK = VECTORS / "eventlog" / "dstack"
QUOTE = DSTACK / "tdx-lite-quote.bin"


def published_dstack_profile(
    cli: CliRunner, folder: Path, debian_ovmf: Path, **changes: str
) -> Path:
    """The profile (written to `folder`), with `changes` to its [tdx] table. XFAM is what
    QEMU's -cpu host gives on Sapphire Rapids; MRCONFIGID is the app's identity dstack sets
    at deployment, not a measurement: the deployment publishes it."""
    published = json.loads((DSTACK / "dstack_tdx_lite_recompute.json").read_text())
    vectors = json.loads((VECTORS / "tdx" / "tdx-vectors.json").read_text())
    r = cli("firmware", "describe", debian_ovmf, "--technology", "tdx", "--json")
    descriptor = json.loads(r.out)["firmware"]["descriptor"]
    descriptor["mrtd"] = {"section/image": published["doc_mrtd_two_pass"]}
    descriptor["cfv_sha384"] = vectors["acpi_fixture_rtmr0"][0]["event_digests"][1]
    doc = published["measurement_doc"]
    table_loader, rsdp, tables = published["acpi_digests_from_log"]
    tdx: dict[str, Any] = {
        "page_order": "section", "edk2": 202502, "xfam": 0x602E7,
        "mrconfigid": "0186b0e55f2fa8e4fb69d890f14f54d5612707646e2573d54e0d2ddaaade77caa9"
                      + "00" * 15,
        "kernel_authenticode": doc["kernel_authenticode"],
        "initrd_sha384": doc["initrd_sha384"], "load_options_sha384": doc["cmdline_sha384"],
        "acpi": {"table_loader": table_loader, "rsdp": rsdp, "tables": tables},
    }  # fmt: skip
    tdx |= changes
    profile = {"schema_version": 1, "technology": "tdx", "vcpus": 2, "memory_mib": 2048,
               "firmware": {"descriptor": descriptor}, "tdx": tdx}  # fmt: skip
    path = folder / "dstack.toml"
    path.write_text(tomlkit.dumps(profile))
    return path
