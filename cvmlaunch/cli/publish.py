"""`cvmlaunch publish`: a guest's (or a matrix's) reference values in a verifier's format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cvmlaunch.cli.common import EXIT_OK
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.flags import add_guest_arguments, default_base, refuse_launch_secret

if TYPE_CHECKING:
    from datetime import datetime

    from cvmlaunch.publish import Format

# The formats each option means something to: given with another, it would be dropped
# without a word, so it is refused.
_OPTION_FORMATS = {
    "--expiration": ("json", "corim"),
    "--signing-key": ("corim",),
    "--protojson": ("go-sev-guest", "go-tdx-guest"),
}
# The formats for one technology's guests, by its name (go-sev-guest and go-tdx-guest share
# a module, which writes by the references' technology: the name must agree with it).
_FORMAT_TECHNOLOGY = {"go-sev-guest": "sev-snp", "go-tdx-guest": "tdx"}
# Where a format's document is not text, a terminal gets none of it.
_BINARY_FORMATS = ("corim",)
# A private key file is small; a larger file is not one.
_MAX_KEY_SIZE = 1 << 16


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cvmlaunch.publish import FORMATS

    p.description = (
        "The reference values of a guest, or of each guest of the lists and ranges given "
        "(as `matrix` takes them), in a verifier's format: json (every value with its "
        "configuration and provenance), rvps (Trustee's RVPS sample message), go-sev-guest "
        "and go-tdx-guest (check policies), corim. The document goes to stdout, or "
        "atomically to -o FILE."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile (default: embedded)")
    p.add_argument("--format", choices=tuple(FORMATS), default="json",
                   help="the document to write (default: json)")  # fmt: skip
    add_guest_arguments(p, multi=True)
    d = p.add_argument_group("document")
    d.add_argument("--min-tcb", metavar="TCB",
                   help="SNP: TCB minimums, e.g. bl=3,tee=0,snp=8,ucode=115")  # fmt: skip
    d.add_argument("--expiration", metavar="ISO8601",
                   help="when the values expire (json, corim)")  # fmt: skip
    d.add_argument("--signing-key", type=Path, metavar="PEM",
                   help="COSE-sign the CoRIM with this private key")  # fmt: skip
    d.add_argument("--protojson", action="store_true",
                   help="go-sev-guest/go-tdx-guest: protojson instead of textproto")  # fmt: skip
    out = d.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=Path, metavar="FILE",
                     help="write the document to FILE (atomically) instead of stdout")  # fmt: skip
    out.add_argument("--output-dir", type=Path, metavar="DIR",
                     help="write one document per configuration into the new folder DIR, "
                     "with index.json naming each one's configuration (atomically; an "
                     "earlier --output-dir folder is replaced, any other is refused)")  # fmt: skip
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.analysis.space import MATRIX_FLAGS, axes_from_lists
    from cvmlaunch.guest.flags import spec_from_args
    from cvmlaunch.guest.profile import read_profile
    from cvmlaunch.guest.spec import Technology
    from cvmlaunch.publish import PublishOptions, references

    refuse_launch_secret(args, "publish")
    _refuse_options_of_other_formats(args)
    module = _codec(args.format)
    expiration = _expiration(args.expiration)
    inputs = [p for p in (args.profile, args.signing_key) if p is not None]
    if args.output is not None:  # a bad output path costs nothing
        from cvmlaunch.outputs import check_output

        check_output(args.output, name="--output", inputs=inputs)
    if args.output_dir is not None:
        from cvmlaunch.outputs import check_output_folder

        check_output_folder(args.output_dir, name="--output-dir", inputs=inputs)
    signing_key = _signing_key(args.signing_key)
    lists = {flag: getattr(args, _dest(flag)) for flag in MATRIX_FLAGS}
    for flag, values in lists.items():  # the base spec takes each list's first value
        if values is not None:
            setattr(args, _dest(flag), values[0])
    default_base(args)
    # Read once: the provenance's SHA-256 is of the bytes the values come from.
    profile_bytes = None if args.profile is None else read_profile(args.profile)
    base = spec_from_args(args, profile_data=profile_bytes)
    wanted = _FORMAT_TECHNOLOGY.get(args.format)
    if wanted is not None and base.technology != wanted:
        reason = f"checks {wanted} guests; this guest is {base.technology}"
        raise ProfileError([FieldProblem("--format", f"{args.format} {reason}")])
    min_tcb = None
    if args.min_tcb is not None:
        if base.technology is not Technology.SEV_SNP:
            reason = f"SNP TCB component minimums; a {base.technology} guest has none"
            raise ProfileError([FieldProblem("--min-tcb", reason)])
        from cvmlaunch.attest.expect import parse_snp_min_tcb

        min_tcb = parse_snp_min_tcb(args.min_tcb)
    refs = references(base, axes_from_lists(base, lists), profile_bytes=profile_bytes,
                      min_tcb=min_tcb)  # fmt: skip
    options = PublishOptions(expiration, signing_key, text=not args.protojson)
    if args.output_dir is not None:
        from cvmlaunch.outputs import write_output_folder
        from cvmlaunch.publish import one_per_configuration

        documents, index = one_per_configuration(args.format, refs, options)
        write_output_folder(args.output_dir, documents, index, name="--output-dir",
                            inputs=inputs)  # fmt: skip
        print(f"{len(refs)} reference(s) written to {args.output_dir} as {args.format}, "
              "one document each (index.json names their configurations)")  # fmt: skip
        return EXIT_OK
    document = module.write(refs, options)
    if args.output is not None:
        from cvmlaunch.outputs import write_output

        write_output(args.output, document, name="--output", inputs=inputs)
        # The document is in the file; stdout says what went there.
        print(f"{len(refs)} reference(s) written to {args.output} as {args.format}")
        return EXIT_OK
    _deliver(document, binary=args.format in _BINARY_FORMATS)
    return EXIT_OK


def _deliver(document: bytes, *, binary: bool) -> None:
    """`document` on stdout, byte for byte where it is a byte stream."""
    raw = getattr(sys.stdout, "buffer", None)
    if binary and (raw is None or sys.stdout.isatty()):
        reason = "a binary document; give -o FILE or redirect stdout to a file"
        raise ProfileError([FieldProblem("--format", reason)])
    if raw is None:  # a text-only stream (an in-process caller's): the format is text
        sys.stdout.write(document.decode())
        return
    sys.stdout.flush()  # anything printed before goes first
    raw.write(document)
    raw.flush()


def _codec(name: str) -> Format:
    """The module of format `name`, or a one-line error if this build lacks it."""
    from cvmlaunch.publish import codec

    try:
        return codec(name)
    except ImportError as e:
        reason = f"{name} is not available in this cvmlaunch ({e})"
        raise ProfileError([FieldProblem("--format", reason)]) from None


def _refuse_options_of_other_formats(args: argparse.Namespace) -> None:
    for flag, formats in _OPTION_FORMATS.items():
        value = getattr(args, _dest(flag))
        if value not in (None, False) and args.format not in formats:
            reason = f"applies to --format {' or '.join(formats)}, not {args.format}"
            raise ProfileError([FieldProblem(flag, reason)])


def _expiration(text: str | None) -> datetime | None:
    if text is None:
        return None
    from datetime import datetime

    from cvmlaunch.attest.certs import utc
    from cvmlaunch.errors import AttestationError

    try:
        return utc(datetime.fromisoformat(text))
    except (ValueError, AttestationError):
        reason = f"expected an ISO 8601 time, e.g. 2027-01-01T00:00:00Z, got {text!r}"
        raise ProfileError([FieldProblem("--expiration", reason)]) from None


def _signing_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    from cvmlaunch.inputs import read_input

    return read_input(path, limit=_MAX_KEY_SIZE, what="a PEM private key", name="--signing-key")


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")
