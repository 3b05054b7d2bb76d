"""GUID byte order, asserted against the specifications."""

from __future__ import annotations

import uuid

import pytest

from cvmlaunch.abi import ovmf
from cvmlaunch.abi.guid import guid, guid_text


def test_guid_byte_order() -> None:
    for text in ("96b582de-1fb2-45f7-baea-a366c55a082d", "00f771de-1a7e-4fcb-890e-68c77e2fb44e"):
        assert guid(text) == uuid.UUID(text).bytes_le
        assert guid_text(guid(text)) == text
    with pytest.raises(ValueError, match="not a GUID"):
        guid("1234")
    assert ovmf.ENTRY_HEADER.size == 18
