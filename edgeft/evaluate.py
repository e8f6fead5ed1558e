"""Evaluate an artifact on a labelled split: the same metrics for every stage's artifact."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgeft import progress
from edgeft.artifact import Artifact
from edgeft.contract import InputContract, pixel_max
from edgeft.data.imagefolder import ImageSet
from edgeft.metrics import classification_metrics


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


def numpy_views(x: np.ndarray, count: int) -> list[np.ndarray]:
    """The same flip/rotation views as :func:`edgeft.data.augment.dihedral_views`, for NCHW numpy batches."""
    views = []
    for k in range(4):
        r = np.ascontiguousarray(np.rot90(x, k, axes=(2, 3))) if k else x
        views += [r, np.ascontiguousarray(r[..., ::-1])]
    return views[:count]


def onnx_logits(path: str | os.PathLike, images: np.ndarray, contract: InputContract, batch_size: int = 32,
                tta_views: int = 1, threads: int | None = None) -> np.ndarray:
    """Logits from ONNX Runtime (CPU) for prepared images; TTA averages softmax over views, as for PyTorch."""
    from edgeft.bench.timing import ort_session
    from edgeft.runtime.predictor import softmax

    sess = ort_session(str(path), threads or os.cpu_count() or 1)
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
    out = []
    for i in progress.bar(range(0, len(images), step), desc="eval onnx", unit="batch"):
        x = contract.normalize(images[i:i + step])
        if tta_views == 1:
            out.append(sess.run(None, {name: x})[0])
            continue
        probs = [softmax(sess.run(None, {name: v})[0]) for v in numpy_views(x, tta_views)]
        out.append(np.log(np.clip(np.mean(probs, 0), 1e-12, None)))
    return np.concatenate(out)


def evaluate(artifact: Artifact, split: ImageSet, tta_views: int | None = None, batch_size: int | None = None,
             device: str = "cpu") -> dict[str, Any]:
    """Metrics of a PyTorch or ONNX artifact on a decoded split (class names must match the artifact's)."""
    from edgeft.errors import ArtifactError, DataError

    if list(split.classes) != list(artifact.meta.class_names):
        raise DataError(f"the data's classes {split.classes} differ from the model's {artifact.meta.class_names}")
    views = tta_views if tta_views is not None else int(artifact.meta.extra.get("tta_views", 1))
    if artifact.meta.kind == "onnx":
        logits = onnx_logits(artifact.model_path, split.images, artifact.meta.input, tta_views=views)
    elif artifact.meta.kind == "torch":
        from edgeft.models import from_artifact

        model = from_artifact(artifact).to(device)
        logits = torch_logits(model, split.images, artifact.meta.input, batch_size, views, device)
    else:
        raise ArtifactError(f"eval of {artifact.meta.kind} artifacts needs the runtime's TensorRT backend, "
                            "which is not part of this edgeft version")
    m = classification_metrics(split.labels, logits.argmax(1), artifact.meta.class_names)
    m["tta_views"] = views
    return m
