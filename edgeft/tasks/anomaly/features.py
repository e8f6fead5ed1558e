"""Fitting and measuring anomaly graphs (``edgeft.tasks.anomaly.graph``), shared by the stages that make one:
the fit (``edgeft.tasks.anomaly.fit``) and the pruning of its backbone (``edgeft.tasks.anomaly.prune``).

Statistics come from the good images' patch features alone; the threshold is a decision policy chosen on val (which
needs anomalous images there); test is scored once, after every choice. A pruned backbone recovers without a label
through :func:`edgeft.training.loop.distill_features`: it learns to give the features its parent gives on good images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeft import progress
from edgeft.decision import Policy, Rule, choose_for_anomaly
from edgeft.metrics import anomalous_mask, anomaly_decisions
from edgeft.tasks.anomaly.graph import AnomalySpec, bulk_dtype


@dataclass(frozen=True)
class StatsSettings:
    """How the statistics are fitted (an ``AnomalyConfig``'s, or those a pruned model inherits from its fit)."""

    method: str
    eps: float = 0.01
    coreset: float = 0.01
    max_bank: int = 16384
    seed: int = 0
    batch_size: int = 16


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


def statistics(feat, images: np.ndarray, contract, cfg: StatsSettings, spec: AnomalySpec) -> dict:
    """The graph's buffers from the good images' patch features: a Gaussian per map position (padim: mean and
    inverse covariance) or a coreset of the patches (patchcore: the bank and its squared norms), the bulk in
    ``spec.storage``'s dtype (patchcore's squared norms are of the bank as stored, so a distance to an entry is
    still exactly zero)."""
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
        return {"mean": mean.float(), "inv_cov": torch.from_numpy(inv).to(bulk_dtype(spec))}
    bank = torch.cat(patches)
    size = max(1, min(cfg.max_bank, int(math.ceil(cfg.coreset * len(bank)))))
    progress.info(f"coreset: {size} of {len(bank)} good patches")
    bank = (bank[greedy_coreset(bank, size, cfg.seed)] if size < len(bank) else bank).to(bulk_dtype(spec))
    return {"bank": bank, "bank_sq": (bank.float() ** 2).sum(1)}


def stored_bytes(buffers: dict) -> int:
    """The statistics' size as stored (what the artifact and the exported graph carry)."""
    return sum(int(v.numel()) * v.element_size() for v in buffers.values())


def score_split(model, data, split: str, contract, good: str, batch_size: int):
    """(anomalous?, scores, heatmaps, image set) of a split: every class folder but ``good`` is anomalous."""
    from edgeft.data import load_split
    from edgeft.models.inference import torch_outputs

    s = load_split(data, split, contract)
    anomalous = anomalous_mask(s.labels, s.classes, good)
    scores, maps = torch_outputs(model, s.images, contract, batch_size, desc=f"score {split}")
    return anomalous, scores.astype(np.float64), maps, s


def map_scale(good_maps: np.ndarray, good_scores: np.ndarray) -> tuple[float, float]:
    """The heatmap's colour scale from good parts: a typical patch (the median) and the highest score."""
    floor = float(np.median(good_maps))
    return floor, max(float(np.max(good_scores)), floor + 1e-6)


def choose_on_val(model, rule: Rule | None, good: str, batch_size: int, data, spec: AnomalySpec, contract,
                  good_sample: np.ndarray):
    """(policy by ``rule``, val decisions), and the heatmap's colour scale set in ``spec`` (from val's good parts, else
    ``good_sample``: good training images, already decoded)."""
    from edgeft.data.imagefolder import find_splits

    from edgeft.models.inference import torch_outputs

    policy = val_dec = None
    good_maps = None
    if "val" in find_splits(data):
        y, s, maps, _ = score_split(model, data, "val", contract, good, batch_size)
        if (~y).any():
            good_maps = (maps[~y], s[~y])
        if y.all() or not y.any():
            progress.warn(f"val has {'no' if not y.any() else 'only'} anomalous images: AUROC is undefined there and "
                          "no threshold is chosen; put anomalous images (any class folder but the good one) and good "
                          "ones in val/ to get a decision policy")
        else:
            val_dec = anomaly_decisions(y, s, good)
            if rule is not None:
                policy = choose_for_anomaly(rule, y, s, good)
                progress.info(f"policy: {policy.text()}")
    else:
        progress.warn(f"{data} has no val/ split: no threshold is chosen (never on test); add val/ with good and "
                      "anomalous images")
    if good_maps is None:  # no good val images: good training images, whose distances run a little low
        s, maps = torch_outputs(model, good_sample, contract, batch_size, desc="heatmap scale")
        good_maps = (maps, s)
    spec.map_floor, spec.map_ceiling = map_scale(*good_maps)
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


def score_test(model, good: str, batch_size: int, data, contract, policy: Policy | None):
    """(test decisions, the policy's outcome on test, pixel AUROC, PRO, masks used): touched once, after every
    choice."""
    y, s, maps, images = score_split(model, data, "test", contract, good, batch_size)
    if y.all() or not y.any():
        progress.warn(f"test has {'no' if not y.any() else 'only'} anomalous images: AUROC is undefined there "
                      "(not reported as 0.5)")
        return None, None, None, None, 0
    outcome = policy.outcome(y, s) if policy is not None else None
    if outcome is not None:
        progress.info(f"test at the val threshold: {outcome.text()}")
    pixel, pro, masks = pixel_metrics(data, "test", images, y, maps)
    if pixel is not None:
        progress.info(f"test pixel AUROC {pixel:.3f}, PRO {pro:.3f} (to 30% false-positive pixels) on {masks} masked "
                      "anomalous images and the good ones")
    return anomaly_decisions(y, s, good), outcome, pixel, pro, masks
