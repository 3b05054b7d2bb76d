"""The kernel hashes table, asserted against a published worked example."""

from __future__ import annotations

import hashlib

from cvmlaunch.abi import kernel_hashes


def test_kernel_hashes_table_worked_example() -> None:
    """reference/snp-measure.md appendix B: the 176-byte table of vector A01."""
    cmdline = hashlib.sha256(b"console=ttyS0 loglevel=7\0").digest()
    initrd = bytes.fromhex("49d53a09dbb716d90312925aa0054753c9d29f48d5325a2267842553b43abc2f")
    kernel = bytes.fromhex("51349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec23d4c3275")
    table = kernel_hashes.pack_table(cmdline, initrd, kernel)
    assert kernel_hashes.TABLE_SIZE == 168 and len(table) == kernel_hashes.PADDED_TABLE_SIZE
    assert table.hex() == (
        "06d63894224fc94cb479a793d411fd21a800d82dd09720bd944caa78e7714d36ab2a3200321c8eec6a77"
        "bad179511397f913a083067ad8cb737bb260aacbfe8df70fc50a31f7ba442f3ad74b9af141e291697"
        "81d320049d53a09dbb716d90312925aa0054753c9d29f48d5325a2267842553b43abc2f3794e74dd2"
        "ab7f42b835d5b172d2045b320051349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec"
        "23d4c32750000000000000000"
    )
    page = bytearray(4096)
    page[0xC00 : 0xC00 + 176] = table
    expected = (
        "e27b6704da27c1e9f3a920470be338fe0593a2655d51e82855689bb8c01924b7"
        "fc1c5ae2273e5a65d6dbb3f1210e73a6"
    )
    assert hashlib.sha384(page).hexdigest() == expected
