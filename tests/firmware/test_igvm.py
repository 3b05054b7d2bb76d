"""IGVM parsing and its SEV-SNP launch digest: igvm-tooling's five files, small files built
here, refusals that name the header, hostile input, and `firmware inspect` on IGVM."""

from __future__ import annotations

import json
import struct
import zlib
from collections import Counter
from hashlib import sha384
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvmlaunch.abi import igvm as abi
from cvmlaunch.abi.igvm import PageDataFlags, PageDataType, PlatformType
from cvmlaunch.abi.igvm import VariableHeaderType as T
from cvmlaunch.abi.snp import LD_SIZE, ZERO_CONTENTS, PageType
from cvmlaunch.errors import CvmlaunchError, FirmwareError
from cvmlaunch.firmware.igvm import IgvmFile, parse_igvm
from cvmlaunch.measure.igvm import snp_launch_digest
from cvmlaunch.measure.snp import extend
from cvmlaunch.plan.igvm import snp_page_ops
from cvmlaunch.plan.step import StepKind
from tests.conftest import CliRunner

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "igvm"
EXPECTED = json.loads((VECTORS / "expected.json").read_text())
FILES = [e["file"] for e in EXPECTED]
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
PAGE = abi.IGVM_PAGE_SIZE
SNP = 0x1  # the SEV-SNP platform's mask bit in the files built here


def fixture(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


# -- a small IGVM writer for tests -----------------------------------------------------------


def platform(mask: int = SNP, kind: int = PlatformType.SEV_SNP) -> tuple[int, bytes]:
    return T.SUPPORTED_PLATFORM, abi.SUPPORTED_PLATFORM.pack(mask, 0, kind, 1, 0)


def policy(value: int = 0x30000, mask: int = SNP) -> tuple[int, bytes]:
    return T.GUEST_POLICY, abi.GUEST_POLICY.pack(value, mask, 0)


def page(
    gpa: int, file_offset: int = 0, flags: int = 0, kind: int = 0, mask: int = SNP
) -> tuple[int, bytes]:
    return T.PAGE_DATA, abi.PAGE_DATA.pack(gpa, mask, file_offset, flags, kind, 0)


def area(size: int = PAGE, index: int = 0) -> tuple[int, bytes]:
    return T.PARAMETER_AREA, abi.PARAMETER_AREA.pack(size, index, 0)


def insert(gpa: int, index: int = 0, mask: int = SNP) -> tuple[int, bytes]:
    return T.PARAMETER_INSERT, abi.PARAMETER_INSERT.pack(gpa, mask, index)


def vp_context(gpa: int, file_offset: int, mask: int = SNP) -> tuple[int, bytes]:
    return T.VP_CONTEXT, abi.VP_CONTEXT.pack(gpa, mask, file_offset, 0, 0)


def build(headers: list[tuple[int, bytes]], file_data: bytes = b"", pad: bytes = b"\0") -> bytes:
    """An IGVM v1 file of `headers` and then `file_data`, with a correct checksum. A non-zero
    file_offset of a PAGE_DATA or VP_CONTEXT counts from the start of `file_data` (0 still
    means "no data", so tests start their file data with a spare byte)."""
    start = data_offset(headers)
    body = bytearray()
    layouts = {T.PAGE_DATA: abi.PAGE_DATA, T.VP_CONTEXT: abi.VP_CONTEXT}
    for kind, payload in headers:
        layout = layouts.get(kind)  # type: ignore[call-overload]
        if layout is not None and len(payload) == layout.size:
            fields = list(layout.unpack(payload))
            fields[2] = (fields[2] + start) % (1 << 32) if fields[2] else 0
            payload = layout.pack(*fields)  # noqa: PLW2901
        entry = abi.VARIABLE_HEADER.pack(kind, len(payload)) + payload
        body += entry + pad * (-len(entry) % 8)
    total = start + len(file_data)
    fixed = abi.FIXED_HEADER_V1.pack(abi.IGVM_MAGIC, 1, 24, len(body), total, 0)
    crc = zlib.crc32(fixed + body)
    fixed = abi.FIXED_HEADER_V1.pack(abi.IGVM_MAGIC, 1, 24, len(body), total, crc)
    return fixed + bytes(body) + file_data


def data_offset(headers: list[tuple[int, bytes]]) -> int:
    return 24 + sum(8 + len(p) + (-(8 + len(p)) % 8) for _, p in headers)


def vmsa_page() -> bytes:
    return bytes(range(256)) * 16


# -- the five igvm-tooling files ---------------------------------------------------------------


@pytest.mark.parametrize("entry", EXPECTED, ids=FILES)
def test_fixture_measures_to_igvm_tooling_digest(entry: dict[str, object]) -> None:
    igvm = parse_igvm(fixture(str(entry["file"])))
    digest = snp_launch_digest(igvm).hex()
    assert digest == entry["igvm_tooling_launch_digest"]
    block = igvm.snp_id_block
    assert block is not None and block.ld.hex() == digest  # igvm-tooling signs what it measured


@pytest.mark.parametrize("name", FILES)
def test_fixture_header_facts(name: str) -> None:
    igvm = parse_igvm(fixture(name))
    counts = Counter(h.name for h in igvm.headers)
    pages = counts.pop("PAGE_DATA")
    assert counts == dict.fromkeys(
        ["SUPPORTED_PLATFORM", "GUEST_POLICY", "PARAMETER_AREA", "VP_COUNT_PARAMETER",
         "MEMORY_MAP", "PARAMETER_INSERT", "VP_CONTEXT", "SNP_ID_BLOCK"], 1,
    )  # fmt: skip
    assert pages == {"test_bzImage.igvm": 145, "test_bzImage_x64.igvm": 371,
                     "test_bzImage_noopt.igvm": 7060, "test_elf.igvm": 362,
                     "test_elf_x64.igvm": 364}[name]  # fmt: skip
    assert igvm.format_version == 1 and igvm.total_file_size == len(fixture(name))
    (snp,) = igvm.platforms
    assert (snp.platform_type, snp.compatibility_mask, snp.highest_vtl) == (2, 1, 2)
    assert igvm.platform_mask(PlatformType.SEV_SNP) == 1
    assert igvm.platform_mask(PlatformType.TDX) is None
    assert igvm.snp_policy == 0x3001F
    ops = snp_page_ops(igvm)
    (vmsa,) = [op for op in ops if op.kind is StepKind.VMSA]
    assert (vmsa.gpa, vmsa.page_type, vmsa.state, len(vmsa.data or b"")) == (
        0x803000, PageType.VMSA, None, PAGE)  # fmt: skip
    by_gpa = {op.gpa: op for op in ops}
    assert by_gpa[0x800000].page_type is PageType.CPUID and by_gpa[0x800000].data is None
    assert by_gpa[0x801000].page_type is PageType.SECRETS
    assert by_gpa[0x802000].page_type is PageType.UNMEASURED
    assert by_gpa[0x802000].label.endswith("PARAMETER_INSERT")
    assert all(op.kind is StepKind.FIRMWARE for op in ops if op is not vmsa)


# -- small files: the digest rules ------------------------------------------------------------


def test_rules_on_a_small_file() -> None:
    """Each directive kind measured as the SNP firmware sees it, checked step by step."""
    ones, vmsa = b"\x01" * PAGE, vmsa_page()
    headers = [
        platform(), platform(0x2, PlatformType.TDX), policy(0x30000),
        page(0x1000, file_offset=1), page(0x2000),
        page(0x3000, file_offset=1, flags=PageDataFlags.UNMEASURED),
        page(0x4000, kind=PageDataType.SECRETS), page(0x5000, kind=PageDataType.CPUID_XF),
        page(0x6000, mask=0x2),  # TDX only: not part of the SNP launch
        area(2 * PAGE), insert(0x10000), vp_context(0x20000, file_offset=1 + PAGE),
    ]  # fmt: skip
    igvm = parse_igvm(build(headers, b"\0" + ones + vmsa))
    ld = bytes(LD_SIZE)
    for gpa, contents, kind in [
        (0x1000, sha384(ones).digest(), PageType.NORMAL),
        (0x2000, sha384(bytes(PAGE)).digest(), PageType.NORMAL),
        (0x3000, ZERO_CONTENTS, PageType.UNMEASURED), (0x4000, ZERO_CONTENTS, PageType.SECRETS),
        (0x5000, ZERO_CONTENTS, PageType.CPUID), (0x10000, ZERO_CONTENTS, PageType.UNMEASURED),
        (0x11000, ZERO_CONTENTS, PageType.UNMEASURED),
        (0x20000, sha384(vmsa).digest(), PageType.VMSA),
    ]:  # fmt: skip
        ld = extend(ld, contents, kind, gpa)
    assert snp_launch_digest(igvm) == ld
    assert [op.label for op in snp_page_ops(igvm)][-2:] == [
        "igvm header 10 PARAMETER_INSERT", "igvm header 11 VP_CONTEXT"]  # fmt: skip


def test_page_with_data_and_native_zero() -> None:
    contents = b"\x5a" * PAGE
    headers = [platform(), page(0x1000), page(0x2000, file_offset=1)]
    raw = build(headers, b"\0" + contents)
    igvm = parse_igvm(raw)
    first = extend(bytes(LD_SIZE), sha384(bytes(PAGE)).digest(), PageType.NORMAL, 0x1000)
    measured = extend(first, sha384(contents).digest(), PageType.NORMAL, 0x2000)
    assert snp_launch_digest(igvm) == measured
    # QEMU's loader hands data-less pages to KVM as SNP ZERO pages.
    native = extend(bytes(LD_SIZE), ZERO_CONTENTS, PageType.ZERO, 0x1000)
    native = extend(native, sha384(contents).digest(), PageType.NORMAL, 0x2000)
    assert snp_launch_digest(igvm, native_zero=True) == native


def test_shared_and_2mb_pages_follow_qemu() -> None:
    """SHARED pages are measured (QEMU ignores the flag); a 2 MiB page is 512 4 KiB pages."""
    headers = [platform(), page(0x200000, flags=PageDataFlags.IS_2MB_PAGE),
               page(0x400000, flags=PageDataFlags.SHARED)]  # fmt: skip
    igvm = parse_igvm(build(headers))
    ld = bytes(LD_SIZE)
    zero = sha384(bytes(PAGE)).digest()
    for gpa in [*range(0x200000, 0x400000, PAGE), 0x400000]:
        ld = extend(ld, zero, PageType.NORMAL, gpa)
    assert snp_launch_digest(igvm) == ld


def test_padding_with_ascii_zero_is_accepted() -> None:
    headers = [platform(), policy(), vp_context(0x1000, file_offset=1)]
    a = parse_igvm(build(headers, b"\0" + vmsa_page(), pad=b"\0"))
    b = parse_igvm(build(headers, b"\0" + vmsa_page(), pad=b"0"))
    assert snp_launch_digest(a) == snp_launch_digest(b)


def test_unknown_optional_header_is_ignored() -> None:
    headers = [platform(), (0x80000999, b"\xaa" * 12), page(0x1000)]
    igvm = parse_igvm(build(headers))
    assert igvm.headers[1].body is None and igvm.headers[1].name == "0x80000999"
    assert len(snp_page_ops(igvm)) == 1


def test_layout_sizes() -> None:
    sizes = {T.SUPPORTED_PLATFORM: 16, T.GUEST_POLICY: 16, T.PARAMETER_AREA: 16,
             T.PAGE_DATA: 24, T.PARAMETER_INSERT: 16, T.VP_CONTEXT: 20, T.REQUIRED_MEMORY: 24,
             T.ERROR_RANGE: 16, T.SNP_ID_BLOCK: 696, T.MEMORY_MAP: 8}  # fmt: skip
    assert {k: abi.PAYLOAD_SIZE[k] for k in sizes} == sizes
    assert (abi.FIXED_HEADER_V1.size, abi.FIXED_HEADER_V2.size) == (24, 32)
    assert struct.pack("<I", abi.IGVM_MAGIC) == abi.IGVM_MAGIC_BYTES


# -- refusals name the header and its offset --------------------------------------------------


def refusal(raw: bytes, measure: bool = False) -> str:
    with pytest.raises(FirmwareError) as e:
        igvm = parse_igvm(raw)
        if measure:
            snp_launch_digest(igvm)
    assert "\n" not in str(e.value)
    return str(e.value)


# The first header starts at 0x18; each of these is 0x18 or 0x20 bytes long.
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([platform(), (0x999, b"")], "IGVM header 1 (0x999): unknown header type, not marked optional (at file offset 0x30)"),  # noqa: E501
        ([platform(), page(0x1000, file_offset=0x7000)], "IGVM header 1 (PAGE_DATA): page data at file_offset"),  # noqa: E501
        ([platform(), page(0x1001)], "IGVM header 1 (PAGE_DATA): gpa 0x1001 is not 0x1000-aligned (at file offset 0x30)"),  # noqa: E501
        ([platform(), page(0x1000, flags=8)], "IGVM header 1 (PAGE_DATA): flags 0x8 has reserved bits (at file offset 0x30)"),  # noqa: E501
        ([platform(), page(0x1000, mask=0x4)], "IGVM header 1 (PAGE_DATA): compatibility_mask 0x4 names no supported platform"),  # noqa: E501
        ([platform(), page(0x1000), policy()], "IGVM header 2 (GUEST_POLICY): initialization section header after the directive section (at file offset 0x50)"),  # noqa: E501
        ([platform(), insert(0x1000)], "IGVM header 1 (PARAMETER_INSERT): parameter_area_index 0 is not declared before (at file offset 0x30)"),  # noqa: E501
        ([platform(), area(), insert(0x1000), insert(0x3000)], "IGVM header 3 (PARAMETER_INSERT): parameter_area_index 0 is already inserted"),  # noqa: E501
        ([platform(), (T.PAGE_DATA, b"\0" * 16)], "IGVM header 1 (PAGE_DATA): length 0x10, expected 0x18 (at file offset 0x30)"),  # noqa: E501
        ([platform(), (T.RELOCATABLE_REGION, b"\0" * 48)], "IGVM header 1 (RELOCATABLE_REGION): not supported"),  # noqa: E501
        ([platform(), platform(0x2, PlatformType.TDX), vp_context(0x1000, 0, mask=0x2)], "IGVM header 2 (VP_CONTEXT): a VP context for TDX"),  # noqa: E501
    ],
)  # fmt: skip
def test_refusal_names_header_and_offset(headers: list[tuple[int, bytes]], expected: str) -> None:
    assert refusal(build(headers)).startswith(expected)


def test_refusal_of_a_page_measured_twice() -> None:
    raw = build([platform(), page(0x1000), page(0x1000)])
    message = refusal(raw, measure=True)
    assert message == ("IGVM header 2 (PAGE_DATA): gpa 0x1000 was already populated by header 1 "
                       "(PAGE_DATA) (at file offset 0x50)")  # fmt: skip


def test_refusal_of_fixed_header_faults() -> None:
    raw = bytearray(fixture("test_bzImage.igvm"))
    raw[0x100] ^= 1
    assert refusal(bytes(raw)).startswith("IGVM checksum is 0x04db92e6, the headers' CRC-32 is")
    assert "(at file offset 0x10)" in refusal(fixture("test_bzImage.igvm")[:-1])
    assert refusal(b"MVGI" + bytes(20)) == "not an IGVM file: no IGVM magic (at file offset 0x0)"
    bad_pad = bytearray(fixture("test_bzImage.igvm"))
    bad_pad[0x10D8 + 8 + 20] = ord("1")  # VP_CONTEXT's padding
    bad_pad[20:24] = struct.pack("<I", zlib.crc32(bytes(bad_pad[:20]) + bytes(4) + bytes(bad_pad[24 : 24 + 5504])))  # fmt: skip  # noqa: E501
    assert refusal(bytes(bad_pad)) == ("IGVM header 136 (VP_CONTEXT): padding 31303030 is neither "
                                       "zeros nor ASCII '0' (at file offset 0x10d8)")  # fmt: skip


def test_no_snp_platform_is_refused_when_measured() -> None:
    raw = build([platform(0x1, PlatformType.TDX), page(0x1000)])
    assert refusal(raw, measure=True) == "IGVM file has no SUPPORTED_PLATFORM header for SEV-SNP"


# -- hostile input: only our errors escape -----------------------------------------------------


def parse_and_measure(raw: bytes) -> None:
    try:
        igvm: IgvmFile = parse_igvm(raw)
        snp_launch_digest(igvm)
    except CvmlaunchError:
        pass


SMALL_HEADERS = [
    platform(), policy(), page(0x1000, file_offset=1), area(),
    (T.VP_COUNT_PARAMETER, abi.PARAMETER.pack(0, 0)), insert(0x2000),
    vp_context(0x3000, file_offset=1), page(0x4000),
]  # fmt: skip
SMALL = build(SMALL_HEADERS, b"\0" + vmsa_page())


@pytest.mark.fuzz
@settings(FUZZ, max_examples=300)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(raw: bytes) -> None:
    parse_and_measure(raw)
    parse_and_measure(abi.IGVM_MAGIC_BYTES + raw)


def _refresh_checksum(raw: bytearray) -> bytes:
    if len(raw) >= 24:
        end = min(len(raw), 24 + struct.unpack_from("<I", raw, 12)[0])
        raw[20:24] = struct.pack("<I", zlib.crc32(bytes(raw[:20]) + bytes(4) + bytes(raw[24:end])))
    return bytes(raw)


@pytest.mark.fuzz
@settings(FUZZ, max_examples=300)
@given(
    st.sampled_from([SMALL, fixture("test_bzImage.igvm")]),
    st.lists(st.tuples(st.integers(0, 0x1600), st.integers(0, 7)), max_size=4),
    st.lists(st.tuples(st.integers(0, 0x1600), st.integers(0, 0xFFFFFFFF)), max_size=3),
    st.one_of(st.none(), st.integers(0, 0x2000)),
    st.booleans(),
)
def test_fuzz_mutated_files(
    base: bytes,
    flips: list[tuple[int, int]],
    words: list[tuple[int, int]],
    cut: int | None,
    fix_crc: bool,
) -> None:
    """Bit flips, u32 overwrites (offsets, lengths, types) and truncations, with the checksum
    made right again half the time so the mutation reaches the header walk."""
    raw = bytearray(base)
    for offset, bit in flips:
        if offset < len(raw):
            raw[offset] ^= 1 << bit
    for offset, value in words:
        if offset + 4 <= len(raw):
            struct.pack_into("<I", raw, offset, value)
    if cut is not None:
        del raw[cut:]
    parse_and_measure(_refresh_checksum(raw) if fix_crc else bytes(raw))


_HEADER_KINDS = [T.SUPPORTED_PLATFORM, T.GUEST_POLICY, T.PAGE_DATA, T.PARAMETER_AREA,
                 T.PARAMETER_INSERT, T.VP_CONTEXT, T.REQUIRED_MEMORY, T.SNP_ID_BLOCK,
                 T.ERROR_RANGE, T.MEMORY_MAP, T.VP_COUNT_PARAMETER, 0x80000777]  # fmt: skip
_small = st.sampled_from([0, 1, 2, 3, 4, 0x1000, 0x7FFFF000, 0xFFFFFFFF])
_gpa = st.sampled_from([0, 0x1000, 0x1000, 0x2000, 0x200000, 0x1001, 1 << 63])


@st.composite
def generated_header(draw: st.DrawFn) -> tuple[int, bytes]:
    kind = draw(st.sampled_from(_HEADER_KINDS))
    size = abi.PAYLOAD_SIZE.get(kind, 8)  # type: ignore[call-overload]
    if draw(st.integers(0, 9)) == 0:
        size = draw(st.integers(0, 40))  # a wrong length now and then
    fields: list[int] = []
    for _ in range(6):
        fields.append(draw(st.one_of(_small, _gpa)))
    payload = b"".join(struct.pack("<Q", f & (1 << 64) - 1) for f in fields)
    if kind in (T.PAGE_DATA, T.VP_CONTEXT, T.PARAMETER_INSERT, T.REQUIRED_MEMORY):
        mask = draw(st.sampled_from([SNP, SNP, SNP, 2, 3, 0]))  # mostly the declared platform
        payload = struct.pack("<QI", draw(_gpa), mask) + payload
    elif kind == T.SUPPORTED_PLATFORM:
        payload = struct.pack("<IBBH", draw(st.sampled_from([1, 2, 4, 3])), 2,
                              draw(st.integers(0, 6)), 1) + payload  # fmt: skip
    return kind, (payload + bytes(size))[:size]


@pytest.mark.fuzz
@settings(FUZZ, max_examples=300)
@given(st.lists(generated_header(), max_size=12), st.binary(max_size=PAGE + 64))
def test_fuzz_generated_files(headers: list[tuple[int, bytes]], file_data: bytes) -> None:
    """Well-formed containers with random headers, so the checks past the checksum run."""
    parse_and_measure(build([platform(), *headers], file_data))


# -- firmware inspect --------------------------------------------------------------------------


def test_inspect_igvm(cli: CliRunner) -> None:
    path = VECTORS / "test_elf.igvm"
    digest = EXPECTED[FILES.index("test_elf.igvm")]["igvm_tooling_launch_digest"]
    r = cli("firmware", "inspect", path)
    assert r.code == 0 and r.err == ""
    assert f"sev-snp launch digest: {digest}" in r.out
    assert "VP_CONTEXT           gpa=0x803000" in r.out
    doc = json.loads(cli("firmware", "inspect", path, "--json").out)
    assert {
        "format",
        "format_version",
        "total_file_size",
        "checksum",
        "headers",
        "sev_snp",
    } <= doc.keys()
    assert doc["sev_snp"] == {"launch_digest": digest, "policy": "0x3001f",
                              "id_block_ld": digest, "id_block_ld_matches": True}  # fmt: skip
    first = doc["headers"][0]
    assert (first["index"], first["offset"], first["name"], first["platform_type"]) == (
        0, 0x18, "SUPPORTED_PLATFORM", "SEV_SNP")  # fmt: skip


def test_inspect_truncated_igvm(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "short.igvm"
    path.write_bytes(fixture("test_elf.igvm")[:5000])
    r = cli("firmware", "inspect", path)
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and "total_file_size" in r.err


def test_a_vp_context_without_its_vmsa_is_refused_naming_it() -> None:
    # Through the API an IgvmFile can be put together without what the parser reads.
    igvm = parse_igvm((VECTORS / "test_elf.igvm").read_bytes())
    headers = []
    for h in igvm.headers:
        body = h.body._replace(data=None) if isinstance(h.body, abi.VpContext) else h.body
        headers.append(h.__class__(h.index, h.offset, h.type, h.length, body))
    with pytest.raises(FirmwareError, match=r"^IGVM header \d+ \(VP_CONTEXT\): no VMSA data"):
        snp_page_ops(igvm._replace(headers=tuple(headers)))
