"""``edgeft detect``: train a detector on box-labelled images through the one training engine
(:class:`edgeft.training.loop.Loop`), and measure it with the COCO evaluator.

The backbone starts from a classifier's weights (the packaged ImageNet EfficientNet-Lite0 by default, or a local
checkpoint of the same architecture); its stem and first ``frozen_stages`` stages keep them, and its BatchNorm
statistics stay frozen (batches of a few tiles would only add noise to ImageNet's); from random weights
(``weights: none``) the statistics are learnt. The pyramid and the head are new and learn at the head's learning
rate. Every epoch is scored on val by mAP@[.5:.95], and the best epoch is kept.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from edgeft import artifact as art
from edgeft import progress
from edgeft.tasks.detect.config import DetectConfig
from edgeft.tasks.detect.data import decode
from edgeft.tasks.detect.model import DetectSpec, Detector, load_backbone
from edgeft.tasks.detect.nms import DetectorGraph
from edgeft.tasks.detect.training import fit, frozen_prefix, load_sets, measure, save_detector


def build_detector(cfg: DetectConfig, num_classes: int) -> tuple[Detector, DetectSpec, Any, str | None]:
    """The detector with its backbone's pretrained weights; (model, spec with strides, input contract, the weights
    loaded: None for random initialisation)."""
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
    return model, spec, contract, None if weights is None else str(weights)


def train_detector(cfg: DetectConfig, data: str | os.PathLike, out: str | os.PathLike, force: bool = False,
                   resume: bool = False) -> art.Artifact:
    """Train a detector on ``data`` (COCO JSON or YOLO txt, :mod:`edgeft.tasks.detect.data`) into the artifact
    ``out``; metrics on val and (when present) test by the COCO evaluator."""
    from edgeft.training.loop import peak_rss_mb, setup

    t0 = time.time()
    out = art.refuse_existing(out, force)
    t = cfg.train
    device, dist = setup(t)
    sets, _ = load_sets(data, None, t.threads)
    classes = sets["train"].classes
    model, spec, contract, weights = build_detector(cfg, len(classes))
    decoded = {s: decode(ds, contract, threads=t.threads) for s, ds in sets.items()}
    frozen = frozen_prefix(model, spec.frozen_stages) if weights is not None else []  # random weights all train
    graph = DetectorGraph(model, spec, contract.size).to(device)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    progress.info(f"detect {t.model} + FCOS ({spec.fpn_channels} channels, {spec.head_convs} convs, strides "
                  f"{list(spec.strides)}) on {len(decoded['train'])} train / {len(decoded['val'])} val images, "
                  f"{sum(len(b) for b in decoded['train'].boxes)} train boxes, classes {classes}, input "
                  f"{contract.size[0]}x{contract.size[1]} {contract.resize}; {n_train:,} trainable parameters "
                  f"({len(frozen)} tensors frozen), device {device}")
    state, metrics, work = fit(graph, t, decoded, contract, device, dist, out, resume, pretrained=weights is not None)
    metrics.update(measure(graph, decoded, contract, device))
    metrics["total_seconds"] = round(time.time() - t0, 1)
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 0)
    params = {**cfg.to_dict(), "data": str(data), "weights": weights or "none (random initialisation)"}
    meta = art.Meta(kind="torch", arch=t.model, class_names=classes, input=contract,
                    lineage=[art.lineage_entry("detect", params)], metrics=metrics,
                    extra={"task": "detect", "detect": spec.to_dict(), "history": state.history,
                           "data_counts": {s: ds.counts() for s, ds in sets.items()}})
    return save_detector(graph, out, meta, state, device, dist, work, force)
