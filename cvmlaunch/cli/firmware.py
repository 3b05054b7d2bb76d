"""`cvmlaunch firmware inspect`: what a firmware image offers a confidential launch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cvmlaunch.cli.common import EXIT_OK, Parser, json_text
from cvmlaunch.errors import FirmwareError

if TYPE_CHECKING:
    from cvmlaunch.firmware.tdvf import TdvfMetadata


def add_arguments(f: argparse.ArgumentParser) -> None:
    fc = f.add_subparsers(dest="firmware_command", required=True, parser_class=Parser)
    inspect = fc.add_parser(
        "inspect", help="show the OVMF footer table, SEV metadata and TDVF metadata"
    )
    inspect.add_argument("image", type=Path)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=_inspect)
    describe = fc.add_parser(
        "describe",
        help="the image by its measured facts: a [firmware] profile fragment that measures "
        "as the image does without it (sev-snp)",
    )
    describe.add_argument("image", type=Path)
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=_describe)


def _inspect(args: argparse.Namespace) -> int:
    from cvmlaunch.cli.render import firmware_json, firmware_text
    from cvmlaunch.firmware.ovmf import parse_ovmf
    from cvmlaunch.firmware.tdvf import find_tdvf
    from cvmlaunch.guest.files import read_firmware

    data = read_firmware(args.image, "image")
    image = parse_ovmf(data)
    # Broken TDVF metadata does not hide the rest of the image: it is reported instead.
    tdvf: TdvfMetadata | str | None
    try:
        tdvf = find_tdvf(data)
    except FirmwareError as e:
        tdvf = str(e)
    print(json_text(firmware_json(image, tdvf)) if args.json else firmware_text(image, tdvf))
    return EXIT_OK


def _describe(args: argparse.Namespace) -> int:
    import hashlib

    from cvmlaunch.firmware.descriptor import describe
    from cvmlaunch.firmware.ovmf import parse_ovmf
    from cvmlaunch.guest.files import read_firmware
    from cvmlaunch.guest.profile import descriptor_table
    from cvmlaunch.measure.snp import firmware_pages_digest

    data = read_firmware(args.image, "image")
    image = parse_ovmf(data)
    if image.sev_metadata is None:
        raise FirmwareError("no SEV metadata: not an SEV-SNP firmware, nothing to describe")
    descriptor = describe(image, hashlib.sha256(data).digest())
    problems = descriptor.problems()
    if problems:
        name, reason = problems[0]
        raise FirmwareError(f"its {name} {reason}")
    digest = firmware_pages_digest(image).hex()
    table = descriptor_table(descriptor)
    if args.json:
        print(json_text({"firmware": {"digest": digest, "descriptor": table}}))
        return EXIT_OK
    print(f"# {args.image}: what an SEV-SNP measurement takes from it (cvmlaunch firmware"
          " describe).\n# In a profile it replaces firmware.path.")  # fmt: skip
    print(f'[firmware]\ndigest = "{digest}"\n\n[firmware.descriptor]')
    print(f"size = {table['size']:#x}")
    print(f'sha256 = "{table["sha256"]}"')
    if "reset_eip" in table:
        print(f"reset_eip = {table['reset_eip']:#x}")
    if "hash_table" in table:
        area = table["hash_table"]
        print(f"hash_table = {{ gpa = {area['gpa']:#x}, size = {area['size']:#x} }}")
    print("sev_metadata = [")
    for section in table["sev_metadata"]:
        print(f'    {{ gpa = {section["gpa"]:#x}, size = {section["size"]:#x}, '
              f'type = "{section["type"]}" }},')  # fmt: skip
    print("]")
    return EXIT_OK
