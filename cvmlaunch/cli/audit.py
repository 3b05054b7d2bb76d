"""`cvmlaunch audit`: verify an SEV-SNP report or a TDX quote offline and check its claims."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvmlaunch import log
from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text
from cvmlaunch.errors import AttestationError, FieldProblem, ProfileError
from cvmlaunch.guest.argtypes import hex_bytes, hex_bytes_any, integer, list_of

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from cvmlaunch.attest import Collateral
    from cvmlaunch.attest.amd import AmdCerts
    from cvmlaunch.attest.batch import Item
    from cvmlaunch.attest.evidence import Evidence
    from cvmlaunch.attest.expect import Expectations
    from cvmlaunch.attest.result import AuditResult
    from cvmlaunch.publish import Reference

_log = log.get_logger("cvmlaunch.cli")


def _rtmr(text: str) -> tuple[int, bytes]:
    index, eq, value = text.partition("=")
    if not eq or index not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError(f"expected N=HEX with N 0..3, got {text!r}")
    return int(index), hex_bytes(48)(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Verify an SEV-SNP attestation report or a TDX quote offline (signature, certificate "
        "chain to the pinned vendor roots) and check every field against the profile and the "
        "--expect flags. Genuine evidence alone does not say which guest it comes from: with "
        "no claim checked (no --profile, --expect-* or --min-* flag), the verdict is "
        "'no-claims' and the exit status 1, unless --allow-no-claims. "
        "Exit 0 pass, 1 a check failed or no claim was checked, 2 unusable input."
    )
    r = p.add_mutually_exclusive_group(required=True)
    r.add_argument("--report", type=Path, metavar="FILE",
                   help="SNP report (raw, MSG_REPORT_RSP, hex or base64) or TDX quote (raw, "
                   "hex or base64)")  # fmt: skip
    r.add_argument(
        "--reports",
        type=Path,
        metavar="DIR_OR_JSONL",
        help="audit many reports in one process, each against the same expectations: every "
        "regular file of a directory (by name; others skipped, logged with -v), or a JSON-lines "
        'file of {"report": base64 or hex, "event_log": base64 or JSON list, "certs": PEM or '
        'base64 strings, "name": ...}; a line per report (with --json one object: "reports", '
        'a result each, and "summary"); exit 0 only if every report passes; a report that '
        "cannot be audited is listed with its error and fails the run",
    )
    c = p.add_argument_group("SEV-SNP certificates (TDX quotes carry their own)")
    c.add_argument("--vcek", type=Path, metavar="FILE", help="VCEK, DER or PEM")
    c.add_argument("--vlek", type=Path, metavar="FILE", help="VLEK, DER or PEM")
    c.add_argument(
        "--certs",
        type=Path,
        metavar="DIR_OR_FILE",
        help="a directory of certificates, a PEM bundle, or an extended report's "
        "certificate table; a supplied ARK must equal the pinned one",
    )
    e = p.add_argument_group("expectations (flags override the profile)")
    e.add_argument("--profile", type=Path, metavar="P",
                   help="expect this guest: its measurement and launch parameters")  # fmt: skip
    e.add_argument("--reference", type=Path, metavar="FILE_OR_DIR",
                   help="expect one of the configurations of a published document (cvmlaunch "
                   "publish: json, rvps, go-sev-guest/go-tdx-guest, corim) or folder of "
                   "them (publish --output-dir): the one whose measurement the evidence "
                   "reports")  # fmt: skip
    e.add_argument("--expect-measurement", type=hex_bytes(48), metavar="HEX",
                   help="SNP MEASUREMENT or TDX MRTD")  # fmt: skip
    e.add_argument("--expect-report-data", type=hex_bytes_any, metavar="HEX",
                   help="up to 64 bytes, zero-padded")  # fmt: skip
    e.add_argument("--expect-host-data", type=hex_bytes(32), metavar="HEX", help="SNP")
    e.add_argument("--expect-policy", type=integer, metavar="INT", help="SNP guest POLICY")
    e.add_argument("--expect-vmpl", type=integer, metavar="N", help="SNP VMPL of the requester")
    e.add_argument("--expect-family-id", type=hex_bytes(16), metavar="HEX", help="SNP ID block")
    e.add_argument("--expect-image-id", type=hex_bytes(16), metavar="HEX", help="SNP ID block")
    e.add_argument("--expect-id-key-digest", type=hex_bytes(48), metavar="HEX", help="SNP")
    e.add_argument("--expect-author-key-digest", type=hex_bytes(48), metavar="HEX", help="SNP")
    e.add_argument("--min-guest-svn", type=integer, metavar="N", help="SNP GUEST_SVN minimum")
    e.add_argument("--expect-rtmr", type=_rtmr, action="append", metavar="N=HEX", help="TDX")
    e.add_argument("--expect-mrseam", type=hex_bytes(48), metavar="HEX", help="TDX")
    e.add_argument(
        "--min-tcb",
        metavar="TCB",
        help="SNP: component minimums, e.g. bl=3,tee=0,snp=8,ucode=115 (fmc= on Turin), "
        "checked on the reported, committed, current and launch TCB; TDX: TEE_TCB_SVN as "
        "32 hex digits, byte by byte",
    )
    e.add_argument("--allow-debug", action="store_true", help="accept a debuggable guest")
    e.add_argument(
        "--allow-no-claims",
        action="store_true",
        help="exit 0 when the evidence verifies but nothing was expected of it (it is still "
        "said: 'no claims checked', verdict no-claims)",
    )
    p.add_argument(
        "--event-log",
        type=Path,
        metavar="FILE",
        help="TDX: the CC event log (CCEL, with or without its ACPI table, or dstack's JSON "
        "list); it must replay to the quote's RTMR0-3, one check each",
    )
    t = p.add_argument_group("TCB status and revocation (offline collateral)")
    t.add_argument("--collateral", type=Path, metavar="FILE_OR_DIR",
                   help="TDX: Intel's TCB info, QE identity, PCK and root CA CRLs (dcap-qvl's "
                   "collateral JSON, or a directory of PCS responses with their issuer "
                   "chains); SEV-SNP: AMD's ARK-signed CRL (KDS, DER or PEM). Without it the "
                   "result says the TCB status was not evaluated")  # fmt: skip
    t.add_argument("--accept-tcb", type=list_of(str), metavar="STATUS,...",
                   help="TCB statuses that pass besides UpToDate, e.g. SWHardeningNeeded,"
                   "ConfigurationNeeded")  # fmt: skip
    t.add_argument("--accept-advisory", type=list_of(str), metavar="ID,...",
                   help="advisories (INTEL-SA-...) a passing platform may have open")  # fmt: skip
    p.add_argument("--now", metavar="ISO8601", help="verify certificates at this time")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.reports is not None:
        return _run_batch(args)
    from cvmlaunch.attest import TDX, audit, read_evidence
    from cvmlaunch.attest.amd import AmdCerts, gather
    from cvmlaunch.attest.files import read_bounded

    evidence = read_evidence(read_bounded(args.report, "an attestation report", flag="--report"))
    now = _now(args.now)
    expect = _expectations(args, evidence.kind, _claimed(evidence))
    certs = AmdCerts()
    if evidence.kind == TDX:
        given = [f for f in ("vcek", "vlek", "certs") if getattr(args, f) is not None]
        if given:
            raise ProfileError(
                [FieldProblem(f"--{given[0]}", "a TDX quote carries its own PCK chain")]
            )
    else:
        certs = gather(args.vcek, args.vlek, args.certs)
        if args.event_log is not None:
            reason = "replays against a TDX quote's RTMRs; an SEV-SNP report has none"
            raise ProfileError([FieldProblem("--event-log", reason)])
    event_log = None
    if args.event_log is not None:
        from cvmlaunch.attest.eventlog import MAX_LOG_SIZE

        what = "a CC event log"
        event_log = read_bounded(args.event_log, what, flag="--event-log", limit=MAX_LOG_SIZE)
    collateral = _collateral(args, evidence.kind, {})
    result = audit(evidence.data, certs=certs, expect=expect, now=now, event_log=event_log,
                   collateral=collateral)  # fmt: skip
    _log.info("audit.done", kind=result.kind, verdict=result.verdict,
              failed=[c.name for c in result.failures])  # fmt: skip
    if args.json:
        print(json_text(result.doc()))
    elif args.allow_no_claims:
        print(result.text(no_claims_hint="accepted: --allow-no-claims"))
    else:
        print(result.text(no_claims_hint="--profile, --expect-*, --min-*; or --allow-no-claims"))
    if result.verdict == "no-claims" and args.allow_no_claims:
        return EXIT_OK
    return EXIT_OK if result.verdict == "pass" else EXIT_MISMATCH


# The TCB statuses Intel names (TCB info tcbStatus); UpToDate always passes.
TCB_STATUSES = (
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked",
)  # fmt: skip


def _collateral(args: argparse.Namespace, kind: str, loaded: dict[str, Any]) -> Collateral | None:
    """The collateral `--collateral` gives for evidence of `kind` (read once per kind into
    `loaded`, for a batch), with the statuses and advisories that pass; None without it."""
    from cvmlaunch.attest import TDX, Collateral

    if args.collateral is None:
        for flag in ("--accept-tcb", "--accept-advisory"):
            if getattr(args, flag[2:].replace("-", "_")) is not None:
                raise ProfileError([FieldProblem(flag, "applies with --collateral")])
        return None
    accept = set(args.accept_tcb or ())
    unknown = sorted(accept - set(TCB_STATUSES))
    if unknown:
        reason = f"{unknown[0]!r} is no TCB status; expected some of {', '.join(TCB_STATUSES)}"
        raise ProfileError([FieldProblem("--accept-tcb", reason)])
    if kind not in loaded:
        loaded[kind] = _load_collateral(args.collateral, kind)
    policy = Collateral(accept_tcb=frozenset({"UpToDate", *accept}),
                        accept_advisories=frozenset(args.accept_advisory or ()))  # fmt: skip
    if kind == TDX:
        return policy._replace(tdx=loaded[kind])
    return policy._replace(amd_crl=loaded[kind])


def _load_collateral(path: Path, kind: str) -> Any:
    from cvmlaunch.attest import TDX

    if kind == TDX:
        from cvmlaunch.attest.collateral import load_collateral

        try:
            return load_collateral(path)
        except AttestationError as e:  # named by the flag that gave it
            text = str(e)
            raise AttestationError(
                text if text.startswith("--collateral") else f"--collateral {text}"
            ) from None
    from cvmlaunch.attest.amd_crl import load_amd_crl
    from cvmlaunch.attest.files import folder_files, read_bounded

    files = [path]
    if path.is_dir():  # the one file in it that is a CRL (a KDS download beside the certs)
        files = folder_files(path, "--collateral", most=64, skipped=lambda p, r: None)
    problems = []
    for file in files:
        data = read_bounded(file, "an AMD CRL", flag="--collateral")
        try:
            return load_amd_crl(data, f"--collateral {file}")
        except AttestationError as e:
            problems.append(str(e))
    reason = problems[0] if len(files) == 1 and problems else f"{path}: no AMD CRL in it"
    raise AttestationError(
        reason if reason.startswith("--collateral") else f"--collateral {reason}"
    )


def _now(text: str | None) -> datetime | None:
    if text is None:
        return None
    from datetime import datetime

    from cvmlaunch.attest.certs import utc
    from cvmlaunch.errors import AttestationError

    try:
        return utc(datetime.fromisoformat(text))
    except (ValueError, AttestationError):
        raise ProfileError(
            [FieldProblem("--now", f"expected an ISO 8601 time, e.g. 2025-09-01T00:00Z: {text!r}")]
        ) from None


def _expectations(
    args: argparse.Namespace,
    kind: str,
    claimed: bytes,
    documents: dict[Path, list[Reference]] | None = None,
) -> Expectations:
    """The expectations of the profile, or of the published configuration whose measurement
    is `claimed` (the evidence's), with the flags laid over them (`documents`: the
    reference documents read so far in this run)."""
    from cvmlaunch.attest.expect import OVERRIDE_FLAGS, Expectations, merged

    if args.profile is not None and args.reference is not None:
        reason = "give the expected guest once: --profile or --reference"
        raise ProfileError([FieldProblem("--reference", reason)])
    base = Expectations()
    if args.profile is not None:
        base = _profile_expectations(args.profile, kind)
    elif args.reference is not None:
        base = _reference_expectations(args.reference, kind, claimed, documents or {})
    flags = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in OVERRIDE_FLAGS}
    return merged(base, kind, flags)


def _claimed(evidence: Evidence) -> bytes:
    """The launch measurement `evidence` reports (SNP MEASUREMENT, TDX MRTD)."""
    from cvmlaunch.attest import TDX
    from cvmlaunch.attest.snp import parse_snp_report
    from cvmlaunch.attest.tdx import parse_tdx_quote

    if evidence.kind == TDX:
        return parse_tdx_quote(evidence.data).body.mrtd
    return parse_snp_report(evidence.data).measurement


# A published document: reference values of any number of configurations.
MAX_REFERENCE_SIZE = 64 << 20


def _reference_expectations(
    path: Path, kind: str, claimed: bytes, read: dict[Path, list[Reference]]
) -> Expectations:
    """What the configuration of `path` whose measurement is `claimed` must report (the
    first of the evidence's kind when none is: its checks then name the difference).
    `read` keeps the documents this run has read: a batch asks for every report."""
    from cvmlaunch.attest import TDX
    from cvmlaunch.attest.expect import Expectations
    from cvmlaunch.guest.spec import Technology

    if path not in read:
        read[path] = _reference_documents(path)
    technology = Technology.TDX if kind == TDX else Technology.SEV_SNP
    ours = [r for r in read[path] if r.technology is technology]
    if not ours:
        reason = f"{path} publishes no {technology} values, and the evidence is {kind}"
        raise ProfileError([FieldProblem("--reference", reason)])
    chosen = next((r for r in ours if r.expect.get("measurement") == claimed), ours[0])
    matched = chosen.expect.get("measurement") == claimed
    _log.info("audit.reference", path=str(path), configurations=len(ours), matched=matched,
              config=dict(chosen.config))  # fmt: skip
    known = set(Expectations._fields)
    unknown = sorted(set(chosen.expect) - known)
    if unknown:
        reason = f"{path}: {unknown[0]!r} is no claim an audit checks"
        raise ProfileError([FieldProblem("--reference", reason)])
    return Expectations(**chosen.expect)


# A folder of published documents (publish --output-dir): one per configuration.
MAX_REFERENCE_FILES = 1 << 16


def _reference_documents(path: Path) -> list[Reference]:
    """The references of the document `path`, or of every document in the folder `path`
    (its index, which names them, aside)."""
    from cvmlaunch.attest.files import folder_files, read_bounded
    from cvmlaunch.outputs import FOLDER_INDEX
    from cvmlaunch.publish import read_any

    if not path.is_dir():
        data = read_bounded(path, "a reference document", flag="--reference",
                            limit=MAX_REFERENCE_SIZE)  # fmt: skip
        return read_any(data)

    def skipped(file: Path, reason: str) -> None:
        _log.info("audit.reference_skipped", path=str(file), reason=reason)

    def excluded(name: str) -> str | None:
        return "the folder's index" if name == FOLDER_INDEX else None

    files = folder_files(path, "--reference", most=MAX_REFERENCE_FILES, skipped=skipped,
                         excluded=excluded)  # fmt: skip
    out: list[Reference] = []
    for file in files:
        data = read_bounded(file, "a reference document", flag="--reference",
                            limit=MAX_REFERENCE_SIZE)  # fmt: skip
        try:
            out += read_any(data)
        except ProfileError as e:
            reason = f"{file}: {e}"
            raise ProfileError([FieldProblem("--reference", reason)]) from None
    if not out:
        raise ProfileError([FieldProblem("--reference", f"{path} holds no reference document")])
    return out


def _profile_expectations(path: Path, kind: str) -> Expectations:
    from cvmlaunch.attest.expect import for_spec, refuse_other_guest
    from cvmlaunch.guest.profile import load_profile
    from cvmlaunch.measure import measure
    from cvmlaunch.plan import build_plan

    spec = load_profile(path).to_spec()
    refuse_other_guest(spec, kind)
    result = measure(build_plan(spec))
    _log.info("audit.expected_measurement", profile=str(path), measurement=result.digest.hex())
    return for_spec(spec, result.digest, result.rtmrs, result.events)


def _run_batch(args: argparse.Namespace) -> int:
    """Every report of `--reports` through one Auditor (each certificate chain verified
    once), a result each, printed as it is audited. Exit 0 only if every report passes; a
    report that cannot be audited is listed with its error and fails the run (1); what
    stops the whole run (the path, the flags, a file that is no batch) is a one-line error
    (2) before any output."""
    import itertools
    import json

    from cvmlaunch.attest.amd import AmdCerts, gather
    from cvmlaunch.attest.batch import batch_items
    from cvmlaunch.errors import AttestationError

    if args.event_log is not None:
        reason = "with --reports, give each quote's log in its JSON-lines record"
        raise ProfileError([FieldProblem("--event-log", reason)])
    now = _now(args.now)
    # Given once for the run: the certificates of SNP reports whose record brings none (a
    # cloud's VLEK, or many reports of one chip). TDX quotes carry their own.
    shared = AmdCerts()
    if any(getattr(args, f) is not None for f in ("vcek", "vlek", "certs")):
        shared = gather(args.vcek, args.vlek, args.certs)
    outcomes = _batch_outcomes(args, batch_items(args.reports), shared, now)
    first = next(outcomes, None)  # a batch that cannot be read fails here, before output
    if first is None:
        raise AttestationError(f"--reports {args.reports}: no reports")
    counts = {"passed": 0, "failed": 0, "not_audited": 0}
    if args.json:
        print('{"reports": [', end="")
    for number, (name, result, error) in enumerate(itertools.chain([first], outcomes)):
        if result is None:
            counts["not_audited"] += 1
        elif result.verdict == "pass" or (result.verdict == "no-claims" and args.allow_no_claims):
            counts["passed"] += 1
        else:
            counts["failed"] += 1
        if args.json:
            doc = {"name": name, **result.doc()} if result is not None else {
                "name": name, "verdict": "error", "error": error}  # fmt: skip
            print(("\n" if number == 0 else ",\n") + json.dumps(doc), end="")
        else:
            print(_result_line(args, name, result, error))
    _log.info("audit.batch_done", **counts)
    if args.json:
        print(f'\n], "summary": {json.dumps(counts)}}}')
    else:
        print(f"{sum(counts.values())} reports: {counts['passed']} passed, "
              f"{counts['failed']} failed, {counts['not_audited']} not audited")  # fmt: skip
    return EXIT_OK if counts["passed"] == sum(counts.values()) else EXIT_MISMATCH


def _batch_outcomes(
    args: argparse.Namespace, items: Iterator[Item], shared: AmdCerts, now: datetime | None
) -> Iterator[tuple[str, AuditResult | None, str | None]]:
    """(name, result, None) for each report audited, (name, None, why) for each not."""
    from cvmlaunch.attest import TDX, Auditor, read_evidence
    from cvmlaunch.cli.common import one_line
    from cvmlaunch.errors import CvmlaunchError

    auditor = Auditor()
    expectations: dict[tuple[str, bytes], Expectations] = {}
    documents: dict[Path, list[Reference]] = {}
    collaterals: dict[str, Any] = {}  # read once per evidence kind, verified once (Auditor)
    for item in items:
        try:
            if item.error is not None:
                yield item.name, None, one_line(item.error)
                continue
            evidence = read_evidence(item.evidence)
            if evidence.kind == TDX and item.certs is not None:
                reason = f'{item.name}: "certs" given, but a TDX quote carries its own'
                yield item.name, None, one_line(reason)
                continue
            claimed = _claimed(evidence)
            key = (evidence.kind, claimed if args.reference is not None else b"")
            if key not in expectations:
                expectations[key] = _expectations(args, evidence.kind, claimed, documents)
            result = auditor.audit(
                evidence.data,
                certs=item.certs if item.certs is not None else shared,
                expect=expectations[key],
                now=now,
                event_log=item.event_log,
                collateral=_collateral(args, evidence.kind, collaterals),
            )
        except CvmlaunchError as e:  # this report is unusable; the next one may not be
            _log.info("audit.report_error", name=item.name, error=str(e))
            yield item.name, None, one_line(str(e))
            continue
        yield item.name, result, None


def _result_line(
    args: argparse.Namespace, name: str, result: AuditResult | None, error: str | None
) -> str:
    from cvmlaunch.cli.common import one_line

    name = one_line(name)  # a file name may hold a line break: each result stays one line
    if result is None:
        return f"{name}: error: {error}"
    failed = [c.name for c in result.failures]
    line = f"{name}: {result.verdict} ({result.kind}; {len(result.checks)} checks"
    line += f", failed: {', '.join(failed)})" if failed else ")"
    if result.verdict == "no-claims" and not args.allow_no_claims:
        line += ": nothing was expected of it (--profile, --expect-*, --min-*)"
    return line
