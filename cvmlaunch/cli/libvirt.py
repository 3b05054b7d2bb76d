"""`cvmlaunch libvirt`: the libvirt domain XML that boots the measured guest (the other way:
`cvmlaunch profile from-libvirt`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch.cli.common import EXIT_OK, json_text
from cvmlaunch.guest.flags import add_guest_arguments, spec_from_args


def add_arguments(m: argparse.ArgumentParser) -> None:
    m.description = (
        "Print the libvirt domain XML that boots exactly the guest the profile measures, for "
        "the libvirt version the profile (or --libvirt-version) names. The other way: "
        "`cvmlaunch profile from-libvirt DOMAIN.xml`."
    )
    m.add_argument("profile", nargs="?", type=Path, help="guest profile (TOML)")
    add_guest_arguments(m)
    d = m.add_argument_group("domain")
    d.add_argument("--libvirt-version", metavar="X.Y", help="override libvirt.version")
    d.add_argument("--name", default="cvmlaunch", help="the domain's <name> (default cvmlaunch)")
    m.add_argument("--json", action="store_true", help="one JSON object on stdout")
    m.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.guest.libvirt import domain_xml

    spec = spec_from_args(args)
    version = args.libvirt_version or spec.vm_definition.libvirt_version
    signed = None
    if spec.id_block is not None:  # signed (or checked) over the digest the spec measures
        from cvmlaunch.measure.idblock import signed_for

        found = signed_for(spec)
        signed = None if found is None else found.parts
    xml = domain_xml(spec, name=args.name, version=version, id_block=signed)
    if args.json:
        print(json_text({"xml": xml, "libvirt_version": version}))
    else:
        print(xml, end="")
    return EXIT_OK
