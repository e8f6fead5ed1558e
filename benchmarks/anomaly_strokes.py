"""Do the anomaly heatmaps sit on the defect? ELPV has no defect masks, so this draws **synthetic** crack-like strokes
(dark random-walk polylines, 2 px wide) on good test cells, where the mask is known, and measures:

- pixel AUROC: the heatmap (resized to the cell) against the stroke mask, over all pixels of the stroked cells;
- image AUROC: the stroked cells against the same cells untouched;
- the share of stroked cells whose hottest patch lies on (within one patch of) the stroke.

Usage: python benchmarks/anomaly_strokes.py ARTIFACT --data data/elpv [--good functional] [--n 100] [--seed 0]
       [--factor 0.35] [--width 2]
Prints one JSON object. Synthetic: real cracks are thinner, fainter and branch; this says whether the map points at
what changed, not how well real defects are found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stroke(img: np.ndarray, rng: np.random.Generator, factor: float = 0.35,
           width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A dark crack-like polyline on ``img`` (grayscale; its pixels times ``factor``) and its mask."""
    import cv2

    h, w = img.shape[:2]
    pts = [np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h])]
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(6, 12))):
        heading += rng.normal(0, 0.5)
        pts.append(np.clip(pts[-1] + 12 * np.array([np.cos(heading), np.sin(heading)]), 2, [w - 3, h - 3]))
    poly = np.round(np.array(pts)).astype(np.int32).reshape(-1, 1, 2)
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [poly], False, 255, width)
    out = img.copy()
    out[mask > 0] = (out[mask > 0] * factor).astype(img.dtype)
    return out, mask > 0


def main() -> None:
    import cv2

    from edgeft.images import read_image
    from edgeft.metrics import auroc
    from edgeft.runtime import Predictor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--data", required=True)
    ap.add_argument("--good", default="functional")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--factor", type=float, default=0.35, help="stroke pixels = cell pixels x factor (darker: lower)")
    ap.add_argument("--width", type=int, default=2, help="stroke width in pixels of the 300-px cell")
    args = ap.parse_args()

    files = sorted((Path(args.data) / args.split / args.good).iterdir())[:args.n]
    rng = np.random.default_rng(args.seed)
    pixel_scores, pixel_truth, clean, dirty, on_stroke = [], [], [], [], 0
    with Predictor(args.artifact, backend="ort-cpu", threads=2) as p:
        for f in files:
            img = read_image(f)
            gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            marked, mask = stroke(gray, rng, args.factor, args.width)
            a, b = p.predict([gray, marked])
            clean.append(a.score)
            dirty.append(b.score)
            heat = cv2.resize(b.heatmap, mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
            pixel_scores.append(heat[::2, ::2].ravel())  # every 4th pixel: the same curve, a quarter of the sort
            pixel_truth.append(mask[::2, ::2].ravel())
            gh, gw = b.heatmap.shape
            r, c = np.unravel_index(int(np.argmax(b.heatmap)), b.heatmap.shape)
            ph, pw = mask.shape[0] / gh, mask.shape[1] / gw
            near = mask[max(0, int((r - 1) * ph)):int((r + 2) * ph), max(0, int((c - 1) * pw)):int((c + 2) * pw)]
            on_stroke += bool(near.any())
    out = {"artifact": args.artifact, "cells": len(files), "split": args.split, "seed": args.seed,
           "factor": args.factor, "width": args.width,
           "pixel_auroc": round(auroc(np.concatenate(pixel_truth), np.concatenate(pixel_scores)), 4),
           "image_auroc_stroked_vs_clean": round(auroc(np.r_[np.zeros(len(clean), bool), np.ones(len(dirty), bool)],
                                                       np.r_[clean, dirty]), 4),
           "hottest_patch_on_stroke": round(on_stroke / len(files), 3),
           "synthetic": "dark random-walk polylines on good cells (ELPV has no defect masks)"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
