"""`cvmlaunch libvirt`: the libvirt domain XML that boots the measured guest, or (--domain)
the profile a libvirt domain describes."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch.cli.common import EXIT_OK, json_text
from cvmlaunch.guest.flags import add_guest_arguments, spec_from_args


def add_arguments(m: argparse.ArgumentParser) -> None:
    m.description = (
        "Print the libvirt domain XML that boots exactly the guest the profile measures, for "
        "the libvirt version the profile (or --libvirt-version) names. With --domain, print "
        "the profile a domain XML describes instead."
    )
    m.add_argument("profile", nargs="?", type=Path, help="guest profile (TOML)")
    add_guest_arguments(m)
    d = m.add_argument_group("domain")
    d.add_argument("--libvirt-version", metavar="X.Y", help="override libvirt.version")
    d.add_argument("--name", default="cvmlaunch", help="the domain's <name> (default cvmlaunch)")
    d.add_argument(
        "--domain",
        type=Path,
        metavar="XML",
        help="read this domain and print its profile (TOML) instead",
    )
    m.add_argument("--json", action="store_true", help="one JSON object on stdout")
    m.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.domain is not None:
        return _profile(args)
    from cvmlaunch.guest.libvirt import domain_xml

    spec = spec_from_args(args)
    version = args.libvirt_version or spec.vm_definition.libvirt_version
    xml = domain_xml(spec, name=args.name, version=version)
    if args.json:
        print(json_text({"xml": xml, "libvirt_version": version}))
    else:
        print(xml, end="")
    return EXIT_OK


def _profile(args: argparse.Namespace) -> int:
    from cvmlaunch.errors import FieldProblem, InputError, ProfileError

    if args.profile is not None:
        raise ProfileError([FieldProblem("--domain", "give a profile or a domain, not both")])
    from cvmlaunch.guest.libvirt import MAX_DOMAIN_XML, spec_from_libvirt
    from cvmlaunch.guest.profile import profile_document, toml_text

    try:
        with args.domain.open("rb") as f:
            # One byte past the limit: enough for spec_from_libvirt to refuse the size.
            data = f.read(MAX_DOMAIN_XML + 1)
    except OSError as e:
        raise InputError(str(args.domain), e.strerror or str(e)) from None
    doc = profile_document(spec_from_libvirt(data), f"from the libvirt domain {args.domain}")
    if args.json:
        print(json_text({"profile": doc}))
    else:
        print(toml_text(doc), end="")
    return EXIT_OK
