"""Build the LaunchPlan of an AMD SEV, SEV-ES or SEV-SNP guest as QEMU/KVM (or a cloud VMM)
launches it.

SNP (QEMU target/i386/sev.c, KVM arch/x86/kvm/svm/sev.c): the firmware image as NORMAL
pages; then every SEV metadata section in table order; then at SNP_LAUNCH_FINISH one VMSA
per vCPU in index order. SEV and SEV-ES have no page structure: the firmware, the kernel
hashes table and (SEV-ES) the VMSAs are hashed as a byte stream in that order.
"""

from __future__ import annotations

from cvmlaunch import log
from cvmlaunch.abi.ovmf import SevSectionType
from cvmlaunch.abi.snp import PAGE_SIZE, PageType
from cvmlaunch.errors import FirmwareError
from cvmlaunch.firmware.ovmf import GpaRange, OvmfImage, SevSection, parse_ovmf
from cvmlaunch.guest.files import read_pinned_firmware
from cvmlaunch.guest.spec import GuestSpec, Technology, Vmm
from cvmlaunch.plan.ops import KernelHashes, LaunchPlan, PageOp
from cvmlaunch.plan.step import StepKind
from cvmlaunch.plan.vmsa import BSP_RESET_ADDRESS, save_area

_log = log.get_logger("cvmlaunch.plan")

_NO_HASH_AREA = (
    "a kernel is given, but the firmware has no SEV hash table area (footer entry "
    "7255371f-3a3b-4b04-927b-1da6efa8d454 missing or 0/0): this build does not support "
    "measured direct boot"
)


# Where the VMMs measure the SEV metadata differently (diff names these as causes).
EC2_CPUID_LAST = "EC2 measures the CPUID page after every other section"
GCE_SEC_MEM = "GCE measures SNP_SEC_MEM pages as UNMEASURED, not ZERO"
# GCE's hypervisor asks for VMSA GPA -1, which the platform truncates to the host's physical
# address width: 48 bits on Milan (0xFFFFFFFFF000, KVM's constant), 52 bits on Genoa (this
# value). Source: google/gce-tcb-verifier; sev-snp-measure always uses the Milan value
# (reference/snp-measure.md, "VMSA GPA / type").
GCE_GENOA_VMSA_GPA = 0xFFFFFFFFFF000


def build_sev_plan(spec: GuestSpec, firmware: bytes | None = None) -> LaunchPlan:
    """The plan for `spec`; `firmware` gives the image bytes instead of reading the file."""
    spec = spec.check()
    described = spec.firmware_descriptor
    if described is not None:  # the image's facts, not its bytes: its digest is given
        image, firmware_sha256 = described.image(), described.sha256
    else:
        data, firmware_sha256 = read_pinned_firmware(spec.firmware, spec.firmware_sha256,
                                                     firmware)  # fmt: skip
        image = parse_ovmf(data)
    hashes = None
    if spec.boot is not None:
        # Imported here (as is the table's layout): only measured direct boot needs them.
        from cvmlaunch.plan.boot import compute_kernel_hashes

        hashes = compute_kernel_hashes(spec.boot)
    ops = [
        PageOp(StepKind.FIRMWARE, image.gpa, image.size, PageType.NORMAL, image.data, "firmware")
    ]
    if spec.technology is Technology.SEV_SNP:
        ops += _snp_metadata_ops(spec.vmm, image, hashes)
    elif hashes is not None:
        from cvmlaunch.abi.kernel_hashes import PADDED_TABLE_SIZE

        area = _hash_table_area(image)
        ops.append(
            PageOp(
                StepKind.KERNEL_HASHES,
                area.base,
                PADDED_TABLE_SIZE,
                PageType.NORMAL,
                hashes.table,
                "kernel hashes table",
            )
        )
    if spec.technology is not Technology.SEV:
        ops += _vmsa_ops(spec, image)
    _log.debug("plan.built", technology=str(spec.technology), operations=len(ops))
    return LaunchPlan(spec, image, firmware_sha256, tuple(ops), hashes, spec.firmware_digest)


def _hash_table_area(image: OvmfImage) -> GpaRange:
    from cvmlaunch.abi.kernel_hashes import PADDED_TABLE_SIZE

    area = image.hash_table_area
    if area is None:
        raise FirmwareError(_NO_HASH_AREA)
    if area.size < PADDED_TABLE_SIZE:
        raise FirmwareError(
            f"the SEV hash table area [{area.base:#x}, +{area.size:#x}) is smaller than the "
            f"{PADDED_TABLE_SIZE}-byte kernel hashes table"
        )
    return area


def _snp_metadata_ops(vmm: Vmm, image: OvmfImage, hashes: KernelHashes | None) -> list[PageOp]:
    if image.sev_metadata is None:
        raise FirmwareError(
            "the firmware has no SEV metadata (footer entry dc886566-984a-4798-a75e-5585a7bf67cc"
            "): QEMU refuses to launch an SEV-SNP guest without it"
        )
    hash_sections = image.sections(SevSectionType.SNP_KERNEL_HASHES)
    if len(hash_sections) > 1:
        raise FirmwareError(
            f"the SEV metadata has {len(hash_sections)} SNP_KERNEL_HASHES sections, expected one",
            hash_sections[1].offset,
        )
    if hashes is not None and not hash_sections:
        raise FirmwareError(
            "a kernel is given, but the firmware's SEV metadata has no SNP_KERNEL_HASHES "
            "section: this build does not support measured direct boot"
        )
    sections = list(image.sev_metadata)
    if vmm is Vmm.EC2:  # EC2_CPUID_LAST
        sections.sort(key=lambda s: s.type == SevSectionType.CPUID)
    return [_section_op(vmm, image, s, hashes) for s in sections]


def _section_op(
    vmm: Vmm, image: OvmfImage, section: SevSection, hashes: KernelHashes | None
) -> PageOp:
    label = f"{section.type.name} section {section.number}"

    def op(page_type: PageType, data: bytes | None = None) -> PageOp:
        return PageOp(
            StepKind.SEV_METADATA,
            section.gpa,
            section.size,
            page_type,
            data,
            label,
            section.number,
        )

    match section.type:
        case SevSectionType.SNP_SEC_MEM:
            return op(PageType.UNMEASURED if vmm is Vmm.GCE else PageType.ZERO)  # GCE_SEC_MEM
        case SevSectionType.SNP_SECRETS:
            return op(PageType.SECRETS)
        case SevSectionType.CPUID:
            return op(PageType.CPUID)
        case SevSectionType.SVSM_CAA:
            return op(PageType.ZERO)
        case SevSectionType.SNP_KERNEL_HASHES:
            if hashes is None:
                return op(PageType.ZERO)
            return PageOp(
                StepKind.KERNEL_HASHES,
                section.gpa,
                section.size,
                PageType.NORMAL,
                _kernel_hashes_page(image, section, hashes),
                f"kernel hashes page ({label})",
                section.number,
            )


def _kernel_hashes_page(image: OvmfImage, section: SevSection, hashes: KernelHashes) -> bytes:
    from cvmlaunch.abi.kernel_hashes import PADDED_TABLE_SIZE

    area = _hash_table_area(image)
    offset = area.base - section.gpa
    if not 0 <= offset <= section.size - PADDED_TABLE_SIZE:
        raise FirmwareError(
            f"the SEV hash table area at {area.base:#x} does not lie inside the "
            f"SNP_KERNEL_HASHES section [{section.gpa:#x}, +{section.size:#x})",
            section.offset,
        )
    page = bytearray(PAGE_SIZE)
    page[offset : offset + PADDED_TABLE_SIZE] = hashes.table
    return bytes(page)


def _vmsa_ops(spec: GuestSpec, image: OvmfImage) -> list[PageOp]:
    ap_eip = image.sev_es_reset_address
    if ap_eip is None:
        raise FirmwareError(
            "the firmware has no SEV-ES reset block (footer entry "
            "00f771de-1a7e-4fcb-890e-68c77e2fb44e): the vCPU start address is unknown"
        )
    if ap_eip == 0 and spec.vcpus > 1:
        raise FirmwareError("the SEV-ES reset block holds address 0: APs cannot be started")
    if spec.cpu is not None and spec.vmm is not Vmm.QEMU:
        # A frequent source of confusion: these VMMs report a fixed RDX, not the CPU model.
        _log.warning("plan.cpu_ignored", vmm=str(spec.vmm), cpu_signature=hex(spec.cpu.signature))
    sev_features = spec.guest_features if spec.technology is Technology.SEV_SNP else 0
    signature = spec.cpu.signature if spec.cpu is not None else 0
    bsp = save_area(spec.vmm, BSP_RESET_ADDRESS, signature, sev_features, bsp=True)
    ap = save_area(spec.vmm, ap_eip, signature, sev_features, bsp=False)
    # Every AP starts in the same state: pack its page once.
    pages = {True: bsp.pack(), False: ap.pack() if spec.vcpus > 1 else b""}
    return [
        PageOp(
            StepKind.VMSA,
            spec.vmsa_gpa,
            PAGE_SIZE,
            PageType.VMSA,
            pages[vcpu == 0],
            f"VMSA vCPU {vcpu} ({'BSP' if vcpu == 0 else 'AP'})",
            vcpu=vcpu,
            state=bsp if vcpu == 0 else ap,
        )
        for vcpu in range(spec.vcpus)
    ]
