"""A detector pruned and recovered (``edgeft prune`` on a detector, beside :mod:`edgeft.prune`).

torch-pruning's dependency graph removes backbone channels; the feature pyramid and the FCOS head keep their
channels (their GroupNorm has 32 groups, and the head's last layers are its outputs), and the pyramid's lateral
convolutions lose the inputs whose channels went. Taylor importance reads FCOS's own loss on training batches.
BatchNorm statistics are re-estimated on training images, then the detector recovers through the engine's loop
with the training settings of its parent, at ``recover_epochs`` and ``recover_lr``; the best val mAP epoch is kept.
With ``prune.distill`` the recovery adds the distance of the head's outputs to the unpruned parent's on the same
batches (:func:`~edgeft.tasks.detect.model.head_distillation`) to FCOS's loss.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeft import artifact as art
from edgeft import progress
from edgeft.errors import ConfigError, close_matches
from edgeft.models import count_macs, from_artifact, torch_pruning
from edgeft.models.inference import normalize, to_tensor
from edgeft.prune.channels import (PruneError, channel_importance, prune_to_target, recalibrate_batchnorm,
                                   where_landed)
from edgeft.prune.config import PruneConfig
from edgeft.tasks.detect.model import DetectSpec, Detector


def _protected(det: Detector, names: list[str]) -> list[torch.nn.Module]:
    modules = dict(det.named_modules())
    for n in names:
        if n not in modules:
            raise ConfigError(f"--ignore {n!r} is not a layer of the detector{close_matches(n, modules)}")
    return [det.fpn, det.head] + [modules[n] for n in names]


def _gradients(train: Any, contract: Any, batches: int, rng: np.random.Generator):
    """Taylor importance's gradients: FCOS's loss on a few training batches."""
    def accumulate(model: torch.nn.Module) -> None:
        model.eval()
        model.zero_grad(set_to_none=True)
        for _ in range(batches):
            idx = rng.choice(len(train), size=min(8, len(train)), replace=False)
            x = normalize(to_tensor(train.images[idx]), contract)
            targets = [{"boxes": torch.from_numpy(train.boxes[i]), "labels": torch.from_numpy(train.labels[i])}
                       for i in idx]
            model(x, targets).backward()
    return accumulate


def prune_detector(parent: art.Artifact, data: str | os.PathLike, out: Path, cfg: PruneConfig,
                   force: bool = False) -> art.Artifact:
    """Prune the detector ``parent``'s backbone to ``cfg``'s target, recover it on ``data``; write ``out``."""
    from edgeft.runtime.torch_shapes import shape_spec
    from edgeft.tasks.detect.training import (fit, frozen_prefix, load_sets, measure, parent_training, parent_weights,
                                              save_detector)
    from edgeft.training.loop import setup

    out = art.refuse_existing(out, force)
    t0 = time.time()
    rcfg = parent_training(parent, cfg.recover_epochs, cfg.recover_lr, cfg.seed, cfg.threads)
    device, dist = setup(rcfg.train)
    contract = parent.meta.input
    _, decoded = load_sets(data, contract, rcfg.train.threads, classes=parent.meta.class_names)
    graph = from_artifact(parent)
    reference = copy.deepcopy(graph)
    det = graph.model
    example = torch.zeros(1, contract.channels, *contract.size)
    base_macs, base_params = count_macs(det, example)
    before = measure(graph, {"val": decoded["val"]}, contract)["val"]["map"]
    tp = torch_pruning()
    try:
        pruner = tp.pruner.MetaPruner(det, example, importance=channel_importance(tp, cfg.importance),
                                      global_pruning=cfg.global_pruning, pruning_ratio=cfg.max_layer_ratio,
                                      max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=cfg.steps,
                                      round_to=cfg.round_to, ignored_layers=_protected(det, cfg.ignore))
    except Exception as e:  # torch-pruning cannot trace some custom ops
        raise PruneError(f"torch-pruning cannot build the dependency graph of the {parent.meta.arch} detector: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    kind, fraction = cfg.target
    base = base_macs if kind == "macs" else base_params
    rng = np.random.default_rng(cfg.seed)
    train = decoded["train"]
    det, macs, params = prune_to_target(det, pruner, example, cfg, train, contract, rng, base,
                                        gradients=_gradients(train, contract, cfg.taylor_batches, rng))
    det.zero_grad(set_to_none=True)
    recalibrate_batchnorm(det, train, contract, cfg.bn_images, rng)
    landed = where_landed(kind, fraction, (macs if kind == "macs" else params) / base, cfg)
    after = measure(graph, {"val": decoded["val"]}, contract)["val"]["map"]
    prune_s = time.time() - t0
    progress.info(f"pruned the {parent.meta.arch} detector: MACs {base_macs / 1e6:.0f}M → {macs / 1e6:.0f}M, params "
                  f"{base_params / 1e6:.2f}M → {params / 1e6:.2f}M; val mAP {before:.4f} → {after:.4f} before "
                  "recovery")
    pretrained = parent_weights(parent) is not None
    if pretrained:  # as the parent trained: its pretrained first stages stay as they are
        spec = DetectSpec.from_dict(parent.meta.extra["detect"], f"{parent.path} extra.detect")
        frozen_prefix(det, spec.frozen_stages)
    teacher = reference.model if cfg.distill else None
    state, metrics, work = (fit(graph, rcfg.train, decoded, contract, device, dist, out, False, pretrained, teacher)
                            if cfg.recover_epochs else (None, {}, Path(f"{out}.work")))
    metrics.update(measure(graph, decoded, contract, device))
    metrics["macs"] = macs
    metrics["detect_prune"] = {
        "macs_before": base_macs, "macs_after": macs, "params_before": base_params, "params_after": params,
        "macs_ratio": round(macs / base_macs, 4), "params_ratio": round(params / base_params, 4),
        "target": landed.to_dict(), "val_map_before": before, "val_map_after_prune": after,
        "prune_s": round(prune_s, 1), "recover_s": metrics.get("train_seconds", 0.0)}
    metrics["total_seconds"] = round(time.time() - t0, 1)
    extra = {**parent.meta.extra, "pruned_spec": shape_spec(graph, reference),
             "history": state.history if state is not None else []}
    meta = art.Meta(kind="torch", arch=parent.meta.arch, class_names=parent.meta.class_names, input=contract,
                    lineage=parent.stage_record("prune", {**cfg.to_dict(), "recover": rcfg.to_dict()}),
                    metrics=metrics, extra=extra)
    if state is None:
        from edgeft.models import save_artifact

        return save_artifact(graph, out, meta, force=force)
    return save_detector(graph, out, meta, state, device, dist, work, force)
