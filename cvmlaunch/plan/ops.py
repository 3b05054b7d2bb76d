"""The LaunchPlan: the ordered page operations of a launch, shared by measure and launch.

One plan drives both the expected digest (`measure/`) and the executor that hands the same
pages to the kernel, so the two cannot drift apart.
"""

from __future__ import annotations

from cvmlaunch.abi.snp import PageType
from cvmlaunch.abi.vmsa import SaveArea
from cvmlaunch.firmware.ovmf import OvmfImage
from cvmlaunch.guest.spec import GuestSpec
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.step import Step, StepKind, TdAction, vmsa_fields

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)

if TYPE_CHECKING:  # the TDX and IGVM modules load only when used (CLI start-up)
    from cvmlaunch.abi.tdx import TdvfSectionType
    from cvmlaunch.firmware.igvm import IgvmFile
    from cvmlaunch.firmware.tdvf import TdvfMetadata


class PageOp(NamedTuple):
    """One launch update: `size` bytes at `gpa` of `page_type`, with contents when measured.

    `data` is exactly `size` bytes for NORMAL and VMSA operations and None otherwise (the
    platform measures only the type and GPA of zero, unmeasured, secrets and CPUID pages).
    """

    kind: StepKind  # FIRMWARE, SEV_METADATA, KERNEL_HASHES or VMSA
    gpa: int
    size: int
    page_type: PageType
    data: bytes | None
    label: str
    section: int | None = None
    vcpu: int | None = None
    state: SaveArea | None = None

    def step(
        self, number: int, gpa: int, size: int, *, contents: bytes | None, digest: bytes | None
    ) -> Step:
        """The step that measures `size` bytes at `gpa` of this operation."""
        return Step(
            number,
            self.kind,
            self.label,
            gpa,
            size,
            self.page_type,
            contents=contents,
            digest=digest,
            section=self.section,
            vcpu=self.vcpu if self.state is not None else None,
            vmsa=None if self.state is None else vmsa_fields(self.state),
            # The image is mapped from its start, so a page's file offset is its distance.
            file_offset=gpa - self.gpa if self.kind is StepKind.FIRMWARE else None,
        )


class KernelHashes(NamedTuple):
    """SHA-256 digests of the measured direct-boot inputs, and the table they form."""

    kernel: bytes
    initrd: bytes
    cmdline: bytes
    table: bytes


class LaunchPlan(NamedTuple):
    """Everything a launch does to guest memory before the guest runs, in order.

    For sev-snp, `firmware_digest` (when given) is the precomputed launch digest after the
    firmware pages: it replaces measuring the FIRMWARE operation.
    """

    spec: GuestSpec
    firmware: OvmfImage | None  # None: the image is an IGVM file's (`igvm`)
    firmware_sha256: bytes
    ops: tuple[PageOp, ...]
    kernel_hashes: KernelHashes | None
    firmware_digest: bytes | None
    igvm: IgvmFile | None = None


class TdPageOp(NamedTuple):
    """One TDVF section as the VMM hands it to KVM_TDX_INIT_MEM_REGION.

    `data` holds the initial contents of the section's first len(data) <= size bytes; the
    rest of the section is zero (None: all of it), so zero memory is never materialized.
    """

    gpa: int
    size: int
    action: TdAction
    data: memoryview | None
    label: str
    section: int
    section_type: TdvfSectionType


class TdPlan(NamedTuple):
    """Everything a TD launch does to guest memory before TDH.MR.FINALIZE, in order.

    `td_hob` is the TD HOB written into the TD_HOB section (None if the firmware has none).
    """

    spec: GuestSpec
    firmware_size: int
    firmware_sha256: bytes
    tdvf: TdvfMetadata
    ops: tuple[TdPageOp, ...]
    td_hob: bytes | None
    # The MRTD a firmware descriptor gives (its page contents are not at hand).
    mrtd: bytes | None = None


Plan = LaunchPlan | TdPlan
