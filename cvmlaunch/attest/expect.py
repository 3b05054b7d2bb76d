"""What a report or quote must say: the expectations an audit validates against.

They come from a profile (the measurement computed by `measure/`, the launch parameters it
fixes) and/or from flags, which `merged` lays over them. A field left as None is not checked;
`allow_debug` is the only claim checked by default, because a debuggable guest's memory is
open to the host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cvmlaunch.errors import AttestationError, FieldProblem, ProfileError
from cvmlaunch.guest.technology import Technology
from cvmlaunch.namedtuple import NamedTuple

if TYPE_CHECKING:  # an audit without a profile needs neither (their imports cost ~10 ms)
    from cvmlaunch.guest.spec import GuestSpec
    from cvmlaunch.plan.step import Step

REPORT_DATA_SIZE = 64
TEE_TCB_SVN_SIZE = 16
# TCB_VERSION components (AMD SEV-SNP ABI 56860, TCB_VERSION); fmc exists from Turin on.
SNP_TCB_COMPONENTS = ("fmc", "bl", "tee", "snp", "ucode")


class Expectations(NamedTuple):
    """Expected claims. SNP MEASUREMENT and TDX MRTD share `measurement`."""

    measurement: bytes | None = None
    report_data: bytes | None = None
    allow_debug: bool = False
    # SEV-SNP
    policy: int | None = None
    host_data: bytes | None = None
    vmpl: int | None = None
    min_tcb: Mapping[str, int] | None = None
    # SEV-SNP ID block (SNP_LAUNCH_FINISH): who signed the launch, and what they named it.
    family_id: bytes | None = None
    image_id: bytes | None = None
    id_key_digest: bytes | None = None
    author_key_digest: bytes | None = None
    min_guest_svn: int | None = None
    # TDX
    td_attributes: int | None = None
    xfam: int | None = None
    mrconfigid: bytes | None = None
    mrowner: bytes | None = None
    mrownerconfig: bytes | None = None
    rtmrs: Mapping[int, bytes] | None = None
    # The boot events the profile predicts (measure/rtmr.py): an event log is compared with
    # them event by event.
    events: tuple[Step, ...] | None = None
    mrseam: bytes | None = None
    min_tee_tcb_svn: bytes | None = None


# The expectations only one kind of evidence carries a claim for.
_ONLY_FOR = {
    "SEV-SNP": (
        *("policy", "host_data", "vmpl", "min_tcb", "family_id", "image_id"),
        *("id_key_digest", "author_key_digest", "min_guest_svn"),
    ),
    "TDX": (
        *("td_attributes", "xfam", "mrconfigid", "mrowner", "mrownerconfig"),
        *("rtmrs", "events", "mrseam", "min_tee_tcb_svn"),
    ),
}


def refuse_others(expect: Expectations, evidence: str) -> None:
    """AttestationError if `expect` sets a field that `evidence` ("SEV-SNP" or "TDX") has
    no claim for: a check that cannot run must not pass silently."""
    for kind, fields in _ONLY_FOR.items():
        for field in fields:
            if kind != evidence and getattr(expect, field) is not None:
                article = "an" if kind.startswith("S") else "a"
                raise AttestationError(
                    f"{field}: {article} {kind} expectation; {evidence} evidence has no such claim"
                )


U32_MAX, U64_MAX = (1 << 32) - 1, (1 << 64) - 1
# The integer expectations and the values their report or quote field can hold.
_RANGES = {
    "policy": (U64_MAX, "a 64-bit POLICY"),
    "vmpl": (3, "a VMPL"),
    "min_guest_svn": (U32_MAX, "a 32-bit GUEST_SVN"),
    "td_attributes": (U64_MAX, "64-bit TDATTRIBUTES"),
    "xfam": (U64_MAX, "a 64-bit XFAM"),
}


def _range_problem(field: str, value: object) -> str | None:
    """Why `value` cannot be the integer expectation `field`, or None if it can."""
    high, what = _RANGES[field]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high:
        return None
    shown = f"{high:#x}" if high > 0xFFFF else str(high)
    return f"expected 0..{shown} ({what}), got {value!r}"


def refuse_out_of_range(expect: Expectations) -> None:
    """AttestationError naming the field if an integer expectation is a value its field
    cannot hold (VMPL 5): such a check could only fail, which would read as a mismatch."""
    for field in _RANGES:
        value = getattr(expect, field)
        problem = None if value is None else _range_problem(field, value)
        if problem:
            raise AttestationError(f"{field}: {problem}")


def report_data(value: bytes) -> bytes:
    """REPORT_DATA/REPORTDATA as the guest supplies it: up to 64 bytes, zero-padded (a
    32-byte nonce or hash is the common case)."""
    if len(value) > REPORT_DATA_SIZE:
        raise AttestationError(f"report data: expected at most 64 bytes, got {len(value)}")
    return value.ljust(REPORT_DATA_SIZE, b"\0")


def parse_snp_min_tcb(text: str) -> dict[str, int]:
    """`bl=3,tee=0,snp=8,ucode=115` (any subset; `fmc=` for Turin) as component minimums."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if (
            not eq
            or name not in SNP_TCB_COMPONENTS
            or not re.fullmatch("[0-9]{1,3}", value)
            or int(value) > 255
        ):
            raise AttestationError(
                f"--min-tcb: expected COMPONENT=0..255 with COMPONENT one of "
                f"{', '.join(SNP_TCB_COMPONENTS)}, got {part!r}"
            )
        if name in out:
            raise AttestationError(f"--min-tcb: {name} given twice; give each component once")
        out[name] = int(value)
    if not out:
        raise AttestationError("--min-tcb: no component given")
    return out


def parse_tee_tcb_svn(text: str) -> bytes:
    """A TDX TEE_TCB_SVN minimum: 16 bytes as 32 hex digits, compared byte by byte."""
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        value = b""
    if len(value) != TEE_TCB_SVN_SIZE:
        raise AttestationError(f"--min-tcb: expected TEE_TCB_SVN as 32 hex digits, got {text!r}")
    return value


def for_spec(
    spec: GuestSpec,
    measurement: bytes,
    rtmrs: Sequence[bytes | None] | None = None,
    events: Sequence[Step] | None = None,
) -> Expectations:
    """What a guest launched from `spec` must report: its launch `measurement` (from
    `measure/`), the launch parameters the platform puts in the report, and (a TD whose
    boot events are predicted) the RTMRs the boot leaves. RTMR3 and any register holding
    a digest not known offline are not claimed: the boot does not fix them."""
    if spec.technology not in (Technology.SEV_SNP, Technology.TDX):
        raise AttestationError(f"a {spec.technology} guest has no attestation report to audit")
    expected = Expectations(measurement, **spec.expectations())
    if spec.id_block is not None:
        from cvmlaunch.measure.idblock import expectations

        expected = expected._replace(**expectations(spec.id_block))
    if rtmrs is not None:
        booted = {n: value for n, value in enumerate(rtmrs[:3]) if value is not None}
        expected = expected._replace(rtmrs=booted or None)
    if events is not None:
        expected = expected._replace(events=tuple(events))
    return expected


# The evidence kinds ("sev-snp", "tdx", as `read_evidence` names them) by their names above.
_EVIDENCE = {Technology.SEV_SNP: "SEV-SNP", Technology.TDX: "TDX"}
_EVIDENCE_PLURAL = {Technology.SEV_SNP: "SEV-SNP reports", Technology.TDX: "TDX quotes"}
_EVIDENCE_ONE = {Technology.SEV_SNP: "an SEV-SNP report", Technology.TDX: "a TDX quote"}

# The flags that set one expectation each, in the order they are checked, and its field.
_FLAG_FIELDS = {
    "--expect-measurement": "measurement",
    "--expect-report-data": "report_data",
    "--allow-debug": "allow_debug",
    "--expect-host-data": "host_data",
    "--expect-policy": "policy",
    "--expect-vmpl": "vmpl",
    "--expect-family-id": "family_id",
    "--expect-image-id": "image_id",
    "--expect-id-key-digest": "id_key_digest",
    "--expect-author-key-digest": "author_key_digest",
    "--min-guest-svn": "min_guest_svn",
    "--expect-rtmr": "rtmrs",
    "--expect-mrseam": "mrseam",
}
# The flags `merged` takes; `--min-tcb` sets min_tcb (SEV-SNP) or min_tee_tcb_svn (TDX).
OVERRIDE_FLAGS = (*_FLAG_FIELDS, "--min-tcb")


def merged(base: Expectations, kind: str, overrides: Mapping[str, Any]) -> Expectations:
    """`base` (e.g. a profile's expectations) with the flags of `overrides` laid over it,
    for evidence of `kind` ("sev-snp" or "tdx").

    `overrides` maps flags (OVERRIDE_FLAGS) to their parsed values, None for a flag not
    given: bytes or ints as the field takes them, except `--expect-report-data` (1..64
    bytes, zero-padded here), `--expect-rtmr` ((index, value) pairs) and `--min-tcb` (its
    text). ProfileError names the flag for one the evidence has no claim for, a number its
    field cannot hold, empty report data or an RTMR index given twice; AttestationError for
    a `--min-tcb` that does not parse.
    """
    evidence = _evidence(kind)
    given = {flag: value for flag, value in overrides.items() if value is not None}
    unknown = [flag for flag in given if flag not in OVERRIDE_FLAGS]
    if unknown:
        raise ProfileError([FieldProblem(unknown[0], "not an expectation flag")])
    other = next(e for e in _EVIDENCE if e is not evidence)
    unclaimed = _ONLY_FOR[_EVIDENCE[other]]
    wrong = [f for f, field in _FLAG_FIELDS.items() if f in given and field in unclaimed]
    if wrong:
        raise ProfileError([FieldProblem(wrong[0], f"applies to {_EVIDENCE_PLURAL[other]} only")])
    for flag, field in _FLAG_FIELDS.items():
        problem = (
            _range_problem(field, given[flag]) if flag in given and field in _RANGES else None
        )
        if problem:
            raise ProfileError([FieldProblem(flag, problem)])
    changes = {_FLAG_FIELDS[flag]: value for flag, value in given.items() if flag in _FLAG_FIELDS}
    if "report_data" in changes:
        if not changes["report_data"]:  # an unset $NONCE must not expect all zeros
            raise ProfileError([FieldProblem("--expect-report-data", "empty; give 1..64 bytes")])
        changes["report_data"] = report_data(changes["report_data"])
    if "rtmrs" in changes:
        indexes = [index for index, _ in changes["rtmrs"]]
        repeated = next((i for i in indexes if indexes.count(i) > 1), None)
        if repeated is not None:
            reason = f"RTMR{repeated} given twice; give each index once"
            raise ProfileError([FieldProblem("--expect-rtmr", reason)])
        changes["rtmrs"] = dict(changes["rtmrs"])
    if "--min-tcb" in given:
        if evidence is Technology.SEV_SNP:
            changes["min_tcb"] = parse_snp_min_tcb(given["--min-tcb"])
        else:
            changes["min_tee_tcb_svn"] = parse_tee_tcb_svn(given["--min-tcb"])
    expect: Expectations = base._replace(**changes)
    return expect


def refuse_other_guest(spec: GuestSpec, kind: str) -> None:
    """ProfileError (naming `--profile`) unless `spec` is a guest whose evidence is of
    `kind` ("sev-snp" or "tdx"): checked before the profile is measured."""
    evidence = _evidence(kind)
    if spec.technology is not evidence:
        reason = f"a {spec.technology} profile, but --report is {_EVIDENCE_ONE[evidence]}"
        raise ProfileError([FieldProblem("--profile", reason)])


def _evidence(kind: str) -> Technology:
    if kind not in _EVIDENCE:
        raise AttestationError(f"unknown kind of evidence {kind!r} (known: sev-snp, tdx)")
    return Technology(kind)
