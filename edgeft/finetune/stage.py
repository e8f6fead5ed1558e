"""``edgeft finetune``: a pretrained model adapted to the customer's classes (full, partial, or linear probe).

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
    meta = Meta(kind="torch", arch=cfg.model, class_names=trained.data.classes, input=contract,
                lineage=[lineage_entry("finetune", params)], metrics=loop.finish_metrics(trained, t_start),
                extra=loop.data_extra(trained, cfg))
    return loop.save(trained, out, meta, force=force)
