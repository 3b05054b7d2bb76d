"""The measured step: the one record of "this went into the guest, measured so", shared by
the measure trace, the calls a launch hands the kernel, the evidence diff compares and the
runs explain tells (a run is a slice of steps).

A step is a measured unit (an SNP page's PAGE_INFO, an SEV LAUNCH_UPDATE buffer, a TDX MRTD
record) with the digest after it, or a map_memory call (a range of pages and its source).
Documents (`measure --trace --json`, `launch --json`) are read into steps once, at the edge.
"""

from __future__ import annotations

from enum import StrEnum

from cvmlaunch.abi.snp import PAGE_SIZE, PageType
from cvmlaunch.abi.vmsa import SaveArea, Segment
from cvmlaunch.namedtuple import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Mapping


class StepKind(StrEnum):
    """What a step (and the plan's page operation behind it) puts into the guest."""

    FIRMWARE = "firmware"
    SEV_METADATA = "sev-metadata"
    KERNEL_HASHES = "kernel-hashes"
    VMSA = "vmsa"
    PAGE_ADD = "MEM.PAGE.ADD"  # a TDX MRTD record: a page's GPA
    MR_EXTEND = "MR.EXTEND"  # a TDX MRTD record: a 256-byte chunk and its GPA
    TD_SECTION = "td-section"  # a TDVF section handed to the kernel in one call
    MAP_MEMORY = "map_memory"  # a recorded call, of whatever operation
    EVENT = "event"  # a TCG event-log event: what was extended into an RTMR (or logged only)


TD_RECORDS = frozenset({StepKind.PAGE_ADD, StepKind.MR_EXTEND})


class TdAction(StrEnum):
    """What the TDX module does with a TDVF section's pages."""

    PAGE_ADD = "page-add"  # TDH.MEM.PAGE.ADD: the GPA enters MRTD, the contents do not
    PAGE_ADD_EXTEND = "page-add+extend"  # ... then TDH.MR.EXTEND: the contents enter MRTD
    PAGE_AUG = "page-aug"  # accepted by the guest later (TDH.MEM.PAGE.AUG): not measured


class Step(NamedTuple):
    """One step. Fields a kind of step does not have are None.

    `contents` is what was hashed of the step's bytes: the SNP PAGE_INFO.CONTENTS, the SHA-256
    of an SEV buffer, or the SHA-256 of a map_memory call's source; `digest` is the launch
    digest (MRTD) right after the step. `vmsa` names a VMSA page's registers.
    """

    number: int  # the step's position (not "index": tuple has an index method)
    kind: StepKind
    label: str
    gpa: int
    size: int = PAGE_SIZE
    page_type: PageType | None = None
    action: TdAction | None = None
    contents: bytes | None = None
    digest: bytes | None = None
    section: int | None = None
    vcpu: int | None = None
    vmsa: Mapping[str, int] | None = None
    file_offset: int | None = None
    source: memoryview | None = None  # the bytes a map_memory call hands over
    section_type: str | None = None  # the SEV metadata or TDVF type of `section`, by name
    # An EVENT step (`contents` is the event's digest in the replayed bank, `digest` the
    # RTMR right after it, `file_offset` the record's offset in the log, `size` the event
    # data's, `label` the decoded event data):
    rtmr: int | None = None  # the RTMR (0..3) it extends; None: not extended
    mr_index: int | None = None  # the CC MR index as logged (1..4 = RTMR0..3)
    event_type: int | None = None  # the TCG event type (abi.eventlog.EventType)
    digests: Mapping[int, bytes] | None = None  # every bank's digest, by TPM_ALG_ID
    event_data: bytes | None = None  # the event data as logged
    details: Mapping[str, object] | None = None  # the event data decoded, field by field

    @property
    def pages(self) -> int:
        """The pages the step covers (an SEV buffer shorter than a page is in one)."""
        return -(-self.size // PAGE_SIZE)

    @property
    def call_type(self) -> str:
        """How a map_memory call names what it maps: the page type, or the TDX action."""
        if self.action is not None:
            return str(self.action)
        return self.page_type.name if self.page_type is not None else str(self.kind)


def vmsa_fields(state: SaveArea) -> dict[str, int]:
    """A save area's fields by name, segments flattened (`cs.attrib`, `cs.base`, ...)."""
    out: dict[str, int] = {}
    for name in state._fields:
        value = getattr(state, name)
        if isinstance(value, Segment):
            out.update(zip([f"{name}.{part}" for part in value._fields], value, strict=True))
        else:
            out[name] = int(value)
    return out
