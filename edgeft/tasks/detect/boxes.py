"""Boxes on the runtime floor (numpy and OpenCV only): back from model input to the camera frame, matched between two
models (export parity, INT8 against FP32), drawn over a frame."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_frame(boxes: np.ndarray, contract: Any, height: int, width: int) -> np.ndarray:
    """Boxes in model-input pixels -> the frame's pixels (``height`` x ``width`` is the region of interest's size):
    the inverse of the contract's placement, plus the region's offset, clipped to the region."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    sx, sy, ox, oy = contract.placement(height, width)
    out = (b - np.array([ox, oy, ox, oy])) / np.array([sx, sy, sx, sy])
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    if contract.roi is not None:
        x0, y0 = contract.roi[:2]
        out += np.array([x0, y0, x0, y0])
    return out.astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (n, 4) and (m, 4) x1, y1, x2, y2 boxes: (n, m)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod((rb - lt).clip(0), axis=2)
    area_a = np.prod((a[:, 2:] - a[:, :2]).clip(0), axis=1)
    area_b = np.prod((b[:, 2:] - b[:, :2]).clip(0), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match(ref: tuple[np.ndarray, np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray, np.ndarray]
          ) -> tuple[int, np.ndarray, np.ndarray]:
    """Match ``got``'s boxes to ``ref``'s one to one, same class, greedily by IoU (highest reference score first).
    Returns (unmatched boxes on either side, the matched pairs' IoU, their score differences)."""
    rb, rs, rc = ref
    gb, gs, gc = got
    used = np.zeros(len(gb), bool)
    ious, diffs = [], []
    m = iou(rb, gb) if len(rb) and len(gb) else np.zeros((len(rb), len(gb)))
    for i in np.argsort(-rs, kind="stable"):
        cand = np.flatnonzero(~used & (gc == rc[i]))
        if not len(cand):
            continue
        j = cand[np.argmax(m[i, cand])]
        if m[i, j] <= 0:
            continue
        used[j] = True
        ious.append(m[i, j])
        diffs.append(abs(float(rs[i]) - float(gs[j])))
    unmatched = (len(rb) - len(ious)) + (len(gb) - len(ious))
    return unmatched, np.asarray(ious), np.asarray(diffs)


PALETTE = ((0, 0, 255), (0, 200, 255), (255, 128, 0), (200, 0, 200), (0, 180, 0), (255, 0, 0))  # BGR


def draw(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, names: list[str],
         truth: np.ndarray | None = None) -> np.ndarray:
    """``frame`` (BGR) with the boxes drawn and labelled ``name score``; ``truth`` boxes, when given, in white."""
    import cv2

    out = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    thick = max(1, round(max(out.shape[:2]) / 400))
    if truth is not None:
        for b in np.asarray(truth).reshape(-1, 4).round().astype(int):
            cv2.rectangle(out, (b[0], b[1]), (b[2], b[3]), (255, 255, 255), thick)
    for b, s, c in zip(np.asarray(boxes).reshape(-1, 4).round().astype(int), scores, classes):
        color = PALETTE[int(c) % len(PALETTE)]
        cv2.rectangle(out, (b[0], b[1]), (b[2], b[3]), color, thick)
        label = f"{names[int(c)] if int(c) < len(names) else int(c)} {float(s):.2f}"
        cv2.putText(out, label, (b[0], max(10, b[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * thick, color, thick)
    return out
