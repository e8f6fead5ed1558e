"""The detector: a timm backbone's feature levels, torchvision's feature pyramid and its FCOS head.

FCOS (Tian et al. 2019) is anchor-free: every point of every level predicts a class score, the distances to the
four sides of its box and a centre-ness; one box per point, no anchor shapes to tune for a new kind of defect.
The head, its losses (sigmoid focal loss, GIoU, centre-ness) and its point-to-box assignment are torchvision's own
(``torchvision.models.detection.fcos``), so the detector trains as torchvision trains it; what edgeft adds is the
backbone from timm (the packaged ImageNet EfficientNet-Lite0 by default, any timm model with ``features_only``),
a smaller head for CPUs (``fpn_channels``, ``head_convs``), and the exported graph with decoding and NMS inside
(:mod:`edgeft.tasks.detect.nms`).

The network returns the head's raw outputs; :class:`Detector.anchors` gives the points of a fixed input size, and
the graph that decodes them is built on top. Settings that shape it live in :class:`DetectSpec`, stored in the
artifact's ``meta.extra["detect"]`` so that the network is rebuilt exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn

from edgeft.errors import ConfigError, close_matches


@dataclass(frozen=True)
class DetectSpec:
    """What shapes a detector and its graph; kept in the artifact so it is rebuilt exactly.

    ``levels``: the backbone's feature levels the pyramid reads (timm ``out_indices``; Lite0's 2, 3, 4 are strides
    8, 16, 32). ``fpn_channels``/``head_convs``: the pyramid's width and the head's depth (torchvision's FCOS has
    256 and 4; 64 and 2 have 1/32 of its head towers' multiply-adds). ``score_threshold``, ``nms_iou``,
    ``max_detections`` (boxes an image): what the exported graph's NMS keeps (a low threshold, so mAP sees the whole
    ranking; a line's decision threshold is chosen on val above it). ``frozen_stages``: the backbone's stem and
    first stages (timm's ``blocks[i]``; Lite0 has 7) that keep their pretrained weights (from random weights,
    everything trains)."""

    levels: tuple[int, ...] = (2, 3, 4)
    fpn_channels: int = 64
    head_convs: int = 2
    score_threshold: float = 0.05
    nms_iou: float = 0.6
    max_detections: int = 100
    frozen_stages: int = 2
    strides: tuple[int, ...] = field(default=())  # filled from the backbone when built

    def __post_init__(self) -> None:
        levels = self.levels
        if not isinstance(levels, (list, tuple)) or not levels or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in levels) or \
                list(levels) != sorted(set(levels)):
            raise ConfigError(f"detect.levels must be increasing feature levels of the backbone, e.g. [2, 3, 4], got "
                              f"{levels!r}")
        object.__setattr__(self, "levels", tuple(levels))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        for name, low in (("fpn_channels", 32), ("head_convs", 0), ("max_detections", 1), ("frozen_stages", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"detect.{name} must be an integer >= {low}, got {v!r}")
        if self.fpn_channels % 32:
            raise ConfigError(f"detect.fpn_channels must be a multiple of 32 (the head's GroupNorm has 32 groups), "
                              f"got {self.fpn_channels}")
        if not 0 <= float(self.score_threshold) < 1 or not 0 < float(self.nms_iou) <= 1:
            raise ConfigError(f"detect.score_threshold must be in [0, 1) and detect.nms_iou in (0, 1], got "
                              f"{self.score_threshold} and {self.nms_iou}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["levels"], d["strides"] = list(self.levels), list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "DetectSpec":
        if not isinstance(d, dict):
            raise ConfigError(f"{where} is missing or not a mapping: the artifact is not a detector written by edgeft")
        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known:
                raise ConfigError(f"unknown field {where}.{k}{close_matches(str(k), known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class _Fcos(nn.Module):
    """What every FCOS network here shares: ``levels(x)`` (the pyramid's maps) and ``points(size)`` come from the
    network; ``forward`` and the loss are torchvision's head and losses."""

    head: nn.Module
    num_classes: int

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def points(self, size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None,
                teacher: tuple[torch.Tensor, ...] | None = None) -> Any:
        """The head's raw outputs; with ``targets`` (training), the loss (:meth:`loss`, distilled from ``teacher``'s
        raw outputs on the same batch when given), so that a DDP wrapper sees the forward that computes it."""
        if targets is not None:
            return self.loss(x, targets, teacher)
        out = self.head(self.levels(x))
        return out["cls_logits"], out["bbox_regression"], out["bbox_ctrness"]

    def loss(self, x: torch.Tensor, targets: list[dict[str, torch.Tensor]],
             teacher: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """FCOS's training loss (classification focal loss + GIoU box loss + centre-ness BCE), torchvision's; plus
        :func:`head_distillation` towards ``teacher``'s outputs when given."""
        from torchvision.models.detection.fcos import FCOS

        feats = self.levels(x)
        out = self.head(feats)
        points, per = self.points(tuple(x.shape[-2:]))
        points = points.to(x.device)
        losses = FCOS.compute_loss(self, targets, out, [points] * x.shape[0], per)  # type: ignore[arg-type]
        total = losses["classification"] + losses["bbox_regression"] + losses["bbox_ctrness"]
        if teacher is not None:
            total = total + head_distillation((out["cls_logits"], out["bbox_regression"], out["bbox_ctrness"]), teacher)
        return total


def head_distillation(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """How far a pruned detector's head outputs are from its parent's on the same batch: the class scores' and
    centre-ness' binary cross-entropy against the parent's sigmoid (soft labels), and the L1 distance of the box
    distances (in stride units), each point weighted by the parent's best class score, so the few points where it
    sees an object count and the thousands of background points do not drown them (output distillation as in
    Hinton et al. 2015, weighted by the teacher's confidence as detection distillation weighs foreground)."""
    import torch.nn.functional as F

    s_cls, s_box, s_ctr = student
    t_cls, t_box, t_ctr = (t.detach() for t in teacher)
    t_prob = torch.sigmoid(t_cls)
    w = t_prob.max(-1).values  # (N, P)
    norm = w.sum().clamp_min(1.0)
    cls = (F.binary_cross_entropy_with_logits(s_cls, t_prob, reduction="none").sum(-1) * w).sum() / norm
    ctr = (F.binary_cross_entropy_with_logits(s_ctr, torch.sigmoid(t_ctr), reduction="none").sum(-1) * w).sum() / norm
    box = ((s_box - t_box).abs().sum(-1) * w).sum() / norm
    return cls + ctr + box


class Detector(_Fcos):
    """Backbone levels -> feature pyramid -> FCOS head. ``forward`` returns the head's raw outputs, concatenated
    over levels: class logits (N, P, C), box distances (N, P, 4), centre-ness (N, P, 1)."""

    def __init__(self, arch: str, num_classes: int, spec: DetectSpec) -> None:
        import timm
        from torchvision.models.detection.fcos import FCOSHead
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__()
        try:
            self.backbone = timm.create_model(arch, pretrained=False, features_only=True, out_indices=spec.levels)
        except (IndexError, ValueError, RuntimeError) as e:
            raise ConfigError(f"detect.levels {list(spec.levels)} do not fit {arch}'s feature levels: {e}") from None
        channels = self.backbone.feature_info.channels()
        self.strides = tuple(int(s) for s in self.backbone.feature_info.reduction())
        self.fpn = FeaturePyramidNetwork(channels, spec.fpn_channels)
        self.head = FCOSHead(spec.fpn_channels, 1, num_classes, num_convs=spec.head_convs)
        self.num_classes = num_classes
        self.center_sampling_radius = 1.5  # torchvision's FCOS default, read by its compute_loss

    def get_classifier(self) -> nn.Module:
        """The parts trained from scratch (pyramid and head): the training engine gives them the head's learning
        rate, the backbone ``lr * backbone_lr_mult``."""
        return nn.ModuleList([self.fpn, self.head])

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(x)
        return list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())

    def points(self, size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
        """The points of an input of ``size`` (H, W) as torchvision's FCOS lays them out: one square of side
        ``stride`` per cell of each level, (P, 4) x1, y1, x2, y2, and the count per level."""
        boxes, per = [], []
        for s in self.strides:
            gh, gw = -(-size[0] // s), -(-size[1] // s)
            ys, xs = torch.meshgrid(torch.arange(gh) * s, torch.arange(gw) * s, indexing="ij")
            c = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float()
            half = torch.tensor([-s / 2, -s / 2, s / 2, s / 2]).round()
            boxes.append(torch.cat([c, c], 1) + half)
            per.append(gh * gw)
        return torch.cat(boxes), per



TORCHVISION_DETECTORS = ("fcos_resnet50_fpn",)  # torchvision builders whose checkpoints import (FCOS: this head)


class TorchvisionFCOS(_Fcos):
    """torchvision's own FCOS network (``torchvision:fcos_resnet50_fpn``: ResNet-50, its feature pyramid with P6 and
    P7, the 4-conv head), for a checkpoint trained with torchvision: the same state-dict keys (``backbone.body``,
    ``backbone.fpn``, ``head``), the same raw outputs as :class:`Detector`, and the points its anchor generator lays
    out (square anchors of 8 to 128 px on each level's grid), so decoding matches torchvision's exactly."""

    def __init__(self, name: str, num_classes: int) -> None:
        import torchvision.models.detection as tvd

        super().__init__()
        if name not in TORCHVISION_DETECTORS:
            raise ConfigError(f"torchvision:{name} is not a detector edgeft imports: {', '.join(TORCHVISION_DETECTORS)} "
                              f"(FCOS, the head edgeft exports with NMS){close_matches(name, TORCHVISION_DETECTORS)}")
        tv = getattr(tvd, name)(weights=None, weights_backbone=None, num_classes=num_classes)
        self.backbone, self.head, self.anchor_generator = tv.backbone, tv.head, tv.anchor_generator
        self.num_classes = num_classes
        self.center_sampling_radius = tv.center_sampling_radius

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.backbone(x).values())

    def points(self, size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
        """torchvision's anchors for an input of ``size`` (from the levels' sizes, as its FCOS computes them)."""
        from torchvision.models.detection.image_list import ImageList

        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(1, 3, *size)
                feats = self.levels(x)
                anchors = self.anchor_generator(ImageList(x, [tuple(size)]), feats)[0]
        finally:
            self.train(was)
        return anchors, [f.shape[-2] * f.shape[-1] for f in feats]


def build(arch: str, num_classes: int, spec: DetectSpec) -> _Fcos:
    """The network of a detector artifact: ``torchvision:NAME`` (an imported torchvision FCOS) or a timm backbone's."""
    if arch.startswith("torchvision:"):
        return TorchvisionFCOS(arch.split(":", 1)[1], num_classes)
    return Detector(arch, num_classes, spec)


def load_backbone(model: Detector, state_dict: dict[str, torch.Tensor]) -> int:
    """Load a classifier checkpoint's backbone weights into the detector's backbone (the classifier head and last
    conv are not part of it); returns how many tensors were loaded. Refuses a checkpoint that fits nothing."""
    own = model.backbone.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    missing = [k for k in own if k not in matched]
    if missing:
        raise ConfigError(f"the weights do not fit the backbone: {len(missing)} of its {len(own)} tensors missing or "
                          f"of another shape (first: {missing[0]}); pass weights of the same architecture")
    model.backbone.load_state_dict(matched)
    return len(matched)
