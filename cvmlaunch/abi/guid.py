"""EFI GUIDs in their on-disk byte order.

EFI stores a GUID as a little-endian u32, two little-endian u16s and eight bytes (the
"mixed-endian" form, `uuid.UUID.bytes_le`). Kept as plain bytes so that parsing firmware
needs no `uuid` import.
"""

from __future__ import annotations


def guid(text: str) -> bytes:
    """The 16 on-disk bytes of the GUID written as `text` (8-4-4-4-12 hex digits)."""
    raw = bytes.fromhex(text.replace("-", ""))
    if len(raw) != 16:
        raise ValueError(f"not a GUID: {text!r}")
    return raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]


def guid_text(raw: bytes) -> str:
    """The 8-4-4-4-12 text of 16 on-disk GUID bytes."""
    h = (raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
