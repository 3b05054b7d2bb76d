"""The measurement engines, each against the same computation written out by hand here:
the SNP PAGE_INFO chain (measure/snp.py), the SEV stream and LAUNCH_MEASURE HMAC
(measure/sev.py) and the MRTD records (measure/tdx.py)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmlaunch.abi.snp import KVM_VMSA_GPA, PAGE_INFO_OFFSETS, PageType
from cvmlaunch.abi.tdx import TdvfSectionType
from cvmlaunch.firmware.tdvf import TdvfMetadata
from cvmlaunch.guest.spec import (
    BootFile,
    CpuSpec,
    DirectBoot,
    GuestSpec,
    PageOrder,
    SevLaunchSecretInputs,
    TdConfig,
    Technology,
)
from cvmlaunch.measure.sev import launch_measure, sev_digest
from cvmlaunch.measure.snp import extend, snp_digest, update
from cvmlaunch.measure.tdx import mrtd
from cvmlaunch.plan.ops import LaunchPlan, PageOp, TdPageOp, TdPlan
from cvmlaunch.plan.sev import build_sev_plan
from cvmlaunch.plan.step import Step, StepKind, TdAction
from tests.conftest import SNP_VECTORS

PAGE = 0x1000
AMD_SEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"
BOOT = DirectBoot(BootFile(sha256=b"k" * 32), BootFile(sha256=b"i" * 32), "quiet")


def _pages(count: int, seed: bytes = b"") -> bytes:
    """`count` pages, each different from the others."""
    return b"".join(hashlib.sha512(seed + bytes([n])).digest() * 64 for n in range(count))


# ---- SEV-SNP -------------------------------------------------------------------------------


def _page_info(ld: bytes, contents: bytes, page_type: int, gpa: int) -> bytes:
    """PAGE_INFO written field by field at the offsets of the SNP ABI table (abi/snp.py):
    LENGTH is the structure's own size, 0x70; IMI_PAGE and the VMPL permissions are 0."""
    at = PAGE_INFO_OFFSETS
    info = bytearray(0x70)
    info[at["DIGEST_CUR"] : at["CONTENTS"]] = ld
    info[at["CONTENTS"] : at["LENGTH"]] = contents
    info[at["LENGTH"] : at["PAGE_TYPE"]] = (0x70).to_bytes(2, "little")
    info[at["PAGE_TYPE"]] = page_type
    info[at["GPA"] :] = gpa.to_bytes(8, "little")
    return bytes(info)


def _extend(ld: bytes, contents: bytes, page_type: int, gpa: int) -> bytes:
    return hashlib.sha384(_page_info(ld, contents, page_type, gpa)).digest()


@pytest.mark.parametrize("page_type", list(PageType))
@pytest.mark.parametrize("gpa", [0, 0x80D000, 0xFFFFF000, KVM_VMSA_GPA])
def test_extend_is_sha384_of_page_info(page_type: PageType, gpa: int) -> None:
    ld = hashlib.sha384(b"previous").digest()
    contents = hashlib.sha384(b"page").digest()
    assert extend(ld, contents, page_type, gpa) == _extend(ld, contents, page_type, gpa)


def test_update_appends_one_step_per_page_chaining_extend() -> None:
    data = _pages(3)
    op = PageOp(StepKind.FIRMWARE, 0xFFFFD000, 3 * PAGE, PageType.NORMAL, data, "firmware")
    start = hashlib.sha384(b"start").digest()
    trace: list[Step] = [Step(0, StepKind.MAP_MEMORY, "earlier", 0)]
    ld = update(start, op, trace)
    expected = start
    assert len(trace) == 4
    for n, step in enumerate(trace[1:]):
        gpa = op.gpa + n * PAGE
        contents = hashlib.sha384(data[n * PAGE : (n + 1) * PAGE]).digest()
        expected = _extend(expected, contents, PageType.NORMAL, gpa)
        assert (step.number, step.gpa, step.size) == (n + 1, gpa, PAGE)
        assert (step.contents, step.digest, step.file_offset) == (contents, expected, n * PAGE)
    assert ld == expected
    assert update(start, op, None) == expected  # the untraced path agrees


@pytest.mark.parametrize(
    "page_type", [PageType.ZERO, PageType.UNMEASURED, PageType.SECRETS, PageType.CPUID]
)
@pytest.mark.parametrize("data", [None, _pages(2, b"ignored")])
def test_unmeasured_page_types_use_zero_contents(page_type: PageType, data: bytes | None) -> None:
    op = PageOp(StepKind.SEV_METADATA, 0x800000, 2 * PAGE, page_type, data, "s", section=0)
    trace: list[Step] = []
    ld = update(bytes(48), op, trace)
    expected = _extend(bytes(48), bytes(48), page_type, 0x800000)
    expected = _extend(expected, bytes(48), page_type, 0x801000)
    assert ld == expected
    assert [s.contents for s in trace] == [bytes(48)] * 2
    assert [s.section for s in trace] == [0, 0]


def test_vmsa_page_contents_are_measured() -> None:
    page = _pages(1, b"vmsa")
    op = PageOp(StepKind.VMSA, KVM_VMSA_GPA, PAGE, PageType.VMSA, page, "VMSA vCPU 0", vcpu=0)
    contents = hashlib.sha384(page).digest()
    assert update(bytes(48), op, None) == _extend(bytes(48), contents, 2, KVM_VMSA_GPA)


def _snp_plan(firmware_digest: bytes | None = None) -> LaunchPlan:
    cpu = CpuSpec(0x800F12)
    spec = GuestSpec(Technology.SEV_SNP, AMD_SEV, firmware_digest=firmware_digest, vcpus=2,
                     cpu=cpu, boot=BOOT)  # fmt: skip
    return build_sev_plan(spec)


def _chain(ops: tuple[PageOp, ...], ld: bytes = bytes(48)) -> bytes:
    for op in ops:
        for at in range(0, op.size, PAGE):
            measured = op.page_type in (PageType.NORMAL, PageType.VMSA)
            assert (op.data is not None) == measured
            page = op.data[at : at + PAGE] if op.data is not None else b""
            contents = hashlib.sha384(page).digest() if measured else bytes(48)
            ld = _extend(ld, contents, op.page_type, op.gpa + at)
    return ld


def test_snp_digest_chains_every_page_of_the_plan() -> None:
    plan = _snp_plan()
    digests = snp_digest(plan)
    assert digests.launch_digest == _chain(plan.ops)
    assert digests.firmware_digest == _chain(plan.ops[:1])
    assert plan.ops[0].kind is StepKind.FIRMWARE and len(plan.ops) == 10


def test_snp_digest_starts_from_a_given_firmware_digest() -> None:
    given = hashlib.sha384(b"published firmware digest").digest()
    plan = _snp_plan(firmware_digest=given)
    trace: list[Step] = []
    digests = snp_digest(plan, trace)
    assert digests.firmware_digest == given
    assert digests.launch_digest == _chain(plan.ops[1:], given)
    # One step stands for the whole firmware, then one per page of everything else.
    pages = sum(op.size // PAGE for op in plan.ops[1:])
    assert len(trace) == 1 + pages
    assert (trace[0].kind, trace[0].size, trace[0].digest) == (StepKind.FIRMWARE, PAGE, given)
    assert trace[-1].digest == digests.launch_digest


# ---- SEV and SEV-ES ------------------------------------------------------------------------


@pytest.mark.parametrize("technology", [Technology.SEV, Technology.SEV_ES])
def test_sev_digest_is_sha256_of_the_op_data_in_order(technology: Technology) -> None:
    cpu = CpuSpec(0x800F12) if technology is Technology.SEV_ES else None
    spec = GuestSpec(technology, AMD_SEV, vcpus=2, cpu=cpu, boot=BOOT)
    plan = build_sev_plan(spec)
    datas = [op.data for op in plan.ops if op.data is not None]
    assert len(datas) == len(plan.ops) == (4 if technology is Technology.SEV_ES else 2)
    trace: list[Step] = []
    assert sev_digest(plan, trace) == hashlib.sha256(b"".join(datas)).digest()
    assert [s.kind for s in trace] == [op.kind for op in plan.ops]
    for n, step in enumerate(trace):
        assert step.size == len(datas[n])
        assert step.contents == hashlib.sha256(datas[n]).digest()
        assert step.digest == hashlib.sha256(b"".join(datas[: n + 1])).digest()


def test_sev_digest_skips_ops_without_data() -> None:
    plan = build_sev_plan(GuestSpec(Technology.SEV, AMD_SEV))
    zero = PageOp(StepKind.SEV_METADATA, 0x800000, PAGE, PageType.ZERO, None, "zero")
    with_zero = plan._replace(ops=(zero, *plan.ops))
    assert sev_digest(with_zero) == hashlib.sha256(AMD_SEV.read_bytes()).digest()


@pytest.mark.parametrize(
    ("major", "minor", "build", "policy"), [(1, 55, 0x21, 0x10005), (0, 24, 13, 3)]
)
def test_launch_measure_is_the_hmac_of_the_sev_api_layout(
    major: int, minor: int, build: int, policy: int
) -> None:
    tik = bytes(range(16))
    mnonce = bytes(range(100, 116))
    ld = hashlib.sha256(b"launch").digest()
    # SEV API 55766 LAUNCH_MEASURE: 0x04 || API_MAJOR || API_MINOR || BUILD (one byte each)
    # || POLICY (u32 little-endian) || GCTX.LD || MNONCE, keyed with the TIK.
    message = bytes([0x04, major, minor, build]) + policy.to_bytes(4, "little") + ld + mnonce
    expected = hmac.new(tik, message, hashlib.sha256).digest()
    assert launch_measure(ld, policy, SevLaunchSecretInputs(tik, major, minor, build, mnonce)) == (
        expected
    )


# ---- TDX -----------------------------------------------------------------------------------


def _record(tag: bytes, gpa: int) -> bytes:
    """A 128-byte MRTD update block: the operation name zero-padded to 16 bytes, the GPA
    (u64 little-endian), 104 zero bytes."""
    return tag + bytes(16 - len(tag)) + gpa.to_bytes(8, "little") + bytes(104)


def _add(gpa: int) -> bytes:
    return _record(b"MEM.PAGE.ADD", gpa)


def _extend_page(gpa: int, page: bytes) -> bytes:
    return b"".join(
        _record(b"MR.EXTEND", gpa + at) + page[at : at + 256] for at in range(0, PAGE, 256)
    )


# Two extended pages with contents one and a half pages long, a plain page, two AUG pages.
_BFV = _pages(2, b"bfv")[: PAGE + PAGE // 2]
_TD_OPS = (
    TdPageOp(0xFFFFE000, 2 * PAGE, TdAction.PAGE_ADD_EXTEND, memoryview(_BFV), "bfv", 0,
             TdvfSectionType.BFV),
    TdPageOp(0x800000, PAGE, TdAction.PAGE_ADD, None, "temp", 1, TdvfSectionType.TEMP_MEM),
    TdPageOp(0x1000000, 2 * PAGE, TdAction.PAGE_AUG, None, "perm", 2, TdvfSectionType.PERM_MEM),
)  # fmt: skip
_PAGE_0 = _BFV[:PAGE]
_PAGE_1 = _BFV[PAGE:] + bytes(PAGE // 2)  # zero past the section's data
_STREAMS = {
    PageOrder.PAGE: _add(0xFFFFE000) + _extend_page(0xFFFFE000, _PAGE_0)
    + _add(0xFFFFF000) + _extend_page(0xFFFFF000, _PAGE_1) + _add(0x800000),
    PageOrder.SECTION: _add(0xFFFFE000) + _add(0xFFFFF000)
    + _extend_page(0xFFFFE000, _PAGE_0) + _extend_page(0xFFFFF000, _PAGE_1) + _add(0x800000),
}  # fmt: skip


def _td_plan(order: PageOrder) -> TdPlan:
    spec = GuestSpec(Technology.TDX, Path("td.bin"), td=TdConfig(page_order=order))
    return TdPlan(spec, 0, bytes(32), TdvfMetadata(0, "test", ()), _TD_OPS, None)


@pytest.mark.parametrize("order", list(PageOrder))
def test_mrtd_is_sha384_of_the_records(order: PageOrder) -> None:
    expected = hashlib.sha384(_STREAMS[order]).digest()
    assert mrtd(_td_plan(order)) == expected
    trace: list[Step] = []
    assert mrtd(_td_plan(order), trace) == expected
    # One step per record: 2 page adds and 32 chunk extends, then 1 page add.
    assert len(trace) == 35 and trace[-1].digest == expected
    kinds = [s.kind for s in trace]
    assert kinds.count(StepKind.PAGE_ADD) == 3 and kinds.count(StepKind.MR_EXTEND) == 32
    first_extend = kinds.index(StepKind.MR_EXTEND)
    assert first_extend == (1 if order is PageOrder.PAGE else 2)
    stream = _STREAMS[order]
    at = 0
    for n, step in enumerate(trace):
        at += 128 + (256 if step.kind is StepKind.MR_EXTEND else 0)
        assert step.number == n
        assert step.digest == hashlib.sha384(stream[:at]).digest()
    assert at == len(stream)
    assert [s.gpa for s in trace if s.kind is StepKind.MR_EXTEND][:2] == [0xFFFFE000, 0xFFFFE100]
    assert not any(0x1000000 <= s.gpa < 0x1002000 for s in trace)  # AUG pages: not measured


def test_mrtd_orders_differ() -> None:
    assert mrtd(_td_plan(PageOrder.PAGE)) != mrtd(_td_plan(PageOrder.SECTION))


@st.composite
def _td_ops(draw: st.DrawFn) -> tuple[TdPageOp, ...]:
    """Sections of up to 70 pages (several of the engine's blocks, and a part block), data
    shorter than, as long as or longer than the section, each kind of action."""
    ops = []
    gpa = 0x100000
    for index in range(draw(st.integers(1, 4))):
        pages = draw(st.integers(1, 70))
        action = draw(st.sampled_from(list(TdAction)))
        length = draw(st.integers(0, (pages + 1) * PAGE))
        seed = draw(st.binary(min_size=1, max_size=8))
        data = memoryview((seed * (length // len(seed) + 1))[:length]) if length else None
        ops.append(TdPageOp(gpa, pages * PAGE, action, data, f"s{index}", index,
                            TdvfSectionType.BFV))  # fmt: skip
        gpa += (pages + draw(st.integers(0, 3))) * PAGE
    return tuple(ops)


@settings(max_examples=60, deadline=None)
@given(_td_ops(), st.sampled_from(list(PageOrder)))
def test_mrtd_equals_the_record_stream_and_its_trace(
    ops: tuple[TdPageOp, ...], order: PageOrder
) -> None:
    stream = b""
    for op in ops:
        if op.action is TdAction.PAGE_AUG:
            continue
        pages = range(op.gpa, op.gpa + op.size, PAGE)
        contents = bytes(op.data or b"")[: op.size].ljust(op.size, b"\0")
        extend = op.action is TdAction.PAGE_ADD_EXTEND
        if not extend or order is PageOrder.SECTION:
            stream += b"".join(map(_add, pages))
        for at in pages if extend else ():
            page = contents[at - op.gpa : at - op.gpa + PAGE]
            stream += (_add(at) if order is PageOrder.PAGE else b"") + _extend_page(at, page)
    spec = GuestSpec(Technology.TDX, Path("td.bin"), td=TdConfig(page_order=order))
    plan = TdPlan(spec, 0, bytes(32), TdvfMetadata(0, "test", ()), ops, None)
    expected = hashlib.sha384(stream).digest()
    assert mrtd(plan) == expected
    trace: list[Step] = []
    assert mrtd(plan, trace) == expected
