"""Intel TDX verification collateral (TCB info, QE identity, PCK CRL, root CA CRL): loading,
parsing and the signature and validity checks of each document.

Intel PCS signs the TCB info and the QE identity as JSON: `{"tcbInfo": {...},
"signature": "<hex r||s>"}` and `{"enclaveIdentity": {...}, "signature": ...}`; the
signature is ECDSA P-256/SHA-256 over the exact bytes of the "tcbInfo" / "enclaveIdentity"
value as sent, so the body is kept as bytes, never re-serialised. Both are signed by the
Intel SGX TCB Signing certificate, which PCS sends in the `TCB-Info-Issuer-Chain` /
`SGX-Enclave-Identity-Issuer-Chain` header (it chains to the Intel SGX Root CA). The CRLs
are DER (or PEM) X.509 CRLs: the root CA CRL signed by the root, the PCK CRL by the PCK
Platform or Processor CA that issued the PCK leaf.

Two ways in (`load_collateral` picks by what the path is):

* a file: the combined JSON dcap-qvl (`QuoteCollateralV3`) and PCCS clients use, keys
  `tcb_info`, `tcb_info_signature`, `tcb_info_issuer_chain`, `qe_identity`,
  `qe_identity_signature`, `qe_identity_issuer_chain`, `pck_crl`, `root_ca_crl` (CRLs as
  hex of their DER; `pck_crl_issuer_chain` is not needed, see below);
* a directory of PCS responses saved as sent, by these names:

  - TCB info: `tcbinfo.json`, `tcbinfo-<anything>.json` (one per FMSPC), or go-tdx-guest's
    `sample_tcbInfo_response` / `sample_tcbinfo_response_v5`;
  - QE identity: `qeidentity.json` or `sample_qeIdentity_response`;
  - each one's issuer chain (PEM) beside it as `<file name>.issuer-chain.pem`, or else one
    `tcb-signing-chain.pem` for all of them (PCS sends the same chain for both);
  - PCK CRL: `pckcrl.der`, `pckcrl.pem`, `pckcrl-<anything>.der|.pem` (platform and
    processor CA) or `pckcrl`; root CA CRL: `rootcrl.der`, `rootcrl.pem` or `rootcrl`.

The PCK CRL is verified with the PCK CA certificate of the quote's own chain (what PCS's
`SGX-PCK-CRL-Issuer-Chain` carries too), itself verified to the trusted root in `tcb.py`:
its issuer chain therefore need not be saved.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cvmlaunch.attest.certs import load_certificates, utc
from cvmlaunch.attest.files import folder_files, read_bounded
from cvmlaunch.errors import AttestationError
from cvmlaunch.namedtuple import NamedTuple

# A PCS TCB info with tdxModuleIdentities is ~15 KiB, a PCK CRL with its revoked serials
# ~100 KiB; the combined JSON carries them all.
MAX_COLLATERAL_FILE = 4 << 20
MAX_COLLATERAL_FILES = 64

# Intel's tcbStatus values, least severe first (the order statuses converge by).
TCB_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                "ConfigurationAndSWHardeningNeeded", "OutOfDate",
                "OutOfDateConfigurationNeeded", "Revoked")  # fmt: skip


class Signed(NamedTuple):
    """A signed collateral document: the bytes Intel signed, its signature, the chain."""

    body: bytes  # the exact "tcbInfo" / "enclaveIdentity" JSON value, as signed
    signature: bytes  # r || s, 64 bytes
    issuer_chain: tuple[x509.Certificate, ...]  # TCB signing certificate first
    source: str


class TcbLevel(NamedTuple):
    """One entry of tcbInfo.tcbLevels."""

    sgx_svns: tuple[int, ...]  # sgxtcbcomponents[0..15].svn
    pcesvn: int
    tdx_svns: tuple[int, ...]  # tdxtcbcomponents[0..15].svn
    tcb_date: str
    tcb_status: str
    advisory_ids: tuple[str, ...]  # advisoryIDs


class IsvTcbLevel(NamedTuple):
    """A TCB level by ISVSVN: QE identity tcbLevels, TDX module identity tcbLevels."""

    isvsvn: int
    tcb_date: str
    tcb_status: str
    advisory_ids: tuple[str, ...]


class TdxModuleIdentity(NamedTuple):
    """tcbInfo.tdxModule (no tcbLevels, id "") or one of tcbInfo.tdxModuleIdentities."""

    id: str  # "TDX_<TEE_TCB_SVN[1] as 2 hex digits>"
    mrsigner: bytes  # expected MRSIGNERSEAM, 48 bytes
    attributes: bytes  # expected SEAMATTRIBUTES, 8 bytes
    attributes_mask: bytes
    tcb_levels: tuple[IsvTcbLevel, ...]


class TcbInfo(NamedTuple):
    """A TDX TCB info (tcbInfo v3, id "TDX"), for one FMSPC."""

    signed: Signed
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: str  # uppercase hex
    pce_id: str
    tcb_evaluation_data_number: int
    tdx_module: TdxModuleIdentity | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]
    tcb_levels: tuple[TcbLevel, ...]


class QeIdentity(NamedTuple):
    """The TD quoting enclave's identity (enclaveIdentity, id "TD_QE")."""

    signed: Signed
    version: int
    issue_date: datetime
    next_update: datetime
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    tcb_levels: tuple[IsvTcbLevel, ...]


class Crl(NamedTuple):
    crl: x509.CertificateRevocationList
    der: bytes
    source: str


class TdxCollateral(NamedTuple):
    """Everything TCB evaluation of a TDX quote needs, parsed but not yet verified."""

    tcb_infos: tuple[TcbInfo, ...]  # one per FMSPC
    qe_identity: QeIdentity
    pck_crls: tuple[Crl, ...]  # platform and/or processor CA
    root_crl: Crl
    source: str

    def tcb_info_for(self, fmspc: str | None) -> TcbInfo:
        """The TCB info for `fmspc` (uppercase hex), else the first (whose FMSPC check
        then fails and names it)."""
        for info in self.tcb_infos:
            if info.fmspc == fmspc:
                return info
        return self.tcb_infos[0]


# -- JSON fields -------------------------------------------------------------------------


class _Doc:
    """A JSON object whose fields are read by name, each error naming source and field."""

    def __init__(self, value: object, source: str, path: str) -> None:
        if not isinstance(value, dict):
            raise AttestationError(f"{source}: {path}: expected a JSON object")
        self.value: dict[str, Any] = value
        self.source, self.path = source, path

    def _get(self, key: str) -> object:
        if key not in self.value:
            raise AttestationError(f"{self.source}: {self.path}.{key}: missing")
        return self.value[key]

    def _bad(self, key: str, expected: str) -> AttestationError:
        return AttestationError(f"{self.source}: {self.path}.{key}: expected {expected}")

    def integer(self, key: str, top: int = 0xFFFF) -> int:
        value = self._get(key)
        if type(value) is not int or not 0 <= value <= top:
            raise self._bad(key, f"an integer 0..{top}")
        return value

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def hexbytes(self, key: str, size: int) -> bytes:
        text = self.text(key)
        if len(text) != 2 * size or not re.fullmatch(r"[0-9A-Fa-f]*", text):
            raise self._bad(key, f"{size} bytes as hex")
        return bytes.fromhex(text)

    def date(self, key: str) -> datetime:
        text = self.text(key)
        try:
            return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            raise self._bad(key, "an RFC 3339 date") from None

    def items(self, key: str) -> list[object]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self._bad(key, "a list")
        return value

    def docs(self, key: str) -> list[_Doc]:
        return [
            _Doc(item, self.source, f"{self.path}.{key}[{i}]")
            for i, item in enumerate(self.items(key))
        ]

    def texts(self, key: str) -> tuple[str, ...]:
        if key not in self.value:  # advisoryIDs is absent when there are none
            return ()
        items = self.items(key)
        if not all(isinstance(item, str) for item in items):
            raise self._bad(key, "a list of strings")
        return tuple(str(item) for item in items)

    def status(self) -> str:
        status = self.text("tcbStatus")
        if status not in TCB_STATUSES:
            raise self._bad("tcbStatus", f"one of {', '.join(TCB_STATUSES)}")
        return status

    def isv_levels(self) -> tuple[IsvTcbLevel, ...]:
        return tuple(
            IsvTcbLevel(
                _Doc(level._get("tcb"), self.source, f"{level.path}.tcb").integer("isvsvn"),
                level.text("tcbDate"),
                level.status(),
                level.texts("advisoryIDs"),
            )
            for level in self.docs("tcbLevels")
        )


def _json(data: bytes, source: str) -> object:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AttestationError(f"{source}: not JSON") from None


def _signed_body(data: bytes, key: str, source: str) -> tuple[bytes, bytes]:
    """(the exact bytes of `key`'s value, the signature) of a PCS response `{key: ...,
    "signature": "hex"}`: Intel signs the value's bytes as sent, so they are cut out of
    the text rather than re-encoded."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AttestationError(f"{source}: not UTF-8 JSON") from None
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    values: dict[str, object] = {}
    pos = _skip(text, 0)
    try:
        if text[pos : pos + 1] != "{":
            raise AttestationError(f"{source}: expected a JSON object")
        pos = _skip(text, pos + 1)
        while text[pos : pos + 1] != "}":
            name, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if not isinstance(name, str) or text[pos : pos + 1] != ":":
                raise AttestationError(f"{source}: malformed JSON object")
            start = _skip(text, pos + 1)
            values[name], end = decoder.raw_decode(text, start)
            spans[name] = (start, end)
            pos = _skip(text, end)
            if text[pos : pos + 1] == ",":
                pos = _skip(text, pos + 1)
            elif text[pos : pos + 1] != "}":
                raise AttestationError(f"{source}: malformed JSON object")
    except (ValueError, RecursionError):
        raise AttestationError(f"{source}: not JSON") from None
    if _skip(text, pos + 1) != len(text):
        raise AttestationError(f"{source}: data after the JSON object")
    if key not in spans:
        raise AttestationError(f"{source}: {key}: missing")
    signature = _Doc(values, source, "response").hexbytes("signature", 64)
    start, end = spans[key]
    return text[start:end].encode("utf-8"), signature


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _chain(data: bytes, source: str) -> tuple[x509.Certificate, ...]:
    certs = tuple(load_certificates(data, source))
    if len(certs) < 2:
        raise AttestationError(f"{source}: expected the TCB signing certificate and its CA")
    return certs


def parse_tcb_info(body: bytes, signed: Signed) -> TcbInfo:
    """The TDX TCB info in `body` (the signed "tcbInfo" value)."""
    doc = _Doc(_json(body, signed.source), signed.source, "tcbInfo")
    if doc.text("id") != "TDX" or doc.integer("version") < 3:
        raise AttestationError(f"{signed.source}: tcbInfo: expected id TDX, version >= 3")
    module = None
    if "tdxModule" in doc.value:
        module = _module(_Doc(doc.value["tdxModule"], doc.source, "tcbInfo.tdxModule"), False)
    identities: tuple[TdxModuleIdentity, ...] = ()
    if "tdxModuleIdentities" in doc.value:
        identities = tuple(_module(d, True) for d in doc.docs("tdxModuleIdentities"))
    levels = []
    for level in doc.docs("tcbLevels"):
        tcb = _Doc(level._get("tcb"), doc.source, f"{level.path}.tcb")
        levels.append(
            TcbLevel(
                _svns(tcb, "sgxtcbcomponents"),
                tcb.integer("pcesvn"),
                _svns(tcb, "tdxtcbcomponents"),
                level.text("tcbDate"),
                level.status(),
                level.texts("advisoryIDs"),
            )
        )
    return TcbInfo(
        signed, doc.integer("version"), doc.date("issueDate"), doc.date("nextUpdate"),
        doc.hexbytes("fmspc", 6).hex().upper(), doc.hexbytes("pceId", 2).hex().upper(),
        doc.integer("tcbEvaluationDataNumber", 0xFFFFFFFF), module, identities, tuple(levels),
    )  # fmt: skip


def _svns(tcb: _Doc, key: str) -> tuple[int, ...]:
    components = tcb.docs(key)
    if len(components) != 16:
        raise AttestationError(f"{tcb.source}: {tcb.path}.{key}: expected 16 components")
    return tuple(component.integer("svn", 0xFF) for component in components)


def _module(doc: _Doc, with_levels: bool) -> TdxModuleIdentity:
    return TdxModuleIdentity(
        doc.text("id") if with_levels else "",
        doc.hexbytes("mrsigner", 48),
        doc.hexbytes("attributes", 8),
        doc.hexbytes("attributesMask", 8),
        doc.isv_levels() if with_levels else (),
    )


def parse_qe_identity(body: bytes, signed: Signed) -> QeIdentity:
    """The TD_QE identity in `body` (the signed "enclaveIdentity" value)."""
    doc = _Doc(_json(body, signed.source), signed.source, "enclaveIdentity")
    if doc.text("id") != "TD_QE" or doc.integer("version") not in (2, 3):
        raise AttestationError(
            f"{signed.source}: enclaveIdentity: expected id TD_QE, version 2 or 3"
        )
    return QeIdentity(
        signed, doc.integer("version"), doc.date("issueDate"), doc.date("nextUpdate"),
        int.from_bytes(doc.hexbytes("miscselect", 4), "little"),  # bytes as in the report
        int.from_bytes(doc.hexbytes("miscselectMask", 4), "little"),
        doc.hexbytes("attributes", 16), doc.hexbytes("attributesMask", 16),
        doc.hexbytes("mrsigner", 32), doc.integer("isvprodid"), doc.isv_levels(),
    )  # fmt: skip


def load_crl(data: bytes, source: str) -> Crl:
    """A CRL in DER or PEM (or as hex of its DER, as dcap-qvl's JSON carries it)."""
    text = data.strip()
    if re.fullmatch(rb"(?:[0-9A-Fa-f]{2})+", text):
        data = bytes.fromhex(text.decode("ascii"))
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        for _ in (*crl.issuer, *crl.extensions, *crl):  # parsed lazily: refuse damage now
            pass
        der = crl.public_bytes(Encoding.DER)
    except (ValueError, TypeError, x509.DuplicateExtension):
        raise AttestationError(f"{source}: not a DER or PEM X.509 CRL") from None
    return Crl(crl, der, source)


# -- The two ways in --------------------------------------------------------------------


def collateral_from_json(data: bytes, source: str) -> TdxCollateral:
    """Collateral from dcap-qvl's / PCCS's combined JSON (`QuoteCollateralV3`)."""
    doc = _Doc(_json(data, source), source, "collateral")
    documents = []
    for key in ("tcb_info", "qe_identity"):
        chain = _chain(doc.text(f"{key}_issuer_chain").encode(), f"{source}: {key}_issuer_chain")
        signed = Signed(doc.text(key).encode(), doc.hexbytes(f"{key}_signature", 64), chain,
                        f"{source}: {key}")  # fmt: skip
        documents.append(signed)
    tcb, qe = documents
    return TdxCollateral(
        (parse_tcb_info(tcb.body, tcb),),
        parse_qe_identity(qe.body, qe),
        (load_crl(doc.text("pck_crl").encode(), f"{source}: pck_crl"),),
        load_crl(doc.text("root_ca_crl").encode(), f"{source}: root_ca_crl"),
        source,
    )


_TCB_INFO = re.compile(r"tcbinfo(-.+)?\.json|sample_tcbInfo_response|sample_tcbinfo_response_v5")
_QE_IDENTITY = re.compile(r"qeidentity\.json|sample_qeIdentity_response")
_PCK_CRL = re.compile(r"pckcrl(-.+)?\.(der|pem)|pckcrl")
_ROOT_CRL = re.compile(r"rootcrl(\.der|\.pem)?")
_ISSUER_CHAIN = ".issuer-chain.pem"
_SHARED_CHAIN = "tcb-signing-chain.pem"


def collateral_from_dir(folder: Path) -> TdxCollateral:
    """Collateral from PCS responses saved in `folder` (names: the module docstring)."""
    names: dict[str, Path] = {}
    for path in folder_files(folder, "--collateral", most=MAX_COLLATERAL_FILES,
                             skipped=lambda path, reason: None):  # fmt: skip
        names[path.name] = path

    def read(name: str, what: str) -> bytes:
        return read_bounded(names[name], what, flag="--collateral", limit=MAX_COLLATERAL_FILE)

    def signed(name: str, key: str) -> Signed:
        source = str(names[name])
        body, signature = _signed_body(read(name, "a PCS response"), key, source)
        chain_name = name + _ISSUER_CHAIN if name + _ISSUER_CHAIN in names else _SHARED_CHAIN
        if chain_name not in names:
            raise AttestationError(
                f"--collateral {folder}: no issuer chain for {name} "
                f"({name}{_ISSUER_CHAIN} or {_SHARED_CHAIN})"
            )
        chain = _chain(read(chain_name, "a PEM issuer chain"), str(names[chain_name]))
        return Signed(body, signature, chain, source)

    def matching(pattern: re.Pattern[str]) -> list[str]:
        return [name for name in sorted(names) if pattern.fullmatch(name)]

    tcb_infos = []
    for name in matching(_TCB_INFO):
        document = signed(name, "tcbInfo")
        tcb_infos.append(parse_tcb_info(document.body, document))
    qe_names, pck_names, root_names = (matching(p) for p in (_QE_IDENTITY, _PCK_CRL, _ROOT_CRL))
    for what, found in (("TCB info", tcb_infos), ("QE identity", qe_names),
                        ("PCK CRL", pck_names), ("root CA CRL", root_names)):  # fmt: skip
        if not found:
            raise AttestationError(f"--collateral {folder}: no {what} (see its file names)")
    if len(qe_names) > 1 or len(root_names) > 1:
        raise AttestationError(f"--collateral {folder}: more than one QE identity or root CRL")
    qe = signed(qe_names[0], "enclaveIdentity")
    return TdxCollateral(
        tuple(tcb_infos),
        parse_qe_identity(qe.body, qe),
        tuple(load_crl(read(name, "a CRL"), str(names[name])) for name in pck_names),
        load_crl(read(root_names[0], "a CRL"), str(names[root_names[0]])),
        str(folder),
    )


def load_collateral(path: Path) -> TdxCollateral:
    """Collateral from `path`: a directory of PCS responses, or a combined JSON file."""
    if path.is_dir():
        return collateral_from_dir(path)
    data = read_bounded(path, "collateral JSON", flag="--collateral", limit=MAX_COLLATERAL_FILE)
    return collateral_from_json(data, str(path))
