"""The mechanics of channel pruning shared by every model edgeft prunes (a classifier, an anomaly model's backbone):
torch-pruning's importance, the schedule that stops inside the step that reaches the target, where it landed, and
BatchNorm statistics re-estimated after channels go. Dependency tracking (which channels of which layers must go
together through residual adds, depthwise convs and norms) is torch-pruning's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeft import progress
from edgeft.errors import EdgeftError
from edgeft.metrics import Landing
from edgeft.models import count_macs
from edgeft.models.inference import normalize, to_tensor
from edgeft.prune.config import PruneConfig


class PruneError(EdgeftError):
    """The model cannot be pruned as asked."""


def channel_importance(tp, name: str):
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.BNScaleImportance()


def where_landed(kind: str, fraction: float, got: float, cfg: PruneConfig) -> Landing:
    """Where the pruning landed against its target, and why when it is outside the tolerance."""
    within = got >= fraction - cfg.target_tolerance
    why = "" if within else (f"channels go in groups of round_to {cfg.round_to}, and the one layer group whose "
                             "removal reached the target removed more (a lower round_to lands closer)")
    if not within:
        progress.warn(f"pruning kept {got:.3f} of the {kind}, below the target {fraction:g} - "
                      f"{cfg.target_tolerance:g}: {why}")
    return Landing(kind=kind, fraction=fraction, tolerance=cfg.target_tolerance, reached=round(got, 4),
                   within_tolerance=within, why=why)


def prune_to_target(model: nn.Module, pruner, example: torch.Tensor, cfg: PruneConfig, train, contract,
                     rng: np.random.Generator, base: int, fractions: list[float] | None = None,
                     reached=None, gradients=None) -> tuple[nn.Module, int, int]:
    """Prune in ``cfg.steps`` steps until the target is reached, stopping inside the step that reaches it.

    A step removes channels one dependency group (a layer and what must shrink with it) at a time; a whole last
    step at a coarse ``round_to`` overshot the target (0.445 of the MACs for 0.5). In a step that may reach the
    target (the first, or one whose predecessor's drop, doubled, would reach it) the MACs are counted after each
    group and the step ends at the first group that reaches the target, so the overshoot is at most one group's
    share. Other steps prune all their groups and count once (a count costs a forward pass).
    ``fractions``: several targets along one schedule (the search's candidates); ``reached(fraction, model, macs,
    params)`` is called as each is crossed, with the model as it stands then, which is the model a run to that
    target alone would stop at. ``gradients(model)``: how Taylor importance gets its gradients (None: a
    classifier's cross-entropy on ``train``, :func:`accumulate_gradients`). Returns the model and its MACs and
    parameters at the last (smallest) target."""
    kind, fraction = cfg.target
    todo = sorted(fractions or [fraction], reverse=True)
    macs, params = count_macs(model, example)
    value = float(macs if kind == "macs" else params)
    drop: float | None = None
    for _ in progress.bar(range(cfg.steps), desc="prune", unit="step"):
        if cfg.importance == "taylor":
            if gradients is not None:
                gradients(model)
            else:
                accumulate_gradients(model, train, contract, cfg.taylor_batches, rng)
        careful = drop is None or value - 2 * drop <= todo[0] * base
        before = value
        for group in pruner.step(interactive=True):
            group.prune()
            if careful:
                macs, params = count_macs(model, example)
                while todo and (macs if kind == "macs" else params) <= todo[0] * base:
                    if reached is not None:
                        reached(todo[0], model, macs, params)
                    todo.pop(0)
                if not todo:
                    break
        model.zero_grad(set_to_none=True)
        if not careful:
            macs, params = count_macs(model, example)
        value = float(macs if kind == "macs" else params)
        drop = before - value
        while todo and value <= todo[0] * base:  # crossed in a step that counted once
            if reached is not None:
                reached(todo[0], model, macs, params)
            todo.pop(0)
        if not todo:
            return model, macs, params
    raise PruneError(f"target {kind} {todo[0]:g} is unreachable with max_layer_ratio {cfg.max_layer_ratio:g}: "
                     f"stopped at {value / base:.2f} of the original after {cfg.steps} steps; raise "
                     "--max-layer-ratio, protect fewer layers, or relax the target")


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, train, contract, n_images: int, rng: np.random.Generator) -> None:
    """Re-estimate BatchNorm statistics on training images: removing channels shifts every later layer's
    input distribution, and stale running statistics are a large part of the accuracy lost right after pruning."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or n_images <= 0:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.eval()
    for m in bns:
        m.train()
    idx = rng.permutation(len(train))[:n_images]
    for i in range(0, len(idx), 64):  # batch statistics: the batch size matters here, the memory format does not
        model(normalize(to_tensor(train.images[idx[i:i + 64]]), contract).contiguous(memory_format=torch.channels_last))
    for m, (momentum, training) in zip(bns, saved):
        m.momentum = momentum
        m.train(training)
    model.eval()


def accumulate_gradients(model: nn.Module, train, contract, batches: int, rng: np.random.Generator) -> None:
    """Gradients of the loss on a few training batches, for Taylor importance."""
    model.eval()
    model.zero_grad(set_to_none=True)
    for _ in range(batches):
        idx = rng.choice(len(train), size=min(32, len(train)), replace=False)
        x = normalize(to_tensor(train.images[idx]), contract).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), torch.from_numpy(train.labels[idx]))
        loss.backward()
