"""PyTorch inference on prepared images (training floor): tensors from the input contract's pixels, batch sizes
that suit the device, and logits with optional test-time views; the one place stages and evaluation turn
images into a model's outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeft import progress
from edgeft.contract import InputContract, pixel_max


def to_tensor(images: np.ndarray):
    """Prepared N x H x W x C pixels → float tensor N x C x H x W in [0, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    scale = 1.0 / pixel_max(images.dtype)
    return x.permute(0, 3, 1, 2).float().mul_(scale)


def normalize(x, contract: InputContract):
    """The contract's mean/std on a [0, 1] tensor batch (same numbers as InputContract.normalize)."""
    import torch

    mean = torch.tensor(contract.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(contract.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


CPU_INFERENCE_BATCH = 8
GPU_INFERENCE_BATCH = 64


def inference_batch(device: Any = "cpu") -> int:
    """Images per forward pass when only inference runs (evaluation, feature caching).

    Small on CPUs: the early high-resolution activations of a few images stay in the CPU's caches. On the 2-core
    Xeon here (channels-last), batch 8 ran EfficientNet-Lite0 1.5x faster per image than batch 64, and its first
    8 blocks (the frozen prefix whose outputs fine-tuning caches) 2.2x faster. GPUs want large batches."""
    return GPU_INFERENCE_BATCH if str(device).startswith("cuda") else CPU_INFERENCE_BATCH


def torch_logits(model, images: np.ndarray, contract: InputContract, batch_size: int | None = None,
                 tta_views: int = 1, device: str = "cpu", channels_last: bool = True,
                 desc: str = "eval") -> np.ndarray:
    """Logits for prepared images; with ``tta_views`` > 1, softmax-averaged over flip/rotation views (as log-probs).

    ``batch_size`` None picks :func:`inference_batch` for ``device``."""
    import torch

    from edgeft.data.augment import dihedral_views

    batch_size = batch_size or inference_batch(device)
    model.eval()
    out = []
    with torch.no_grad():
        for i in progress.bar(range(0, len(images), batch_size), desc=desc, unit="batch"):
            x = normalize(to_tensor(images[i:i + batch_size]).to(device), contract)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if tta_views == 1:
                out.append(model(x).float().cpu())
            else:
                probs = torch.stack([model(v).float().softmax(1) for v in dihedral_views(x, tta_views)]).mean(0)
                out.append(probs.clamp_min(1e-12).log().cpu())
    return torch.cat(out).numpy()


def torch_outputs(model, images: np.ndarray, contract: InputContract, batch_size: int | None = None,
                  device: str = "cpu", desc: str = "eval") -> list[np.ndarray]:
    """Every output of a model with several (an anomaly graph's score and heatmap) for prepared images, each
    concatenated over batches; contiguous memory as exported."""
    import torch

    batch_size = batch_size or inference_batch(device)
    model.eval()
    parts: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i in progress.bar(range(0, len(images), batch_size), desc=desc, unit="batch"):
            out = model(normalize(to_tensor(images[i:i + batch_size]).to(device), contract))
            out = out if isinstance(out, (tuple, list)) else (out,)
            if not parts:
                parts = [[] for _ in out]
            for k, o in enumerate(out):
                parts[k].append(o.float().cpu().numpy())
    return [np.concatenate(p) for p in parts]
