"""Measurement evidence in one shape, whatever it came from: a profile's plan, a saved
`measure --trace --json` document, or a saved `launch --json` record.

A plan and a trace give one step per measured unit (an SNP page, an SEV LAUNCH_UPDATE
buffer, an MRTD record) with its running digest; a launch record gives one step per
map_memory call, with no digests and no VMSAs. Inputs are named with the profile's dotted
field names, so a difference can be acted on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

from cvmlaunch.abi.snp import PAGE_SIZE, ZERO_CONTENTS, PageType
from cvmlaunch.abi.tdx import MR_EXTEND_CHUNK
from cvmlaunch.errors import InputError
from cvmlaunch.guest.fields import (
    FIELDS,
    FIRMWARE,
    KERNEL_HASHES,
    METADATA,
    TD,
    VMSA,
    document_fields,
    step_fields,
)
from cvmlaunch.guest.spec import Technology
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.ops import Plan, TdPlan
from cvmlaunch.plan.step import TD_RECORDS, Step, StepKind, TdAction


class Evidence(NamedTuple):
    """A measurement and how it came about; `plan` is kept when built from a profile.

    `firmware_digest` is the SNP launch digest right after the firmware pages, where it is
    known (a profile, a trace): precomputed when `inputs` name `firmware.digest`.
    """

    source: str
    form: str  # "profile" | "trace" | "record"
    technology: str
    measurement: bytes | None
    inputs: dict[str, str]
    steps: tuple[Step, ...]
    plan: Plan | None = None
    firmware_digest: bytes | None = None


def evidence_from_plan(plan: Plan, source: str) -> Evidence:
    """The evidence of `plan`: its measured steps, and its inputs by profile field (as a
    saved `measure --trace --json` of it gives them)."""
    from cvmlaunch.measure import measure
    from cvmlaunch.measure.document import inputs_json, td_identity

    result = measure(plan, trace=True)
    read = _Reader(source)
    technology = str(plan.spec.technology)
    if isinstance(plan, TdPlan):
        inputs = _td_inputs(read, inputs_json(plan, result.events), td_identity(plan))
    else:
        inputs = _sev_inputs(read, inputs_json(plan))
        if plan.firmware_digest is not None:
            inputs[PRECOMPUTED] = plan.firmware_digest.hex()
    steps = section_types(plan, result.trace or ())
    return Evidence(
        source, "profile", technology, result.digest, inputs, steps, plan, result.firmware_digest
    )


def section_types(plan: Plan, steps: Iterable[Step]) -> tuple[Step, ...]:
    """`steps` with the type of their firmware section named, as `plan`'s firmware gives it."""
    if isinstance(plan, TdPlan):
        types = [s.type.name for s in plan.tdvf.sections]
    else:
        metadata = None if plan.firmware is None else plan.firmware.sev_metadata
        types = [s.type.name for s in metadata or ()]
    return tuple(
        s
        if s.section is None or s.section >= len(types)
        else s._replace(section_type=types[s.section])
        for s in steps
    )


# How a plan labels a step of a firmware section ("SECRETS section 3", "kernel hashes page
# (SNP_KERNEL_HASHES section 6)", "TDVF section 2 (TD_HOB)"): a saved trace names the
# section's type only there, so it is read once, here.
_SEV_SECTION = re.compile(r"(?:^|\()([A-Z0-9_]+) section \d+\)?$")
_TD_SECTION = re.compile(r"^TDVF section \d+ \(([A-Z0-9_]+)\)$")


def _section_type(label: str, pattern: re.Pattern[str]) -> str | None:
    match = pattern.search(label)
    return None if match is None else match.group(1)


def evidence_from_json(doc: object, source: str) -> Evidence:
    """The evidence in a `measure --trace --json` document or a `launch --json` record.

    Anything else raises InputError(source, reason) naming what is missing.
    """
    read = _Reader(source)
    if not isinstance(doc, Mapping):
        read.fail(
            f"expected a JSON object (`measure --trace --json` or `launch --json` output), "
            f"got {type(doc).__name__}"
        )
    if "map_memory" in doc:
        return _from_record(read, doc)
    if "trace" in doc:
        return _from_trace(read, doc)
    if "measurement" in doc:
        read.fail("missing key 'trace': save `cvmlaunch measure --trace --json`, with --trace")
    read.fail(
        "missing key 'trace' (of `measure --trace --json`) or 'map_memory' (of `launch --json`)"
    )


# ---- documents ---------------------------------------------------------------------------


_Kind = type[Any] | tuple[type[Any], ...]
_E = TypeVar("_E", bound=StrEnum)


class _Reader:
    """Typed access to a JSON document; every failure names the source and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, reason: str) -> NoReturn:
        raise InputError(self.source, reason)

    def get(self, obj: Mapping[str, Any], key: str, kind: _Kind, where: str = "") -> Any:
        name = f"{where}{key}"
        if key not in obj:
            self.fail(f"missing key {name!r}")
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            expected = " or ".join(
                k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,))
            )
            self.fail(f"{name!r}: expected {expected}, got {type(value).__name__}")
        return value

    def optional(self, obj: Mapping[str, Any], key: str, kind: _Kind, where: str = "") -> Any:
        return None if obj.get(key) is None else self.get(obj, key, kind, where)

    def number(self, obj: Mapping[str, Any], key: str, where: str = "") -> int:
        """A "0x…" string (or a plain integer)."""
        value = self.get(obj, key, (str, int), where)
        if isinstance(value, int):
            return value
        try:
            return int(value, 16) if value.lower().startswith("0x") else int(value)
        except ValueError:
            self.fail(f"{where}{key!r}: {value!r} is not a number")

    def digest(self, obj: Mapping[str, Any], key: str, where: str = "") -> bytes:
        value = self.get(obj, key, str, where)
        try:
            return bytes.fromhex(value)
        except ValueError:
            self.fail(f"{where}{key!r}: {value!r} is not hex")

    def optional_digest(self, obj: Mapping[str, Any], key: str, where: str = "") -> bytes | None:
        return None if obj.get(key) is None else self.digest(obj, key, where)

    def choice(self, obj: Mapping[str, Any], key: str, kind: type[_E], where: str = "") -> _E:
        """An enum member by its value."""
        value = self.get(obj, key, str, where)
        try:
            return kind(value)
        except ValueError:
            self.fail(f"{where}{key!r}: {value!r} is not one of {', '.join(kind)}")

    def page_type(self, obj: Mapping[str, Any], key: str, where: str = "") -> PageType:
        """An SNP page type by name."""
        value = self.get(obj, key, str, where)
        if value not in PageType.__members__:
            self.fail(f"{where}{key!r}: {value!r} is not one of {', '.join(PageType.__members__)}")
        return PageType[value]


def _from_trace(read: _Reader, doc: Mapping[str, Any]) -> Evidence:
    technology = read.get(doc, "technology", str)
    measurement = read.digest(doc, "measurement")
    inputs = read.get(doc, "inputs", Mapping)
    entries = read.get(doc, "trace", list)
    td = technology == "tdx"
    steps = []
    for n, entry in enumerate(entries):
        where = f"trace[{n}]."
        if not isinstance(entry, Mapping):
            read.fail(f"trace[{n}]: expected an object, got {type(entry).__name__}")
        steps.append(_td_step(read, entry, where) if td else _sev_step(read, entry, where))
    known = _td_inputs(read, inputs, doc.get("td")) if td else _sev_inputs(read, inputs)
    after_firmware = None if td else read.optional_digest(doc, "firmware_digest")
    if after_firmware is not None and steps and precomputed(steps[0]):
        known[PRECOMPUTED] = after_firmware.hex()
    return Evidence(
        read.source, "trace", technology, measurement, known, tuple(steps), None, after_firmware
    )


def precomputed(step: Step) -> bool:
    """Whether `step` stands for every firmware page with a precomputed digest: the only
    firmware step whose CONTENTS is zero (a page's is its SHA-384)."""
    return step.kind is StepKind.FIRMWARE and step.contents == ZERO_CONTENTS


def _sev_step(read: _Reader, entry: Mapping[str, Any], where: str) -> Step:
    vmsa = read.optional(entry, "vmsa", Mapping, where)
    label = read.get(entry, "label", str, where)
    section = read.optional(entry, "section", int, where)
    offset = read.number(entry, "file_offset", where) if "file_offset" in entry else None
    return Step(
        number=read.get(entry, "index", int, where),
        kind=read.choice(entry, "kind", StepKind, where),
        label=label,
        gpa=read.number(entry, "gpa", where),
        size=read.get(entry, "size", int, where),
        page_type=read.page_type(entry, "page_type", where),
        contents=read.digest(entry, "contents", where),
        digest=read.digest(entry, "digest", where),
        section=section,
        vcpu=read.optional(entry, "vcpu", int, where),
        vmsa=None if vmsa is None else {k: read.number(vmsa, k, f"{where}vmsa.") for k in vmsa},
        file_offset=offset,
        section_type=None if section is None else _section_type(label, _SEV_SECTION),
    )


def _td_step(read: _Reader, entry: Mapping[str, Any], where: str) -> Step:
    kind = read.choice(entry, "record", StepKind, where)
    if kind not in TD_RECORDS:
        read.fail(f"{where}record: {kind!r} is not an MRTD record")
    label = read.get(entry, "label", str, where)
    return Step(
        number=read.get(entry, "index", int, where),
        kind=kind,
        label=label,
        gpa=read.number(entry, "gpa", where),
        size=MR_EXTEND_CHUNK if kind is StepKind.MR_EXTEND else PAGE_SIZE,
        digest=read.digest(entry, "digest", where),
        section=read.get(entry, "section", int, where),
        section_type=_section_type(label, _TD_SECTION),
    )


def _from_record(read: _Reader, doc: Mapping[str, Any]) -> Evidence:
    technology = read.get(doc, "technology", str)
    # What the platform reported, if it did; else what the launched plan measures to.
    key = "reported_measurement" if doc.get("reported_measurement") else "expected_measurement"
    measurement = read.digest(doc, key)
    calls = read.get(doc, "map_memory", list)
    steps = []
    for n, call in enumerate(calls):
        where = f"map_memory[{n}]."
        if not isinstance(call, Mapping):
            read.fail(f"map_memory[{n}]: expected an object, got {type(call).__name__}")
        kind = read.get(call, "type", str, where)
        pages = read.get(call, "pages", int, where)
        page_type = action = None
        if technology == "tdx":
            action = read.choice(call, "type", TdAction, where)
        else:
            page_type = read.page_type(call, "type", where)
        steps.append(
            Step(
                number=n,
                kind=StepKind.MAP_MEMORY,
                label=f"map_memory call {n} ({kind} x{pages})",
                gpa=read.number(call, "gpa", where),
                size=pages * PAGE_SIZE,
                page_type=page_type,
                action=action,
                contents=read.optional_digest(call, "source_sha256", where),
            )
        )
    recorded = read.get(doc, "inputs", Mapping)
    td = technology == "tdx"
    inputs = _td_inputs(read, recorded, None) if td else _sev_inputs(read, recorded)
    for key, field in (("snp_policy", "snp.policy"), ("host_data", "snp.host_data")):
        if doc.get(key) is not None:
            inputs[field] = str(read.get(doc, key, str))
    return Evidence(read.source, "record", technology, measurement, inputs, tuple(steps))


# ---- inputs, by profile field ------------------------------------------------------------

# The profile fields that shape each kind of step, most likely cause first.
STEP_FIELDS = {kind: step_fields(kind) for kind in (FIRMWARE, METADATA, KERNEL_HASHES, VMSA, TD)}
# `measure --json` input keys -> profile fields.
_SEV_INPUTS = document_fields(Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP)
_TD_INPUTS = document_fields(Technology.TDX)
# The TD identity fields (`td` of `measure --json`) -> profile fields.
_TD_IDENTITY = {
    f.key.removeprefix("tdx."): f.key
    for f in FIELDS
    if f.expectation is not None and f.key.startswith("tdx.")
}
# The profile field of a precomputed SNP firmware digest: an input only where it is given.
PRECOMPUTED = "firmware.digest"
NO_BOOT = "none"
DIRECT_BOOT = "measured direct boot"


def _text(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, str]:
    return {field: str(values[key]) for key, field in names.items() if values.get(key) is not None}


def _sev_inputs(read: _Reader, inputs: Mapping[str, Any]) -> dict[str, str]:
    out = _text(inputs, _SEV_INPUTS)
    cpu = inputs.get("cpu")
    if isinstance(cpu, Mapping):
        out |= _text(cpu, {"name": "cpu.name", "signature": "cpu.signature"})
    # measure --json lists the kernel hashes exactly when the launch has them.
    out["boot"] = DIRECT_BOOT if "boot.kernel" in out else NO_BOOT
    if "firmware.sha256" not in out:
        read.fail("missing key 'inputs.firmware_sha256'")
    for field in ("cpu.signature", "snp.guest_features"):  # diff reads these as numbers
        if field in out and not _HEX_NUMBER.fullmatch(out[field]):
            read.fail(f"inputs: {field} {out[field]!r} is not a 0x number")
    return out


_HEX_NUMBER = re.compile(r"0x[0-9a-fA-F]+")


def _td_inputs(read: _Reader, inputs: Mapping[str, Any], identity: object) -> dict[str, str]:
    out = _text(inputs, _TD_INPUTS)
    if isinstance(identity, Mapping):
        out |= _text(identity, _TD_IDENTITY)
    if "firmware.sha256" not in out:
        read.fail("missing key 'inputs.firmware_sha256'")
    return out


__all__ = [
    "PRECOMPUTED",
    "STEP_FIELDS",
    "Evidence",
    "evidence_from_json",
    "evidence_from_plan",
    "precomputed",
]
