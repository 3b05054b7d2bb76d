"""AMD's side of SEV-SNP evidence: the VCEK/VLEK and their extensions, the certificate
table of an extended report, and gathering certificates from files into roles."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from cvmlaunch import log
from cvmlaunch.abi.guid import guid_text
from cvmlaunch.abi.snp_report import (
    CERT_TABLE_ENTRY,
    CERT_TABLE_GUIDS,
    PRODUCTS,
    REPORT_SIZE,
    VEK_EXTENSIONS,
    VERSIONS,
)
from cvmlaunch.attest import der
from cvmlaunch.attest.certs import common_name, load_certificate, load_certificates
from cvmlaunch.attest.files import folder_files, read_bounded
from cvmlaunch.errors import AttestationError, FieldProblem, ProfileError
from cvmlaunch.namedtuple import NamedTuple

_T = TypeVar("_T")
_log = log.get_logger("cvmlaunch.attest")

# A report needs four certificates at most (VEK, ASK or ASVK, ARK); more is not evidence.
MAX_CERTIFICATES = 16


class Vek(NamedTuple):
    """A versioned endorsement key certificate (VCEK, or a cloud's VLEK) and what its AMD
    extensions say: the TCB it was issued for and, for a VCEK, the chip."""

    cert: x509.Certificate
    kind: str  # "vcek" or "vlek"
    struct_version: int | None
    product_name: str | None
    spl: dict[str, int]  # bl, tee, snp, ucode (+ fmc on Turin)
    hwid: bytes | None
    csp_id: str | None

    @property
    def product(self) -> str | None:
        """The product line named by productName ("Milan-B0" is Milan), if known."""
        base = (self.product_name or "").split("-")[0]
        return base if base in PRODUCTS else None


def read_vek(cert: x509.Certificate, source: str) -> Vek:
    """The VCEK or VLEK `cert` with its extensions decoded."""
    cn = common_name(cert)
    kind = {"SEV-VCEK": "vcek", "SEV-VLEK": "vlek"}.get(cn)
    if kind is None:
        raise AttestationError(f"{source}: expected a VCEK or VLEK certificate, got CN={cn!r}")
    fields: dict[str, int | str | bytes] = {}
    for ext in cert.extensions:
        name = VEK_EXTENSIONS.get(ext.oid.dotted_string)
        value = getattr(ext.value, "value", None)
        if name is None or not isinstance(value, bytes):
            continue
        what = f"{source}: extension {name} ({ext.oid.dotted_string})"
        if name in ("product_name", "csp_id"):
            fields[name] = der.ia5_string(value, what)
        elif name == "hwid":
            fields[name] = _hwid(value, what)
        else:
            fields[name] = der.integer(value, what)
    spl = {k: v for k, v in fields.items() if k in ("fmc", "bl", "tee", "snp", "ucode")}
    return Vek(
        cert=cert,
        kind=kind,
        struct_version=_opt(fields.get("struct_version"), int),
        product_name=_opt(fields.get("product_name"), str),
        spl={k: v for k, v in spl.items() if isinstance(v, int)},
        hwid=_opt(fields.get("hwid"), bytes),
        csp_id=_opt(fields.get("csp_id"), str),
    )


def _opt(value: object, kind: type[_T]) -> _T | None:
    return value if isinstance(value, kind) else None


def _hwid(value: bytes, what: str) -> bytes:
    # Raw bytes as issued by the KDS; an OCTET STRING wrapping is accepted too.
    if len(value) in (8, 64):
        return value
    return der.only(value, der.OCTET_STRING, what)


class AmdCerts(NamedTuple):
    """Certificates supplied with a report, by role. ASK and ARK are optional: the pinned
    ones are used when absent, and a supplied ARK must equal the pinned one."""

    vcek: x509.Certificate | None = None
    vlek: x509.Certificate | None = None
    ask: x509.Certificate | None = None  # signs VCEKs
    asvk: x509.Certificate | None = None  # signs VLEKs
    ark: x509.Certificate | None = None
    source: str = ""


_ROLE_BY_CN = (
    (re.compile(r"SEV-VCEK"), "vcek"),
    (re.compile(r"SEV-VLEK"), "vlek"),
    (re.compile(r"SEV-VLEK-[A-Za-z]+"), "asvk"),
    (re.compile(r"SEV-[A-Za-z]+"), "ask"),
    (re.compile(r"ARK-[A-Za-z]+"), "ark"),
)


def sort_certificates(certs: list[x509.Certificate], source: str) -> AmdCerts:
    """Assign each certificate its role from its subject CN; two of one role is an error."""
    roles: dict[str, x509.Certificate] = {}
    for cert in certs:
        cn = common_name(cert)
        role = next((r for pattern, r in _ROLE_BY_CN if pattern.fullmatch(cn)), None)
        if role is None:
            raise AttestationError(f"{source}: not an AMD SEV certificate: CN={cn!r}")
        if role in roles and roles[role] != cert:
            raise AttestationError(f"{source}: two different {role.upper()} certificates")
        roles[role] = cert
    return AmdCerts(**roles, source=source)


def parse_cert_table(data: bytes, source: str) -> list[tuple[str, bytes]]:
    """(role, DER) entries of a GHCB certificate table. GUIDs are matched in both the
    RFC 4122 (big-endian) and the EFI (mixed-endian) byte order: hosts write either."""
    entries: list[tuple[str, bytes]] = []
    for number, pos in enumerate(range(0, len(data), CERT_TABLE_ENTRY.size)):
        if number >= MAX_CERTIFICATES:
            raise AttestationError(f"{source}: more than {MAX_CERTIFICATES} table entries")
        if pos + CERT_TABLE_ENTRY.size > len(data):
            break
        raw_guid, offset, length = CERT_TABLE_ENTRY.unpack_from(data, pos)
        if not any(raw_guid) and not offset and not length:
            return entries
        role = CERT_TABLE_GUIDS.get(_rfc4122_text(raw_guid)) or CERT_TABLE_GUIDS.get(
            guid_text(raw_guid)
        )
        if offset + length > len(data) or length == 0:
            raise AttestationError(
                f"{source}: certificate table entry {number} points past the table "
                f"(offset {offset:#x}, length {length:#x}, table {len(data):#x} bytes)",
                pos,
            )
        if role is not None:  # unknown GUIDs (e.g. a CRL or vendor blob) are skipped
            entries.append((role, data[offset : offset + length]))
    raise AttestationError(f"{source}: certificate table has no terminating zero entry")


def _rfc4122_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _known_guid(data: bytes) -> bool:
    head = data[:16]
    return len(head) == 16 and (
        _rfc4122_text(head) in CERT_TABLE_GUIDS or guid_text(head) in CERT_TABLE_GUIDS
    )


def looks_like_cert_table(data: bytes) -> bool:
    """A certificate table, not a certificate: it starts with a known GUID, or at least is
    neither PEM nor a DER SEQUENCE (a table may lead with a GUID we do not know)."""
    if _known_guid(data):
        return True
    return len(data) >= CERT_TABLE_ENTRY.size and not (_der_sequence(data) or _PEM_MARK in data)


_PEM_MARK = b"-----BEGIN"
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def _der_sequence(data: bytes) -> bool:
    # A DER certificate is a SEQUENCE: 0x30 and a long-form length (0x81-0x84).
    return len(data) > 1 and data[0] == 0x30 and 0x81 <= data[1] <= 0x84


def _der_certificate(data: bytes) -> bool:
    """`data` has the shape of a DER X.509 v2/v3 certificate: a SEQUENCE whose first element,
    the TBSCertificate SEQUENCE, starts with the [0] version tag. A CRL's TBSCertList starts
    with an INTEGER or a SEQUENCE instead (RFC 5280, 4.1 and 5.1)."""
    if not _der_sequence(data):
        return False
    try:
        outer = der.read_tlv(data)
        tbs = der.read_tlv(outer.value)
        first = der.read_tlv(tbs.value)
    except AttestationError:
        return True  # a damaged certificate is still named as one when it fails to load
    return tbs.tag == der.SEQUENCE and first.tag == _VERSION_TAG


_VERSION_TAG = 0xA0  # [0] EXPLICIT Version


def certs_from_file(path: Path, flag: str = "--certs") -> list[x509.Certificate]:
    """The certificates in one file: a certificate table, a PEM bundle, or one DER. `flag`
    names the option that gave the file, in errors."""
    data = read_bounded(path, "a certificate", flag=flag)
    return certs_from_bytes(data, f"{flag} {path}")


def certs_from_bytes(data: bytes, where: str) -> list[x509.Certificate]:
    """The certificates in `data`: a certificate table, a PEM bundle, or one DER. `where`
    names its source in errors."""
    if not data.strip():
        raise AttestationError(
            f"{where}: empty; expected a DER or PEM certificate, a PEM bundle or an extended "
            "report's certificate table"
        )
    if looks_like_cert_table(data):
        return _table_certificates(data, where)
    return load_certificates(data, where)


def _table_certificates(data: bytes, where: str) -> list[x509.Certificate]:
    try:
        table = parse_cert_table(data, where)
    except AttestationError:
        if _known_guid(data):
            raise
        # Nothing says this is a table: it is just not a certificate (a README, a report).
        what = "neither a DER or PEM certificate nor a certificate table"
        if _snp_report(data):
            what = "an SEV-SNP attestation report, not a certificate (give it as --report)"
        raise AttestationError(f"{where}: {what}") from None
    if not table:
        raise AttestationError(f"{where}: no certificate table entry of a known kind")
    return [load_certificate(blob, f"{where} [{role}]") for role, blob in table]


def _snp_report(data: bytes) -> bool:
    return len(data) == REPORT_SIZE and int.from_bytes(data[:4], "little") in VERSIONS


def _certificate_file(data: bytes) -> bool:
    """`data` is meant as certificates (PEM certificates, a DER certificate or a certificate
    table led by a known GUID): what a `--certs` directory entry must be to be read."""
    return _PEM_CERTIFICATE in data or _der_certificate(data) or _known_guid(data)


def _directory_certificates(folder: Path) -> list[x509.Certificate]:
    """The certificates in the files of `folder`. Files that are not certificates (a README,
    the report itself, a CRL, which is not checked here) are skipped, and so is what is not a
    regular file; each skip is logged as `attest.certs_file_skipped`."""
    files = folder_files(folder, "--certs", most=MAX_CERTIFICATES, skipped=_skipped,
                         excluded=_not_a_certificate_name)  # fmt: skip
    found: list[x509.Certificate] = []
    for path in files:
        data = read_bounded(path, "a certificate", flag="--certs")
        if not _certificate_file(data):
            _skipped(path, "not a certificate")
            continue
        where = f"--certs {path}"
        if _known_guid(data):
            found += _table_certificates(data, where)
        else:
            found += load_certificates(data, where)
    return found


def _not_a_certificate_name(name: str) -> str | None:
    # snpguest keeps the CRL beside the certificates.
    return "a CRL: revocation is not checked" if "crl" in name.lower() else None


def _skipped(path: Path, reason: str) -> None:
    _log.info("attest.certs_file_skipped", path=str(path), reason=reason)


def gather(
    vcek: Path | None = None, vlek: Path | None = None, certs: Path | None = None
) -> AmdCerts:
    """Certificates from `--vcek`, `--vlek` and `--certs` (a directory of DER/PEM files or
    one file: certificate table, PEM bundle or DER), sorted into roles. A report is signed by
    one key, so `vcek` and `vlek` are not both given."""
    if vcek is not None and vlek is not None:
        raise ProfileError(
            [FieldProblem("--vlek", "given with --vcek; a report is signed by its VCEK or by a "
                          "VLEK: give the one that signed it")]
        )  # fmt: skip
    found: list[x509.Certificate] = []
    sources = []
    if certs is not None:
        sources.append(str(certs))
        if _is_directory(certs):
            found += _directory_certificates(certs)
        else:
            found += certs_from_file(certs)
    for path, role, flag in ((vcek, "SEV-VCEK", "--vcek"), (vlek, "SEV-VLEK", "--vlek")):
        if path is None:
            continue
        where = f"{flag} {path}"
        cert = load_certificate(read_bounded(path, "a certificate", flag=flag), where)
        if common_name(cert) != role:
            raise AttestationError(
                f"{where}: expected a {role} certificate, got CN={common_name(cert)!r}"
            )
        found.append(cert)
        sources.append(str(path))
    if len(found) > MAX_CERTIFICATES:
        raise AttestationError(f"{', '.join(sources)}: more than {MAX_CERTIFICATES} certificates")
    return sort_certificates(found, ", ".join(sources))


def _is_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):  # read_bounded names what is wrong with the path
        return False
