"""``edgeft anomaly``: fit an anomaly model from the good images of ``train/<good>`` alone.

No defect label is used to fit: the backbone's patch features of the good images become a Gaussian per map
position (``padim``) or a coreset memory bank (``patchcore``), stored as buffers of the graph
(``edgeft.tasks.anomaly.graph``) that the artifact holds. The threshold is a decision policy chosen on val
(which needs anomalous images; no threshold is guessed from good images alone), and test is scored once, last.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from edgeft import progress
from edgeft.tasks.anomaly.config import MIN_GOOD_IMAGES, AnomalyConfig
from edgeft.artifact import Artifact, Meta, lineage_entry, refuse_existing
from edgeft.decision import Rule
from edgeft.tasks.anomaly.features import StatsSettings, choose_on_val, score_test, statistics, stored_bytes
from edgeft.errors import ConfigError, DataError
from edgeft.metrics import AnomalyFit
from edgeft.tasks.anomaly.graph import ANOMALOUS, AnomalySpec, check_layers, cut_backbone, features, graph


def _good_files(data: str | os.PathLike, good: str):
    from edgeft.data.imagefolder import find_splits, scan_split

    found = find_splits(data)
    files = scan_split(found["train"])
    if good not in files.classes:
        raise DataError(f"anomaly.good {good!r} is not a class folder of {found['train']} (it has "
                        f"{', '.join(files.classes)}); name the folder of good parts with --good")
    k = files.classes.index(good)
    keep = [i for i, y in enumerate(files.labels) if y == k]
    if len(keep) < MIN_GOOD_IMAGES:
        raise DataError(f"{found['train']}/{good} has {len(keep)} image(s); an anomaly model needs at least "
                        f"{MIN_GOOD_IMAGES} good images (a real line: hundreds, covering its normal variation)")
    return found, replace(files, paths=[files.paths[i] for i in keep], labels=[0] * len(keep))


def _stats_settings(cfg: AnomalyConfig) -> StatsSettings:
    """How the statistics are fitted, from the fit's settings (a pruned model re-fits with the same ones)."""
    return StatsSettings(method=cfg.method, eps=cfg.eps, coreset=cfg.coreset, max_bank=cfg.max_bank, seed=cfg.seed,
                         batch_size=cfg.batch_size)


def _rule(cfg: AnomalyConfig) -> Rule | None:
    if cfg.target_recall is None and cfg.max_false_reject is None and cfg.escape_cost is None:
        return None
    return Rule(target_recall=cfg.target_recall, max_false_reject=cfg.max_false_reject, escape_cost=cfg.escape_cost,
                false_reject_cost=cfg.false_reject_cost, review_budget=cfg.review_budget)


def _backbone_and_spec(cfg: AnomalyConfig):
    """(cut backbone, input contract, spec, resolved weights): the graph's shape before any image is read."""
    import torch

    from edgeft.models import create, resolve_weights

    weights = resolve_weights(cfg.model, cfg.weights)
    backbone, contract = create(cfg.model, weights)
    changes = {k: v for k, v in (("size", [cfg.image_size] * 2 if cfg.image_size else None),
                                 ("resize", cfg.resize)) if v is not None}
    contract = contract.replace(**changes) if changes else contract
    levels = check_layers(backbone, cfg.layers, cfg.model)
    cut_backbone(backbone.eval(), cfg.layers)
    with torch.no_grad():
        probe = backbone.forward_intermediates(torch.zeros(1, contract.channels, *contract.size), indices=cfg.layers,
                                               intermediates_only=True, stop_early=True)
    grid = [cfg.grid, cfg.grid] if cfg.grid else list(probe[-1].shape[-2:])
    channels = [f["num_chs"] for f in levels]
    keep = None
    if cfg.dims is not None:
        if cfg.dims > sum(channels):
            raise ConfigError(f"anomaly.dims {cfg.dims} is more than the {sum(channels)} channels of layers "
                              f"{cfg.layers}; give at most {sum(channels)}, or leave it out to keep all")
        g = torch.Generator().manual_seed(cfg.seed)
        keep = sorted(torch.randperm(sum(channels), generator=g)[:cfg.dims].tolist())
    spec = AnomalySpec(method=cfg.method, layers=list(cfg.layers), channels=channels, grid=grid,
                       sizes=[list(f.shape[-2:]) for f in probe], keep=keep, pool=cfg.pool, chunk=cfg.chunk,
                       good_class=cfg.good, storage=cfg.storage, extra={"eps": cfg.eps})
    return backbone, contract, spec, weights


def fit(cfg: AnomalyConfig, data: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> Artifact:
    """Fit ``cfg.method`` on ``data``/train/``cfg.good``; choose the threshold on val; score test; write a torch
    artifact at ``out`` whose graph returns (score, heatmap)."""
    import torch

    from edgeft.data.imagefolder import decode_split
    from edgeft.models import save_artifact

    out = refuse_existing(out, force)
    t0 = time.time()
    if cfg.good == ANOMALOUS:
        raise ConfigError(f"anomaly.good cannot be named {ANOMALOUS!r}: that is the name of the other outcome")
    found, good_files = _good_files(data, cfg.good)
    _rule(cfg)  # a contradictory rule fails before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # a backbone without weights (weights: none) is the same on every run
    backbone, contract, spec, weights = _backbone_and_spec(cfg)
    images = decode_split(good_files, contract, cfg.threads).images
    buffers = statistics(features(backbone, spec).eval(), images, contract, _stats_settings(cfg), spec)
    good_sample = images[:64].copy()  # the heatmap's colour scale where val has no good images
    del images
    if cfg.method == "patchcore":
        spec.bank_size = int(buffers["bank"].shape[0])
    model = graph(backbone, spec).eval()
    for name, value in buffers.items():
        getattr(model, name).copy_(value)
    bank_bytes = stored_bytes(buffers)
    fit_s = time.time() - t0
    progress.info(f"fitted {cfg.method} on {len(good_files.paths)} good images in {fit_s:.0f} s "
                  f"({bank_bytes / 1e6:.1f} MB of statistics, heatmap {spec.grid[0]}x{spec.grid[1]})")
    policy, val_dec = choose_on_val(model, _rule(cfg), cfg.good, cfg.batch_size, data, spec, contract, good_sample)
    test_dec, test_policy, pixel, pro, masks = (score_test(model, cfg.good, cfg.batch_size, data, contract, policy)
                                                if "test" in found else (None, None, None, None, 0))
    metrics = AnomalyFit(method=cfg.method, good_images=len(good_files.paths), fit_s=round(fit_s, 2),
                         bank_bytes=bank_bytes, val=val_dec, test=test_dec, test_policy=test_policy,
                         test_pixel_auroc=pixel, test_pixel_pro=pro, test_masks=masks)
    params = {**cfg.to_dict(), "weights": str(weights), "data": str(Path(data))}
    extra = {"task": "anomaly", "anomaly": spec.to_dict()}
    if policy is not None:
        extra["decision"] = policy.to_dict()
    meta = Meta(kind="torch", arch=cfg.model, class_names=[cfg.good, ANOMALOUS], input=contract,
                lineage=[lineage_entry("anomaly", params)], metrics={"anomaly": metrics.to_dict()}, extra=extra)
    artifact = save_artifact(model, out, meta, force=force)
    from edgeft.training.track import Run  # a fit has no epochs: its settings and numbers, when tracking is asked

    run = Run(out.name, params)
    run.final(metrics.to_dict())
    run.finish()
    return artifact
