"""x86 CPUID signatures and the QEMU AMD EPYC CPU models that SEV guests run as.

The signature is CPUID Fn0000_0001_EAX (AMD CPUID Specification 25481, "Family, Model,
Stepping Identifiers"). Under QEMU, KVM puts it in RDX of every initial VMSA, so the CPU
model given with `-cpu` is part of an SEV-ES/SNP launch digest. Family/model/stepping per
model: QEMU target/i386/cpu.c `builtin_x86_defs`; model versions (-v1, -v2, …) change
features and cache data, never family/model/stepping.
"""

from __future__ import annotations

from cvmlaunch.namedtuple import NamedTuple


class FamilyModelStepping(NamedTuple):
    family: int
    model: int
    stepping: int


def cpu_signature(family: int, model: int, stepping: int) -> int:
    """CPUID(1).EAX for a display family, model and stepping.

    Families above 0xF are encoded as base family 0xF plus the extended family.
    """
    if family > 0xF:
        base_family, ext_family = 0xF, family - 0xF
    else:
        base_family, ext_family = family, 0
    return (
        (ext_family & 0xFF) << 20
        | (model >> 4 & 0xF) << 16
        | (base_family & 0xF) << 8
        | (model & 0xF) << 4
        | (stepping & 0xF)
    )


def split_signature(signature: int) -> FamilyModelStepping:
    """Display family, model and stepping of a CPUID(1).EAX signature."""
    base_family = signature >> 8 & 0xF
    family = base_family + (signature >> 20 & 0xFF) if base_family == 0xF else base_family
    model = signature >> 4 & 0xF
    if base_family in (0x6, 0xF):
        model |= (signature >> 16 & 0xF) << 4
    return FamilyModelStepping(family, model, signature & 0xF)


_EPYC = FamilyModelStepping(23, 1, 2)
_ROME = FamilyModelStepping(23, 49, 0)
_MILAN = FamilyModelStepping(25, 1, 1)
_GENOA = FamilyModelStepping(25, 17, 0)
_TURIN = FamilyModelStepping(26, 0, 0)

# QEMU -cpu model name -> family/model/stepping.
CPU_MODELS: dict[str, FamilyModelStepping] = {
    "EPYC": _EPYC,
    "EPYC-v1": _EPYC,
    "EPYC-v2": _EPYC,
    "EPYC-IBPB": _EPYC,
    "EPYC-v3": _EPYC,
    "EPYC-v4": _EPYC,
    "EPYC-v5": _EPYC,
    "EPYC-Rome": _ROME,
    "EPYC-Rome-v1": _ROME,
    "EPYC-Rome-v2": _ROME,
    "EPYC-Rome-v3": _ROME,
    "EPYC-Rome-v4": _ROME,
    "EPYC-Rome-v5": _ROME,
    "EPYC-Milan": _MILAN,
    "EPYC-Milan-v1": _MILAN,
    "EPYC-Milan-v2": _MILAN,
    "EPYC-Milan-v3": _MILAN,
    "EPYC-Genoa": _GENOA,
    "EPYC-Genoa-v1": _GENOA,
    "EPYC-Genoa-v2": _GENOA,
    "EPYC-Turin": _TURIN,
    "EPYC-Turin-v1": _TURIN,
}


# QEMU's generic models (target/i386/cpu.c builtin_x86_defs): a guest may boot with one
# (libvirt's test domains run on qemu64, its default), but no AMD part has its signature, so
# they are named, not searched (`solve` and `explain` read CPU_MODELS).
QEMU_MODELS: dict[str, FamilyModelStepping] = {"qemu64": FamilyModelStepping(6, 6, 3)}


def lookup_model(name: str) -> str | None:
    """The canonical spelling of a CPU model name (case-insensitive), or None if unknown."""
    folded = name.casefold()
    for known in (*CPU_MODELS, *QEMU_MODELS):
        if known.casefold() == folded:
            return known
    return None


def model_signature(name: str) -> int:
    """The CPUID signature of the model `lookup_model` spelled `name`."""
    return cpu_signature(*(CPU_MODELS.get(name) or QEMU_MODELS[name]))


def models_with_signature(signature: int) -> tuple[str, ...]:
    """The CPU_MODELS names whose CPUID signature is `signature`, in table order.

    Models that share a signature are indistinguishable in a launch digest.
    """
    return tuple(name for name, fms in CPU_MODELS.items() if cpu_signature(*fms) == signature)
