"""The confidential-computing technologies a guest can be launched with."""

from __future__ import annotations

from enum import StrEnum


class Technology(StrEnum):
    """The confidential-computing technology a guest is launched with."""

    SEV = "sev"
    SEV_ES = "sev-es"
    SEV_SNP = "sev-snp"
    TDX = "tdx"


# sev-snp-measure's `--mode` names, which `--technology` accepts as well (its `sev` is ours).
# Flags only: a profile's `technology` key takes the names above, its one spelling.
MODE_ALIASES = {"snp": Technology.SEV_SNP, "seves": Technology.SEV_ES}
