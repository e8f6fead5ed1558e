"""``edgeft anomaly``: fit an anomaly model from the good images of ``train/<good>`` alone.

No defect label is used to fit: the backbone's patch features of the good images become a Gaussian per map
position (``padim``) or a coreset memory bank (``patchcore``), stored as buffers of the graph
(``edgeft.runtime.anomaly_graph``) that the artifact holds. The threshold is a decision policy chosen on val
(which needs anomalous images; no threshold is guessed from good images alone), and test is scored once, last.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeft import progress
from edgeft.anomaly.config import MIN_GOOD_IMAGES, AnomalyConfig
from edgeft.artifact import Artifact, Meta, lineage_entry, refuse_existing
from edgeft.decision import Policy, Rule, choose_for_anomaly, format_outcome
from edgeft.errors import ConfigError, DataError
from edgeft.metrics import AnomalyFit, anomalous_mask, anomaly_decisions
from edgeft.runtime.anomaly_graph import ANOMALOUS, TASK, AnomalySpec, check_layers, cut_backbone, features, graph


def greedy_coreset(x, n: int, seed: int = 0, proj_dim: int = 128, desc: str = "coreset"):
    """Indices of ``n`` rows of ``x`` chosen greedily so that every row is near one of them (k-center, as in
    PatchCore): each step adds the row farthest from those chosen. Distances are measured after a random
    projection to ``proj_dim`` dimensions (Johnson-Lindenstrauss), which keeps them nearly and costs far less."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if x.shape[1] > proj_dim:
        x = x @ (torch.randn(x.shape[1], proj_dim, generator=g) / math.sqrt(proj_dim))
    first = int(torch.randint(len(x), (1,), generator=g))
    chosen = [first]
    sq = (x * x).sum(1)  # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: a matrix-vector product per step, no N x D temporary
    dist = (sq - 2 * (x @ x[first]) + sq[first]).clamp_min(0)
    for _ in progress.bar(range(n - 1), desc=desc, unit="pick"):
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, (sq - 2 * (x @ x[i]) + sq[i]).clamp_min(0))
    return torch.tensor(chosen, dtype=torch.long)


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


def _rule(cfg: AnomalyConfig) -> Rule | None:
    if cfg.target_recall is None and cfg.max_false_reject is None and cfg.escape_cost is None:
        return None
    return Rule(target_recall=cfg.target_recall, max_false_reject=cfg.max_false_reject, escape_cost=cfg.escape_cost,
                false_reject_cost=cfg.false_reject_cost, review_budget=cfg.review_budget)


def score_split(model, data, split: str, contract, good: str, batch_size: int):
    """(anomalous?, scores, heatmaps, image set) of a split: every class folder but ``good`` is anomalous."""
    from edgeft.data import load_split
    from edgeft.models.inference import torch_outputs

    s = load_split(data, split, contract)
    anomalous = anomalous_mask(s.labels, s.classes, good)
    scores, maps = torch_outputs(model, s.images, contract, batch_size, desc=f"score {split}")
    return anomalous, scores.astype(np.float64), maps, s


def _statistics(feat, images: np.ndarray, contract, cfg: AnomalyConfig, spec: AnomalySpec) -> dict:
    """The graph's buffers from the good images' patch features."""
    import torch

    from edgeft.models.inference import normalize, to_tensor

    n, d = len(images), spec.dim
    p = spec.grid[0] * spec.grid[1]
    s1 = torch.zeros(p, d, dtype=torch.float64)
    s2 = torch.zeros(p, d, d, dtype=torch.float64)
    patches = []
    with torch.no_grad():
        for i in progress.bar(range(0, n, cfg.batch_size), desc="good features", unit="batch"):
            f = feat(normalize(to_tensor(images[i:i + cfg.batch_size]), contract))
            if cfg.method == "padim":
                x = f.flatten(2).permute(2, 0, 1).double()  # (P, B, D)
                s1 += x.sum(1)
                s2 += x.transpose(1, 2) @ x
            else:
                patches.append(f.permute(0, 2, 3, 1).reshape(-1, d).float())
    if cfg.method == "padim":
        mean = s1 / n
        cov = (s2 - n * mean.unsqueeze(2) * mean.unsqueeze(1)) / max(1, n - 1)
        cov += cfg.eps * torch.eye(d, dtype=torch.float64)
        inv = np.linalg.inv(cov.numpy())  # numpy: torch's batched LU failed on 196 x 152 x 152 here (MKL)
        return {"mean": mean.float(), "inv_cov": torch.from_numpy(inv).float()}
    bank = torch.cat(patches)
    size = max(1, min(cfg.max_bank, int(math.ceil(cfg.coreset * len(bank)))))
    progress.info(f"coreset: {size} of {len(bank)} good patches")
    bank = bank[greedy_coreset(bank, size, cfg.seed)] if size < len(bank) else bank
    return {"bank": bank, "bank_sq": (bank * bank).sum(1)}


def _map_scale(good_maps: np.ndarray, good_scores: np.ndarray) -> tuple[float, float]:
    """The heatmap's colour scale from good parts: a typical patch (the median) and the highest score."""
    floor = float(np.median(good_maps))
    return floor, max(float(np.max(good_scores)), floor + 1e-6)


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
                       good_class=cfg.good, extra={"eps": cfg.eps})
    return backbone, contract, spec, weights


def _choose_on_val(model, cfg: AnomalyConfig, data, found, spec: AnomalySpec, contract, good_sample: np.ndarray):
    """(policy, val decisions) and the heatmap's colour scale (from val's good parts, else ``good_sample``: good
    training images, already decoded)."""
    from edgeft.models.inference import torch_outputs

    policy = val_dec = None
    rule = _rule(cfg)
    good_maps = None
    if "val" in found:
        y, s, maps, _ = score_split(model, data, "val", contract, cfg.good, cfg.batch_size)
        if (~y).any():
            good_maps = (maps[~y], s[~y])
        if y.all() or not y.any():
            progress.warn(f"val has {'no' if not y.any() else 'only'} anomalous images: AUROC is undefined there and "
                          "no threshold is chosen; put anomalous images (any class folder but the good one) and good "
                          "ones in val/ to get a decision policy")
        else:
            val_dec = anomaly_decisions(y, s, cfg.good)
            if rule is not None:
                policy = choose_for_anomaly(rule, y, s, cfg.good)
                progress.info(f"policy: {policy.text()}")
    else:
        progress.warn(f"{data} has no val/ split: no threshold is chosen (never on test); add val/ with good and "
                      "anomalous images")
    if good_maps is None:  # no good val images: good training images, whose distances run a little low
        s, maps = torch_outputs(model, good_sample, contract, cfg.batch_size, desc="heatmap scale")
        good_maps = (maps, s)
    spec.map_floor, spec.map_ceiling = _map_scale(*good_maps)
    return policy, val_dec


MASK_STEP = 2  # pixel AUROC reads every 2nd pixel of each axis at the model's input size: the same curve


def pixel_metrics(data, split: str, images, anomalous: np.ndarray,
                  maps: np.ndarray) -> tuple[float | None, float | None, int]:
    """(pixel AUROC, PRO (:func:`edgeft.metrics.pro_auc`), anomalous images with a mask) of the heatmaps against
    ``masks/<split>/<class>/<stem>.*``, judged at the model's input size (masks resized to it, heatmaps upsampled to
    it): good images are all-good pixels, anomalous images without a mask are left out; each connected region of a
    mask is one defect for PRO. (None, None, 0) when the data has no masks for the split."""
    import cv2

    from edgeft.images import read_image
    from edgeft.metrics import auroc, pro_auc

    root = Path(data) / "masks" / split
    if not root.is_dir():
        return None, None, 0
    h, w = images.images.shape[1:3]
    truth, scores, regions, with_mask = [], [], [], 0
    for path, bad, heat in zip(images.paths, anomalous, maps):
        found = sorted((root / path.parent.name).glob(f"{path.stem}.*")) if bad else []
        if bad and not found:
            continue
        mask = np.zeros((h, w), bool)
        if found:
            m = read_image(found[0])
            mask = cv2.resize((m if m.ndim == 2 else m[..., 0]), (w, h), interpolation=cv2.INTER_NEAREST) > 0
            with_mask += 1
        up = cv2.resize(np.asarray(heat, np.float32).reshape(np.shape(heat)[-2:]), (w, h),
                        interpolation=cv2.INTER_LINEAR)[::MASK_STEP, ::MASK_STEP]
        mask = mask[::MASK_STEP, ::MASK_STEP]
        if mask.any():
            count, label = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            regions += [up[label == k] for k in range(1, count)]
        truth.append(mask.ravel())
        scores.append(up.ravel())
    if not with_mask:
        progress.warn(f"{root} holds no mask of an anomalous {split} image (masks/{split}/<class>/<image stem>.png); "
                      "pixel AUROC is undefined")
        return None, None, 0
    truth_all, scores_all = np.concatenate(truth), np.concatenate(scores)
    return auroc(truth_all, scores_all), pro_auc(regions, scores_all[~truth_all]), with_mask


def _score_test(model, cfg: AnomalyConfig, data, contract, policy: Policy | None):
    """(test decisions, the policy's outcome on test, pixel AUROC, PRO, masks used): touched once, after every
    choice."""
    y, s, maps, images = score_split(model, data, "test", contract, cfg.good, cfg.batch_size)
    if y.all() or not y.any():
        progress.warn(f"test has {'no' if not y.any() else 'only'} anomalous images: AUROC is undefined there "
                      "(not reported as 0.5)")
        return None, None, None, None, 0
    outcome = policy.outcome(y, s) if policy is not None else None
    if outcome is not None:
        progress.info(f"test at the val threshold: {format_outcome(outcome)}")
    pixel, pro, masks = pixel_metrics(data, "test", images, y, maps)
    if pixel is not None:
        progress.info(f"test pixel AUROC {pixel:.3f}, PRO {pro:.3f} (to 30% false-positive pixels) on {masks} masked "
                      "anomalous images and the good ones")
    return anomaly_decisions(y, s, cfg.good), outcome, pixel, pro, masks


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
    backbone, contract, spec, weights = _backbone_and_spec(cfg)
    images = decode_split(good_files, contract, cfg.threads).images
    buffers = _statistics(features(backbone, spec).eval(), images, contract, cfg, spec)
    good_sample = images[:64].copy()  # the heatmap's colour scale where val has no good images
    del images
    if cfg.method == "patchcore":
        spec.bank_size = int(buffers["bank"].shape[0])
    model = graph(backbone, spec).eval()
    for name, value in buffers.items():
        getattr(model, name).copy_(value)
    bank_bytes = sum(int(v.numel()) * 4 for v in buffers.values())
    fit_s = time.time() - t0
    progress.info(f"fitted {cfg.method} on {len(good_files.paths)} good images in {fit_s:.0f} s "
                  f"({bank_bytes / 1e6:.1f} MB of statistics, heatmap {spec.grid[0]}x{spec.grid[1]})")
    policy, val_dec = _choose_on_val(model, cfg, data, found, spec, contract, good_sample)
    test_dec, test_policy, pixel, pro, masks = (_score_test(model, cfg, data, contract, policy) if "test" in found
                                                else (None, None, None, None, 0))
    metrics = AnomalyFit(method=cfg.method, good_images=len(good_files.paths), fit_s=round(fit_s, 2),
                         bank_bytes=bank_bytes, val=val_dec, test=test_dec, test_policy=test_policy,
                         test_pixel_auroc=pixel, test_pixel_pro=pro, test_masks=masks)
    params = {**cfg.to_dict(), "weights": str(weights), "data": str(Path(data))}
    extra = {"task": TASK, "anomaly": spec.to_dict()}
    if policy is not None:
        extra["decision"] = policy.to_dict()
    meta = Meta(kind="torch", arch=cfg.model, class_names=[cfg.good, ANOMALOUS], input=contract,
                lineage=[lineage_entry("anomaly", params)], metrics={"anomaly": metrics.to_dict()}, extra=extra)
    return save_artifact(model, out, meta, force=force)
