"""The event data of a CC event log, decoded for people: UEFI variables (BootOrder, Boot####
load options with the kernel command line), device paths in the UEFI text form, tagged
events, strings, blobs and handoff tables, GPT headers.

`decode_event` never refuses: data that does not decode keeps its bytes, and its details
say what could not be read and at which offset (the log's digests replay regardless).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from cvmlaunch.abi import eventlog as abi
from cvmlaunch.abi.guid import guid_text
from cvmlaunch.errors import AttestationError

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


_E = abi.EventType
_STRING_EVENTS = frozenset(
    {
        _E.EV_POST_CODE,
        _E.EV_ACTION,
        _E.EV_EFI_ACTION,
        _E.EV_COMPACT_HASH,
        _E.EV_OMIT_BOOT_DEVICE_EVENTS,
    }
)
_VARIABLE_EVENTS = frozenset(
    {
        _E.EV_EFI_VARIABLE_DRIVER_CONFIG,
        _E.EV_EFI_VARIABLE_BOOT,
        _E.EV_EFI_VARIABLE_BOOT2,
        _E.EV_EFI_VARIABLE_AUTHORITY,
    }
)
_IMAGE_EVENTS = frozenset(
    {
        _E.EV_EFI_BOOT_SERVICES_APPLICATION,
        _E.EV_EFI_BOOT_SERVICES_DRIVER,
        _E.EV_EFI_RUNTIME_SERVICES_DRIVER,
    }
)
_TAG_NAMES = {
    abi.TAG_LOAD_OPTIONS: "LOADED_IMAGE::LoadOptions",
    abi.TAG_LINUX_INITRD: "Linux initrd",
}
_BOOT_OPTION = re.compile(r"Boot[0-9A-F]{4}")


def decode_event(kind: int, data: bytes) -> tuple[str, dict[str, object]]:
    """An event's data decoded by its type: a one-line text and the fields by name.

    Data that does not decode gives the type's name as text and `error` / `error_offset`
    (within the event data) in the fields.
    """
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return abi.event_type_name(kind), {}
    try:
        text, details = decoder(data)
    except AttestationError as error:
        return abi.event_type_name(kind), {"error": error.reason, "error_offset": error.offset}
    except UnicodeDecodeError as error:
        return abi.event_type_name(kind), {"error": "not text", "error_offset": error.start}
    return one_line(text) or abi.event_type_name(kind), details


def _decode_string(data: bytes) -> tuple[str, dict[str, object]]:
    text = data.rstrip(b"\0").decode()
    return text, {"string": text}


def _decode_ipl(data: bytes) -> tuple[str, dict[str, object]]:
    # GRUB and shim log UTF-8 with a NUL; a UTF-16LE string has a zero in every odd byte.
    if len(data) >= 2 and len(data) % 2 == 0 and not any(data[1::2]):
        text = data.decode("utf-16-le").split("\0", 1)[0]
    else:
        text = data.split(b"\0", 1)[0].decode()
    return text, {"string": text}


def _decode_config_flags(data: bytes) -> tuple[str, dict[str, object]]:
    text = plain_text(data) or _plain_utf16(data)
    if text is not None:
        return text, {"string": text}
    # Early TDVF: a NUL-padded 16-byte name, u32 length, then that many bytes (td_hob,
    # td_payload_info: the command line).
    if len(data) >= 20:
        name = plain_text(data[:16])
        (length,) = _U32.unpack_from(data, 16)
        if name and length == len(data) - 20:
            body = plain_text(data[20:])
            details: dict[str, object] = {"string": name, "data_length": length}
            if body:
                details["text"] = body
            return (f"{name}: {body}" if body else name), details
    raise AttestationError("neither text nor a named blob", 0)


def _described(data: bytes) -> tuple[str, int]:
    """A u8-length-prefixed description (BLOB2, HANDOFF_TABLES2) and the offset after it."""
    if not data:
        raise AttestationError("no description size", 0)
    end = 1 + data[0]
    if end > len(data):
        raise AttestationError(f"description of {data[0]} bytes, {len(data) - 1} left", 0)
    return data[1:end].rstrip(b"\0").decode(), end


def _decode_blob2(data: bytes) -> tuple[str, dict[str, object]]:
    text, pos = _described(data)
    if len(data) - pos != abi.BLOB2_TAIL.size:
        raise AttestationError("BlobBase and BlobLength do not end the event", pos)
    base, length = abi.BLOB2_TAIL.unpack_from(data, pos)
    return text, {"string": text, "blob_base": base, "blob_length": length}


def _decode_blob(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) != abi.BLOB2_TAIL.size:
        raise AttestationError("UEFI_PLATFORM_FIRMWARE_BLOB is 16 bytes", 0)
    base, length = abi.BLOB2_TAIL.unpack(data)
    return f"blob at {base:#x}, {length:#x} bytes", {"blob_base": base, "blob_length": length}


def _tables(data: bytes, pos: int) -> list[str]:
    if len(data) - pos < 8:
        raise AttestationError("no NumberOfTables", pos)
    (count,) = abi.TABLE_COUNT.unpack_from(data, pos)
    pos += 8
    if count != (len(data) - pos) / abi.CONFIGURATION_TABLE.size:
        raise AttestationError(f"{count} tables do not fill the event", pos - 8)
    return [guid_text(data[p : p + 16]) for p in range(pos, len(data), 24)]


def _decode_handoff2(data: bytes) -> tuple[str, dict[str, object]]:
    text, pos = _described(data)
    return text, {"string": text, "tables": _tables(data, pos)}


def _decode_handoff(data: bytes) -> tuple[str, dict[str, object]]:
    tables = _tables(data, 0)
    return f"{len(tables)} configuration tables", {"tables": tables}


def _decode_variable(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) < abi.VARIABLE_DATA_HEADER_SIZE:
        raise AttestationError("shorter than UEFI_VARIABLE_DATA's 32-byte header", 0)
    guid, name_chars, data_length = abi.VARIABLE_DATA_HEADER.unpack_from(data, 0)
    pos = abi.VARIABLE_DATA_HEADER_SIZE
    if name_chars * 2 + data_length != len(data) - pos:
        raise AttestationError(
            f"UnicodeNameLength {name_chars} and VariableDataLength {data_length} do not "
            f"fill the {len(data) - pos} bytes after the header",
            16,
        )
    name = data[pos : pos + 2 * name_chars].decode("utf-16-le")
    value = data[pos + 2 * name_chars :]
    details: dict[str, object] = {
        "variable_name": guid_text(guid),
        "unicode_name": name,
        "variable_data": value,
    }
    if guid == abi.EFI_GLOBAL_VARIABLE and name == "BootOrder" and len(value) % 2 == 0:
        order = [n for (n,) in _U16.iter_unpack(value)]
        details["boot_order"] = order
        return f"BootOrder = {','.join(f'{n:04X}' for n in order)}", details
    if guid == abi.EFI_GLOBAL_VARIABLE and _BOOT_OPTION.fullmatch(name):
        try:
            option = _load_option(value)
        except (AttestationError, UnicodeDecodeError):
            option = None  # a Boot#### that is not an EFI_LOAD_OPTION stays bytes
        if option is not None:
            details["load_option"] = option
            text = f"{name}: {option['description']} {'/'.join(option['device_path'])}"
            if option.get("command_line"):
                text += f" {option['command_line']}"
            return text, details
    if len(value) <= 8:
        return f"{name} = {value.hex() or '(empty)'}", details
    return f"{name}: {len(value)} bytes", details


def _load_option(data: bytes) -> dict[str, Any]:
    """EFI_LOAD_OPTION: attributes, description, device path, optional data."""
    if len(data) < abi.LOAD_OPTION_HEADER_SIZE:
        raise AttestationError("shorter than EFI_LOAD_OPTION's header", 0)
    attributes, path_length = abi.LOAD_OPTION_HEADER.unpack_from(data, 0)
    pos = abi.LOAD_OPTION_HEADER_SIZE
    end = _utf16_end(data, pos)
    description = data[pos:end].decode("utf-16-le")
    pos = end + 2
    if path_length > len(data) - pos:
        raise AttestationError("FilePathListLength beyond the option", 4)
    option: dict[str, Any] = {
        "attributes": attributes,
        "description": description,
        "device_path": device_path_text(data[pos : pos + path_length]),
    }
    optional = data[pos + path_length :]
    option["optional_data"] = optional
    if optional and len(optional) % 2 == 0:
        try:
            line = optional.decode("utf-16-le").rstrip("\0")
        except UnicodeDecodeError:
            line = ""
        if line.isprintable():
            option["command_line"] = line
    return option


def _utf16_end(data: bytes, pos: int) -> int:
    """The offset of the UTF-16 NUL that ends the string at `pos`."""
    for end in range(pos, len(data) - 1, 2):
        if data[end] == 0 and data[end + 1] == 0:
            return end
    raise AttestationError("unterminated UTF-16 string", pos)


def _decode_image(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) < abi.IMAGE_LOAD_EVENT_SIZE:
        raise AttestationError("shorter than UEFI_IMAGE_LOAD_EVENT's 32 bytes", 0)
    base, length, link, path_length = abi.IMAGE_LOAD_EVENT.unpack_from(data, 0)
    pos = abi.IMAGE_LOAD_EVENT_SIZE
    if path_length != len(data) - pos:
        raise AttestationError(f"LengthOfDevicePath {path_length} does not end the event", 24)
    path = device_path_text(data[pos:])
    details: dict[str, object] = {
        "image_base": base,
        "image_length": length,
        "link_time_address": link,
        "device_path": path,
    }
    text = "/".join(path) if path else f"image at {base:#x}, {length:#x} bytes"
    return text, details


def _decode_gpt(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) < abi.GPT_HEADER_SIZE + 8 or data[:8] != abi.GPT_SIGNATURE:
        raise AttestationError("not a UEFI_GPT_DATA ('EFI PART' header)", 0)
    fields = abi.GPT_HEADER.unpack_from(data, 0)
    disk, entry_size = guid_text(fields[8]), fields[11]
    (count,) = struct.unpack_from("<Q", data, abi.GPT_HEADER_SIZE)
    pos = abi.GPT_HEADER_SIZE + 8
    if entry_size < abi.GPT_ENTRY_HEAD.size + abi.GPT_ENTRY_NAME_SIZE or (
        count * entry_size != len(data) - pos
    ):
        raise AttestationError(f"{count} partitions of {entry_size} bytes do not fill it", pos - 8)
    partitions = []
    for at in range(pos, len(data), entry_size):
        kind, unique, first, last, _ = abi.GPT_ENTRY_HEAD.unpack_from(data, at)
        name = data[at + 56 : at + 56 + abi.GPT_ENTRY_NAME_SIZE].decode("utf-16-le")
        partitions.append(
            {
                "type": guid_text(kind),
                "unique": guid_text(unique),
                "first_lba": first,
                "last_lba": last,
                "name": name.split("\0", 1)[0],
            }
        )
    return f"GPT disk {disk}, {count} partitions", {"disk_guid": disk, "partitions": partitions}


def _decode_tag(data: bytes) -> tuple[str, dict[str, object]]:
    text = plain_text(data)
    if text is not None:  # OVMF's own LoadOptions event: the bare name, no tag header
        return text, {"string": text}
    if len(data) < abi.TAGGED_EVENT_HEADER_SIZE:
        raise AttestationError("shorter than TCG_PCClientTaggedEvent's header", 0)
    tag, size = abi.TAGGED_EVENT.unpack_from(data, 0)
    if size != len(data) - abi.TAGGED_EVENT_HEADER_SIZE:
        raise AttestationError(f"taggedEventDataSize {size} does not end the event", 4)
    body = data[abi.TAGGED_EVENT_HEADER_SIZE :]
    text = body.decode(errors="replace").replace("\0", "")
    details: dict[str, object] = {"tagged_event_id": tag, "string": text}
    return text or _TAG_NAMES.get(tag, f"tag {tag:#010x}"), details


def _decode_separator(data: bytes) -> tuple[str, dict[str, object]]:
    if len(data) != 4:
        return f"separator ({len(data)} bytes)", {}
    (value,) = _U32.unpack(data)
    return f"separator {value:08x}", {"value": value}


def _decode_no_action(data: bytes) -> tuple[str, dict[str, object]]:
    for signature in abi.NO_ACTION_SIGNATURES:
        if data.startswith(signature):
            text = signature.rstrip(b"\0").decode()
            return text, {"signature": text}
    return "EV_NO_ACTION", {}


_Decoder = Callable[[bytes], tuple[str, dict[str, object]]]
_DECODERS: dict[int, _Decoder] = {
    **dict.fromkeys(_STRING_EVENTS, _decode_string),
    **dict.fromkeys(_VARIABLE_EVENTS, _decode_variable),
    **dict.fromkeys(_IMAGE_EVENTS, _decode_image),
    _E.EV_IPL: _decode_ipl,
    _E.EV_PLATFORM_CONFIG_FLAGS: _decode_config_flags,
    _E.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _decode_blob2,
    _E.EV_EFI_PLATFORM_FIRMWARE_BLOB: _decode_blob,
    _E.EV_EFI_HANDOFF_TABLES2: _decode_handoff2,
    _E.EV_EFI_HANDOFF_TABLES: _decode_handoff,
    _E.EV_EFI_GPT_EVENT: _decode_gpt,
    _E.EV_EVENT_TAG: _decode_tag,
    _E.EV_SEPARATOR: _decode_separator,
    _E.EV_NO_ACTION: _decode_no_action,
}


# --------------------------------------------------------------------------------------
# Device paths (UEFI 2.10 §10.3, text as §10.6 and edk2's DevicePathToText write it)
# --------------------------------------------------------------------------------------


def device_path_text(data: bytes) -> list[str]:
    """The nodes of a device path (list) as text, up to its END node; an END-instance node
    is ",". Nodes we do not name are `Path(type,subtype,hex)`."""
    nodes: list[str] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < abi.DEVICE_PATH_NODE_SIZE:
            raise AttestationError("truncated device path node", pos)
        kind, sub, length = abi.DEVICE_PATH_NODE.unpack_from(data, pos)
        if not abi.DEVICE_PATH_NODE_SIZE <= length <= len(data) - pos:
            raise AttestationError(f"device path node length {length}", pos + 2)
        body = data[pos + 4 : pos + length]
        pos += length
        if kind == abi.DevicePathType.END:
            if sub == abi.END_INSTANCE:
                nodes.append(",")
                continue
            break
        nodes.append(_node_text(kind, sub, body))
    return nodes


def _guid_upper(raw: bytes) -> str:
    return guid_text(raw).upper()


def _node_text(kind: int, sub: int, body: bytes) -> str:
    text = _known_node(kind, sub, body)
    return text if text is not None else f"Path({kind},{sub},{body.hex()})"


def _known_node(kind: int, sub: int, body: bytes) -> str | None:
    size = len(body)
    T = abi.DevicePathType  # noqa: N806 (a short name for the enum)
    if kind == T.HARDWARE and sub == abi.HW_PCI and size == 2:
        return f"Pci({body[1]:#x},{body[0]:#x})"
    if kind == T.ACPI and sub == abi.ACPI_ACPI and size == 8:
        hid, uid = struct.unpack("<II", body)
        if hid & 0xFFFF == abi.EISA_PNP and hid >> 16 == abi.PNP_PCI_ROOT:
            return f"PciRoot({uid:#x})"
        if hid & 0xFFFF == abi.EISA_PNP and hid >> 16 == abi.PNP_PCIE_ROOT:
            return f"PcieRoot({uid:#x})"
        if hid & 0xFFFF == abi.EISA_PNP:
            return f"Acpi(PNP{hid >> 16:04X},{uid:#x})"
        return f"Acpi({hid:#x},{uid:#x})"
    if kind == T.MESSAGING and sub == abi.MSG_SCSI and size == 4:
        return "Scsi({:#x},{:#x})".format(*struct.unpack("<HH", body))
    if kind == T.MESSAGING and sub == abi.MSG_USB and size == 2:
        return f"USB({body[0]:#x},{body[1]:#x})"
    if kind == T.MESSAGING and sub == abi.MSG_SATA and size == 6:
        return "Sata({:#x},{:#x},{:#x})".format(*struct.unpack("<HHH", body))
    if kind == T.MESSAGING and sub == abi.MSG_NVME and size == 12:
        (namespace,) = _U32.unpack_from(body, 0)
        return f"NVMe({namespace:#x},{'-'.join(f'{b:02X}' for b in body[4:])})"
    if kind == T.MESSAGING and sub == abi.MSG_MAC and size == 33:
        return f"MAC({body[:6].hex().upper()},{body[32]:#x})"
    if sub in _VENDOR_NODES.get(kind, ()) and size >= 16:
        extra = f",{body[16:].hex().upper()}" if size > 16 else ""
        return f"{_VENDOR_NODES[kind][sub]}({_guid_upper(body[:16])}{extra})"
    if kind == T.MEDIA and sub == abi.MEDIA_HARDDRIVE and size == abi.HARDDRIVE.size:
        number, start, length, signature, _mbr, signature_type = abi.HARDDRIVE.unpack(body)
        if signature_type == 2:
            return f"HD({number},GPT,{_guid_upper(signature)},{start:#x},{length:#x})"
        if signature_type == 1:
            mbr_id = _U32.unpack_from(signature, 0)[0]
            return f"HD({number},MBR,{mbr_id:#010x},{start:#x},{length:#x})"
        return None
    if kind == T.MEDIA and sub == abi.MEDIA_CDROM and size == 20:
        return "CDROM({:#x},{:#x},{:#x})".format(*struct.unpack("<IQQ", body))
    if kind == T.MEDIA and sub == abi.MEDIA_FILEPATH and size % 2 == 0:
        try:
            return body.decode("utf-16-le").split("\0", 1)[0]
        except UnicodeDecodeError:
            return None
    if kind == T.MEDIA and sub == abi.MEDIA_RELATIVE_OFFSET and size == 20:
        return "Offset({1:#x},{2:#x})".format(*struct.unpack("<IQQ", body))
    return None


_VENDOR_NODES: dict[int, dict[int, str]] = {
    abi.DevicePathType.HARDWARE: {abi.HW_VENDOR: "VenHw"},
    abi.DevicePathType.MESSAGING: {abi.MSG_VENDOR: "VenMsg"},
    abi.DevicePathType.MEDIA: {
        abi.MEDIA_VENDOR: "VenMedia",
        abi.MEDIA_PROTOCOL: "Media",
        abi.MEDIA_PIWG_FW_FILE: "FvFile",
        abi.MEDIA_PIWG_FW_VOL: "Fv",
    },
}


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x09: "\\t"}


def one_line(text: str) -> str:
    """`text` with control characters escaped, so that a label is one line."""
    return text.translate(_CONTROL)


def plain_text(data: bytes) -> str | None:
    """`data` as text when it is printable UTF-8 (trailing NULs aside), else None."""
    try:
        text = data.rstrip(b"\0").decode()
    except UnicodeDecodeError:
        return None
    return text if text and text.isprintable() else None


def _plain_utf16(data: bytes) -> str | None:
    """`data` as text when it is printable UTF-16LE (trailing NULs aside), else None."""
    data = data.rstrip(b"\0")
    if len(data) % 2:
        data += b"\0"
    if any(data[1::2]):  # only the Latin-1 range: binary data is not taken for text
        return None
    try:
        text = data.decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    return text if text and text.isprintable() else None
