"""``edgeft detect``: train a detector on box-labelled images through the one training engine
(:class:`edgeft.training.loop.Loop`), and measure it with the COCO evaluator.

The backbone starts from a classifier's weights (the packaged ImageNet EfficientNet-Lite0 by default, or a local
checkpoint of the same architecture); its stem and first ``frozen_stages`` stages keep them, and its BatchNorm
statistics stay frozen (batches of a few tiles would only add noise to ImageNet's). The pyramid and the head are new
and learn at the head's learning rate. Every epoch is scored on val by mAP@[.5:.95], and the best epoch is kept.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from edgeft import artifact as art
from edgeft import progress
from edgeft.data import augment as aug
from edgeft.errors import DataError
from edgeft.models.inference import normalize, to_tensor
from edgeft.tasks.detect.config import DetectConfig
from edgeft.tasks.detect.data import DecodedSet, decode, read_split
from edgeft.tasks.detect.metrics import DetectionMetrics, coco_metrics
from edgeft.tasks.detect.model import DetectSpec, Detector, load_backbone
from edgeft.tasks.detect.nms import DetectorGraph, split_detections
from edgeft.training.loop import Objective


def flip_boxes(x: torch.Tensor, boxes: list[torch.Tensor], a: Any, gen: torch.Generator
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random horizontal/vertical flips and 90-degree turns (square inputs) of a batch, each image's boxes moved
    with it; ``a`` is the :class:`~edgeft.data.augment.Augmentation` (its flags say which)."""
    n, _, h, w = x.shape
    imgs, out = [], []
    for k in range(n):
        xi, b = x[k], boxes[k].clone()
        if a.hflip and torch.rand(1, generator=gen).item() < 0.5:
            xi = xi.flip(2)
            b = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
        if a.vflip and torch.rand(1, generator=gen).item() < 0.5:
            xi = xi.flip(1)
            b = torch.stack([b[:, 0], h - b[:, 3], b[:, 2], h - b[:, 1]], 1)
        if a.rot90 and h == w:
            for _ in range(int(torch.randint(0, 4, (1,), generator=gen).item())):
                xi = torch.rot90(xi, 1, dims=(1, 2))  # counter-clockwise: (x, y) -> (y, w - x)
                b = torch.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], 1)
        imgs.append(xi)
        out.append(b)
    return torch.stack(imgs), out


def torch_detections(graph: DetectorGraph, images: np.ndarray, contract: Any, batch_size: int = 16,
                     device: str = "cpu", desc: str = "detect") -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (boxes in model-input pixels, scores, classes) from the PyTorch graph."""
    graph.eval()
    out = []
    with torch.no_grad():
        for i in progress.bar(range(0, len(images), batch_size), desc=desc, unit="batch"):
            x = normalize(to_tensor(images[i:i + batch_size]).to(device), contract)
            out += split_detections(graph(x).cpu().numpy(), len(x))
    return out


def in_frames(dets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], s: DecodedSet, contract: Any
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Detections moved from model input back to each source image's pixels."""
    from edgeft.tasks.detect.boxes import to_frame

    return [(to_frame(b, contract, *s.sizes[k]), sc, c) for k, (b, sc, c) in enumerate(dets)]


def evaluate_set(dets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], s: DecodedSet, contract: Any,
                 confidence: float | None = None) -> DetectionMetrics:
    """COCO metrics of detections (in model-input pixels) against a decoded split's ground truth, both in the
    frames' pixels."""
    return coco_metrics(s.truth, in_frames(dets, s, contract), s.classes, s.sizes, confidence)


def frozen_prefix(model: Detector, stages: int) -> list[str]:
    """Freeze the backbone's stem and first ``stages`` stages (``blocks[i]``); returns the frozen parameter names."""
    frozen = []
    for name, p in model.backbone.named_parameters():
        top = name.split(".")[0]
        block = int(name.split(".")[1]) if top == "blocks" else None
        if top in ("conv_stem", "bn1") or (block is not None and block < stages):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def set_train_mode(model: nn.Module) -> None:
    """Train mode with every BatchNorm of the backbone frozen (running statistics kept)."""
    model.train()
    for m in model.backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class DetectObjective(Objective):
    """Box-labelled images: FCOS's loss on flipped/turned batches with photometric changes; validated by val
    mAP@[.5:.95] with the graph's own decoding and NMS."""

    monitor = "mAP@[.5:.95]"

    def __init__(self, cfg: Any, graph: DetectorGraph, train: DecodedSet, val: DecodedSet, contract: Any,
                 device: torch.device) -> None:
        self.cfg, self.graph, self.train, self.val, self.contract, self.device = (cfg, graph, train, val, contract,
                                                                                  device)
        self.n_train = len(train)
        self.photometric = replace(cfg.augment, hflip=False, vflip=False, rot90=False, p_affine=0.0)

    def loss(self, module: nn.Module, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        x = to_tensor(self.train.images[idx])
        boxes = [torch.from_numpy(self.train.boxes[i]) for i in idx]
        x, boxes = flip_boxes(x, boxes, self.cfg.augment, gen)
        x = aug.apply(x, self.photometric, gen, grayscale=self.contract.color == "GRAY")
        x = normalize(x.to(self.device), self.contract)
        targets = [{"boxes": b.to(self.device), "labels": torch.from_numpy(self.train.labels[i]).to(self.device)}
                   for b, i in zip(boxes, idx)]
        return module(x, targets)

    def validate(self) -> tuple[float, dict[str, float], dict[str, str]]:
        dets = torch_detections(self.graph, self.val.images, self.contract, device=str(self.device), desc="val")
        m = evaluate_set(dets, self.val, self.contract)
        return m.map, {"val_map": m.map, "val_map50": m.map50}, {"val_map": f"{m.map:.3f}",
                                                                  "val_map50": f"{m.map50:.3f}"}


def build_detector(cfg: DetectConfig, num_classes: int) -> tuple[Detector, DetectSpec, Any, str]:
    """The detector with its backbone's pretrained weights; (model, spec with strides, input contract, weights
    description)."""
    from edgeft.models import create, resolve_weights

    t = cfg.train
    model = Detector(t.model, num_classes, cfg.spec)
    weights = resolve_weights(t.model, t.weights)
    clf, contract = create(t.model, weights=weights)
    if weights is not None:
        load_backbone(model, clf.state_dict())
    del clf
    size = t.image_size or contract.size[0]
    contract = contract.replace(size=(size, size), resize=t.resize or "stretch")
    spec = replace(cfg.spec, strides=model.strides)
    return model, spec, contract, str(weights) if weights is not None else "none (random initialisation)"


def train_detector(cfg: DetectConfig, data: str | os.PathLike, out: str | os.PathLike, force: bool = False,
                   resume: bool = False) -> art.Artifact:
    """Train a detector on ``data`` (COCO JSON or YOLO txt, :mod:`edgeft.tasks.detect.data`) into the artifact
    ``out``; metrics on val and (when present) test by the COCO evaluator."""
    from edgeft.training.loop import Loop, TrainState, _work_dir, peak_rss_mb, setup

    t0 = time.time()
    out = art.refuse_existing(out, force)
    t = cfg.train
    device, dist = setup(t)
    sets = {s: read_split(data, s) for s in ("train", "val", "test") if _has_split(data, s)}
    if "val" not in sets:
        raise DataError(f"{data} has no val split: a detector's best epoch and operating point are chosen on val")
    classes = sets["train"].classes
    for s, ds in sets.items():
        if ds.classes != classes:
            raise DataError(f"{data}: the {s} split's classes {ds.classes} differ from train's {classes}")
        progress.info(ds.summary())
    model, spec, contract, weights = build_detector(cfg, len(classes))
    decoded = {s: decode(ds, contract, threads=t.threads) for s, ds in sets.items()}
    frozen = frozen_prefix(model, spec.frozen_stages)
    graph = DetectorGraph(model, spec, contract.size).to(device)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    progress.info(f"detect {t.model} + FCOS ({spec.fpn_channels} channels, {spec.head_convs} convs, strides "
                  f"{list(spec.strides)}) on {len(decoded['train'])} train / {len(decoded['val'])} val images, "
                  f"{decoded['train'].boxes and sum(len(b) for b in decoded['train'].boxes)} train boxes, classes "
                  f"{classes}, input {contract.size[0]}x{contract.size[1]} {contract.resize}; {n_train:,} trainable "
                  f"parameters ({len(frozen)} tensors frozen), device {device}")
    objective = DetectObjective(t, graph, decoded["train"], decoded["val"], contract, device)
    loop = Loop(t, model, model, objective, device, dist, _work_dir(Path(out)))
    loop.before_epoch = lambda: set_train_mode(model)
    t_train = time.time()
    state: TrainState
    state, stopped_early = loop.run(resume, t_train)
    train_seconds = time.time() - t_train
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    graph.eval()
    metrics: dict[str, Any] = {"best_epoch": state.best_epoch, "epochs_run": state.epoch,
                               "stopped_early": stopped_early, "train_seconds": round(train_seconds, 1),
                               "params": sum(p.numel() for p in model.parameters()), "device": str(device)}
    for s in ("val", "test"):
        if s in decoded:
            dets = torch_detections(graph, decoded[s].images, contract, device=str(device), desc=s)
            metrics[s] = evaluate_set(dets, decoded[s], contract).to_dict()
    metrics["eval_split"] = "test" if "test" in decoded else "val"
    metrics["total_seconds"] = round(time.time() - t0, 1)
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 0)
    params = {**cfg.to_dict(), "data": str(data), "weights": weights}
    meta = art.Meta(kind="torch", arch=t.model, class_names=classes, input=contract,
                    lineage=[art.lineage_entry("detect", params)], metrics=metrics,
                    extra={"task": "detect", "detect": spec.to_dict(), "history": state.history,
                           "data_counts": {s: ds.counts() for s, ds in sets.items()}})
    from edgeft.training.loop import Trained, save

    graph.to("cpu")
    trained = Trained(graph, None, metrics, state, device, dist, loop.work)  # type: ignore[arg-type]
    return save(trained, Path(out), meta, force=force)


def _has_split(data: str | os.PathLike, split: str) -> bool:
    from edgeft.tasks.detect.data import find_layout

    return split in find_layout(data)[1]
