"""A wrong precomputed `firmware.digest` (SNP): `diff` and a launch on the emulated kernel
name that field, not a firmware page, the VMSAs or nothing at all.

What the firmware pages measure to comes from the reference tool (sev-snp-measure's
`calc_snp_ovmf_hash`), not from the engine under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sevsnpmeasure.guest import calc_snp_ovmf_hash

from cvmlaunch.analysis.diff import DiffResult, Divergence, diff
from cvmlaunch.analysis.evidence import Evidence, evidence_from_json, evidence_from_plan
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import GuestSpec
from cvmlaunch.launch import Backend, Verdict, launch
from cvmlaunch.measure import measure
from cvmlaunch.measure.document import measurement_json
from cvmlaunch.plan import build_plan

SNP = Path(__file__).parents[2] / "profiles" / "debian-ovmf-qemu-snp.toml"
WRONG = bytes.fromhex("cd" * 48)


@pytest.fixture
def spec(debian_ovmf: Path) -> GuestSpec:
    return load_profile(SNP).to_spec()


@pytest.fixture
def image_digest(debian_ovmf: Path) -> bytes:
    """What Debian's OVMF.fd pages measure to, by the reference tool."""
    digest = calc_snp_ovmf_hash(str(debian_ovmf))
    assert isinstance(digest, bytes) and len(digest) == 48
    return digest


def _profile(spec: GuestSpec, source: str) -> Evidence:
    return evidence_from_plan(build_plan(spec), source)


def _trace(spec: GuestSpec, source: str) -> Evidence:
    plan = build_plan(spec)
    doc = json.loads(json.dumps(measurement_json(plan, measure(plan, trace=True))))
    return evidence_from_json(doc, source)


def _record(spec: GuestSpec) -> Evidence:
    doc = json.loads(json.dumps(launch(build_plan(spec), Backend.SIM).doc))
    return evidence_from_json(doc, "record.json")


def _divergence(result: DiffResult) -> Divergence:
    assert not result.same and result.divergence is not None
    return result.divergence


def test_wrong_digest_against_the_image_it_stands_for(
    spec: GuestSpec, image_digest: bytes
) -> None:
    wrong = spec._replace(firmware_digest=WRONG)
    for a in (_profile(spec, "right"), _trace(spec, "right")):
        result = diff(a, _profile(wrong, "wrong"))
        d = _divergence(result)
        assert "file offset" not in d.where and "firmware.digest" in d.where
        cause = d.causes[0]
        assert (cause.field, cause.a, cause.b) == (
            "firmware.digest",
            image_digest.hex(),
            "cd" * 48,
        )
        assert "B's is precomputed, not what its firmware measures to" in cause.meaning
        assert [c.field for c in result.input_differences] == ["firmware.digest"]
        assert "firmware.digest = " in result.text().splitlines()[1]


def test_two_precomputed_digests(spec: GuestSpec, image_digest: bytes) -> None:
    right = spec._replace(firmware_digest=image_digest)
    result = diff(_profile(right, "right"), _profile(spec._replace(firmware_digest=WRONG), "w"))
    d = _divergence(result)
    assert d.step == 0 and "file offset" not in d.where
    assert [c.field for c in d.causes] == ["firmware.digest"]
    assert "A's is precomputed, as its firmware measures" in d.causes[0].meaning
    assert [(c.field, c.a, c.b) for c in result.input_differences] == [
        ("firmware.digest", image_digest.hex(), WRONG.hex())
    ]
    # A correct precomputed digest is the image's: nothing differs.
    same = diff(_profile(right, "right"), _profile(spec, "computed"))
    assert same.same and same.input_differences == ()


def test_a_precomputed_trace_reads_its_digest_as_an_input(
    spec: GuestSpec, image_digest: bytes
) -> None:
    wrong = _trace(spec._replace(firmware_digest=WRONG), "wrong.json")
    assert wrong.inputs["firmware.digest"] == WRONG.hex()
    assert "firmware.digest" not in _trace(spec, "right.json").inputs
    d = _divergence(diff(_trace(spec, "right.json"), wrong))
    assert (d.causes[0].field, d.causes[0].a) == ("firmware.digest", image_digest.hex())


def test_wrong_digest_against_its_own_launch_record(spec: GuestSpec, image_digest: bytes) -> None:
    wrong = spec._replace(firmware_digest=WRONG)
    record = _record(wrong)  # what the platform measured: the image's pages
    d = _divergence(diff(_profile(wrong, "wrong"), record))
    assert "VMSA" not in d.where
    assert [(c.field, c.a) for c in d.causes] == [("firmware.digest", WRONG.hex())]
    assert image_digest.hex()[:16] in d.causes[0].meaning


def test_sim_launch_names_the_digest_field(spec: GuestSpec, image_digest: bytes) -> None:
    record = launch(build_plan(spec._replace(firmware_digest=WRONG)), Backend.SIM)
    assert record.verdict is Verdict.MISMATCH
    assert record.reported == measure(build_plan(spec)).digest
    divergence = record.doc["divergence"]
    assert isinstance(divergence, dict)
    assert divergence["step"] == 0 and divergence["field"] == "firmware.digest"
    assert divergence["expected"] == {"digest": WRONG.hex()}
    assert divergence["actual"] == {"digest": image_digest.hex()}
    assert "firmware.digest" in divergence["reason"] and "VMSA" not in divergence["reason"]
    # The right digest launches as the image would.
    right = launch(build_plan(spec._replace(firmware_digest=image_digest)), Backend.SIM)
    assert right.verdict is Verdict.MATCH and right.doc["divergence"] is None
