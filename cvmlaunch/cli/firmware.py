"""`cvmlaunch firmware inspect`: what a firmware image offers a confidential launch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvmlaunch.cli.common import EXIT_OK, Parser, json_text
from cvmlaunch.errors import FirmwareError

if TYPE_CHECKING:
    from cvmlaunch.firmware.descriptor import FirmwareDescriptor
    from cvmlaunch.firmware.igvm import Header, IgvmFile
    from cvmlaunch.firmware.ovmf import OvmfImage
    from cvmlaunch.firmware.tdvf import TdvfMetadata


def add_arguments(f: argparse.ArgumentParser) -> None:
    fc = f.add_subparsers(dest="firmware_command", required=True, parser_class=Parser)
    inspect = fc.add_parser(
        "inspect",
        help="show the OVMF footer table, SEV metadata and TDVF metadata (of an IGVM file: "
        "its headers and SEV-SNP launch digest)",
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
    describe.add_argument(
        "--technology",
        choices=("sev", "sev-es", "sev-snp", "tdx"),
        help="whose facts (default: sev-snp if the image has SEV metadata)",
    )
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=_describe)


def _inspect(args: argparse.Namespace) -> int:
    from cvmlaunch.abi.igvm import IGVM_MAGIC_BYTES
    from cvmlaunch.cli.render import firmware_json, firmware_text
    from cvmlaunch.firmware.ovmf import parse_ovmf
    from cvmlaunch.firmware.tdvf import find_tdvf
    from cvmlaunch.guest.files import read_firmware

    data = read_firmware(args.image, "image")
    if data[: len(IGVM_MAGIC_BYTES)] == IGVM_MAGIC_BYTES:
        return _inspect_igvm(data, as_json=args.json)
    image = parse_ovmf(data)
    # Broken TDVF metadata does not hide the rest of the image: it is reported instead.
    tdvf: TdvfMetadata | str | None
    try:
        tdvf = find_tdvf(data)
    except FirmwareError as e:
        tdvf = str(e)
    print(json_text(firmware_json(image, tdvf)) if args.json else firmware_text(image, tdvf))
    return EXIT_OK


def _inspect_igvm(data: bytes, *, as_json: bool) -> int:
    from cvmlaunch.firmware.igvm import parse_igvm

    igvm = parse_igvm(data)
    snp = _igvm_snp(igvm)
    if as_json:
        headers = [{"index": h.index, "offset": h.offset, "type": h.type, "name": h.name,
                    **_igvm_fields(h)} for h in igvm.headers]  # fmt: skip
        print(json_text({"format": "igvm", "format_version": igvm.format_version,
                         "total_file_size": igvm.total_file_size,
                         "checksum": f"{igvm.checksum:#010x}", "headers": headers,
                         "sev_snp": snp}))  # fmt: skip
        return EXIT_OK
    print(f"IGVM format {igvm.format_version}, {igvm.total_file_size} bytes, checksum "
          f"{igvm.checksum:#010x}, {len(igvm.headers)} variable headers")  # fmt: skip
    for first, last in _igvm_runs(igvm.headers):
        fields = _igvm_fields(first)
        if last is not first:
            fields["gpa"] = f"{fields['gpa']}-{_igvm_fields(last)['gpa']}"
        where = f"{first.index}" if last is first else f"{first.index}-{last.index}"
        text = " ".join(f"{k}={v}" for k, v in fields.items() if k not in _LONG_FIELDS)
        print(f"  {where:>11} {first.offset:#8x} {first.name:<20} {text}")
    for key, value in snp.items():
        print(f"sev-snp {key.replace('_', ' ')}: {value}")
    return EXIT_OK


# ID block signatures and keys: in --json only.
_LONG_FIELDS = frozenset(
    {"id_key_signature", "id_public_key", "author_key_signature", "author_public_key"}
)


def _igvm_fields(header: Header) -> dict[str, Any]:
    """A header's decoded fields as printed: integers in hex (names too for enums), bytes
    in hex; page and VMSA contents by presence only."""
    from enum import IntEnum

    from cvmlaunch.abi.igvm import PlatformType

    if header.body is None:
        return {"length": header.length, "ignored": True}
    fields: dict[str, Any] = {}
    platforms = {p.value: p.name for p in PlatformType}
    for key, value in header.body._asdict().items():
        if key == "data":
            fields["zero"] = value is None
        elif isinstance(value, IntEnum):
            fields[key] = value.name
        elif key == "platform_type":
            fields[key] = platforms.get(value, f"{value:#x}")
        elif isinstance(value, bytes):
            fields[key] = value.hex()
        else:
            fields[key] = f"{value:#x}"
    return fields


def _igvm_runs(headers: tuple[Header, ...]) -> list[tuple[Header, Header]]:
    """Headers in runs: consecutive PAGE_DATA headers alike but for a contiguous GPA (and
    their data) print as one line."""
    from cvmlaunch.abi.igvm import PageData

    runs: list[tuple[Header, Header]] = []
    for h in headers:
        if runs and isinstance(h.body, PageData):
            first, last = runs[-1]
            a, b = first.body, last.body
            if (isinstance(a, PageData) and isinstance(b, PageData)
                    and b.gpa + b.size == h.body.gpa and (b.data is None) == (h.body.data is None)
                    and a._replace(gpa=0, file_offset=0, data=None)
                    == h.body._replace(gpa=0, file_offset=0, data=None)):  # fmt: skip
                runs[-1] = (first, h)
                continue
        runs.append((h, h))
    return runs


def _igvm_snp(igvm: IgvmFile) -> dict[str, Any]:
    """The SEV-SNP facts: launch digest (or why there is none), policy, ID block."""
    from cvmlaunch.measure.igvm import snp_launch_digest

    try:
        digest: str | None = snp_launch_digest(igvm).hex()
    except FirmwareError as e:
        return {"launch_digest": None, "error": str(e)}
    policy = igvm.snp_policy
    block = igvm.snp_id_block
    return {
        "launch_digest": digest,
        "policy": None if policy is None else f"{policy:#x}",
        "id_block_ld": None if block is None else block.ld.hex(),
        "id_block_ld_matches": None if block is None else block.ld.hex() == digest,
    }


def _describe(args: argparse.Namespace) -> int:
    import hashlib

    from cvmlaunch.firmware.ovmf import parse_ovmf
    from cvmlaunch.firmware.tdvf import find_tdvf
    from cvmlaunch.guest.files import read_firmware
    from cvmlaunch.guest.profile_writer import descriptor_table

    data = read_firmware(args.image, "image")
    image = parse_ovmf(data)
    sha256 = hashlib.sha256(data).digest()
    technology = args.technology or ("sev-snp" if image.sev_metadata is not None else "tdx")
    if technology == "sev-snp":
        table = _snp_facts(image, sha256)
    elif technology in ("sev", "sev-es"):
        from cvmlaunch.firmware.descriptor import FirmwareDescriptor
        from cvmlaunch.measure.sha256 import chaining_value

        # Pure Python (hashlib cannot give a chaining value): about 2 s per MiB.
        described = FirmwareDescriptor(image.size, sha256, (), image.sev_es_reset_address,
                                       image.hash_table_area,
                                       sha256_chaining=chaining_value(data))  # fmt: skip
        table = {"descriptor": descriptor_table(described)}
    else:
        tdvf = find_tdvf(data)
        if tdvf is None:
            raise FirmwareError("no TDVF metadata: not a TDX firmware, nothing to describe")
        table = {"descriptor": descriptor_table(_td_descriptor(args.image, data, sha256, tdvf))}
    document = {"firmware": table}
    if args.json:
        print(json_text(document))
        return EXIT_OK
    import tomlkit

    print(f"# {args.image} as a {technology} measurement sees it (cvmlaunch firmware "
          "describe).\n# In a profile it replaces firmware.path.")  # fmt: skip
    print(tomlkit.dumps(document), end="")
    return EXIT_OK


def _snp_facts(image: OvmfImage, sha256: bytes) -> dict[str, Any]:
    from cvmlaunch.firmware.descriptor import describe
    from cvmlaunch.guest.profile_writer import descriptor_table
    from cvmlaunch.measure.snp import firmware_pages_digest

    if image.sev_metadata is None:
        raise FirmwareError("no SEV metadata: not an SEV-SNP firmware, nothing to describe")
    descriptor = describe(image, sha256)
    for name, reason in descriptor.problems():
        raise FirmwareError(f"its {name} {reason}")
    return {
        "digest": firmware_pages_digest(image).hex(),
        "descriptor": descriptor_table(descriptor),
    }


def _td_descriptor(
    path: Path, data: bytes, sha256: bytes, tdvf: TdvfMetadata
) -> FirmwareDescriptor:
    """The TD facts of an image: its sections, the MRTD of each page order and raw-data tail
    it can be launched with, its CFV's SHA-384."""
    from cvmlaunch.firmware.descriptor import FirmwareDescriptor
    from cvmlaunch.guest.spec import GuestSpec, PageOrder, RawDataTail, TdConfig, Technology
    from cvmlaunch.measure import measure
    from cvmlaunch.measure.rtmr import firmware_digests
    from cvmlaunch.plan.tdx import build_td_plan

    mrtds = []
    cfv = None
    # No memory size enters MRTD; the plan needs one that holds the largest section.
    memory = max([4096] + [(s.mem_size >> 20) + 1 for s in tdvf.sections if not s.page_aug])
    for order in PageOrder:
        for tail in RawDataTail:
            spec = GuestSpec(Technology.TDX, path, memory_mib=memory,
                             td=TdConfig(page_order=order, raw_data_tail=tail))  # fmt: skip
            try:
                plan = build_td_plan(spec, data)
            except FirmwareError:  # e.g. a short section's tail past the image's end
                continue
            mrtds.append((str(order), str(tail), measure(plan).digest))
            cfv = firmware_digests(plan)[1]
    return FirmwareDescriptor(len(data), sha256, tdvf=tdvf, mrtds=tuple(mrtds), cfv_sha384=cfv)
