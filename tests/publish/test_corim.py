"""CoRIM reference values: the documents validate against the CoRIM CDDL with AMD's SEV-SNP
profile draft or our TD profile, a signed one verifies with pycose, read gives back what
write was given, and a hostile document gives our one-line error only."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import cbor2
import pycddl
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmlaunch import publish
from cvmlaunch.errors import AttestationError, ProfileError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.technology import Technology
from cvmlaunch.measure.sweep import Axes
from cvmlaunch.publish import PublishOptions, Reference, corim

VECTORS = Path(__file__).parents[1] / "vectors" / "refvalues" / "corim"
DOCS = Path(__file__).parents[2] / "docs"
PROFILES = Path(__file__).parents[2] / "profiles"
SNP_PROFILE = PROFILES / "debian-ovmf-qemu-snp.toml"
TDX_PROFILE = PROFILES / "debian-ovmf-qemu-tdx.toml"


# ---- the CDDL, as pycddl 0.6.4 can take it ------------------------------------------------


def _for_pycddl(text: str) -> str:
    """CDDL rewritten around pycddl 0.6.4's gaps, each to an equivalent or, where marked, a
    wider rule: it reads `&(name: 1)` map keys as the text "name"; it validates a generic
    map (`non-empty<{...}>`, `entity-map<...>`) at the wrong level (non-empty is dropped:
    wider); inside an array it checks one alternative of a type choice (the digest's alg
    becomes int, the only kind we write; the tag choice keeps CoMIDs, the only tags we
    write)."""
    text = re.sub(r"&\(\s*[\w.-]+\s*:\s*(-?\d+)\s*\)", r"\1", text)
    text = re.sub(r"non-empty<\s*\{", "{", text).replace("}>", "}")
    text = text.replace("alg: (int / text),", "alg: int,")
    for dropped in ("swid", "tl"):
        text = text.replace(f"$concise-tag-type-choice /= tagged-concise-{dropped}-tag\n", "")
    text = text.replace(
        "payload: bstr .cbor tagged-unsigned-corim-map /\n"
        "                      hash-envelope-digest /\n"
        "                      nil",
        "payload: bstr .cbor tagged-unsigned-corim-map",
    )
    for which in ("corim", "comid"):
        socket = f"$${which}-entity-map-extension"
        generic = f"{which}-entity-map =\n  entity-map<${which}-role-type-choice, {socket}>"
        text = text.replace(
            generic,
            f"{which}-entity-map = {{ 0 => $entity-name-type-choice, ? 1 => uri,"
            f" 2 => [ + ${which}-role-type-choice ], * {socket} }}",
        )
    return text


def _base() -> str:
    return _for_pycddl((VECTORS / "corim-base.cddl").read_text())


def _amd_extensions() -> str:
    """The draft's CoRIM extensions without the rules the CoRIM CDDL already has (the
    draft copies older ones: non-empty and the svn types), and with its typo fixed: it
    defines tagged-bytes32 twice, the first time as 16 bytes, which its text calls
    tagged-bytes16."""
    text = (VECTORS / "amd-snp-profile-draft" / "corim-extensions.cddl").read_text()
    text = text.replace("tagged-bytes32  = #6.560(bytes16)", "tagged-bytes16  = #6.560(bytes16)")
    kept = []
    for line in text.splitlines():
        name = line.split("=")[0].strip()
        if name in {"non-empty<M>", "svn-type", "svn", "min-svn", "tagged-svn"}:
            continue
        if name in {"tagged-min-svn", "svn-type-choice"}:
            continue
        kept.append(line)
    return _for_pycddl("\n".join(kept))


# The draft's "Expressed as" of each report field we claim, one rule per mkey (pycddl checks
# only one alternative of a choice inside an array, so each claim is checked on its own).
# HOST_DATA: the draft's text says bytes48, its byte slice R[0xC0:0xE0] is 32 bytes.
SNP_CLAIM_RULES = {
    1: "{ 0 => 1, 1 => { 1 => svn32-type } }",
    2: "{ 0 => 2, 1 => { 4 => tagged-bytes8 } }",
    3: "{ 0 => 3, 1 => { 4 => tagged-bytes16 } }",
    4: "{ 0 => 4, 1 => { 4 => tagged-bytes16 } }",
    5: "{ 0 => 5, 1 => { 15 => int } }",
    6: "{ 0 => 6, 1 => { 1 => svn64-type } }",
    640: "{ 0 => 640, 1 => { 4 => tagged-bytes64 } }",
    641: "{ 0 => 641, 1 => { 2 => [ [ 7, bytes48 ] ] } }",
    642: "{ 0 => 642, 1 => { 2 => [ [ 7, bytes32 ] ] } }",
    643: "{ 0 => 643, 1 => { 2 => [ [ 7, bytes48 ] ] } }",
    644: "{ 0 => 644, 1 => { 2 => [ [ 7, bytes48 ] ] } }",
    647: "{ 0 => 647, 1 => { 1 => svn64-type } }",
    648: "{ 0 => 648, 1 => { 15 => int } }",
    3329: "{ 0 => 3329, 1 => { 1 => svn64-type } }",
    3968: "{ 0 => 3968, 1 => { 1 => svn64-type } }",
    -1: "{ 1 => { 3 => { 3 => false } } }",  # no mkey: flags, is-debug from POLICY bit 19
}
DRAFT_CLASS_IDS = {
    cbor2.CBORTag(111, bytes.fromhex("06092b060104019c780301")),  # by chip
    cbor2.CBORTag(111, bytes.fromhex("06092b060104019c780302")),  # by CSP
}


@cache
def _schema(root: str | None, *parts: str) -> pycddl.Schema:
    text = "\n".join(parts)
    return pycddl.Schema(text if root is None else f"start = {root}\n{text}")


def _snp_schema() -> pycddl.Schema:
    return _schema(None, _base(), _amd_extensions())


def _claim_schema(mkey: int) -> pycddl.Schema:
    return _schema(f"snp-claim\nsnp-claim = {SNP_CLAIM_RULES[mkey]}", _base(), _amd_extensions())


def _tdx_fragment() -> str:
    return _for_pycddl((DOCS / "corim-tdx-profile.cddl").read_text())


def _tdx_schema() -> pycddl.Schema:
    whole = _tdx_fragment().replace(
        "ref-claims: [ + tdx-td-measurement ]", "ref-claims: [ + any ]"
    )
    return _schema(None, whole, _base())


def _tdx_claim_schema() -> pycddl.Schema:
    return _schema("tdx-td-measurement", _tdx_fragment(), _base())


def _comids(data: bytes) -> list[dict[Any, Any]]:
    document = cbor2.loads(data)
    if document.tag == 18:
        document = cbor2.loads(document.value[2])
    return [cbor2.loads(tag.value) for tag in document.value[1]]


def _unsigned(data: bytes) -> bytes:
    """The CoRIM of `data`; of a COSE_Sign1, its headers validated on their own (pycddl
    applies `.cbor` to the wrong items of an array) and its payload."""
    document = cbor2.loads(data)
    if document.tag != 18:
        return data
    protected, unprotected, payload, signature = document.value
    assert unprotected == {} and isinstance(signature, bytes)
    _schema("protected-corim-header-map", _base()).validate_cbor(protected)
    _schema("corim-meta-map", _base()).validate_cbor(cbor2.loads(protected)[8])
    return bytes(payload)


def _validate_snp(data: bytes) -> None:
    data = _unsigned(data)
    _snp_schema().validate_cbor(data)
    for comid in _comids(data):
        for environment, claims in comid[4][0]:
            assert environment[0][0] in DRAFT_CLASS_IDS
            for claim in claims:
                _claim_schema(claim.get(0, -1)).validate_cbor(cbor2.dumps(claim))


def _validate_tdx(data: bytes) -> None:
    data = _unsigned(data)
    _base_schema().validate_cbor(data)
    _tdx_schema().validate_cbor(data)
    for comid in _comids(data):
        for _, claims in comid[4][0]:
            for claim in claims:
                _tdx_claim_schema().validate_cbor(cbor2.dumps(claim))


def _base_schema() -> pycddl.Schema:
    return _schema(None, _base())


# ---- references ---------------------------------------------------------------------------


def _profile_references(path: Path, **kwargs: Any) -> list[Reference]:
    return publish.references(
        load_profile(path).to_spec(), profile_bytes=path.read_bytes(), **kwargs
    )


def _normalized(ref: Reference) -> Reference:
    """`ref` as a CoRIM gives it back: no provenance, report data padded, min_tcb without
    its zero (unconstrained) components."""
    expect = dict(ref.expect)
    if "report_data" in expect:
        expect["report_data"] = expect["report_data"].ljust(64, b"\0")
    if "min_tcb" in expect:
        parts = {k: v for k, v in expect.pop("min_tcb").items() if v}
        if parts:
            expect["min_tcb"] = parts
    return Reference(ref.technology, expect, dict(ref.config), {})


@pytest.mark.usefixtures("debian_ovmf")
def test_snp_profile_corim_validates_against_the_draft_and_reads_back() -> None:
    refs = _profile_references(SNP_PROFILE, min_tcb={"bl": 3, "tee": 0, "snp": 8, "ucode": 115})
    data = corim.write(refs, PublishOptions())
    _validate_snp(data)
    assert corim.looks_like(data)
    assert corim.read(data) == [_normalized(r) for r in refs]
    assert publish.read_any(data) == corim.read(data)
    # Each configuration is claimed for both AMD-SP classes (VCEK and VLEK signed reports).
    (comid,) = _comids(data)
    assert [triple[0][0][0] for triple in comid[4][0]] == list(
        map(
            lambda b: cbor2.CBORTag(111, bytes.fromhex(b)),
            ("06092b060104019c780301", "06092b060104019c780302"),
        )
    )
    measurement = {m[0]: m[1] for m in comid[4][0][0][1] if 0 in m}[641]
    assert measurement == {2: [[7, refs[0].expect["measurement"]]]}


@pytest.mark.usefixtures("debian_ovmf")
def test_tdx_profile_corim_validates_against_our_profile_and_reads_back() -> None:
    refs = _profile_references(TDX_PROFILE)
    data = corim.write(refs, PublishOptions(expiration=datetime(2027, 1, 1, tzinfo=UTC)))
    _validate_tdx(data)
    assert corim.read(data) == [_normalized(r) for r in refs]
    assert cbor2.loads(data).value[4] == {1: datetime(2027, 1, 1, tzinfo=UTC)}  # not-after


@pytest.mark.usefixtures("debian_ovmf")
def test_a_matrix_is_one_comid_per_configuration() -> None:
    spec = load_profile(SNP_PROFILE).to_spec()
    axes = Axes((1, 4), (spec.cpu,), (spec.vmm,), (0x1, 0x21))
    refs = publish.references(spec, axes)
    data = corim.write(refs, PublishOptions())
    _validate_snp(data)
    back = corim.read(data)
    assert back == [_normalized(r) for r in refs]
    assert len({r.expect["measurement"] for r in back}) == 4
    assert [r.config["vcpus"] for r in back] == [1, 4, 1, 4]


def _keys() -> list[bytes]:
    """Fresh PEM private keys: P-256, P-384, Ed25519."""
    keys: list[ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey] = [
        ec.generate_private_key(curve) for curve in (ec.SECP256R1(), ec.SECP384R1())
    ]
    return [
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for key in [*keys, ed25519.Ed25519PrivateKey.generate()]
    ]


def _public(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


SAMPLE = Reference(
    Technology.TDX,
    {"measurement": b"\x11" * 48, "xfam": 0x602E7, "rtmrs": {0: b"\x22" * 48, 2: b"\x33" * 48}},
    {"memory_mib": 4096, "page_order": "page"},
    {},
)


def _sign1(data: bytes) -> Any:
    """pycose's Sign1Message of `data`. Its `decode` wants the tag's content as a list and
    cbor2 6 gives a tag's content immutable (a tuple, a frozendict): rebuilt here."""
    from pycose.messages.sign1message import Sign1Message

    document = cbor2.loads(data)
    assert document.tag == Sign1Message.cbor_tag == 18
    protected, unprotected, payload, signature = document.value
    return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)


@pytest.mark.parametrize("pem", _keys(), ids=["ES256", "ES384", "EdDSA"])
def test_signed_corim_verifies_with_pycose_and_fails_after_one_flipped_byte(pem: bytes) -> None:
    from pycose.keys.cosekey import CoseKey

    expiration = datetime(2027, 6, 30, 12, tzinfo=UTC)
    data = corim.write([SAMPLE], PublishOptions(expiration=expiration, signing_key=pem))
    _validate_tdx(data)
    message = _sign1(data)
    message.key = CoseKey.from_pem_public_key(_public(pem).decode())
    assert message.verify_signature()
    meta = cbor2.loads(message.phdr[8])
    assert meta[1] == {1: expiration}  # signature-validity not-after
    assert corim.read(data) == corim.verify(data, _public(pem)) == [SAMPLE]

    flipped = data[:-1] + bytes([data[-1] ^ 1])  # the signature's last byte
    tampered = _sign1(flipped)
    tampered.key = message.key
    assert not tampered.verify_signature()
    with pytest.raises(AttestationError, match="does not verify"):
        corim.verify(flipped, _public(pem))
    payload_at = data.index(b"\xd9\x01\xf5")  # a byte of the signed CoRIM itself
    changed = data[: payload_at + 9] + bytes([data[payload_at + 9] ^ 1]) + data[payload_at + 10 :]
    with pytest.raises((AttestationError, ProfileError)):
        corim.verify(changed, _public(pem))
    with pytest.raises(AttestationError, match="does not verify"):
        corim.verify(data, _public(_keys()[1 if b"EC" in pem else 0]))


def test_verify_refuses_an_unsigned_corim() -> None:
    with pytest.raises(AttestationError, match="not signed"):
        corim.verify(corim.write([SAMPLE], PublishOptions()), _public(_keys()[0]))


# ---- round trip (hypothesis) --------------------------------------------------------------

_config = st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=16)),
    max_size=5,
)
_u64 = st.integers(0, 2**64 - 1)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


_snp_tcb = st.one_of(
    st.dictionaries(
        st.sampled_from(["bl", "tee", "snp", "ucode"]), st.integers(0, 255), min_size=1
    ),
    st.dictionaries(st.sampled_from(["bl", "tee", "snp", "ucode"]), st.integers(0, 255)).map(
        lambda d: {"fmc": 1, **d}
    ),
)
_snp_expect = st.builds(
    lambda m, rest: {"measurement": m, **rest},
    st.binary(min_size=48, max_size=48),
    _optional(
        policy=_u64,
        host_data=st.binary(min_size=32, max_size=32),
        family_id=st.binary(min_size=16, max_size=16),
        image_id=st.binary(min_size=16, max_size=16),
        id_key_digest=st.binary(min_size=48, max_size=48),
        author_key_digest=st.binary(min_size=48, max_size=48),
        vmpl=st.integers(0, 3),
        min_guest_svn=st.integers(0, 2**32 - 1),
        report_data=st.binary(max_size=64),
        min_tcb=_snp_tcb,
        allow_debug=st.just(False),
    ),
)
_tdx_expect = st.builds(
    lambda m, rest: {"measurement": m, **rest},
    st.binary(min_size=48, max_size=48),
    _optional(
        td_attributes=_u64,
        xfam=_u64,
        mrconfigid=st.binary(min_size=48, max_size=48),
        mrowner=st.binary(min_size=48, max_size=48),
        mrownerconfig=st.binary(min_size=48, max_size=48),
        mrseam=st.binary(min_size=48, max_size=48),
        rtmrs=st.dictionaries(st.integers(0, 3), st.binary(min_size=48, max_size=48), min_size=1),
        report_data=st.binary(min_size=64, max_size=64),
        allow_debug=st.just(False),
    ),
)


def _references(technology: Technology, expect: st.SearchStrategy[dict[str, Any]]) -> Any:
    one = st.builds(lambda e, c: Reference(technology, e, c, {}), expect, _config)
    return st.lists(one, min_size=1, max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        _references(Technology.SEV_SNP, _snp_expect), _references(Technology.TDX, _tdx_expect)
    )
)
def test_read_gives_back_what_write_was_given(refs: list[Reference]) -> None:
    data = corim.write(refs, PublishOptions())
    assert corim.read(data) == [_normalized(r) for r in refs]
    if refs[0].technology is Technology.SEV_SNP:
        _validate_snp(data)
    else:
        _validate_tdx(data)


# ---- what write refuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refs", "where"),
    [
        ([], "references"),
        ([SAMPLE, SAMPLE._replace(technology=Technology.SEV_SNP)], "references"),
        ([SAMPLE._replace(technology=Technology.SEV_ES)], "technology"),
        (
            [SAMPLE._replace(expect={"measurement": b"\0" * 32})],
            "references[0].expect.measurement",
        ),
        ([SAMPLE._replace(expect={"events": ()})], "references[0].expect.events"),
        ([SAMPLE._replace(expect={"allow_debug": True})], "references[0].expect.allow_debug"),
        ([SAMPLE._replace(expect={"rtmrs": {4: b"\0" * 48}})], "references[0].expect.rtmrs[4]"),
        ([SAMPLE._replace(expect={"xfam": -1})], "references[0].expect.xfam"),
        ([SAMPLE._replace(config={"x": float("nan")})], "references[0].config"),
    ],
)
def test_write_names_what_it_cannot_publish(refs: list[Reference], where: str) -> None:
    with pytest.raises(ProfileError) as caught:
        corim.write(refs, PublishOptions())
    assert caught.value.problems[0].field == where


def test_write_refuses_an_rsa_signing_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ProfileError, match="signing_key"):
        corim.write([SAMPLE], PublishOptions(signing_key=pem))
    with pytest.raises(ProfileError, match="signing_key"):
        corim.write([SAMPLE], PublishOptions(signing_key=b"not a key"))


# ---- what read refuses --------------------------------------------------------------------


def _one_line(error: ProfileError) -> None:
    (problem,) = error.problems
    assert "\n" not in str(error) and problem.field and len(str(error)) < 300


def test_the_trustee_example_is_refused_naming_its_profile() -> None:
    data = (VECTORS / "trustee" / "unsigned-example-corim.cbor").read_bytes()
    assert corim.looks_like(data)
    with pytest.raises(ProfileError) as caught:
        corim.read(data)
    _one_line(caught.value)
    assert caught.value.problems[0].field == "corim.profile"


def _with_claim(claim: dict[int, Any]) -> bytes:
    data = corim.write([SAMPLE], PublishOptions())
    document = cbor2.loads(data)
    comid = cbor2.loads(document.value[1][0].value)
    comid[4][0][0][1].append(claim)
    corim_map = dict(document.value) | {1: [cbor2.CBORTag(506, cbor2.dumps(comid))]}
    return cbor2.dumps(cbor2.CBORTag(501, corim_map))


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        ({0: 12, 1: {4: cbor2.CBORTag(560, b"\0" * 8)}}, "no expectation"),
        ({0: 6, 1: {2: [[1, b"\0" * 32]]}}, "sha-384"),
        ({0: 5, 1: {4: cbor2.CBORTag(563, [b"\0" * 8, b"\xff" * 8])}}, "tag 560"),
        ({0: 6, 1: {2: [[7, b"\0" * 48]]}, 2: [cbor2.CBORTag(554, "key")]}, "authorized-by"),
        ({1: {3: {3: True}}}, "is-debug"),
        ({0: 4, 1: {4: cbor2.CBORTag(560, b"\0" * 8)}, 9: 1}, "measurement-map"),
    ],
)
def test_read_refuses_a_claim_it_cannot_audit(claim: dict[int, Any], reason: str) -> None:
    with pytest.raises(ProfileError, match=reason) as caught:
        corim.read(_with_claim(claim))
    _one_line(caught.value)
    assert caught.value.problems[0].field.startswith("corim.tags[0].triples.reference-triples[0]")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xd9\x01\xf5",  # the tag, then nothing
        b"\x81" * 100_000,  # nested beyond the bound
        b"\xd9\x01\xf5" * 50_000 + b"\x00",
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # a byte string claiming 2^64 bytes
        b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00",  # an array claiming 2^32 items
        b"\xd9\x01\xf5\xa1\x00\xd8\x1c\x81\xd8\x1d\x00",  # a shared (cyclic) value
        b"\xd9\x01\xf5\xa2\x00\x00\x00\x01",  # a duplicate map key
        b"\xd2\x84\x40\xa0\x40\x40",  # COSE_Sign1 with an empty protected header
        b"\xd2\x84\x41\xa0\xa0\xf6\x40",  # detached payload
        cbor2.dumps(cbor2.CBORTag(501, {3: cbor2.CBORTag(32, corim.SNP_PROFILE), 1: [1]})),
        bytes(corim.MAX_DOCUMENT + 1),
        b'{"version": "0.1.0"}',
    ],
)
def test_hostile_documents_give_our_error_only(data: bytes) -> None:
    with pytest.raises(ProfileError) as caught:
        corim.read(data)
    _one_line(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_give_our_error_only(data: bytes) -> None:
    try:
        corim.read(data)
    except ProfileError as e:
        _one_line(e)


@cache
def _valid_documents() -> tuple[bytes, ...]:
    snp = Reference(
        Technology.SEV_SNP,
        {"measurement": b"\x01" * 48, "policy": 0x30000, "min_tcb": {"fmc": 1, "snp": 3}},
        {"vcpus": 4},
        {},
    )
    return (
        corim.write([SAMPLE], PublishOptions()),
        corim.write([snp, snp], PublishOptions()),
        corim.write([SAMPLE], PublishOptions(signing_key=_keys()[0])),
    )


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_documents_give_references_or_our_error(data: st.DataObject) -> None:
    document = bytearray(data.draw(st.sampled_from(_valid_documents())))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(document) - 1))
        action = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        if action == "flip":
            document[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set":
            document[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del document[at : at + data.draw(st.integers(1, 16))]
        else:
            document[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        if not document:
            document = bytearray(b"\0")
    try:
        refs = corim.read(bytes(document))
    except ProfileError as e:
        _one_line(e)
    else:
        assert all(isinstance(r, Reference) and isinstance(r.expect, Mapping) for r in refs)


def test_looks_like_tells_corim_from_the_other_formats() -> None:
    assert corim.looks_like(corim.write([SAMPLE], PublishOptions()))
    assert corim.looks_like(corim.write([SAMPLE], PublishOptions(signing_key=_keys()[2])))
    for other in (b'{"references": []}', b"policy {\n}", b"", b"\xd9\x01"):
        assert not corim.looks_like(other)
