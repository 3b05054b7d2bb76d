"""The RVPS message: what Trustee's own default policy, run by a real Rego engine, makes of
our reference values and the claims of real evidence; and reading a message back."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.errors import ProfileError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import GuestSpec, Technology
from cvmlaunch.publish import PublishOptions, Reference, references, rvps
from tests.cli.test_measure_rtmr import DSTACK, dstack_profile
from tests.conftest import VECTORS, CliRunner

regopy = pytest.importorskip("regopy")

ROOT = Path(__file__).parents[2]
SNP_PROFILE = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
TRUSTEE = VECTORS / "refvalues" / "trustee"
POLICY = (TRUSTEE / "ear_default_policy_cpu.rego").read_text()
# Trustee's verifier test report (Milan, VLEK, version 3): policy 0x30000, like our profile.
SNP_REPORT = VECTORS / "attestation" / "snp" / "trustee_milan_vlek_report.bin"
# Trustee's own parse of a QEMU/OVMF direct boot's CCEL.
OVMF_PARSED = VECTORS / "eventlog" / "trustee" / "CCEL_data_ovmf_out.json"

# `query_reference_value` is a host function Trustee's attestation service registers with its
# Rego engine (regorus): it returns what RVPS stores under the name, i.e. the payload's value,
# or null for a name RVPS lacks. regopy has no host functions, so the payload becomes
# `data.reference` and this rule returns it: an absent name is undefined instead of null,
# and every rule of the policy that uses one fails alike (`x in null`, `x == null` are false).
QUERY = "package policy\nquery_reference_value(name) := data.reference[name]\n"

# AR4SI trust claim values the policy gives.
AFFIRMING_EXECUTABLES, GRUB_EXECUTABLES, UNRECOGNIZED_EXECUTABLES = 3, 4, 33
GENUINE_HARDWARE, UNRECOGNIZED_HARDWARE = 2, 97
APPROVED_CONFIG, NO_KNOWN_VULNERABILITIES = 2, 3


def payload(message: bytes) -> dict[str, Any]:
    """What RVPS's sample extractor stores: the message's base64 payload, name by name."""
    doc = json.loads(message)
    assert doc["version"] == "0.1.0" and doc["type"] == "sample"
    decoded: dict[str, Any] = json.loads(base64.b64decode(doc["payload"], validate=True))
    return decoded


def trust_claims(values: Mapping[str, Any], claims: Mapping[str, Any]) -> dict[str, Any]:
    """Trustee's default policy's trust claims for `claims` (the policy input) against
    reference values `values`."""
    rego = regopy.Interpreter()
    rego.add_module("policy", POLICY)
    rego.add_module("query", QUERY)
    rego.add_data({"reference": dict(values)})
    rego.set_input(dict(claims))
    out = json.loads(str(rego.query("x := data.policy.trust_claims")))
    result: dict[str, Any] = out["bindings"]["x"]
    return result


# ---- TDX: dstack's real TD -----------------------------------------------------------------


def tdx_claims() -> dict[str, Any]:
    """The policy input Trustee's TDX verifier gives for dstack's quote and event log, in the
    shape of its `parse_tdx_claims_expected.json`: the quote's fields as lowercase hex of their
    bytes, TDATTRIBUTES decoded, the CC event log as `uefi_event_logs`.

    dstack's log carries each event's digest but not its data, so the `details` Trustee's
    parser reads from the data are taken from Trustee's own parse of another QEMU/OVMF
    direct boot (the kernel image's device path, the LoadOptions and initrd tags), matched by
    register and event type: OVMF and the Linux EFI stub log the same data on every such
    boot. The quote's collateral (TCB status) is not at hand; `hardware` is not asserted."""
    from cvmlaunch.abi.eventlog import EventType
    from cvmlaunch.attest.eventlog import parse_json_log
    from cvmlaunch.attest.tdx import parse_tdx_quote

    quote = parse_tdx_quote((DSTACK / "tdx-lite-quote.bin").read_bytes())
    body = quote.body
    expected = json.loads((TRUSTEE / "parse_tdx_claims_expected.json").read_text())
    assert set(expected["quote"]["body"]) >= {"mr_td", "rtmr_1", "rtmr_2", "xfam"}
    quote_doc = {
        "header": {
            "version": quote.version.to_bytes(2, "little").hex(),
            "att_key_type": quote.att_key_type.to_bytes(2, "little").hex(),
            "tee_type": quote.tee_type.to_bytes(4, "little").hex(),
            "vendor_id": quote.qe_vendor_id.hex(),
            "user_data": quote.user_data.hex(),
        },
        "body": {
            "mr_td": body.mrtd.hex(),
            "mr_seam": body.mrseam.hex(),
            "mr_config_id": body.mrconfigid.hex(),
            "mr_owner": body.mrowner.hex(),
            "mr_owner_config": body.mrownerconfig.hex(),
            "td_attributes": body.td_attributes.to_bytes(8, "little").hex(),
            "xfam": body.xfam.to_bytes(8, "little").hex(),
            "tcb_svn": body.tee_tcb_svn.hex(),
            "report_data": body.report_data.hex(),
            **{f"rtmr_{i}": value.hex() for i, value in enumerate(body.rtmrs)},
        },
    }
    # Trustee's field names, checked against its own expected claims document.
    assert set(quote_doc["body"]) <= set(expected["quote"]["body"])
    assert set(quote_doc["header"]) <= set(expected["quote"]["header"])
    parsed = json.loads(OVMF_PARSED.read_text())["uefi_event_logs"]
    details: dict[tuple[int, str], dict[str, Any]] = {}
    for event in parsed:  # the first of each (register, type): kernel, LoadOptions
        details.setdefault((event["index"], event["type_name"]), event["details"])
    initrd = next(e["details"] for e in parsed if e["details"].get("string") == "Linux initrd")
    log = parse_json_log((DSTACK / "tdx-lite-getquote.json").read_text())
    events = []
    tags = 0
    for step in log.events:
        assert step.rtmr is not None and step.event_type is not None
        if step.rtmr == 3 or step.contents is None:  # dstack's application events
            continue
        name = EventType(step.event_type).name
        index = step.rtmr + 1  # the CC MR index Trustee reports (RTMR n is n + 1)
        detail = details.get((index, name), {})
        if (index, name) == (3, "EV_EVENT_TAG"):
            tags += 1
            detail = detail if tags == 1 else initrd
        events.append({
            "index": index,
            "type_name": name,
            "digests": [{"alg": "SHA-384", "digest": step.contents.hex()}],
            "details": detail,
            "digest_matches_event": False,
            "event": "",
        })  # fmt: skip
    attributes = body.td_attributes
    decoded = {"debug": bool(attributes & 1), "septve_disable": bool(attributes >> 28 & 1)}
    return {
        "tdx": {
            "quote": quote_doc,
            "td_attributes": decoded,
            "uefi_event_logs": events,
        }
    }


def dstack_references(tmp_path: Path) -> tuple[list[Reference], list[Any]]:
    """dstack's TD as our profile describes it (Debian's OVMF, dstack's published boot
    digests), and the boot events it predicts."""
    from cvmlaunch.measure.rtmr import boot_events, plan_boot_inputs
    from cvmlaunch.plan.tdx import build_td_plan

    # XFAM as QEMU's -cpu host gives it on Sapphire Rapids (profiles/debian-ovmf-qemu-tdx.toml).
    path = dstack_profile(tmp_path, "xfam = 0x602E7\n")
    spec = load_profile(path).to_spec()
    events = boot_events(plan_boot_inputs(build_td_plan(spec)))
    return references(spec, profile_bytes=path.read_bytes()), events


def with_events(refs: list[Reference], events: list[Any]) -> list[Reference]:
    """`refs` with the boot events (what `references` adds for a TD where it carries them;
    here whether it does or not)."""
    return [r._replace(expect={**r.expect, "events": tuple(events)}) for r in refs]


def without_events(refs: list[Reference]) -> list[Reference]:
    return [r._replace(expect={k: v for k, v in r.expect.items() if k != "events"}) for r in refs]


def test_trustee_default_policy_affirms_dstacks_boot_from_our_values(tmp_path: Path) -> None:
    refs, events = dstack_references(tmp_path)
    claims = tdx_claims()
    body = claims["tdx"]["quote"]["body"]
    values = payload(rvps.write(with_events(refs, events), PublishOptions()))
    assert set(values) == {"mr_td", "rtmr_1", "rtmr_2", "xfam", "tdvfkernel", "tdvfkernelparams"}
    # Checked: `executables`, which reads RTMR1 and RTMR2 (kernel, command line, initrd: what
    # the profile's boot predicts) and the kernel and LoadOptions events' digests; and
    # `configuration` (debug off, XFAM). Not `hardware`: it needs MRTD, and our firmware is
    # Debian's OVMF, not dstack's, so our MRTD cannot be the quote's (nor is the quote's
    # collateral here for its TCB status).
    assert values["rtmr_1"] == [body["rtmr_1"]] and values["rtmr_2"] == [body["rtmr_2"]]
    assert values["mr_td"] != [body["mr_td"]]
    result = trust_claims(values, claims)
    assert result["executables"] == AFFIRMING_EXECUTABLES, result
    assert result["configuration"] == APPROVED_CONFIG, result
    assert result["hardware"] == UNRECOGNIZED_HARDWARE, result


def test_without_the_boot_events_only_the_registers_are_affirmed(tmp_path: Path) -> None:
    # The policy's grub branch (4) checks RTMR1 and RTMR2 alone: what a message without
    # tdvfkernel/tdvfkernelparams earns.
    refs, _ = dstack_references(tmp_path)
    values = payload(rvps.write(without_events(refs), PublishOptions()))
    assert "tdvfkernel" not in values
    assert trust_claims(values, tdx_claims())["executables"] == GRUB_EXECUTABLES


@pytest.mark.parametrize("name", ["rtmr_1", "rtmr_2", "tdvfkernel", "tdvfkernelparams", "xfam"])
def test_one_changed_reference_value_is_not_affirmed(tmp_path: Path, name: str) -> None:
    refs, events = dstack_references(tmp_path)
    values = payload(rvps.write(with_events(refs, events), PublishOptions()))
    value = values[name]
    first = value[0] if isinstance(value, list) else value
    changed = ("0" if first[0] != "0" else "1") + first[1:]
    values[name] = [changed] if isinstance(value, list) else changed
    result = trust_claims(values, tdx_claims())
    if name == "xfam":
        assert result["configuration"] != APPROVED_CONFIG, result
        assert result["executables"] == AFFIRMING_EXECUTABLES
    elif name.startswith("rtmr"):
        assert result["executables"] == UNRECOGNIZED_EXECUTABLES, result
    else:  # the registers still match: the grub branch, not the affirmed boot
        assert result["executables"] == GRUB_EXECUTABLES, result


# ---- SEV-SNP: Trustee's real Milan report --------------------------------------------------


def snp_claims() -> dict[str, Any]:
    """The policy input Trustee's SNP verifier gives for its test report (its field names,
    lowercase hex, JSON numbers and booleans)."""
    from cvmlaunch.abi.snp_report import tcb_parts
    from cvmlaunch.attest.snp import parse_snp_report

    report = parse_snp_report(SNP_REPORT.read_bytes())
    assert report.cpuid_product == "Milan"
    tcb = tcb_parts(report.reported_tcb, "Milan")
    policy = report.policy
    return {
        "snp": {
            "measurement": report.measurement.hex(),
            "policy_abi_major": policy >> 8 & 0xFF,
            "policy_abi_minor": policy & 0xFF,
            "policy_smt_allowed": bool(policy >> 16 & 1),
            "policy_migrate_ma": bool(policy >> 18 & 1),
            "policy_debug_allowed": bool(policy >> 19 & 1),
            "policy_single_socket": bool(policy >> 20 & 1),
            "reported_tcb_bootloader": tcb["bl"],
            "reported_tcb_tee": tcb["tee"],
            "reported_tcb_snp": tcb["snp"],
            "reported_tcb_microcode": tcb["ucode"],
            "platform_smt_enabled": bool(report.platform_info & 1),
            "platform_tsme_enabled": bool(report.platform_info >> 1 & 1),
            "report_data": report.report_data.hex(),
            "init_data": report.host_data.hex(),
            "chip_id": report.chip_id.hex(),
        }
    }


def reported_tcb(snp: Mapping[str, Any]) -> dict[str, int]:
    """The report's reported TCB as --min-tcb components."""
    names = {"bl": "bootloader", "tee": "tee", "snp": "snp", "ucode": "microcode"}
    return {component: snp[f"reported_tcb_{name}"] for component, name in names.items()}


def snp_spec() -> GuestSpec:
    return load_profile(SNP_PROFILE).to_spec()


@pytest.mark.usefixtures("debian_ovmf")
def test_trustee_default_policy_on_a_real_snp_report() -> None:
    claims = snp_claims()
    snp = claims["snp"]
    reported = reported_tcb(snp)
    refs = references(snp_spec(), min_tcb=reported)
    values = payload(rvps.write(refs, PublishOptions()))
    result = trust_claims(values, claims)
    # TCB minimums equal to the report's reported TCB: genuine hardware.
    assert result["hardware"] == GENUINE_HARDWARE, result
    # Our Debian guest is not the report's: its measurement is not affirmed...
    assert values["snp_launch_measurement"] != [snp["measurement"]]
    assert result["executables"] == UNRECOGNIZED_EXECUTABLES, result
    # ...and the report's is, written the same way (lowercase hex): the encoding is the claim's.
    report_ref = refs[0]._replace(expect={**refs[0].expect, "measurement": bytes.fromhex(
        snp["measurement"])})  # fmt: skip
    affirmed = payload(rvps.write([*refs, report_ref], PublishOptions()))
    assert trust_claims(affirmed, claims)["executables"] == AFFIRMING_EXECUTABLES
    # POLICY 0x30000 (ours and the report's): without the host's SMT/TSME state, which no
    # profile fixes, `configuration` is 3 (debug and migration agent off); with it, 2.
    assert result["configuration"] == NO_KNOWN_VULNERABILITIES, result
    platform = {"snp_smt_enabled": snp["platform_smt_enabled"],
                "snp_tsme_enabled": snp["platform_tsme_enabled"]}  # fmt: skip
    assert trust_claims(values | platform, claims)["configuration"] == APPROVED_CONFIG


@pytest.mark.usefixtures("debian_ovmf")
@pytest.mark.parametrize("component", ["bl", "tee", "snp", "ucode"])
def test_a_tcb_minimum_above_the_reported_tcb_is_not_genuine(component: str) -> None:
    claims = snp_claims()["snp"]
    reported = reported_tcb(claims)
    lower = {k: max(v - 1, 0) for k, v in reported.items()}
    values = payload(rvps.write(references(snp_spec(), min_tcb=lower), PublishOptions()))
    assert trust_claims(values, {"snp": claims})["hardware"] == GENUINE_HARDWARE
    higher = reported | {component: reported[component] + 1}
    values = payload(rvps.write(references(snp_spec(), min_tcb=higher), PublishOptions()))
    assert trust_claims(values, {"snp": claims})["hardware"] == UNRECOGNIZED_HARDWARE


# ---- the message itself --------------------------------------------------------------------


def snp_reference(measurement: bytes, **expect: Any) -> Reference:
    return Reference(Technology.SEV_SNP, {"measurement": measurement, **expect}, {}, {})


def test_values_are_listed_once_each_in_order() -> None:
    a, b = bytes(range(48)), bytes(48)
    refs = [snp_reference(a, policy=0x30000), snp_reference(b, policy=0x30000),
            snp_reference(a, policy=0x30000)]  # fmt: skip
    values = payload(rvps.write(refs, PublishOptions()))
    assert values["snp_launch_measurement"] == [a.hex(), b.hex()]
    assert values["snp_smt_allowed"] is True and values["snp_single_socket"] is False
    assert values["snp_guest_abi_major"] == 0 and values["snp_guest_abi_minor"] == 0


def test_a_tcb_minimum_is_every_spl_from_it() -> None:
    ref = snp_reference(bytes(48), min_tcb={"bl": 3, "tee": 0, "snp": 8, "ucode": 250})
    values = payload(rvps.write([ref], PublishOptions()))
    assert values["snp_bootloader"] == list(range(3, 256))
    assert values["snp_microcode"] == [250, 251, 252, 253, 254, 255]
    assert rvps.read(rvps.write([ref], PublishOptions())) == [ref]


@pytest.mark.parametrize(
    ("refs", "options", "words"),
    [
        ([snp_reference(bytes(48), policy=0x30000), snp_reference(bytes(48), policy=0x130000)],
         PublishOptions(), "policy: the references hold 2 different snp_single_socket values"),
        ([snp_reference(bytes(48), min_tcb={"fmc": 1})], PublishOptions(), "min_tcb: fmc"),
        ([snp_reference(bytes(48))], PublishOptions(signing_key=b"k"), "--signing-key"),
        ([Reference(Technology.SEV, {"measurement": bytes(16)}, {}, {})], PublishOptions(),
         "technology: Trustee's default policy has no reference values for sev"),
    ],
)  # fmt: skip
def test_what_the_message_cannot_say_is_refused(
    refs: list[Reference], options: PublishOptions, words: str
) -> None:
    with pytest.raises(ProfileError, match=words) as e:
        rvps.write(refs, options)
    assert "\n" not in str(e.value)


def test_an_expiration_is_refused_saying_where_it_lives() -> None:
    from datetime import UTC, datetime

    with pytest.raises(ProfileError, match="--expiration: the RVPS sample message has no"):
        rvps.write([snp_reference(bytes(48))], PublishOptions(expiration=datetime.now(UTC)))


def test_read_gives_one_reference_per_measurement_with_the_shared_values() -> None:
    a, b = bytes(range(48)), bytes(48)
    rtmrs = {1: bytes([1]) * 48, 2: bytes([2]) * 48}
    refs = [Reference(Technology.TDX, {"measurement": m, "rtmrs": rtmrs, "xfam": 0x602E7,
                                       "td_attributes": 0x10000000}, {}, {})
            for m in (a, b)]  # fmt: skip
    message = rvps.write(refs, PublishOptions())
    assert rvps.looks_like(message)
    # TDATTRIBUTES is not a reference value of the default policy (it checks debug itself).
    assert rvps.read(message) == [
        Reference(Technology.TDX, {"measurement": m, "rtmrs": rtmrs, "xfam": 0x602E7}, {}, {})
        for m in (a, b)
    ]


def message_of(values: Mapping[str, Any]) -> bytes:
    text = base64.b64encode(json.dumps(values).encode()).decode()
    return json.dumps({"version": "0.1.0", "type": "sample", "payload": text}).encode()


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"rtmr_1": ["00" * 48, "11" * 48]}, "rtmr_1: 2 values; a reference holds one"),
        ({"snp_bootloader": [4]}, r"snp_bootloader: \[4\] is not a TCB minimum"),
        ({"mr_td": ["00"]}, "mr_td: expected 96 hex digits"),
        ({"xfam": "e702060000000000"}, "xfam: expected a list of values"),
    ],
)
def test_read_refuses_what_no_reference_can_hold(values: dict[str, Any], words: str) -> None:
    with pytest.raises(ProfileError, match=f"RVPS message: {words}"):
        rvps.read(message_of(values))


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"type": "other", "payload": ""}', b"\xa1\x00", b'{"format": "x"}'],
)
def test_looks_like_only_a_sample_message(data: bytes) -> None:
    assert not rvps.looks_like(data)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"{", "message: not JSON"),
        (b'{"type": "sample", "version": "0.2.0", "payload": ""}', "version: expected '0.1.0'"),
        (b'{"type": "sample", "payload": "!!"}', "payload: not base64"),
        (b'{"type": "sample", "payload": "W10="}', "payload: expected a JSON object"),
    ],
)
def test_an_unreadable_message_is_one_line(data: bytes, words: str) -> None:
    with pytest.raises(ProfileError, match=words) as e:
        rvps.read(data)
    assert "\n" not in str(e.value)


def test_a_td_of_published_values_gives_every_value_the_quote_claims(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    # dstack's TD from its published values alone (firmware descriptor included): every
    # reference value Trustee's policy reads for a TD equals the claim of its real quote,
    # MRTD too. (`hardware` still needs the quote's TCB status from Intel's collateral.)
    from tests.published_td import published_dstack_profile

    spec = load_profile(published_dstack_profile(cli, tmp_path, debian_ovmf)).to_spec()
    values = payload(rvps.write(references(spec), PublishOptions()))
    claims = tdx_claims()
    body = claims["tdx"]["quote"]["body"]
    for name in ("mr_td", "rtmr_1", "rtmr_2", "xfam"):
        assert values[name] == [body[name]], name
    result = trust_claims(values, claims)
    assert result["executables"] == AFFIRMING_EXECUTABLES, result
    assert result["configuration"] == APPROVED_CONFIG, result
