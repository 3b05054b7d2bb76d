"""CPU models and signatures, asserted against published values."""

from __future__ import annotations

import pytest

from cvmlaunch.abi.cpu import CPU_MODELS, cpu_signature, split_signature


@pytest.mark.parametrize(
    ("name", "signature"),
    [
        ("EPYC-v4", 0x800F12),
        ("EPYC-Rome", 0x830F10),
        ("EPYC-Milan-v2", 0xA00F11),
        ("EPYC-Genoa", 0xA10F10),
        ("EPYC-Turin", 0xB00F00),
        ("EPYC-IBPB", 0x800F12),
    ],
)
def test_cpu_models(name: str, signature: int) -> None:
    assert cpu_signature(*CPU_MODELS[name]) == signature
    assert split_signature(signature) == CPU_MODELS[name]


def test_cpu_signature_low_families() -> None:
    assert cpu_signature(14, 1, 2) == 0x0E12
    assert split_signature(0x0E12) == (14, 1, 2)
    assert cpu_signature(6, 0x8F, 8) == 0x806F8
