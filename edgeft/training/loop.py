"""The one training loop: fine-tuning, pruning recovery and QAT all train through :func:`train`; a pruned anomaly
backbone, which has no labels, learns its parent's features through :func:`distill_features`.

What makes it fast and sound on a small CPU as well as on GPUs:
- the frozen part of the backbone runs once per image and symmetry view, and its outputs are cached
  (``partial``/``linear`` modes); an epoch then costs only the trainable blocks;
- images are decoded once into memory and augmented in batches on tensors;
- AdamW without weight decay on norms and biases, a lower learning rate for pretrained layers than for
  the new head, linear warm-up then cosine decay, label smoothing, gradient clipping and accumulation;
- class imbalance handled by a class-weighted loss or a balanced sampler;
- knowledge distillation from a teacher's logits (cached with the features in partial mode);
- early stopping on a validation metric with the best weights restored;
- a checkpoint after every epoch next to the output (``OUT.work/``), so Ctrl-C keeps the last good
  epoch and ``resume=True`` continues from it; the artifact itself appears only when training ends;
- mixed precision and channels-last on CUDA, DDP when launched by ``torchrun``.

A stage calls :func:`setup` (device, threads, seeds), builds its model, calls :func:`train`, and writes its
artifact with :func:`save`; what differs between stages (the model, its lineage) stays in the stage.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeft import progress
from edgeft.artifact import Artifact, Meta
from edgeft.contract import InputContract
from edgeft.data import augment as aug
from edgeft.data.imagefolder import Dataset, load_dataset
from edgeft.training.config import FinetuneConfig
from edgeft.training.split import freeze_for, set_train_mode, split
from edgeft.errors import ConfigError, DataError, DependencyError, TrainingError
from edgeft.metrics import Classification, classification_metrics, macro_auroc
from edgeft.models import head_of, save_artifact
from edgeft.models.inference import inference_batch, normalize, to_tensor, torch_logits


@dataclass
class Dist:
    """Where this process sits in a torchrun launch (world 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def _device(cfg: FinetuneConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DependencyError("--device cuda asked for, but torch sees no CUDA GPU here; "
                                  "use --device cpu or run `edgeft doctor`")
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local_rank >= gpus:
            raise DependencyError(f"process {local_rank} of this node has no GPU of its own: the machine has {gpus}; "
                                  f"start at most {gpus} (torchrun --nproc_per_node {gpus}) or pass --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _param_groups(model: nn.Module, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """Head at ``lr``, pretrained layers at ``lr * backbone_lr_mult``; no weight decay on norms and biases."""
    head_ids = {id(p) for p in head_of(model).parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (id(p) in head_ids, p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_head, no_decay), params in groups.items():
        lr = cfg.lr if is_head or cfg.weights is None else cfg.lr * cfg.backbone_lr_mult
        out.append({"params": params, "lr": lr, "initial_lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay})
    return out


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def _views_for(cfg: FinetuneConfig, square: bool) -> int:
    """How many exact symmetry views of each training image to cache (they replace flip/rot90 augmentation)."""
    if cfg.augment.rot90 and square:
        return cfg.cache_views
    if cfg.augment.hflip:
        return min(cfg.cache_views, 2)
    return 1


class FeatureCache:
    """Outputs of the frozen prefix for every image (and symmetry view), stored in half precision."""

    def __init__(self, prefix: nn.Module, images: np.ndarray, contract: InputContract, views: int,
                 device: torch.device, channels_last: bool, batch_size: int | None = None, desc: str = "cache",
                 teacher: nn.Module | None = None):
        prefix.eval()
        batch_size = batch_size or inference_batch(device)
        chunks: list[torch.Tensor] = []
        teacher_chunks: list[torch.Tensor] = []
        with torch.no_grad():
            for i in progress.bar(range(0, len(images), batch_size), desc=desc, unit="batch"):
                x = normalize(to_tensor(images[i:i + batch_size]).to(device), contract)
                per_view = []
                for v in aug.dihedral_views(x, views):
                    if channels_last and v.ndim == 4:
                        v = v.contiguous(memory_format=torch.channels_last)
                    per_view.append(prefix(v).to(torch.float16).cpu())
                    if teacher is not None:
                        teacher_chunks.append(teacher(v).float().cpu())
                chunks.append(torch.stack(per_view, 1))  # B x V x ...
        self.features = torch.cat(chunks)
        self.views = views
        self.teacher_logits = None
        if teacher is not None:  # B x V x classes, in the same (batch, view) order as the features
            per_batch = [torch.stack(teacher_chunks[i:i + views], 1) for i in range(0, len(teacher_chunks), views)]
            self.teacher_logits = torch.cat(per_batch)

    def batch(self, idx: np.ndarray, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features of one random cached view per image (view 0 without a generator), and teacher logits."""
        if self.views == 1 or generator is None:
            v = torch.zeros(len(idx), dtype=torch.long)
        else:
            v = torch.randint(0, self.views, (len(idx),), generator=generator)
        i = torch.as_tensor(idx)
        return self.features[i, v].float(), (self.teacher_logits[i, v] if self.teacher_logits is not None else None)


@dataclass
class TrainState:
    epoch: int = 0  # epochs finished
    best_score: float = -math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def _work_dir(out: Path) -> Path:
    return out.parent / f"{out.name}.work"


def _save_checkpoint(path: Path, model: nn.Module, opt, sched, state: TrainState, fingerprint: str) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": state.epoch, "best_score": state.best_score, "best_epoch": state.best_epoch,
                "best_state": state.best_state, "history": state.history, "fingerprint": fingerprint}, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model: nn.Module, opt, sched, fingerprint: str) -> TrainState:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if ck.get("fingerprint") != fingerprint:
        raise ConfigError(f"{path} was written by a run with different settings; resume with the same options, "
                          "or delete it to start afresh")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    return TrainState(epoch=ck["epoch"], best_score=ck["best_score"], best_epoch=ck["best_epoch"],
                      best_state=ck["best_state"], history=ck["history"])


def _score(metrics: Classification, loss: float, auroc: float, monitor: str) -> float:
    if monitor == "auroc":
        return auroc if auroc == auroc else -1.0  # NaN (val lacks a class): never the best
    return -loss if monitor == "loss" else float(getattr(metrics, monitor))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened logits, scaled by T² (Hinton et al. 2015)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                    reduction="batchmean") * (t * t)


def setup(cfg: FinetuneConfig) -> tuple[torch.device, Dist]:
    """The device, the torchrun rank, threads and seeds, set before the stage builds its model (a model's random
    initialisation draws from the seeded generator)."""
    device = _device(cfg)
    dist = _init_distributed(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if not dist.main:
        progress.set_quiet(True)
    return device, dist


@dataclass
class Trained:
    """A trained model with what the stage needs to write its artifact."""

    model: nn.Module
    data: Dataset
    metrics: dict[str, Any]
    state: TrainState
    device: torch.device
    dist: Dist
    work: Path


def train(cfg: FinetuneConfig, data: str | os.PathLike, out: Path, model: nn.Module, contract: InputContract,
          device: torch.device, dist: Dist, *, classes: list[str] | None = None, teacher: nn.Module | None = None,
          resume: bool = False) -> Trained:
    """Train ``model`` on the ImageFolder at ``data`` per ``cfg``; checkpoints go to ``OUT.work/``.

    ``classes`` None gives the model a new head for the data's classes; else the data must have exactly these.
    With ``teacher``, the loss adds distillation from its logits (``distill_alpha``). Metrics on val and test
    (when the folder has one) are measured after training with the best epoch's weights."""
    cfg = cfg.for_model(model)  # refused before any image is decoded
    if cfg.mode == "lora":  # adapters on the blocks partial would train; merged by the finetune stage; the head,
                            # replaced below for the data's classes, is never a target
        from edgeft.training import lora
        from edgeft.training.split import tail_modules

        names = lora.targets(model, tail_modules(model, cfg.trainable_blocks), cfg.lora_targets, cfg.lora_rank)
        model = lora.inject(model, names, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
    ds = load_dataset(data, contract, val_fraction=cfg.val_fraction, seed=cfg.seed, classes=classes)
    if classes is None:
        model.reset_classifier(len(ds.classes))
    elif ds.classes != classes:
        raise DataError(f"the data's classes {ds.classes} differ from the model's {classes}; "
                        "use the data folder the model was fine-tuned on")
    model.to(device)
    if teacher is not None:
        teacher.eval().to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    prefix, suffix = split(model, cfg.mode, cfg.trainable_blocks)
    trainable = freeze_for(model, cfg.mode, cfg.trainable_blocks)
    use_cache = prefix is not None and cfg.cache_features != "off"
    if cfg.cache_features == "on" and prefix is None:
        raise ConfigError(f"cache_features=on needs mode partial or linear on a supported family; "
                          f"{cfg.model} in mode {cfg.mode} has no frozen prefix to cache")
    progress.info(f"finetune {cfg.model} ({cfg.mode}, {len(trainable)} trainable tensors) on {len(ds.train)} train / "
                  f"{len(ds.val)} val images, classes {ds.classes} {ds.train.class_counts()}, input "
                  f"{contract.size[0]}x{contract.size[1]} {contract.resize}, device {device}")
    t_train = time.time()  # training time includes computing the feature cache
    caches = _caches(cfg, prefix, ds, contract, device, teacher) if use_cache else None
    objective = ClassifyObjective(cfg, model, suffix, ds, contract, device, teacher, caches)
    loop = Loop(cfg, model, suffix if caches is not None else model, objective, device, dist, _work_dir(out))
    if prefix is not None:
        loop.before_epoch = lambda: (set_train_mode(model, cfg.mode, cfg.trainable_blocks), prefix.eval())
    state, stopped_early = loop.run(resume, t_train)
    train_seconds = time.time() - t_train
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    objective.caches = caches = None  # free the cached features before the final evaluation
    metrics: dict[str, Any] = {
        "best_epoch": state.best_epoch, "epochs_run": state.epoch, "stopped_early": stopped_early,
        "train_seconds": round(train_seconds, 1), "total_seconds": None, "peak_rss_mb": None,
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
    }
    metrics.update(_final_metrics(cfg, model, ds, contract, device))
    loop.track.final(metrics)
    return Trained(model, ds, metrics, state, device, dist, loop.work)


def _soft_targets(cfg: FinetuneConfig, ds: Dataset) -> np.ndarray | None:
    """Per-image class probabilities from an expert's grades (``cfg.grades``) for the train split, or None.

    A binary label thresholds the expert's doubt away: a cell graded 0.67 defective and one graded 1.0 become
    the same target, and one graded 0.33 the same as a clean one. Training on the grade keeps that order, which
    is what a threshold chosen later at a line's operating point ranks by."""
    spec = cfg.grades_spec()
    if spec is None:
        return None
    from edgeft.data.imagefolder import read_grades

    csv_name, column, cls = spec
    if cls not in ds.classes:
        raise ConfigError(f"grades give the probability of one class; {cls!r} is not one of {', '.join(ds.classes)}")
    if len(ds.classes) != 2:
        raise ConfigError(f"grades need a two-class task; this one has {len(ds.classes)} classes")
    p = read_grades(ds.root, csv_name, column, ds.train)
    k = ds.classes.index(cls)
    targets = np.zeros((len(p), 2), dtype=np.float32)
    targets[:, k], targets[:, 1 - k] = p, 1 - p
    return targets


def _caches(cfg: FinetuneConfig, prefix: nn.Module, ds: Dataset, contract: InputContract, device: torch.device,
            teacher: nn.Module | None) -> tuple[FeatureCache, FeatureCache]:
    views = _views_for(cfg, contract.size[0] == contract.size[1])
    t0 = time.time()
    train_cache = FeatureCache(prefix, ds.train.images, contract, views, device, cfg.channels_last, desc="cache train",
                               teacher=teacher)
    val_cache = FeatureCache(prefix, ds.val.images, contract, 1, device, cfg.channels_last, desc="cache val")
    progress.info(f"cached frozen-prefix outputs for {len(ds.train)} images x {views} views in "
                  f"{time.time() - t0:.0f}s ({train_cache.features.numel() * 2 / 1e6:.0f} MB)")
    return train_cache, val_cache


def _final_metrics(cfg: FinetuneConfig, model: nn.Module, ds: Dataset, contract: InputContract,
                   device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in (("val", ds.val), ("test", ds.test)):
        if s is None:
            continue
        logits = torch_logits(model, s.images, contract, device=str(device), channels_last=cfg.channels_last,
                              desc=name)
        out[name] = classification_metrics(s.labels, logits.argmax(1), ds.classes).to_dict()
        if cfg.tta_views > 1:
            logits = torch_logits(model, s.images, contract, tta_views=cfg.tta_views, device=str(device),
                                  channels_last=cfg.channels_last, desc=f"{name} tta")
            out[f"{name}_tta"] = classification_metrics(s.labels, logits.argmax(1), ds.classes).to_dict()
    return out


class Objective:
    """What one task trains on, for :class:`Loop`: the order of its training items, a batch's loss, and the score
    of a validation pass. The loop owns the rest (optimizer, schedule, checkpoints, early stopping)."""

    n_train: int
    monitor: str | None = None  # what validate() scores, for the early-stop line (None: cfg.monitor)

    def order(self, gen: torch.Generator) -> np.ndarray:
        """This epoch's order of the training items (a permutation, or a sampler's draw)."""
        return torch.randperm(self.n_train, generator=gen).numpy()

    def loss(self, module: nn.Module, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def validate(self) -> tuple[float, dict[str, float], dict[str, str]]:
        """(the score early stopping maximises, the epoch's history fields, the progress bar's postfix)."""
        raise NotImplementedError


class ClassifyObjective(Objective):
    """Labelled images: cross-entropy with class weights and label smoothing (or an expert's grades as soft
    targets), distillation from a teacher's logits, cached frozen-prefix features in partial mode; validated by
    ``cfg.monitor`` (accuracy, balanced accuracy, AUROC or loss)."""

    def __init__(self, cfg: FinetuneConfig, model: nn.Module, suffix: nn.Module, ds: Dataset,
                 contract: InputContract, device: torch.device, teacher: nn.Module | None,
                 caches: tuple[FeatureCache, FeatureCache] | None) -> None:
        self.cfg, self.model, self.suffix, self.ds, self.contract, self.device, self.teacher, self.caches = (
            cfg, model, suffix, ds, contract, device, teacher, caches)
        self.n_train = len(ds.train)
        self.counts = np.bincount(ds.train.labels, minlength=len(ds.classes)).astype(np.float64)
        self.targets = _soft_targets(cfg, ds)  # None: the hard labels
        self.weight = None
        if cfg.class_balance == "weighted_loss":
            self.weight = torch.tensor(self.counts.sum() / (len(ds.classes) * np.maximum(self.counts, 1)),
                                       dtype=torch.float32, device=device)
        self.amp_dtype = _amp_dtype(device)
        self.grayscale = _grayscale(ds)

    def order(self, gen: torch.Generator) -> np.ndarray:
        if self.cfg.class_balance == "sampler":
            p = (1.0 / self.counts)[self.ds.train.labels]
            return torch.multinomial(torch.from_numpy(p / p.sum()), len(p), replacement=True, generator=gen).numpy()
        return super().order(gen)

    def loss(self, module: nn.Module, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        """The batch's loss: cross-entropy (class weights, label smoothing), plus distillation with a teacher."""
        cfg, device = self.cfg, self.device
        y = torch.from_numpy((self.targets if self.targets is not None else self.ds.train.labels)[idx]).to(device)
        soft = None
        if self.caches is not None:
            x, soft = self.caches[0].batch(idx, gen)
            x = x.to(device)
        else:
            x = aug.apply(to_tensor(self.ds.train.images[idx]), cfg.augment, gen, grayscale=self.grayscale).to(device)
            x = normalize(x, self.contract)
        if cfg.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            if self.teacher is not None and soft is None:
                with torch.no_grad():
                    soft = self.teacher(x).float()
            logits = module(x)
            loss = F.cross_entropy(logits.float(), y, weight=self.weight, label_smoothing=cfg.label_smoothing)
            if soft is not None:
                loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * distillation_loss(
                    logits.float(), soft.to(device), cfg.distill_temperature)
        return loss

    def validate(self) -> tuple[float, dict[str, float], dict[str, str]]:
        """Val metrics, loss and mean one-vs-rest AUROC of the current weights."""
        model, ds, device = self.model, self.ds, self.device
        model.eval()
        with torch.no_grad():
            if self.caches is not None:
                val_cache = self.caches[1]
                logits = torch.cat([self.suffix(val_cache.batch(np.arange(i, min(i + 256, len(ds.val))), None)[0]
                                                .to(device)).float().cpu() for i in range(0, len(ds.val), 256)])
            else:
                logits = torch.from_numpy(torch_logits(model, ds.val.images, self.contract, device=str(device),
                                                       channels_last=self.cfg.channels_last, desc="val"))
        labels = torch.from_numpy(ds.val.labels)
        loss = float(F.cross_entropy(logits, labels))
        auroc = macro_auroc(ds.val.labels, torch.softmax(logits.float(), 1).numpy())
        m = classification_metrics(ds.val.labels, logits.argmax(1).numpy(), ds.classes)
        record = {"val_loss": loss, "val_accuracy": m.accuracy, "val_balanced_accuracy": m.balanced_accuracy,
                  "val_auroc": auroc}
        return _score(m, loss, auroc, self.cfg.monitor), record, {"val_acc": f"{m.accuracy:.3f}",
                                                                   "val_bal": f"{m.balanced_accuracy:.3f}"}


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bf16 where the GPU has it), none on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class Loop:
    """The epoch loop over one model, whatever the task: optimizer and schedule, checkpoints and resume, early
    stopping on the objective's validation score. ``module`` is what a batch runs through (the trainable suffix
    when features are cached, else the model); ``model`` is what is checkpointed and restored."""

    def __init__(self, cfg: FinetuneConfig, model: nn.Module, module: nn.Module, objective: Objective,
                 device: torch.device, dist: Dist, work: Path) -> None:
        self.cfg, self.model, self.objective, self.device, self.dist, self.work = (cfg, model, objective, device,
                                                                                   dist, work)
        self.module = module
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
        per_rank = math.ceil(objective.n_train / dist.world)
        steps_per_epoch = max(1, math.ceil(per_rank / (cfg.batch_size * cfg.accum_steps)))
        self.opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, _lr_lambda(cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)))
        self.scaler = torch.amp.GradScaler("cuda", enabled=_amp_dtype(device) == torch.float16)
        self.before_epoch = lambda: set_train_mode(model, cfg.mode, cfg.trainable_blocks)

    def run(self, resume: bool, t_train: float) -> tuple[TrainState, bool]:
        """Train to ``cfg.epochs`` or early stop; (the state with the best weights, whether it stopped early). With a
        tracker (``edgeft --track``), each epoch's record is logged as it ends (:mod:`edgeft.training.track`)."""
        from edgeft.training.track import Run

        self.track = Run(self.work.name.removesuffix(".work"), self.cfg.to_dict(), off=not self.dist.main)
        try:
            state, stopped_early = self._run(resume, t_train)
        except BaseException:
            self.track.finish("FAILED")
            raise
        self.track.finish()
        return state, stopped_early

    def _run(self, resume: bool, t_train: float) -> tuple[TrainState, bool]:
        cfg = self.cfg
        ckpt, fingerprint = self.work / "last.pt", cfg.fingerprint()
        state = TrainState()
        if resume and ckpt.is_file():
            state = _load_checkpoint(ckpt, self.model, self.opt, self.sched, fingerprint)
            progress.info(f"resuming from {ckpt} after epoch {state.epoch}")
        elif self.dist.main:
            if self.work.exists():
                shutil.rmtree(self.work)
            self.work.mkdir(parents=True)
        stopped_early = False
        epoch_bar = progress.bar(total=cfg.epochs, desc="epochs", unit="epoch", leave=True)
        epoch_bar.update(state.epoch)
        for epoch in range(state.epoch, cfg.epochs):
            running, seen = self.epoch(epoch, state, ckpt)
            score, record, postfix = self.objective.validate()
            state.epoch = epoch + 1
            state.history.append({"epoch": epoch + 1, "train_loss": running / max(seen, 1), **record,
                                  "lr": self.opt.param_groups[0]["lr"], "seconds": time.time() - t_train})
            self.track.log(epoch + 1, state.history[-1])
            if score > state.best_score:
                state.best_score, state.best_epoch = score, epoch + 1
                state.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            epoch_bar.update(1)
            epoch_bar.set_postfix(loss=f"{running / max(seen, 1):.3f}", **postfix)
            if self.dist.main:
                _save_checkpoint(ckpt, self.model, self.opt, self.sched, state, fingerprint)
            if epoch + 1 - state.best_epoch >= cfg.patience:
                stopped_early = True
                progress.info(f"early stop: val {self.objective.monitor or cfg.monitor} has not improved for "
                              f"{cfg.patience} epochs")
                break
        epoch_bar.close()
        return state, stopped_early

    def epoch(self, epoch: int, state: TrainState, ckpt: Path) -> tuple[float, int]:
        """One pass over the training items; (summed loss, items seen)."""
        cfg, dist = self.cfg, self.dist
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = self.objective.order(gen)[dist.rank::dist.world]
        self.before_epoch()
        running, seen = 0.0, 0
        self.opt.zero_grad(set_to_none=True)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        for step, idx in enumerate(progress.bar(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")):
            loss = self.objective.loss(self.module, idx, gen)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} (lr "
                                    f"{self.opt.param_groups[0]['lr']:.3g}); lower --lr (now {cfg.lr:g})"
                                    + (f"; the last good epoch is kept in {ckpt}" if state.epoch else ""))
            self.scaler.scale(loss / cfg.accum_steps).backward()
            if (step + 1) % cfg.accum_steps == 0 or step + 1 == len(batches):
                if cfg.grad_clip:
                    self.scaler.unscale_(self.opt)
                    torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                   cfg.grad_clip)
                self.scaler.step(self.opt)
                self.scaler.update()
                self.opt.zero_grad(set_to_none=True)
                self.sched.step()
            running += loss.item() * len(idx)
            seen += len(idx)
        return running, seen


def save(trained: Trained, out: Path, meta: Meta, force: bool = False,
         extra_files: dict[str, str | bytes] | None = None) -> Artifact:
    """Write the trained model as a torch artifact (the main process of a torchrun launch only) and remove the
    checkpoints; the other processes wait for it and get the artifact's description."""
    if trained.dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
    if not trained.dist.main:
        return Artifact(path=out, meta=meta)
    trained.model.to("cpu", memory_format=torch.contiguous_format)
    artifact = save_artifact(trained.model, out, meta, force=force, extra_files=extra_files)
    shutil.rmtree(trained.work, ignore_errors=True)
    return artifact


def data_extra(trained: Trained, cfg: FinetuneConfig) -> dict[str, Any]:
    """What every trained artifact records beside its metrics: TTA views, the epoch history, the data's counts."""
    ds = trained.data
    return {"tta_views": cfg.tta_views, "history": trained.state.history,
            "data_counts": {s.name: s.class_counts() for s in (ds.train, ds.val, ds.test) if s is not None}}


def finish_metrics(trained: Trained, t_start: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trained metrics with a stage's own, the stage's total time and the process's peak memory."""
    metrics = {**trained.metrics, **(extra or {})}
    metrics["total_seconds"] = round(time.time() - t_start, 1)
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 0)
    return metrics


def retrain(parent: Artifact, model: nn.Module, cfg: FinetuneConfig, data: str | os.PathLike, out: Path, *,
            stage: str, lineage_params: dict[str, Any], teacher: nn.Module | None = None,
            extra_meta: dict[str, Any] | None = None, extra_metrics: dict[str, Any] | None = None,
            force: bool = False) -> Artifact:
    """Train ``model``, derived from ``parent`` (pruned, fake-quantized), on the parent's classes and input
    contract, and write it at ``out`` as stage ``stage`` of the parent's lineage: pruning recovery and QAT."""
    t_start = time.time()
    device, dist = setup(cfg)
    trained = train(cfg, data, out, model, parent.meta.input, device, dist, classes=parent.meta.class_names,
                    teacher=teacher)
    extra = data_extra(trained, cfg)
    if "pruned_spec" in parent.meta.extra:  # the architecture's shape travels on
        extra["pruned_spec"] = parent.meta.extra["pruned_spec"]
    extra.update(extra_meta or {})
    meta = Meta(kind="torch", arch=parent.meta.arch, class_names=trained.data.classes, input=parent.meta.input,
                lineage=parent.stage_record(stage, {**lineage_params, "data": str(data)}),
                metrics=finish_metrics(trained, t_start, extra_metrics), extra=extra)
    return save(trained, out, meta, force=force)


def _grayscale(ds: Dataset) -> bool:
    """True when the source images carry no colour (all channels equal), so colour jitter stays off."""
    sample = ds.train.images[: min(16, len(ds.train.images))]
    return sample.shape[-1] == 1 or bool(np.all(sample[..., :1] == sample))


def distill_features(student, teacher, images: np.ndarray, contract, epochs: int, lr: float, batch_size: int = 32,
                     seed: int = 0) -> list[float]:
    """Train ``student`` (a pruned patch-feature module) to give the features ``teacher`` (its unpruned parent) gives
    on ``images`` (good parts: no label is needed, the parent's features are the target). The loss is the mean
    squared difference per channel, each channel scaled by the teacher's spread on these images, so the low-variance
    channels that the Mahalanobis distance weighs most are matched as closely as the loud ones. AdamW, a short
    warm-up and a cosine decay, as in :func:`train`; the teacher's features are computed once. Returns the loss
    before training and after each epoch (the mean over its batches)."""
    from edgeft.models.inference import normalize, to_tensor

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    teacher.eval()
    student.eval()
    targets, start_sq = [], 0.0  # start_sq: the pruned student's squared error per channel, summed
    with torch.no_grad():
        for i in progress.bar(range(0, len(images), batch_size), desc="teacher features", unit="batch"):
            x = normalize(to_tensor(images[i:i + batch_size]), contract)
            t = teacher(x)
            targets.append(t)
            start_sq = start_sq + (student(x) - t).pow(2).sum((0, 2, 3))
    targets_all = torch.cat(targets)
    scale = targets_all.transpose(0, 1).flatten(1).std(1).clamp_min(1e-6)
    losses = [float((start_sq / scale.pow(2)).sum() / targets_all.numel())]
    scale = scale.view(1, -1, 1, 1)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, min(10, steps // 10)))
    for epoch in range(epochs):
        student.train()
        order = rng.permutation(len(images))
        total, n = 0.0, 0
        for i in progress.bar(range(0, len(order), batch_size), desc=f"distil {epoch + 1}/{epochs}", unit="batch"):
            idx = np.sort(order[i:i + batch_size])
            x = normalize(to_tensor(images[idx]), contract)
            loss = (student(x) - targets_all[torch.from_numpy(idx)]).div(scale).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        losses.append(total / n)
        progress.info(f"distillation epoch {epoch + 1}/{epochs}: feature loss {losses[-1]:.4f} "
                      f"(before: {losses[0]:.4f})")
    student.eval()
    return losses
