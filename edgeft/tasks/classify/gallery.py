"""The classifier report's gallery: the test parts the shipped model let through although defective (escapes) and
the good ones it rejected (false rejects) at its own operating point, with their "not OK" scores: what a plant
manager asks first.

Scored through the torch-free :class:`~edgeft.runtime.predictor.Predictor` on the image files, as the camera scores
them. Where the network allows it (a global average pool then one linear layer, as timm's CNN classifiers end), each
part also shows a class activation map (Zhou et al. 2016): the "not OK" classes' weights applied to the last feature
map, i.e. where the evidence for "not OK" sits. It is computed here, in the report only, from the shipped model's
last PyTorch ancestor (an INT8 graph has no weights to read), and its cost is measured and stated; the exported graph
carries no extra output. Test is read here after every choice was made on val; nothing is chosen from it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.tasks.gallery import Gallery, fresh_folder, write_tile

ESCAPES = 6  # the defective parts passed with the lowest scores shown
FALSE_REJECTS = 6  # the good parts rejected with the highest scores shown
GROUPS = ("escapes", "false rejects")


def picks(not_ok: np.ndarray, positive: np.ndarray, decisions: list[str], escapes: int = ESCAPES,
          false_rejects: int = FALSE_REJECTS) -> list[tuple[int, str]]:
    """(index, group): the defective parts the policy passed, lowest score first (the surest escapes), then the good
    parts it rejected, highest score first."""
    order = np.argsort(not_ok, kind="stable")
    passed = [int(i) for i in order if positive[i] and decisions[i] == "pass"][:escapes]
    rejected = [int(i) for i in order[::-1] if not positive[i] and decisions[i] == "reject"][:false_rejects]
    return [(i, GROUPS[0]) for i in passed] + [(i, GROUPS[1]) for i in rejected]


def cam_model(model: Any) -> Any:
    """``model`` if a class activation map can be read from it (timm's ``forward_features`` then average pooling and
    one linear classifier), else None."""
    import torch.nn as nn

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    pool = getattr(model, "global_pool", None)
    pool_type = getattr(pool, "pool_type", "")
    if not hasattr(model, "forward_features") or not isinstance(head, nn.Linear) or pool_type != "avg":
        return None
    return model


def class_activation_maps(model: Any, images: np.ndarray, contract, classes: list[int]) -> np.ndarray:
    """The "not OK" evidence per position (N x h x w): the sum over ``classes`` of their classifier weights applied
    to the last feature map (the map's mean is those classes' logits, less the bias)."""
    import torch

    with torch.no_grad():
        features = model.forward_features(torch.from_numpy(contract.normalize(images)))  # N x C x h x w
        weights = model.get_classifier().weight[classes].sum(0)  # C
        return torch.einsum("nchw,c->nhw", features, weights).numpy()


def classifier_gallery(recipe: Any, run: Path, rows: list[Any]) -> Gallery | None:
    """The gallery of the final model's escapes and false rejects on the held-out split (None without a policy)."""
    from edgeft import artifact as art
    from edgeft import progress
    from edgeft.data.imagefolder import find_splits, scan_split
    from edgeft.images import read_image
    from edgeft.runtime.predictor import Predictor
    from edgeft.tasks.anomaly.heatmap import overlay, to_bgr8

    last = next((r for r in reversed(rows) if r.policy is not None and r.stage != "build"), None)
    split = find_splits(recipe.data).get(last.split) if last is not None else None
    if last is None or split is None:
        return None
    progress.info(f"drawing the report's gallery: {last.step}'s escapes and false rejects on {last.split}")
    files = scan_split(split)
    with Predictor(run / last.step, backend="auto", threads=recipe.threads) as p:
        preds = [q for k in range(0, len(files.paths), 32)  # batched: one runner call per 32 parts
                 for q in p.predict([read_image(f) for f in files.paths[k:k + 32]])]
        positive = np.isin(np.asarray(files.labels), [files.classes.index(c) for c in p.policy.positive
                                                      if c in files.classes])
    not_ok = np.array([q.not_ok for q in preds])
    chosen = picks(not_ok, positive, [q.decision for q in preds])
    source = _torch_ancestor(run, rows, last)
    model = cam_model(_torch_model(source)) if source is not None else None
    a = art.load(run / last.step)
    decoded = [read_image(files.paths[i]) for i, _ in chosen]  # each picked part decoded once, for both pictures
    parts = [a.meta.input.geometry(img) for img in decoded]
    maps, cost = None, ""
    if model is not None and chosen:
        src = art.load(source)
        t0 = time.perf_counter()
        maps = class_activation_maps(model, np.stack([src.meta.input.prepare(img) for img in decoded]), src.meta.input,
                                     [src.meta.class_names.index(c) for c in p.policy.positive])
        per_part = (time.perf_counter() - t0) * 1000 / len(chosen)
        cost = (f" Class activation maps from {source.name} (FP32, the shipped model's last PyTorch ancestor), red "
                f"where the evidence for not OK is strongest in each part: {per_part:.1f} ms per part here, computed "
                "for the report only (the exported graph has no extra output).")
    folder = fresh_folder(run)
    g = Gallery(f"Escapes and false rejects on {last.split}",
                f"The final model ({last.step}) at its own operating point (chosen on val): the defective parts it "
                f"passed, lowest not-OK score first, then the good parts it rejected, highest first; at most "
                f"{ESCAPES} and {FALSE_REJECTS}." + cost, GROUPS)
    for n, ((i, group), part) in enumerate(zip(chosen, parts), 1):
        shown = overlay(part, maps[n - 1], 0.0, max(float(maps[n - 1].max()), 1e-6)) if maps is not None else part
        path = files.paths[i]
        tile = write_tile(folder, n, path, to_bgr8(shown), group,
                          f"{path.parent.name}/{path.name}: not OK {not_ok[i]:.3f}, {preds[i].decision}")
        if tile is not None:
            g.tiles.append(tile)
    return g


def _torch_model(path: Path) -> Any:
    from edgeft import artifact as art
    from edgeft.models import from_artifact

    return from_artifact(art.load(path))


def _torch_ancestor(run: Path, rows: list[Any], last: Any) -> Path | None:
    """The newest PyTorch model of the run at or before ``last``: the weights the shipped graph was made from."""
    from edgeft import artifact as art

    steps = [r.step for r in rows]
    for r in reversed(rows[:steps.index(last.step) + 1]):
        if r.status in ("done", "reused") and art.load(run / r.step).meta.kind == "torch":
            return run / r.step
    return None
