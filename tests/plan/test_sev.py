"""build_sev_plan: the page operations of an SEV, SEV-ES or SEV-SNP launch.

Real firmware is Debian's OVMF.fd (fixture `debian_ovmf`); the OVMF suffix vectors of
tests/vectors/snp/ (the last 4 KiB of edk2 images) carry the newer SEV metadata layouts,
one with an SNP_KERNEL_HASHES section and a hash table area. Expected kernel hashes are
SHA-256s computed here from the vector files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cvmlaunch.abi import kernel_hashes as kh
from cvmlaunch.abi.ovmf import SevSectionType
from cvmlaunch.abi.snp import KVM_VMSA_GPA, PAGE_SIZE, PageType
from cvmlaunch.errors import FirmwareError
from cvmlaunch.firmware.ovmf import OvmfImage, parse_ovmf
from cvmlaunch.guest.spec import BootFile, CpuSpec, DirectBoot, GuestSpec, Technology, Vmm
from cvmlaunch.plan.ops import LaunchPlan, PageOp
from cvmlaunch.plan.sev import build_sev_plan
from cvmlaunch.plan.step import StepKind
from cvmlaunch.plan.vmsa import BSP_RESET_ADDRESS, save_area
from tests.conftest import SNP_VECTORS, TDX_VECTORS

AMD_SEV = SNP_VECTORS / "ovmf_AmdSev_suffix.bin"  # 7 sections incl. SNP_KERNEL_HASHES
OVMF_X64 = SNP_VECTORS / "ovmf_OvmfX64_suffix.bin"  # no kernel hashes section or area
KERNEL = SNP_VECTORS / "fake-kernel.bin"
INITRD = SNP_VECTORS / "test-initrd.cpio"
CMDLINE = "console=ttyS0 root=/dev/vda"
FOUR_GIB = 1 << 32
CPU = CpuSpec(0x800F12)
# OVMF's SEV-ES reset block in every image here: APs start at 0x80B004.
AP_EIP = 0x80B004

SNP, SEV_ES, SEV = Technology.SEV_SNP, Technology.SEV_ES, Technology.SEV


def _plan(
    technology: Technology,
    firmware: Path,
    *,
    vmm: Vmm = Vmm.QEMU,
    vcpus: int = 1,
    boot: DirectBoot | None = None,
    guest_features: int = 1,
    vmsa_gpa: int = KVM_VMSA_GPA,
) -> LaunchPlan:
    cpu = CPU if technology is not SEV and vmm is Vmm.QEMU else None
    spec = GuestSpec(
        technology, firmware, vcpus=vcpus, cpu=cpu, vmm=vmm, boot=boot,
        guest_features=guest_features, vmsa_gpa=vmsa_gpa,
    )  # fmt: skip
    return build_sev_plan(spec)


def _image(plan: LaunchPlan) -> OvmfImage:
    """The plan's OVMF image (an SEV plan always has one; only IGVM plans have none)."""
    assert plan.firmware is not None
    return plan.firmware


def _kinds(plan: LaunchPlan) -> list[StepKind]:
    return [op.kind for op in plan.ops]


def _boot(initrd: bool = True) -> DirectBoot:
    return DirectBoot(BootFile(KERNEL), BootFile(INITRD) if initrd else None, CMDLINE)


def _expected_hashes(initrd: bool = True) -> tuple[bytes, bytes, bytes]:
    """(cmdline, initrd, kernel) SHA-256s, in table order, computed from the files."""
    return (
        hashlib.sha256(CMDLINE.encode() + b"\0").digest(),
        hashlib.sha256(INITRD.read_bytes() if initrd else b"").digest(),
        hashlib.sha256(KERNEL.read_bytes()).digest(),
    )


def _assert_table(table: bytes, initrd: bool = True) -> None:
    """The table holds its GUID and length, then each entry's GUID, length and digest."""
    assert len(table) == kh.PADDED_TABLE_SIZE
    assert table[:16] == kh.TABLE_GUID
    assert int.from_bytes(table[16:18], "little") == kh.TABLE_SIZE
    guids = (kh.CMDLINE_GUID, kh.INITRD_GUID, kh.KERNEL_GUID)
    for i, (guid, digest) in enumerate(zip(guids, _expected_hashes(initrd), strict=True)):
        at = kh.HEADER.size + i * kh.ENTRY.size
        assert table[at : at + 16] == guid
        assert int.from_bytes(table[at + 16 : at + 18], "little") == kh.ENTRY.size
        assert table[at + 18 : at + 50] == digest
    assert table[kh.TABLE_SIZE :] == bytes(kh.PADDED_TABLE_SIZE - kh.TABLE_SIZE)


# ---- the firmware operation ----------------------------------------------------------------


@pytest.mark.parametrize("technology", [SNP, SEV_ES, SEV])
def test_firmware_op_is_the_whole_image_ending_at_4_gib(
    technology: Technology, debian_ovmf: Path
) -> None:
    plan = _plan(technology, debian_ovmf)
    image = debian_ovmf.read_bytes()
    first = plan.ops[0]
    assert (first.kind, first.page_type, first.data) == (StepKind.FIRMWARE, PageType.NORMAL, image)
    assert first.size == len(image) == 0x200000
    assert first.gpa == FOUR_GIB - len(image) == 0xFFE00000
    assert [op.kind for op in plan.ops].count(StepKind.FIRMWARE) == 1
    assert plan.firmware_sha256 == hashlib.sha256(image).digest()


def test_firmware_op_of_a_one_page_image_is_the_last_page_below_4_gib() -> None:
    first = _plan(SNP, AMD_SEV).ops[0]
    assert (first.gpa, first.size, first.data) == (
        FOUR_GIB - PAGE_SIZE,
        PAGE_SIZE,
        AMD_SEV.read_bytes(),
    )


# ---- operation order per technology ------------------------------------------------------


def test_snp_debian_ovmf_order(debian_ovmf: Path) -> None:
    plan = _plan(SNP, debian_ovmf, vcpus=2)
    assert _kinds(plan) == [StepKind.FIRMWARE, *[StepKind.SEV_METADATA] * 5, *[StepKind.VMSA] * 2]
    sections = _image(plan).sev_metadata
    assert sections is not None
    metadata = [op for op in plan.ops if op.kind is StepKind.SEV_METADATA]
    assert [(op.section, op.gpa, op.size) for op in metadata] == [
        (s.number, s.gpa, s.size) for s in sections
    ]
    assert [op.page_type for op in metadata] == [
        PageType.ZERO, PageType.ZERO, PageType.SECRETS, PageType.CPUID, PageType.ZERO,
    ]  # fmt: skip
    assert all(op.data is None for op in metadata)


def test_sev_es_debian_ovmf_order(debian_ovmf: Path) -> None:
    plan = _plan(SEV_ES, debian_ovmf, vcpus=3)
    assert _kinds(plan) == [StepKind.FIRMWARE, *[StepKind.VMSA] * 3]


def test_sev_has_no_vmsa(debian_ovmf: Path) -> None:
    plan = _plan(SEV, debian_ovmf, vcpus=4)
    assert _kinds(plan) == [StepKind.FIRMWARE]
    assert _kinds(_plan(SEV, AMD_SEV, boot=_boot())) == [StepKind.FIRMWARE, StepKind.KERNEL_HASHES]


# ---- SEV metadata sections per VMM ---------------------------------------------------------

# What each section type becomes without a kernel (the rules of plan/sev.py `_section_op`).
_PAGE_TYPE = {
    SevSectionType.SNP_SECRETS: PageType.SECRETS,
    SevSectionType.CPUID: PageType.CPUID,
    SevSectionType.SVSM_CAA: PageType.ZERO,
    SevSectionType.SNP_KERNEL_HASHES: PageType.ZERO,
}
_SEC_MEM = {Vmm.QEMU: PageType.ZERO, Vmm.EC2: PageType.ZERO, Vmm.GCE: PageType.UNMEASURED}


@pytest.mark.parametrize("vmm", list(Vmm))
def test_metadata_page_types_per_vmm(vmm: Vmm) -> None:
    plan = _plan(SNP, AMD_SEV, vmm=vmm)
    sections = {s.number: s for s in _image(plan).sev_metadata or ()}
    assert len(sections) == 7
    metadata = [op for op in plan.ops if op.kind is StepKind.SEV_METADATA]
    assert len(metadata) == 7
    for op in metadata:
        assert op.section is not None
        section = sections[op.section]
        assert (op.gpa, op.size, op.data) == (section.gpa, section.size, None)
        expected = _SEC_MEM[vmm] if section.type is SevSectionType.SNP_SEC_MEM else None
        assert op.page_type is (expected or _PAGE_TYPE[section.type]), op.label
        assert section.type.name in op.label


@pytest.mark.parametrize(
    ("vmm", "order"),
    [(Vmm.QEMU, [0, 1, 2, 3, 4, 5, 6]), (Vmm.GCE, [0, 1, 2, 3, 4, 5, 6]),
     (Vmm.EC2, [0, 1, 2, 4, 5, 6, 3])],
)  # fmt: skip
def test_ec2_measures_the_cpuid_page_last(vmm: Vmm, order: list[int]) -> None:
    plan = _plan(SNP, AMD_SEV, vmm=vmm, vcpus=2)
    metadata = [op for op in plan.ops if op.kind is StepKind.SEV_METADATA]
    assert [op.section for op in metadata] == order
    assert metadata[order.index(3)].page_type is PageType.CPUID
    # ... and still before the VMSAs.
    assert _kinds(plan)[-2:] == [StepKind.VMSA, StepKind.VMSA]


# ---- VMSAs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("technology", [SNP, SEV_ES])
@pytest.mark.parametrize("vmm", list(Vmm))
def test_one_vmsa_per_vcpu(technology: Technology, vmm: Vmm) -> None:
    plan = _plan(technology, OVMF_X64, vmm=vmm, vcpus=4, guest_features=0x21)
    vmsas = [op for op in plan.ops if op.kind is StepKind.VMSA]
    assert plan.ops[-4:] == tuple(vmsas)
    assert [op.vcpu for op in vmsas] == [0, 1, 2, 3]
    assert all(
        (op.gpa, op.size, op.page_type) == (KVM_VMSA_GPA, PAGE_SIZE, PageType.VMSA) for op in vmsas
    )
    # SEV_FEATURES is the guest features for SNP; SEV-ES VMSAs carry none.
    features = 0x21 if technology is SNP else 0
    signature = CPU.signature if vmm is Vmm.QEMU else 0
    bsp = save_area(vmm, BSP_RESET_ADDRESS, signature, features, bsp=True)
    ap = save_area(vmm, AP_EIP, signature, features, bsp=False)
    assert (vmsas[0].state, vmsas[0].data) == (bsp, bsp.pack())
    for op in vmsas[1:]:
        assert (op.state, op.data) == (ap, ap.pack())
    assert bsp.pack() != ap.pack()
    assert "BSP" in vmsas[0].label and "AP" in vmsas[3].label and "3" in vmsas[3].label


def test_vmsa_gpa_follows_the_spec() -> None:
    plan = _plan(SNP, OVMF_X64, vcpus=2, vmsa_gpa=0x7F000)
    assert [op.gpa for op in plan.ops if op.kind is StepKind.VMSA] == [0x7F000, 0x7F000]


# ---- kernel hashes -------------------------------------------------------------------------


@pytest.mark.parametrize("initrd", [True, False])
def test_snp_kernel_hashes_page_holds_the_table_at_the_area_offset(initrd: bool) -> None:
    plan = _plan(SNP, AMD_SEV, boot=_boot(initrd))
    hashes = [op for op in plan.ops if op.kind is StepKind.KERNEL_HASHES]
    assert len(hashes) == 1
    op = hashes[0]
    section = _image(plan).sections(SevSectionType.SNP_KERNEL_HASHES)[0]
    area = _image(plan).hash_table_area
    assert area is not None and area.base == 0x810C00  # tests/vectors/README.md
    assert (op.gpa, op.size, op.page_type, op.section) == (
        section.gpa, PAGE_SIZE, PageType.NORMAL, section.number,
    )  # fmt: skip
    assert op.data is not None and len(op.data) == PAGE_SIZE
    at = area.base - section.gpa
    assert at == 0xC00
    _assert_table(op.data[at : at + kh.PADDED_TABLE_SIZE], initrd)
    assert op.data[:at] == bytes(at)
    assert op.data[at + kh.PADDED_TABLE_SIZE :] == bytes(PAGE_SIZE - at - kh.PADDED_TABLE_SIZE)
    # The page takes the section's place among the metadata operations.
    assert [o.section for o in plan.ops if o.section is not None] == list(range(7))
    assert plan.kernel_hashes is not None
    assert plan.kernel_hashes.table == op.data[at : at + kh.PADDED_TABLE_SIZE]


@pytest.mark.parametrize("technology", [SEV, SEV_ES])
def test_sev_kernel_hashes_table_follows_the_firmware(technology: Technology) -> None:
    plan = _plan(technology, AMD_SEV, boot=_boot(), vcpus=2)
    op = plan.ops[1]
    assert op.kind is StepKind.KERNEL_HASHES
    area = _image(plan).hash_table_area
    assert area is not None
    assert (op.gpa, op.size) == (area.base, kh.PADDED_TABLE_SIZE)
    assert op.data is not None
    _assert_table(op.data)
    vmsas = 2 if technology is SEV_ES else 0
    assert _kinds(plan) == [StepKind.FIRMWARE, StepKind.KERNEL_HASHES, *[StepKind.VMSA] * vmsas]


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("technology", [SEV, SEV_ES])
def test_kernel_without_hash_table_area_is_refused(technology: Technology) -> None:
    assert parse_ovmf(OVMF_X64.read_bytes()).hash_table_area is None
    with pytest.raises(FirmwareError, match="no SEV hash table area"):
        _plan(technology, OVMF_X64, boot=_boot())


def test_kernel_without_hashes_section_is_refused_for_snp(debian_ovmf: Path) -> None:
    for firmware in (OVMF_X64, debian_ovmf):
        with pytest.raises(FirmwareError, match="no SNP_KERNEL_HASHES section"):
            _plan(SNP, firmware, boot=_boot())


def test_snp_without_sev_metadata_is_refused() -> None:
    # A TDX-only image: an OVMF footer table, but no SEV metadata entry.
    image = TDX_VECTORS / "synth-tdvf-base.bin"
    assert parse_ovmf(image.read_bytes()).sev_metadata is None
    with pytest.raises(FirmwareError, match="no SEV metadata"):
        _plan(SNP, image)


def test_sev_es_without_reset_block_is_refused() -> None:
    with pytest.raises(FirmwareError, match="reset block"):
        _plan(SEV_ES, TDX_VECTORS / "synth-tdvf-base.bin")


def test_plain_sev_needs_neither_metadata_nor_reset_block() -> None:
    image = TDX_VECTORS / "synth-tdvf-base.bin"
    plan = _plan(SEV, image)
    assert plan.ops == (
        PageOp(StepKind.FIRMWARE, FOUR_GIB - 0x40000, 0x40000, PageType.NORMAL,
               image.read_bytes(), "firmware"),
    )  # fmt: skip
