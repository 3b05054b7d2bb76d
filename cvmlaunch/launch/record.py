"""The launch record: what was launched, how, what the platform reported, and the verdict."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from cvmlaunch.kvm import MapCall
from cvmlaunch.plan.step import Step


class Verdict(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    UNATTESTED = "unattested"  # nothing reported a digest: a rehearsal, or real SNP/TDX


def divergence(steps: list[Step], calls: list[MapCall]) -> dict[str, object]:
    """The first map_memory call that differs from the plan, or the finalize step."""
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


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def dumps(doc: dict[str, object]) -> str:
    return json.dumps(doc, indent=2) + "\n"
