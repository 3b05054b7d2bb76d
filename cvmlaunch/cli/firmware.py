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
