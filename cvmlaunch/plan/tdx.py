"""Build the plan of an Intel TDX guest (TD) booted from TDVF firmware, as QEMU/KVM do it.

QEMU (target/i386/kvm/tdx.c) hands the TDVF sections to KVM_TDX_INIT_MEM_REGION in metadata
order: BFV and CFV from the image, the TD_HOB section holding the TD HOB it wrote, TEMP_MEM as
zero pages. Every page of a section is added (TDH.MEM.PAGE.ADD) unless it is PAGE.AUG; the
contents are measured (TDH.MR.EXTEND) only for MR.EXTEND sections (OVMF: the BFV).

Raw data shorter than the memory: QEMU copies MemoryDataSize bytes of the image from
DataOffset, so by default (raw_data_tail "image") the measured tail is whatever the image
holds there; raw_data_tail "zero" zero-fills it as the TDVF and td-shim specifications say.
"""

from __future__ import annotations

from cvmlaunch import log
from cvmlaunch.abi.tdx import TdvfSectionType
from cvmlaunch.errors import FirmwareError
from cvmlaunch.firmware.tdvf import TdvfSection, parse_tdvf
from cvmlaunch.guest.files import read_pinned_firmware
from cvmlaunch.guest.spec import GuestSpec, RawDataTail
from cvmlaunch.plan.ops import TdPageOp, TdPlan
from cvmlaunch.plan.step import TdAction
from cvmlaunch.plan.td_hob import q35_ram, td_hob

_log = log.get_logger("cvmlaunch.plan")

MIB = 1 << 20
# The section types QEMU knows; it refuses firmware with any other.
_QEMU_SECTIONS = frozenset(
    {TdvfSectionType.BFV, TdvfSectionType.CFV, TdvfSectionType.TD_HOB, TdvfSectionType.TEMP_MEM}
)
# The sections QEMU accepts into the TD as initialized memory (listed in the TD HOB).
_ACCEPTED = frozenset({TdvfSectionType.TD_HOB, TdvfSectionType.TEMP_MEM})


def build_td_plan(spec: GuestSpec, firmware: bytes | None = None) -> TdPlan:
    """The plan for the TDX guest `spec`; `firmware` gives the image instead of the file."""
    spec = spec.check()
    described = spec.firmware_descriptor
    mrtd = None
    if described is not None and described.tdvf is not None:
        # The image's facts, not its bytes: its sections, and the MRTD they measure to.
        td = spec.td_config
        data, firmware_sha256, tdvf = b"", described.sha256, described.tdvf
        mrtd = described.mrtd(str(td.page_order), str(td.raw_data_tail))
    else:
        data, firmware_sha256 = read_pinned_firmware(spec.firmware, spec.firmware_sha256,
                                                     firmware)  # fmt: skip
        tdvf = parse_tdvf(data)
    _warn_if_qemu_refuses(tdvf.sections)
    hobs = tdvf.of_type(TdvfSectionType.TD_HOB)
    if len(hobs) > 1:
        raise FirmwareError(
            f"the TDVF metadata has {len(hobs)} TD_HOB sections, expected at most one",
            hobs[1].offset,
        )
    memory = spec.memory_mib * MIB
    hob = None
    if hobs:
        accepted = [(s.name, s.range) for s in tdvf.sections if s.type in _ACCEPTED]
        hob = td_hob(hobs[0].gpa, accepted, q35_ram(memory))
        if len(hob) > hobs[0].mem_size:
            raise FirmwareError(
                f"the {len(hob)}-byte TD HOB does not fit the {hobs[0].name} "
                f"({hobs[0].mem_size:#x} bytes)",
                hobs[0].offset,
            )
    for section in tdvf.sections:
        if section.mem_size > memory and not section.page_aug:
            raise FirmwareError(
                f"{section.name} has {section.mem_size:#x} bytes of memory, more than the "
                f"guest's {spec.memory_mib} MiB of RAM",
                section.offset,
            )
    tail = spec.td_config.raw_data_tail
    view = memoryview(data)
    ops = tuple(
        _op(section, view, tail, hob, described=mrtd is not None)
        for section in tdvf.sections
        if section.mem_size  # TD_INFO / TD_PARAMS are read by the VMM, not mapped
    )
    _log.debug("plan.built", technology=str(spec.technology), operations=len(ops))
    size = len(data) if described is None else described.size
    return TdPlan(spec, size, firmware_sha256, tdvf, ops, hob, mrtd)


def _op(
    section: TdvfSection,
    image: memoryview,
    tail: RawDataTail,
    hob: bytes | None,
    *,
    described: bool = False,
) -> TdPageOp:
    if section.page_aug:
        action = TdAction.PAGE_AUG
    elif section.extends_mr:
        action = TdAction.PAGE_ADD_EXTEND
    else:
        action = TdAction.PAGE_ADD
    contents: memoryview | None = None
    if section.type is TdvfSectionType.TD_HOB and hob is not None:
        contents = memoryview(hob)
    elif described:
        pass  # the image's bytes are not at hand: the descriptor's MRTD stands for them
    elif section.raw_size:
        contents = _section_bytes(section, image, tail)
    elif action is TdAction.PAGE_ADD_EXTEND and section.type not in _ACCEPTED:
        # A PAYLOAD / PAYLOAD_PARAM without raw data is filled by the VMM from a payload
        # file: its measured contents are not in the firmware.
        raise FirmwareError(
            f"{section.name} is measured (MR.EXTEND) but has no raw data: its contents come "
            "from a VMM-loaded payload, which cvmlaunch does not model",
            section.offset,
        )
    return TdPageOp(
        section.gpa, section.mem_size, action, contents, section.name, section.number,
        section.type,
    )  # fmt: skip


def _section_bytes(section: TdvfSection, image: memoryview, tail: RawDataTail) -> memoryview:
    start, raw, size = section.data_offset, section.raw_size, section.mem_size
    if raw == size:
        return image[start : start + size]
    _log.info(
        "plan.short_section",
        section=section.number,
        raw_size=hex(raw),
        mem_size=hex(size),
        raw_data_tail=str(tail),
    )
    if tail is RawDataTail.ZERO:
        return image[start : start + raw]  # the rest of the section is zero
    if start + size > len(image):
        raise FirmwareError(
            f"{section.name} has RawDataSize {raw:#x} < MemoryDataSize {size:#x}, and QEMU "
            f"copies MemoryDataSize bytes from DataOffset {start:#x}, past the end of the "
            f'{len(image)}-byte image (raw_data_tail = "zero" zero-fills instead)',
            section.offset,
        )
    return image[start : start + size]


def _warn_if_qemu_refuses(sections: tuple[TdvfSection, ...]) -> None:
    unsupported = [s for s in sections if s.type not in _QEMU_SECTIONS]
    if unsupported:
        _log.warning(
            "plan.qemu_unsupported_sections",
            sections=[s.name for s in unsupported],
            note="QEMU refuses these section types; the MRTD follows the TDVF specification",
        )
    if not any(s.type is TdvfSectionType.TD_HOB for s in sections):
        _log.warning("plan.no_td_hob", note="QEMU refuses TDVF firmware without a TD_HOB")
