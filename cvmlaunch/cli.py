"""The `cvmlaunch` command line: a thin shell over the library.

Exit codes: 0 success / match; 1 a measurement differs from --expect; 2 unusable input (one
line on stderr, no traceback). `--json` prints exactly one JSON object on stdout.
Only the modules a command needs are imported (pydantic only when a profile is read).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cvmlaunch import log
from cvmlaunch.errors import (
    CvmlaunchError,
    FieldProblem,
    FirmwareError,
    KvmError,
    LaunchError,
    ProfileError,
)
from cvmlaunch.spec import (
    MAX_VCPUS,
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    PageOrder,
    RawDataTail,
    SevLaunchSecretInputs,
    TdConfig,
    Technology,
    Vmm,
)

if TYPE_CHECKING:
    from datetime import datetime

    from cvmlaunch.analysis.evidence import Evidence
    from cvmlaunch.attest.expect import Expectations
    from cvmlaunch.firmware.tdvf import TdvfMetadata

_log = log.get_logger("cvmlaunch.cli")

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer (decimal or 0x hex), got {text!r}"
        ) from None


def _hex_bytes(size: int) -> Callable[[str], bytes]:
    def parse(text: str) -> bytes:
        try:
            value = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            value = b""
        if len(value) != size:
            raise argparse.ArgumentTypeError(
                f"expected {size} bytes as {2 * size} hex digits, got {text!r}"
            )
        return value

    return parse


def _hex_bytes_any(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hex digits, got {text!r}") from None


def _list_of(parse: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """A comma-separated list of values, each read by `parse`."""

    def parse_list(text: str) -> list[Any]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return list(dict.fromkeys(parse(item) for item in items))  # each value once

    return parse_list


def _range_list(text: str) -> list[int]:
    """Integers as a comma-separated list of values and ranges: `1-8,16,32-64`."""
    out: list[int] = []
    for item in _list_of(str)(text):
        low, dash, high = item.partition("-")
        first, last = _int(low), _int(high) if dash else _int(low)
        if last < first:
            raise argparse.ArgumentTypeError(f"expected LOW-HIGH with LOW <= HIGH, got {item!r}")
        if last - first >= MAX_VCPUS:
            raise argparse.ArgumentTypeError(f"{item!r}: more than {MAX_VCPUS} values")
        out += range(first, last + 1)
    return list(dict.fromkeys(out))


def _choice(kind: type[StrEnum]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in {k.value for k in kind}:
            values = ", ".join(k.value for k in kind)
            raise argparse.ArgumentTypeError(f"expected one of {values}, got {text!r}")
        return text

    return parse


def _api_version(text: str) -> tuple[int, int]:
    major, dot, minor = text.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR, e.g. 0.24, got {text!r}")
    return int(major), int(minor)


def _vmm(text: str) -> Vmm:
    try:
        return Vmm(text.lower())
    except ValueError:
        choices = ", ".join(v.value for v in Vmm)
        raise argparse.ArgumentTypeError(f"expected one of {choices}, got {text!r}") from None


def _td_attributes(text: str) -> int:
    """A number, or TD attribute names joined by commas (SEPT_VE_DISABLE,PKS)."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    from cvmlaunch.abi.tdx import td_attributes_from_names

    try:
        return td_attributes_from_names([n for n in text.split(",") if n.strip()])
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number or attribute names: {e}") from None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with `only`, just that command gets its arguments (start-up time)."""
    parser = _Parser(prog="cvmlaunch", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_text, add_arguments) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        if only in (None, name):
            add_arguments(sub)
    return parser


def _measure_arguments(m: argparse.ArgumentParser) -> None:
    m.description = (
        "Compute the launch measurement the platform will report. Flags override the "
        "profile; with neither, the embedded default profile is measured."
    )
    m.add_argument("profile", nargs="?", type=Path, help="guest profile (TOML)")
    _guest_arguments(m)
    o = m.add_argument_group("output")
    o.add_argument("--expect", type=_hex_bytes_any, metavar="HEX", help="exit 1 unless equal")
    o.add_argument("--json", action="store_true", help="one JSON object on stdout")
    o.add_argument("--trace", action="store_true", help="every measured step")
    m.set_defaults(handler=_cmd_measure)


def _guest_arguments(m: argparse.ArgumentParser, multi: bool = False) -> None:
    """The flags that describe a guest. With `multi`, the flags a matrix varies take lists
    and ranges (`--vcpus 1-64`, `--vmm qemu,ec2`)."""

    def axis(parse: Callable[[str], Any]) -> Callable[[str], Any]:
        return _list_of(parse) if multi else parse

    g = m.add_argument_group("guest (override the profile)")
    g.add_argument("--technology", choices=[t.value for t in Technology])
    g.add_argument("--firmware", type=Path, metavar="PATH", help="OVMF image")
    g.add_argument("--firmware-sha256", type=_hex_bytes(32), metavar="HEX", help="pin")
    g.add_argument(
        "--firmware-digest",
        type=_hex_bytes(48),
        metavar="HEX",
        help="sev-snp: precomputed digest of the firmware pages",
    )
    g.add_argument("--vcpus", type=_range_list if multi else _int, metavar="N")
    cpu = g.add_mutually_exclusive_group()
    cpu.add_argument(
        "--vcpu-type", type=axis(str), metavar="NAME", help="QEMU CPU model, e.g. EPYC-Milan"
    )
    cpu.add_argument("--vcpu-sig", type=axis(_int), metavar="INT", help="CPUID(1).EAX signature")
    cpu.add_argument("--vcpu-family", type=_int, metavar="INT")
    g.add_argument("--vcpu-model", type=_int, metavar="INT")
    g.add_argument("--vcpu-stepping", type=_int, metavar="INT")
    g.add_argument("--vmm", type=axis(_vmm), metavar="qemu|ec2|gce")
    g.add_argument("--guest-features", type=axis(_int), metavar="INT", help="SNP SEV_FEATURES")
    g.add_argument("--vmsa-gpa", type=_int, metavar="GPA", help="GPA the VMSAs measure at")
    g.add_argument("--kernel", type=Path, metavar="PATH")
    g.add_argument("--kernel-sha256", type=_hex_bytes(32), metavar="HEX")
    g.add_argument("--initrd", type=Path, metavar="PATH")
    g.add_argument("--initrd-sha256", type=_hex_bytes(32), metavar="HEX")
    g.add_argument("--append", metavar="CMDLINE", help="kernel command line")
    g.add_argument(
        "--memory-mib", type=axis(_int), metavar="N", help="guest RAM (tdx: the TD HOB)"
    )
    t = m.add_argument_group("TDX (TD_PARAMS and the measuring VMM)")
    t.add_argument(
        "--tdx-page-order",
        type=axis(_choice(PageOrder)),
        metavar="page|section",
        help="page: upstream KVM >= 6.16 (default); section: QEMU 8.2-era TDX builds",
    )
    t.add_argument(
        "--raw-data-tail",
        type=axis(_choice(RawDataTail)),
        metavar="image|zero",
        help="memory past a section's raw data: image bytes (QEMU, default) or zero",
    )
    t.add_argument(
        "--tdx-attributes", type=_td_attributes, metavar="INT|NAMES", help="TD ATTRIBUTES"
    )
    t.add_argument("--xfam", type=_int, metavar="INT", help="TD XFAM")
    t.add_argument("--mrconfigid", type=_hex_bytes(48), metavar="HEX")
    t.add_argument("--mrowner", type=_hex_bytes(48), metavar="HEX")
    t.add_argument("--mrownerconfig", type=_hex_bytes(48), metavar="HEX")
    s = m.add_argument_group("SEV/SEV-ES LAUNCH_MEASURE (all four compute the HMAC)")
    s.add_argument("--sev-policy", type=_int, metavar="INT", help="guest policy")
    s.add_argument("--tik", type=Path, metavar="FILE", help="TIK (16 bytes) or TEK||TIK (32)")
    s.add_argument("--sev-api", type=_api_version, metavar="MAJOR.MINOR")
    s.add_argument("--sev-build", type=_int, metavar="INT")
    s.add_argument("--mnonce", type=_hex_bytes(16), metavar="HEX")


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    pc = p.add_subparsers(dest="profile_command", required=True, parser_class=_Parser)
    schema = pc.add_parser("schema", help="print the profile JSON Schema")
    schema.set_defaults(handler=_cmd_profile_schema)
    check = pc.add_parser("check", help="validate a profile")
    check.add_argument("profile", type=Path)
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=_cmd_profile_check)


def _firmware_arguments(f: argparse.ArgumentParser) -> None:
    fc = f.add_subparsers(dest="firmware_command", required=True, parser_class=_Parser)
    inspect = fc.add_parser(
        "inspect", help="show the OVMF footer table, SEV metadata and TDVF metadata"
    )
    inspect.add_argument("image", type=Path)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=_cmd_firmware_inspect)


def _launch_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Create the VM through /dev/kvm (or the emulated kernel), populate and measure the "
        "initial image with map_memory, finalize, and compare the platform's measurement "
        "with the expected one. Exit 0 on match or unattested, 1 on mismatch or failure."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    p.add_argument(
        "--backend",
        choices=["auto", "kvm", "sim", "rehearsal"],
        default="auto",
        help="auto: kvm when this kernel offers the profile's VM type, else sim",
    )
    p.add_argument(
        "--sim-host",
        choices=["snp", "tdx", "rfc"],
        help="host the emulated kernel plays (default: snp, or tdx for a TD)",
    )
    p.add_argument("--record", type=Path, help="write the launch record (JSON) here")
    p.add_argument("--json", action="store_true", help="print the launch record")
    p.set_defaults(handler=_cmd_launch)


def _rtmr(text: str) -> tuple[int, bytes]:
    index, eq, value = text.partition("=")
    if not eq or index not in ("0", "1", "2", "3"):
        raise argparse.ArgumentTypeError(f"expected N=HEX with N 0..3, got {text!r}")
    return int(index), _hex_bytes(48)(value)


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Verify an SEV-SNP attestation report or a TDX quote offline (signature, certificate "
        "chain to the pinned vendor roots) and check every field against the profile and the "
        "--expect flags. Exit 0 pass, 1 a check failed, 2 unusable input."
    )
    p.add_argument("--report", type=Path, required=True, metavar="FILE",
                   help="SNP report (raw, hex, or MSG_REPORT_RSP) or TDX quote")  # fmt: skip
    c = p.add_argument_group("SEV-SNP certificates (TDX quotes carry their own)")
    c.add_argument("--vcek", type=Path, metavar="FILE", help="VCEK, DER or PEM")
    c.add_argument("--vlek", type=Path, metavar="FILE", help="VLEK, DER or PEM")
    c.add_argument(
        "--certs",
        type=Path,
        metavar="DIR_OR_FILE",
        help="a directory of certificates, a PEM bundle, or an extended report's "
        "certificate table; a supplied ARK must equal the pinned one",
    )
    e = p.add_argument_group("expectations (flags override the profile)")
    e.add_argument("--profile", type=Path, metavar="P",
                   help="expect this guest: its measurement and launch parameters")  # fmt: skip
    e.add_argument("--expect-measurement", type=_hex_bytes(48), metavar="HEX",
                   help="SNP MEASUREMENT or TDX MRTD")  # fmt: skip
    e.add_argument("--expect-report-data", type=_hex_bytes_any, metavar="HEX",
                   help="up to 64 bytes, zero-padded")  # fmt: skip
    e.add_argument("--expect-host-data", type=_hex_bytes(32), metavar="HEX", help="SNP")
    e.add_argument("--expect-policy", type=_int, metavar="INT", help="SNP guest POLICY")
    e.add_argument("--expect-vmpl", type=_int, metavar="N", help="SNP VMPL of the requester")
    e.add_argument("--expect-family-id", type=_hex_bytes(16), metavar="HEX", help="SNP ID block")
    e.add_argument("--expect-image-id", type=_hex_bytes(16), metavar="HEX", help="SNP ID block")
    e.add_argument("--expect-id-key-digest", type=_hex_bytes(48), metavar="HEX", help="SNP")
    e.add_argument("--expect-author-key-digest", type=_hex_bytes(48), metavar="HEX", help="SNP")
    e.add_argument("--min-guest-svn", type=_int, metavar="N", help="SNP GUEST_SVN minimum")
    e.add_argument("--expect-rtmr", type=_rtmr, action="append", metavar="N=HEX", help="TDX")
    e.add_argument("--expect-mrseam", type=_hex_bytes(48), metavar="HEX", help="TDX")
    e.add_argument(
        "--min-tcb",
        metavar="TCB",
        help="SNP: component minimums, e.g. bl=3,tee=0,snp=8,ucode=115 (fmc= on Turin), "
        "checked on the reported, committed, current and launch TCB; TDX: TEE_TCB_SVN as "
        "32 hex digits, byte by byte",
    )
    e.add_argument("--allow-debug", action="store_true", help="accept a debuggable guest")
    p.add_argument("--now", metavar="ISO8601", help="verify certificates at this time")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=_cmd_audit)


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Tell the measurement as a story: every measured step grouped into runs, each with "
        "its inputs, the profile fields that cause it, and the running digest at its end."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=_cmd_explain)


def _diff_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare two measurements and name the first divergent step and its cause. A and B "
        "are profiles (.toml), saved `measure --trace --json` output, or launch records "
        "(`launch --json`), in any combination. Exit 0 when they measure the same, 1 if not."
    )
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=_cmd_diff)


def _solve_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Find every configuration that reproduces an observed measurement: vCPU counts, CPU "
        "models, VMM flavours, guest features (SNP); page order, raw-data tail and memory "
        "size (TDX). Firmware, kernel, initrd and command line come from the profile or "
        "flags; any guest flag given fixes that field. Exit 0 if found, 1 if not."
    )
    p.add_argument("--measurement", type=_hex_bytes_any, required=True, metavar="HEX")
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    _guest_arguments(p)
    p.add_argument("--max-vcpus", type=_int, default=64, metavar="N", help="default 64")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=_cmd_solve)


def _matrix_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "The table of reference values: one measurement per combination of the listed "
        "values, e.g. --vcpus 1-64 --vcpu-type EPYC-Milan,EPYC-Genoa --vmm qemu,ec2."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    _guest_arguments(p, multi=True)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object on stdout")
    out.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(handler=_cmd_matrix)


_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "measure": ("compute the expected launch measurement", _measure_arguments),
    "launch": ("launch through KVM and compare the measurement", _launch_arguments),
    "audit": ("verify an attestation report or quote against a profile", _audit_arguments),
    "explain": ("the measurement step by step, with causes", _explain_arguments),
    "diff": ("why two measurements differ", _diff_arguments),
    "solve": ("which configurations produce a measurement", _solve_arguments),
    "matrix": ("reference measurements over a range of configurations", _matrix_arguments),
    "profile": ("profile format tools", _profile_arguments),
    "firmware": ("firmware image tools", _firmware_arguments),
}


def _json(doc: object) -> str:
    import json

    return json.dumps(doc, indent=2)


# ---- measure ---------------------------------------------------------------------------

# TdConfig field -> its flag's argparse name.
_TD_FLAGS = {
    "page_order": "tdx_page_order",
    "raw_data_tail": "raw_data_tail",
    "attributes": "tdx_attributes",
    "xfam": "xfam",
    "mrconfigid": "mrconfigid",
    "mrowner": "mrowner",
    "mrownerconfig": "mrownerconfig",
}

# The flags that describe the guest: any of them turns off the embedded default profile.
_GUEST_FLAGS = (
    *("technology", "firmware", "firmware_sha256", "firmware_digest", "vcpus", "vmm"),
    *("vcpu_type", "vcpu_sig", "vcpu_family", "vcpu_model", "vcpu_stepping"),
    *("guest_features", "vmsa_gpa", "sev_policy", "tik", "sev_api", "sev_build", "mnonce"),
    *("kernel", "kernel_sha256", "initrd", "initrd_sha256", "append", "memory_mib"),
    *_TD_FLAGS.values(),
)


def _default_profile() -> Path:
    from importlib import resources

    return Path(str(resources.files("cvmlaunch") / "data" / "default.toml"))


def spec_from_args(args: argparse.Namespace) -> GuestSpec:
    """The GuestSpec of a `measure` invocation: profile (or embedded default) + flags."""
    given = any(getattr(args, name) is not None for name in _GUEST_FLAGS)
    fields: dict[str, Any]
    profile_path = args.profile
    if profile_path is None and not given:
        profile_path = _default_profile()
    if profile_path is not None:
        from cvmlaunch.profile import load_profile

        fields = load_profile(profile_path).spec_fields()
        _log.info("profile.loaded", path=str(profile_path))
    else:
        _require_flags_only_inputs(args)
        fields = {}
    problems: list[FieldProblem] = []
    fields.update(_overrides(args, fields, problems))
    if problems:
        raise ProfileError(problems)
    return GuestSpec(**fields).check()


def _require_flags_only_inputs(args: argparse.Namespace) -> None:
    missing = [
        FieldProblem(flag, "required without a PROFILE")
        for flag, value in (("--technology", args.technology), ("--firmware", args.firmware))
        if value is None
    ]
    if args.technology in (Technology.SEV_ES, Technology.SEV_SNP) and args.vcpus is None:
        missing.append(FieldProblem("--vcpus", f"required for {args.technology}"))
    if missing:
        raise ProfileError(missing)


def _overrides(
    args: argparse.Namespace, base: dict[str, Any], problems: list[FieldProblem]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.technology is not None:
        out["technology"] = Technology(args.technology)
    if args.firmware is not None:
        # Another image: the profile's pin and precomputed digest no longer describe it.
        out.update(firmware=args.firmware, firmware_sha256=None, firmware_digest=None)
    for field in (
        *("firmware_sha256", "firmware_digest", "vcpus", "vmm"),
        *("guest_features", "vmsa_gpa", "sev_policy", "memory_mib"),
    ):
        if getattr(args, field) is not None:
            out[field] = getattr(args, field)
    td = _td(args, base.get("td"), out.get("technology", base.get("technology")))
    if td is not None or "td" in base:
        out["td"] = td
    cpu = _cpu(args, problems)
    if cpu is not None:
        out["cpu"] = cpu
    boot = _boot(args, base.get("boot"), problems)
    if boot is not None:
        out["boot"] = boot
    secret = _launch_secret(args, problems)
    if secret is not None:
        out["launch_secret"] = secret
    return out


def _td(args: argparse.Namespace, base: TdConfig | None, technology: object) -> TdConfig | None:
    given: dict[str, Any] = {
        field: getattr(args, flag)
        for field, flag in _TD_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if "page_order" in given:
        given["page_order"] = PageOrder(given["page_order"])
    if "raw_data_tail" in given:
        given["raw_data_tail"] = RawDataTail(given["raw_data_tail"])
    if not given:
        # A profile's [tdx] table means nothing once --technology chose another technology.
        return base if technology is Technology.TDX else None
    return (base or TdConfig())._replace(**given)


def _cpu(args: argparse.Namespace, problems: list[FieldProblem]) -> CpuSpec | None:
    fms = (args.vcpu_family, args.vcpu_model, args.vcpu_stepping)
    named = args.vcpu_type is not None or args.vcpu_sig is not None
    if named and (args.vcpu_model is not None or args.vcpu_stepping is not None):
        flag = "--vcpu-model" if args.vcpu_model is not None else "--vcpu-stepping"
        problems.append(FieldProblem(flag, "goes with --vcpu-family, not a model or signature"))
        return None
    try:
        if args.vcpu_type is not None:
            return CpuSpec.from_name(args.vcpu_type)
        if args.vcpu_sig is not None:
            return CpuSpec(args.vcpu_sig)
        if all(v is not None for v in fms):
            return CpuSpec.from_family_model_stepping(*fms)
    except ValueError as e:
        problems.append(FieldProblem("--vcpu-type" if args.vcpu_type else "--vcpu-family", str(e)))
        return None
    if any(v is not None for v in fms):
        problems.append(
            FieldProblem("--vcpu-family", "goes together with --vcpu-model and --vcpu-stepping")
        )
    return None


def _boot(
    args: argparse.Namespace, base: DirectBoot | None, problems: list[FieldProblem]
) -> DirectBoot | None:
    kernel = base.kernel if base is not None else None
    initrd = base.initrd if base is not None else None
    cmdline = base.cmdline if base is not None else ""
    if args.kernel is not None and args.kernel_sha256 is not None:
        problems.append(FieldProblem("--kernel", "give --kernel or --kernel-sha256, not both"))
    if args.initrd is not None and args.initrd_sha256 is not None:
        problems.append(FieldProblem("--initrd", "give --initrd or --initrd-sha256, not both"))
    if args.kernel is not None or args.kernel_sha256 is not None:
        kernel = BootFile(args.kernel, args.kernel_sha256)
    if args.initrd is not None or args.initrd_sha256 is not None:
        initrd = BootFile(args.initrd, args.initrd_sha256)
    if args.append is not None:
        cmdline = args.append
        if not cmdline.isascii():
            try:
                cmdline.encode()
            except UnicodeEncodeError:
                problems.append(FieldProblem("--append", "not valid UTF-8"))
    changed = any(
        v is not None
        for v in (args.kernel, args.kernel_sha256, args.initrd, args.initrd_sha256, args.append)
    )
    if not changed:
        return None
    if kernel is None:
        problems.append(FieldProblem("--kernel", "required with --initrd or --append"))
        return None
    return DirectBoot(kernel, initrd, cmdline)


def _launch_secret(
    args: argparse.Namespace, problems: list[FieldProblem]
) -> SevLaunchSecretInputs | None:
    parts = {"--tik": args.tik, "--sev-api": args.sev_api, "--sev-build": args.sev_build}
    parts["--mnonce"] = args.mnonce
    if all(v is None for v in parts.values()):
        return None
    missing = [flag for flag, v in parts.items() if v is None]
    if missing:
        needs = "the LAUNCH_MEASURE HMAC needs all of " + ", ".join(parts)
        problems.append(FieldProblem(missing[0], needs))
        return None
    from cvmlaunch.inputs import read_tik

    (major, minor) = args.sev_api
    return SevLaunchSecretInputs(read_tik(args.tik), major, minor, args.sev_build, args.mnonce)


def _cmd_measure(args: argparse.Namespace) -> int:
    from cvmlaunch.measure import measure
    from cvmlaunch.plan import build_plan

    spec = spec_from_args(args)
    plan = build_plan(spec)
    result = measure(plan, trace=args.trace)
    _log.info("measure.done", technology=str(spec.technology), measurement=result.digest.hex())
    match = None if args.expect is None else args.expect == result.digest
    if args.json:
        from cvmlaunch.report import measurement_json

        doc = measurement_json(plan, result)
        if args.expect is not None:
            doc.update(expected=args.expect.hex(), match=match)
        print(_json(doc))
    else:
        from cvmlaunch.report import measurement_text

        print(measurement_text(plan, result, args.expect))
    return EXIT_MISMATCH if match is False else EXIT_OK


# ---- launch ----------------------------------------------------------------------------


def _cmd_launch(args: argparse.Namespace) -> int:
    from cvmlaunch.inputs import sha256_file
    from cvmlaunch.launch import Backend, Verdict, launch
    from cvmlaunch.launch.record import dumps, write_atomically
    from cvmlaunch.plan import build_plan
    from cvmlaunch.profile import load_profile

    path = args.profile if args.profile is not None else _default_profile()
    if args.record is not None and not args.record.parent.is_dir():
        raise ProfileError([FieldProblem("--record", f"no directory {args.record.parent}")])
    spec = load_profile(path).to_spec()
    record = launch(build_plan(spec), Backend(args.backend), sim_host=args.sim_host)
    doc = {"profile": {"path": str(path), "sha256": sha256_file(path).hex()}} | record.doc
    if args.record is not None:
        write_atomically(args.record, dumps(doc))
    if args.json:
        print(_json(doc))
    else:
        print(f"verdict:   {record.verdict} (backend {record.backend}: {record.reason})")
        print(f"expected:  {record.expected.hex()}")
        print(f"reported:  {record.reported.hex() if record.reported else '-'}")
    return EXIT_MISMATCH if record.verdict is Verdict.MISMATCH else EXIT_OK


# ---- explain / diff / solve / matrix ------------------------------------------------------


def _cmd_explain(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.explain import explain
    from cvmlaunch.plan import build_plan
    from cvmlaunch.profile import load_profile

    path = args.profile if args.profile is not None else _default_profile()
    story = explain(build_plan(load_profile(path).to_spec()))
    print(_json(story.doc()) if args.json else story.text())
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.diff import diff

    result = diff(_evidence(args.a), _evidence(args.b))
    print(_json(result.doc()) if args.json else result.text())
    return EXIT_OK if result.same else EXIT_MISMATCH


def _evidence(path: Path) -> Evidence:
    """A measurement to compare: a profile (TOML), or a saved trace or launch record (JSON)."""
    import json

    from cvmlaunch.analysis.evidence import evidence_from_json, evidence_from_plan
    from cvmlaunch.errors import InputError

    try:
        with path.open("rb") as f:
            head = f.read(1)
            f.seek(0)
            doc = json.load(f) if head in (b"{", b"[") else None
    except OSError as e:
        raise InputError(str(path), e.strerror or str(e)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(str(path), f"not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(str(path), "JSON nested too deeply") from None
    if doc is None:  # anything that does not open like JSON is read as a profile
        from cvmlaunch.plan import build_plan
        from cvmlaunch.profile import load_profile

        return evidence_from_plan(build_plan(load_profile(path).to_spec()), str(path))
    return evidence_from_json(doc, str(path))


# `solve` flags that fix a field of the search (any other field is searched).
_SOLVE_FIXES = {
    "vcpus": ("vcpus",),
    "cpu": ("vcpu_type", "vcpu_sig", "vcpu_family"),
    "vmm": ("vmm",),
    "guest_features": ("guest_features",),
    "page_order": ("tdx_page_order",),
    "raw_data_tail": ("raw_data_tail",),
    "memory_mib": ("memory_mib",),
}


def _cmd_solve(args: argparse.Namespace) -> int:
    from cvmlaunch.abi.cpu import models_with_signature
    from cvmlaunch.analysis.space import fold, search_axes, solve
    from cvmlaunch.profile import profile_document, toml_text

    fixed = frozenset(
        field
        for field, flags in _SOLVE_FIXES.items()
        if any(getattr(args, flag) is not None for flag in flags)
    )
    _refuse_launch_secret(args, "solve")
    _default_base(args)
    if args.profile is None:
        # Flags alone: placeholders for what the search varies anyway.
        args.vcpus = args.vcpus if args.vcpus is not None else 1
        if "cpu" not in fixed and args.technology in (Technology.SEV_ES, Technology.SEV_SNP):
            args.vcpu_type = "EPYC-v4"
    base = spec_from_args(args)
    size = 32 if base.technology in (Technology.SEV, Technology.SEV_ES) else 48
    if len(args.measurement) != size:
        reason = f"a {base.technology} launch digest is {size} bytes ({2 * size} hex digits)"
        raise ProfileError([FieldProblem("--measurement", reason)])
    if args.max_vcpus < 1:
        raise ProfileError([FieldProblem("--max-vcpus", "expected at least 1")])
    axes = search_axes(base, fixed=fixed, max_vcpus=args.max_vcpus)
    found = fold(solve(args.measurement, base, axes), axes)
    _log.info("solve.done", solutions=len(found), fixed=sorted(fixed))
    solutions = []
    for config, free in found:
        # A free field is written with the profile's value: any value of its axis does.
        spec = config.spec(base)
        models = models_with_signature(config.cpu.signature) if config.cpu is not None else ()
        text = toml_text(profile_document(spec, f"reproduces {args.measurement.hex()}"))
        solutions.append((config, free, models, text))
    if args.json:
        doc = {
            "measurement": args.measurement.hex(),
            "fixed": sorted(fixed),
            "solutions": [
                {
                    "config": config.doc(),
                    "any": list(free),
                    "cpu_models": list(models),
                    "profile": text,
                }
                for config, free, models, text in solutions
            ],
        }
        print(_json(doc))
    else:
        print(f"{len(solutions)} configuration(s) reproduce {args.measurement.hex()}")
        for config, free, models, text in solutions:
            also = f" (also {', '.join(models[1:])})" if len(models) > 1 else ""
            anything = f"; any {', '.join(free)} (not in the digest)" if free else ""
            print(f"\n# {config.text()}{also}{anything}")
            print(text, end="")
    return EXIT_OK if solutions else EXIT_MISMATCH


# The flags `matrix` takes as lists.
_MATRIX_AXES = (
    *("vcpus", "vcpu_type", "vcpu_sig", "vmm", "guest_features"),
    *("tdx_page_order", "raw_data_tail", "memory_mib"),
)


def _cmd_matrix(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.space import Axes, matrix

    _refuse_launch_secret(args, "matrix")
    lists = {name: getattr(args, name) for name in _MATRIX_AXES}
    for name, values in lists.items():  # the base spec takes each list's first value
        if values is not None:
            setattr(args, name, values[0])
    _default_base(args)
    base = spec_from_args(args)
    cpus: tuple[CpuSpec | None, ...] = (base.cpu,)
    if lists["vcpu_type"] is not None:
        cpus = tuple(_cpu_named(name) for name in lists["vcpu_type"])
    elif lists["vcpu_sig"] is not None:
        cpus = tuple(CpuSpec(sig) for sig in lists["vcpu_sig"])
    axes = Axes(
        vcpus=tuple(lists["vcpus"] or (base.vcpus,)),
        cpus=cpus,
        vmms=tuple(lists["vmm"] or (base.vmm,)),
        # SEV_FEATURES exist for SNP only (an SEV-ES VMSA holds 0).
        guest_features=tuple(
            lists["guest_features"]
            or ((base.guest_features,) if base.technology is Technology.SEV_SNP else (0,))
        ),
        # Empty: the base's value (the engine refuses TDX axes for other guests).
        page_orders=tuple(PageOrder(o) for o in lists["tdx_page_order"] or ()),
        raw_data_tails=tuple(RawDataTail(t) for t in lists["raw_data_tail"] or ()),
        memory_mibs=tuple(lists["memory_mib"] or ()),
    )
    rows = matrix(base, axes)
    docs = [row.config.doc() | {"measurement": row.measurement.hex()} for row in rows]
    if args.json:
        print(_json({"technology": str(base.technology), "rows": docs}))
    elif args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(docs[0]) if docs else [])
        writer.writeheader()
        writer.writerows(docs)
    else:
        for row in rows:
            print(f"{row.measurement.hex()}  {row.config.text()}")
    return EXIT_OK


def _refuse_launch_secret(args: argparse.Namespace, command: str) -> None:
    given = [f for f in ("tik", "sev_api", "sev_build", "mnonce") if getattr(args, f) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        reason = f"{command} works on launch digests, not the LAUNCH_MEASURE HMAC"
        raise ProfileError([FieldProblem(flag, reason)])


def _default_base(args: argparse.Namespace) -> None:
    """Without a profile, --technology or --firmware, the flags of `solve` and `matrix` vary
    the embedded default guest."""
    if args.profile is None and args.technology is None and args.firmware is None:
        args.profile = _default_profile()


def _cpu_named(name: str) -> CpuSpec:
    try:
        return CpuSpec.from_name(name)
    except ValueError as e:
        raise ProfileError([FieldProblem("--vcpu-type", str(e))]) from None


# ---- audit -----------------------------------------------------------------------------


def _cmd_audit(args: argparse.Namespace) -> int:
    from cvmlaunch.attest import TDX, audit, read_evidence
    from cvmlaunch.attest.amd import AmdCerts, gather
    from cvmlaunch.attest.files import read_bounded

    evidence = read_evidence(read_bounded(args.report, "an attestation report"))
    now = _now(args.now)
    expect = _expectations(args, evidence.kind)
    certs = AmdCerts()
    if evidence.kind == TDX:
        given = [f for f in ("vcek", "vlek", "certs") if getattr(args, f) is not None]
        if given:
            raise ProfileError(
                [FieldProblem(f"--{given[0]}", "a TDX quote carries its own PCK chain")]
            )
    else:
        certs = gather(args.vcek, args.vlek, args.certs)
    result = audit(evidence.data, certs=certs, expect=expect, now=now)
    _log.info("audit.done", kind=result.kind, verdict=result.verdict,
              failed=[c.name for c in result.failures])  # fmt: skip
    if args.json:
        print(_json(result.doc()))
    else:
        print(result.text())
    return EXIT_OK if result.passed else EXIT_MISMATCH


def _now(text: str | None) -> datetime | None:
    if text is None:
        return None
    from datetime import datetime

    from cvmlaunch.attest.certs import utc
    from cvmlaunch.errors import AttestationError

    try:
        return utc(datetime.fromisoformat(text))
    except (ValueError, AttestationError):
        raise ProfileError(
            [FieldProblem("--now", f"expected an ISO 8601 time, e.g. 2025-09-01T00:00Z: {text!r}")]
        ) from None


def _expectations(args: argparse.Namespace, kind: str) -> Expectations:
    from cvmlaunch.attest import SEV_SNP
    from cvmlaunch.attest.expect import (
        Expectations,
        parse_snp_min_tcb,
        parse_tee_tcb_svn,
        report_data,
    )

    expect = Expectations()
    if args.profile is not None:
        expect = _profile_expectations(args.profile, kind)
    snp_fields = (
        *("host_data", "policy", "vmpl"),
        *("family_id", "image_id", "id_key_digest", "author_key_digest"),
    )
    snp_only = {
        f"--expect-{f.replace('_', '-')}": getattr(args, f"expect_{f}") for f in snp_fields
    }
    snp_only["--min-guest-svn"] = args.min_guest_svn
    tdx_only = {"--expect-rtmr": args.expect_rtmr, "--expect-mrseam": args.expect_mrseam}
    wrong = [f for f, v in (tdx_only if kind == SEV_SNP else snp_only).items() if v is not None]
    if wrong:
        other = "TDX quotes" if kind == SEV_SNP else "SEV-SNP reports"
        raise ProfileError([FieldProblem(wrong[0], f"applies to {other} only")])
    changes: dict[str, Any] = {"allow_debug": args.allow_debug}
    if args.expect_measurement is not None:
        changes["measurement"] = args.expect_measurement
    if args.expect_report_data is not None:
        if not args.expect_report_data:  # an unset $NONCE must not expect all zeros
            raise ProfileError([FieldProblem("--expect-report-data", "empty; give 1..64 bytes")])
        changes["report_data"] = report_data(args.expect_report_data)
    for field in (*snp_fields, "mrseam"):
        if getattr(args, f"expect_{field}") is not None:
            changes[field] = getattr(args, f"expect_{field}")
    if args.min_guest_svn is not None:
        changes["min_guest_svn"] = args.min_guest_svn
    if args.expect_rtmr:
        indexes = [index for index, _ in args.expect_rtmr]
        repeated = next((i for i in indexes if indexes.count(i) > 1), None)
        if repeated is not None:
            reason = f"RTMR{repeated} given twice; give each index once"
            raise ProfileError([FieldProblem("--expect-rtmr", reason)])
        changes["rtmrs"] = dict(args.expect_rtmr)
    if args.min_tcb is not None:
        if kind == SEV_SNP:
            changes["min_tcb"] = parse_snp_min_tcb(args.min_tcb)
        else:
            changes["min_tee_tcb_svn"] = parse_tee_tcb_svn(args.min_tcb)
    return expect._replace(**changes)


def _profile_expectations(path: Path, kind: str) -> Expectations:
    from cvmlaunch.attest import SEV_SNP
    from cvmlaunch.attest.expect import for_spec
    from cvmlaunch.measure import measure
    from cvmlaunch.plan import build_plan
    from cvmlaunch.profile import load_profile

    spec = load_profile(path).to_spec()
    wanted = Technology.SEV_SNP if kind == SEV_SNP else Technology.TDX
    if spec.technology is not wanted:
        evidence = "an SEV-SNP report" if kind == SEV_SNP else "a TDX quote"
        raise ProfileError(
            [FieldProblem("--profile", f"a {spec.technology} profile, but --report is {evidence}")]
        )
    digest = measure(build_plan(spec)).digest
    _log.info("audit.expected_measurement", profile=str(path), measurement=digest.hex())
    return for_spec(spec, digest)


# ---- profile / firmware ----------------------------------------------------------------


def _cmd_profile_schema(args: argparse.Namespace) -> int:
    from cvmlaunch.profile import profile_json_schema

    print(_json(profile_json_schema()))
    return EXIT_OK


def _cmd_profile_check(args: argparse.Namespace) -> int:
    from cvmlaunch.profile import load_profile

    spec = load_profile(args.profile).to_spec()
    if args.json:
        print(_json({"profile": str(args.profile), "valid": True, "technology": spec.technology}))
    else:
        print(f"{args.profile}: valid {spec.technology} profile")
    return EXIT_OK


def _cmd_firmware_inspect(args: argparse.Namespace) -> int:
    from cvmlaunch.firmware.ovmf import parse_ovmf
    from cvmlaunch.firmware.tdvf import find_tdvf
    from cvmlaunch.inputs import read_firmware
    from cvmlaunch.report import firmware_json, firmware_text

    data = read_firmware(args.image)
    image = parse_ovmf(data)
    # Broken TDVF metadata does not hide the rest of the image: it is reported instead.
    tdvf: TdvfMetadata | str | None
    try:
        tdvf = find_tdvf(data)
    except FirmwareError as e:
        tdvf = str(e)
    print(_json(firmware_json(image, tdvf)) if args.json else firmware_text(image, tdvf))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in _COMMANDS else None).parse_args(argv)
    log.set_level(
        log.INFO if args.verbose == 1 else log.DEBUG if args.verbose > 1 else log.WARNING
    )
    try:
        code: int = args.handler(args)
    except (KvmError, LaunchError) as e:
        # The kernel or the guest refused: a failed launch, not unusable input.
        print(f"cvmlaunch: launch failed: {e}", file=sys.stderr)
        return EXIT_MISMATCH
    except CvmlaunchError as e:
        print(f"cvmlaunch: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): the result was not delivered, so never report
        # success; 141 is what a shell reports for a command killed by SIGPIPE.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # stdout itself failed (e.g. a full disk): inputs raise our errors
        print(f"cvmlaunch: error: cannot write the output: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code
