"""Many reports for one audit run: the regular files of a directory, or the records of a
JSON-lines file. Each report is read bounded and named, so that its result line says which
it is; what cannot be read is that report's error, not the end of the run.

A JSON-lines record is an object with

* "report" (required): the SNP report or TDX quote as base64 or hex text;
* "event_log": a TDX quote's CC event log, as base64 text (CCEL) or as dstack's JSON list;
* "certs": an SNP report's certificates: one string or a list, each PEM text or base64 of a
  DER certificate or of an extended report's certificate table;
* "name": what its result line calls it (default: FILE:LINE).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path

from cvmlaunch import log
from cvmlaunch.attest.amd import AmdCerts
from cvmlaunch.attest.files import folder_files, read_bounded
from cvmlaunch.errors import AttestationError, InputError
from cvmlaunch.inputs import OpenInput, size_text
from cvmlaunch.namedtuple import NamedTuple

_log = log.get_logger("cvmlaunch.attest")

MAX_REPORTS = 100_000  # per run: a fleet, not an unbounded stream
MAX_JSONL_FILE = 4 << 30
# A record holds one report (~7 KiB as base64), its certificates and at most a 16 MiB event
# log as base64.
MAX_JSONL_LINE = 24 << 20
_KEYS = frozenset(("report", "event_log", "certs", "name"))


class Item(NamedTuple):
    """One report of a batch, or why it cannot be audited (`error`, one line)."""

    name: str
    evidence: bytes = b""
    event_log: bytes | None = None
    certs: AmdCerts | None = None  # None: the certificates of the command line
    error: str | None = None


def batch_items(path: Path, flag: str = "--reports") -> Iterator[Item]:
    """The reports of the directory or JSON-lines file at `path`, in order (a directory's
    by file name). AttestationError (before any item) for a path that is neither, or a
    directory of more than MAX_REPORTS files."""
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError):
        is_dir = False
    if is_dir:
        return _directory_items(path, flag)
    return _jsonl_items(path, flag)


def _directory_items(folder: Path, flag: str) -> Iterator[Item]:
    files = folder_files(folder, flag, most=MAX_REPORTS, skipped=_skipped)
    return _read_files(files, flag)


def _read_files(files: list[Path], flag: str) -> Iterator[Item]:
    for path in files:
        try:
            # Checked again as it is opened: a file swapped for a FIFO or a huge file since
            # the listing is refused here, by kind or size, before it is read.
            yield Item(str(path), read_bounded(path, "an attestation report", flag=flag))
        except AttestationError as e:
            yield Item(str(path), error=str(e))


def _skipped(path: Path, reason: str) -> None:
    _log.info("audit.report_skipped", path=str(path), reason=reason)


def _jsonl_items(path: Path, flag: str) -> Iterator[Item]:
    try:
        with OpenInput(path, limit=MAX_JSONL_FILE, what=_WHAT, name=flag):
            pass  # its kind and size: refused before any report is audited
    except InputError as e:
        raise AttestationError(str(e)) from None
    return _records(path, flag)


_WHAT = "a directory of reports or a JSON-lines file of them"


def _records(path: Path, flag: str) -> Iterator[Item]:
    count = 0
    try:
        with (
            OpenInput(path, limit=MAX_JSONL_FILE, what=_WHAT, name=flag) as (fd, _),
            open(fd, "rb", closefd=False) as stream,
        ):
            number = 0
            while line := stream.readline(MAX_JSONL_LINE + 1):
                number += 1
                name = f"{path}:{number}"
                if len(line) > MAX_JSONL_LINE:
                    limit = size_text(MAX_JSONL_LINE)
                    yield Item(name, error=f"{flag} {name}: a line longer than {limit}")
                    # The rest of this line is read (and dropped) in bounded pieces.
                    while line and not line.endswith(b"\n"):
                        line = stream.readline(MAX_JSONL_LINE + 1)
                    continue
                if not line.strip():
                    continue
                count += 1
                if count > MAX_REPORTS:
                    reason = f"more than {MAX_REPORTS} reports; the rest is not audited"
                    yield Item(name, error=f"{flag} {path}: {reason}")
                    return
                item = _record(line, name, flag)
                if count == 1 and item.error is not None and not line.lstrip().startswith(b"{"):
                    # Not a record at all: no JSON-lines file (a report given as --reports).
                    what = "neither a directory nor a JSON-lines file of reports"
                    raise AttestationError(f"{flag} {path}: {what} (line {number})")
                yield item
    except InputError as e:  # replaced since it was checked
        yield Item(str(path), error=str(e))
    except OSError as e:
        yield Item(str(path), error=f"{flag} {path}: {e.strerror or e}")


def _record(line: bytes, name: str, flag: str) -> Item:
    where = f"{flag} {name}"
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as e:
        return Item(name, error=f"{where}: not a JSON object ({_first_line(e)})")
    if not isinstance(record, dict):
        return Item(name, error=f"{where}: not a JSON object")
    label = record.get("name", name)
    if not isinstance(label, str):
        return Item(name, error=f'{where}: "name" is not a string')
    unknown = sorted(set(record) - _KEYS)
    if unknown:
        known = ", ".join(sorted(_KEYS))
        return Item(label, error=f"{where}: unknown key {unknown[0]!r} (known: {known})")
    report = record.get("report")
    if not isinstance(report, str):
        return Item(label, error=f'{where}: "report" must be base64 or hex text')
    try:
        event_log = _event_log(record.get("event_log"), where)
        certs = _certs(record.get("certs"), where)
    except AttestationError as e:
        return Item(label, error=str(e))
    return Item(label, report.encode("ascii", "replace"), event_log, certs)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _event_log(value: object, where: str) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _base64(value, f'{where}: "event_log"')
    if isinstance(value, list | dict):  # dstack's JSON log, as its GetQuote answer has it
        return json.dumps(value).encode()
    raise AttestationError(f'{where}: "event_log" must be base64 text or a JSON list')


def _certs(value: object, where: str) -> AmdCerts | None:
    from cvmlaunch.attest.amd import MAX_CERTIFICATES, certs_from_bytes, sort_certificates

    if value is None:
        return None
    blobs = [value] if isinstance(value, str) else value
    if not isinstance(blobs, list) or not all(isinstance(b, str) for b in blobs):
        raise AttestationError(f'{where}: "certs" must be a string or a list of strings')
    found = []
    for number, blob in enumerate(blobs[: MAX_CERTIFICATES + 1]):
        source = f"{where}: certs[{number}]"
        pem = "-----BEGIN" in blob
        data = blob.encode("ascii", "replace") if pem else _base64(blob, source)
        found += certs_from_bytes(data, source)
    if len(found) > MAX_CERTIFICATES:
        raise AttestationError(f"{where}: more than {MAX_CERTIFICATES} certificates")
    return sort_certificates(found, f"{where}: certs")


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise AttestationError(f"{where}: not base64 text") from None
