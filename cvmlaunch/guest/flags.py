"""The guest as command-line flags: the arguments that describe a guest, and the codec from
parsed flags (over a profile, the embedded default, or nothing) to a checked `GuestSpec`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch import log
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.argtypes import (
    api_version,
    choice,
    hex_bytes,
    integer,
    list_of,
    range_list,
    td_attributes,
    technology,
    vmm,
)
from cvmlaunch.guest.fields import BY_FLAG, FIELDS, inapplicable
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    PageOrder,
    RawDataTail,
    SevLaunchSecretInputs,
    TdConfig,
    Technology,
    cpu_from_forms,
)
from cvmlaunch.guest.technology import MODE_ALIASES

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

_log = log.get_logger("cvmlaunch.guest")


def add_guest_arguments(m: argparse.ArgumentParser, multi: bool = False) -> None:
    """The flags that describe a guest. With `multi`, the flags a matrix varies take lists
    and ranges (`--vcpus 1-64`, `--vmm qemu,ec2`)."""

    def axis(parse: Callable[[str], Any]) -> Callable[[str], Any]:
        return list_of(parse) if multi else parse

    g = m.add_argument_group("guest (override the profile)")
    g.add_argument(
        "--technology",
        type=technology,
        metavar="|".join(Technology),
        help="also sev-snp-measure's --mode names: " + ", ".join(MODE_ALIASES),
    )
    g.add_argument("--firmware", type=Path, metavar="PATH", help="OVMF image")
    g.add_argument("--firmware-sha256", type=hex_bytes(32), metavar="HEX", help="pin")
    g.add_argument(
        "--firmware-digest",
        type=hex_bytes(48),
        metavar="HEX",
        help="sev-snp: precomputed digest of the firmware pages",
    )
    g.add_argument("--vcpus", type=range_list if multi else integer, metavar="N")
    cpu = g.add_mutually_exclusive_group()
    cpu.add_argument(
        "--vcpu-type", type=axis(str), metavar="NAME", help="QEMU CPU model, e.g. EPYC-Milan"
    )
    cpu.add_argument(
        "--vcpu-sig", type=axis(integer), metavar="INT", help="CPUID(1).EAX signature"
    )
    cpu.add_argument("--vcpu-family", type=integer, metavar="INT")
    g.add_argument("--vcpu-model", type=integer, metavar="INT")
    g.add_argument("--vcpu-stepping", type=integer, metavar="INT")
    g.add_argument("--vmm", type=axis(vmm), metavar="qemu|ec2|gce")
    g.add_argument("--guest-features", type=axis(integer), metavar="INT", help="SNP SEV_FEATURES")
    g.add_argument("--vmsa-gpa", type=integer, metavar="GPA", help="GPA the VMSAs measure at")
    g.add_argument("--kernel", type=Path, metavar="PATH")
    g.add_argument("--kernel-sha256", type=hex_bytes(32), metavar="HEX")
    g.add_argument("--initrd", type=Path, metavar="PATH")
    g.add_argument("--initrd-sha256", type=hex_bytes(32), metavar="HEX")
    g.add_argument("--append", metavar="CMDLINE", help="kernel command line")
    g.add_argument(
        "--memory-mib", type=axis(integer), metavar="N", help="guest RAM (tdx: the TD HOB)"
    )
    t = m.add_argument_group("TDX (TD_PARAMS and the measuring VMM)")
    t.add_argument(
        "--tdx-page-order",
        type=axis(choice(PageOrder)),
        metavar="page|section",
        help="page: upstream KVM >= 6.16 (default); section: QEMU 8.2-era TDX builds",
    )
    t.add_argument(
        "--raw-data-tail",
        type=axis(choice(RawDataTail)),
        metavar="image|zero",
        help="memory past a section's raw data: image bytes (QEMU, default) or zero",
    )
    t.add_argument(
        "--tdx-attributes", type=td_attributes, metavar="INT|NAMES", help="TD ATTRIBUTES"
    )
    t.add_argument("--xfam", type=integer, metavar="INT", help="TD XFAM")
    t.add_argument("--mrconfigid", type=hex_bytes(48), metavar="HEX")
    t.add_argument("--mrowner", type=hex_bytes(48), metavar="HEX")
    t.add_argument("--mrownerconfig", type=hex_bytes(48), metavar="HEX")
    t.add_argument(
        "--edk2", type=integer, metavar="YYYYMM",
        help="the firmware's edk2 stable release: predicts RTMR0-2 (with --kernel: RTMR1-2)",
    )  # fmt: skip
    t.add_argument("--kernel-authenticode", type=hex_bytes(48), metavar="HEX",
                   help="instead of --kernel: its published Authenticode SHA-384")  # fmt: skip
    t.add_argument("--initrd-sha384", type=hex_bytes(48), metavar="HEX",
                   help="instead of --initrd: its SHA-384")  # fmt: skip
    t.add_argument("--load-options-sha384", type=hex_bytes(48), metavar="HEX",
                   help="instead of --append: SHA-384 of the LoadOptions")  # fmt: skip
    t.add_argument(
        "--qemu-version", metavar="X.Y",
        help="QEMU's version: before 10.2 it rewrites the kernel's setup header (RTMR1)",
    )  # fmt: skip
    s = m.add_argument_group("SEV/SEV-ES LAUNCH_MEASURE (all four compute the HMAC)")
    s.add_argument("--sev-policy", type=integer, metavar="INT", help="guest policy")
    s.add_argument("--tik", type=Path, metavar="FILE", help="TIK (16 bytes) or TEK||TIK (32)")
    s.add_argument("--sev-api", type=api_version, metavar="MAJOR.MINOR")
    s.add_argument("--sev-build", type=integer, metavar="INT")
    s.add_argument("--mnonce", type=hex_bytes(16), metavar="HEX")


def _dest(flag: str) -> str:
    """The argparse name of `flag`."""
    return flag.removeprefix("--").replace("-", "_")


# The flags that describe the guest: any of them turns off the embedded default profile.
_GUEST_FLAGS = tuple(_dest(flag) for flag in BY_FLAG)
# TdConfig field -> its flag's argparse name.
_TD_FLAGS = {
    f.attr_name: _dest(f.flag) for f in FIELDS if f.flag is not None and f.key.startswith("tdx.")
}
# Spec fields a flag of the same name sets as it is (--technology and --firmware do more).
_PLAIN_FLAGS = tuple(
    f.attr
    for f in FIELDS
    if f.flag is not None and f.attr == _dest(f.flag) not in ("technology", "firmware")
)


def default_profile() -> Path:
    """The embedded default profile (what every command measures without one)."""
    from importlib import resources

    return Path(str(resources.files("cvmlaunch") / "data" / "default.toml"))


def spec_from_args(
    args: argparse.Namespace,
    td_defaults: Mapping[str, Any] | None = None,
    *,
    profile_data: bytes | None = None,
) -> GuestSpec:
    """The GuestSpec of a `measure` invocation: profile (or embedded default) + flags.

    A TD takes `td_defaults` (TdConfig field -> value) for the fields neither sets: what
    `solve` searches anyway needs no value from the user. `profile_data` is the profile's
    bytes where the caller has read them (`read_profile`) for more than this.
    """
    given = any(getattr(args, name) is not None for name in _GUEST_FLAGS)
    fields: dict[str, Any]
    profile_path = args.profile
    if profile_path is None and not given:
        profile_path = default_profile()
    if profile_path is not None:
        from cvmlaunch.guest.profile import load_profile

        fields = load_profile(profile_path, profile_data).spec_fields()
        _log.info("profile.loaded", path=str(profile_path))
    else:
        _require_flags_only_inputs(args)
        fields = {}
    problems: list[FieldProblem] = []
    fields.update(_overrides(args, fields, problems))
    # A flag of another technology is refused, as the profile refuses its key.
    flags = [(f, BY_FLAG[f].key) for f in BY_FLAG if getattr(args, _dest(f), None) is not None]
    problems += inapplicable(fields["technology"], flags)
    if problems:
        raise ProfileError(problems)
    if td_defaults and fields["technology"] is Technology.TDX:
        td = fields.get("td") or TdConfig()
        unset = {k: v for k, v in td_defaults.items() if getattr(td, k) is None}
        fields["td"] = td._replace(**unset)
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
    for field in _PLAIN_FLAGS:
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


_CPU_FLAGS = ("--vcpu-type", "--vcpu-sig", "--vcpu-family", "--vcpu-model", "--vcpu-stepping")


def _cpu(args: argparse.Namespace, problems: list[FieldProblem]) -> CpuSpec | None:
    fms = (args.vcpu_family, args.vcpu_model, args.vcpu_stepping)
    try:
        return cpu_from_forms(args.vcpu_type, args.vcpu_sig, fms, _CPU_FLAGS)
    except ProfileError as e:
        problems += e.problems
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
    from cvmlaunch.guest.files import read_tik

    (major, minor) = args.sev_api
    return SevLaunchSecretInputs(read_tik(args.tik), major, minor, args.sev_build, args.mnonce)


def refuse_launch_secret(args: argparse.Namespace, command: str) -> None:
    """Refuse the LAUNCH_MEASURE flags for a command that works on launch digests."""
    given = [f for f in ("tik", "sev_api", "sev_build", "mnonce") if getattr(args, f) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        reason = f"{command} works on launch digests, not the LAUNCH_MEASURE HMAC"
        raise ProfileError([FieldProblem(flag, reason)])


def default_base(args: argparse.Namespace) -> None:
    """Without a profile, --technology or --firmware, the flags of `solve` and `matrix` vary
    the embedded default guest."""
    if args.profile is None and args.technology is None and args.firmware is None:
        args.profile = default_profile()
