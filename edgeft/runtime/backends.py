"""Backends that run a model, in one table looked up by name, behind one runner protocol.

A runner is a context manager: ``activate()`` loads the model, ``infer(x)`` maps a float32 NCHW batch
to logits, ``deactivate()`` releases it. ONNX Runtime silently falls back to the CPU when a GPU
provider cannot load, so an ONNX Runtime runner checks that the provider it was asked for is really
active and fails loudly otherwise. Heavy libraries are imported only when a runner activates.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgeft.errors import ConfigError, DependencyError, close_matches


class Runner:
    """The protocol every backend implements."""

    name = "runner"

    def activate(self) -> None:
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def deactivate(self) -> None:
        pass

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()


class OrtRunner(Runner):
    def __init__(self, path: Path, provider: str, threads: int | None = None):
        self.path, self.provider, self.threads = path, provider, threads
        self.name = {"CPUExecutionProvider": "ort-cpu", "CUDAExecutionProvider": "ort-cuda",
                     "TensorrtExecutionProvider": "ort-trt"}[provider]
        self.session = None

    def activate(self) -> None:
        from edgeft.bench.timing import ort_session

        self.session = ort_session(str(self.path), self.threads or os.cpu_count() or 1, (self.provider,))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch and len(x) != self.fixed_batch:
            return np.concatenate([self.session.run(None, {self.input_name: x[i:i + self.fixed_batch]})[0]
                                   for i in range(0, len(x), self.fixed_batch)])
        return self.session.run(None, {self.input_name: x})[0]

    def deactivate(self) -> None:
        self.session = None


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, artifact_dir: Path, threads: int | None = None):
        self.artifact_dir, self.threads = artifact_dir, threads

    def activate(self) -> None:
        import torch

        from edgeft import artifact
        from edgeft.models import from_artifact

        if self.threads:
            torch.set_num_threads(self.threads)
        self.model = from_artifact(artifact.load(self.artifact_dir))

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()


def _ort_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return onnxruntime.get_available_providers()


@dataclass(frozen=True)
class Backend:
    name: str
    model_file: str  # which file of an artifact it runs
    available: Callable[[], bool]
    make: Callable[[Path, Path | None, int | None], Runner]  # (model file, artifact dir, threads)
    description: str


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("ort-cuda", "model.onnx", lambda: "CUDAExecutionProvider" in _ort_providers(),
            lambda f, a, t: OrtRunner(f, "CUDAExecutionProvider", t), "ONNX Runtime, CUDA provider (onnxruntime-gpu)"),
    Backend("ort-trt", "model.onnx", lambda: "TensorrtExecutionProvider" in _ort_providers(),
            lambda f, a, t: OrtRunner(f, "TensorrtExecutionProvider", t), "ONNX Runtime, TensorRT provider"),
    Backend("ort-cpu", "model.onnx", lambda: "CPUExecutionProvider" in _ort_providers(),
            lambda f, a, t: OrtRunner(f, "CPUExecutionProvider", t), "ONNX Runtime on the CPU"),
    Backend("torch", "model.pt", lambda: importlib.util.find_spec("torch") is not None,
            lambda f, a, t: TorchRunner(a, t), "PyTorch eager (reference; needs torch and timm)"),
)}
# "auto" tries these in order: the GPU providers first, then ONNX Runtime on the CPU, then PyTorch.
AUTO_ORDER = ("ort-trt", "ort-cuda", "ort-cpu", "torch")


def lookup(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}{close_matches(name, BACKENDS)}; "
                          f"choose one of auto, {', '.join(BACKENDS)}")
    return BACKENDS[name]


def choose(name: str, files: dict[str, Path]) -> Backend:
    """The backend to use for the model files present; ``auto`` picks the first available in AUTO_ORDER."""
    if name != "auto":
        b = lookup(name)
        if b.model_file not in files:
            raise ConfigError(f"backend {name} runs {b.model_file}, which this artifact does not have "
                              f"(it has {', '.join(files) or 'no model file'})")
        if not b.available():
            raise DependencyError(f"backend {name} is not available here ({b.description}); run `edgeft doctor`")
        return b
    for candidate in AUTO_ORDER:
        b = BACKENDS[candidate]
        if b.model_file in files and b.available():
            return b
    raise DependencyError(f"no backend can run {', '.join(files) or 'this artifact'} here: install onnxruntime "
                          "(pip install 'edgeft[onnx]') or run `edgeft doctor`")
