"""A real TD's event log against the events a profile predicts: every event of dstack's TD
as predicted; a wrong edk2 release, command line or memory size named at its event."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cvmlaunch.attest.eventlog import event_checks, parse_json_log
from cvmlaunch.measure.rtmr import BootInputs, boot_events
from tests.conftest import TDX_VECTORS, VECTORS

DSTACK = VECTORS / "eventlog" / "dstack"
RECOMPUTED = json.loads((DSTACK / "dstack_tdx_lite_recompute.json").read_text())
TDX = json.loads((TDX_VECTORS / "tdx-vectors.json").read_text())
LOG = parse_json_log((DSTACK / "tdx-lite-getquote.json").read_bytes())


def dstack(edk2: int = 202502, **changes: Any) -> BootInputs:
    published = RECOMPUTED["measurement_doc"]
    hob = (TDX_VECTORS / "td-hob-bookworm-2GiB.bin").read_bytes()
    inputs = BootInputs(
        edk2,
        td_hob_sha384=hashlib.sha384(hob).digest(),
        cfv_sha384=bytes.fromhex(TDX["acpi_fixture_rtmr0"][0]["event_digests"][1]),
        acpi=[bytes.fromhex(d) for d in RECOMPUTED["acpi_digests_from_log"]],
        kernel_authenticode=bytes.fromhex(published["kernel_authenticode"]),
        cmdline="",
        initrd_sha384=bytes.fromhex(published["initrd_sha384"]),
        load_options_sha384=bytes.fromhex(published["cmdline_sha384"]),
    )
    return inputs._replace(**changes)


def results(inputs: BootInputs) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.actual) for c in event_checks(boot_events(inputs), LOG)}


def test_every_event_as_predicted() -> None:
    assert results(dstack()) == {
        "event_log.rtmr0.events": (True, "13 events as predicted"),
        "event_log.rtmr1.events": (True, "5 events as predicted"),
        "event_log.rtmr2.events": (True, "2 events as predicted"),
    }


def test_what_the_profile_cannot_know_is_taken_from_the_log() -> None:
    found = results(dstack(acpi=(None, None, None)))
    assert found["event_log.rtmr0.events"] == (
        True, "13 events as predicted (3 taken from the log, not checked)",
    )  # fmt: skip


def test_an_older_firmware_release_is_named() -> None:
    found = results(dstack(edk2=202405))
    ok0, text0 = found["event_log.rtmr0.events"]
    assert not ok0 and text0 == "separator (ReadyToBoot): predicted, not in the log"
    ok1, text1 = found["event_log.rtmr1.events"]
    assert not ok1 and "Exit Boot Services Invocation" in text1 and "check tdx.edk2" in text1


def test_another_command_line_is_named_at_its_event() -> None:
    found = results(dstack(load_options_sha384=None, cmdline="console=ttyS0 quiet"))
    ok, text = found["event_log.rtmr2.events"]
    assert not ok
    assert text.startswith("event ") and "LoadOptions 'console=ttyS0 quiet'" in text
    assert "check boot.cmdline, tdx.edk2, boot.initrd" in text
    assert found["event_log.rtmr1.events"][0]  # the kernel still matches


def test_another_memory_size_is_named_at_the_td_hob() -> None:
    hob4 = (TDX_VECTORS / "td-hob-bookworm-4GiB.bin").read_bytes()
    found = results(dstack(td_hob_sha384=hashlib.sha384(hob4).digest()))
    ok, text = found["event_log.rtmr0.events"]
    assert not ok and "TdxTable (TD HOB)" in text and "check memory_mib, firmware.path" in text
