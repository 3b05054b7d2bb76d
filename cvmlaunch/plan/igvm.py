"""The SEV-SNP page operations of an IGVM file: what a loader hands SNP_LAUNCH_UPDATE, in order.

Directives run in file order, and only those whose compatibility mask holds the SEV-SNP
platform's bit. The Rust measurers differ on cases a file may contain; where they do we follow
QEMU's IGVM loader (backends/igvm.c), the one that launches SNP guests on KVM:
* SHARED pages are measured as their type says (QEMU ignores the flag; the igvm crate skips
  them, COCONUT's igvmmeasure measures them);
* PARAMETER_INSERT measures every page of its area as UNMEASURED (the crate does too;
  igvmmeasure measures one page);
* VP_CONTEXT directives are filtered by the mask like the rest (igvmmeasure takes every one);
* a 2 MiB page is 512 pages at consecutive GPAs, as KVM updates it (the crate rejects them).
"""

from __future__ import annotations

from cvmlaunch.abi.igvm import (
    IGVM_PAGE_SIZE,
    PageData,
    PageDataFlags,
    PageDataType,
    ParameterArea,
    ParameterInsert,
    PlatformType,
    SnpIdBlock,
    VpContext,
)
from cvmlaunch.abi.snp import PageType
from cvmlaunch.abi.vmsa import SaveArea
from cvmlaunch.errors import FieldProblem, FirmwareError, ProfileError
from cvmlaunch.firmware.igvm import Header, IgvmFile, parse_igvm
from cvmlaunch.guest.files import read_firmware, read_pinned_firmware
from cvmlaunch.guest.spec import GuestSpec, IdBlockConfig
from cvmlaunch.plan.ops import LaunchPlan, PageOp
from cvmlaunch.plan.step import StepKind

_ZERO_PAGE = bytes(IGVM_PAGE_SIZE)

_SPECIAL_PAGES = {
    PageDataType.SECRETS: PageType.SECRETS,
    PageDataType.CPUID_DATA: PageType.CPUID,
    PageDataType.CPUID_XF: PageType.CPUID,
}


def snp_page_ops(igvm: IgvmFile, *, native_zero: bool = False) -> list[PageOp]:
    """The SNP launch updates of `igvm`'s directives for its SEV-SNP platform, in order.

    A PAGE_DATA without file data is a NORMAL page of zeros, as the spec, the igvm crate,
    igvmmeasure and igvm-tooling (Hyper-V) measure it; `native_zero` makes it an SNP ZERO
    page instead, as QEMU's loader hands it to KVM (igvmmeasure --native-zero).
    """
    mask = igvm.platform_mask(PlatformType.SEV_SNP)
    if mask is None:
        raise FirmwareError("IGVM file has no SUPPORTED_PLATFORM header for SEV-SNP")
    areas: dict[int, int] = {}
    ops: list[PageOp] = []
    measured: dict[int, Header] = {}  # 4 KiB GPA -> the header that put a page there
    for header in igvm.headers:
        body = header.body
        if isinstance(body, ParameterArea):
            areas[body.parameter_area_index] = body.number_of_bytes
        if not isinstance(body, PageData | ParameterInsert | VpContext):
            continue
        if not body.compatibility_mask & mask:
            continue
        label = f"igvm header {header.index} {header.name}"
        if isinstance(body, PageData):
            op = _page(body, label, native_zero)
        elif isinstance(body, ParameterInsert):
            size = areas[body.parameter_area_index]
            op = PageOp(StepKind.FIRMWARE, body.gpa, size, PageType.UNMEASURED, None, label)
        elif body.data is None:  # the parser reads it for every SEV-SNP VP context
            raise FirmwareError(f"IGVM header {header.index} ({header.name}): no VMSA data",
                                header.offset)  # fmt: skip
        else:
            op = PageOp(StepKind.VMSA, body.gpa, IGVM_PAGE_SIZE, PageType.VMSA, body.data,
                         label, vcpu=body.vp_index)  # fmt: skip
        _claim(measured, header, op)
        ops.append(op)
    return ops


def _page(page: PageData, label: str, native_zero: bool) -> PageOp:
    special = _SPECIAL_PAGES.get(page.data_type)
    if special is not None:
        page_type, data = special, None
    elif page.flags & PageDataFlags.UNMEASURED:
        page_type, data = PageType.UNMEASURED, None
    elif page.data is not None:
        page_type, data = PageType.NORMAL, page.data
    elif native_zero:
        page_type, data = PageType.ZERO, None
    else:
        page_type, data = PageType.NORMAL, _ZERO_PAGE * (page.size // IGVM_PAGE_SIZE)
    return PageOp(StepKind.FIRMWARE, page.gpa, page.size, page_type, data, label)


def _claim(measured: dict[int, Header], header: Header, op: PageOp) -> None:
    """Refuse a second update of a page: the PSP refuses it, so no launch measures it."""
    for gpa in range(op.gpa, op.gpa + op.size, IGVM_PAGE_SIZE):
        first = measured.setdefault(gpa, header)
        if first is not header:
            raise FirmwareError(
                f"IGVM header {header.index} ({header.name}): gpa {gpa:#x} was already "
                f"populated by header {first.index} ({first.name})",
                header.offset,
            )


def build_igvm_plan(spec: GuestSpec, firmware: bytes | None = None) -> LaunchPlan:
    """The plan of an SEV-SNP guest whose initial image is the IGVM file `spec.firmware`
    (`firmware`: its bytes instead of reading it). The launch POLICY is the file's
    GUEST_POLICY, and its SNP_ID_BLOCK the launch's ID block: a profile that says otherwise
    is refused, naming both."""
    spec = spec.check()
    native_zero = spec.igvm is not None and spec.igvm.native_zero
    if firmware is None:  # read here to be named by the key the profile wrote
        firmware = read_firmware(spec.firmware, "firmware.igvm")
    data, sha256 = read_pinned_firmware(spec.firmware, spec.firmware_sha256, firmware)
    igvm = parse_igvm(data)
    ops = snp_page_ops(igvm, native_zero=native_zero)
    ops = [_with_state(op) for op in ops]
    policy = igvm.snp_policy
    if policy is not None and policy != spec.snp_policy:
        reason = (f"{spec.snp_policy:#x}, but the IGVM file's GUEST_POLICY is {policy:#x}, "
                  "which its loader gives SNP_LAUNCH_START: set snp.policy to it")  # fmt: skip
        raise ProfileError([FieldProblem("snp.policy", reason)])
    directive = igvm.snp_id_block
    if directive is not None:
        spec = spec._replace(id_block=_file_id_block(spec, directive))
    return LaunchPlan(spec, None, sha256, tuple(ops), None, None, igvm)


def _with_state(op: PageOp) -> PageOp:
    """A VMSA operation with the register state its page holds, where our SaveArea holds
    all of it (what a vCPU can be given before KVM builds its VMSA)."""
    if op.kind is not StepKind.VMSA or op.data is None:
        return op
    state = SaveArea.unpack(op.data)
    return op._replace(state=state) if state.pack() == op.data else op


def _file_id_block(spec: GuestSpec, directive: SnpIdBlock) -> IdBlockConfig:
    """The file's SNP_ID_BLOCK as the signed block and auth SNP_LAUNCH_FINISH takes (POLICY
    from the file's GUEST_POLICY); refused where the profile gives one too."""
    if spec.id_block is not None:
        reason = "the IGVM file carries an SNP_ID_BLOCK; not given again"
        raise ProfileError([FieldProblem("snp.id_block", reason)])
    from cvmlaunch.abi.idblock import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, IdAuth, IdBlock

    def key(igvm_key: bytes) -> bytes:
        # IGVM: CURVE u32, reserved u32, QX[72], QY[72]; the ABI has no reserved word.
        return (igvm_key[:4] + igvm_key[8:152]).ljust(PUBLIC_KEY_SIZE, b"\0")

    block = IdBlock(directive.ld, directive.family_id, directive.image_id, directive.guest_svn,
                    spec.snp_policy, directive.version)  # fmt: skip
    author = bool(directive.author_key_enabled)
    auth = IdAuth(
        directive.id_key_signature.ljust(SIGNATURE_SIZE, b"\0"),
        key(directive.id_public_key),
        directive.author_key_signature.ljust(SIGNATURE_SIZE, b"\0") if author
        else bytes(SIGNATURE_SIZE),
        key(directive.author_public_key) if author else bytes(PUBLIC_KEY_SIZE),
        directive.id_key_algorithm,
        directive.author_key_algorithm,
    )  # fmt: skip
    return IdBlockConfig(block=block.pack(), auth=auth.pack())
