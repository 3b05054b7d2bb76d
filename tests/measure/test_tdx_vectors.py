"""Every TDX vector of tests/vectors/tdx/tdx-vectors.json that needs only firmware.

The MRTDs were computed by an independent implementation and reproduced by three peers
(td-shim's script, Fraunhofer's calculate-tdx-mrs, Quex); the TD HOBs are QEMU's layout for
each memory size. Debian's OVMF.fd is the real firmware; the synthetic images cover a
PAGE.AUG section and raw data shorter than the section's memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.firmware.tdvf import Locator, parse_tdvf
from cvmlaunch.guest.spec import GuestSpec, Technology
from cvmlaunch.plan.tdx import build_td_plan
from tests.conftest import TDX_VECTORS, CliRunner

_VECTORS = json.loads((TDX_VECTORS / "tdx-vectors.json").read_text())
_BOOKWORM = _VECTORS["firmware"]["debian-bookworm ovmf 2022.11-6+deb12u2 /usr/share/ovmf/OVMF.fd"]
_SYNTHETIC = _VECTORS["synthetic_images"]

# (page order, raw-data tail) -> the key of the expected MRTD in a synthetic-image vector.
_SYNTHETIC_KEYS = {
    ("page", "image"): "mrtd_single_pass",
    ("section", "image"): "mrtd_two_pass",
    ("page", "zero"): "mrtd_single_pass_spec_zero_fill",
    ("section", "zero"): "mrtd_two_pass_spec_zero_fill",
}


def _measure(cli: CliRunner, firmware: Path, *flags: str) -> dict[str, Any]:
    r = cli("measure", "--technology", "tdx", "--firmware", firmware, *flags, "--json")
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.out)
    assert doc["technology"] == "tdx"
    assert doc["measurement"] == doc["mrtd"]
    return doc


@pytest.mark.parametrize(
    ("order", "key"), [("page", "mrtd_single_pass"), ("section", "mrtd_two_pass")]
)
def test_debian_ovmf_mrtd(cli: CliRunner, debian_ovmf: Path, order: str, key: str) -> None:
    doc = _measure(cli, debian_ovmf, "--tdx-page-order", order)
    assert doc["mrtd"] == _BOOKWORM[key]
    assert doc["inputs"]["firmware_sha256"] == _BOOKWORM["sha256"]


def test_page_order_defaults_to_upstream_kvm(cli: CliRunner, debian_ovmf: Path) -> None:
    assert _measure(cli, debian_ovmf)["mrtd"] == _BOOKWORM["mrtd_single_pass"]


def test_debian_ovmf_section_table(debian_ovmf: Path) -> None:
    tdvf = parse_tdvf(debian_ovmf.read_bytes())
    assert tdvf.locator == Locator.OVMF_FOOTER
    assert tdvf.offset == _BOOKWORM["tdvf_descriptor"]["file_offset"]
    assert [
        {
            "data_offset": s.data_offset,
            "raw_size": s.raw_size,
            "gpa": s.gpa,
            "mem_size": s.mem_size,
            "type": s.type.value,
            "attributes": s.attributes,
        }
        for s in tdvf.sections
    ] == [
        {k: v for k, v in s.items() if k not in ("type_name", "gpa_hex")}
        for s in _BOOKWORM["sections"]
    ]


# The TD HOB vectors' memory sizes, as hex strings, smallest first.
_HOB_MEMORY: list[str] = [f"{size:#x}" for size in sorted(int(m, 16) for m in _BOOKWORM["td_hob"])]


@pytest.mark.parametrize("memory", _HOB_MEMORY)
def test_debian_ovmf_td_hob(cli: CliRunner, debian_ovmf: Path, memory: str) -> None:
    expected = _BOOKWORM["td_hob"][memory]
    mib = int(memory, 16) >> 20
    doc = _measure(cli, debian_ovmf, "--memory-mib", str(mib))
    assert doc["inputs"]["td_hob_sha384"] == expected["sha384"]
    plan = build_td_plan(GuestSpec(Technology.TDX, debian_ovmf, memory_mib=mib))
    assert plan.td_hob is not None
    # The END HOB follows the bytes TDVF measures; the TD_HOB page carries both.
    assert plan.td_hob[:-8].hex() == expected["hex"]
    assert plan.td_hob[-8:] == bytes.fromhex("ffff080000000000")
    hob_op = next(op for op in plan.ops if op.section_type.name == "TD_HOB")
    assert hob_op.data is not None and bytes(hob_op.data).rstrip(b"\0") == plan.td_hob.rstrip(
        b"\0"
    )
    # The MRTD does not depend on the memory size: only GPAs of the HOB pages are measured.
    assert doc["mrtd"] == _BOOKWORM["mrtd_single_pass"]


@pytest.mark.parametrize(("name", "gib"), [("bookworm-2GiB", 2), ("bookworm-4GiB", 4)])
def test_td_hob_fixture_files(debian_ovmf: Path, name: str, gib: int) -> None:
    plan = build_td_plan(GuestSpec(Technology.TDX, debian_ovmf, memory_mib=gib << 10))
    assert plan.td_hob is not None
    assert plan.td_hob[:-8] == (TDX_VECTORS / f"td-hob-{name}.bin").read_bytes()


@pytest.mark.parametrize("tail", ["image", "zero"])
@pytest.mark.parametrize("order", ["page", "section"])
@pytest.mark.parametrize("variant", sorted(_SYNTHETIC))
def test_synthetic_images(cli: CliRunner, variant: str, order: str, tail: str) -> None:
    vector = _SYNTHETIC[variant]
    image = TDX_VECTORS / vector["file"]
    assert hashlib.sha256(image.read_bytes()).hexdigest() == vector["sha256"]
    doc = _measure(cli, image, "--tdx-page-order", order, "--raw-data-tail", tail)
    assert doc["mrtd"] == vector[_SYNTHETIC_KEYS[order, tail]]
    sections = doc["inputs"]["tdvf"]["sections"]
    assert [s["type"] for s in sections] == [s["type_name"] for s in vector["sections"]]
    assert [int(s["gpa"], 16) for s in sections] == [s["gpa"] for s in vector["sections"]]


def test_page_aug_section_is_not_measured(cli: CliRunner) -> None:
    """The aug image adds a PERM_MEM (PAGE.AUG) section: no record names its pages."""
    doc = _measure(cli, TDX_VECTORS / _SYNTHETIC["aug"]["file"], "--trace")
    actions = {op["type"]: op["action"] for op in doc["inputs"]["operations"]}
    assert actions == {
        "BFV": "page-add+extend", "CFV": "page-add", "TEMP_MEM": "page-add",
        "TD_HOB": "page-add", "PERM_MEM": "page-aug",
    }  # fmt: skip
    perm = next(s for s in doc["inputs"]["tdvf"]["sections"] if s["type"] == "PERM_MEM")
    aug = range(int(perm["gpa"], 16), int(perm["gpa"], 16) + int(perm["mem_size"], 16))
    gpas = [int(step["gpa"], 16) for step in doc["trace"]]
    assert gpas and not any(gpa in aug for gpa in gpas)
    # 48 BFV pages of 17 records, then one PAGE.ADD per page of CFV, HOB and TEMP_MEM.
    assert len(gpas) == 48 * 17 + (0x10000 + 0x6000 + 0x2000 + 0x2000 + 0x10000) // 4096
    assert doc["trace"][-1]["digest"] == doc["mrtd"]


def test_short_raw_data_differs_by_fill(cli: CliRunner) -> None:
    """QEMU measures the image bytes past RawDataSize; the specification's zero fill does
    not: the partial image is the one where the two differ."""
    image = TDX_VECTORS / _SYNTHETIC["partial"]["file"]
    qemu = _measure(cli, image)["mrtd"]
    spec = _measure(cli, image, "--raw-data-tail", "zero")["mrtd"]
    assert qemu != spec
    assert _measure(cli, image)["inputs"]["raw_data_tail"] == "image"


def test_shipped_tdx_profile(cli: CliRunner, debian_ovmf: Path) -> None:
    profile = Path(__file__).parents[2] / "profiles" / "debian-ovmf-qemu-tdx.toml"
    r = cli("measure", profile, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["mrtd"] == _BOOKWORM["mrtd_single_pass"]
    assert doc["td"]["attributes"] == "0x0000000010000000"
    assert doc["td"]["xfam"] == "0x00000000000602e7"
    assert doc["inputs"]["td_hob_sha384"] == _BOOKWORM["td_hob"]["0x100000000"]["sha384"]
    older = cli("measure", profile, "--tdx-page-order", "section", "--json")
    assert json.loads(older.out)["mrtd"] == _BOOKWORM["mrtd_two_pass"]
