"""``edgeft prune``: structured channel pruning to a MACs target, then recovery fine-tuning.

Dependency tracking (which channels of which layers must go together through residual adds,
depthwise convs and norms) is torch-pruning's; edgeft chooses the target, caps per-layer pruning,
re-estimates importance between small steps, recovers accuracy with the fine-tuning loop (optionally
distilling from the unpruned parent), and stores the result as architecture + shape spec + weights.
An anomaly model (``edgeft anomaly``) is pruned by :mod:`edgeft.tasks.anomaly.prune`, which has no labels to recover from;
the mechanics both share are in :mod:`edgeft.prune.channels`.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from edgeft import artifact as art
from edgeft import progress
from edgeft.training import loop
from edgeft.errors import ArtifactError, ConfigError, close_matches
from edgeft.models.inference import torch_logits
from edgeft.metrics import Classification, PruneStats, classification_metrics
from edgeft.models import count_macs, from_artifact, head_of, torch_pruning
from edgeft.runtime.torch_model import refuse_imported_onnx
from edgeft.prune.config import PruneConfig
from edgeft.prune.channels import (PruneError, channel_importance, prune_to_target, recalibrate_batchnorm,
                                   where_landed)


def _ignored_layers(model: nn.Module, names: list[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    out = [head_of(model)]
    for n in names:
        if n not in modules:
            raise ConfigError(f"--ignore {n!r} is not a layer of the model{close_matches(n, modules)}")
        out.append(modules[n])
    return out


def onnx_latency_side_by_side(models: dict[str, nn.Module], contract, threads: int = 2,
                              rounds: int = 3) -> dict[str, dict[str, float]]:
    """ONNX Runtime CPU batch-1 latency of several models, measured interleaved in one run (medians)."""
    from edgeft.runtime.timing import ort_rounds
    from edgeft.models.onnx import export_onnx

    with tempfile.TemporaryDirectory() as d:
        paths = {name: export_onnx(copy.deepcopy(m).cpu(), contract, Path(d) / f"{name}.onnx")
                 for name, m in models.items()}
        p50s = ort_rounds(paths, (1, contract.channels, *contract.size), threads, rounds, iters=30)
    return {name: {"p50_ms": round(statistics.median(v), 3), "rounds": v} for name, v in p50s.items()}


def prune(artifact_path: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, cfg: PruneConfig,
          force: bool = False, measure_latency: bool = True) -> art.Artifact:
    """Prune the PyTorch artifact at ``artifact_path`` to ``cfg``'s target and recover on ``data``."""
    out = art.refuse_existing(out, force)
    parent = art.load(artifact_path)
    refuse_imported_onnx(parent, "pruning")
    if parent.meta.kind == "torch" and not parent.meta.extra.get("quantized"):
        from edgeft.tasks import registry as tasks

        task = tasks.of(parent.meta)
        if task.own_pruning:  # e.g. an anomaly backbone: its feature levels kept, recovered by feature distillation
            return task.prune(parent, data, out, cfg, force, measure_latency)
    if parent.meta.kind != "torch" or parent.meta.extra.get("quantized"):
        raise ArtifactError(f"{parent.path} is already {'quantized' if parent.meta.extra.get('quantized') else parent.meta.kind}; "
                            "prune the fine-tuned PyTorch artifact, then quantize")
    if cfg.recover_epochs:
        recovery_config(parent, cfg)  # a recovery the parent cannot have fails now, not after pruning
    t0 = time.time()
    tp, model, reference, example, (base_macs, base_params), ds, eval_set = _start(parent, data, cfg)
    contract = parent.meta.input

    def accuracy(m: nn.Module) -> Classification:
        logits = torch_logits(m, eval_set.images, contract, desc="eval")
        return classification_metrics(eval_set.labels, logits.argmax(1), ds.classes)

    before = accuracy(model)
    pruner = _pruner(tp, model, example, cfg, parent.meta.arch)
    kind, fraction = cfg.target
    base = base_macs if kind == "macs" else base_params
    rng = np.random.default_rng(cfg.seed)
    model, macs, params = prune_to_target(model, pruner, example, cfg, ds.train, contract, rng, base)
    with torch.no_grad():
        model.eval()(example)  # the pruned graph must still run

    landing = where_landed(kind, fraction, (macs if kind == "macs" else params) / base, cfg)
    from edgeft.runtime.torch_shapes import shape_spec

    spec = shape_spec(model, reference)
    recalibrate_batchnorm(model, ds.train, contract, cfg.bn_images, rng)
    after_prune = accuracy(model)
    prune_seconds = time.time() - t0
    progress.info(f"pruned {parent.meta.arch}: MACs {base_macs / 1e6:.0f}M → {macs / 1e6:.0f}M, params "
                  f"{base_params / 1e6:.2f}M → {params / 1e6:.2f}M; accuracy {before.accuracy:.3f} → "
                  f"{after_prune.accuracy:.3f} before recovery")
    latency = _latency(reference, model, contract, cfg) if measure_latency else None
    pstats = PruneStats(macs_before=base_macs, macs_after=macs, params_before=base_params, params_after=params,
                        macs_ratio=round(macs / base_macs, 4), params_ratio=round(params / base_params, 4),
                        prune_seconds=round(prune_seconds, 1), eval_split=eval_set.name, accuracy_before=before,
                        accuracy_after_prune=after_prune, target=landing, ort_cpu_latency=latency)
    stats: dict[str, Any] = {"prune": pstats.to_dict(), "macs": macs}
    extra = {"pruned_spec": spec}
    if cfg.recover_epochs == 0:
        from edgeft.models import save_artifact

        meta = art.Meta(kind="torch", arch=parent.meta.arch, class_names=parent.meta.class_names, input=contract,
                        lineage=parent.stage_record("prune", cfg.to_dict()),
                        metrics={**stats, eval_set.name: after_prune.to_dict()}, extra=extra)
        return save_artifact(model, out, meta, force=force)

    return recover(parent, model, data, out, cfg, teacher=reference if cfg.distill else None, extra=extra,
                   stats=stats, force=force)


def _start(parent: art.Artifact, data: str | os.PathLike, cfg: PruneConfig):
    """What pruning begins with, to one target or along a schedule: threads and seed set, torch-pruning, the parent's
    model and an untouched copy of it, an example input, its MACs and parameters, the data (classes checked against
    the model's) and the split accuracy is measured on (test, or val when test is absent or sealed)."""
    from edgeft.data import load_dataset
    from edgeft.errors import DataError

    tp = torch_pruning()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    contract = parent.meta.input
    model = from_artifact(parent)
    reference = copy.deepcopy(model)
    example = torch.zeros(1, contract.channels, *contract.size)
    counts = count_macs(model, example)
    ds = load_dataset(data, contract, seed=cfg.seed, classes=parent.meta.class_names)
    if ds.classes != parent.meta.class_names:
        raise DataError(f"the data's classes {ds.classes} differ from the model's {parent.meta.class_names}")
    return tp, model, reference, example, counts, ds, ds.test if ds.test is not None else ds.val


def _pruner(tp, model: nn.Module, example: torch.Tensor, cfg: PruneConfig, arch: str):
    """torch-pruning's MetaPruner over ``model`` with ``cfg``'s importance, caps, schedule and protected layers."""
    ignored = _ignored_layers(model, cfg.ignore)
    try:
        return tp.pruner.MetaPruner(model, example, importance=channel_importance(tp, cfg.importance),
                                    global_pruning=cfg.global_pruning, pruning_ratio=cfg.max_layer_ratio,
                                    max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=cfg.steps,
                                    round_to=cfg.round_to, ignored_layers=ignored)
    except Exception as e:  # torch-pruning cannot trace some custom ops
        raise PruneError(f"torch-pruning cannot build the dependency graph of {arch}: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}; add the layers it names to --ignore "
                         "or prune another architecture") from None


def _latency(reference: nn.Module, pruned: nn.Module, contract, cfg: PruneConfig) -> dict[str, Any]:
    """ONNX Runtime CPU latency of the parent and the pruned model, measured side by side."""
    threads = cfg.threads or torch.get_num_threads()
    lat = onnx_latency_side_by_side({"parent": reference, "pruned": pruned}, contract, threads=threads)
    return {**lat, "speedup": round(lat["parent"]["p50_ms"] / lat["pruned"]["p50_ms"], 3), "threads": threads,
            "batch": 1}


def prune_schedule(artifact_path: str | os.PathLike, data: str | os.PathLike, out_root: str | os.PathLike,
                   cfg: PruneConfig, fractions: list[float]) -> dict[float, Path]:
    """Prune the PyTorch artifact at ``artifact_path`` once along ``cfg``'s schedule and save a snapshot, not yet
    recovered, at each of ``fractions`` of the MACs (or parameters): ``out_root/<kind><fraction>``. Each snapshot
    has its BatchNorm statistics re-estimated and its accuracy measured on the data's evaluation split (val while
    the test split is sealed): a cheap estimate of what each ratio costs before any recovery is paid for.
    Pruning once and snapshotting costs one schedule instead of one per ratio."""
    from edgeft.models import save_artifact
    from edgeft.runtime.torch_shapes import shape_spec

    parent = art.load(artifact_path)
    from edgeft.tasks import registry as tasks

    if parent.meta.kind != "torch" or parent.meta.extra.get("quantized") or tasks.of(parent.meta).own_pruning:
        raise ArtifactError(f"{parent.path}: the schedule prunes a fine-tuned PyTorch classifier")
    tp, model, reference, example, (base_macs, base_params), ds, eval_set = _start(parent, data, cfg)
    contract = parent.meta.input
    before = classification_metrics(eval_set.labels, torch_logits(model, eval_set.images, contract,
                                                                    desc="eval").argmax(1), ds.classes)
    kind, _ = cfg.target
    base = base_macs if kind == "macs" else base_params
    rng = np.random.default_rng(cfg.seed)
    out: dict[float, Path] = {}
    t0 = time.time()

    def snapshot(fraction: float, current: nn.Module, macs: int, params: int) -> None:
        m = copy.deepcopy(current)
        m.zero_grad(set_to_none=True)
        spec = shape_spec(m, reference)
        recalibrate_batchnorm(m, ds.train, contract, cfg.bn_images, np.random.default_rng(cfg.seed))
        acc = classification_metrics(eval_set.labels, torch_logits(m, eval_set.images, contract,
                                                                   desc="eval").argmax(1), ds.classes)
        scfg = PruneConfig(**{**cfg.to_dict(), f"target_{kind}": fraction, "recover_epochs": 0})
        landing = where_landed(kind, fraction, (macs if kind == "macs" else params) / base, scfg)
        pstats = PruneStats(macs_before=base_macs, macs_after=macs, params_before=base_params, params_after=params,
                            macs_ratio=round(macs / base_macs, 4), params_ratio=round(params / base_params, 4),
                            prune_seconds=round(time.time() - t0, 1), eval_split=eval_set.name,
                            accuracy_before=before, accuracy_after_prune=acc, target=landing, ort_cpu_latency=None)
        meta = art.Meta(kind="torch", arch=parent.meta.arch, class_names=parent.meta.class_names, input=contract,
                        lineage=parent.stage_record("prune", scfg.to_dict()),
                        metrics={"prune": pstats.to_dict(), "macs": macs, eval_set.name: acc.to_dict(),
                                 "eval_split": eval_set.name}, extra={"pruned_spec": spec})
        path = Path(out_root) / f"{kind}{fraction:.2f}"
        save_artifact(m, path, meta, force=True)
        out[fraction] = path
        progress.info(f"snapshot at {fraction:g} of the {kind}: reached {macs / base_macs:.3f} of the MACs, "
                      f"{eval_set.name} accuracy {acc.accuracy * 100:.2f}% before recovery (parent "
                      f"{before.accuracy * 100:.2f}%)")

    pruner = _pruner(tp, model, example, cfg, parent.meta.arch)
    prune_to_target(model, pruner, example, cfg, ds.train, contract, rng, base, fractions=list(fractions),
                     reached=snapshot)
    return out


def recover_snapshot(snapshot_path: str | os.PathLike, parent_path: str | os.PathLike, data: str | os.PathLike,
                     out: str | os.PathLike, cfg: PruneConfig, force: bool = False) -> art.Artifact:
    """Recovery fine-tuning of a pruned, not yet recovered snapshot (from :func:`prune_schedule`), distilled from
    its unpruned parent when ``cfg.distill``; writes the recovered artifact at ``out``."""
    parent = art.load(parent_path)
    snap = art.load(snapshot_path)
    model = from_artifact(snap)
    stats = {k: snap.meta.metrics[k] for k in ("prune", "macs") if k in snap.meta.metrics}
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    teacher = from_artifact(parent) if cfg.distill else None
    return recover(parent, model, data, out, cfg, teacher=teacher, extra={"pruned_spec": snap.meta.extra["pruned_spec"]},
                   stats=stats, force=force)


def recovery_config(parent: art.Artifact, cfg: PruneConfig):
    """The recovery's training settings: the parent's fine-tuning settings with ``cfg``'s mode, epochs, lr, views."""
    from edgeft.training.config import config_from_parent

    return config_from_parent(parent, cfg.recover_mode, cfg.recover_epochs, cfg.recover_lr, cfg.threads, cfg.seed,
                              cache_views=cfg.recover_views, patience=cfg.recover_patience)


def recover(parent: art.Artifact, model: nn.Module, data: str | os.PathLike, out: str | os.PathLike,
            cfg: PruneConfig, *, teacher: nn.Module | None = None, extra: dict[str, Any] | None = None,
            stats: dict[str, Any] | None = None, force: bool = False) -> art.Artifact:
    """Recovery fine-tuning of ``model``, pruned from ``parent``, through the training floor's loop (distilled from
    ``teacher`` when given); writes the pruned artifact at ``out``. ``extra`` must carry its ``pruned_spec``."""
    rcfg = recovery_config(parent, cfg)
    return loop.retrain(parent, model, rcfg, data, art.refuse_existing(out, force), stage="prune", teacher=teacher,
                        lineage_params={"prune": cfg.to_dict(), "recover": rcfg.to_dict()}, extra_meta=extra,
                        extra_metrics=stats, force=force)
