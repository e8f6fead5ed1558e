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
from edgeft.training.config import FinetuneConfig
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
