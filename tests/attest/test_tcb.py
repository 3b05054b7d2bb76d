"""TCB status from collateral: side by side with dcap-qvl 0.7.0 on its samples, go-tdx-guest's
samples as its tests expect, and each failure under its own check name."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from cvmlaunch.attest.collateral import (
    Crl,
    Signed,
    TdxCollateral,
    collateral_from_dir,
    collateral_from_json,
    load_crl,
)
from cvmlaunch.attest.result import Check
from cvmlaunch.attest.tcb import CollateralCache, Status, converge, tdx_collateral_checks
from cvmlaunch.attest.tdx import TdxQuote, _load_pck, parse_tdx_quote

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "attestation" / "collateral"
QVL = VECTORS / "dcap-qvl"
GO = VECTORS / "go-tdx-guest"


def _at(text: str, seconds: int = 0) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) + timedelta(seconds=seconds)


def _ours(quote: TdxQuote, collateral: TdxCollateral, now: datetime) -> dict[str, Check]:
    checks = tdx_collateral_checks(quote, _load_pck(quote.pck_chain).certs, collateral, now)
    return {c.name: c for c in checks}


def _theirs(raw: bytes, text: str, now: datetime) -> str:
    collateral = dcap_qvl.QuoteCollateralV3.from_json(text)
    try:
        report = dcap_qvl.verify(raw, collateral, int(now.timestamp()))
    except ValueError as e:
        return f"error: {e}"
    ids = f" ({', '.join(report.advisory_ids)})" if report.advisory_ids else ""
    return str(report.status) + ids


def _verdict(checks: dict[str, Check]) -> str:
    """Our checks in dcap-qvl's terms: the status, or which kind of failure."""
    failed = [name for name, c in checks.items() if not c.ok]
    if any(name.endswith(".validity") for name in failed):
        return "expired or not yet valid"
    if failed == ["tcb.status"] and checks["tcb.status"].actual == "no TCB level matches":
        return "no matching TCB level"
    if failed:
        return f"failed: {failed}"
    return checks["tcb.status"].actual


def _qvl_kind(theirs: str) -> str:
    if "expired" in theirs or "in the future" in theirs or "Expired" in theirs:
        return "expired or not yet valid"
    if "No matching TCB level" in theirs:
        return "no matching TCB level"
    return theirs


def _times(text: str) -> list[datetime]:
    doc = json.loads(text)
    tcb, qe = json.loads(doc["tcb_info"]), json.loads(doc["qe_identity"])
    issued = max(_at(tcb["issueDate"]), _at(qe["issueDate"]))
    first_end = min(_at(tcb["nextUpdate"]), _at(qe["nextUpdate"]))
    return [
        _at(tcb["issueDate"], -1),  # before issueDate
        issued + timedelta(hours=1),
        issued + timedelta(days=7),
        first_end - timedelta(days=2),
        _at(tcb["nextUpdate"], 3600),  # after nextUpdate
        issued + timedelta(days=365),
    ]


@pytest.mark.parametrize("name", ["tdx_quote", "tdx_quote_outdated"])
def test_status_as_dcap_qvl_across_validity(name: str) -> None:
    raw = (QVL / name).read_bytes()
    text = (QVL / f"{name}_collateral.json").read_text()
    quote = parse_tdx_quote(raw)
    collateral = collateral_from_json(text.encode(), name)
    seen = set()
    for now in _times(text):
        ours, theirs = _verdict(_ours(quote, collateral, now)), _qvl_kind(_theirs(raw, text, now))
        assert ours == theirs, (now, ours, theirs)
        seen.add(ours)
    assert "expired or not yet valid" in seen
    expected = "UpToDate" if name == "tdx_quote" else "no matching TCB level"
    assert expected in seen


def test_before_issue_and_after_next_update_name_the_validity_check() -> None:
    text = (QVL / "tdx_quote_collateral.json").read_bytes()
    quote = parse_tdx_quote((QVL / "tdx_quote").read_bytes())
    collateral = collateral_from_json(text, "c")
    early = _ours(quote, collateral, datetime(2025, 6, 19, 10, tzinfo=UTC))
    assert not early["collateral.tcb_info.validity"].ok
    assert "not yet issued" in early["collateral.tcb_info.validity"].actual
    late = _ours(quote, collateral, datetime(2025, 8, 1, tzinfo=UTC))
    assert not late["collateral.tcb_info.validity"].ok
    assert not late["collateral.pck_crl.validity"].ok
    assert late["collateral.tcb_info.signature"].ok


def _go_dir(tmp_path: Path) -> Path:
    # go-tdx-guest's tests pass the issuer chains as HTTP headers; the TCB signing chain
    # saved with dcap-qvl's collateral is Intel's same TCB signing key, re-issued.
    for item in GO.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    chain = json.loads((QVL / "tdx_quote_collateral.json").read_text())["tcb_info_issuer_chain"]
    (tmp_path / "tcb-signing-chain.pem").write_text(chain)
    return tmp_path


def test_go_tdx_guest_samples(tmp_path: Path) -> None:
    collateral = collateral_from_dir(_go_dir(tmp_path))
    assert sorted(i.fmspc for i in collateral.tcb_infos) == ["50806F000000", "90C06F000000"]
    quote = parse_tdx_quote((GO / "tdx_prod_quote_SPR_E4.dat").read_bytes())
    pck = _load_pck(quote.pck_chain).certs
    # TestObtainAndVerifyCollateral: verifies at 2023-07-01 01:00 UTC...
    now = datetime(2023, 7, 1, 1, tzinfo=UTC)
    checks = {c.name: c for c in tdx_collateral_checks(quote, pck, collateral, now)}
    for name in ("tcb_info", "qe_identity", "pck_crl", "root_crl"):
        assert checks[f"collateral.{name}.signature"].ok
    # ...except the TCB signing certificate's own period: this re-issue starts in 2025.
    assert not checks["collateral.tcb_info.signer_validity"].ok
    assert checks["collateral.tcb_info.validity"].ok
    assert checks["collateral.tcb_info.fmspc"].ok and checks["pck.revoked"].ok
    # TestVerifyUsingQeIdentityV4: the QE report matches the QE identity.
    assert checks["qe.identity"].ok
    # TestVerifyUsingTcbInfoV4: with the sample's SVNs no level matches (its test zeroes
    # them to get a match).
    assert checks["tcb.status"].actual == "no TCB level matches"
    # TestNegativeObtainAndVerifyCollateral: in 2053 "tcbInfo has expired".
    future = {c.name: c for c in tdx_collateral_checks(
        quote, pck, collateral, datetime(2053, 7, 1, 1, tzinfo=UTC))}  # fmt: skip
    assert not future["collateral.tcb_info.validity"].ok


def test_go_tdx_guest_v5(tmp_path: Path) -> None:
    collateral = collateral_from_dir(_go_dir(tmp_path))
    quote = parse_tdx_quote((GO / "quote_v5_sample.dat").read_bytes())
    pck = _load_pck(quote.pck_chain).certs
    now = datetime(2026, 2, 3, 1, tzinfo=UTC)
    checks = {c.name: c for c in tdx_collateral_checks(quote, pck, collateral, now)}
    # TestVerifyUsingTcbInfoV5: its v5 TCB info is for the quote's FMSPC and a level matches.
    assert checks["collateral.tcb_info.fmspc"].ok
    assert checks["tcb.tdx_module"].ok
    assert checks["collateral.tcb_info.signature"].ok
    # TestVerifyUsingQeIdentityV5: the QE report matches the QE identity.
    assert checks["qe.identity"].ok


# -- Failures, each under its own name ---------------------------------------------------


def _sample() -> tuple[TdxQuote, bytes]:
    return parse_tdx_quote((QVL / "tdx_quote").read_bytes()), (
        QVL / "tdx_quote_collateral.json"
    ).read_bytes()


NOW = datetime(2025, 6, 25, tzinfo=UTC)


def _failed(quote: TdxQuote, collateral: TdxCollateral) -> list[str]:
    return [name for name, c in _ours(quote, collateral, NOW).items() if not c.ok]


def _edit(data: bytes, key: str, change: object) -> TdxCollateral:
    doc = json.loads(data)
    doc[key] = change(doc[key]) if callable(change) else change
    return collateral_from_json(json.dumps(doc).encode(), "edited")


def _flip(text: str, at: int) -> str:
    char = text[at]
    return text[:at] + ("1" if char != "1" else "2") + text[at + 1 :]


def test_all_pass_inside_validity() -> None:
    quote, data = _sample()
    assert _failed(quote, collateral_from_json(data, "c")) == []


@pytest.mark.parametrize(
    ("key", "edit", "check"),
    [
        ("tcb_info", lambda t: t.replace('"pcesvn":11', '"pcesvn":10', 1),
         "collateral.tcb_info.signature"),
        ("tcb_info_signature", lambda t: _flip(t, 10), "collateral.tcb_info.signature"),
        ("qe_identity", lambda t: t.replace('"isvsvn":4', '"isvsvn":5', 1),
         "collateral.qe_identity.signature"),
        ("qe_identity_signature", lambda t: _flip(t, 70), "collateral.qe_identity.signature"),
    ],
)  # fmt: skip
def test_bit_flips_fail_their_signature(key: str, edit: object, check: str) -> None:
    quote, data = _sample()
    assert _failed(quote, _edit(data, key, edit)) == [check]


def test_collateral_for_another_fmspc() -> None:
    quote, data = _sample()
    other = (GO / "sample_tcbInfo_response").read_bytes()
    doc = json.loads(data)
    body = other[len(b'{"tcbInfo":') : other.rindex(b',"signature"')]
    doc["tcb_info"] = body.decode()
    doc["tcb_info_signature"] = json.loads(other)["signature"]
    failed = _failed(quote, collateral_from_json(json.dumps(doc).encode(), "other"))
    assert "collateral.tcb_info.fmspc" in failed
    assert "collateral.tcb_info.signature" not in failed


def test_expired_collateral() -> None:
    quote, data = _sample()
    checks = _ours(quote, collateral_from_json(data, "c"), datetime(2025, 9, 1, tzinfo=UTC))
    failed = {name for name, c in checks.items() if not c.ok}
    assert {"collateral.tcb_info.validity", "collateral.qe_identity.validity",
            "collateral.pck_crl.validity"} <= failed  # fmt: skip


def test_accepting_statuses_and_advisories() -> None:
    assert converge(Status("ConfigurationNeeded", ("A",)), Status("OutOfDate", ("B",))) == (
        Status("OutOfDateConfigurationNeeded", ("A", "B"))
    )
    assert converge(Status("UpToDate", ()), Status("Revoked", ())).status == "Revoked"
    quote, data = _sample()
    collateral = collateral_from_json(data, "c")
    checks = tdx_collateral_checks(
        quote, _load_pck(quote.pck_chain).certs, collateral, NOW, accept=frozenset({"Revoked"})
    )
    status = {c.name: c for c in checks}["tcb.status"]
    assert (status.ok, status.expected, status.actual) == (False, "Revoked", "UpToDate")


# -- A revoked PCK, under a test CA standing in for Intel's ------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, *,
          signer: ec.EllipticCurvePrivateKey, serial: int,
          ext: x509.UnrecognizedExtension | None = None) -> x509.Certificate:  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
    )
    if ext is not None:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(signer, hashes.SHA256())


def _crl(issuer: x509.Name, signer: ec.EllipticCurvePrivateKey, revoked: list[int]) -> Crl:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(datetime(2025, 1, 1, tzinfo=UTC))
        .next_update(datetime(2026, 1, 1, tzinfo=UTC))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime(2025, 1, 1, tzinfo=UTC))
            .build()
        )
    from cryptography.hazmat.primitives.serialization import Encoding

    return load_crl(builder.sign(signer, hashes.SHA256()).public_bytes(Encoding.DER), "crl")


def _resign(
    signed: Signed, key: ec.EllipticCurvePrivateKey, chain: tuple[x509.Certificate, ...]
) -> Signed:
    r, s = decode_dss_signature(key.sign(signed.body, ec.ECDSA(hashes.SHA256())))
    return signed._replace(signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"),
                           issuer_chain=chain)  # fmt: skip


@pytest.mark.parametrize("revoke", ["none", "leaf", "ca"])
def test_revoked_pck_under_a_test_root(revoke: str) -> None:
    quote, data = _sample()
    real_leaf = _load_pck(quote.pck_chain).certs[0]
    sgx = real_leaf.extensions.get_extension_for_oid(
        x509.ObjectIdentifier("1.2.840.113741.1.13.1")
    )
    assert isinstance(sgx.value, x509.UnrecognizedExtension)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]
    root = _cert("Test Root", keys[0], _name("Test Root"), signer=keys[0], serial=1)
    tcb_signer = _cert("Test TCB Signing", keys[1], root.subject, signer=keys[0], serial=2)
    pck_ca = _cert("Test PCK Platform CA", keys[2], root.subject, signer=keys[0], serial=3)
    leaf = _cert("Test PCK", keys[3], pck_ca.subject, signer=keys[2], serial=4, ext=sgx.value)
    real = collateral_from_json(data, "c")
    info, qe = real.tcb_infos[0], real.qe_identity
    collateral = real._replace(
        tcb_infos=(info._replace(signed=_resign(info.signed, keys[1], (tcb_signer, root))),),
        qe_identity=qe._replace(signed=_resign(qe.signed, keys[1], (tcb_signer, root))),
        pck_crls=(_crl(pck_ca.subject, keys[2], [4] if revoke == "leaf" else []),),
        root_crl=_crl(root.subject, keys[0], [3] if revoke == "ca" else []),
    )
    cache = CollateralCache(size=8)
    checks = tdx_collateral_checks(quote, [leaf, pck_ca, root], collateral, NOW, root=root,
                                   cache=cache)  # fmt: skip
    failed = [c.name for c in checks if not c.ok]
    assert failed == ([] if revoke == "none" else ["pck.revoked"])
    # Against Intel's root, the test collateral's signatures lead nowhere.
    intel = [c.name for c in tdx_collateral_checks(quote, [leaf, pck_ca], collateral, NOW)
             if not c.ok]  # fmt: skip
    assert "collateral.tcb_info.chain" in intel and "collateral.root_crl.signature" in intel
