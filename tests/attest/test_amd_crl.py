"""AMD's ARK-signed CRL for SEV-SNP (cvmlaunch.attest.amd_crl): CRLs built with
`cryptography` under the fake ARK of tests/attest_fakes.py (RSASSA-PSS SHA-384, salt 48, as
AMD signs), clean, listing the VEK or the ASK, expired, signed by another key, damaged, as
PEM and DER; and fuzzing of the loader. No real AMD CRL is among the public test data this
repository draws on (go-sev-guest, virtee/sev, trustee, Oak ship none), so none is here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmlaunch.attest.amd import AmdCerts
from cvmlaunch.attest.amd_crl import AmdCrl, amd_crl_checks, load_amd_crl
from cvmlaunch.attest.certs import load_certificate
from cvmlaunch.attest.result import Check
from cvmlaunch.attest.roots import amd_chain
from cvmlaunch.errors import AttestationError, CvmlaunchError
from tests.attest_fakes import (
    PSS_SHA384,
    VekSpec,
    amd_name,
    der_contents,
    der_integer,
    der_split,
    der_tlv,
    fake_ark,
    fake_ask,
    fake_certs,
    rsa_key,
)
from tests.conftest import VECTORS

THIS_UPDATE = datetime(2025, 1, 1, tzinfo=UTC)
NEXT_UPDATE = datetime(2025, 2, 1, tzinfo=UTC)
NOW = datetime(2025, 1, 15, tzinfo=UTC)
REVOKED_AT = datetime(2024, 5, 1, tzinfo=UTC)
NAMES = [
    "collateral.amd_crl.signature",
    "collateral.amd_crl.validity",
    "collateral.amd_crl.issuer",
    "vek.revoked",
    "ask.revoked",
]
VLEK = VekSpec(product_name="Milan", hwid=None, csp_id="a cloud", vlek=True)
# A serial RevokedCertificateBuilder accepts, standing in for one it refuses (0, which AMD
# gives every VCEK and VLEK) until `crl_der` writes the real one in.
_PLACEHOLDER = 0x5A5A5A


def crl_der(
    serials: tuple[int, ...] = (),
    *,
    product: str = "Milan",
    signer: rsa.RSAPrivateKey | None = None,
    issuer: str | None = None,
    this_update: datetime = THIS_UPDATE,
    next_update: datetime = NEXT_UPDATE,
) -> bytes:
    """A CRL (DER) by the fake ARK of `product` (or `signer`) listing `serials`, each
    revoked on REVOKED_AT for keyCompromise."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(amd_name(issuer or f"ARK-{product}"))
        .last_update(this_update)
        .next_update(next_update)
    )
    for _ in serials:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(_PLACEHOLDER)
            .revocation_date(REVOKED_AT)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        )
        builder = builder.add_revoked_certificate(entry.build())
    key = signer or rsa_key(f"ark-{product}")
    crl = builder.sign(key, hashes.SHA384(), rsa_padding=PSS_SHA384)
    if not serials:
        return crl.public_bytes(Encoding.DER)
    # TBSCertList: version, signature, issuer, thisUpdate, nextUpdate, revokedCertificates.
    tbs = der_split(der_contents(crl.tbs_certlist_bytes))
    entries = []
    for element, serial in zip(der_split(der_contents(tbs[5])), serials, strict=True):
        _, *rest = der_split(der_contents(element))
        entries.append(der_tlv(0x30, der_integer(serial) + b"".join(rest)))
    tbs[5] = der_tlv(0x30, b"".join(entries))
    signed = der_tlv(0x30, b"".join(tbs))
    _, algorithm, _ = der_split(der_contents(crl.public_bytes(Encoding.DER)))
    signature = key.sign(signed, PSS_SHA384, hashes.SHA384())
    return der_tlv(0x30, signed + algorithm + der_tlv(0x03, b"\0" + signature))


def checks(
    data: bytes, certs: AmdCerts | None = None, now: datetime = NOW, product: str = "Milan"
) -> dict[str, Check]:
    crl = load_amd_crl(data, "test.crl")
    found = amd_crl_checks(crl, certs or fake_certs(product), product, now,
                           ark=fake_ark(product))  # fmt: skip
    assert [c.name for c in found] == NAMES
    return {c.name: c for c in found}


def failed(data: bytes, certs: AmdCerts | None = None, now: datetime = NOW) -> list[str]:
    return [name for name, c in checks(data, certs, now).items() if not c.ok]


def test_clean_crl_passes_every_check() -> None:
    found = checks(crl_der())
    assert all(c.ok for c in found.values())
    assert (
        found["collateral.amd_crl.signature"].actual == "signed by ARK-Milan (RSASSA-PSS SHA-384)"
    )
    assert found["vek.revoked"].actual == "VCEK serial 0x0 not listed"
    assert found["ask.revoked"].actual == "ASK serial 0x1 not listed"  # fake_ask's serial
    assert found["collateral.amd_crl.validity"].actual == (
        "2025-01-01T00:00:00+00:00 .. 2025-02-01T00:00:00+00:00"
    )


def test_listing_the_vek_fails_vek_revoked_only() -> None:
    data = crl_der((7, 0))
    assert failed(data) == ["vek.revoked"]
    assert (
        checks(data)["vek.revoked"].actual == "VCEK serial 0x0 revoked 2024-05-01 (keyCompromise)"
    )


def test_listing_the_ask_fails_ask_revoked_only() -> None:
    data = crl_der((1,))
    assert failed(data) == ["ask.revoked"]
    assert (
        checks(data)["ask.revoked"].actual == "ASK serial 0x1 revoked 2024-05-01 (keyCompromise)"
    )


def test_vlek_and_its_asvk_are_checked() -> None:
    certs = fake_certs("Milan", VLEK)
    assert failed(crl_der(), certs) == []
    found = checks(crl_der((0, 1)), certs)
    assert not found["vek.revoked"].ok and found["vek.revoked"].expected.startswith("VLEK ")
    assert not found["ask.revoked"].ok and found["ask.revoked"].expected.startswith("ASVK ")


def test_without_a_supplied_ask_the_bundled_one_is_checked() -> None:
    ask, _ = amd_chain("Milan", "vcek")
    certs = fake_certs(ask=False)
    assert checks(crl_der(), certs)["ask.revoked"].expected == "ASK serial 0x10001 not listed"
    assert failed(crl_der((ask.serial_number,)), certs) == ["ask.revoked"]


def test_without_a_vek_vek_revoked_fails() -> None:
    found = checks(crl_der(), AmdCerts(ask=fake_ask()))
    assert found["vek.revoked"].actual == "no VCEK given" and not found["vek.revoked"].ok


@pytest.mark.parametrize(
    ("now", "actual"),
    [
        (datetime(2025, 3, 1, tzinfo=UTC), "expired at 2025-03-01T00:00:00+00:00"),
        (datetime(2024, 12, 1, tzinfo=UTC), "not yet valid at 2024-12-01T00:00:00+00:00"),
    ],
)
def test_outside_this_and_next_update_fails_validity(now: datetime, actual: str) -> None:
    assert failed(crl_der(), now=now) == ["collateral.amd_crl.validity"]
    assert checks(crl_der(), now=now)["collateral.amd_crl.validity"].actual == actual


def test_signed_by_another_key_fails_signature() -> None:
    data = crl_der(signer=rsa_key("not-the-ark"))
    assert failed(data) == ["collateral.amd_crl.signature"]
    assert checks(data)["collateral.amd_crl.signature"].actual == (
        "signature does not verify with ARK-Milan"
    )


def test_fake_crl_fails_under_the_pinned_ark() -> None:
    found = amd_crl_checks(load_amd_crl(crl_der(), "test.crl"), fake_certs(), "Milan", NOW)
    assert [c.name for c in found if not c.ok] == ["collateral.amd_crl.signature"]


def test_another_issuer_fails_issuer() -> None:
    data = crl_der(issuer="ARK-Genoa")
    assert failed(data) == ["collateral.amd_crl.issuer"]
    assert "CN=ARK-Genoa" in checks(data)["collateral.amd_crl.issuer"].actual


def test_another_signature_algorithm_fails_signature() -> None:
    key = rsa_key("ark-Milan")
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(amd_name("ARK-Milan"))
        .last_update(THIS_UPDATE)
        .next_update(NEXT_UPDATE)
        .sign(key, hashes.SHA384())  # PKCS #1 v1.5, not PSS
    )
    found = checks(crl.public_bytes(Encoding.DER))["collateral.amd_crl.signature"]
    assert not found.ok
    assert found.actual == "signed with 1.2.840.113549.1.1.12 (SHA384), not RSASSA-PSS SHA-384"


def test_without_next_update_fails_validity() -> None:
    # CertificateRevocationListBuilder requires nextUpdate: take it out of the TBSCertList.
    tbs = der_split(der_contents(load_amd_crl(crl_der(), "t").crl.tbs_certlist_bytes))
    del tbs[4]
    signed = der_tlv(0x30, b"".join(tbs))
    _, algorithm, _ = der_split(der_contents(crl_der()))
    signature = rsa_key("ark-Milan").sign(signed, PSS_SHA384, hashes.SHA384())
    data = der_tlv(0x30, signed + algorithm + der_tlv(0x03, b"\0" + signature))
    assert failed(data) == ["collateral.amd_crl.validity"]
    assert checks(data)["collateral.amd_crl.validity"].actual == "no nextUpdate"


def test_pem_and_der_load_alike() -> None:
    der = crl_der((1,))
    pem = x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
    assert pem.startswith(b"-----BEGIN X509 CRL-----")
    from_pem, from_der = load_amd_crl(pem, "a.pem"), load_amd_crl(der, "a.der")
    assert from_pem.der == from_der.der == der
    assert from_pem.source == "a.pem" and from_der.source == "a.der"
    assert checks(pem) == checks(der)


def test_loads_are_cached_by_bytes_and_keep_their_source() -> None:
    data = crl_der((3,))
    first, second = load_amd_crl(data, "one"), load_amd_crl(data, "two")
    assert first.crl is second.crl and (first.source, second.source) == ("one", "two")


def test_every_flipped_bit_is_refused_or_fails_the_signature() -> None:
    data = crl_der((1, 0))
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << (pos % 8)
        try:
            crl = load_amd_crl(bytes(damaged), "flipped.crl")
        except AttestationError as e:
            assert str(e).startswith("flipped.crl: ")
            continue
        found = amd_crl_checks(crl, fake_certs(), "Milan", NOW, ark=fake_ark())
        assert not found[0].ok, f"byte {pos}: {found[0]}"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"\0\n", "empty"),
        (b"not a crl", "not a DER or PEM X.509 CRL"),
        (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "not a DER or PEM"),
        (bytes(2 << 20), "an AMD CRL is a few KiB"),
    ],
)
def test_malformed_input_names_the_source(data: bytes, says: str) -> None:
    with pytest.raises(AttestationError, match=f"^bad.crl: .*{says}"):
        load_amd_crl(data, "bad.crl")


def test_a_certificate_is_not_a_crl() -> None:
    vcek = (VECTORS / "attestation" / "snp" / "virtee_milan_vcek.der").read_bytes()
    with pytest.raises(AttestationError, match=r"^vcek\.der: not a DER or PEM X\.509 CRL$"):
        load_amd_crl(vcek, "vcek.der")


def test_unknown_product_is_an_error() -> None:
    with pytest.raises(AttestationError, match="no pinned ARK for product 'Rome'"):
        amd_crl_checks(load_amd_crl(crl_der(), "t.crl"), fake_certs(), "Rome", NOW)


def test_real_vceks_are_not_listed_by_a_clean_crl() -> None:
    # The real VCEKs carry serial 0, as the fake ones do: a CRL listing other serials
    # leaves them unrevoked, one listing 0 revokes them.
    for name in ("virtee_milan_vcek.der", "gosevguest_milan_vcek.der"):
        path = VECTORS / "attestation" / "snp" / name
        certs = AmdCerts(vcek=load_certificate(path.read_bytes(), name))
        assert failed(crl_der((5,)), certs) == []
        assert failed(crl_der((0,)), certs) == ["vek.revoked"]


# ---- fuzzing -------------------------------------------------------------------------------

_SEEDS = [crl_der(), crl_der((1, 0))]
_SEEDS.append(x509.load_der_x509_crl(_SEEDS[1]).public_bytes(Encoding.PEM))


def _survives(data: bytes) -> None:
    """Loading and checking `data` ends in a result or a CvmlaunchError, nothing else."""
    try:
        crl: AmdCrl = load_amd_crl(data, "fuzz.crl")
    except CvmlaunchError:
        return
    assert len(amd_crl_checks(crl, fake_certs(), "Milan", NOW, ark=fake_ark())) == len(NAMES)


@pytest.mark.fuzz
@settings(deadline=None, derandomize=True, max_examples=200)
@given(st.binary(max_size=2048))
def test_random_bytes_load_or_fail_cleanly(data: bytes) -> None:
    _survives(data)


@pytest.mark.fuzz
@settings(deadline=None, derandomize=True, max_examples=200)
@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(0, 4000), st.binary(max_size=8), st.integers(0, 8)),
             min_size=1, max_size=4),
)  # fmt: skip
def test_mutated_crls_load_or_fail_cleanly(
    data: bytes, edits: list[tuple[int, bytes, int]]
) -> None:
    for at, insert, cut in edits:
        pos = at % (len(data) + 1)
        data = data[:pos] + insert + data[pos + cut :]
    _survives(data)
