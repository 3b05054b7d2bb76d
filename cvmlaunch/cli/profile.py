"""`cvmlaunch profile schema|check|from-qemu|from-libvirt`: the profile format, and profiles
out of the VM definitions that boot guests (and where one and a profile disagree)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, Parser, json_text
from cvmlaunch.errors import FieldProblem, ProfileError

if TYPE_CHECKING:
    from cvmlaunch.guest.spec import GuestSpec

_DEFINITION = "the VM definition: QEMU arguments after the binary (after --)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pc = p.add_subparsers(dest="profile_command", required=True, parser_class=Parser)
    schema = pc.add_parser("schema", help="print the profile JSON Schema")
    schema.set_defaults(handler=_schema)
    check = pc.add_parser(
        "check",
        help="validate a profile; with --qemu or --libvirt, compare it with a VM definition",
        description="Validate a profile. With --qemu -- ARGS or --libvirt DOMAIN.xml, list "
        "field by field where that VM definition boots another guest than the profile "
        "measures, with the digest each gives (exit 1 if they differ).",
    )
    check.add_argument("profile", type=Path)
    source = check.add_mutually_exclusive_group()
    check.add_argument("--json", action="store_true")
    source.add_argument("--libvirt", type=Path, metavar="XML", help="compare with this domain")
    # Last: everything after it is the command line (-- ARGS...).
    source.add_argument("--qemu", nargs=argparse.REMAINDER, metavar="-- ARGS",
                        help="compare with the QEMU arguments that follow")  # fmt: skip
    check.set_defaults(handler=_check)
    qemu = pc.add_parser(
        "from-qemu",
        help="the profile of a QEMU command line",
        description="Print the profile of the guest a QEMU command line boots (the arguments "
        "after the binary, after --); an option that cannot be modelled is named, and no "
        "profile is written.",
    )
    qemu.add_argument("--qemu-version", metavar="X.Y", help="the QEMU that runs it")
    qemu.add_argument("--firmware", type=Path, metavar="PATH",
                      help="the image where the line names none (libvirt chose it)")  # fmt: skip
    qemu.add_argument("--edk2", type=int, metavar="YYYYMM",
                      help="tdx: the firmware's edk2 release (for a kernel's events)")  # fmt: skip
    _output_arguments(qemu)
    qemu.add_argument("args", nargs="*", help=_DEFINITION)
    qemu.set_defaults(handler=_from_qemu)
    libvirt = pc.add_parser(
        "from-libvirt",
        help="the profile of a libvirt domain",
        description="Print the profile of the guest a libvirt domain XML boots; an element "
        "that cannot be modelled is named, and no profile is written.",
    )
    libvirt.add_argument("domain", type=Path, metavar="DOMAIN.xml")
    _output_arguments(libvirt)
    libvirt.set_defaults(handler=_from_libvirt)


def _output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write the profile to FILE (atomically) instead of stdout")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the profile as one JSON object")


def _schema(args: argparse.Namespace) -> int:
    from cvmlaunch.guest.profile import profile_json_schema

    print(json_text(profile_json_schema()))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from cvmlaunch.guest.profile import load_profile

    spec = load_profile(args.profile).to_spec()
    if args.qemu is None and args.libvirt is None:
        if args.json:
            doc = {"profile": str(args.profile), "valid": True, "technology": spec.technology}
            print(json_text(doc))
        else:
            print(f"{args.profile}: valid {spec.technology} profile")
        return EXIT_OK
    if args.qemu is not None:
        from cvmlaunch.guest.qemu_import import spec_from_qemu

        other, source = spec_from_qemu(_definition(args.qemu)), "qemu"
    else:
        other, source = _libvirt_spec(args.libvirt, "--libvirt"), "libvirt"
    return _compare(spec, other, source, args)


def _compare(spec: GuestSpec, other: GuestSpec, source: str, args: argparse.Namespace) -> int:
    """The fields where `other` (what the VM definition boots) differs from `spec`, each
    with both values, and the digest each measures to."""
    from cvmlaunch.guest.fields import FIELDS
    from cvmlaunch.measure import measure
    from cvmlaunch.plan import build_plan

    differences = []
    for field in FIELDS:
        if field.attr is None or field.key.startswith(_UNSAID):
            continue
        ours, theirs = spec.value(field), other.value(field)
        if ours != theirs and spec.technology in field.applies:
            differences.append({"key": field.key, "profile": _shown(ours), source: _shown(theirs),
                                "measured": field.measured})  # fmt: skip
    measured = [measure(build_plan(s)).digest for s in (spec, other)]
    blocks = [_signed_block(s, ld) for s, ld in zip((spec, other), measured, strict=True)]
    if blocks[0] != blocks[1]:  # the block as SNP_LAUNCH_FINISH gets it, however given
        differences.append({"key": "snp.id_block", "profile": _shown(blocks[0]),
                            source: _shown(blocks[1]), "measured": False})  # fmt: skip
    digests = {"profile": measured[0].hex(), source: measured[1].hex()}
    same = measured[0] == measured[1]
    if args.json:
        doc = {"profile": str(args.profile), "differences": differences, "measurements": digests,
               "same_measurement": same}  # fmt: skip
        print(json_text(doc))
    else:
        for d in differences:
            kind = "measured" if d["measured"] else "reported"
            print(f"{d['key']}: profile {d['profile']}, {source} {d[source]} ({kind})")
        print(f"measurement (profile): {digests['profile']}")
        print(f"measurement ({source}): {digests[source]}")
        verdict = "same guest" if not differences else "the definition boots another guest"
        print(verdict if same or differences else "same fields, other digest")
    return EXIT_MISMATCH if differences or not same else EXIT_OK


# What a VM definition does not say (pins, digests of published inputs, the firmware's edk2
# release, the VMM versions), or says in another form (an ID block as signed bytes): not
# compared field by field.
_UNSAID = (
    *("firmware.sha256", "firmware.digest", "firmware.descriptor", "snp.vmsa_gpa"),
    *("tdx.edk2", "tdx.qemu", "tdx.kernel_authenticode", "tdx.initrd_sha384"),
    *("tdx.load_options_sha384", "tdx.acpi", "tdx.page_order", "tdx.raw_data_tail"),
    *("snp.id_block.", "qemu.version", "libvirt.version"),
)


def _signed_block(spec: GuestSpec, ld: bytes) -> bytes | None:
    """The ID block `spec` launches with, as SNP_LAUNCH_FINISH gets it: given, or signed over
    its digest `ld` (a block the firmware would refuse is a difference, not an error here)."""
    if spec.id_block is None or spec.id_block.block is not None:
        return None if spec.id_block is None else spec.id_block.block
    from cvmlaunch.measure.idblock import signed_for

    signed = signed_for(spec, ld=ld)
    return None if signed is None else signed.block


def _shown(value: object) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, int | str | bool) or value is None:
        return value
    return str(value)


def _definition(words: list[str]) -> list[str]:
    words = words[1:] if words[:1] == ["--"] else words
    if not words:
        raise ProfileError([FieldProblem("--", "give the QEMU arguments after --")])
    return words


def _libvirt_spec(path: Path, name: str) -> GuestSpec:
    from cvmlaunch.guest.libvirt_import import MAX_DOMAIN_XML, spec_from_libvirt
    from cvmlaunch.inputs import read_input

    data = read_input(path, limit=MAX_DOMAIN_XML, what="a libvirt domain XML", name=name)
    return spec_from_libvirt(data)


def _from_qemu(args: argparse.Namespace) -> int:
    from cvmlaunch.guest.qemu_import import spec_from_qemu

    spec = spec_from_qemu(_definition(args.args), version=args.qemu_version,
                          firmware=args.firmware, edk2=args.edk2)  # fmt: skip
    return _write(spec, "a QEMU command line", args)


def _from_libvirt(args: argparse.Namespace) -> int:
    spec = _libvirt_spec(args.domain, "DOMAIN.xml")
    return _write(spec, f"the libvirt domain {args.domain}", args)


def _write(spec: GuestSpec, source: str, args: argparse.Namespace) -> int:
    from cvmlaunch.guest.profile_writer import profile_document, toml_text

    doc = profile_document(spec, f"from {source}")
    text = json_text(doc) + "\n" if args.json else toml_text(doc)
    if args.output is None:
        print(text, end="")
        return EXIT_OK
    from cvmlaunch.outputs import write_output

    write_output(args.output, text.encode(), name="--output")
    print(f"profile written to {args.output}")
    return EXIT_OK
