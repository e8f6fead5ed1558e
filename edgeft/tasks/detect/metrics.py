"""A detector's numbers, by the COCO evaluator (``pycocotools``, the reference implementation every detection paper
reports with): mAP@[.5:.95], mAP@.5, mAP@.75, AR@100 and AP per class; beside them the boxes found and missed at an
operating confidence (IoU 0.5), and each image's not-OK score for the decision policy (a part is rejected when a
box of a defect class scores above the threshold, so an image's score is its highest such box).

Ground truth and predictions are in the source image's pixels (predictions mapped back from model input), so the
numbers do not depend on the model's input size.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeft.errors import DependencyError


Truth = list[tuple[np.ndarray, np.ndarray]]  # per image: boxes (n, 4), classes (n,)
Predicted = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per image: boxes (n, 4), scores (n,), classes (n,)


@dataclass
class DetectionMetrics:
    """COCO metrics of one split, and the boxes at the operating confidence."""

    map: float  # AP averaged over IoU .50:.05:.95, all classes (COCO's primary number)
    map50: float
    map75: float
    ar100: float  # recall averaged over IoU .50:.95, at most 100 boxes an image
    per_class: dict[str, dict[str, float]]  # name -> {"ap", "ap50", "boxes"}
    images: int
    boxes: int  # ground-truth boxes
    predictions: int  # boxes the model returned (above the graph's score threshold)
    confidence: float | None = None  # the operating confidence the next three are read at
    box_recall: float | None = None  # share of ground-truth boxes found (IoU >= 0.5, same class)
    box_precision: float | None = None  # share of returned boxes that found one
    missed: int | None = None  # ground-truth boxes not found
    extra: dict[str, Any] = field(default_factory=dict)
    pr: dict[str, list[float]] | None = None  # precision at COCO's 101 recall points, classes averaged: "iou50",
                                              # "iou50_95" (averaged over IoU .50:.95), for the report's curves
    decisions: dict[str, Any] | None = None  # a line's decision: each image's best defect box as its not-OK score
    policy: dict[str, Any] | None = None  # (Decisions, and the policy chosen on val's Outcome here, as dicts)

    def image_decisions(self) -> Any:
        """The image-level :class:`~edgeft.metrics.Decisions` (AUROC, operating points), if measured."""
        from edgeft.metrics import Decisions

        return Decisions.from_dict(self.decisions, "detection metrics decisions") if self.decisions else None

    def image_policy(self) -> Any:
        """What the model's policy (chosen on val) does on this split, an :class:`~edgeft.metrics.Outcome`."""
        from edgeft.metrics import Outcome

        return Outcome.from_dict(self.policy) if self.policy else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DetectionMetrics":
        return cls(**d)

    def summary(self, title: str = "") -> str:
        lines = [f"{title} mAP@[.5:.95] {self.map:.4f}  mAP@.5 {self.map50:.4f}  mAP@.75 {self.map75:.4f}  "
                 f"AR@100 {self.ar100:.4f} ({self.images} images, {self.boxes} boxes, {self.predictions} predicted)"]
        for name, c in self.per_class.items():
            lines.append(f"  {name:<16} AP {c['ap']:.4f}  AP50 {c['ap50']:.4f}  ({c['boxes']} boxes)")
        if self.confidence is not None:
            lines.append(f"  at confidence {self.confidence:.3f}: box recall {self.box_recall * 100:.1f}%, precision "
                         f"{self.box_precision * 100:.1f}%, {self.missed} missed")
        d, p = self.image_decisions(), self.image_policy()
        if d is not None:
            lines.append(f"  images not OK = a box of {' / '.join(d.positive)}: AUROC {d.auroc:.3f} ({d.n_positive} of "
                         f"{d.n_positive + d.n_negative} images)")
        if p is not None:
            lines.append(f"  at the policy chosen on val: {p.text()}")
        return "\n".join(lines).strip()


def _coco():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DependencyError("detection metrics need pycocotools: pip install 'edgeft[detect]'") from None
    return COCO, COCOeval


def coco_metrics(truth: Truth, predicted: Predicted, classes: list[str], sizes: list[tuple[int, int]],
                 confidence: float | None = None) -> DetectionMetrics:
    """COCO evaluation of ``predicted`` (per image: boxes, scores, classes) against ``truth`` (per image: boxes,
    classes), boxes x1, y1, x2, y2 in the image's pixels; ``sizes`` (height, width) per image."""
    COCO, COCOeval = _coco()
    images, anns, dets = [], [], []
    for k, ((tb, tc), (h, w)) in enumerate(zip(truth, sizes)):
        images.append({"id": k + 1, "width": int(w), "height": int(h)})
        for b, c in zip(np.asarray(tb, np.float64).reshape(-1, 4), tc):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), bw, bh], "area": bw * bh})
    for k, (pb, ps, pc) in enumerate(predicted):
        for b, s, c in zip(np.asarray(pb, np.float64).reshape(-1, 4), ps, pc):
            dets.append({"image_id": k + 1, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else None
    if dt is None or not anns:
        stats = np.zeros(12)
        precision = None
    else:
        ev = COCOeval(gt, dt, "bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = np.asarray(ev.stats).clip(0)  # -1 (no such boxes) counts as 0
        precision = ev.eval["precision"]  # T x R x K x A x M
    per_class = {}
    n_truth = np.bincount(np.concatenate([t[1] for t in truth]).astype(np.int64) if truth else np.zeros(0, np.int64),
                          minlength=len(classes))
    for i, name in enumerate(classes):
        if precision is None:
            ap = ap50 = 0.0
        else:
            p = precision[:, :, i, 0, -1]  # all areas, 100 detections
            ap = float(p[p > -1].mean()) if (p > -1).any() else 0.0
            p50 = precision[0, :, i, 0, -1]
            ap50 = float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0
        per_class[name] = {"ap": round(ap, 6), "ap50": round(ap50, 6), "boxes": int(n_truth[i])}
    m = DetectionMetrics(map=round(float(stats[0]), 6), map50=round(float(stats[1]), 6),
                         map75=round(float(stats[2]), 6), ar100=round(float(stats[8]), 6), per_class=per_class,
                         images=len(truth), boxes=int(n_truth.sum()), predictions=len(dets),
                         pr=None if precision is None else pr_curves(precision))
    if confidence is not None:
        found, kept, total = at_confidence(truth, predicted, confidence)
        m.confidence = float(confidence)
        m.box_recall = found / total if total else 0.0
        m.box_precision = found / kept if kept else 0.0
        m.missed = total - found
    return m


def pr_curves(precision: np.ndarray) -> dict[str, list[float]]:
    """Precision at COCO's 101 recall points (0, 0.01, ..., 1), averaged over the classes that have boxes, from
    ``COCOeval.eval["precision"]`` (IoU x recall x class x area x max detections; -1 where undefined): at IoU .5, and
    averaged over IoU .50:.95 (the curve whose area is mAP@[.5:.95]). Precision past the highest recall reached is 0."""
    p = np.asarray(precision)[:, :, :, 0, -1]  # all areas, 100 detections an image
    have = (p > -1).any(axis=(0, 1))  # classes with ground truth
    p = np.where(p > -1, p, 0.0)[:, :, have] if have.any() else np.zeros(p.shape[:2] + (1,))
    return {"iou50": [round(float(v), 4) for v in p[0].mean(-1)],
            "iou50_95": [round(float(v), 4) for v in p.mean(-1).mean(0)]}


def at_confidence(truth: Truth, predicted: Predicted, confidence: float, iou_threshold: float = 0.5
                  ) -> tuple[int, int, int]:
    """(ground-truth boxes found, boxes returned, ground-truth boxes) with the boxes scoring at least ``confidence``,
    matched one to one by IoU >= ``iou_threshold`` within a class, highest score first (COCO's matching)."""
    from edgeft.tasks.detect.boxes import iou

    found = kept = total = 0
    for (tb, tc), (pb, ps, pc) in zip(truth, predicted):
        total += len(tb)
        sel = np.flatnonzero(np.asarray(ps) >= confidence)
        kept += len(sel)
        if not len(sel) or not len(tb):
            continue
        sel = sel[np.argsort(-np.asarray(ps)[sel], kind="stable")]
        m = iou(np.asarray(pb)[sel], tb)
        used = np.zeros(len(tb), bool)
        for r, j in enumerate(sel):
            ok = np.flatnonzero(~used & (np.asarray(tc) == pc[j]) & (m[r] >= iou_threshold))
            if len(ok):
                used[ok[np.argmax(m[r, ok])]] = True
        found += int(used.sum())
    return found, kept, total


def image_scores(predicted: Predicted, positive: list[int]) -> np.ndarray:
    """Each image's not-OK score: the highest score of a box of a ``positive`` class (0 without one)."""
    out = np.zeros(len(predicted))
    for k, (_, ps, pc) in enumerate(predicted):
        s = np.asarray(ps)[np.isin(np.asarray(pc), positive)]
        out[k] = float(s.max()) if len(s) else 0.0
    return out
