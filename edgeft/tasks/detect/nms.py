"""The detector's graph as the camera runs it: decoding and NMS inside, one output.

``DetectorGraph(x) -> detections (K, 7)``: for every kept box ``[image index in the batch, x1, y1, x2, y2, score,
class]`` in model-input pixels. Scores are FCOS's ``sqrt(sigmoid(class) * sigmoid(centre-ness))``; boxes are the
points' distances decoded as torchvision decodes them. NMS is per image and per class (boxes of different classes
never suppress each other), IoU above ``nms_iou`` suppressed, at most ``max_detections`` boxes per class and image,
scores at or below ``score_threshold`` dropped.

NMS exports as the ONNX operator ``NonMaxSuppression``, which ONNX Runtime, OpenVINO and TensorRT (8.5 and later, as
its INMSLayer) all run natively, so the same file carries it to every backend; PyTorch runs
torchvision's ``nms`` with the same rule, and a test holds the two to the same boxes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from edgeft.tasks.detect.model import DetectSpec, Detector

OUTPUT = "detections"
COLUMNS = ("batch", "x1", "y1", "x2", "y2", "score", "class")


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX's NonMaxSuppression: boxes (B, N, 4), scores (B, C, N) -> selected (K, 3) [batch, class, box]."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou: float,
                threshold: float) -> torch.Tensor:
        from torchvision.ops import nms

        out = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                s = scores[b, c]
                idx = torch.nonzero(s > threshold).reshape(-1)
                keep = idx[nms(boxes[b, idx], s[idx], iou)][:max_per_class]
                out.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], 1))
        return torch.cat(out) if out else torch.zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou: float, threshold: float):
        def const(v, dtype):
            return g.op("Constant", value_t=torch.tensor([v], dtype=dtype))

        return g.op("NonMaxSuppression", boxes, scores, const(max_per_class, torch.int64),
                    const(iou, torch.float32), const(threshold, torch.float32))


def decode(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Boxes from the points' (left, top, right, bottom) distances in units of the point's stride (torchvision's
    ``BoxLinearCoder(normalize_by_size=True)``)."""
    cx = (points[:, 0] + points[:, 2]) / 2
    cy = (points[:, 1] + points[:, 3]) / 2
    w = points[:, 2] - points[:, 0]
    h = points[:, 3] - points[:, 1]
    d = distances
    return torch.stack([cx - d[..., 0] * w, cy - d[..., 1] * h, cx + d[..., 2] * w, cy + d[..., 3] * h], -1)


class DetectorGraph(nn.Module):
    """A detector with its points for a fixed input size, decoding and NMS: image batch in, detections out."""

    def __init__(self, model: Detector, spec: DetectSpec, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.spec = model, spec
        points, _ = model.points(size)
        self.register_buffer("points", points, persistent=False)
        self.size = size

    def scored(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes (B, P, 4) clipped to the input, scores (B, C, P)) before NMS."""
        logits, distances, ctr = self.model(x)
        boxes = decode(self.points, distances)
        h, w = self.size
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w),
                             boxes[..., 3].clamp(0, h)], -1)
        scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(ctr))
        solid = ((boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])).unsqueeze(-1)
        scores = scores * solid.to(scores.dtype)  # a box clipped to nothing at the border is no detection
        return boxes, scores.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, scores = self.scored(x)
        s = self.spec
        sel = _NonMaxSuppression.apply(boxes, scores, s.max_detections, float(s.nms_iou), float(s.score_threshold))
        b, c, i = sel[:, 0], sel[:, 1], sel[:, 2]
        kept = boxes[b, i]
        score = scores[b, c, i]
        return torch.cat([b.unsqueeze(1).float(), kept, score.unsqueeze(1), c.unsqueeze(1).float()], 1)


def split_detections(detections, batch: int) -> list:
    """(K, 7) detections -> per image of the batch: (boxes (n, 4), scores (n,), classes (n,)), highest score first
    (numpy; what the runtime and the evaluation read)."""
    import numpy as np

    d = np.asarray(detections, dtype=np.float32).reshape(-1, 7)
    out = []
    for k in range(batch):
        r = d[d[:, 0] == k]
        r = r[np.argsort(-r[:, 5], kind="stable")]
        out.append((r[:, 1:5], r[:, 5], r[:, 6].astype(np.int64)))
    return out
