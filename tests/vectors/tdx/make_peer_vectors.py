"""Regenerate peer-mrtd.json: MRTDs of generated TDVF images, computed by peer tools.

Not a test: run by hand where the peers are built (see tests/vectors/README.md), e.g.
    python tests/vectors/tdx/make_peer_vectors.py /path/to/peer-runner > peer-mrtd.json
The runner takes image paths and prints one JSON line per image with the keys tdshim_single,
fraunhofer_single, fraunhofer_two, quex_two (null where a peer cannot handle the image).
The images are rebuilt from their parameters by tests/tdvf_images.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.tdvf_images import build_image, random_params

RNG_SEED = 20261124
COUNT = 160
PEERS = ("tdshim_single", "fraunhofer_single", "fraunhofer_two", "quex_two")


def main() -> int:
    runner = sys.argv[1]
    rng = random.Random(RNG_SEED)
    params = [random_params(rng, seed) for seed in range(COUNT)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for index, p in enumerate(params):
            path = Path(tmp) / f"case{index:03}.bin"
            path.write_bytes(build_image(p))
            paths.append(path)
        out = subprocess.run(
            [runner, *map(str, paths)], capture_output=True, text=True, check=True
        )
        results = {Path(r["image"]).name: r for r in map(json.loads, out.stdout.splitlines())}
        cases = []
        for p, path in zip(params, paths, strict=True):
            result = results[path.name]
            cases.append(
                {
                    "params": p,
                    "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    **{peer: result[peer] for peer in PEERS},
                }
            )
    doc = {
        "description": "MRTDs of generated TDVF images (tests/tdvf_images.py random_params, "
        f"random.Random({RNG_SEED}), {COUNT} cases) as computed by peer tools; null where a "
        "peer cannot handle the image. See tests/vectors/README.md for the peers' versions.",
        "cases": cases,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
