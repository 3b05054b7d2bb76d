"""Profiles written: the TOML tables and text of the profile that describes a `GuestSpec`,
what `solve` and `profile from-qemu|from-libvirt` print. Reading one back gives the same spec
(guest.profile, which checks what is read; this module needs no pydantic).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvmlaunch.abi.cpu import lookup_model
from cvmlaunch.guest.fields import HEX_KEYS
from cvmlaunch.guest.spec import DirectBoot, GuestSpec, IdBlockConfig, Technology

if TYPE_CHECKING:
    from tomlkit.items import Item

    from cvmlaunch.firmware.descriptor import FirmwareDescriptor

SCHEMA_VERSION = 1  # the profile format's `schema_version`


def profile_document(spec: GuestSpec, description: str = "") -> dict[str, Any]:
    """The profile (as TOML-ready tables) that describes `spec`: what `solve` prints as a
    ready profile. Inputs given only by hash stay hashes; paths are written as they are."""
    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "technology": str(spec.technology)}
    if description:
        doc["description"] = description
    firmware = _firmware_table(spec)
    doc.update(vcpus=spec.vcpus, vmm=str(spec.vmm))
    if spec.technology is Technology.TDX:
        doc["memory_mib"] = spec.memory_mib
    doc["firmware"] = firmware
    if spec.cpu is not None and spec.technology is not Technology.TDX:
        # A model QEMU knows but our table does not (qemu64) is written by its signature.
        named = spec.cpu.name is not None and lookup_model(spec.cpu.name) is not None
        doc["cpu"] = {"name": spec.cpu.name} if named else {"signature": spec.cpu.signature}
    if spec.boot is not None:
        doc["boot"] = _boot_table(spec.boot)
    if spec.technology is Technology.SEV_SNP:
        doc["snp"] = {
            "guest_features": spec.guest_features,
            "policy": spec.snp_policy,
            "vmsa_gpa": spec.vmsa_gpa,
        }
        if any(spec.host_data):
            doc["snp"]["host_data"] = spec.host_data.hex()
        if spec.id_block is not None:
            doc["snp"]["id_block"] = _id_block_table(spec.id_block)
    elif spec.technology in (Technology.SEV, Technology.SEV_ES):
        doc["sev"] = {"policy": spec.sev_policy}
    if spec.technology is Technology.TDX:
        td = spec.td_config
        tdx: dict[str, Any] = {"attributes": td.attributes}
        if td.xfam is not None:
            tdx["xfam"] = td.xfam
        for name in ("mrconfigid", "mrowner", "mrownerconfig"):
            if any(getattr(td, name)):
                tdx[name] = getattr(td, name).hex()
        tdx.update(page_order=str(td.page_order), raw_data_tail=str(td.raw_data_tail))
        if td.edk2 is not None:
            tdx["edk2"] = td.edk2
        if td.qemu is not None:
            tdx["qemu"] = td.qemu
        for name in ("kernel_authenticode", "initrd_sha384", "load_options_sha384"):
            if getattr(td, name) is not None:
                tdx[name] = getattr(td, name).hex()
        if td.acpi is not None:
            names = ("table_loader", "rsdp", "tables")
            tdx["acpi"] = {name: d.hex() for name, d in zip(names, td.acpi, strict=True)}
        doc["tdx"] = tdx
    if spec.vm is not None:
        vm = spec.vm
        qemu: dict[str, Any] = {"version": vm.qemu_version, "machine": vm.machine}
        if spec.technology is not Technology.TDX:
            qemu |= {"cbitpos": vm.cbitpos, "reduced_phys_bits": vm.reduced_phys_bits}
        doc["qemu"] = {k: v for k, v in qemu.items() if v is not None}
        if vm.libvirt_version is not None:
            doc["libvirt"] = {"version": vm.libvirt_version}
    return doc


def _boot_table(boot: DirectBoot) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name, file in (("kernel", boot.kernel), ("initrd", boot.initrd)):
        if file is None:
            continue
        if file.path is not None:
            table[name] = str(file.path.absolute())
        elif file.sha256 is not None:
            table[f"{name}_sha256"] = file.sha256.hex()
    table["cmdline"] = boot.cmdline
    return table


def toml_text(doc: Mapping[str, Any]) -> str:
    """`doc` (top-level keys, then one level of tables) as TOML: the integers of the field
    table's hex fields in hex, other integers in decimal, strings as basic strings."""
    import tomlkit  # only `solve` writes profiles; every other command only reads them

    out = tomlkit.document()
    for key, value in doc.items():
        if not isinstance(value, Mapping):
            out.add(key, _toml_item(key, value))
    for name, table in doc.items():
        if isinstance(table, Mapping):
            items = tomlkit.table()
            for key, value in table.items():
                items.add(key, _toml_item(key, value))
            out.add(name, items)
    return tomlkit.dumps(out)


def _toml_item(key: str, value: object) -> Item:
    import tomlkit

    if isinstance(value, int) and not isinstance(value, bool) and key in HEX_KEYS:
        # An item parsed from its TOML text keeps that text: the number stays in hex.
        return tomlkit.value(f"{value:#x}")
    return tomlkit.item(value)


def descriptor_table(descriptor: FirmwareDescriptor) -> dict[str, Any]:
    """The `[firmware.descriptor]` table of `descriptor`."""
    table: dict[str, Any] = {"size": descriptor.size, "sha256": descriptor.sha256.hex()}
    if descriptor.sev_es_reset_address is not None:
        table["reset_eip"] = descriptor.sev_es_reset_address
    area = descriptor.hash_table_area
    if area is not None:
        table["hash_table"] = {"gpa": area.base, "size": area.size}
    if descriptor.sev_metadata:
        table["sev_metadata"] = [
            {"gpa": s.gpa, "size": s.size, "type": s.type.name} for s in descriptor.sev_metadata
        ]
    if descriptor.tdvf is not None:
        table["tdvf_sections"] = [
            {"type": s.type.name, "gpa": s.gpa, "mem_size": s.mem_size, "raw_size": s.raw_size,
             "data_offset": s.data_offset, "attributes": s.attributes}
            for s in descriptor.tdvf.sections
        ]  # fmt: skip
        table["mrtd"] = {f"{o}/{t}": m.hex() for o, t, m in descriptor.mrtds}
        if descriptor.cfv_sha384 is not None:
            table["cfv_sha384"] = descriptor.cfv_sha384.hex()
    if descriptor.sha256_chaining is not None:
        table["sha256_chaining"] = descriptor.sha256_chaining.hex()
    return table


def _firmware_table(spec: GuestSpec) -> dict[str, Any]:
    # Absolute paths: a printed profile is saved elsewhere and must still find its inputs.
    firmware: dict[str, Any] = {}
    if spec.igvm is not None:
        firmware["igvm"] = str(spec.firmware.absolute())
        if spec.igvm.native_zero:
            firmware["igvm_native_zero"] = True
    elif spec.firmware_descriptor is None:
        firmware["path"] = str(spec.firmware.absolute())
    if spec.firmware_sha256 is not None:
        firmware["sha256"] = spec.firmware_sha256.hex()
    if spec.firmware_digest is not None:
        firmware["digest"] = spec.firmware_digest.hex()
    if spec.firmware_descriptor is not None:
        firmware["descriptor"] = descriptor_table(spec.firmware_descriptor)
    return firmware


def _id_block_table(config: IdBlockConfig) -> dict[str, Any]:
    import base64

    table: dict[str, Any] = {}
    for name, value in config._asdict().items():
        if value is None or value == IdBlockConfig._field_defaults[name]:
            continue
        if name in ("block", "auth"):
            table[name] = base64.b64encode(value).decode()
        elif isinstance(value, bytes):
            table[name] = value.hex()
        elif isinstance(value, Path):
            table[name] = str(value.absolute())
        else:
            table[name] = value
    return table


__all__ = ["SCHEMA_VERSION", "descriptor_table", "profile_document", "toml_text"]
