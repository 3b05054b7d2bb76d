"""Loading collateral: the combined JSON, PCS responses in a directory, and what a damaged
file gives (an AttestationError naming file and field; fuzzed: only our errors escape)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmlaunch.attest.collateral import (
    collateral_from_dir,
    collateral_from_json,
    load_collateral,
    load_crl,
)
from cvmlaunch.errors import AttestationError, CvmlaunchError

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "attestation" / "collateral"
QVL_JSON = VECTORS / "dcap-qvl" / "tdx_quote_collateral.json"
GO = VECTORS / "go-tdx-guest"
FUZZ = settings(deadline=None, derandomize=True, max_examples=200)


def test_combined_json() -> None:
    collateral = load_collateral(QVL_JSON)
    info = collateral.tcb_infos[0]
    assert (info.fmspc, info.version, len(info.tcb_levels)) == ("B0C06F000000", 3, 2)
    assert [m.id for m in info.tdx_module_identities] == ["TDX_03", "TDX_01"]
    assert collateral.qe_identity.isvprodid == 2
    # The signed body is the exact text, as Intel signed it.
    assert info.signed.body == json.loads(QVL_JSON.read_text())["tcb_info"].encode()


def test_pcs_directory_with_issuer_chains_beside(tmp_path: Path) -> None:
    doc = json.loads(QVL_JSON.read_text())
    for name, key in (("tcbinfo.json", "tcb_info"), ("qeidentity.json", "qe_identity")):
        body = '{{"{}":{},"signature":"{}"}}'.format(
            "tcbInfo" if key == "tcb_info" else "enclaveIdentity",
            doc[key],
            doc[f"{key}_signature"],
        )
        (tmp_path / name).write_text(body)
        (tmp_path / f"{name}.issuer-chain.pem").write_text(doc[f"{key}_issuer_chain"])
    (tmp_path / "pckcrl-platform.der").write_bytes(bytes.fromhex(doc["pck_crl"]))
    (tmp_path / "rootcrl.der").write_bytes(bytes.fromhex(doc["root_ca_crl"]))
    from_dir, from_json = load_collateral(tmp_path), load_collateral(QVL_JSON)
    assert from_dir.tcb_infos[0].signed.body == from_json.tcb_infos[0].signed.body
    assert from_dir.pck_crls[0].der == from_json.pck_crls[0].der
    (tmp_path / "qeidentity.json.issuer-chain.pem").unlink()
    with pytest.raises(AttestationError, match=r"no issuer chain for qeidentity\.json"):
        collateral_from_dir(tmp_path)


def test_missing_pieces_are_named(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="no TCB info"):
        collateral_from_dir(tmp_path)
    doc = json.loads(QVL_JSON.read_text())
    del doc["qe_identity_signature"]
    with pytest.raises(AttestationError, match="qe_identity_signature: missing"):
        collateral_from_json(json.dumps(doc).encode(), "c.json")
    doc = json.loads(QVL_JSON.read_text())
    doc["tcb_info"] = doc["tcb_info"].replace('"fmspc":"B0C06F000000"', '"fmspc":"B0C0"')
    with pytest.raises(AttestationError, match=r"c\.json: tcb_info: tcbInfo\.fmspc: expected 6"):
        collateral_from_json(json.dumps(doc).encode(), "c.json")


def test_crl_forms() -> None:
    der = (GO / "rootcrl.der").read_bytes()
    assert load_crl(der, "r").der == der
    assert load_crl(der.hex().encode(), "r").der == der
    with pytest.raises(AttestationError, match=r"not a DER or PEM X\.509 CRL"):
        load_crl(der[:-3], "r")


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    for parse in (collateral_from_json, load_crl):
        with contextlib.suppress(CvmlaunchError):
            parse(data, "fuzz")


_BASE = json.loads(QVL_JSON.read_text())
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(st.sampled_from(sorted(_BASE)), st.data())
def test_fuzz_mutated_json(key: str, data: st.DataObject) -> None:
    doc = dict(_BASE)
    value = doc[key]
    if key in ("tcb_info", "qe_identity") and data.draw(st.booleans()):
        inner = json.loads(value)
        field = data.draw(st.sampled_from(sorted(inner)))
        inner[field] = data.draw(_JSON_VALUES)
        doc[key] = json.dumps(inner)
    elif data.draw(st.booleans()):
        at = data.draw(st.integers(0, max(0, len(value) - 1)))
        doc[key] = value[:at] + data.draw(st.text(max_size=4)) + value[at + 1 :]
    else:
        doc[key] = data.draw(_JSON_VALUES)
    with contextlib.suppress(CvmlaunchError):
        collateral_from_json(json.dumps(doc).encode(), "fuzz")


@FUZZ
@given(
    st.binary(max_size=600),
    st.sampled_from(
        ["sample_tcbInfo_response", "sample_qeIdentity_response", "pckcrl", "rootcrl.der"]
    ),
)
def test_fuzz_pcs_directory(data: bytes, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for item in GO.iterdir():
            (Path(folder) / item.name).write_bytes(item.read_bytes())
        (Path(folder) / "tcb-signing-chain.pem").write_text(_BASE["tcb_info_issuer_chain"])
        original = (GO / name).read_bytes()
        (Path(folder) / name).write_bytes(original[: len(data) % (len(original) + 1)] + data)
        with contextlib.suppress(CvmlaunchError):
            collateral_from_dir(Path(folder))
