"""The SEV-SNP launch digest of an IGVM file: its page operations (plan/igvm.py) folded
through the SNP PAGE_INFO chain (`measure.snp.extend`), starting from 48 zero bytes."""

from __future__ import annotations

from hashlib import sha384

from cvmlaunch.abi.snp import LD_SIZE, PAGE_SIZE, ZERO_CONTENTS
from cvmlaunch.firmware.igvm import IgvmFile
from cvmlaunch.measure.snp import extend
from cvmlaunch.plan.igvm import snp_page_ops

_ZERO_PAGE = bytes(PAGE_SIZE)
# Most pages of a kernel's IGVM file are zero pages (bss, page tables to be): one digest
# serves them all.
_ZERO_PAGE_CONTENTS = sha384(_ZERO_PAGE).digest()


def snp_launch_digest(igvm: IgvmFile, *, native_zero: bool = False) -> bytes:
    """The launch digest (MEASUREMENT) an SEV-SNP launch of `igvm` produces; `native_zero`
    as in `plan.igvm.snp_page_ops`."""
    ld = bytes(LD_SIZE)
    for op in snp_page_ops(igvm, native_zero=native_zero):
        data = op.data if op.page_type.measures_contents else None
        for offset in range(0, op.size, PAGE_SIZE):
            contents = ZERO_CONTENTS
            if data is not None:
                page = data[offset : offset + PAGE_SIZE]
                contents = _ZERO_PAGE_CONTENTS if page == _ZERO_PAGE else sha384(page).digest()
            ld = extend(ld, contents, op.page_type, op.gpa + offset)
    return ld
