"""Trustee's Reference Value Provider Service (RVPS): reference values as the `sample`
message `rvps-tool register` hands it, `{"version": "0.1.0", "type": "sample", "payload":
<base64 of a JSON object>}`, whose payload maps each reference-value name to what RVPS stores
under it and `query_reference_value(name)` returns to the attestation policy.

The names are the ones Trustee's default policy (attestation-service's
`ear_default_policy_cpu.rego`) queries, and each value is encoded as the verifier's claim it
is compared with (lowercase hex of the field's bytes, JSON numbers and booleans):

* SEV-SNP: `snp_launch_measurement` (the measurements, listed: the policy asks `in`);
  `snp_bootloader`, `snp_tee_svn`, `snp_snp_svn`, `snp_microcode` from a TCB minimum: the
  policy asks whether the reported SPL is `in` the list, so a minimum m is written as every
  value m..255; and from POLICY the single values the policy compares with `==`:
  `snp_guest_abi_major`, `snp_guest_abi_minor`, `snp_single_socket`, `snp_smt_allowed`.
* TDX: `mr_td`, `rtmr_1`, `rtmr_2`, `xfam` (the quote's 8 bytes, little-endian, as hex), listed;
  and where the references carry the boot's events, the single `tdvfkernel` (the kernel's
  Authenticode digest) and `tdvfkernelparams` (the LoadOptions digest), compared with `==`.

What the default policy does not query is not written: SNP HOST_DATA, VMPL and ID block
fields, a TD's MRCONFIGID/MROWNER/MROWNERCONFIG and RTMR0, and the platform's SMT and TSME
state (`snp_smt_enabled`, `snp_tsme_enabled`: the host's, which no profile fixes; add them
for the policy's `configuration` 2). `--format json` carries every value.

The sample message has no expiration: RVPS gives each value it extracts its own, 12 months
after registration, in the record it stores (`{version, name, expiration, value}`). An
expiration asked for here is refused rather than dropped.

Reading a message back (`read`) gives one Reference per published launch measurement (SNP
measurement, TD MRTD), each with the values the message holds once (TCB minimums, RTMR1/2,
XFAM); a second value of those has no single Reference to go in and is refused. The POLICY
fields are not read back: they describe some of POLICY's bits, not the value an audit
compares.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.spec import Technology
from cvmlaunch.publish import PublishOptions, Reference, json_document, json_object

MESSAGE_VERSION = "0.1.0"
MESSAGE_TYPE = "sample"
SPL_MAX = 255  # a TCB component's security patch level is one byte
XFAM_SIZE = 8
DIGEST_SIZE = 48

# --min-tcb component -> the name the policy compares the reported SPL with.
TCB_NAMES = {
    "bl": "snp_bootloader",
    "tee": "snp_tee_svn",
    "snp": "snp_snp_svn",
    "ucode": "snp_microcode",
}
# POLICY bits (SNP ABI 56860, "Guest Policy") behind the policy's single-value names.
_SMT, _SINGLE_SOCKET = 16, 20
# Names the policy compares with `==`: the message may hold one value of each; with the
# expectation they come from, for the error that says which.
SINGLE = {
    "snp_guest_abi_major": "policy",
    "snp_guest_abi_minor": "policy",
    "snp_single_socket": "policy",
    "snp_smt_allowed": "policy",
    "tdvfkernel": "events",
    "tdvfkernelparams": "events",
}
# TCG event types of the two boot events the policy looks for (TCG PC Client PFP).
EV_EVENT_TAG = 0x6
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003

EXPIRATION_REFUSED = (
    "the RVPS sample message has no expiration: RVPS sets each value's own (12 months after "
    "registration) in the record it stores; use --format json or corim to carry one"
)


def write(references: Sequence[Reference], options: PublishOptions) -> bytes:
    """The RVPS message of `references`: each name with the distinct values of all of them,
    in the order they first appear (a TCB list: every SPL from the least minimum)."""
    if options.expiration is not None:
        raise ProfileError([FieldProblem("--expiration", EXPIRATION_REFUSED)])
    if options.signing_key is not None:
        reason = "the RVPS sample message is not signed (its extractor verifies nothing)"
        raise ProfileError([FieldProblem("--signing-key", reason)])
    values: dict[str, dict[Any, None]] = {}
    for reference in references:
        for name, value in _entries(reference):
            values.setdefault(name, {})[value] = None
    payload: dict[str, Any] = {}
    for name, seen in values.items():
        if name in SINGLE:
            if len(seen) > 1:
                reason = (
                    f"the references hold {len(seen)} different {name} values; Trustee's "
                    f"default policy compares {name} with ==, so one message holds one: "
                    "publish them apart"
                )
                raise ProfileError([FieldProblem(SINGLE[name], reason)])
            payload[name] = next(iter(seen))
        elif name in TCB_NAMES.values():
            # Every SPL from the least minimum: each reference's minimum admits its own run
            # up to 255, and the runs' union is the least one's.
            payload[name] = list(range(min(seen), SPL_MAX + 1))
        else:
            payload[name] = list(seen)
    packed = json.dumps(payload, separators=(",", ":")).encode()
    message = {
        "version": MESSAGE_VERSION,
        "type": MESSAGE_TYPE,
        "payload": base64.b64encode(packed).decode("ascii"),
    }
    return (json.dumps(message, indent=2) + "\n").encode()


def _entries(reference: Reference) -> Iterator[tuple[str, Any]]:
    """(name, value) for each value of `reference` the default policy queries."""
    expect = reference.expect
    if reference.technology is Technology.SEV_SNP:
        yield from _snp_entries(expect)
    elif reference.technology is Technology.TDX:
        yield from _tdx_entries(expect)
    else:
        reason = f"Trustee's default policy has no reference values for {reference.technology}"
        raise ProfileError([FieldProblem("technology", reason)])


def _snp_entries(expect: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    measurement = expect.get("measurement")
    if measurement is not None:
        yield "snp_launch_measurement", measurement.hex()
    minimum = expect.get("min_tcb")
    if minimum is not None:
        other = sorted(set(minimum) - set(TCB_NAMES))
        if other:
            reason = (
                f"{other[0]}: Trustee's default policy has no reference value for it (it reads "
                f"{', '.join(TCB_NAMES)})"
            )
            raise ProfileError([FieldProblem("min_tcb", reason)])
        for component, name in TCB_NAMES.items():
            if component in minimum:
                yield name, minimum[component]  # written out as a run up to 255
    policy = expect.get("policy")
    if policy is not None:
        yield "snp_guest_abi_major", policy >> 8 & 0xFF
        yield "snp_guest_abi_minor", policy & 0xFF
        yield "snp_single_socket", bool(policy >> _SINGLE_SOCKET & 1)
        yield "snp_smt_allowed", bool(policy >> _SMT & 1)


def _tdx_entries(expect: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    measurement = expect.get("measurement")
    if measurement is not None:
        yield "mr_td", measurement.hex()
    rtmrs = expect.get("rtmrs") or {}
    for index in (1, 2):  # the registers the default policy reads
        if rtmrs.get(index) is not None:
            yield f"rtmr_{index}", rtmrs[index].hex()
    xfam = expect.get("xfam")
    if xfam is not None:
        yield "xfam", xfam.to_bytes(XFAM_SIZE, "little").hex()
    events = expect.get("events")
    if events is not None:
        kernel, options = _boot_digests(events)
        if kernel is not None:
            yield "tdvfkernel", kernel.hex()
        if options is not None:
            yield "tdvfkernelparams", options.hex()


def _boot_digests(events: Sequence[Any]) -> tuple[bytes | None, bytes | None]:
    """The digests of the kernel image (RTMR1's EV_EFI_BOOT_SERVICES_APPLICATION) and of its
    LoadOptions: the first EV_EVENT_TAG in RTMR2, since the Linux EFI stub measures the
    command line before the initrd."""
    kernel = options = None
    for event in events:
        if event.contents is None:
            continue
        if kernel is None and (event.rtmr, event.event_type) == (
            1,
            EV_EFI_BOOT_SERVICES_APPLICATION,
        ):
            kernel = event.contents
        if options is None and (event.rtmr, event.event_type) == (2, EV_EVENT_TAG):
            options = event.contents
    return kernel, options


# ---- reading -------------------------------------------------------------------------------


def looks_like(data: bytes) -> bool:
    """Whether `data` is an RVPS sample message (a JSON object of type "sample")."""
    doc = json_object(data)
    return doc is not None and doc.get("type") == MESSAGE_TYPE and "payload" in doc


def read(data: bytes) -> list[Reference]:
    """The references an RVPS sample message states: SNP ones, then TDX ones (see the
    module's text for what is read)."""
    payload = _payload(data)
    out = []
    snp = _shared_snp(payload)
    measurements = [_hex(payload, "snp_launch_measurement", v, DIGEST_SIZE)
                    for v in _listed(payload, "snp_launch_measurement")]  # fmt: skip
    out += _per_measurement(Technology.SEV_SNP, measurements, snp)
    tdx = _shared_tdx(payload)
    mrtds = [_hex(payload, "mr_td", v, DIGEST_SIZE) for v in _listed(payload, "mr_td")]
    out += _per_measurement(Technology.TDX, mrtds, tdx)
    return out


def _per_measurement(
    technology: Technology, measurements: list[bytes], shared: dict[str, Any]
) -> list[Reference]:
    if not measurements:  # values without a measurement still say something
        return [Reference(technology, shared, {}, {})] if shared else []
    return [Reference(technology, {"measurement": m, **shared}, {}, {}) for m in measurements]


def _payload(data: bytes) -> dict[str, Any]:
    def fail(reason: str) -> ProfileError:
        return ProfileError([FieldProblem("payload", reason)], source="RVPS message")

    try:
        message = json_document(data)
    except ValueError as e:
        raise ProfileError([FieldProblem("message", f"not JSON: {e}")], "RVPS message") from None
    if not isinstance(message, dict) or message.get("type") != MESSAGE_TYPE:
        raise ProfileError([FieldProblem("type", f"expected {MESSAGE_TYPE!r}")], "RVPS message")
    version = message.get("version", MESSAGE_VERSION)  # RVPS defaults it so too
    if version != MESSAGE_VERSION:
        reason = f"expected {MESSAGE_VERSION!r}, got {version!r}"
        raise ProfileError([FieldProblem("version", reason)], "RVPS message")
    text = message.get("payload")
    if not isinstance(text, str):
        raise fail("expected a base64 string")
    try:
        payload = json_document(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as e:
        raise fail(f"not base64 of a JSON object: {e}") from None
    if not isinstance(payload, dict):
        raise fail("expected a JSON object of reference values")
    return payload


def _listed(payload: Mapping[str, Any], name: str) -> list[Any]:
    value = payload.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProfileError([FieldProblem(name, "expected a list of values")], "RVPS message")
    return value


def _single(payload: Mapping[str, Any], name: str) -> Any:
    """The one value of list `name` (None: absent), refused if there are more: a Reference
    holds one value of each expectation besides the measurement it is for."""
    values = _listed(payload, name)
    if len(values) > 1:
        reason = (
            f"{len(values)} values; a reference holds one of each value besides its launch "
            "measurement: publish the others in messages of their own, or as --format json"
        )
        raise ProfileError([FieldProblem(name, reason)], "RVPS message")
    return values[0] if values else None


def _hex(payload: Mapping[str, Any], name: str, value: Any, size: int) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        reason = f"expected {size * 2} hex digits, got {value!r}"
        raise ProfileError([FieldProblem(name, reason)], "RVPS message")
    return raw


def _shared_snp(payload: Mapping[str, Any]) -> dict[str, Any]:
    minimum = {}
    for component, name in TCB_NAMES.items():
        values = _listed(payload, name)
        if not values:
            continue
        low = values[0] if all(isinstance(v, int) for v in values) else None
        if low is None or sorted(values) != list(range(low, SPL_MAX + 1)):
            reason = (
                f"{values!r} is not a TCB minimum (every SPL from one up to {SPL_MAX}): an "
                "audit checks minimums, and would accept SPLs this list does not"
            )
            raise ProfileError([FieldProblem(name, reason)], "RVPS message")
        minimum[component] = low
    return {"min_tcb": minimum} if minimum else {}


def _shared_tdx(payload: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rtmrs = {}
    for index in (1, 2):
        name = f"rtmr_{index}"
        value = _single(payload, name)
        if value is not None:
            rtmrs[index] = _hex(payload, name, value, DIGEST_SIZE)
    if rtmrs:
        out["rtmrs"] = rtmrs
    xfam = _single(payload, "xfam")
    if xfam is not None:
        out["xfam"] = int.from_bytes(_hex(payload, "xfam", xfam, XFAM_SIZE), "little")
    return out
