"""``edgeft prune`` on an anomaly model: a narrower backbone that gives the same patch features, found without a label.

The backbone is pruned to the MACs target (torch-pruning, L2 or BatchNorm-scale importance: Taylor needs a loss
from labels, which an anomaly model has none of), except the layers that produce the feature levels the graph
reads, so the features keep their channels and meaning. It then recovers by **distilling its own features**: on the
good training images it learns to give what the unpruned backbone gave (``edgeft.training.loop.distill_features``).
The statistics are fitted again on the pruned backbone's features, the threshold chosen again on val with the fit's
rule (pruning moves scores), and test is scored once, last, as the fit does.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edgeft import artifact as art
from edgeft import progress
from edgeft.decision import read_policy
from edgeft.tasks.anomaly.features import StatsSettings, choose_on_val, score_test, statistics, stored_bytes
from edgeft.training.loop import distill_features
from edgeft.errors import ConfigError, DataError, close_matches
from edgeft.metrics import AnomalyFit, AnomalyPrune
from edgeft.models import count_macs, from_artifact, torch_pruning
from edgeft.prune.channels import (PruneError, channel_importance, prune_to_target, recalibrate_batchnorm,
                                   where_landed)
from edgeft.prune.config import PruneConfig, check_for_anomaly
from edgeft.tasks.anomaly.graph import AnomalySpec, feature_levels, features, graph


def level_outputs(backbone: nn.Module, spec: AnomalySpec) -> list[nn.Module]:
    """The last convolution of each feature level the graph reads: kept whole, so every level keeps its channels
    (and with them the channels that residual connections tie to it)."""
    modules = dict(backbone.named_modules())
    levels = feature_levels(backbone)
    out = []
    for i in spec.layers:
        convs = [m for m in modules[levels[i]["module"]].modules() if isinstance(m, nn.Conv2d)]
        if convs:
            out.append(convs[-1])
    return out


def _fit_settings(parent: art.Artifact, spec: AnomalySpec) -> StatsSettings:
    """The statistics settings of the fit that made ``parent`` (from its lineage)."""
    fit = next((e["params"] for e in reversed(parent.meta.lineage) if e.get("stage") == "anomaly"), {})
    return StatsSettings(method=spec.method, eps=float(spec.extra.get("eps", fit.get("eps", 0.01))),
                         coreset=float(fit.get("coreset", 0.01)), max_bank=int(fit.get("max_bank", 16384)),
                         seed=int(fit.get("seed", 0)), batch_size=int(fit.get("batch_size", 16)))


def _good_train_images(data, contract, good: str) -> np.ndarray:
    from edgeft.data.imagefolder import load_split

    train = load_split(data, "train", contract)
    if good not in train.classes:
        raise DataError(f"{data}/train has no {good}/ folder of good parts to recover and re-fit on; pass the data "
                        "folder the anomaly model was fitted on")
    return train.images[train.labels == train.classes.index(good)]


def _prune_features(reference, spec: AnomalySpec, cfg: PruneConfig, images: np.ndarray, contract, arch: str, rng):
    """(pruned patch-feature module, its MACs and parameters before and after, where it landed): the backbone pruned
    to ``cfg``'s target with the feature levels' layers kept, BatchNorm re-estimated on the good images."""
    tp = torch_pruning()
    feat = copy.deepcopy(reference.features)
    example = torch.zeros(1, contract.channels, *contract.size)
    with torch.no_grad():
        shape = tuple(feat.eval()(example).shape)
    before = count_macs(feat, example)
    modules = dict(feat.backbone.named_modules())
    for n in cfg.ignore:
        if n not in modules:
            raise ConfigError(f"--ignore {n!r} is not a layer of the backbone{close_matches(n, modules)}")
    ignored = level_outputs(feat.backbone, spec) + [modules[n] for n in cfg.ignore]
    try:
        pruner = tp.pruner.MetaPruner(feat, example, importance=channel_importance(tp, cfg.importance),
                                      global_pruning=cfg.global_pruning, pruning_ratio=cfg.max_layer_ratio,
                                      max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=cfg.steps,
                                      round_to=cfg.round_to, ignored_layers=ignored)
    except Exception as e:  # torch-pruning cannot trace some custom ops
        raise PruneError(f"torch-pruning cannot build the dependency graph of {arch}'s features: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    kind, fraction = cfg.target
    base = before[0] if kind == "macs" else before[1]
    feat, macs, params = prune_to_target(feat, pruner, example, cfg, None, contract, rng, base)
    with torch.no_grad():
        if tuple(feat.eval()(example).shape) != shape:
            raise PruneError("pruning changed the feature channels the anomaly graph reads; protect the levels' "
                             "layers with --ignore")
    recalibrate_batchnorm(feat, _Images(images), contract, cfg.bn_images, rng)
    landed = where_landed(kind, fraction, (macs if kind == "macs" else params) / base, cfg)
    return feat, before, (macs, params), landed


def _refit(parent: art.Artifact, feat, spec: AnomalySpec, images: np.ndarray, data, t0: float):
    """(the graph over the pruned backbone with statistics fitted again, its policy chosen again on val with the fit's
    rule, its ``AnomalyFit``): pruning moves the features, so nothing of the parent's statistics is kept."""
    from edgeft.data.imagefolder import find_splits

    contract, good = parent.meta.input, parent.meta.class_names[0]
    policy = read_policy(parent.meta.extra, f"{parent.path}/meta.json extra.decision")
    settings = _fit_settings(parent, spec)
    buffers = statistics(features(feat.backbone, spec).eval(), images, contract, settings, spec)
    spec = replace(spec, bank_size=int(buffers["bank"].shape[0]) if "bank" in buffers else spec.bank_size)
    model = graph(feat.backbone, spec).eval()
    for name, value in buffers.items():
        getattr(model, name).copy_(value)
    new_policy, val_dec = choose_on_val(model, policy.rule if policy else None, good, settings.batch_size, data, spec,
                                        contract, images[:64])
    test_dec, test_policy, pixel, pro, masks = (
        score_test(model, good, settings.batch_size, data, contract, new_policy) if "test" in find_splits(data)
        else (None, None, None, None, 0))
    fit = AnomalyFit(method=spec.method, good_images=len(images), fit_s=round(time.time() - t0, 2),
                     bank_bytes=stored_bytes(buffers), val=val_dec, test=test_dec,
                     test_policy=test_policy, test_pixel_auroc=pixel, test_pixel_pro=pro, test_masks=masks)
    return model, spec, new_policy, fit


def prune_anomaly(parent: art.Artifact, data, out: Path, cfg: PruneConfig, force: bool = False) -> art.Artifact:
    """Prune the anomaly artifact ``parent``'s backbone to ``cfg``'s target, recover it by feature distillation on
    ``data``'s good training images, re-fit its statistics and threshold; write the artifact at ``out``."""
    from edgeft.models import save_artifact
    from edgeft.runtime.torch_shapes import shape_spec

    check_for_anomaly(cfg)
    out = art.refuse_existing(out, force)
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    contract = parent.meta.input
    spec = AnomalySpec.from_dict(parent.meta.extra.get("anomaly"), f"{parent.path}/meta.json extra.anomaly")
    images = _good_train_images(data, contract, parent.meta.class_names[0])
    reference = from_artifact(parent)
    feat, (base_macs, base_params), (macs, params), landed = _prune_features(
        reference, spec, cfg, images, contract, parent.meta.arch, np.random.default_rng(cfg.seed))
    prune_s = time.time() - t0
    progress.info(f"pruned {parent.meta.arch}'s features: MACs {base_macs / 1e6:.0f}M → {macs / 1e6:.0f}M, params "
                  f"{base_params / 1e6:.2f}M → {params / 1e6:.2f}M in {prune_s:.0f} s")
    t1 = time.time()
    losses = (distill_features(feat, reference.features, images, contract, cfg.recover_epochs, cfg.recover_lr,
                               seed=cfg.seed) if cfg.recover_epochs else [])
    recover_s = time.time() - t1
    model, spec, policy, fit = _refit(parent, feat, spec, images, data, t0)
    record = AnomalyPrune(macs_before=base_macs, macs_after=macs, params_before=base_params, params_after=params,
                          macs_ratio=round(macs / base_macs, 4), params_ratio=round(params / base_params, 4),
                          target=landed, prune_s=round(prune_s, 1), recover_s=round(recover_s, 1),
                          distill_loss=[round(v, 5) for v in losses])
    extra = {**parent.meta.extra, "anomaly": spec.to_dict(), "pruned_spec": shape_spec(model, reference)}
    extra.pop("decision", None)
    if policy is not None:
        extra["decision"] = policy.to_dict()
    meta = art.Meta(kind="torch", arch=parent.meta.arch, class_names=parent.meta.class_names, input=contract,
                    lineage=parent.stage_record("prune", cfg.to_dict()),
                    metrics={"anomaly": fit.to_dict(), "anomaly_prune": record.to_dict(), "macs": macs}, extra=extra)
    return save_artifact(model, out, meta, force=force)


class _Images:
    """Good images as the BatchNorm re-estimation reads a split (``len`` and ``images``)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)
