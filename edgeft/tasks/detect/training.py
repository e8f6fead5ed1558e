"""A detector on the training floor: what the engine trains it on (:class:`DetectObjective`: FCOS's loss on flipped
and turned batches, validated by val mAP), how its data is loaded and its network trained and measured. The stages
that train a detector (``edgeft detect``, its pruning's recovery) compose these.
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
from edgeft.errors import ConfigError, DataError
from edgeft.models.inference import normalize, to_tensor
from edgeft.tasks.detect.config import TRAIN_KEYS, DetectConfig
from edgeft.tasks.detect.data import DecodedSet, decode, read_split
from edgeft.tasks.detect.metrics import DetectionMetrics, coco_metrics
from edgeft.tasks.detect.model import Detector
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


def set_train_mode(model: nn.Module, frozen_statistics: bool = True) -> None:
    """Train mode; with ``frozen_statistics`` (a pretrained backbone) every BatchNorm of the backbone keeps its
    running statistics (batches of a few tiles would only add noise to ImageNet's); a backbone trained from random
    weights learns them."""
    model.train()
    if not frozen_statistics:
        return
    for m in model.backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class DetectObjective(Objective):
    """Box-labelled images: FCOS's loss on flipped/turned batches with photometric changes; validated by val
    mAP@[.5:.95] with the graph's own decoding and NMS."""

    monitor = "mAP@[.5:.95]"

    def __init__(self, cfg: Any, graph: DetectorGraph, train: DecodedSet, val: DecodedSet, contract: Any,
                 device: torch.device, teacher: nn.Module | None = None) -> None:
        self.cfg, self.graph, self.train, self.val, self.contract, self.device = (cfg, graph, train, val, contract,
                                                                                  device)
        self.teacher = teacher.eval().to(device) if teacher is not None else None  # an unpruned parent network
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
        if self.teacher is None:
            return module(x, targets)
        with torch.no_grad():
            soft = self.teacher(x)
        return module(x, targets, soft)

    def validate(self) -> tuple[float, dict[str, float], dict[str, str]]:
        dets = torch_detections(self.graph, self.val.images, self.contract, device=str(self.device), desc="val")
        m = evaluate_set(dets, self.val, self.contract)
        return m.map, {"val_map": m.map, "val_map50": m.map50}, {"val_map": f"{m.map:.3f}",
                                                                  "val_map50": f"{m.map50:.3f}"}


def load_sets(data: str | os.PathLike, contract: Any, threads: int | None, classes: list[str] | None = None
              ) -> tuple[dict[str, Any], dict[str, DecodedSet]]:
    """The data's splits as read ({split: DetectionSet}, val required, classes alike) and decoded through
    ``contract`` ({split: DecodedSet}); ``contract`` None: read only."""
    from edgeft.tasks.detect.data import find_layout

    found = find_layout(data)[1]
    sets = {s: read_split(data, s, classes=classes) for s in ("train", "val", "test") if s in found}
    if "val" not in sets:
        raise DataError(f"{data} has no val split: a detector's best epoch and operating point are chosen on val")
    first = sets["train"].classes
    for s, ds in sets.items():
        if ds.classes != first:
            raise DataError(f"{data}: the {s} split's classes {ds.classes} differ from train's {first}")
        progress.info(ds.summary())
    decoded = {s: decode(ds, contract, threads=threads) for s, ds in sets.items()} if contract is not None else {}
    return sets, decoded


def fit(graph: DetectorGraph, t: Any, decoded: dict[str, DecodedSet], contract: Any, device: torch.device,
        dist: Any, out: Path, resume: bool, pretrained: bool = True, teacher: nn.Module | None = None
        ) -> tuple[Any, dict[str, Any], Path]:
    """Train ``graph``'s network through the engine's :class:`~edgeft.training.loop.Loop` (best val mAP epoch
    restored; a ``pretrained`` backbone's BatchNorm statistics kept; distilled from ``teacher``'s head outputs when
    given); (the state, the training's metrics, the checkpoint folder)."""
    from edgeft.training.loop import Loop, _work_dir

    model = graph.model
    objective = DetectObjective(t, graph, decoded["train"], decoded["val"], contract, device, teacher)
    loop = Loop(t, model, model, objective, device, dist, _work_dir(Path(out)))
    loop.before_epoch = lambda: set_train_mode(model, pretrained)
    t_train = time.time()
    state, stopped_early = loop.run(resume, t_train)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    graph.eval()
    return state, {"best_epoch": state.best_epoch, "epochs_run": state.epoch, "stopped_early": stopped_early,
                   "train_seconds": round(time.time() - t_train, 1),
                   "params": sum(p.numel() for p in model.parameters()), "device": str(device)}, loop.work


def measure(graph: DetectorGraph, decoded: dict[str, DecodedSet], contract: Any, device: Any = "cpu"
            ) -> dict[str, Any]:
    """val and test (where present) mAP of the PyTorch graph, and which one is the held-out split."""
    out: dict[str, Any] = {}
    for s in ("val", "test"):
        if s in decoded:
            dets = torch_detections(graph, decoded[s].images, contract, device=str(device), desc=s)
            out[s] = evaluate_set(dets, decoded[s], contract).to_dict()
    out["eval_split"] = "test" if "test" in decoded else "val"
    return out


def save_detector(graph: DetectorGraph, out: Path, meta: art.Meta, state: Any, device: Any, dist: Any, work: Path,
                  force: bool) -> art.Artifact:
    """Write the graph's weights as a torch artifact (the engine's save: main process only, checkpoints removed)."""
    from edgeft.training.loop import Trained, save

    graph.to("cpu")
    return save(Trained(graph, None, meta.metrics, state, device, dist, work), out, meta,  # type: ignore[arg-type]
                force=force)


def parent_training(parent: art.Artifact, epochs: int, lr: float, seed: int, threads: int | None) -> DetectConfig:
    """The parent's own training settings (its lineage's ``detect`` entry) with a later stage's epochs, lr, seed and
    threads (pruning's recovery, QAT)."""
    entry = next((e for e in parent.meta.lineage if e.get("stage") == "detect"), None)
    if entry is None:
        raise ConfigError(f"{parent.path} records no detect stage in its lineage, so the settings it trained with "
                          "are unknown (an imported detector); pruning and QAT retrain a detector trained by "
                          "`edgeft detect`")
    params = {k: v for k, v in entry["params"].items() if k in TRAIN_KEYS}
    params.update(epochs=max(1, epochs), lr=lr, seed=seed, weights=None, warmup_epochs=0.0,
                  **({"threads": threads} if threads else {}))
    return DetectConfig.from_dict(params, "the parent's detect settings")


def parent_weights(parent: art.Artifact) -> str | None:
    """The weights the parent's backbone started from (None: random initialisation)."""
    entry = next((e for e in parent.meta.lineage if e.get("stage") == "detect"), {})
    w = entry.get("params", {}).get("weights")
    return None if w is None or str(w).startswith("none") else str(w)
