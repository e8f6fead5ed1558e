"""Logits of any runner over prepared images, in batches, with optional test-time views (runtime floor: numpy).

Every backend of the runtime's table goes through :func:`runner_logits`, so evaluation of an ONNX model, a
TensorRT engine or any future backend computes the same thing the same way."""

from __future__ import annotations

import os

import numpy as np

from edgeft import progress
from edgeft.contract import InputContract
from edgeft.runtime.runner import Runner


def numpy_views(x: np.ndarray, count: int) -> list[np.ndarray]:
    """The same flip/rotation views as :func:`edgeft.data.augment.dihedral_views`, for NCHW numpy batches."""
    views = []
    for k in range(4):
        r = np.ascontiguousarray(np.rot90(x, k, axes=(2, 3))) if k else x
        views += [r, np.ascontiguousarray(r[..., ::-1])]
    return views[:count]


def runner_logits(runner: Runner, images: np.ndarray, contract: InputContract, batch_size: int = 32,
                  tta_views: int = 1, desc: str = "eval") -> np.ndarray:
    """Logits of an active ``runner`` for prepared images; TTA averages softmax over views (as log-probs)."""
    from edgeft.runtime.predictor import softmax

    out = []
    for i in progress.bar(range(0, len(images), batch_size), desc=desc, unit="batch"):
        x = contract.normalize(images[i:i + batch_size])
        if tta_views == 1:
            out.append(runner.infer(x))
            continue
        probs = [softmax(runner.infer(v)) for v in numpy_views(x, tta_views)]
        out.append(np.log(np.clip(np.mean(probs, 0), 1e-12, None)))
    return np.concatenate(out)


def onnx_logits(path: str | os.PathLike, images: np.ndarray, contract: InputContract, batch_size: int = 32,
                tta_views: int = 1, threads: int | None = None) -> np.ndarray:
    """Logits from ONNX Runtime on the CPU for prepared images (a fixed-batch model is fed in its batch)."""
    from pathlib import Path

    from edgeft.runtime.backends import OrtRunner

    with OrtRunner(Path(path), "CPUExecutionProvider", threads) as runner:
        return runner_logits(runner, images, contract, batch_size, tta_views, desc="eval onnx")


def onnx_outputs(path: str | os.PathLike, images: np.ndarray, contract: InputContract, batch_size: int = 8,
                 threads: int | None = None, desc: str = "eval onnx", backend: str = "ort-cpu") -> list[np.ndarray]:
    """Every output of an ONNX model (an anomaly graph: score, heatmap) for prepared images, each concatenated over
    batches, computed by ``backend`` (a CPU runtime of the table: ONNX Runtime by default, OpenVINO at FP32 or bf16)."""
    from pathlib import Path

    from edgeft.runtime.backends import lookup

    parts: list[list[np.ndarray]] = []
    with lookup(backend).require().make(Path(path), None, threads) as runner:
        for i in progress.bar(range(0, len(images), batch_size), desc=desc, unit="batch"):
            out = runner.infer_outputs(contract.normalize(images[i:i + batch_size]))
            parts = parts or [[] for _ in out]
            for k, o in enumerate(out):
                parts[k].append(np.asarray(o))
    return [np.concatenate(p) for p in parts]
