"""RTMR0-2 from the boot events OVMF extends: every constant event against its published
digest, the Debian kernel's RTMR1 and RTMR2 in each edk2 era, a real TD (dstack) against its
quote and log, and a real ACPI fixture's RTMR0."""

from __future__ import annotations

import json

import pytest

from cvmlaunch.attest.eventlog import parse_json_log
from cvmlaunch.attest.tdx import parse_tdx_quote
from cvmlaunch.measure.rtmr import UIAPP_LOAD_OPTION, BootInputs, boot_events, rtmrs
from cvmlaunch.plan.step import Step
from tests.conftest import TDX_VECTORS, VECTORS

TDX = json.loads((TDX_VECTORS / "tdx-vectors.json").read_text())
KERNEL = TDX["kernel_examples"]
DSTACK = VECTORS / "eventlog" / "dstack"
RECOMPUTED = json.loads((DSTACK / "dstack_tdx_lite_recompute.json").read_text())
NO_ACPI = (None, None, None)


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


def debian(edk2: int, *, authenticode: str, initrd: bool = True) -> list[Step]:
    initrd_sha384 = _hex(KERNEL["initrd"]["sha384"]) if initrd else None
    inputs = BootInputs(edk2, None, None, NO_ACPI, _hex(authenticode), KERNEL["cmdline"],
                        initrd_sha384)  # fmt: skip
    return boot_events(inputs)


def test_every_constant_event_is_its_published_digest() -> None:
    events = debian(202411, authenticode=KERNEL["unpatched"]["authenticode_sha384"])
    by_label = {step.label: step.contents for step in events}
    absent = " (variable absent, empty data)"
    ours = {
        **{f"EV_EFI_VARIABLE_DRIVER_CONFIG {n}{absent}": f"{n} (not set)"
           for n in ("SecureBoot", "PK", "KEK", "db", "dbx")},
        "EV_SEPARATOR 00000000": "separator",
        "EV_EFI_VARIABLE_BOOT BootOrder=0000": "BootOrder",
        "EV_EFI_VARIABLE_BOOT Boot0000 UiApp load option": "Boot0000 (UiApp)",
        **{f"EV_EFI_ACTION {a}": a for a in (
            "Calling EFI Application from Boot Option", "Exit Boot Services Invocation",
            "Exit Boot Services Returned with Success")},
    }  # fmt: skip
    checked = 0
    for description, digest in TDX["constant_event_digests"].items():
        if description.endswith("bytes"):  # the load option itself, not a digest
            continue
        assert by_label[ours[description]] == _hex(digest), description
        checked += 1
    assert checked == 11
    assert (
        UIAPP_LOAD_OPTION.hex()
        == TDX["constant_event_digests"]["Boot0000 UiApp load option bytes"]
    )


@pytest.mark.parametrize("form", ["unpatched", "qemu_patched_mem2GiB_initrd1MiB"])
def test_debian_kernel_rtmr1_in_both_edk2_eras(form: str) -> None:
    case = KERNEL[form]
    for edk2, key in ((202405, "rtmr1_edk2_lt_202411"), (202411, "rtmr1_edk2_ge_202411"),
                      (202508, "rtmr1_edk2_ge_202411")):  # fmt: skip
        assert rtmrs(debian(edk2, authenticode=case["authenticode_sha384"]))[1] == _hex(case[key])


def test_debian_kernel_rtmr2_in_both_load_options_forms() -> None:
    authenticode = KERNEL["unpatched"]["authenticode_sha384"]
    vectors = KERNEL["rtmr2"]
    for edk2, key in ((202411, "rtmr2_suffix_form"), (202508, "rtmr2_prefix_form")):
        assert rtmrs(debian(edk2, authenticode=authenticode))[2] == _hex(vectors[key])
    # The LoadOptions event alone: the command line's digest in each form.
    for edk2, key in ((202502, "cmdline_digest_suffix_form_edk2_lt_202508"),
                      (202508, "cmdline_digest_prefix_form_edk2_ge_202508")):  # fmt: skip
        options = next(s for s in debian(edk2, authenticode=authenticode) if s.rtmr == 2)
        assert options.contents == _hex(vectors[key])
    # No initrd: no initrd= part and no initrd event; RTMR2 then differs from both forms.
    alone = debian(202508, authenticode=authenticode, initrd=False)
    assert [s.label for s in alone if s.rtmr == 2] == ["LoadOptions 'console=ttyS0'"]
    assert rtmrs(alone)[2] not in {
        _hex(vectors["rtmr2_suffix_form"]),
        _hex(vectors["rtmr2_prefix_form"]),
    }


def dstack_inputs(edk2: int) -> BootInputs:
    published = RECOMPUTED["measurement_doc"]
    trixie = TDX["acpi_fixture_rtmr0"][0]["event_digests"]  # its CFV: Debian trixie's
    return BootInputs(
        edk2,
        td_hob_sha384=bytes.fromhex(_td_hob_bookworm_2gib()),
        cfv_sha384=_hex(trixie[1]),
        acpi=[_hex(d) for d in RECOMPUTED["acpi_digests_from_log"]],
        kernel_authenticode=_hex(published["kernel_authenticode"]),
        cmdline="",  # published as its digest only
        initrd_sha384=_hex(published["initrd_sha384"]),
        load_options_sha384=_hex(published["cmdline_sha384"]),
    )


def _td_hob_bookworm_2gib() -> str:
    import hashlib

    return hashlib.sha384((TDX_VECTORS / "td-hob-bookworm-2GiB.bin").read_bytes()).hexdigest()


def test_a_real_td_matches_its_quote_and_its_log() -> None:
    """dstack-0.6.0: QEMU 8.2.2, 2 GiB, OVMF before 202505 (the separator in RTMR1)."""
    quote = parse_tdx_quote((DSTACK / "tdx-lite-quote.bin").read_bytes())
    events = boot_events(dstack_inputs(202502))
    assert rtmrs(events)[:3] == quote.body.rtmrs[:3]
    # Event by event, in each register, the log says the same.
    log = parse_json_log((DSTACK / "tdx-lite-getquote.json").read_bytes())
    for register in (0, 1, 2):
        ours = [s.contents for s in events if s.rtmr == register]
        logged = [s.contents for s in log.events if s.rtmr == register]
        assert ours == logged, register
    # The older era puts the separator in RTMR0 and none in RTMR1: not this TD.
    older = rtmrs(boot_events(dstack_inputs(202405)))
    assert older[0] != quote.body.rtmrs[0] and older[1] != quote.body.rtmrs[1]


def test_unknown_digests_leave_their_register_unknown() -> None:
    inputs = dstack_inputs(202502)._replace(acpi=NO_ACPI)
    values = rtmrs(boot_events(inputs))
    quote = parse_tdx_quote((DSTACK / "tdx-lite-quote.bin").read_bytes())
    assert values[0] is None  # never invented
    assert values[1:3] == quote.body.rtmrs[1:3]
    assert values[3] == bytes(48)
    events = boot_events(inputs)
    first_unknown = next(n for n, s in enumerate(events) if s.contents is None)
    assert all(s.digest is None for s in events[first_unknown:] if s.rtmr == 0)


def test_a_real_acpi_fixture_rtmr0() -> None:
    """Fortanix tdx-measure's canonical defaults on Debian trixie OVMF 2025.02, 2 GiB."""
    case = TDX["acpi_fixture_rtmr0"][0]
    digests = [_hex(d) for d in case["event_digests"]]
    inputs = BootInputs(
        202502, digests[0], digests[1],
        [_hex(case[k]) for k in ("table_loader_sha384", "rsdp_sha384", "tables_sha384")],
        None, None, None,
    )  # fmt: skip
    events = [s for s in boot_events(inputs) if s.rtmr == 0]
    assert [s.contents for s in events] == digests
    assert rtmrs(boot_events(inputs))[0] == _hex(case["rtmr0"])
