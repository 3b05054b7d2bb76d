"""The outcome of an audit: every check by name, and the parsed evidence."""

from __future__ import annotations

from typing import Any, NamedTuple


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


class AuditResult(NamedTuple):
    """All checks of one audit (none short-circuits another) and the parsed evidence."""

    kind: str  # "sev-snp" or "tdx"
    checks: tuple[Check, ...]
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def text(self) -> str:
        """One line per check, failures marked, then the verdict."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = []
        for c in self.checks:
            if c.ok:
                lines.append(f"  ok    {c.name:<{width}}  {c.actual}")
            else:
                lines.append(f"  FAIL  {c.name:<{width}}  {c.actual} (expected {c.expected})")
        failed = len(self.failures)
        summary = f"verdict: {self.verdict} ({self.kind}; {len(self.checks)} checks"
        lines.append(summary + (f", {failed} failed)" if failed else ")"))
        return "\n".join(lines)

    def doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "verdict": self.verdict,
            "checks": [c.doc() for c in self.checks],
            "report": self.report,
        }
