"""Bring-your-own-images check: the custom recipe end to end on a small real set it has never seen.

Builds a 3-class texture set from three photographs shipped by scikit-image (brick, grass, gravel): 32x32
patches cut on a grid, split 576 train / 96 val / 96 test (192 / 32 / 32 per class, disjoint regions of each
photograph per split), then runs ``edgeft optimize examples/custom.yaml --set data=DIR`` into OUT. A model that
scores ~100% has large logits: the recipe once stopped at the pruned model's export on exactly this kind of set.
Prints one JSON object: exit code, wall time, each stage's status, test accuracy of the fine-tuned and final
models, and where pruning landed.

    python benchmarks/custom_patches.py OUT [--set key=value ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PHOTOS = ("brick", "grass", "gravel")
COUNTS = {"train": 192, "val": 32, "test": 32}


def build(root: Path, size: int = 32) -> Path:
    import cv2
    from skimage import data as skdata

    for name in PHOTOS:
        img = getattr(skdata, name)()
        img = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        tiles = [img[y:y + size, x:x + size] for y in range(0, img.shape[0] - size + 1, size)
                 for x in range(0, img.shape[1] - size + 1, size)]
        need = sum(COUNTS.values())
        if len(tiles) < need:
            raise SystemExit(f"{name}: {len(tiles)} patches, need {need}")
        start = 0
        for split, n in COUNTS.items():  # consecutive rows of the grid per split: no patch region is shared
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i, tile in enumerate(tiles[start:start + n]):
                cv2.imwrite(str(d / f"{name}_{i:03d}.png"), np.ascontiguousarray(tile))
            start += n
    return root


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out = Path(argv[0])
    data = build(out.parent / f"{out.name}-data") if not (out.parent / f"{out.name}-data").exists() else \
        out.parent / f"{out.name}-data"
    t0 = time.time()
    cmd = [sys.executable, "-m", "edgeft", "optimize", "examples/custom.yaml", "--set", f"data={data}",
           "--out", str(out), *argv[1:]]
    rc = subprocess.call(cmd)
    wall = time.time() - t0
    result: dict = {"exit_code": rc, "wall_s": round(wall, 1), "data": str(data), "command": " ".join(cmd[2:])}
    state = out / "pipeline.json"
    if state.exists():
        steps = json.loads(state.read_text())["steps"]
        result["stages"] = {k: v.get("status") for k, v in steps.items()}
        for name in sorted(steps):
            meta = out / name / "meta.json"
            if meta.exists():
                m = json.loads(meta.read_text())["metrics"]
                if "test" in m:
                    result.setdefault("test_accuracy", {})[name] = m["test"]["accuracy"]
                if "prune" in m:
                    result["pruning"] = m["prune"].get("target")
                if "parity" in m:
                    result.setdefault("parity", {})[name] = {k: m["parity"].get(k) for k in
                                                              ("max_abs_diff", "max_rel_diff", "passed")}
    print(json.dumps(result, indent=1))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
