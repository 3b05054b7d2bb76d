"""Expectations from flags laid over a profile's (`merged`), and the guest a piece of
evidence can be audited against (`refuse_other_guest`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.attest.expect import (
    OVERRIDE_FLAGS,
    Expectations,
    merged,
    refuse_other_guest,
)
from cvmlaunch.errors import AttestationError, ProfileError
from cvmlaunch.guest.spec import GuestSpec, Technology

M48 = bytes(range(48))
BASE = Expectations(measurement=M48, policy=0x30000, host_data=b"\1" * 32)


def refused(kind: str, overrides: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ProfileError) as e:
        merged(Expectations(), kind, overrides)
    (problem,) = e.value.problems
    return problem.field, problem.reason


@pytest.mark.parametrize(
    ("flag", "value"), [("--expect-rtmr", [(0, M48)]), ("--expect-mrseam", M48)]
)
def test_a_tdx_flag_against_an_snp_report_is_refused(flag: str, value: object) -> None:
    assert refused("sev-snp", {flag: value}) == (flag, "applies to TDX quotes only")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--expect-host-data", b"\0" * 32),
        ("--expect-policy", 0x30000),
        ("--expect-vmpl", 0),
        ("--expect-family-id", b"\0" * 16),
        ("--expect-image-id", b"\0" * 16),
        ("--expect-id-key-digest", M48),
        ("--expect-author-key-digest", M48),
        ("--min-guest-svn", 1),
    ],
)
def test_an_snp_flag_against_a_tdx_quote_is_refused(flag: str, value: object) -> None:
    assert refused("tdx", {flag: value}) == (flag, "applies to SEV-SNP reports only")


def test_the_first_wrong_flag_is_named() -> None:
    overrides = {"--min-guest-svn": 1, "--expect-policy": 0, "--expect-measurement": M48}
    assert refused("tdx", overrides)[0] == "--expect-policy"


def test_flags_override_the_base_and_the_rest_is_kept() -> None:
    expect = merged(BASE, "sev-snp", {"--expect-policy": 0x70000, "--expect-host-data": None})
    assert expect == BASE._replace(policy=0x70000)
    assert merged(BASE, "sev-snp", {}) == BASE


def test_allow_debug_is_set_either_way() -> None:
    allowing = BASE._replace(allow_debug=True)
    assert not merged(allowing, "sev-snp", {"--allow-debug": False}).allow_debug
    assert merged(BASE, "tdx", {"--allow-debug": True}).allow_debug


def test_report_data_is_padded_and_empty_is_refused() -> None:
    expect = merged(Expectations(), "tdx", {"--expect-report-data": b"\1\2"})
    assert expect.report_data == b"\1\2" + bytes(62)
    field, reason = refused("sev-snp", {"--expect-report-data": b""})
    assert (field, reason) == ("--expect-report-data", "empty; give 1..64 bytes")
    with pytest.raises(AttestationError, match="at most 64 bytes"):
        merged(Expectations(), "tdx", {"--expect-report-data": bytes(65)})


def test_rtmrs_each_index_once() -> None:
    expect = merged(Expectations(), "tdx", {"--expect-rtmr": [(2, M48), (0, bytes(48))]})
    assert expect.rtmrs == {2: M48, 0: bytes(48)}
    field, reason = refused("tdx", {"--expect-rtmr": [(1, M48), (3, M48), (1, bytes(48))]})
    assert (field, reason) == ("--expect-rtmr", "RTMR1 given twice; give each index once")


def test_min_tcb_is_read_for_the_kind_of_evidence() -> None:
    snp = merged(Expectations(), "sev-snp", {"--min-tcb": "bl=3,snp=8"})
    assert snp.min_tcb == {"bl": 3, "snp": 8} and snp.min_tee_tcb_svn is None
    tdx = merged(Expectations(), "tdx", {"--min-tcb": "03" + "00" * 15})
    assert tdx.min_tee_tcb_svn == b"\3" + bytes(15) and tdx.min_tcb is None
    with pytest.raises(AttestationError, match="--min-tcb: expected TEE_TCB_SVN"):
        merged(Expectations(), "tdx", {"--min-tcb": "bl=3"})


def test_unknown_flags_and_kinds_are_refused() -> None:
    assert refused("tdx", {"--expect-xfam": 3})[0] == "--expect-xfam"
    with pytest.raises(AttestationError, match="unknown kind of evidence"):
        merged(Expectations(), "sev-es", {})


def test_every_override_flag_is_an_audit_flag() -> None:
    from cvmlaunch.cli import audit

    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    known = {s for action in parser._actions for s in action.option_strings}
    assert set(OVERRIDE_FLAGS) <= known


@pytest.mark.parametrize(
    ("technology", "kind", "evidence"),
    [
        (Technology.SEV_ES, "sev-snp", "an SEV-SNP report"),
        (Technology.TDX, "sev-snp", "an SEV-SNP report"),
        (Technology.SEV_SNP, "tdx", "a TDX quote"),
    ],
)
def test_a_profile_of_another_guest_is_refused(
    technology: Technology, kind: str, evidence: str
) -> None:
    with pytest.raises(ProfileError) as e:
        refuse_other_guest(GuestSpec(technology, Path("/fw.fd")), kind)
    (problem,) = e.value.problems
    assert problem.field == "--profile"
    assert problem.reason == f"a {technology} profile, but --report is {evidence}"


def test_a_profile_of_the_evidence_guest_is_accepted() -> None:
    refuse_other_guest(GuestSpec(Technology.SEV_SNP, Path("/fw.fd")), "sev-snp")
    refuse_other_guest(GuestSpec(Technology.TDX, Path("/fw.fd")), "tdx")
