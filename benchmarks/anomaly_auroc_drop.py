"""How much of an AUROC drop between two anomaly models is the test split's noise? A paired bootstrap.

Both models score the same test images (through the torch-free ``Predictor``, as the camera runs them, by
``edgeft.tasks.anomaly.gallery.score_test``, the function behind the optimize report's AUROC gate); the images
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from edgeft.metrics import auroc, auroc_drop_interval
    from edgeft.tasks.anomaly.gallery import score_test

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("final")
    ap.add_argument("--data", required=True)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    test = score_test([Path(args.base), Path(args.final)], Path(args.data))  # what the optimize report's gate uses
    if test is None:
        sys.exit(f"{args.data} has no test split")
    y = test.anomalous()
    a, b = test.models[0].scores, test.models[1].scores
    lo, hi = auroc_drop_interval(y, a, b, args.resamples, args.seed)
    base, final = auroc(y, a), auroc(y, b)
    print(json.dumps({"split": "test", "images": int(len(y)), "anomalous": int(y.sum()),
                      "base": args.base, "final": args.final, "auroc_base": round(base, 4),
                      "auroc_final": round(final, 4), "drop": round(base - final, 4),
                      "drop_95": [round(lo, 4), round(hi, 4)], "resamples": args.resamples}))


if __name__ == "__main__":
    main()
