"""Authenticode SHA-384 of a kernel: the real Debian kernel's published vectors, and a
differential check over generated PE images against a plain whole-file implementation."""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
from pathlib import Path

import pytest

from cvmlaunch.errors import InputError
from cvmlaunch.measure import authenticode as engine
from cvmlaunch.measure.authenticode import (
    SetupHeaderPatch,
    authenticode,
    authenticode_ranges,
    qemu_setup_header,
)
from tests.conftest import TDX_VECTORS

KERNEL = TDX_VECTORS / "vmlinuz-6.1.0-56-amd64"
EXAMPLES = json.loads((TDX_VECTORS / "tdx-vectors.json").read_text())["kernel_examples"]


def test_debian_kernel_unpatched() -> None:
    expected = EXAMPLES["unpatched"]["authenticode_sha384"]
    assert authenticode(KERNEL).hex() == expected


def test_debian_kernel_as_qemu_before_10_2_serves_it() -> None:
    case = EXAMPLES["qemu_patched_mem2GiB_initrd1MiB"]
    initrd = 1 << 20
    assert hashlib.sha256(bytes(initrd)).hexdigest() == EXAMPLES["initrd"]["sha256"]
    patched = authenticode(KERNEL, patch=SetupHeaderPatch(2048, initrd))
    assert patched.hex() == case["authenticode_sha384"]
    # q35 keeps 2 GiB below 4 GiB from 2.75 GiB of RAM up: the same bytes, the same digest.
    assert authenticode(KERNEL, patch=SetupHeaderPatch(4096, initrd)) == patched
    # Less RAM moves the initrd, which the header records.
    assert authenticode(KERNEL, patch=SetupHeaderPatch(1024, initrd)) != patched
    # Without an initrd only the loader fields change.
    without = authenticode(KERNEL, patch=SetupHeaderPatch(2048, None))
    assert without not in (patched, authenticode(KERNEL))
    assert authenticode(KERNEL, patch=SetupHeaderPatch(1024, None)) == without


def test_setup_header_fields() -> None:
    head = KERNEL.read_bytes()[:0x1000]
    writes = qemu_setup_header(head, SetupHeaderPatch(2048, 1 << 20))
    assert writes[0x210] == b"\xb0" and writes[0x211][0] & 0x80
    assert writes[0x228] == (0x20000).to_bytes(4, "little")
    assert int.from_bytes(writes[0x21C], "little") == 1 << 20
    # This kernel may live above 4 GiB (protocol 2.15, XLF bit 6): the RAM bounds it.
    image = int.from_bytes(writes[0x218], "little")
    assert image % 4096 == 0 and image + (1 << 20) <= (2048 << 20) - 0x28000
    assert qemu_setup_header(bytes(0x1000), SetupHeaderPatch(2048, None)) == {}


# --------------------------------------------------------------------------------------------
# Generated PE images against a whole-file implementation written from the spec's prose


def reference_authenticode(image: bytes) -> bytes:
    """Authenticode as PE/COFF spec 'Calculating the PE Image Hash' lists it, whole-file."""
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    nsections, opt_size = struct.unpack_from("<HxxxxxxxxxxxxH", image, pe + 6)
    opt = pe + 24
    plus = struct.unpack_from("<H", image, opt)[0] == 0x20B
    header_size = struct.unpack_from("<I", image, opt + 60)[0]
    ndirs = struct.unpack_from("<I", image, opt + (108 if plus else 92))[0]
    sec_entry = opt + (112 if plus else 96) + 32
    h = hashlib.sha384()
    h.update(image[: opt + 64])
    if ndirs > 4:
        h.update(image[opt + 68 : sec_entry])
        h.update(image[sec_entry + 8 : header_size])
        cert_size = struct.unpack_from("<I", image, sec_entry + 4)[0]
    else:
        h.update(image[opt + 68 : header_size])
        cert_size = 0
    table = opt + opt_size
    sections = []
    for n in range(nsections):
        raw_size, raw_ptr = struct.unpack_from("<II", image, table + 40 * n + 16)
        if raw_size:
            sections.append((raw_ptr, raw_size))
    total = header_size
    for ptr, size in sorted(sections, key=lambda s: s[0]):
        h.update(image[ptr : ptr + size])
        total += size
    if len(image) > total + cert_size:
        h.update(image[total : len(image) - cert_size])
    return h.digest()


def make_pe(rng: random.Random) -> bytes:
    """A PE image with a random layout: PE32 or PE32+, with or without a security
    directory and certificate table, sections in any table order, gaps and trailing data."""
    plus = rng.random() < 0.7
    ndirs = rng.choice([0, 3, 4, 5, 16])
    opt_size = (112 if plus else 96) + 8 * ndirs
    pe = rng.choice([0x40, 0x80, 0x100])
    nsections = rng.randint(0, 6)
    table = pe + 24 + opt_size
    header_size = (table + 40 * nsections + 0x1FF) // 0x200 * 0x200
    offset = header_size
    layout = []
    for _ in range(nsections):
        offset += rng.choice([0, 0, 0x200, 0x1000])  # gaps between sections
        size = rng.choice([0, 0x200, 0x1000, rng.randrange(1, 5000)])
        layout.append((offset, size))
        offset += size
    trailing = rng.choice([0, 0, 0x10, 0x3000])
    certs = rng.choice([0, 0, 0x18, 0x400]) if ndirs > 4 else 0
    image = bytearray(rng.randbytes(offset + trailing + certs))
    image[0:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, pe)
    image[pe : pe + 4] = b"PE\0\0"
    struct.pack_into("<H", image, pe + 6, nsections)
    struct.pack_into("<H", image, pe + 20, opt_size)
    opt = pe + 24
    struct.pack_into("<H", image, opt, 0x20B if plus else 0x10B)
    struct.pack_into("<I", image, opt + 60, header_size)
    struct.pack_into("<I", image, opt + (108 if plus else 92), ndirs)
    if ndirs > 4:
        struct.pack_into("<II", image, opt + (112 if plus else 96) + 32, len(image) - certs, certs)
    shuffled = list(layout)
    rng.shuffle(shuffled)  # the table need not be in file order
    for n, (ptr, size) in enumerate(shuffled):
        struct.pack_into("<II", image, table + 40 * n + 16, size, ptr)
    return bytes(image)


@pytest.mark.parametrize("seed", range(300))
def test_matches_the_whole_file_reference(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    image = make_pe(rng)
    path = tmp_path / "pe"
    path.write_bytes(image)
    monkeypatch.setattr(engine, "_CHUNK", rng.choice([7, 512, 4096]))  # many chunk edges
    assert authenticode(path) == reference_authenticode(image)


def test_the_patch_is_laid_over_any_chunking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = EXAMPLES["qemu_patched_mem2GiB_initrd1MiB"]["authenticode_sha384"]
    monkeypatch.setattr(engine, "_HEAD", 0x1000)
    for chunk in (0x1F3, 0x211, 0x1000, 0x10000):  # chunk edges inside the patched fields
        monkeypatch.setattr(engine, "_CHUNK", chunk)
        patched = authenticode(KERNEL, patch=SetupHeaderPatch(2048, 1 << 20))
        assert patched.hex() == expected, chunk


def test_malformed_images_are_one_error_naming_the_key(tmp_path: Path) -> None:
    image = KERNEL.read_bytes()[:0x8000]
    path = tmp_path / "k"
    cases = {
        b"": "no MZ header at offset 0x0",
        b"MZ" + bytes(0x100): "no PE signature at offset 0x0 (e_lfanew)",
        image: "section 2 (header at offset 0x148) runs past the file",
    }
    for data, words in cases.items():
        path.write_bytes(data)
        message = f"boot.kernel {path}: not a PE/COFF kernel image: {words}"
        with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
            authenticode(path)
    # Cut anywhere, never another exception.
    for cut in range(0, 0x400, 7):
        path.write_bytes(image[:cut])
        with pytest.raises(InputError):
            authenticode(path)
    with pytest.raises(InputError, match="a character device"):
        authenticode(Path("/dev/zero"))


def test_ranges_of_the_debian_kernel() -> None:
    head = KERNEL.read_bytes()[:0x10000]
    ranges = authenticode_ranges(head, KERNEL.stat().st_size)
    # Headers less CheckSum (optional header 0x58 + 64) and the Security entry (0xe8); then
    # four sections, in file order.
    assert ranges[:3] == [(0, 0x98), (0x9C, 0xE8), (0xF0, 0x1000)]
    assert [r[0] for r in ranges[3:]] == sorted(r[0] for r in ranges[3:])
