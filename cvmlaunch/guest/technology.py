"""The confidential-computing technologies a guest can be launched with."""

from __future__ import annotations

from enum import StrEnum


class Technology(StrEnum):
    """The confidential-computing technology a guest is launched with."""

    SEV = "sev"
    SEV_ES = "sev-es"
    SEV_SNP = "sev-snp"
    TDX = "tdx"
