"""``edgeft quantize --method qat``: fine-tune with INT8 fake quantization, then quantize for real.

The simulation mirrors what the exported QDQ graph will compute, at the places it will compute it:
every Conv and Linear sees its input fake-quantized per tensor (uint8 asymmetric for ``ort-cpu``,
int8 symmetric for ``tensorrt``) with ranges initialised from the calibration set, and its weight
fake-quantized per output channel (int8 symmetric). BatchNorm needs no folding here: per-channel
symmetric weight quantization commutes with the per-channel scale that folding multiplies in, so
quantizing the unfolded weight gives exactly the folded weight's INT8 values. Gradients pass the
rounding straight through (``torch.fake_quantize_*``). After training, the weights are exported and
quantized by the same PTQ path with the same calibration images, so the ranges match.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeft import artifact as art
from edgeft import progress
from edgeft.models.inference import normalize, to_tensor


def _act_qparams(lo: float, hi: float, symmetric: bool) -> tuple[float, int, int, int]:
    """(scale, zero point, qmin, qmax) for a tensor range, as ONNX Runtime computes them."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        m = max(abs(lo), abs(hi), 1e-8)
        return m / 127.0, 0, -128, 127
    scale = max(hi - lo, 1e-8) / 255.0
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return scale, zp, 0, 255


def _fq_weight(w: torch.Tensor) -> torch.Tensor:
    scale = w.detach().abs().amax(dim=tuple(range(1, w.ndim))).clamp_min(1e-8) / 127.0
    zp = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale.float(), zp, 0, -127, 127)


class _QAT:
    """Mixed into Conv2d/Linear by changing the instance's class: same parameters, same state-dict keys."""

    qparams: tuple[float, int, int, int]

    def _fq_input(self, x: torch.Tensor) -> torch.Tensor:
        scale, zp, qmin, qmax = self.qparams
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)


class QATConv2d(_QAT, nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(self._fq_input(x), _fq_weight(self.weight), self.bias)


class QATLinear(_QAT, nn.Linear):
    def forward(self, x):
        return F.linear(self._fq_input(x), _fq_weight(self.weight), self.bias)


_QAT_CLASS = {nn.Conv2d: QATConv2d, nn.Linear: QATLinear}


@torch.no_grad()
def input_ranges(model: nn.Module, images: np.ndarray, contract, percentile: float = 99.999,
                 batch_size: int = 32) -> dict[str, tuple[float, float]]:
    """Per Conv/Linear input: (low, high) over the calibration images (percentiles clip rare outliers)."""
    samples: dict[str, list[np.ndarray]] = {}
    hooks = []
    rng = np.random.default_rng(0)
    for name, m in model.named_modules():
        if type(m) in _QAT_CLASS:
            def hook(mod, inputs, name=name):
                flat = inputs[0].detach().float().reshape(-1).numpy()
                take = rng.choice(flat.size, size=min(flat.size, 20000), replace=False)
                samples.setdefault(name, []).append(flat[take])
            hooks.append(m.register_forward_pre_hook(hook))
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            model(normalize(to_tensor(images[i:i + batch_size]), contract))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, chunks in samples.items():
        v = np.concatenate(chunks)
        out[name] = (float(np.percentile(v, 100 - percentile)), float(np.percentile(v, percentile)))
    return out


def prepare(model: nn.Module, ranges: dict[str, tuple[float, float]], symmetric: bool) -> int:
    """Turn the model's Conv2d/Linear layers into fake-quantized ones in place; returns how many."""
    n = 0
    for name, m in model.named_modules():
        cls = _QAT_CLASS.get(type(m))
        if cls is not None and name in ranges:
            m.__class__ = cls
            m.qparams = _act_qparams(*ranges[name], symmetric)
            n += 1
    return n


def convert_back(model: nn.Module) -> None:
    """Plain Conv2d/Linear again (the trained weights stay), ready for export."""
    for m in model.modules():
        if isinstance(m, _QAT):
            m.__class__ = nn.Conv2d if isinstance(m, nn.Conv2d) else nn.Linear
            del m.qparams


def qat(artifact_path: str | os.PathLike, out: str | os.PathLike, cfg, calib: str | os.PathLike,
        data: str | os.PathLike, epochs: int = 2, lr: float = 1e-4, force: bool = False,
        mode: str = "full") -> art.Artifact:
    """QAT fine-tuning (distilled from the FP32 parent) then INT8 export; see the module docstring.

    ``mode="partial"`` trains only the blocks the parent's fine-tuning trained: the frozen, fake-quantized
    prefix runs once per image and view and is cached, so an epoch costs a fraction of a full one, and the
    trainable blocks learn to absorb the prefix's quantization error.
    """
    from edgeft.data.imagefolder import find_splits, load_split
    from edgeft.errors import ArtifactError
    from edgeft.training import loop
    from edgeft.metrics import classification_metrics, split_metrics
    from edgeft.models.inference import torch_logits
    from edgeft.models import from_artifact
    from edgeft.runtime.torch_model import refuse_imported_onnx
    from edgeft.training.config import config_from_parent
    from edgeft.data import calibration
    from edgeft.quantize.ptq import quantize

    out = art.refuse_existing(out, force)
    parent = art.load(artifact_path)
    refuse_imported_onnx(parent, "QAT")
    if parent.meta.kind != "torch" or parent.meta.extra.get("quantized"):
        raise ArtifactError(f"QAT needs the FP32 PyTorch artifact; {parent.path} holds "
                            f"{parent.meta.extra.get('quantized') or parent.meta.kind}")
    contract = parent.meta.input
    calib_set = calibration.load_images(calibration.load(calib), data, contract)
    model = from_artifact(parent)
    teacher = copy.deepcopy(model)
    split = "test" if "test" in find_splits(data) else "val"
    eval_set = load_split(data, split, contract, classes=parent.meta.class_names)
    fp32_parent = classification_metrics(
        eval_set.labels, torch_logits(teacher, eval_set.images, contract, desc="eval fp32").argmax(1),
        parent.meta.class_names)
    ranges = input_ranges(model, calib_set.images, contract, percentile=cfg.percentile)
    n = prepare(model, ranges, symmetric=cfg.target == "tensorrt")
    progress.info(f"QAT: {n} Conv/Linear layers fake-quantized ({cfg.target}), {epochs} epoch(s) at lr {lr:g}")
    from edgeft.errors import ConfigError

    if mode not in ("full", "partial"):
        raise ConfigError(f"QAT mode must be full or partial, got {mode!r}")
    rcfg = config_from_parent(parent, mode, epochs, lr, cfg.threads)
    with tempfile.TemporaryDirectory(prefix="edgeft-qat-", dir=out.parent if out.parent.exists() else None) as d:
        trained = loop.retrain(parent, model, rcfg, data, Path(d) / "qat-weights", stage="qat", teacher=teacher,
                               lineage_params={"qat": {"epochs": epochs, "lr": lr, "mode": mode, "target": cfg.target,
                                                       "fake_quantized_layers": n}, "train": rcfg.to_dict()})
        convert_back(model)
        result = quantize(trained.path, out, cfg, calib, data, force=force,
                          extra_metrics={f"{split}_fp32_parent": fp32_parent.to_dict(),
                                         "qat_simulated": trained.meta.metrics.get(split)})
        m = result.meta.metrics
        m["accuracy_drop_vs_parent_pp"] = round((fp32_parent.accuracy - split_metrics(m, split).accuracy) * 100, 2)
        result.meta.lineage[-1]["parent"] = f"{parent.path} (QAT weights, not kept)"
        result.meta.extra["method"] = "qat"
        art.update_metrics(result, {})
        return result
