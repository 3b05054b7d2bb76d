"""MRTD against independent peers over generated TDVF images.

tests/vectors/tdx/peer-mrtd.json holds, for 160 images drawn by tests/tdvf_images.py, the
MRTDs that td-shim's td_shim_tee_info_hash.py (page order) and Fraunhofer-AISEC's
calculate-tdx-mrs (page order as QEMU 9.2, section order as QEMU 8.2.2) computed when run on
them (make_peer_vectors.py; the peers cannot be installed from a package registry, so their
results are recorded). Here each image is rebuilt from its parameters and measured by
cvmlaunch. The peers measure the image bytes past a short RawDataSize, as QEMU does, so
cvmlaunch runs with its default raw_data_tail "image".
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.guest.spec import GuestSpec, PageOrder, TdConfig, Technology
from cvmlaunch.measure import measure
from cvmlaunch.plan.tdx import build_td_plan
from tests.conftest import TDX_VECTORS
from tests.tdvf_images import build_image

pytestmark = pytest.mark.differential

_CASES: list[dict[str, Any]] = json.loads((TDX_VECTORS / "peer-mrtd.json").read_text())["cases"]

# Peer result -> the page order it was computed in.
_PEER_ORDERS = {
    "tdshim_single": PageOrder.PAGE,
    "fraunhofer_single": PageOrder.PAGE,
    "fraunhofer_two": PageOrder.SECTION,
}


def _mrtd(image: bytes, order: PageOrder) -> str:
    spec = GuestSpec(Technology.TDX, Path("generated.bin"), td=TdConfig(page_order=order))
    return measure(build_td_plan(spec, firmware=image)).digest.hex()


@pytest.mark.parametrize("case", _CASES, ids=[f"case{i:03}" for i in range(len(_CASES))])
def test_mrtd_matches_peers(case: dict[str, Any]) -> None:
    image = build_image(case["params"])
    assert hashlib.sha256(image).hexdigest() == case["image_sha256"], "generator changed"
    ours = {order: _mrtd(image, order) for order in PageOrder}
    compared = 0
    for peer, order in _PEER_ORDERS.items():
        if case[peer] is not None:
            assert ours[order] == case[peer], peer
            compared += 1
    assert compared >= 1
    # The orders differ exactly when an extended section has more than one page to reorder.
    reordered = any(
        s["attributes"] & 1 and s["mem_size"] > 0x1000 for s in case["params"]["sections"]
    )
    assert (ours[PageOrder.PAGE] != ours[PageOrder.SECTION]) == reordered


def test_peer_cases_cover_what_matters() -> None:
    """Guard against the generated set silently shrinking to easy cases."""
    assert len(_CASES) >= 150
    both = [c for c in _CASES if c["tdshim_single"] and c["fraunhofer_two"]]
    assert len(both) >= 100
    assert all(c["tdshim_single"] == c["fraunhofer_single"] for c in both)
    params = [c["params"] for c in _CASES]
    sections = [s for p in params for s in p["sections"]]
    assert Counter(p["locator"] for p in params).keys() == {"ovmf", "tdshim"}
    assert {s["type"] for s in sections} == {0, 1, 2, 3, 4, 5}
    assert any(s["attributes"] == 2 for s in sections), "no PAGE.AUG section"
    assert any(0 < s["raw_size"] < s["mem_size"] for s in sections), "no short raw data"
    assert any(s["data_offset"] % 0x1000 for s in sections), "no unaligned DataOffset"
    assert any(s["type"] == 1 and s["attributes"] == 1 for s in sections), "no measured CFV"
    assert {len(p["sections"]) for p in params} >= set(range(2, 8))
    assert len({p["size"] for p in params}) >= 8
