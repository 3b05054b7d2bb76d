"""Reference values for the verifiers that enforce them: what a guest (or each guest of a
matrix) must report, with what fixed it, and the codecs that write it in each verifier's
format and read it back for `audit --reference`.

`Reference` is the one type: the claims one configuration must show, keyed by the audit
expectation names of the field table (`measurement`, `policy`, `host_data`,
`td_attributes`, `xfam`, `mrconfigid`, `mrowner`, `mrownerconfig`, `rtmrs` as
{index: value}, `min_tcb`, ...), the point of the configuration space it is for, and its
provenance. Each format is a module of this package with

    write(references: Sequence[Reference], options: PublishOptions) -> bytes
    read(data: bytes) -> list[Reference]      # what the document says, for audit
    looks_like(data: bytes) -> bool          # whether `data` is a document of it

registered in FORMATS by name and imported only when used.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.spec import GuestSpec, Technology
from cvmlaunch.namedtuple import NamedTuple

if TYPE_CHECKING:
    from datetime import datetime

    from cvmlaunch.measure.rtmr import BootFiles
    from cvmlaunch.measure.sweep import Axes


class Reference(NamedTuple):
    """What one configuration of a guest must report."""

    technology: Technology
    # Audit expectation name (attest.Expectations field) -> value: bytes for digests and
    # IDs, int for policies and attribute words, {int: bytes} for rtmrs, {str: int} for
    # min_tcb. Only what the configuration fixes is present.
    expect: Mapping[str, Any]
    # The configuration's swept fields (measure.sweep.point_doc): what tells the entries of
    # a matrix apart.
    config: Mapping[str, Any]
    # Where the values come from: "tool" (name and version), "profile_sha256",
    # "inputs" ({file role: SHA-256 hex}), "assumptions" ({name: value}: VMM flavour and
    # version, edk2 era, page order, ...). Empty when read back from a format that has none.
    provenance: Mapping[str, Any]


class PublishOptions(NamedTuple):
    """What a document says besides the values."""

    expiration: datetime | None = None  # RVPS and CoRIM validity
    signing_key: bytes | None = None  # PEM private key: COSE-sign a CoRIM
    text: bool = True  # go-sev-guest / go-tdx-guest: textproto (else protojson)


def json_document(data: bytes | str) -> Any:
    """`data` parsed as JSON; ValueError if it is none, a document nested past the
    interpreter's recursion limit included (json raises RecursionError for it)."""
    import json

    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def json_object(data: bytes) -> dict[str, Any] | None:
    """`data` as a JSON object, or None where it is none (what `looks_like` asks)."""
    if data.lstrip()[:1] != b"{":
        return None
    try:
        doc = json_document(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC time (a naive one is taken to be UTC already); ProfileError
    naming --expiration if it has no UTC equivalent (an offset past the calendar's end)."""
    from datetime import UTC

    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        reason = f"{moment.isoformat()} has no UTC time this calendar can hold"
        raise ProfileError([FieldProblem("--expiration", reason)]) from None


class Format(Protocol):
    def write(self, references: Sequence[Reference], options: PublishOptions) -> bytes: ...

    def read(self, data: bytes) -> list[Reference]: ...

    def looks_like(self, data: bytes) -> bool: ...


# Format name -> the module that implements it.
FORMATS = {
    "json": "cvmlaunch.publish.bundle",
    "rvps": "cvmlaunch.publish.rvps",
    "go-sev-guest": "cvmlaunch.publish.gopolicy",
    "go-tdx-guest": "cvmlaunch.publish.gopolicy",
    "corim": "cvmlaunch.publish.corim",
}


def codec(name: str) -> Format:
    """The module of format `name` (a key of FORMATS)."""
    if name not in FORMATS:
        reason = f"expected one of {', '.join(FORMATS)}, got {name!r}"
        raise ProfileError([FieldProblem("--format", reason)])
    return cast(Format, importlib.import_module(FORMATS[name]))


# The file name suffix of each format's documents (go-*: textproto, or protojson).
SUFFIXES = {"json": ".json", "rvps": ".json", "corim": ".cbor"}


def one_per_configuration(
    name: str, refs: Sequence[Reference], options: PublishOptions
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A document of format `name` for each of `refs` (file name -> bytes), and the index
    that says which configuration each is for: for verifiers that hold one value where a
    matrix has many (go-sev-guest's measurement). A file is named by its place in the
    matrix and the configuration values that tell it apart from the others."""
    import re

    module = codec(name)
    suffix = SUFFIXES.get(name, ".textproto" if options.text else ".json")
    # The keys that tell the configurations apart, each once: a key that splits them as
    # an earlier one does (a CPU's signature, its name) adds nothing to a name.
    keys, splits = [], set()
    for key in dict.fromkeys(k for r in refs for k in r.config):
        values = [repr(r.config.get(key)) for r in refs]
        split = tuple(values.index(v) for v in values)
        if len(set(values)) > 1 and split not in splits:
            keys.append(key)
            splits.add(split)
    width = len(str(len(refs)))
    documents: dict[str, bytes] = {}
    entries = []
    for n, ref in enumerate(refs, 1):
        shown = "_".join(f"{k}-{_or_any(ref.config.get(k))}" for k in keys)
        slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", shown)[:120].strip("._")
        file = f"{n:0{width}d}{'-' if slug else ''}{slug}{suffix}"
        documents[file] = module.write([ref], options)
        measurement = ref.expect.get("measurement")
        entries.append({
            "file": file,
            "config": dict(ref.config),
            "measurement": measurement.hex() if isinstance(measurement, bytes) else None,
        })  # fmt: skip
    from cvmlaunch import __version__

    index = {"cvmlaunch": __version__, "format": name, "documents": entries}
    return documents, index


def read_any(data: bytes) -> list[Reference]:
    """The references of a document in any of FORMATS, told apart by its content."""
    for name in dict.fromkeys(FORMATS.values()):
        module = cast(Format, importlib.import_module(name))
        if module.looks_like(data):
            return module.read(data)
    reason = f"not a document of any of {', '.join(FORMATS)}"
    raise ProfileError([FieldProblem("--reference", reason)])


def references(
    base: GuestSpec,
    axes: Axes | None = None,
    *,
    profile_bytes: bytes | None = None,
    min_tcb: Mapping[str, int] | None = None,
) -> list[Reference]:
    """The reference values of `base` (or of each guest of `axes` applied to it, in matrix
    order): its launch digest, the launch parameters the platform reports, a TD's boot
    RTMR0-2 where its profile predicts them (RTMR3 and unknown registers are not claimed)
    with the boot events behind them,
    and `min_tcb` (SNP) where given. `profile_bytes` is the profile the values come from,
    for the provenance."""
    from cvmlaunch import __version__
    from cvmlaunch.analysis.space import matrix
    from cvmlaunch.measure.sweep import Axes as AxesType
    from cvmlaunch.measure.sweep import point_doc

    if axes is None:
        axes = AxesType((base.vcpus,), (base.cpu,), (base.vmm,), (base.guest_features,))
    inputs = input_digests(base, profile_bytes)
    boots = _Boots(base)
    out = []
    for row in matrix(base, axes, cloud_cpu=True):
        spec = row.spec
        expect: dict[str, Any] = {"measurement": row.measurement}
        expect |= {k: v for k, v in spec.expectations().items() if v is not None}
        if spec.technology is Technology.TDX and spec.td_config.edk2 is not None:
            expect |= boots.rtmrs(spec)
        if min_tcb is not None and spec.technology is Technology.SEV_SNP:
            expect["min_tcb"] = dict(min_tcb)
        origin = {"tool": f"cvmlaunch {__version__}", **inputs, "assumptions": assumptions(spec)}
        out.append(Reference(spec.technology, expect, point_doc(spec), origin))
    return out


class _Boots:
    """A TD's boot RTMRs and events for each guest of a matrix: its firmware read and its
    kernel and initrd hashed once for all of them."""

    def __init__(self, base: GuestSpec) -> None:
        self._base = base
        self._firmware: bytes | None = None
        self._files: BootFiles | None = None

    def rtmrs(self, spec: GuestSpec) -> dict[str, Any]:
        from cvmlaunch.guest.files import read_firmware
        from cvmlaunch.measure.rtmr import BootFiles, boot_events, boot_inputs, firmware_digests
        from cvmlaunch.measure.rtmr import rtmrs as registers
        from cvmlaunch.plan.tdx import build_td_plan

        if self._files is None:
            described = self._base.firmware_descriptor is not None
            self._firmware = b"" if described else read_firmware(self._base.firmware)
            self._files = BootFiles(self._base)
        plan = build_td_plan(spec, self._firmware)
        events = tuple(boot_events(boot_inputs(spec, *firmware_digests(plan), self._files)))
        values = registers(events)
        known = {n: value for n, value in enumerate(values[:3]) if value is not None}
        # The events too: a verifier checks some of them by themselves (Trustee: the
        # kernel's and its parameters').
        return {"rtmrs": known, "events": events} if known else {"events": events}


def input_digests(spec: GuestSpec, profile_bytes: bytes | None) -> dict[str, Any]:
    """The SHA-256 of the profile and of each input file (and of the command line)."""
    from cvmlaunch.guest.files import read_firmware, sha256_file

    described = spec.firmware_descriptor
    firmware = (described.sha256.hex() if described is not None
                else hashlib.sha256(read_firmware(spec.firmware)).hexdigest())  # fmt: skip
    inputs: dict[str, str | None] = {"firmware": firmware}
    boot = spec.boot
    if boot is not None:
        for role, item in (("kernel", boot.kernel), ("initrd", boot.initrd)):
            if item is None:
                continue
            digest = item.sha256 if item.path is None else sha256_file(item.path, f"boot.{role}")
            inputs[role] = None if digest is None else digest.hex()
        inputs["cmdline"] = hashlib.sha256(boot.cmdline.encode()).hexdigest()
    profile = None if profile_bytes is None else hashlib.sha256(profile_bytes).hexdigest()
    return {"profile_sha256": profile, "inputs": inputs}


def assumptions(spec: GuestSpec) -> dict[str, Any]:
    """The settings outside the measured bytes that fixed the values: the VMM flavour, and
    a TD's page order, raw-data tail and, where its boot is predicted, edk2 and QEMU."""
    out: dict[str, Any] = {"vmm": str(spec.vmm)}
    if spec.technology is Technology.TDX:
        td = spec.td_config
        out |= {"page_order": str(td.page_order), "raw_data_tail": str(td.raw_data_tail)}
        if td.edk2 is not None:
            out |= {"edk2": td.edk2, "qemu": td.qemu}
    return out


def _or_any(value: object) -> object:
    return "any" if value is None else value  # a value the configuration leaves free
