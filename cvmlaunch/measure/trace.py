"""The measurement trace: one step per measured unit, with the digest after it."""

from __future__ import annotations

from typing import NamedTuple

from cvmlaunch.abi.snp import PageType
from cvmlaunch.plan.ops import OpKind


class TraceStep(NamedTuple):
    """One measured unit: an SNP page (PAGE_INFO) or an SEV/SEV-ES LAUNCH_UPDATE buffer.

    `contents` is what the platform hashed of the unit's bytes (SNP: PAGE_INFO.CONTENTS;
    SEV/SEV-ES: SHA-256 of the buffer), `digest` the launch digest after the step.
    """

    step: int
    kind: OpKind
    label: str
    gpa: int
    size: int
    page_type: PageType
    contents: bytes
    digest: bytes

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.step,
            "kind": str(self.kind),
            "label": self.label,
            "gpa": f"{self.gpa:#x}",
            "size": self.size,
            "page_type": self.page_type.name,
            "contents": self.contents.hex(),
            "digest": self.digest.hex(),
        }


class TdTraceStep(NamedTuple):
    """One MRTD record: a TDH.MEM.PAGE.ADD of a page or a TDH.MR.EXTEND of a 256-byte chunk.

    `digest` is the SHA-384 of every record so far: the MRTD if the TD were finalized there.
    """

    step: int
    record: str
    label: str
    gpa: int
    section: int
    digest: bytes

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.step,
            "record": self.record,
            "label": self.label,
            "gpa": f"{self.gpa:#x}",
            "section": self.section,
            "digest": self.digest.hex(),
        }
