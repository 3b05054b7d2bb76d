"""Two sequences of RTMR events compared register by register: two CC event logs, or a log
and the boot events a TD profile predicts. For each RTMR, the first event where they part,
named by both sides (and, where one side is a prediction, by the profile fields behind it).
An event whose digest a prediction cannot know is not compared."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import zip_longest
from typing import Any

from cvmlaunch.abi.eventlog import RTMR_COUNT, event_type_name
from cvmlaunch.measure.document import event_json
from cvmlaunch.measure.rtmr import BOOT_RTMRS, event_causes
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.step import Step


class RegisterDiff(NamedTuple):
    """One RTMR: how many events each side extends into it, and where they first part."""

    rtmr: int
    events: tuple[int, int]
    at: int | None  # the index (within the register) of the first differing event
    a: Step | None  # A's event there (None: A has no more)
    b: Step | None
    causes: tuple[str, ...]  # profile fields, when a side is a prediction

    @property
    def same(self) -> bool:
        return self.at is None

    def text(self) -> str:
        if self.at is None:
            return f"RTMR{self.rtmr}: the same ({self.events[0]} events)"
        line = f"RTMR{self.rtmr}: event {self.at} differs: A {_told(self.a)} vs B {_told(self.b)}"
        return line + (f" (check {', '.join(self.causes)})" if self.causes else "")

    def doc(self) -> dict[str, Any]:
        return {
            "rtmr": self.rtmr,
            "events": list(self.events),
            "same": self.same,
            "at": self.at,
            "a": None if self.a is None else event_json(self.a),
            "b": None if self.b is None else event_json(self.b),
            "causes": list(self.causes),
        }


class EventDiff(NamedTuple):
    registers: tuple[RegisterDiff, ...]

    @property
    def same(self) -> bool:
        return all(r.same for r in self.registers)

    def text(self) -> str:
        verdict = "the same events" if self.same else "different events"
        return "\n".join([verdict, *(r.text() for r in self.registers)])

    def doc(self) -> dict[str, Any]:
        return {"same": self.same, "registers": [r.doc() for r in self.registers]}


def diff_events(
    a: Sequence[Step], b: Sequence[Step], *, predicted: tuple[bool, bool] = (False, False)
) -> EventDiff:
    """`a` against `b`, RTMR by RTMR; `predicted` says which side is a profile's prediction
    (its events name their causes; RTMR3, which no boot extends, is then not compared)."""
    registers = []
    for rtmr in range(BOOT_RTMRS if any(predicted) else RTMR_COUNT):
        ours = [s for s in a if s.rtmr == rtmr]
        theirs = [s for s in b if s.rtmr == rtmr]
        at, x, y = _first_difference(ours, theirs)
        causes: tuple[str, ...] = ()
        if at is not None:
            told = x if predicted[0] and x is not None else y if predicted[1] else None
            causes = event_causes(told) if told is not None else ()
        registers.append(RegisterDiff(rtmr, (len(ours), len(theirs)), at, x, y, causes))
    return EventDiff(tuple(registers))


def _first_difference(a: list[Step], b: list[Step]) -> tuple[int | None, Step | None, Step | None]:
    for n, (x, y) in enumerate(zip_longest(a, b)):
        if x is None or y is None:
            return n, x, y
        if x.contents is not None and y.contents is not None and x.contents != y.contents:
            return n, x, y
    return None, None, None


def _told(step: Step | None) -> str:
    if step is None:
        return "nothing (no more events)"
    digest = "not known offline" if step.contents is None else step.contents.hex()[:16] + "…"
    return f"{event_type_name(step.event_type or 0)} {step.label!r} {digest}"
