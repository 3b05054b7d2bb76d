"""`cvmlaunch solve`: every configuration that reproduces an observed measurement."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cvmlaunch import log
from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.argtypes import hex_bytes_any, integer
from cvmlaunch.guest.flags import (
    add_guest_arguments,
    default_base,
    refuse_launch_secret,
    spec_from_args,
)
from cvmlaunch.guest.spec import GuestSpec, Technology
from cvmlaunch.namedtuple import NamedTuple

_log = log.get_logger("cvmlaunch.cli")
# The RTMRs a TD's firmware boot extends (RTMR3 is the running guest's).
BOOT_RTMRS = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Find every configuration that reproduces an observed measurement: vCPU counts, CPU "
        "models, VMM flavours, guest features (SNP); page order, raw-data tail and memory "
        "size (TDX MRTD); edk2 era, QEMU kind (whether it rewrites the kernel's setup header) "
        "and memory size (TDX RTMR0-2, from values or an event log). Firmware, kernel, initrd "
        "and command line come from the profile or flags; any guest flag given fixes that "
        "field. Exit 0 if found, 1 if not."
    )
    p.add_argument("--measurement", type=hex_bytes_any, metavar="HEX",
                   help="the launch digest (TDX: MRTD)")  # fmt: skip
    for index in range(BOOT_RTMRS):
        p.add_argument(f"--rtmr{index}", type=hex_bytes_any, metavar="HEX",
                       help=f"TDX RTMR{index} as the quote reports it")  # fmt: skip
    p.add_argument("--event-log", type=Path, metavar="FILE",
                   help="a TD's CC event log (CCEL or dstack's JSON): reproduce the RTMR0-2 "
                   "it replays to (RTMR0 where the profile gives tdx.acpi)")  # fmt: skip
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    add_guest_arguments(p)
    p.add_argument("--max-vcpus", type=integer, default=64, metavar="N", help="default 64")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


class _Solution(NamedTuple):
    config: dict[str, Any]  # the searched fields' values (point_doc)
    free: tuple[str, ...]
    models: tuple[str, ...]  # the CPU models with the solution's signature
    profile: str  # TOML


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.abi.cpu import models_with_signature
    from cvmlaunch.analysis.space import fixed_fields, fold, rtmr_matches, search_axes, solve
    from cvmlaunch.guest.fields import BY_FLAG
    from cvmlaunch.guest.profile_writer import profile_document, toml_text
    from cvmlaunch.measure.sweep import point_doc

    fixed = fixed_fields([f for f in BY_FLAG if getattr(args, _dest(f)) is not None])
    base, rtmrs, skipped = _base(args, fixed)
    boot, mrtd = bool(rtmrs), args.measurement is not None
    axes = search_axes(base, fixed=fixed, max_vcpus=args.max_vcpus, mrtd=mrtd, boot=boot)
    found = fold(solve(args.measurement, base, axes, rtmrs), axes, base, fixed=fixed)
    _log.info("solve.done", solutions=len(found), fixed=sorted(fixed), rtmrs=sorted(rtmrs))
    targets = {"measurement": args.measurement.hex()} if mrtd else {}
    targets |= {f"rtmr{i}": value.hex() for i, value in sorted(rtmrs.items())}
    # A launch digest alone is named by its value, as before RTMRs could be solved.
    what = (
        args.measurement.hex() if not boot else ", ".join(f"{k} {v}" for k, v in targets.items())
    )
    solutions = []
    for spec, free, memory_mibs in found:
        # A free field is written with the profile's value: any value of its axis does.
        models = models_with_signature(spec.cpu.signature) if spec.cpu is not None else ()
        text = toml_text(profile_document(spec, f"reproduces {what}"))
        config = point_doc(spec, free, boot=boot)
        if memory_mibs:  # the profile holds the first
            config["memory_mib"] = list(memory_mibs)
        if boot and not mrtd:  # not searched: only MRTD depends on them
            del config["page_order"], config["raw_data_tail"]
        solutions.append(_Solution(config, free, models, text))
    unmatched = {}
    if boot and not solutions:
        unmatched = {f"rtmr{i}": m for i, m in rtmr_matches(base, axes, rtmrs).items()}
    if args.json:
        doc = targets | {
            "fixed": sorted(fixed),
            "solutions": [
                {"config": s.config, "any": list(s.free), "cpu_models": list(s.models),
                 "profile": s.profile}
                for s in solutions
            ],
        }  # fmt: skip
        if skipped:
            doc["not_searched"] = skipped
        if unmatched:
            doc["reproduced_by"] = {
                name: {"configurations": m.matched, "of": m.searched, "fields": list(m.causes)}
                for name, m in unmatched.items()
            }
        print(json_text(doc))
        return EXIT_OK if solutions else EXIT_MISMATCH
    print(f"{len(solutions)} configuration(s) reproduce {what}")
    unmeasured = "not in the digest" if not boot else "not in these values"
    if skipped:
        print(f"(not searched: {skipped})")
    for name, m in unmatched.items():
        behind = f"; the fields behind its events: {', '.join(m.causes)}" if not m.matched else ""
        print(f"{name}: given by {m.matched} of {m.searched} configurations searched{behind}")
    for s in solutions:
        also = f" (also {', '.join(s.models[1:])})" if len(s.models) > 1 else ""
        anything = f"; any {', '.join(s.free)} ({unmeasured})" if s.free else ""
        line = " ".join(f"{k}={_text(v)}" for k, v in s.config.items() if v is not None)
        print(f"\n# {line}{also}{anything}")
        print(s.profile, end="")
    return EXIT_OK if solutions else EXIT_MISMATCH


def _text(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _base(
    args: argparse.Namespace, fixed: frozenset[str]
) -> tuple[GuestSpec, dict[int, bytes], str]:
    """The guest to search around, the RTMRs to reproduce (index -> value: from the flags or
    the log) and, for a log, which of its RTMRs is not searched and why."""
    from cvmlaunch.analysis.space import placeholders

    refuse_launch_secret(args, "solve")
    rtmrs = _rtmr_targets(args)
    if args.measurement is None and not rtmrs and args.event_log is None:
        reason = "give the launch digest to reproduce, or (TDX) --rtmrN or --event-log"
        raise ProfileError([FieldProblem("--measurement", reason)])
    default_base(args)
    if args.profile is None:
        # Flags alone: placeholders for what the search varies anyway.
        for flag, value in placeholders(args.technology, fixed).items():
            setattr(args, _dest(flag), value)
    boot = bool(rtmrs) or args.event_log is not None
    base = spec_from_args(args, _BOOT_PLACEHOLDERS if boot else None)
    if boot and base.technology is not Technology.TDX:
        flag = "--event-log" if args.event_log is not None else f"--rtmr{min(rtmrs)}"
        raise ProfileError([FieldProblem(flag, f"a TD's, not a {base.technology} guest's")])
    placeholder_qemu = args.qemu_version is None and base.td_config.qemu == _QEMU_PLACEHOLDER
    if boot and placeholder_qemu and (base.boot is None or base.boot.kernel.path is None):
        # Without a kernel file QEMU's version enters no RTMR: no value is needed, none is
        # written (nor a profile's same value, which is as irrelevant).
        base = base._replace(td=base.td_config._replace(qemu=None))
    size = 32 if base.technology in (Technology.SEV, Technology.SEV_ES) else 48
    if args.measurement is not None and len(args.measurement) != size:
        reason = f"a {base.technology} launch digest is {size} bytes ({2 * size} hex digits)"
        raise ProfileError([FieldProblem("--measurement", reason)])
    if args.max_vcpus < 1:
        raise ProfileError([FieldProblem("--max-vcpus", "expected at least 1")])
    if 0 in rtmrs and base.td_config.acpi is None:
        reason = "RTMR0 holds QEMU's ACPI blobs: give their SHA-384 (tdx.acpi) to solve it"
        raise ProfileError([FieldProblem("--rtmr0", reason)])
    skipped = ""
    if args.event_log is not None:
        rtmrs, skipped = _logged_rtmrs(args.event_log, base)
    return base, rtmrs, skipped


# Values for what a boot search varies anyway, where the profile has none.
_QEMU_PLACEHOLDER = "10.2"
_BOOT_PLACEHOLDERS = {"edk2": 202502, "qemu": _QEMU_PLACEHOLDER}


def _rtmr_targets(args: argparse.Namespace) -> dict[int, bytes]:
    rtmrs = {}
    for index in range(BOOT_RTMRS):
        value = getattr(args, f"rtmr{index}")
        if value is None:
            continue
        if len(value) != 48:
            reason = f"an RTMR is 48 bytes (96 hex digits), got {len(value)}"
            raise ProfileError([FieldProblem(f"--rtmr{index}", reason)])
        if args.event_log is not None:
            reason = "give RTMR values or an event log, not both"
            raise ProfileError([FieldProblem(f"--rtmr{index}", reason)])
        rtmrs[index] = value
    return rtmrs


def _logged_rtmrs(path: Path, base: GuestSpec) -> tuple[dict[int, bytes], str]:
    """RTMR0-2 as the log replays them (RTMR0 only where the profile can predict it), and
    what was left out, said why."""
    from cvmlaunch.attest.eventlog import MAX_LOG_SIZE, read_event_log, replay
    from cvmlaunch.attest.files import read_bounded

    log = read_event_log(read_bounded(path, "a CC event log", flag="--event-log",
                                      limit=MAX_LOG_SIZE))  # fmt: skip
    replayed = replay(log)
    rtmrs = dict(enumerate(replayed[:BOOT_RTMRS]))
    if base.td_config.acpi is None:
        del rtmrs[0]
        return rtmrs, "rtmr0, whose ACPI events the profile does not give (tdx.acpi)"
    return rtmrs, ""


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")
