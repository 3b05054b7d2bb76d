"""Evidence: a profile's measured steps and the same measurement read back from its saved
`measure --trace --json` are the same Steps (the document codec loses nothing), and a
damaged document is one InputError naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.analysis.evidence import evidence_from_json, evidence_from_plan
from cvmlaunch.errors import InputError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.measure import measure
from cvmlaunch.measure.document import measurement_json
from cvmlaunch.plan import build_plan
from cvmlaunch.plan.step import StepKind

ROOT = Path(__file__).parents[2]
PROFILES = sorted((ROOT / "profiles").glob("*.toml"))


def _document(path: Path) -> tuple[Any, Any]:
    plan = build_plan(load_profile(path).to_spec())
    doc = json.loads(json.dumps(measurement_json(plan, measure(plan, trace=True))))
    return plan, doc


@pytest.mark.debian_ovmf
@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_saved_trace_reads_back_as_the_same_steps(path: Path) -> None:
    plan, doc = _document(path)
    direct = evidence_from_plan(plan, "profile")
    read = evidence_from_json(doc, "trace")
    assert read.steps == direct.steps
    assert (read.technology, read.measurement, read.inputs) == (
        direct.technology,
        direct.measurement,
        direct.inputs,
    )
    kinds = {s.kind for s in direct.steps}
    assert all(isinstance(k, StepKind) for k in kinds)
    assert kinds <= {StepKind.PAGE_ADD, StepKind.MR_EXTEND} or StepKind.FIRMWARE in kinds


@pytest.mark.debian_ovmf
@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("kind", "pages", "trace[3].'kind'"),
        ("page_type", "BIG", "trace[3].'page_type'"),
        ("contents", "xyz", "trace[3].'contents'"),
        ("digest", 7, "trace[3].digest"),
    ],
)
def test_damaged_step_is_named(key: str, value: object, named: str) -> None:
    _, doc = _document(ROOT / "profiles" / "debian-ovmf-qemu-snp.toml")
    doc["trace"][3][key] = value
    with pytest.raises(InputError) as e:
        evidence_from_json(doc, "t.json")
    assert named in str(e.value)


@pytest.mark.debian_ovmf
def test_td_record_kind_must_be_a_record() -> None:
    _, doc = _document(ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml")
    doc["trace"][0]["record"] = "firmware"
    with pytest.raises(InputError, match="not an MRTD record"):
        evidence_from_json(doc, "t.json")
