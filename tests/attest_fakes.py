"""Fake AMD certificate chains and fake-signed SEV-SNP reports for the attestation tests.

A fake chain is shaped like AMD's (ARK-<Product> self-signed, ASK "SEV-<Product>", VCEK
"SEV-VCEK" or VLEK "SEV-VLEK" with serial number 0, P-384 key and the AMD extensions
encoded by hand in DER, every certificate signed with RSASSA-PSS SHA-384, salt 48) but its
ARK is not the pinned one. Reports are built with `cvmlaunch.abi.snp_report.REPORT` and
signed with the fake VEK's key (R and S little-endian, 72 bytes each).

RSA-2048 keys stand in for AMD's RSA-4096 ones: same algorithm, a tenth of the set-up time.
The DER here is written independently of `cvmlaunch.attest.der`, so that a slip there shows up
as a disagreement rather than being reproduced.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from cvmlaunch.abi.snp_report import REPORT, REPORT_SIZE, SIGNED_SIZE
from cvmlaunch.attest.amd import AmdCerts
from cvmlaunch.attest.snp import SnpReport

AMD_OID = "1.3.6.1.4.1.3704.1"
PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2030, 1, 1, tzinfo=UTC)

# ---- a little DER --------------------------------------------------------------------------


def der_tlv(tag: int, content: bytes) -> bytes:
    """One DER element with a definite length."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def der_integer(value: int) -> bytes:
    """A DER INTEGER: minimal big-endian two's complement."""
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return der_tlv(0x02, value.to_bytes(size, "big", signed=True))


def der_ia5(text: str) -> bytes:
    return der_tlv(0x16, text.encode("ascii"))


def der_octets(data: bytes) -> bytes:
    return der_tlv(0x04, data)


def der_split(data: bytes) -> list[bytes]:
    """The complete elements (header and contents) inside `data`, in order."""
    out = []
    pos = 0
    while pos < len(data):
        first = data[pos + 1]
        head = 2
        length = first
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
            head += count
        out.append(data[pos : pos + head + length])
        pos += head + length
    return out


def der_contents(element: bytes) -> bytes:
    """The contents of one complete element."""
    first = element[1]
    head = 2 + (first & 0x7F if first & 0x80 else 0)
    return element[head:]


# ---- certificates --------------------------------------------------------------------------


def amd_name(cn: str) -> x509.Name:
    """AMD's subject/issuer name, in the RDN order of the real certificates."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@functools.cache
def rsa_key(label: str) -> rsa.RSAPrivateKey:
    """One RSA-2048 key per label, generated once per test session."""
    del label  # only the cache key
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    """One P-384 key per label, generated once per test session."""
    del label
    return ec.generate_private_key(ec.SECP384R1())


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
    )


def _sign(builder: x509.CertificateBuilder, key: rsa.RSAPrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA384(), rsa_padding=PSS_SHA384)


@functools.cache
def fake_ark(product: str = "Milan", label: str = "") -> x509.Certificate:
    """A self-signed "ARK-<product>" with AMD's name: everything but the pinned key."""
    key = rsa_key(f"ark-{product}{label}")
    name = amd_name(f"ARK-{product}")
    builder = _builder(name, name, key.public_key()).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    )
    return _sign(builder, key)


@functools.cache
def fake_ask(product: str = "Milan", label: str = "", vlek: bool = False) -> x509.Certificate:
    """ "SEV-<product>" (or the ASVK "SEV-VLEK-<product>") signed by the fake ARK."""
    key = rsa_key(f"{'asvk' if vlek else 'ask'}-{product}{label}")
    cn = f"SEV-VLEK-{product}" if vlek else f"SEV-{product}"
    builder = _builder(amd_name(cn), amd_name(f"ARK-{product}"), key.public_key())
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return _sign(builder, rsa_key(f"ark-{product}{label}"))


class VekSpec(NamedTuple):
    """What a fake VCEK/VLEK says about itself (the AMD extensions)."""

    product_name: str = "Milan-B0"
    struct_version: int = 0
    spl: Mapping[str, int] = {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}
    hwid: bytes | None = bytes(range(64))
    csp_id: str | None = None
    vlek: bool = False


MILAN_VEK = VekSpec()

_SPL_ARC = {"bl": "3.1", "tee": "3.2", "snp": "3.3", "ucode": "3.8", "fmc": "3.9"}


def vek_extensions(spec: VekSpec) -> list[tuple[str, bytes]]:
    """(OID, extnValue contents) of the AMD extensions, as the KDS encodes them."""
    out = [
        (f"{AMD_OID}.1", der_integer(spec.struct_version)),
        (f"{AMD_OID}.2", der_ia5(spec.product_name)),
    ]
    out += [(f"{AMD_OID}.{_SPL_ARC[k]}", der_integer(v)) for k, v in spec.spl.items()]
    out += [(f"{AMD_OID}.3.{n}", der_integer(0)) for n in (5, 6, 7)]  # reserved SPLs
    if spec.hwid is not None:
        out.append((f"{AMD_OID}.4", spec.hwid))  # raw bytes, no DER tag
    if spec.csp_id is not None:
        out.append((f"{AMD_OID}.5", der_ia5(spec.csp_id)))
    return out


def fake_vek(
    spec: VekSpec = MILAN_VEK,
    product: str = "Milan",
    label: str = "",
    *,
    extensions: list[tuple[str, bytes]] | None = None,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
) -> x509.Certificate:
    """A VCEK or VLEK (serial 0, P-384 key `ec_key(label)`) signed by the fake ASK/ASVK of
    `product`. `extensions` replaces the AMD extensions made from `spec`."""
    key = ec_key(f"vek{label}")
    cn = "SEV-VLEK" if spec.vlek else "SEV-VCEK"
    issuer = f"SEV-VLEK-{product}" if spec.vlek else f"SEV-{product}"
    builder = (
        x509.CertificateBuilder()
        .subject_name(amd_name(cn))
        .issuer_name(amd_name(issuer))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for oid, value in extensions if extensions is not None else vek_extensions(spec):
        ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)
        builder = builder.add_extension(ext, critical=False)
    signer = rsa_key(f"{'asvk' if spec.vlek else 'ask'}-{product}{label}")
    return with_serial_zero(_sign(builder, signer), signer)


def resign(cert: x509.Certificate, tbs: bytes, key: rsa.RSAPrivateKey) -> x509.Certificate:
    """`cert` with its TBSCertificate replaced by `tbs`, signed again by `key`."""
    _, algorithm, _ = der_split(der_contents(cert.public_bytes(Encoding.DER)))
    signature = key.sign(tbs, PSS_SHA384, hashes.SHA384())
    body = tbs + algorithm + der_tlv(0x03, b"\0" + signature)
    with warnings.catch_warnings():  # serial number 0: see with_serial_zero
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_der_x509_certificate(der_tlv(0x30, body))


def with_serial_zero(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> x509.Certificate:
    """`cert` with serial number 0, as AMD issues every VCEK and VLEK (RFC 5280 forbids it,
    and `CertificateBuilder` refuses it)."""
    tbs = der_split(der_contents(cert.tbs_certificate_bytes))
    assert tbs[0][0] == 0xA0 and tbs[1][0] == 0x02  # [0] version, then serialNumber
    tbs[1] = der_integer(0)
    return resign(cert, der_tlv(0x30, b"".join(tbs)), key)


def patch_tbs(
    cert: x509.Certificate, old: bytes, new: bytes, key: rsa.RSAPrivateKey
) -> x509.Certificate:
    """`cert` with the one occurrence of `old` in its TBSCertificate replaced by `new` (same
    length), signed again by `key`."""
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(old) == 1 and len(old) == len(new)
    return resign(cert, tbs.replace(old, new), key)


def oid_der(dotted: str) -> bytes:
    """The contents octets of an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for first in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        arc = first
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | arc & 0x7F)
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


# ---- reports -------------------------------------------------------------------------------

# Report fields a synthetic report starts from: a plausible Milan v3 guest.
REPORT_DEFAULTS: dict[str, int | bytes] = {
    "version": 3,
    "guest_svn": 0,
    "policy": 0x30000,
    "family_id": bytes(16),
    "image_id": bytes(16),
    "vmpl": 0,
    "signature_algo": 1,
    "current_tcb": 0x7308000000000003,
    "platform_info": 0x25,
    "signer_info": 0,
    "report_data": bytes(64),
    "measurement": bytes.fromhex("aa" * 48),
    "host_data": bytes(32),
    "id_key_digest": bytes(48),
    "author_key_digest": bytes(48),
    "report_id": bytes(range(32)),
    "report_id_ma": b"\xff" * 32,
    "reported_tcb": 0x7308000000000003,
    "cpuid_fam_id": 0x19,
    "cpuid_mod_id": 0x01,
    "cpuid_step": 0x01,
    "chip_id": bytes(range(64)),
    "committed_tcb": 0x7308000000000003,
    "current_build": 4,
    "current_minor": 52,
    "current_major": 1,
    "committed_build": 4,
    "committed_minor": 52,
    "committed_major": 1,
    "launch_tcb": 0x7308000000000003,
    "launch_mit_vector": 0,
    "current_mit_vector": 0,
    "signature_r": bytes(72),
    "signature_s": bytes(72),
}

# A Turin guest, fmc 0 bl 1 tee 0 snp 2 ucode 71 (the layout of the real Oak Turin report).
TURIN_TCB = 0x4700000002000100
TURIN_FIELDS: dict[str, int | bytes] = {
    "version": 5,
    "cpuid_fam_id": 0x1A,
    "cpuid_mod_id": 0x02,
    "current_tcb": TURIN_TCB,
    "reported_tcb": TURIN_TCB,
    "committed_tcb": TURIN_TCB,
    "launch_tcb": TURIN_TCB,
    "chip_id": bytes(range(1, 9)) + bytes(56),
}
TURIN_VEK = VekSpec(
    product_name="Turin",
    struct_version=1,
    spl={"fmc": 0, "bl": 1, "tee": 0, "snp": 2, "ucode": 71},
    hwid=bytes(range(1, 9)),
)


def build_report(
    fields: Mapping[str, int | bytes] | None = None, patches: Mapping[int, int] | None = None
) -> bytearray:
    """An unsigned 1184-byte report: REPORT_DEFAULTS overridden by `fields`, then single
    bytes overwritten at the offsets in `patches` (to reach reserved bytes)."""
    values = {**REPORT_DEFAULTS, **(fields or {})}
    names = SnpReport._fields[:-1]  # every field but `raw`
    assert set(values) == set(names), set(values) ^ set(names)
    raw = bytearray(REPORT.pack(*(values[n] for n in names)).ljust(REPORT_SIZE, b"\0"))
    for offset, byte in (patches or {}).items():
        raw[offset] = byte
    return raw


def sign_report(raw: bytearray, key: ec.EllipticCurvePrivateKey) -> bytes:
    """`raw` with SIGNATURE R and S (little-endian, 72 bytes each) by `key`."""
    r, s = decode_dss_signature(key.sign(bytes(raw[:SIGNED_SIZE]), ec.ECDSA(hashes.SHA384())))
    raw[SIGNED_SIZE : SIGNED_SIZE + 72] = r.to_bytes(72, "little")
    raw[SIGNED_SIZE + 72 : SIGNED_SIZE + 144] = s.to_bytes(72, "little")
    return bytes(raw)


def signed_report(
    fields: Mapping[str, int | bytes] | None = None,
    patches: Mapping[int, int] | None = None,
    label: str = "",
) -> bytes:
    """A report built from `fields`/`patches` and signed by the fake VEK `label`."""
    return sign_report(build_report(fields, patches), ec_key(f"vek{label}"))


def fake_certs(product: str = "Milan", spec: VekSpec = MILAN_VEK, *, ask: bool = True) -> AmdCerts:
    """The fake VEK (and, with `ask`, the fake ASK/ASVK that signed it) of `product`."""
    signer = fake_ask(product, vlek=spec.vlek) if ask else None
    return vek_certs(fake_vek(spec, product), spec.vlek, signer)


def vek_certs(vek: x509.Certificate, vlek: bool, ask: x509.Certificate | None = None) -> AmdCerts:
    return AmdCerts(vlek=vek, asvk=ask) if vlek else AmdCerts(vcek=vek, ask=ask)
