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


def select(boxes: torch.Tensor, scores: torch.Tensor, spec: DetectSpec, rows: int) -> torch.Tensor:
    """NMS per image and class, then the ``rows`` best survivors of an image: boxes (B, P, 4) x1, y1, x2, y2 and
    scores (B, C, P) -> detections (B, rows, 6)."""
    n, classes, points = scores.shape
    sel = _NonMaxSuppression.apply(boxes, scores, rows, float(spec.nms_iou), float(spec.score_threshold))
    kept = torch.zeros((n, classes, points), dtype=torch.int64)  # integer: INT8 calibration never reads it
    kept[sel[:, 0], sel[:, 1], sel[:, 2]] = 1
    best, index = (scores * kept.to(scores.dtype)).reshape(n, classes * points).topk(rows, dim=1)
    cls = torch.div(index, points, rounding_mode="floor")
    picked = torch.gather(boxes, 1, (index % points).unsqueeze(-1).expand(n, rows, 4))
    return torch.cat([picked, best.unsqueeze(-1), cls.unsqueeze(-1).to(best.dtype)], -1)


def clip_solid(boxes: torch.Tensor, scores: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (B, P, 4) clipped to the input, and scores (B, P, C) zeroed where a box was clipped to nothing."""
    h, w = size
    boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w),
                         boxes[..., 3].clamp(0, h)], -1)
    solid = ((boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])).unsqueeze(-1)
    return boxes, scores * solid.to(scores.dtype)


class FcosPostprocess(nn.Module):
    """FCOS's outputs -> detections: the points' distances decoded, scores ``sqrt(sigmoid(class) *
    sigmoid(centre-ness))``, NMS. Exported under ``/postprocess/``, the part of the graph INT8 leaves in FP32."""

    def __init__(self, points: torch.Tensor, spec: DetectSpec, size: tuple[int, int], num_classes: int) -> None:
        super().__init__()
        self.register_buffer("points", points, persistent=False)
        self.spec, self.size = spec, size
        self.rows = min(spec.max_detections, num_classes * len(points))  # the output's M, a constant

    def scored(self, logits: torch.Tensor, distances: torch.Tensor, ctr: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = clip_solid(decode(self.points, distances), torch.sqrt(torch.sigmoid(logits) *
                                                                               torch.sigmoid(ctr)), self.size)
        return boxes, scores.transpose(1, 2)

    def forward(self, logits: torch.Tensor, distances: torch.Tensor, ctr: torch.Tensor) -> torch.Tensor:
        return select(*self.scored(logits, distances, ctr), self.spec, self.rows)


class YoloPostprocess(nn.Module):
    """A YOLO-family raw output (B, 4 + C, A): centre x, centre y, width, height in input pixels, then C class scores
    in [0, 1] (Ultralytics' export without NMS) -> detections."""

    def __init__(self, spec: DetectSpec, size: tuple[int, int], num_classes: int, anchors: int) -> None:
        super().__init__()
        self.spec, self.size = spec, size
        self.rows = min(spec.max_detections, num_classes * anchors)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        cx, cy, w, h = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        boxes, scores = clip_solid(boxes, raw[:, 4:].transpose(1, 2), self.size)
        return select(boxes, scores.transpose(1, 2), self.spec, self.rows)


class DetectorGraph(nn.Module):
    """A detector with its points for a fixed input size, decoding and NMS: image batch in, detections out."""

    def __init__(self, model: Detector, spec: DetectSpec, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.spec, self.size = model, spec, size
        self.postprocess = FcosPostprocess(model.points(size)[0], spec, size, model.num_classes)

    def scored(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes (B, P, 4) clipped to the input, scores (B, C, P)) before NMS."""
        return self.postprocess.scored(*self.model(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.postprocess(*self.model(x))


class RawGraph(nn.Module):
    """The post-processing alone, for an imported network's raw output: exported on its own, then joined to the
    network's ONNX graph (:func:`add_postprocess`)."""

    def __init__(self, post: nn.Module) -> None:
        super().__init__()
        self.postprocess = post

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return self.postprocess(raw)


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


POSTPROCESS = "/postprocess/"  # where the exporter names the graph's decoding and NMS


def tail_nodes(path) -> list[str]:
    """The ONNX nodes of a detector graph after the network: decoding, scores and NMS (``/postprocess/...``, or
    ``edgeft_/postprocess/...`` where it was appended to an imported network)."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if POSTPROCESS in n.name]


def add_postprocess(network, output: str, post: nn.Module, opset: int):
    """``network`` (an ONNX ``ModelProto`` whose ``output`` is a raw (B, 4 + C, A) tensor) with ``post`` appended
    (its nodes and tensors prefixed ``edgeft_``): one output, ``detections`` (B, M, 6)."""
    import os
    import tempfile
    import warnings

    import onnx
    from onnx import compose

    dims = next(o for o in network.graph.output if o.name == output).type.tensor_type.shape.dim
    fd, tmp = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings():  # the legacy exporter on purpose (edgeft.models.onnx says why)
            warnings.simplefilter("ignore")
            torch.onnx.export(RawGraph(post).eval(), (torch.zeros(1, *[d.dim_value for d in dims[1:]]),), tmp,
                              opset_version=opset, input_names=["raw"], output_names=[OUTPUT],
                              dynamic_axes={"raw": {0: "batch"}, OUTPUT: {0: "batch"}}, dynamo=False)
        tail = onnx.load(tmp)
    finally:
        os.unlink(tmp)
    tail.ir_version = network.ir_version
    merged = compose.merge_models(network, tail, io_map=[(output, "raw")], prefix2="edgeft_",
                                  outputs=[f"edgeft_{OUTPUT}"])
    versions: dict[str, int] = {}
    for o in merged.opset_import:  # both graphs import the default domain: one entry each domain
        versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    del merged.opset_import[:]
    merged.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    merged.graph.output[0].name = OUTPUT
    for node in merged.graph.node:
        node.output[:] = [OUTPUT if o == f"edgeft_{OUTPUT}" else o for o in node.output]
    return merged
