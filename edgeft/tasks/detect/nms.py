"""The detector's graph as the camera runs it: decoding and NMS inside, one output of a fixed shape.

``DetectorGraph(x) -> detections (B, M, 6)``: per image the ``M = max_detections`` best boxes after NMS, each
``[x1, y1, x2, y2, score, class]`` in model-input pixels, best first; rows past an image's last box are zeros (score
0). Scores are FCOS's ``sqrt(sigmoid(class) * sigmoid(centre-ness))``; boxes are the points' distances decoded as
torchvision decodes them, clipped to the input (a box clipped to zero area scores 0). NMS is per image and per class
(boxes of different classes never suppress each other), IoU above ``nms_iou`` suppressed, scores at or below
``score_threshold`` dropped; the survivors of all classes then compete for the ``M`` rows.

NMS exports as the ONNX operator ``NonMaxSuppression``, which ONNX Runtime, OpenVINO and TensorRT (8.5 and later, as
its INMSLayer) all run natively, so the same file carries it to every backend; PyTorch runs torchvision's ``nms``
with the same rule, and a test holds the two to the same boxes. The fixed output shape (what TensorRT's NMS plugins
return too) gives a camera static buffers, and INT8 calibration only tensors of one shape.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from edgeft.tasks.detect.model import DetectSpec, Detector

OUTPUT = "detections"
COLUMNS = ("x1", "y1", "x2", "y2", "score", "class")


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
        self.rows = min(spec.max_detections, model.num_classes * len(points))  # the output's M, a constant

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
        n, classes, points = scores.shape
        rows = self.rows
        sel = _NonMaxSuppression.apply(boxes, scores, rows, float(s.nms_iou), float(s.score_threshold))
        kept = torch.zeros((n, classes, points), dtype=torch.int64)  # integer: INT8 calibration never reads it
        kept[sel[:, 0], sel[:, 1], sel[:, 2]] = 1
        best, index = (scores * kept.to(scores.dtype)).reshape(n, classes * points).topk(rows, dim=1)
        cls = torch.div(index, points, rounding_mode="floor")
        picked = torch.gather(boxes, 1, (index % points).unsqueeze(-1).expand(n, rows, 4))
        return torch.cat([picked, best.unsqueeze(-1), cls.unsqueeze(-1).to(best.dtype)], -1)


def split_detections(detections, batch: int) -> list:
    """(B, M, 6) detections -> per image of the batch: (boxes (n, 4), scores (n,), classes (n,)) of its rows with a
    score, highest first (numpy; what the runtime and the evaluation read)."""
    import numpy as np

    d = np.asarray(detections, dtype=np.float32).reshape(batch, -1, 6)
    out = []
    for r in d:
        r = r[r[:, 4] > 0]
        r = r[np.argsort(-r[:, 4], kind="stable")]
        out.append((r[:, :4], r[:, 4], r[:, 5].astype(np.int64)))
    return out


def tail_nodes(path) -> list[str]:
    """The ONNX nodes of an exported detector graph that come after the network: decoding, scores and NMS (the
    exporter names the network's nodes under ``/model/``; the graph's own arithmetic has no such prefix)."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.name and not n.name.startswith("/model/")]
