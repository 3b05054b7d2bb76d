"""Differential test: cvmlaunch against the reference tool sev-snp-measure 0.0.13.

The fixed vectors in tests/vectors pin individual digests; this module samples the wider
input space. A fixed-seed generator draws a few hundred guest configurations (technology,
VMM flavour, vCPU count, CPU given by model name / raw signature / family-model-stepping,
SNP guest features, firmware image, and measured direct boot with or without
kernel/initrd/command line), and for each one computes the launch digest twice in this
process: with cvmlaunch (GuestSpec -> build_plan -> measure) and with the reference's
`guest.calc_launch_digest`, called the way its command line calls it. The two must agree
byte for byte.

Where the reference takes inputs that do not affect the result (vCPUs and CPU signature for
plain SEV, the signature for EC2/GCE when none is given), they are passed exactly as its CLI
would pass them, so the comparison also covers our own handling of "not given".

The draw is deterministic (the same seed gives the same configurations, in the same order)
so a failing test id names a reproducible configuration. `test_drawn_configs_cover_the_space`
keeps the coverage claims above honest if the generator is ever edited.
"""

from __future__ import annotations

import random
import string
import tomllib
from collections import Counter
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import pytest
from sevsnpmeasure import guest as ref_guest
from sevsnpmeasure import vcpu_types as ref_vcpu_types
from sevsnpmeasure import vmm_types as ref_vmm_types
from sevsnpmeasure.sev_mode import SevMode as RefSevMode

from cvmlaunch.guest.spec import BootFile, CpuSpec, DirectBoot, GuestSpec, Technology, Vmm
from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan

# What the reference tool measures (TDX has its own differential test).
SEV_FAMILY = (Technology.SEV, Technology.SEV_ES, Technology.SEV_SNP)

pytestmark = [pytest.mark.reference, pytest.mark.differential]

REFERENCE_VERSION = "0.0.13"
SEED = 0x5EF_2024
CONFIG_COUNT = 300

VECTORS = Path(__file__).parents[1] / "vectors" / "snp"
DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")
FAKE_KERNEL = VECTORS / "fake-kernel.bin"
TEST_INITRD = VECTORS / "test-initrd.cpio"

# The reference's model table (QEMU model name -> CPUID signature); every entry is drawn.
REFERENCE_CPU_MODELS: dict[str, int] = dict(ref_vcpu_types.CPU_SIGS)


class Firmware(StrEnum):
    """The firmware images a configuration can use (value: short name for test ids)."""

    AMDSEV = "AmdSev"
    OVMFX64 = "OvmfX64"
    DEBIAN_SUFFIX = "debian-suffix"
    DEBIAN_FULL = "OVMF.fd"

    @property
    def path(self) -> Path:
        return {
            Firmware.AMDSEV: VECTORS / "ovmf_AmdSev_suffix.bin",
            Firmware.OVMFX64: VECTORS / "ovmf_OvmfX64_suffix.bin",
            Firmware.DEBIAN_SUFFIX: VECTORS / "debian-ovmf-2022.11_OVMF.fd_suffix.bin",
            Firmware.DEBIAN_FULL: DEBIAN_OVMF,
        }[self]

    @property
    def has_kernel_hashes(self) -> bool:
        """Only the AmdSev build has the hash table area needed for measured direct boot."""
        return self is Firmware.AMDSEV


class Cpu(NamedTuple):
    """How a configuration names its guest CPU; exactly one form is used."""

    name: str | None = None
    signature: int | None = None
    fms: tuple[int, int, int] | None = None

    def ours(self) -> CpuSpec:
        if self.name is not None:
            return CpuSpec.from_name(self.name)
        if self.signature is not None:
            return CpuSpec(self.signature)
        assert self.fms is not None
        return CpuSpec.from_family_model_stepping(*self.fms)

    def reference_signature(self) -> int:
        """The signature as the reference CLI derives it (--vcpu-type/-sig/-family)."""
        if self.name is not None:
            return REFERENCE_CPU_MODELS[self.name]
        if self.signature is not None:
            return self.signature
        assert self.fms is not None
        sig = ref_vcpu_types.cpu_sig(*self.fms)
        assert isinstance(sig, int)
        return sig

    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.signature is not None:
            return f"sig{self.signature:#x}"
        assert self.fms is not None
        return "fms{}.{}.{}".format(*self.fms)


class BootInput(NamedTuple):
    """A kernel or initrd: a fixture file, or `size` random bytes drawn from `seed`."""

    fixture: Path | None = None
    size: int = 0
    seed: int = 0

    def materialise(self, tmp_path: Path, role: str) -> Path:
        if self.fixture is not None:
            return self.fixture
        path = tmp_path / f"{role}-{self.seed}.bin"
        path.write_bytes(random.Random(self.seed).randbytes(self.size))
        return path

    def label(self) -> str:
        return self.fixture.name if self.fixture is not None else f"random{self.size}B"


class Boot(NamedTuple):
    """Measured direct boot. `cmdline` None means no --append at all (ours: "")."""

    kernel: BootInput
    initrd: BootInput | None
    cmdline: str | None

    def label(self) -> str:
        initrd = self.initrd.label() if self.initrd is not None else "none"
        if self.cmdline is None:
            append = "none"
        elif not self.cmdline.isascii():
            append = f"utf8-{len(self.cmdline.encode())}B"
        else:
            append = f"{len(self.cmdline)}B"
        return f"kernel={self.kernel.label()},initrd={initrd},append={append}"


class Config(NamedTuple):
    technology: Technology
    vmm: Vmm
    vcpus: int
    cpu: Cpu | None
    guest_features: int
    firmware: Firmware
    boot: Boot | None

    def label(self, index: int) -> str:
        parts = [f"{index:03d}", self.technology.value, self.vmm.value, self.firmware.value]
        if self.technology is not Technology.SEV:
            parts.append(f"{self.vcpus}vcpu")
            parts.append(self.cpu.label() if self.cpu is not None else "nocpu")
        if self.technology is Technology.SEV_SNP:
            parts.append(f"gf{self.guest_features:#x}")
        parts.append(self.boot.label() if self.boot is not None else "noboot")
        return "-".join(parts)


# --------------------------------------------------------------------------------------------
# Drawing configurations


NAMED_GUEST_FEATURES = (0x1, 0x21, 0x3, 0x41)
ALL_VMMS = (Vmm.QEMU, Vmm.EC2, Vmm.GCE)
CMDLINE_CHARS = string.ascii_letters + string.digits + string.punctuation + " "
NON_ASCII_CMDLINE = "console=ttyS0 hostname=café-λ-节点 motd=„grüße“ 🙂"


def _draw_cpu(rng: random.Random, vmm: Vmm) -> Cpu | None:
    if vmm is not Vmm.QEMU and rng.random() < 0.5:
        return None  # EC2 and GCE need no CPU; the reference CLI then passes vcpu_sig=None
    form = rng.random()
    if form < 0.6:
        return Cpu(name=rng.choice(sorted(REFERENCE_CPU_MODELS)))
    if form < 0.8:
        return Cpu(signature=rng.getrandbits(32))
    family = rng.choice((rng.randint(0, 0xF + 0xFF), 0xF, 0x10, 23, 25, 26, 0xF + 0xFF))
    return Cpu(fms=(family, rng.randint(0, 0xFF), rng.randint(0, 0xF)))


def _draw_guest_features(rng: random.Random) -> int:
    if rng.random() < 0.7:
        return rng.choice(NAMED_GUEST_FEATURES)
    return rng.getrandbits(rng.choice((8, 16, 64))) | 1  # bit 0 (SNPActive) is mandatory


def _draw_random_input(rng: random.Random) -> BootInput:
    size = rng.choice((0, 1, 4095, 4096, 65537, rng.randint(2, 300_000)))
    return BootInput(size=size, seed=rng.getrandbits(32))


def _draw_cmdline(rng: random.Random) -> str | None:
    form = rng.random()
    if form < 0.15:
        return None
    if form < 0.3:
        return ""
    if form < 0.4:
        return NON_ASCII_CMDLINE
    return "".join(rng.choice(CMDLINE_CHARS) for _ in range(rng.randint(1, 200)))


def _draw_boot(rng: random.Random) -> Boot:
    kernel = _draw_random_input(rng) if rng.random() < 0.15 else BootInput(FAKE_KERNEL)
    initrd_form = rng.random()
    initrd: BootInput | None
    if initrd_form < 0.45:
        initrd = BootInput(TEST_INITRD)
    elif initrd_form < 0.85:
        initrd = None
    else:
        initrd = _draw_random_input(rng)
    return Boot(kernel, initrd, _draw_cmdline(rng))


def draw_config(rng: random.Random) -> Config:
    """One random configuration that both tools accept."""
    technology = rng.choices(
        (Technology.SEV_SNP, Technology.SEV_ES, Technology.SEV), weights=(70, 18, 12)
    )[0]
    vmm = rng.choice(ALL_VMMS)
    vcpus = rng.choice((1, 1, 2, 64, rng.randint(1, 64), rng.randint(1, 64), rng.randint(1, 8)))
    firmware = rng.choices(list(Firmware), weights=(40, 20, 20, 20))[0]
    boot = _draw_boot(rng) if firmware.has_kernel_hashes and rng.random() < 0.65 else None
    return Config(
        technology=technology,
        vmm=vmm,
        vcpus=vcpus,
        cpu=_draw_cpu(rng, vmm),
        guest_features=_draw_guest_features(rng) if technology is Technology.SEV_SNP else 0x1,
        firmware=firmware,
        boot=boot,
    )


def anchor_configs(rng: random.Random) -> list[Config]:
    """Configurations placed on purpose, so coverage does not depend on luck.

    Each starts as a random draw; only the fields that matter for the anchor are fixed.
    """
    out: list[Config] = []

    def fresh() -> Config:
        return draw_config(rng)

    snp, es, qemu = Technology.SEV_SNP, Technology.SEV_ES, Vmm.QEMU
    firmwares, amdsev = list(Firmware), Firmware.AMDSEV
    # Every reference CPU model, under QEMU (the only VMM that measures the signature).
    for i, name in enumerate(sorted(REFERENCE_CPU_MODELS)):
        anchor = fresh()._replace(technology=snp, vmm=qemu, cpu=Cpu(name=name))
        out.append(anchor._replace(firmware=firmwares[i % 4], boot=None))
    out.append(fresh()._replace(technology=es, vmm=qemu, cpu=Cpu(name="EPYC-Milan")))
    # vCPU edge counts, for both technologies with VMSAs.
    for vcpus in (1, 2, 64):
        out.append(
            fresh()._replace(technology=snp, vmm=qemu, vcpus=vcpus, cpu=Cpu(name="EPYC-v4"))
        )
        out.append(
            fresh()._replace(technology=es, vmm=qemu, vcpus=vcpus, cpu=Cpu(name="EPYC-Rome"))
        )
    # The named guest-feature values.
    for features in NAMED_GUEST_FEATURES:
        out.append(fresh()._replace(technology=snp, guest_features=features))
    # Raw signatures and family/model/stepping at the edges of the encoding.
    for signature in (0, 0x800F12, 0xA10F11, 0xFFFFFFFF):
        out.append(fresh()._replace(technology=snp, vmm=qemu, cpu=Cpu(signature=signature)))
    for fms in ((0, 0, 0), (15, 0xFF, 0xF), (16, 1, 2), (23, 49, 0), (270, 0xFF, 0xF)):
        out.append(fresh()._replace(technology=snp, vmm=qemu, cpu=Cpu(fms=fms)))
    # Every technology on every firmware under every VMM; the clouds also without a CPU.
    for technology in SEV_FAMILY:
        for firmware in Firmware:
            for vmm in ALL_VMMS:
                anchor = fresh()._replace(technology=technology, vmm=vmm)
                out.append(anchor._replace(firmware=firmware, boot=None))
            for vmm in (Vmm.EC2, Vmm.GCE):
                anchor = fresh()._replace(technology=technology, vmm=vmm, cpu=None)
                out.append(anchor._replace(firmware=firmware, boot=None))
    # Direct boot: each technology with the fixture files and every command-line form.
    for technology in SEV_FAMILY:
        for cmdline in (None, "", NON_ASCII_CMDLINE, "console=ttyS0 root=/dev/vda1 ro"):
            for initrd in (None, BootInput(TEST_INITRD)):
                boot = Boot(BootInput(FAKE_KERNEL), initrd, cmdline)
                out.append(fresh()._replace(technology=technology, firmware=amdsev, boot=boot))
    # Random-bytes kernels and initrds, including empty files and chunk-boundary sizes.
    for size in (0, 1, 4096, 1 << 20 | 3):
        random_input = BootInput(size=size, seed=rng.getrandbits(32))
        boot = Boot(random_input, _draw_random_input(rng), _draw_cmdline(rng))
        out.append(fresh()._replace(technology=snp, firmware=amdsev, boot=boot))
        boot = Boot(BootInput(FAKE_KERNEL), random_input, "")
        out.append(fresh()._replace(technology=es, firmware=amdsev, boot=boot))
    return [_make_consistent(c) for c in out]


def _make_consistent(config: Config) -> Config:
    """Repair what overriding single fields of a random draw can break.

    (Anchors that set a firmware or a boot set both, so direct boot stays on AmdSev.)
    """
    if config.vmm is Vmm.QEMU and config.cpu is None:
        config = config._replace(cpu=Cpu(name="EPYC"))  # QEMU sev-es/snp needs a CPU
    if config.technology is not Technology.SEV_SNP:
        config = config._replace(guest_features=0x1)  # only SNP measures guest features
    return config


def draw_configs(count: int = CONFIG_COUNT, seed: int = SEED) -> list[Config]:
    rng = random.Random(seed)
    configs = anchor_configs(rng)
    while len(configs) < count:
        configs.append(draw_config(rng))
    return configs


CONFIGS = draw_configs()


# --------------------------------------------------------------------------------------------
# The two implementations


_REF_MODES = {
    Technology.SEV: RefSevMode.SEV,
    Technology.SEV_ES: RefSevMode.SEV_ES,
    Technology.SEV_SNP: RefSevMode.SEV_SNP,
}
_REF_VMMS = {
    Vmm.QEMU: ref_vmm_types.VMMType.QEMU,
    Vmm.EC2: ref_vmm_types.VMMType.ec2,
    Vmm.GCE: ref_vmm_types.VMMType.gce,
}


class Inputs(NamedTuple):
    """The files of one configuration, on disk."""

    firmware: Path
    kernel: Path | None
    initrd: Path | None


def our_digest(config: Config, files: Inputs) -> bytes:
    boot = None
    if config.boot is not None:
        assert files.kernel is not None
        initrd = BootFile(path=files.initrd) if files.initrd is not None else None
        boot = DirectBoot(BootFile(path=files.kernel), initrd, config.boot.cmdline or "")
    spec = GuestSpec(
        technology=config.technology,
        firmware=files.firmware,
        vcpus=config.vcpus,
        cpu=config.cpu.ours() if config.cpu is not None else None,
        vmm=config.vmm,
        guest_features=config.guest_features,
        boot=boot,
    )
    return measure(build_plan(spec)).digest


def reference_digest(config: Config, files: Inputs) -> bytes:
    """sev-snp-measure's digest, with arguments prepared as its cli.main prepares them."""
    if config.technology is Technology.SEV:
        vcpus: int | None = None
        vcpu_sig: int | None = 0  # cli.py: no --vcpus needed, get_vcpu_sig returns 0
    else:
        vcpus = config.vcpus
        vcpu_sig = config.cpu.reference_signature() if config.cpu is not None else None
    append = config.boot.cmdline if config.boot is not None else None
    digest = ref_guest.calc_launch_digest(
        _REF_MODES[config.technology],
        vcpus,
        vcpu_sig,
        str(files.firmware),
        str(files.kernel) if files.kernel is not None else None,
        str(files.initrd) if files.initrd is not None else None,
        append,
        config.guest_features,
        snp_ovmf_hash_str="",
        vmm_type=_REF_VMMS[config.vmm],
    )
    assert isinstance(digest, bytes)
    return digest


def prepare_inputs(config: Config, tmp_path: Path) -> Inputs:
    firmware = config.firmware.path
    if not firmware.is_file():
        pytest.skip(
            f"{firmware} not present: Debian's OVMF image is needed (apt-get install ovmf)"
        )
    if config.boot is None:
        return Inputs(firmware, None, None)
    kernel = config.boot.kernel.materialise(tmp_path, "kernel")
    initrd = config.boot.initrd
    return Inputs(
        firmware, kernel, initrd.materialise(tmp_path, "initrd") if initrd is not None else None
    )


# --------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("config", [pytest.param(c, id=c.label(i)) for i, c in enumerate(CONFIGS)])
def test_digest_matches_reference(config: Config, tmp_path: Path) -> None:
    files = prepare_inputs(config, tmp_path)
    ours = our_digest(config, files)
    theirs = reference_digest(config, files)
    assert ours.hex() == theirs.hex(), f"digest differs from sev-snp-measure for {config}"


def test_reference_is_the_pinned_version() -> None:
    """The comparison is against one release; a different one may legitimately differ."""
    assert version("sev-snp-measure") == REFERENCE_VERSION


def test_drawn_configs_cover_the_space() -> None:
    assert len(CONFIGS) >= 200
    assert draw_configs() == CONFIGS, "the draw must be deterministic"
    with_vmsa = [c for c in CONFIGS if c.technology is not Technology.SEV]

    # Every reference CPU model where it is measured, and the two other ways to give a CPU.
    named = {c.cpu.name for c in with_vmsa if c.vmm is Vmm.QEMU and c.cpu is not None}
    assert set(REFERENCE_CPU_MODELS) <= named
    assert any(c.cpu is not None and c.cpu.signature is not None for c in with_vmsa)
    assert any(c.cpu is not None and c.cpu.fms is not None for c in with_vmsa)
    assert any(c.cpu is None and c.vmm is not Vmm.QEMU for c in with_vmsa)

    vmms = Counter(c.vmm for c in CONFIGS)
    assert all(vmms[vmm] >= 20 for vmm in Vmm), vmms
    assert Counter(c.technology for c in CONFIGS).keys() == set(SEV_FAMILY)
    assert {c.firmware for c in CONFIGS} == set(Firmware)
    assert all(
        any(c.firmware is f and c.technology is t for c in CONFIGS)
        for f in Firmware
        for t in SEV_FAMILY
    )

    vcpus = {c.vcpus for c in with_vmsa}
    assert {1, 2, 64} <= vcpus
    assert all(1 <= n <= 64 for n in vcpus)

    features = {c.guest_features for c in CONFIGS if c.technology is Technology.SEV_SNP}
    assert set(NAMED_GUEST_FEATURES) <= features
    assert features - set(NAMED_GUEST_FEATURES), "no random guest-feature value was drawn"
    assert all(f & 1 for f in features)

    # Direct boot: with and without, for every technology, in every form.
    for technology in SEV_FAMILY:
        boots = [c.boot for c in CONFIGS if c.technology is technology]
        assert None in boots and any(b is not None for b in boots), technology
    assert all(c.firmware.has_kernel_hashes for c in CONFIGS if c.boot is not None)
    booted = [c.boot for c in CONFIGS if c.boot is not None]
    assert any(b.initrd is None for b in booted)
    assert any(b.initrd is not None and b.initrd.fixture == TEST_INITRD for b in booted)
    assert any(b.kernel.fixture is None for b in booted), "no random-bytes kernel"
    assert any(b.initrd is not None and b.initrd.fixture is None for b in booted)
    cmdlines = [b.cmdline for b in booted]
    assert None in cmdlines
    assert "" in cmdlines
    assert any(s is not None and not s.isascii() for s in cmdlines)
    assert any(s and s.isascii() for s in cmdlines)


SHIPPED_PROFILES = [
    path
    for path in (
        *sorted((Path(__file__).parents[2] / "profiles").glob("*.toml")),
        Path(__file__).parents[2] / "cvmlaunch" / "data" / "default.toml",
    )
    # The reference measures the SEV family; TDX profiles are checked in test_tdx_vectors.
    if tomllib.loads(path.read_text())["technology"] in SEV_FAMILY
]


@pytest.mark.parametrize("path", SHIPPED_PROFILES, ids=lambda p: p.name)
def test_shipped_profiles_match_reference(path: Path) -> None:
    """Every profile we ship (and the embedded default) measures as the reference says."""
    from cvmlaunch.guest.profile import load_profile

    spec = load_profile(path).to_spec()
    if not spec.firmware.is_file():
        pytest.skip(f"{spec.firmware} not present (apt-get install ovmf)")
    boot = spec.boot
    kernel = initrd = None
    if boot is not None:
        kernel = str(boot.kernel.path)
        initrd = str(boot.initrd.path) if boot.initrd is not None else None
    sev = spec.technology is Technology.SEV
    theirs = ref_guest.calc_launch_digest(
        _REF_MODES[spec.technology],
        None if sev else spec.vcpus,
        0 if spec.cpu is None else spec.cpu.signature,
        str(spec.firmware),
        kernel,
        initrd,
        boot.cmdline if boot is not None else None,
        spec.guest_features,
        snp_ovmf_hash_str="",
        vmm_type=_REF_VMMS[spec.vmm],
    )
    assert isinstance(theirs, bytes)
    assert measure(build_plan(spec)).digest.hex() == theirs.hex()
