"""Evidence as it arrives: the real SEV-SNP reports and TDX quotes in base64 text, as clouds
ship them, audit exactly as the raw bytes do; a TDREPORT is named as one and refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cvmlaunch.abi import tdx_quote
from cvmlaunch.attest import read_evidence
from cvmlaunch.attest.snp import parse_snp_report
from cvmlaunch.errors import AttestationError
from tests.conftest import VECTORS, CliRunner

ATT = VECTORS / "attestation"
FIELDS = json.loads((ATT / "expected_fields.json").read_text())
SNP_NOW, TDX_NOW = "2025-09-01T00:00:00Z", "2026-06-20T00:00:00Z"


def _raw(path: Path) -> bytes:
    data = path.read_bytes()
    return bytes.fromhex(data.decode()) if path.suffix == ".hex" else data


def _wrapped(text: bytes, width: int, newline: bytes) -> bytes:
    return newline.join(text[i : i + width] for i in range(0, len(text), width))


# How base64 evidence is written: one line, PEM-like and MIME-like lines, CRLF, surrounding
# blanks, and the URL-safe alphabet without padding.
ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "one-line": base64.b64encode,
    "one-line-newline": lambda b: base64.b64encode(b) + b"\n",
    "lines-64": lambda b: _wrapped(base64.b64encode(b), 64, b"\n") + b"\n",
    "lines-76-crlf": lambda b: _wrapped(base64.b64encode(b), 76, b"\r\n") + b"\r\n",
    "surrounded": lambda b: b"\n\t  " + base64.b64encode(b) + b"  \n\n",
    "url-safe-unpadded": lambda b: base64.urlsafe_b64encode(b).rstrip(b"="),
}

SNP_CASES = [
    (ATT / "snp" / name, ATT / "snp" / fields["vek_file"])
    for name, fields in sorted(FIELDS["snp"].items())
]
TDX_CASES = [ATT / "tdx" / name for name in sorted(FIELDS["tdx"])]


def _audit(cli: CliRunner, *args: str | Path) -> tuple[int, str]:
    r = cli("audit", *args, "--allow-debug", "--json")
    assert r.err == "", r.err
    return r.code, r.out


def _all_ok(out: str) -> bool:
    return all(check["ok"] for check in json.loads(out)["checks"])


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(("report", "vek"), SNP_CASES, ids=[p.name for p, _ in SNP_CASES])
def test_base64_snp_report_audits_as_the_raw_one(
    cli: CliRunner, tmp_path: Path, report: Path, vek: Path, encoding: str
) -> None:
    raw = _raw(report)
    text = tmp_path / "report.b64"
    text.write_bytes(ENCODINGS[encoding](raw))
    flag = "--vlek" if "vlek" in vek.name else "--vcek"
    raw_file = tmp_path / "report.bin"
    raw_file.write_bytes(raw)
    expected = _audit(cli, "--report", raw_file, flag, vek, "--now", SNP_NOW)
    assert _all_ok(expected[1]), expected[1]
    assert _audit(cli, "--report", text, flag, vek, "--now", SNP_NOW) == expected
    assert read_evidence(text.read_bytes()).data == raw


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("quote", TDX_CASES, ids=[p.name for p in TDX_CASES])
def test_base64_tdx_quote_audits_as_the_raw_one(
    cli: CliRunner, tmp_path: Path, quote: Path, encoding: str
) -> None:
    text = tmp_path / "quote.b64"
    text.write_bytes(ENCODINGS[encoding](quote.read_bytes()))
    expected = _audit(cli, "--report", quote, "--now", TDX_NOW)
    assert json.loads(expected[1])["kind"] == "tdx"
    if quote.name != "trustee_tdx_quote_4.dat":  # its TD's XFAM lacks a bit the check wants
        assert _all_ok(expected[1]), expected[1]
    assert _audit(cli, "--report", text, "--now", TDX_NOW) == expected
    assert read_evidence(text.read_bytes()).data == quote.read_bytes()


def _parsed(data: bytes) -> None:
    parse_snp_report(read_evidence(data).data)


def test_hex_text_is_still_hex(tmp_path: Path) -> None:
    """Hex digits are base64 characters too: hex text is read as hex."""
    quote = (ATT / "tdx" / "dcapqvl_tdx_quote_v4.dat").read_bytes()
    assert read_evidence(quote.hex().encode() + b"\n").data == quote
    assert read_evidence(b"0x" + quote.hex().upper().encode()).data == quote


def test_damaged_base64_is_judged_as_bytes() -> None:
    report = (ATT / "snp" / "oak_genoa_report_v5.bin").read_bytes()
    text = base64.b64encode(report)
    for damaged in (text[:-3] + b"!==", text + b"A"):  # a stray character; 4n + 1 characters
        with pytest.raises(AttestationError, match="neither an SEV-SNP report"):
            _parsed(damaged)


# ---- TDREPORT ----------------------------------------------------------------------------


def _tdreport(version: int = 1) -> bytes:
    """A TDREPORT_STRUCT as /dev/tdx_guest returns it (Intel TDX module ABI): REPORTMACSTRUCT
    (REPORTTYPE: TYPE 0x81, SUBTYPE 0, VERSION; then CPUSVN, hashes, REPORTDATA at 0x80,
    MAC), TEE_TCB_INFO at 0x100, TDINFO at 0x200 (MRTD at 0x210), with the MRTD and
    REPORTDATA of a real quote."""
    quote = (ATT / "tdx" / "dcapqvl_tdx_quote_v4.dat").read_bytes()
    body = tdx_quote.HEADER_SIZE
    offsets = tdx_quote.TD_REPORT_BODY_OFFSETS
    mrtd = quote[body + offsets["MRTD"] : body + offsets["MRTD"] + 48]
    report_data = quote[body + offsets["REPORTDATA"] : body + offsets["REPORTDATA"] + 64]
    out = bytearray(1024)
    out[0:4] = bytes([0x81, 0, version, 0])
    out[0x80:0xC0] = report_data
    out[0x210:0x240] = mrtd
    return bytes(out)


@pytest.mark.parametrize("encoding", ["raw", "hex", "base64"])
@pytest.mark.parametrize("version", [0, 1])
def test_tdreport_is_named_and_refused(
    cli: CliRunner, tmp_path: Path, encoding: str, version: int
) -> None:
    data = _tdreport(version)
    path = tmp_path / "tdreport"
    path.write_bytes(
        {"raw": data, "hex": data.hex().encode(), "base64": base64.b64encode(data)}[encoding]
    )
    r = cli("audit", "--report", path, "--now", TDX_NOW)
    assert r.code == 2 and r.out == "" and len(r.err.splitlines()) == 1, r
    assert "a TDX TDREPORT" in r.err and "not signed evidence: give the TD quote" in r.err
    assert "SEV-SNP" not in r.err and "truncated" not in r.err


def test_other_1024_byte_input_is_still_a_truncated_report() -> None:
    with pytest.raises(AttestationError, match="SEV-SNP report: truncated"):
        _parsed(bytes(1024))
