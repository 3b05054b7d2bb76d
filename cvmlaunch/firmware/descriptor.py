"""An OVMF image described by the facts a measurement takes from it, for verifiers that hold
those facts rather than the image (dstack publishes them per image).

An SEV-SNP launch digest takes from the image only: the digest after its pages (the
profile's `firmware.digest`), where it is mapped (its size: it ends at 4 GiB), the SEV
metadata sections (GPA, size, type), the AP start address of the SEV-ES reset block, and
the GPA range of the kernel hashes table. `describe` reads them off a parsed image; `image`
gives back an OvmfImage that plans exactly as the image does, with no bytes.

A TD takes its MRTD (which depends on the page order and the raw-data tail, so the
descriptor holds one per pair), the TDVF sections (which lay out the TD HOB, RTMR0's first
event) and the SHA-384 of the CFV (RTMR0's second). An SEV or SEV-ES digest is one SHA-256
over the image and what follows it: the descriptor gives its chaining value after the image,
the AP start address and the hash table area.
"""

from __future__ import annotations

from cvmlaunch.abi.ovmf import SevSectionType
from cvmlaunch.abi.snp import PAGE_SIZE
from cvmlaunch.firmware.ovmf import FOUR_GIB, GpaRange, OvmfImage, SevSection, first_overlap
from cvmlaunch.firmware.tdvf import TdvfMetadata
from cvmlaunch.namedtuple import NamedTuple


class FirmwareDescriptor(NamedTuple):
    """What an SEV-SNP measurement takes from an OVMF image (see the module's text)."""

    size: int  # of the image, in bytes: it is mapped to end at 4 GiB
    sha256: bytes  # of the image described
    sev_metadata: tuple[SevSection, ...] = ()
    sev_es_reset_address: int | None = None
    hash_table_area: GpaRange | None = None
    # TDX
    tdvf: TdvfMetadata | None = None
    mrtds: tuple[tuple[str, str, bytes], ...] = ()  # (page order, raw-data tail, MRTD)
    cfv_sha384: bytes | None = None
    # SEV and SEV-ES: the SHA-256 chaining value after the image (measure/sha256.py)
    sha256_chaining: bytes | None = None

    def mrtd(self, page_order: str, raw_data_tail: str) -> bytes | None:
        """The MRTD for a page order and raw-data tail (their values: "page", "image")."""
        return next((m for o, t, m in self.mrtds if (o, t) == (page_order, raw_data_tail)), None)

    def image(self) -> OvmfImage:
        """The image as the plan sees it: its layout without its bytes (whose digest the
        profile gives)."""
        return OvmfImage(b"", (), self.sev_metadata, self.sev_es_reset_address,
                         self.hash_table_area, None, None, self.size)  # fmt: skip

    def problems(self) -> list[tuple[str, str]]:
        """(key under firmware.descriptor, reason) for each fact the others contradict, or
        that no image could have."""
        out = []
        if self.size <= 0 or self.size % PAGE_SIZE or self.size > FOUR_GIB:
            out.append(("size", f"expected a multiple of 4096 up to 4 GiB, got {self.size}"))
        if len(self.sha256) != 32:
            out.append(("sha256", "expected 32 bytes (64 hex digits)"))
        for n, section in enumerate(self.sev_metadata):
            where = f"sev_metadata[{n}]"
            if section.size <= 0 or section.gpa % PAGE_SIZE or section.size % PAGE_SIZE:
                out.append((where, "expected a page-aligned GPA and a size of whole pages"))
            elif section.gpa + section.size > FOUR_GIB:
                out.append((where, "ends above 4 GiB"))
        overlap = first_overlap(self.sev_metadata)
        if overlap is not None:
            first, second = overlap
            out.append((f"sev_metadata[{second.number}]",
                        f"overlaps sev_metadata[{first.number}]"))  # fmt: skip
        hashes = [s for s in self.sev_metadata if s.type == SevSectionType.SNP_KERNEL_HASHES]
        area = self.hash_table_area
        if area is not None and hashes:
            section = hashes[0]
            if not (section.gpa <= area.base and area.end <= section.gpa + section.size):
                out.append(("hash_table", "lies outside the SNP_KERNEL_HASHES section"))
        address = self.sev_es_reset_address
        if address is not None and not 0 <= address < FOUR_GIB:
            out.append(("reset_eip", "expected a 32-bit address"))
        if any(len(m) != 48 for _, _, m in self.mrtds):
            out.append(("mrtd", "expected 48 bytes (96 hex digits) each"))
        if self.sha256_chaining is not None and len(self.sha256_chaining) != 32:
            out.append(("sha256_chaining", "expected 32 bytes (64 hex digits)"))
        if self.cfv_sha384 is not None and len(self.cfv_sha384) != 48:
            out.append(("cfv_sha384", "expected 48 bytes (96 hex digits)"))
        if self.tdvf is not None:
            out += _tdvf_problems(self.tdvf)
        return out


def _tdvf_problems(tdvf: TdvfMetadata) -> list[tuple[str, str]]:
    out = []
    mapped = [s for s in tdvf.sections if s.mem_size]
    overlap = first_overlap(mapped)
    if overlap is not None:
        first, second = overlap
        out.append((f"tdvf_sections[{second.number}]", f"overlaps tdvf_sections[{first.number}]"))
    aligned = "expected a page-aligned GPA and a size of whole pages"
    for section in tdvf.sections:
        if section.gpa % PAGE_SIZE or section.mem_size % PAGE_SIZE:
            out.append((f"tdvf_sections[{section.number}]", aligned))
    return out


def describe(image: OvmfImage, sha256: bytes) -> FirmwareDescriptor:
    """The SEV-SNP facts of parsed image `image` (whose SHA-256 is `sha256`); a TD's are
    measured (measure/describe.py)."""
    return FirmwareDescriptor(
        image.size,
        sha256,
        image.sev_metadata or (),
        image.sev_es_reset_address,
        image.hash_table_area,
    )
