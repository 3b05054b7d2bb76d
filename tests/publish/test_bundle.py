"""The JSON bundle (`--format json`): it reads back exactly the references it was written
from, generated ones (hypothesis) and real ones (a matrix, a TD with its boot events)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmlaunch.abi.eventlog import EventType
from cvmlaunch.attest.expect import SNP_TCB_COMPONENTS, Expectations
from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.spec import Technology
from cvmlaunch.plan.step import Step, StepKind
from cvmlaunch.publish import PublishOptions, Reference, bundle, read_any, rvps

json_scalars = st.none() | st.booleans() | st.integers() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
digests = st.binary(min_size=48, max_size=48)


def _event(**fields: Any) -> Step:
    # Only the fields an event has: st.builds would fill the others too.
    return Step(kind=StepKind.EVENT, gpa=0, **fields)


events = st.builds(
    _event,
    number=st.integers(0, 100),
    label=st.text(),
    size=st.integers(0, 1 << 20),
    contents=st.none() | digests,
    digest=st.none() | digests,
    rtmr=st.none() | st.integers(0, 3),
    mr_index=st.none() | st.integers(1, 4),
    event_type=st.none() | st.sampled_from(EventType) | st.integers(0x1000, 0xFFFF),
    event_data=st.none() | st.binary(max_size=64),
)
EXPECT = {
    **{name: st.binary(max_size=64) for name in bundle.BYTES},
    **{name: st.integers(0, (1 << 64) - 1) for name in bundle.INTS},
    **{name: st.booleans() for name in bundle.BOOLS},
    "rtmrs": st.dictionaries(st.integers(0, 3), digests),
    "min_tcb": st.dictionaries(st.sampled_from(SNP_TCB_COMPONENTS), st.integers(0, 255)),
    "events": st.lists(events, max_size=4).map(tuple),
}
reference_strategy = st.builds(
    Reference,
    technology=st.sampled_from(Technology),
    expect=st.fixed_dictionaries({}, optional=EXPECT),
    config=st.dictionaries(st.text(), json_values, max_size=4),
    provenance=st.dictionaries(st.text(), json_values, max_size=4),
)


def test_every_expectation_has_a_form() -> None:
    forms = {*bundle.BYTES, *bundle.INTS, *bundle.BOOLS, *bundle.MAPS, bundle.EVENTS}
    assert forms == set(Expectations._fields)
    assert set(EXPECT) == forms


@settings(max_examples=300, deadline=None)
@given(st.lists(reference_strategy, max_size=4))
def test_read_gives_back_what_write_was_given(refs: list[Reference]) -> None:
    data = bundle.write(refs, PublishOptions())
    assert bundle.looks_like(data)
    back = bundle.read(data)
    assert back == refs
    for ours, theirs in zip(back, refs, strict=True):  # the same types, not just equal values
        for name, value in ours.expect.items():
            assert type(value) is type(theirs.expect[name]), name
        steps = zip(ours.expect.get("events", ()), theirs.expect.get("events", ()), strict=True)
        for step, original in steps:
            assert type(step.event_type) is type(original.event_type)


def test_real_references_round_trip(tmp_path: Path, debian_ovmf: Path) -> None:
    from cvmlaunch.analysis.space import axes_from_lists
    from cvmlaunch.guest.profile import load_profile
    from cvmlaunch.guest.spec import Vmm
    from cvmlaunch.measure.rtmr import boot_events, plan_boot_inputs
    from cvmlaunch.plan.tdx import build_td_plan
    from cvmlaunch.publish import references
    from tests.cli.test_measure_rtmr import dstack_profile

    root = Path(__file__).parents[2]
    snp = load_profile(root / "profiles" / "debian-ovmf-qemu-snp.toml").to_spec()
    axes = axes_from_lists(snp, {"--vcpus": [1, 2, 3], "--vmm": [Vmm.QEMU, Vmm.GCE]})
    refs = references(snp, axes, profile_bytes=b"profile", min_tcb={"bl": 3, "ucode": 115})
    td = load_profile(dstack_profile(tmp_path)).to_spec()
    events = tuple(boot_events(plan_boot_inputs(build_td_plan(td))))
    refs += [r._replace(expect={**r.expect, "events": events}) for r in references(td)]
    data = bundle.write(refs, PublishOptions())
    assert bundle.read(data) == refs
    assert read_any(data) == refs  # found among the formats by its content
    doc = json.loads(data)
    assert doc["format"] == "cvmlaunch-reference" and doc["version"] == 1
    first = doc["references"][0]
    assert first["expect"]["measurement"] == refs[0].expect["measurement"].hex()
    assert first["expect"]["min_tcb"] == {"bl": 3, "ucode": 115}
    assert first["provenance"]["profile_sha256"] is not None
    assert doc["references"][-1]["expect"]["rtmrs"].keys() == {"1", "2"}


def test_an_expiration_is_stated_in_utc() -> None:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2027, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    doc = json.loads(bundle.write([], PublishOptions(expiration=moment)))
    assert doc["expiration"] == "2027-01-01T00:00:00Z"


def doc_with(reference: dict[str, Any]) -> bytes:
    return json.dumps({"format": "cvmlaunch-reference", "version": 1,
                       "references": [reference]}).encode()  # fmt: skip


SNP = {"technology": "sev-snp", "config": {}, "provenance": {}}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{", "document: not JSON"),
        (
            b'{"format": "cvmlaunch-reference", "version": 2}',
            "version: this cvmlaunch reads version 1",
        ),
        (doc_with({**SNP, "technology": "sgx"}), "references[0].technology: expected one of"),
        (doc_with({**SNP, "expect": {"measurement": "zz"}}), "expect.measurement: expected hex"),
        (doc_with({**SNP, "expect": {"policy": "0x30000"}}), "expect.policy: expected an integer"),
        (doc_with({**SNP, "expect": {"rtmrs": {"4": "00"}}}), "expected an RTMR index 0..3"),
        (doc_with({**SNP, "expect": {"colour": 1}}), "expect.colour: not an audit expectation"),
        (doc_with({**SNP, "expect": {"events": [{}]}}), "events[0]: expected an object of"),
    ],
)
def test_an_unreadable_document_is_one_line(data: bytes, words: str) -> None:
    with pytest.raises(ProfileError, match=re.escape(words)) as e:
        bundle.read(data)
    assert "\n" not in str(e.value)


def test_a_step_that_is_not_an_event_is_refused() -> None:
    page = Step(0, StepKind.FIRMWARE, "page", 0x1000)
    ref = Reference(Technology.TDX, {"events": (page,)}, {}, {})
    with pytest.raises(ProfileError, match=r"events\[0\]: a firmware step is not carried"):
        bundle.write([ref], PublishOptions())


@pytest.mark.parametrize("document", [b'{"a":' + b"[" * 100_000, b"[" * 100_000])
def test_a_document_nested_past_the_recursion_limit_is_our_error(document: bytes) -> None:
    # json raises RecursionError for it: no format may let that escape.
    for reader in (read_any, bundle.read, rvps.read):
        with pytest.raises(ProfileError):
            reader(document)
