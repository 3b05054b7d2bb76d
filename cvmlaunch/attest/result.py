"""The outcome of an audit: every check by name, and the parsed evidence."""

from __future__ import annotations

from typing import Any

from cvmlaunch.namedtuple import NamedTuple


class Check(NamedTuple):
    """One named check. `expected`/`actual` are short human-readable values (hex, numbers,
    or a reason), so a failure explains itself without the rest of the result."""

    name: str
    expected: str
    actual: str
    ok: bool

    def doc(self) -> dict[str, Any]:
        return self._asdict()


def check(name: str, expected: object, actual: object, ok: bool | None = None) -> Check:
    """A check that passes when `ok`, or (without `ok`) when expected equals actual."""
    passed = expected == actual if ok is None else ok
    return Check(name, _text(expected), _text(actual), passed)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


NO_CLAIMS = "no claims checked"
NOT_EVALUATED = (
    "not evaluated (no --collateral: whether the platform's TCB is current or its keys "
    "revoked is unknown)"
)


class AuditResult(NamedTuple):
    """All checks of one audit (none short-circuits another) and the parsed evidence.

    `claims_checked` counts the checks that compared a reported value with an expected one
    (a measurement, policy, report data...: from a profile or expectation flags). With none,
    the evidence may be genuine but says nothing about which guest it comes from: the
    verdict is then "no-claims", not "pass".
    """

    kind: str  # "sev-snp" or "tdx"
    checks: tuple[Check, ...]
    report: dict[str, Any]
    claims_checked: int
    # The platform's TCB status and revocation as the verification collateral says (TDX:
    # "UpToDate", "OutOfDate (INTEL-SA-…)"; SEV-SNP: "not revoked"), or None: not evaluated,
    # which the result says rather than pass in silence.
    collateral: str | None = None

    @property
    def passed(self) -> bool:
        """Every check passed (signatures, chain, format, and the claims, if any)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        """ "fail" if a check failed; else "pass", or "no-claims" if nothing was claimed."""
        if not self.passed:
            return "fail"
        return "pass" if self.claims_checked else "no-claims"

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def text(self, no_claims_hint: str = "give a profile or expected values") -> str:
        """One line per check, failures marked, the TCB status (or that it was not
        evaluated), a line if no claim was checked (ending in `no_claims_hint`), then the
        verdict."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = []
        for c in self.checks:
            if c.ok:
                lines.append(f"  ok    {c.name:<{width}}  {c.actual}")
            else:
                lines.append(f"  FAIL  {c.name:<{width}}  {c.actual} (expected {c.expected})")
        lines.append(f"TCB status: {self.collateral or NOT_EVALUATED}")
        if not self.claims_checked:
            lines.append(f"{NO_CLAIMS}: nothing was expected of this guest ({no_claims_hint})")
        failed = len(self.failures)
        summary = f"verdict: {self.verdict} ({self.kind}; {len(self.checks)} checks"
        lines.append(summary + (f", {failed} failed)" if failed else ")"))
        return "\n".join(lines)

    def doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "verdict": self.verdict,
            "claims_checked": self.claims_checked,
            "tcb_status": {
                "evaluated": self.collateral is not None,
                "status": self.collateral or NOT_EVALUATED,
            },
            "checks": [c.doc() for c in self.checks],
            "report": self.report,
        }
