"""The TDX module's context of one TD: the TD_PARAMS TDH.MNG.INIT took, and its MRTD.

It knows nothing of the VM that holds it, so that the VM and the TDX commands that create and
drive it (tdx_module.py) each import it without importing each other.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cvmlaunch.abi.kvm import PAGE_SIZE, ffi
from cvmlaunch.abi.tdx import (
    MR_EXTEND_CHUNK,
    MR_EXTEND_TAG,
    MRTD_RECORD,
    PAGE_ADD_TAG,
    TdAttribute,
)


class TdGuest:
    """The TD as TDH.MNG.INIT configured it, and its MRTD."""

    def __init__(self, params: Any) -> None:
        self.attributes = int(params.attributes)
        self.xfam = int(params.xfam)
        # The identity a TDREPORT carries beside MRTD; no launch step measures it.
        self.mrconfigid = bytes(ffi.buffer(params.mrconfigid))
        self.mrowner = bytes(ffi.buffer(params.mrowner))
        self.mrownerconfig = bytes(ffi.buffer(params.mrownerconfig))
        self.mrtd = hashlib.sha384()
        self.digest: bytes | None = None

    @property
    def debug(self) -> bool:
        return bool(self.attributes & TdAttribute.DEBUG)

    def add_page(self, gpa: int, page: bytes, extend: bool) -> None:
        """TDH.MEM.PAGE.ADD, then TDH.MR.EXTEND over each 256-byte chunk if `extend`."""
        self.mrtd.update(MRTD_RECORD.pack(PAGE_ADD_TAG, gpa))
        if not extend:
            return
        for offset in range(0, PAGE_SIZE, MR_EXTEND_CHUNK):
            self.mrtd.update(MRTD_RECORD.pack(MR_EXTEND_TAG, gpa + offset))
            self.mrtd.update(page[offset : offset + MR_EXTEND_CHUNK])
