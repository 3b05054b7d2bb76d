"""Just enough DER (ITU-T X.690) to read the vendor certificate extensions that
`cryptography` hands back undecoded: AMD's VCEK/VLEK values and Intel's PCK SGX extension.
"""

from __future__ import annotations

from collections.abc import Iterator

from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple

INTEGER, OCTET_STRING, OID, IA5_STRING, SEQUENCE = 0x02, 0x04, 0x06, 0x16, 0x30


class Tlv(NamedTuple):
    tag: int
    value: bytes
    end: int  # offset just past this element


def read_tlv(data: bytes, pos: int = 0, what: str = "DER value") -> Tlv:
    """The element at `pos`: single-byte tags, definite lengths up to 4 length bytes."""
    if pos + 2 > len(data):
        raise AttestationError(f"{what}: truncated DER header", pos)
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise AttestationError(f"{what}: bad DER length", pos - 1)
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        raise AttestationError(f"{what}: DER value runs past its container", pos)
    return Tlv(tag, data[pos : pos + length], pos + length)


def header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, where the value starts, where it ends) of the element at `pos`, which must lie
    within `end`: `read_tlv` without copying the value out (ValueError where `read_tlv`
    raises AttestationError)."""
    if pos + 2 > end:
        raise ValueError
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > end:
            raise ValueError
        first = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + first > end:
        raise ValueError
    return tag, pos, pos + first


def elements(data: bytes, what: str = "DER sequence") -> Iterator[Tlv]:
    """The elements of a constructed value's contents, in order."""
    pos = 0
    while pos < len(data):
        tlv = read_tlv(data, pos, what)
        yield tlv
        pos = tlv.end


def only(data: bytes, tag: int, what: str) -> bytes:
    """The contents of `data`, which must be exactly one element with `tag`."""
    tlv = read_tlv(data, 0, what)
    if tlv.tag != tag or tlv.end != len(data):
        raise AttestationError(f"{what}: expected one DER element with tag {tag:#04x}")
    return tlv.value


def integer(data: bytes, what: str) -> int:
    """A DER INTEGER element (two's complement, big-endian)."""
    value = only(data, INTEGER, what)
    if not value:
        raise AttestationError(f"{what}: empty DER INTEGER")
    return int.from_bytes(value, "big", signed=True)


def ia5_string(data: bytes, what: str) -> str:
    value = only(data, IA5_STRING, what)
    if not value.isascii():
        raise AttestationError(f"{what}: IA5String with non-ASCII bytes")
    return value.decode("ascii")


def oid_text(value: bytes) -> str:
    """Dotted text of an OBJECT IDENTIFIER's contents."""
    arcs: list[int] = []
    acc = 0
    for byte in value:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    if not arcs or value[-1] & 0x80:
        raise AttestationError("malformed OBJECT IDENTIFIER")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))
