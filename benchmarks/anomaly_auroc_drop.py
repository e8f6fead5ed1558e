"""How much of an AUROC drop between two anomaly models is the test split's noise? A paired bootstrap.

Both models score the same test images (through the torch-free ``Predictor``, as the camera runs them); the images
are resampled with replacement (defective and good parts separately, so every resample has both), and the AUROC
difference is computed on each resample. Prints one JSON object: both AUROCs, the drop, and the 95% interval of the
drop over the resamples. A gate such as ``max_auroc_drop: 0.01`` judged on 394 cells sits inside that interval when
the interval is wider than the gate: more test parts, not another model, would settle it.

Usage: python benchmarks/anomaly_auroc_drop.py BASE FINAL --data data/elpv [--resamples 2000] [--seed 0]
       e.g. BASE = runs/elpv-anomaly/03-export-anomaly, FINAL = runs/elpv-anomaly/05-quantize
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def scores(model: str, paths: list[Path]) -> np.ndarray:
    from edgeft.images import read_image
    from edgeft.runtime import Predictor

    with Predictor(model) as p:
        return np.array([p.predict(read_image(f))[0].score for f in paths])


def main() -> None:
    from edgeft import artifact
    from edgeft.data.imagefolder import find_splits, scan_split
    from edgeft.metrics import anomalous_mask, auroc, auroc_drop_interval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("final")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    files = scan_split(find_splits(args.data)[args.split])
    good = artifact.load(args.base).meta.class_names[0]
    y = anomalous_mask(np.asarray(files.labels), files.classes, good)
    a, b = scores(args.base, files.paths), scores(args.final, files.paths)
    lo, hi = auroc_drop_interval(y, a, b, args.resamples, args.seed)
    print(json.dumps({"split": args.split, "images": int(len(y)), "anomalous": int(y.sum()),
                      "base": args.base, "final": args.final, "auroc_base": round(auroc(y, a), 4),
                      "auroc_final": round(auroc(y, b), 4), "drop": round(auroc(y, a) - auroc(y, b), 4),
                      "drop_95": [round(float(lo), 4), round(float(hi), 4)], "resamples": args.resamples}))


if __name__ == "__main__":
    main()
