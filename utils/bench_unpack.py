"""Compare udocker.unpack.apply_layers with `tar -xzf` on the same layer (developer script, not imported).

usage: python3 utils/bench_unpack.py LAYER.tar.gz [SCRATCH_DIR] [ROUNDS]
Each round extracts into a fresh directory under SCRATCH_DIR (default /tmp) with both, after a sync;
prints the best time of each and their ratio.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from udocker.oci.mediatypes import OCI_LAYER_GZIP
from udocker.unpack import LayerSource, apply_layers


def _timed(tool, layer, source, target):
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    if tool == "tar":
        subprocess.run(["tar", "-xzf", layer, "-C", target], check=True)
    else:
        apply_layers(target, [source])
    return time.perf_counter() - start


def main() -> None:
    layer = sys.argv[1]
    scratch = sys.argv[2] if len(sys.argv) > 2 else "/tmp"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    source = LayerSource(layer, OCI_LAYER_GZIP, os.path.basename(layer))
    best = {"tar": float("inf"), "udocker": float("inf")}
    for _ in range(rounds):
        for tool in ("tar", "udocker"):
            target = tempfile.mkdtemp(dir=scratch, prefix=f"bench-{tool}-")
            best[tool] = min(best[tool], _timed(tool, layer, source, target))
            shutil.rmtree(target)
    print(f"{layer}: tar -xzf {best['tar']:.2f} s, apply_layers {best['udocker']:.2f} s, "
          f"ratio {best['udocker'] / best['tar']:.2f}")


if __name__ == "__main__":
    main()
