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
