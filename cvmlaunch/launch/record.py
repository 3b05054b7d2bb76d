"""The launch record: what was launched, how, what the platform reported, and the verdict."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from cvmlaunch.kvm import MapCall
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.step import Step, StepKind


class Verdict(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    UNATTESTED = "unattested"  # nothing reported a digest: a rehearsal, or real SNP/TDX


class FirmwareDigests(NamedTuple):
    """SNP: the precomputed digest of the firmware pages a plan was measured with
    (`firmware.digest`), and what the pages it hands the kernel measure to."""

    given: bytes
    measured: bytes


def divergence(
    steps: list[Step], calls: list[MapCall], firmware: FirmwareDigests | None = None
) -> dict[str, object]:
    """The first map_memory call that differs from the plan (or, with a precomputed
    `firmware` digest that its pages do not measure to, the firmware step), or the finalize
    step."""
    for number, (step, call) in enumerate(zip(steps, calls, strict=False)):
        source = None if step.source is None else hashlib.sha256(step.source).digest()
        expected = (step.gpa, step.pages, source)
        actual = (call.gpa, call.pages, call.source_sha256)
        if expected != actual:
            return {
                "step": number,
                "label": step.label,
                "expected": _step_json(*expected),
                "actual": _step_json(*actual),
            }
        if step.kind is StepKind.FIRMWARE and firmware and firmware.given != firmware.measured:
            return {
                "step": number,
                "label": step.label,
                "field": "firmware.digest",
                "expected": {"digest": firmware.given.hex()},
                "actual": {"digest": firmware.measured.hex()},
                "reason": "the expected measurement starts from the precomputed firmware.digest"
                f" {firmware.given.hex()}, but the firmware pages handed to the kernel measure"
                f" to {firmware.measured.hex()}: firmware.digest is wrong for this image",
            }
    if len(steps) != len(calls):
        return {"step": min(len(steps), len(calls)), "reason": "a different number of steps"}
    return {
        "step": "finalize",
        "reason": "every populate step matched the plan: the difference lies in what the "
        "platform adds at finalize (vCPU state / VMSAs, TD configuration) or in its order",
    }


def _step_json(gpa: int, pages: int, sha256: bytes | None) -> dict[str, object]:
    return {"gpa": f"{gpa:#x}", "pages": pages, "source_sha256": sha256.hex() if sha256 else None}


class LaunchRecord(NamedTuple):
    """Everything `cvmlaunch launch` reports; `doc` is the JSON document."""

    verdict: Verdict
    expected: bytes
    reported: bytes | None
    backend: str
    reason: str
    doc: dict[str, object]


def dumps(doc: dict[str, object]) -> str:
    return json.dumps(doc, indent=2) + "\n"
