"""``edgeft finetune``: a pretrained model adapted to the customer's classes (full, partial, LoRA, or linear probe).

The model comes from ``edgeft.models.create`` (any timm architecture; weights from a local file or a package
that ships them), gets a head for the data's classes, and trains through the one training loop (edgeft.training.loop).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import torch

from edgeft.artifact import Artifact, Meta, lineage_entry, refuse_existing
from edgeft.contract import InputContract
from edgeft.errors import TrainingError
from edgeft.training import loop
from edgeft.training.config import FinetuneConfig, RetrainConfig
from edgeft.models import create, resolve_weights


def resolve_contract(base: InputContract, cfg: FinetuneConfig) -> InputContract:
    """The pretrained weights' preprocessing with the config's size and resize overrides."""
    changes: dict[str, Any] = {}
    if cfg.image_size:
        changes["size"] = [cfg.image_size, cfg.image_size]
    if cfg.resize:
        changes["resize"] = cfg.resize
    return base.replace(**changes) if changes else base


def finetune(cfg: FinetuneConfig, data: str | os.PathLike, out: str | os.PathLike, force: bool = False,
             resume: bool = False) -> Artifact:
    """Fine-tune ``cfg.model`` from ``cfg.weights`` on the ImageFolder at ``data``; write a torch artifact at ``out``
    with metrics on val and test (when the folder has a test split)."""
    out = refuse_existing(out, force)
    t_start = time.time()
    device, dist = loop.setup(cfg)
    cfg = replace(cfg, weights=resolve_weights(cfg.model, cfg.weights))
    model, base_contract = create(cfg.model, cfg.weights, drop_rate=cfg.drop_rate)
    cfg = cfg.for_model(model)  # model-dependent defaults, checked before any image is decoded
    contract = resolve_contract(base_contract, cfg)
    trained = loop.train(cfg, data, out, model, contract, device, dist, resume=resume)
    params = cfg.to_dict()
    params.update({"data": str(data), "val_carved": trained.data.val_carved, "threads": torch.get_num_threads()})
    extra_files, lora_metrics = (_merge_lora(trained, cfg, contract) if cfg.mode == "lora" else ({}, {}))
    meta = Meta(kind="torch", arch=cfg.model, class_names=trained.data.classes, input=contract,
                lineage=[lineage_entry("finetune", params)],
                metrics=loop.finish_metrics(trained, t_start, lora_metrics), extra=loop.data_extra(trained, cfg))
    return loop.save(trained, out, meta, force=force, extra_files=extra_files)


def _merge_lora(trained: loop.Trained, cfg: FinetuneConfig, contract: InputContract) -> tuple[dict, dict]:
    """Fold the adapters into the weights (the artifact is a plain network), keeping the adapter as its own file;
    the merged model's logits are checked against the adapted one's on val images."""
    import json

    from edgeft.models.inference import torch_logits
    from edgeft.training import lora

    model = trained.model.eval()
    state = lora.adapter_state(model)
    sample = trained.data.val.images[:32]
    before = torch_logits(model, sample, contract, device=str(trained.device), desc="lora check")
    lora.merge(model)
    after = torch_logits(model, sample, contract, device=str(trained.device), desc="lora check")
    diff = float(abs(before - after).max())
    if diff > 1e-4:
        raise TrainingError(f"merging the LoRA adapters changed the logits by {diff:.2e} (more than 1e-4); report "
                            "the architecture")
    config = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
              "targets": sorted({k.split(".lora_")[0] for k in state})}
    blob = lora.adapter_bytes(state, {"edgeft_lora": json.dumps(config)})
    metrics = {"lora": {**config, "targets": len(config["targets"]),
                        "trainable_params": int(sum(v.numel() for v in state.values())),
                        "adapter_bytes": len(blob), "merge_max_abs_diff": diff}}
    return {lora.ADAPTER_FILE: blob}, metrics


def deployed_weights(path: str | os.PathLike) -> Artifact:
    """The PyTorch artifact a deployed model (an FP32 or INT8 ONNX file, an engine) was made from, found through its
    lineage: each stage records its parent's path and the SHA-256 of the parent's model file."""
    from pathlib import Path

    from edgeft.artifact import load
    from edgeft.errors import ArtifactError

    a = load(path)
    while a.meta.kind != "torch":
        entry = a.meta.lineage[-1] if a.meta.lineage else {}
        parent = entry.get("parent")
        if not parent:
            raise ArtifactError(f"{a.path} records no PyTorch model it was made from (an imported {a.meta.kind} file "
                                "has only its graph): fine-tune from the PyTorch artifact or checkpoint instead")
        if "(QAT weights, not kept)" in str(parent):
            raise ArtifactError(f"{a.path} was quantized after QAT, whose weights were not kept: fine-tune from the "
                                "model QAT started from (its lineage's parent)")
        p = Path(parent)
        if not (p / "meta.json").is_file():
            raise ArtifactError(f"{a.path} was made from {p}, which is not here: fine-tune from that PyTorch artifact "
                                "(copy it beside the deployed one)")
        parent_art = load(p)
        if entry.get("parent_sha256") and parent_art.meta.model_sha256 != entry["parent_sha256"]:
            raise ArtifactError(f"{p} changed since {a.path} was made from it (its model's SHA-256 differs): it is not "
                                "the deployed model's parent")
        a = parent_art
    return a


def finetune_from(deployed: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
                  cfg: RetrainConfig | None = None, force: bool = False) -> Artifact:
    """Fine-tune the deployed model (not the ImageNet weights again) on ``data``, the old parts and the new: its own
    network, pruned shape, head, input contract and training settings, at ``cfg``'s epochs and learning rate; a
    classifier."""
    from edgeft.data.imagefolder import find_splits, scan_split
    from edgeft.errors import DataError
    from edgeft.models import from_artifact
    from edgeft.training.config import config_from_parent

    cfg = cfg or RetrainConfig()
    out = refuse_existing(out, force)
    parent = deployed_parent(deployed)
    classes = scan_split(find_splits(data)["train"]).classes
    if sorted(classes) != sorted(parent.meta.class_names):
        raise DataError(f"{data}'s classes {classes} are not the deployed model's {parent.meta.class_names}: the "
                        "new data must be labelled with the classes the model decides between")
    model = from_artifact(parent)
    train_cfg = config_from_parent(parent, cfg.mode, cfg.epochs, cfg.lr, cfg.threads, seed=cfg.seed)
    # the training settings as a fine-tuning records them, so later stages (pruning recovery, QAT) inherit them
    params = {**train_cfg.to_dict(), "from": str(deployed), "from_sha256": parent.meta.model_sha256,
              "retrain": cfg.to_dict()}
    return loop.retrain(parent, model, train_cfg, data, out, stage="finetune", lineage_params=params, force=force)


def deployed_parent(deployed: str | os.PathLike) -> Artifact:
    """The deployed model's PyTorch weights (:func:`deployed_weights`), refused unless it is a classifier."""
    from edgeft.errors import ConfigError
    from edgeft.tasks import registry as tasks

    parent = deployed_weights(deployed)
    task = tasks.of(parent.meta)
    if task.name != "classify":
        raise ConfigError(f"--from {deployed}: a {task.name} model; fine-tuning from a deployed model is built for "
                          "classifiers")
    return parent
