"""`cvmlaunch measure`: the launch measurement the platform will report."""

from __future__ import annotations

import argparse
from pathlib import Path

from cvmlaunch import log
from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.flags import add_guest_arguments, spec_from_args

_log = log.get_logger("cvmlaunch.cli")

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def add_arguments(m: argparse.ArgumentParser) -> None:
    m.description = (
        "Compute the launch measurement the platform will report. Flags override the "
        "profile; with neither, the embedded default profile is measured."
    )
    m.add_argument("profile", nargs="?", type=Path, help="guest profile (TOML)")
    add_guest_arguments(m)
    o = m.add_argument_group("output")
    o.add_argument(
        "--expect",
        metavar="DIGEST",
        help="exit 1 unless equal; hex, or base64 as sev-snp-measure prints it",
    )
    o.add_argument(
        "--output-format",
        choices=("hex", "base64"),
        default="hex",
        help="how digests are printed (default hex); with --json, the hex values stay and "
        "base64 adds each as KEY_base64",
    )
    o.add_argument("--json", action="store_true", help="one JSON object on stdout")
    o.add_argument("--trace", action="store_true", help="every measured step")
    m.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.measure import measure
    from cvmlaunch.plan import build_plan

    spec = spec_from_args(args)
    plan = build_plan(spec)
    result = measure(plan, trace=args.trace)
    _log.info("measure.done", technology=str(spec.technology), measurement=result.digest.hex())
    expected = None if args.expect is None else expected_digest(args.expect, len(result.digest))
    match = None if expected is None else expected == result.digest
    signed, refused = None, list[FieldProblem]()
    config = plan.spec.id_block
    if config is not None:  # signed (or checked) over the digest just computed
        from cvmlaunch.measure.idblock import id_block_and_refusals

        signed, refused = id_block_and_refusals(config, ld=result.digest,
                                                policy=plan.spec.snp_policy)  # fmt: skip
    if args.json:
        from cvmlaunch.measure.document import measurement_json, with_base64

        doc = measurement_json(plan, result)
        if expected is not None:
            doc.update(expected=expected.hex(), match=match)
        if signed is not None:
            doc["id_block"] = signed.to_json() | {"refused": [str(p) for p in refused]}
        print(json_text(with_base64(doc) if args.output_format == "base64" else doc))
    else:
        from cvmlaunch.cli.render import measurement_text

        print(measurement_text(plan, result, expected, args.output_format))
        if signed is not None:
            from cvmlaunch.cli.render import id_block_text

            print(id_block_text(signed))
            for problem in refused:
                print(f"ID block refused:    {problem}")
    # An ID block SNP_LAUNCH_FINISH would refuse is a failed check, as a wrong digest is.
    return EXIT_MISMATCH if match is False or refused else EXIT_OK


def expected_digest(text: str, size: int) -> bytes:
    """`--expect` as the `size` bytes it gives: hex digits (optionally 0x-prefixed), or
    base64 as sev-snp-measure prints it. Hex digits alone are read as hex, so the wrong
    digest in hex is refused for its length, not taken as base64; a real digest's base64
    has other characters."""
    base64_chars = 4 * -(-size // 3)
    wanted = f"the {size}-byte measurement as {2 * size} hex digits or {base64_chars} base64"
    digits = text.removeprefix("0x")
    if digits and _HEX_DIGITS.issuperset(digits):
        if len(digits) == 2 * size:
            return bytes.fromhex(digits)
        got = f"{len(digits)} hex digits"
    else:
        import base64  # only for a base64 value

        try:
            value = base64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error
            value = None
        if value is not None and len(value) == size:
            return value
        if value is None:
            got = f"{len(text)} characters, neither hex nor base64"
        else:
            got = f"{len(text)} base64 characters ({len(value)} bytes)" if text else "nothing"
    raise ProfileError([FieldProblem("--expect", f"expected {wanted} characters, got {got}")])
