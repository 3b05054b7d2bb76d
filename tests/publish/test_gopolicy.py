"""go-sev-guest `check.Config` / go-tdx-guest `checkconfig.Config` (publish/gopolicy.py),
judged by the consumers' own messages: the upstream .proto files (tests/vectors/refvalues)
compiled by grpcio-tools at test time, read with protobuf's text_format and json_format."""

from __future__ import annotations

import importlib
import importlib.resources
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmlaunch.errors import CvmlaunchError, ProfileError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import CpuSpec, PageOrder, Technology, Vmm
from cvmlaunch.measure.sweep import Axes
from cvmlaunch.publish import PublishOptions, Reference, references
from cvmlaunch.publish import gopolicy as gp
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "refvalues"
SEV, TDX = VECTORS / "go-sev-guest", VECTORS / "go-tdx-guest"
COS113_QUOTE = ROOT / "tests" / "vectors" / "eventlog" / "go-tdx-guest" / "cos-113-tdx-quote.dat"
EXAMPLES = {
    "sev-text": SEV / "check-config-snp-dstack-milan.textproto",
    "sev-json": SEV / "check-config-snp-dstack-milan.protojson.json",
    "tdx-text": TDX / "checkconfig-tdx-cos113.textproto",
    "tdx-json": TDX / "checkconfig-tdx-cos113.protojson.json",
}
TEXT, JSON = PublishOptions(text=True), PublishOptions(text=False)
# TCB_VERSION byte of each component (AMD SEV-SNP ABI 56860, TCB_VERSION; Turin moved them).
MILAN_BYTES = {"bl": 0, "tee": 1, "snp": 6, "ucode": 7}
TURIN_BYTES = {"fmc": 0, "bl": 1, "tee": 2, "snp": 3, "ucode": 7}
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The generated check_pb2 and checkconfig_pb2 modules, with text_format and json_format."""
    try:
        from google.protobuf import json_format, text_format
        from grpc_tools import protoc
    except ImportError as e:
        pytest.skip(f"protobuf / grpcio-tools not installed ({e}): pip install -e '.[test]'")
    out = tmp_path_factory.mktemp("protos")
    well_known = importlib.resources.files("grpc_tools") / "_proto"  # wrappers.proto
    for folder, names in ((SEV, ("sevsnp.proto", "check.proto")), (TDX, ("checkconfig.proto",))):
        files = [str(folder / name) for name in names]
        args = ["protoc", f"-I{folder}", f"-I{well_known}", f"--python_out={out}", *files]
        if protoc.main(args) != 0:
            pytest.skip(f"grpc_tools.protoc could not compile {', '.join(names)}")
    sys.path.insert(0, str(out))  # check_pb2 imports sevsnp_pb2 as a top-level module
    try:
        check = importlib.import_module("check_pb2")
        checkconfig = importlib.import_module("checkconfig_pb2")
    finally:
        sys.path.remove(str(out))
    return SimpleNamespace(
        check=check, checkconfig=checkconfig, text=text_format, json=json_format
    )


def upstream(pb: SimpleNamespace, technology: Technology, data: bytes, text: bool) -> Any:
    """`data` parsed by protobuf into the Config message of `technology`."""
    module = pb.check if technology is Technology.SEV_SNP else pb.checkconfig
    message = module.Config()
    if text:
        pb.text.Parse(data.decode(), message)
    else:
        pb.json.Parse(data.decode(), message)
    return message


def both(pb: SimpleNamespace, references: list[Reference]) -> Any:
    """The message of our textproto, checked equal to that of our protojson."""
    technology = references[0].technology
    from_text = upstream(pb, technology, gp.write(references, TEXT), text=True)
    assert from_text == upstream(pb, technology, gp.write(references, JSON), text=False)
    return from_text


def tcb_word(parts: Mapping[str, int], layout: Mapping[str, int]) -> int:
    return sum(value << 8 * layout[name] for name, value in parts.items())


def profile_references(name: str, axes: Axes | None = None, **kw: Any) -> list[Reference]:
    spec = load_profile(ROOT / "profiles" / name).to_spec()
    return references(spec, axes, **kw)


# ---- what the shipped profiles publish, as the consumers read it -------------------------


def test_snp_profile_as_go_sev_guest_reads_it(pb: SimpleNamespace, debian_ovmf: Path) -> None:
    minimum = {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}
    [ref] = profile_references("debian-ovmf-qemu-snp.toml", min_tcb=minimum)
    config = both(pb, [ref])
    policy = config.policy
    assert policy.measurement == ref.expect["measurement"]
    assert policy.policy == ref.expect["policy"] == 0x30000
    assert policy.host_data == ref.expect["host_data"]
    # One min_tcb bounds every TCB the audit reads: reported (minimum_tcb) and launch.
    assert policy.minimum_tcb == policy.minimum_launch_tcb == tcb_word(minimum, MILAN_BYTES)
    assert config.root_of_trust.product_line == "Milan"  # the profile's EPYC-Milan CPU
    assert not policy.HasField("vmpl") and not policy.require_id_block
    [back] = gp.read(gp.write([ref], TEXT))
    assert back.expect == {**ref.expect, "min_tcb": {"bl": 3, "snp": 8, "ucode": 115}}


def test_tdx_profile_as_go_tdx_guest_reads_it(pb: SimpleNamespace, debian_ovmf: Path) -> None:
    [ref] = profile_references("debian-ovmf-qemu-tdx.toml")
    body = both(pb, [ref]).policy.td_quote_body_policy
    assert body.mr_td == ref.expect["measurement"]
    assert body.td_attributes == (0x10000000).to_bytes(8, "little")  # SEPT_VE_DISABLE
    assert body.xfam == (0x602E7).to_bytes(8, "little")
    assert body.mr_config_id == body.mr_owner == body.mr_owner_config == bytes(48)
    assert body.enable_td_debug_check
    assert not body.rtmrs and not body.any_mr_td  # the profile predicts no boot
    for options in (TEXT, JSON):
        [back] = gp.read(gp.write([ref], options))
        assert back.technology is Technology.TDX and back.expect == ref.expect


def test_td_matrix_is_one_document_listing_each_mrtd(
    pb: SimpleNamespace, debian_ovmf: Path
) -> None:
    spec = load_profile(ROOT / "profiles" / "debian-ovmf-qemu-tdx.toml").to_spec()
    axes = Axes((spec.vcpus,), (spec.cpu,), (spec.vmm,), (spec.guest_features,))
    refs = references(spec, axes._replace(page_orders=tuple(PageOrder), memory_mibs=(2048, 4096)))
    mrtds = list(dict.fromkeys(r.expect["measurement"] for r in refs))
    assert len(refs) == 4 and len(mrtds) == 2  # MRTD does not depend on the memory size
    body = both(pb, refs).policy.td_quote_body_policy
    assert list(body.any_mr_td) == mrtds and not body.mr_td
    text = gp.write(refs, TEXT).decode()
    assert text.count("# configuration ") == 4  # each configuration, named in a comment
    assert [r.expect["measurement"] for r in gp.read(text.encode())] == mrtds


def test_snp_matrix_refused_naming_what_differs(debian_ovmf: Path) -> None:
    spec = load_profile(ROOT / "profiles" / "debian-ovmf-qemu-snp.toml").to_spec()
    refs = references(spec, Axes((1, 2, 4), (spec.cpu,), (spec.vmm,), (spec.guest_features,)))
    with pytest.raises(ProfileError) as e:
        gp.write(refs, TEXT)
    assert str(e.value) == (
        "references: 3 configurations differ in policy.measurement; a go-sev-guest policy "
        "holds one value there: publish one document per configuration (--output-dir DIR)"
    )


@pytest.mark.parametrize("protojson", [False, True])
def test_snp_matrix_as_one_document_per_configuration(
    pb: SimpleNamespace, cli: CliRunner, tmp_path: Path, debian_ovmf: Path, protojson: bool
) -> None:
    profile = ROOT / "profiles" / "debian-ovmf-qemu-snp.toml"
    out = tmp_path / "policies"
    flags = ["--vcpus", "1-3", "--vcpu-type", "EPYC-v4,EPYC-Milan", "--vmm", "qemu,ec2"]
    r = cli("publish", profile, "--format", "go-sev-guest", *flags, "--output-dir", out,
            *(["--protojson"] if protojson else []))  # fmt: skip
    assert r.code == 0, r.err
    spec = load_profile(profile).to_spec()
    cpus = (CpuSpec.from_name("EPYC-v4"), CpuSpec.from_name("EPYC-Milan"))
    axes = Axes((1, 2, 3), cpus, (Vmm.QEMU, Vmm.EC2), (spec.guest_features,))
    expected = references(spec, axes)
    index = json.loads((out / "index.json").read_bytes())
    entries = index["documents"]
    assert len(entries) == len(expected) == 9  # ec2 measures no CPU model: 3 + 6
    assert sorted(index["files"]) == sorted(e["file"] for e in entries)
    assert sorted(p.name for p in out.iterdir()) == sorted([*index["files"], "index.json"])
    suffix = ".json" if protojson else ".textproto"
    for n, (entry, ref) in enumerate(zip(entries, expected, strict=True), 1):
        assert entry["config"] == ref.config
        assert entry["measurement"] == ref.expect["measurement"].hex()
        # Named by place and by what tells it apart, so a listing reads as the matrix.
        config = ref.config
        words = [f"vcpus-{config['vcpus']}", f"cpu-{config['cpu'] or 'any'}"]
        assert entry["file"] == f"{n}-{'_'.join(words)}_vmm-{config['vmm']}{suffix}"
        data = (out / entry["file"]).read_bytes()
        policy = upstream(pb, Technology.SEV_SNP, data, text=not protojson).policy
        assert policy.measurement == ref.expect["measurement"]
        assert policy.policy == ref.expect["policy"]
        assert policy.host_data == ref.expect["host_data"]
        [back] = gp.read(data)
        assert back.expect == ref.expect
    # Again, into the same folder, fewer configurations: the folder is replaced whole.
    r = cli("publish", profile, "--format", "go-sev-guest", "--vcpus", "1,2", "--output-dir",
            out)  # fmt: skip
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == [
        "1-vcpus-1.textproto", "2-vcpus-2.textproto", "index.json"
    ]  # fmt: skip
    (out / "mine.txt").write_text("kept")
    r = cli("publish", profile, "--format", "go-sev-guest", "--output-dir", out)
    assert r.code == 2 and r.out == ""
    assert r.err == (
        f"cvmlaunch: error: --output-dir {out}: holds mine.txt, which no earlier output "
        "wrote; give a new or empty folder\n"
    )
    assert (out / "mine.txt").read_text() == "kept" and len(list(out.iterdir())) == 4


def snp(**expect: Any) -> Reference:
    return Reference(Technology.SEV_SNP, {"policy": 0x30000, **expect}, {}, {})


def td(**expect: Any) -> Reference:
    return Reference(Technology.TDX, expect, {}, {})


def test_unclaimed_rtmr_is_an_empty_entry(pb: SimpleNamespace) -> None:
    # go-tdx-guest takes four RTMRs or none, and skips an empty one: RTMR3 is not claimed.
    rtmrs = {0: b"\1" * 48, 1: b"\2" * 48, 2: b"\3" * 48}
    body = both(pb, [td(rtmrs=rtmrs)]).policy.td_quote_body_policy
    assert list(body.rtmrs) == [b"\1" * 48, b"\2" * 48, b"\3" * 48, b""]
    assert gp.read(gp.write([td(rtmrs=rtmrs)], JSON))[0].expect["rtmrs"] == rtmrs


def test_id_block_claims_and_a_list_of_id_keys(pb: SimpleNamespace) -> None:
    keys = [bytes([n]) * 48 for n in (1, 2)]
    family, image = b"F" * 16, b"I" * 16
    refs = [snp(id_key_digest=k, family_id=family, image_id=image, min_guest_svn=3) for k in keys]
    policy = both(pb, refs).policy
    assert policy.require_id_block and list(policy.trusted_id_key_hashes) == keys
    assert (policy.family_id, policy.image_id, policy.minimum_guest_svn) == (family, image, 3)
    assert [r.expect for r in gp.read(gp.write(refs, TEXT))] == [r.expect for r in refs]
    author = both(pb, [snp(author_key_digest=keys[0])]).policy
    assert author.require_author_key and list(author.trusted_author_key_hashes) == keys[:1]


def test_turin_tcb_layout(pb: SimpleNamespace) -> None:
    minimum = {"fmc": 1, "bl": 2, "tee": 3, "snp": 4, "ucode": 5}
    config = both(pb, [snp(min_tcb=minimum)])
    assert config.policy.minimum_tcb == tcb_word(minimum, TURIN_BYTES)
    assert config.root_of_trust.product_line == "Turin"
    assert gp.read(gp.write([snp(min_tcb=minimum)], JSON))[0].expect["min_tcb"] == minimum


@pytest.mark.parametrize(
    ("refs", "message"),
    [
        ([], "references: none given"),
        ([Reference(Technology.SEV_ES, {}, {}, {})], "technology: go-sev-guest and go-tdx-guest"),
        ([snp(), td()], "technology: the references mix technologies"),
        ([Reference(Technology.SEV_SNP, {}, {}, {})], "expect.policy: go-sev-guest needs"),
        ([snp(xfam=1)], "expect.xfam: go-sev-guest's policy has no field for this claim"),
        ([td(events=())], "expect.events: go-tdx-guest's policy has no field"),
        ([snp(measurement=b"short")], "expect.measurement: expected 48 bytes"),
        ([snp(vmpl=4)], "expect.vmpl: 0x4 does not fit"),
        ([td(rtmrs={4: bytes(48)})], "expect.rtmrs: RTMR index 4 is not 0..3"),
        (
            [snp(min_tcb={"fmc": 1})._replace(config={"cpu_signature": "0xa00f11"})],
            "expect.min_tcb.fmc: not a TCB component of Milan",  # the profile's CPU is a Milan
        ),
        ([td(xfam=1), td(xfam=2)], "2 configurations differ in policy.td_quote_body_policy.xfam"),
    ],
)
def test_write_refuses(refs: list[Reference], message: str) -> None:
    with pytest.raises(ProfileError) as e:
        gp.write(refs, TEXT)
    assert message in str(e.value) and "\n" not in str(e.value)


# ---- the shipped examples ------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_read_as_the_compiled_protos_see_them(pb: SimpleNamespace, name: str) -> None:
    data = EXAMPLES[name].read_bytes()
    technology = Technology.SEV_SNP if name.startswith("sev") else Technology.TDX
    message = upstream(pb, technology, data, text=name.endswith("text"))
    assert gp.looks_like(data)
    [ref] = gp.read(data)
    assert ref.technology is technology and ref.config == {}
    if technology is Technology.SEV_SNP:
        policy = message.policy
        words = (policy.minimum_tcb, policy.minimum_launch_tcb)
        lowest = {k: min(w >> 8 * b & 0xFF for w in words) for k, b in MILAN_BYTES.items()}
        assert ref.expect == {
            "measurement": policy.measurement,
            "host_data": policy.host_data,
            "policy": policy.policy,
            "vmpl": policy.vmpl.value,
            "min_tcb": {k: v for k, v in lowest.items() if v},
        }
        assert ref.expect["min_tcb"] == {"bl": 4, "snp": 23, "ucode": 213}
        not_audited = ref.provenance["not_audited"]
        assert not_audited["policy.platform_info"] == policy.platform_info.value == 37
        assert not_audited["policy.minimum_version"] == "1.55"
    else:
        body = message.policy.td_quote_body_policy
        assert ref.expect == {
            "measurement": body.mr_td,
            "td_attributes": int.from_bytes(body.td_attributes, "little"),
            "xfam": int.from_bytes(body.xfam, "little"),
            "rtmrs": dict(enumerate(body.rtmrs)),
        }
        qe_vendor = message.policy.header_policy.qe_vendor_id.hex()
        assert ref.provenance["not_audited"] == {"policy.header_policy.qe_vendor_id": qe_vendor}


def test_textproto_and_protojson_examples_say_the_same() -> None:
    for tool in ("sev", "tdx"):
        text, js = (gp.read(EXAMPLES[f"{tool}-{kind}"].read_bytes()) for kind in ("text", "json"))
        assert text == js


def test_tdx_example_holds_the_cos113_quote() -> None:
    # TDX quote v4: 48-byte header (QE_VENDOR_ID at 12), then the TD report body.
    quote = COS113_QUOTE.read_bytes()
    body = quote[48:]
    [ref] = gp.read(EXAMPLES["tdx-text"].read_bytes())
    assert ref.expect["td_attributes"] == int.from_bytes(body[120:128], "little")
    assert ref.expect["xfam"] == int.from_bytes(body[128:136], "little")
    assert ref.expect["measurement"] == body[136:184]
    assert ref.expect["rtmrs"] == {n: body[328 + 48 * n : 376 + 48 * n] for n in range(4)}
    assert ref.provenance["not_audited"]["policy.header_policy.qe_vendor_id"] == quote[12:28].hex()


# ---- round trips over generated references ---------------------------------------------------

MILAN_SIGNATURE, GENOA_SIGNATURE, TURIN_SIGNATURE = "0xa00f11", "0xa10f11", "0xb00f21"
LAYOUTS = {None: MILAN_BYTES, MILAN_SIGNATURE: MILAN_BYTES, GENOA_SIGNATURE: MILAN_BYTES}
LAYOUTS[TURIN_SIGNATURE] = TURIN_BYTES


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


@st.composite
def snp_references(draw: st.DrawFn) -> Reference:
    signature = draw(st.sampled_from(list(LAYOUTS)))
    fmc_alone = signature is None and draw(st.booleans())  # an FMC minimum alone says Turin
    layout = TURIN_BYTES if fmc_alone else LAYOUTS[signature]
    expect = draw(
        optional(
            measurement=st.binary(min_size=48, max_size=48),
            host_data=st.binary(min_size=32, max_size=32),
            report_data=st.binary(min_size=64, max_size=64),
            family_id=st.binary(min_size=16, max_size=16),
            image_id=st.binary(min_size=16, max_size=16),
            vmpl=st.integers(0, 3),
            min_guest_svn=st.integers(1, 2**32 - 1),
            id_key_digest=st.binary(min_size=48, max_size=48),
            author_key_digest=st.binary(min_size=48, max_size=48),
            min_tcb=st.dictionaries(
                st.sampled_from(list(layout)), st.integers(1, 255), min_size=1
            ),
        )
    )
    if fmc_alone:
        expect["min_tcb"] = {**expect.get("min_tcb", {}), "fmc": draw(st.integers(1, 255))}
    expect["policy"] = draw(st.integers(0, 2**64 - 1)) | 1 << 17
    config = {} if signature is None else {"cpu_signature": signature}
    return Reference(Technology.SEV_SNP, expect, config, {"tool": "test"})


def td_references() -> st.SearchStrategy[Reference]:
    digest = st.binary(min_size=48, max_size=48)
    expect = optional(
        measurement=digest,
        td_attributes=st.integers(0, 2**64 - 1),
        xfam=st.integers(0, 2**64 - 1),
        mrconfigid=digest,
        mrowner=digest,
        mrownerconfig=digest,
        mrseam=digest,
        rtmrs=st.dictionaries(st.integers(0, 3), digest, min_size=1),
        min_tee_tcb_svn=st.binary(min_size=16, max_size=16),
        report_data=st.binary(min_size=64, max_size=64),
        allow_debug=st.just(True),
    )
    return st.builds(lambda e: Reference(Technology.TDX, e, {"point": 1}, {}), expect)


@settings(FUZZ, max_examples=300)
@given(st.one_of(snp_references(), td_references()), st.booleans())
def test_round_trip(pb: SimpleNamespace, ref: Reference, text: bool) -> None:
    both(pb, [ref])  # protobuf reads both encodings, to the same message
    [back] = gp.read(gp.write([ref], PublishOptions(text=text)))
    assert (back.technology, back.expect) == (ref.technology, ref.expect)


@settings(FUZZ, max_examples=100)
@given(td_references(), st.lists(st.binary(min_size=48, max_size=48), min_size=2, max_size=9))
def test_td_matrix_round_trip(pb: SimpleNamespace, base: Reference, mrtds: list[bytes]) -> None:
    refs = [base._replace(expect={**base.expect, "measurement": m}) for m in mrtds]
    distinct = list(dict.fromkeys(mrtds))
    assert list(both(pb, refs).policy.td_quote_body_policy.any_mr_td) == (
        distinct if len(distinct) > 1 else []
    )
    back = gp.read(gp.write(refs, JSON))
    assert [r.expect for r in back] == [{**base.expect, "measurement": m} for m in distinct]


# ---- malformed documents -------------------------------------------------------------------


def error_of(data: bytes) -> str:
    with pytest.raises(ProfileError) as e:
        gp.read(data)
    message = str(e.value)
    assert "\n" not in message
    return message


DEEP_JSON = b'{"policy": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "policy: missing or empty"),
        (b'{"policy": {}}', "policy: missing or empty"),
        (b'policy { policy: "x" }', "policy.policy (textproto line 1): expected an integer"),
        (b'{"policy": {"policy": true}}', "policy.policy: expected an integer"),
        (b'{"policy": {"vmpl": -1}}', "policy.vmpl: expected an integer 0..2^32-1"),
        (b'{"policy": {"measurement": "!!"}}', "policy.measurement: not base64"),
        (b'{"policy": {"measurement": "AAAA"}}', "policy.measurement: expected 48 bytes, got 3"),
        (b"policy { bogus: 1 }", "policy.bogus: not a field of check.Policy"),
        (b'{"policy": {"a\\nb": 1}}', "policy.a\\nb: not a field of check.Policy"),
        (b"policy { policy: 1 policy: 2 }", "policy.policy: given 2 times"),
        (b'{"policy": {"policy": "1", "policy": "2"}}', "policy: given twice"),
        (b"policy { vmpl { value: 4 } }", "policy.vmpl: expected 0..3, got 4"),
        (b"policy { policy: 18446744073709551616 }", "expected an integer 0..2^64-1"),
        (b"policy { policy: " + b"9" * 5000 + b" }", "textproto line 1: not an integer"),
        (b'{"policy": {"policy": ' + b"9" * 5000 + b"}}", "document: Exceeds the limit"),
        (b'policy { measurement: "\\777" }', "octal escape \\777 is over 255"),
        (b'policy { measurement: "abc }', "textproto line 1: unexpected"),
        (b"policy { measurement: 'a\\qb' }", "unknown escape \\q"),
        (b"policy {" * 50, "messages nested too deeply"),
        (b"policy { policy: 1", "textproto line 1: expected a field name or '}', got the end"),
        (b"policy { product { name: SEV_PRODUCT_ZEN } }", "expected one of SEV_PRODUCT_UNKNOWN"),
        (b"\xff\xfe", "document: not UTF-8 (byte 0)"),
        (b"[1, 2]", "document: expected a JSON object with a policy"),
        (b'{"policy": {"policy": 1', "JSON line 1 column 24"),
        (DEEP_JSON, "document: nested too deeply"),
        (b"{" * 100_000, "JSON line 1 column 2: Expecting property name"),
        (
            b" " * (gp.MAX_DOCUMENT_SIZE + 1),
            "document: 4194305 bytes; a policy document is at most",
        ),
        (b"x: 1 " * 300_000, "too many tokens"),
        (
            b"policy { td_quote_body_policy { rtmrs: ['', '', ''] } }",
            "policy.td_quote_body_policy.rtmrs: expected 4 entries (or none), got 3",
        ),
        (
            b"policy { td_quote_body_policy { mr_td: '"
            + b"a" * 48
            + b"' any_mr_td: '"
            + b"b" * 48
            + b"' } }",
            "any_mr_td: does not hold mr_td",
        ),
        (b"policy { require_id_block: true }", "policy.require_id_block: set, but no trusted"),
        (
            b"policy { require_id_block: true trusted_id_keys: 'x' }",
            "policy.trusted_id_keys: certificates are not read",
        ),
        (
            b"root_of_trust { product_line: 'Zen' } policy { minimum_tcb: 1 }",
            "root_of_trust.product_line: expected one of Milan, Genoa, Turin",
        ),
    ],
)
def test_malformed_documents_name_where(data: bytes, message: str) -> None:
    assert message in error_of(data)


def never_a_traceback(data: bytes) -> None:
    try:
        refs = gp.read(data)
    except CvmlaunchError as e:
        assert "\n" not in str(e)
    else:
        assert all(isinstance(r, Reference) for r in refs)
    gp.looks_like(data)  # never raises


def our_documents() -> list[bytes]:
    refs = [snp(measurement=bytes(range(48)), min_tcb={"bl": 1}, vmpl=0, id_key_digest=b"k" * 48)]
    refs.append(td(measurement=b'"\\' * 24, rtmrs={1: b"\n" * 48}, xfam=0x602E7))
    return [gp.write([r], o) for r in refs for o in (TEXT, JSON)]


def test_every_truncation_reads_or_fails_cleanly() -> None:
    for data in [p.read_bytes() for p in EXAMPLES.values()] + our_documents():
        for end in range(len(data)):
            never_a_traceback(data[:end])


@pytest.mark.fuzz
@settings(FUZZ, max_examples=2000)
@given(
    st.sampled_from([p.read_bytes() for p in EXAMPLES.values()]),
    st.lists(st.tuples(st.integers(0, 4000), st.binary(max_size=8), st.integers(0, 8))),
)
def test_mutated_documents_read_or_fail_cleanly(
    pb: SimpleNamespace, data: bytes, edits: list[tuple[int, bytes, int]]
) -> None:
    for at, insert, cut in edits:
        pos = at % (len(data) + 1)
        data = data[:pos] + insert + data[pos + cut :]
    never_a_traceback(data)
    try:
        refs = gp.read(data)
    except CvmlaunchError:
        return
    # What we read, protobuf reads too (we are never laxer), and to the same digests.
    text = data.lstrip()[:1] not in (b"{", b"[")
    message = upstream(pb, refs[0].technology, data, text)
    if refs[0].technology is Technology.SEV_SNP:
        seen = {message.policy.measurement}
    else:
        body = message.policy.td_quote_body_policy
        seen = {body.mr_td} if body.mr_td else set(body.any_mr_td)
    assert {r.expect.get("measurement", b"") for r in refs} == (seen or {b""})


# ---- telling the documents apart ---------------------------------------------------------------


def test_looks_like_only_policy_documents() -> None:
    for data in [p.read_bytes() for p in EXAMPLES.values()] + our_documents():
        assert gp.looks_like(data)
    others = [
        json.dumps({"version": "0.1.0", "type": "sample", "payload": "e30="}).encode(),
        json.dumps({"policy": {}, "expiration": "2030-01-01T00:00:00Z"}).encode(),
        (ROOT / "profiles" / "debian-ovmf-qemu-snp.toml").read_bytes(),
        b"\xd9\x01\xf4\xa2\x00\x01",  # CBOR
        b"",
        b"{",
    ]
    assert not any(gp.looks_like(data) for data in others)
