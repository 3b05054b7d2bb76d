"""cvmlaunch's own reference document (`--format json`): every value of every reference,
with the configuration it is for and where it comes from, read back exactly.

    {"format": "cvmlaunch-reference", "version": 1,
     "expiration": "2027-01-01T00:00:00Z",            (only when one is given)
     "references": [{"technology": "sev-snp", "config": {...},
                     "expect": {"measurement": "<hex>", "policy": 196608, ...},
                     "provenance": {...}}]}

`expect` is keyed by audit expectation name: byte strings as lowercase hex, integers and
booleans as JSON numbers and booleans, `rtmrs` as {"1": hex}, `min_tcb` as {component: SPL},
and `events` (the boot events a TD's RTMRs come from) as a list of objects with each event's
number, label, register, TCG type, digest and logged data. `config` and `provenance` are
JSON already (measure.sweep.point_doc, publish.references).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.spec import Technology
from cvmlaunch.publish import PublishOptions, Reference, json_document, json_object, utc

FORMAT = "cvmlaunch-reference"
VERSION = 1
SOURCE = "reference document"

# Expectation name -> how its value is written. Together they are every field of
# attest.Expectations (a test holds them to it).
BYTES = (
    *("measurement", "report_data", "host_data", "family_id", "image_id", "id_key_digest"),
    *("author_key_digest", "mrconfigid", "mrowner", "mrownerconfig", "mrseam"),
    "min_tee_tcb_svn",
)
INTS = ("policy", "vmpl", "min_guest_svn", "td_attributes", "xfam")
BOOLS = ("allow_debug",)
MAPS = ("rtmrs", "min_tcb")
EVENTS = "events"

# The Step fields an event carries here; an event step with any other field set (a parsed
# log's per-bank digests or decoded details) is refused rather than cut short.
_EVENT_FIELDS = ("number", "label", "gpa", "size", "rtmr", "mr_index", "event_type")
_EVENT_BYTES = ("contents", "digest", "event_data")


def _problem(field: str, reason: str) -> ProfileError:
    return ProfileError([FieldProblem(field, reason)], SOURCE)


# ---- writing -------------------------------------------------------------------------------


def write(references: Sequence[Reference], options: PublishOptions) -> bytes:
    """The document of `references`; `options.expiration` is stated when given."""
    if options.signing_key is not None:
        raise ProfileError(
            [FieldProblem("--signing-key", "the JSON document is not signed; use --format corim")]
        )
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if options.expiration is not None:
        doc["expiration"] = utc(options.expiration).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["references"] = [
        {
            "technology": str(r.technology),
            "config": dict(r.config),
            "expect": {name: _encoded(name, value) for name, value in r.expect.items()},
            "provenance": dict(r.provenance),
        }
        for r in references
    ]
    return (json.dumps(doc, indent=2) + "\n").encode()


def _encoded(name: str, value: Any) -> Any:
    if name in BYTES:
        return value.hex()
    if name in INTS or name in BOOLS:
        return value
    if name == "rtmrs":
        return {str(index): digest.hex() for index, digest in value.items()}
    if name == "min_tcb":
        return dict(value)
    if name == EVENTS:
        return [_event_doc(n, step) for n, step in enumerate(value)]
    raise ProfileError([FieldProblem(name, "not an audit expectation")])


def _event_doc(n: int, step: Any) -> dict[str, Any]:
    from cvmlaunch.plan.step import StepKind

    carried = {*_EVENT_FIELDS, *_EVENT_BYTES, "kind"}
    extra = [f for f in step._fields if f not in carried and getattr(step, f) is not None]
    if step.kind is not StepKind.EVENT or extra:
        what = f"a {step.kind} step" if step.kind is not StepKind.EVENT else f"its {extra[0]}"
        raise ProfileError([FieldProblem(f"events[{n}]", f"{what} is not carried")])
    doc = {f: getattr(step, f) for f in _EVENT_FIELDS}
    if doc["event_type"] is not None:
        doc["event_type"] = int(doc["event_type"])
    doc |= {f: None if getattr(step, f) is None else getattr(step, f).hex() for f in _EVENT_BYTES}
    return doc


# ---- reading -------------------------------------------------------------------------------


def looks_like(data: bytes) -> bool:
    """Whether `data` is a document of this format (a JSON object saying so)."""
    doc = json_object(data)
    return doc is not None and doc.get("format") == FORMAT


def read(data: bytes) -> list[Reference]:
    """The references `write` wrote: equal to them, value by value."""
    try:
        doc = json_document(data)
    except ValueError as e:
        raise _problem("document", f"not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _problem("format", f"expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        reason = f"this cvmlaunch reads version {VERSION}, got {doc.get('version')!r}"
        raise _problem("version", reason)
    items = doc.get("references")
    if not isinstance(items, list):
        raise _problem("references", "expected a list")
    return [_reference(n, item) for n, item in enumerate(items)]


def _reference(n: int, item: Any) -> Reference:
    where = f"references[{n}]"
    if not isinstance(item, dict):
        raise _problem(where, "expected an object")
    try:
        technology = Technology(str(item.get("technology")))
    except ValueError:
        reason = f"expected one of {', '.join(Technology)}, got {item.get('technology')!r}"
        raise _problem(f"{where}.technology", reason) from None
    parts = {}
    for part in ("config", "expect", "provenance"):
        value = item.get(part, {})
        if not isinstance(value, dict):
            raise _problem(f"{where}.{part}", "expected an object")
        parts[part] = value
    expect = {
        name: _decoded(f"{where}.expect.{name}", name, value)
        for name, value in parts["expect"].items()
    }
    return Reference(technology, expect, parts["config"], parts["provenance"])


def _decoded(where: str, name: str, value: Any) -> Any:
    if name in BYTES:
        return _bytes(where, value)
    if name in INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _problem(where, f"expected an integer, got {value!r}")
        return value
    if name in BOOLS:
        if not isinstance(value, bool):
            raise _problem(where, f"expected true or false, got {value!r}")
        return value
    if name in MAPS:
        if not isinstance(value, dict):
            raise _problem(where, "expected an object")
        if name == "rtmrs":
            return {_index(where, k): _bytes(f"{where}.{k}", v) for k, v in value.items()}
        return {k: _spl(f"{where}.{k}", v) for k, v in value.items()}
    if name == EVENTS:
        if not isinstance(value, list):
            raise _problem(where, "expected a list of events")
        return tuple(_event(f"{where}[{i}]", e) for i, e in enumerate(value))
    raise _problem(where, "not an audit expectation")


def _bytes(where: str, value: Any) -> bytes:
    try:
        if isinstance(value, str):
            return bytes.fromhex(value)
    except ValueError:
        pass
    raise _problem(where, f"expected hex digits, got {value!r}")


def _index(where: str, key: str) -> int:
    if key not in ("0", "1", "2", "3"):
        raise _problem(where, f"expected an RTMR index 0..3, got {key!r}")
    return int(key)


def _spl(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _problem(where, f"expected an integer, got {value!r}")
    return value


def _event(where: str, doc: Any) -> Any:
    from cvmlaunch.abi.eventlog import EventType
    from cvmlaunch.plan.step import Step, StepKind

    if not isinstance(doc, dict) or set(doc) != {*_EVENT_FIELDS, *_EVENT_BYTES}:
        fields = ", ".join((*_EVENT_FIELDS, *_EVENT_BYTES))
        raise _problem(where, f"expected an object of {fields}")
    if not isinstance(doc["label"], str):
        raise _problem(f"{where}.label", "expected a string")
    for field in ("number", "gpa", "size", "rtmr", "mr_index", "event_type"):
        value = doc[field]
        optional = field in ("rtmr", "mr_index", "event_type")
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _problem(f"{where}.{field}", f"expected an integer, got {value!r}")
    kind = doc["event_type"]
    contents, digest, data = (
        None if doc[f] is None else _bytes(f"{where}.{f}", doc[f]) for f in _EVENT_BYTES
    )
    return Step(
        doc["number"],
        StepKind.EVENT,
        doc["label"],
        doc["gpa"],
        doc["size"],
        rtmr=doc["rtmr"],
        mr_index=doc["mr_index"],
        # The enum where the PFP names the type, as the predicted events hold it.
        event_type=EventType(kind) if kind in EventType._value2member_map_ else kind,
        contents=contents,
        digest=digest,
        event_data=data,
    )
