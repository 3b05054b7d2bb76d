"""What a piece of evidence is: an SEV-SNP report or a TDX quote, raw or as text, told
apart by its bytes."""

from __future__ import annotations

import base64
import binascii
import re
import struct

from cvmlaunch.abi.snp_report import MSG_REPORT_RSP, REPORT_SIZE
from cvmlaunch.abi.tdx_quote import TDREPORT_SIZE, TDREPORT_TYPE
from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple

SEV_SNP, TDX = "sev-snp", "tdx"
_TDX_PROBE = struct.Struct("<HHI")  # quote header: version, attestation key type, TEE type
_HEX_TEXT = re.compile(rb"[0-9a-fA-F\s]+")
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")
_URL_SAFE = bytes.maketrans(b"-_", b"+/")
# Shorter text is no report or quote in base64 (a report is 1580 characters): read it as
# bytes, so that a few stray letters are not decoded into a few stray bytes.
_MIN_BASE64 = 64
SNP_REPORT_RESP_SIZE = 4000  # struct snp_report_resp (include/uapi/linux/sev-guest.h)


class Evidence(NamedTuple):
    kind: str  # SEV_SNP or TDX
    data: bytes  # the report or quote itself, unwrapped and decoded


def _decoded(data: bytes) -> bytes:
    """`data` itself, or the bytes it spells as hex or base64 text (as clouds ship reports
    and quotes), across line breaks and surrounding whitespace."""
    stripped = data.strip()
    hex_text = stripped[2:] if stripped[:2] in (b"0x", b"0X") else stripped
    if _HEX_TEXT.fullmatch(hex_text) and hex_text:
        text = b"".join(hex_text.split())
        if len(text) % 2:
            raise AttestationError("evidence: hex text with an odd number of digits")
        return bytes.fromhex(text.decode("ascii"))
    text = b"".join(stripped.split())
    if _BASE64_TEXT.fullmatch(text) and len(text) >= _MIN_BASE64:
        # Standard or URL-safe alphabet, padded or not.
        body = text.rstrip(b"=").translate(_URL_SAFE)
        try:
            return base64.b64decode(body + b"=" * (-len(body) % 4), validate=True)
        except binascii.Error:  # a length no encoding has (4n + 1 characters)
            pass
    return data


def read_evidence(data: bytes) -> Evidence:
    """Detect what `data` holds: an SNP report (raw, hex or base64 text, or inside
    /dev/sev-guest's MSG_REPORT_RSP) or a TDX quote (version 4 or 5, TEE type TDX; raw, hex
    or base64). A TDREPORT, which only the TD's own platform can check, is refused."""
    data = _decoded(data)
    if len(data) == TDREPORT_SIZE and data[:2] == TDREPORT_TYPE:
        raise AttestationError(
            "evidence: a TDX TDREPORT (TDREPORT_STRUCT, 1024 bytes, MACed for the local "
            "platform only), not signed evidence: give the TD quote made from it"
        )
    if len(data) >= _TDX_PROBE.size:
        # An SNP report's VERSION is a u32 below 2^16: its bytes 2-3 are zero, where a quote
        # has its (non-zero) attestation key type.
        version, key_type, tee_type = _TDX_PROBE.unpack_from(data)
        if version in (4, 5) and key_type and tee_type == 0x81:
            return Evidence(TDX, data)
        if version == 3 and key_type and tee_type == 0:
            raise AttestationError("evidence: an SGX enclave quote (version 3), not a TDX quote")
    if len(data) == REPORT_SIZE:
        return Evidence(SEV_SNP, data)
    header = data[: MSG_REPORT_RSP.size]
    if MSG_REPORT_RSP.size <= len(data) <= SNP_REPORT_RESP_SIZE and not any(header[8:]):
        # /dev/sev-guest's response: MSG_REPORT_RSP, the report, zero padding up to 4000.
        status, size = MSG_REPORT_RSP.unpack_from(data)
        end = MSG_REPORT_RSP.size + REPORT_SIZE
        if status and size in (0, REPORT_SIZE):
            raise AttestationError(f"MSG_REPORT_RSP: firmware status {status:#x}, no report")
        if size == REPORT_SIZE and len(data) >= end and not any(data[end:]):
            return Evidence(SEV_SNP, data[MSG_REPORT_RSP.size : end])
    # Anything else is judged as an SNP report, whose parser says what is wrong with it.
    return Evidence(SEV_SNP, data)
