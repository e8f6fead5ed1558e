"""OpenVINO: the CPU (and Intel GPU) runtime of line PCs without an NVIDIA GPU, from the same ONNX artifact.

OpenVINO reads edgeft's ONNX files unchanged, FP32 and INT8 QDQ alike. The runner compiles for one device with
FP32 inference precision (``ov-cpu``): on CPUs with bf16 units OpenVINO would otherwise run FP32 models in bf16, which
moves the logits further than the FP32 parity rule allows and is a precision the user did not ask for. bf16 is a
backend of its own (``ov-cpu-bf16``), asked for by name, measured like any other, and available only where the CPU
has a bf16 unit (OpenVINO's ``OPTIMIZATION_CAPABILITIES`` lists BF16). ``openvino`` is imported only when a runner
activates or availability is asked, never by ``import edgeft``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import ArtifactError, ConfigError, DependencyError
from edgeft.runtime.runner import ONNX_META_KEY, Runner

DEVICES = {"ov-cpu": "CPU", "ov-gpu": "GPU"}


def ov_module():
    """Import openvino with an actionable error."""
    try:
        import openvino
    except ImportError:
        raise DependencyError("OpenVINO is not installed: pip install 'edgeft[openvino]'") from None
    return openvino


@functools.lru_cache(maxsize=1)
def available_devices() -> tuple[str, ...]:
    """OpenVINO's devices here (CPU, GPU, NPU, ...); empty when OpenVINO is not installed or cannot start.
    Asked once per process: starting an OpenVINO Core costs ~60 ms here, and bench asks before every row and round."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return ()
    try:
        return tuple(ov_module().Core().available_devices)
    except RuntimeError:
        return ()


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin can run natively here (FP32, INT8, BF16, ...); empty without OpenVINO."""
    if "CPU" not in available_devices():
        return ()
    try:
        return tuple(ov_module().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:
        return ()


class OpenVINORunner(Runner):
    """An ONNX model compiled by OpenVINO for ``device`` (``CPU``, ``GPU``, ``GPU.1`` ...), batch 1 latency hint, at
    ``precision`` (``f32``; ``bf16`` on a CPU with a bf16 unit)."""

    def __init__(self, path: Path, device: str = "CPU", threads: int | None = None, precision: str = "f32"):
        self.path, self.device, self.threads, self.precision = Path(path), device, threads, precision
        self.name = ("ov-cpu" if device == "CPU" else "ov-gpu") + ("-bf16" if precision == "bf16" else "")
        self.model = self.compiled = self.request = None

    def activate(self) -> None:
        ov = ov_module()
        core = ov.Core()
        devices = list(core.available_devices)
        if self.device.split(".")[0] not in {d.split(".")[0] for d in devices}:
            raise ConfigError(f"OpenVINO has no device {self.device!r} here (available: {', '.join(devices) or 'none'})"
                              "; use ov-cpu, or install the device's driver")
        try:
            self.model = core.read_model(str(self.path))
        except RuntimeError as e:  # an op its ONNX frontend cannot read, or a file that is no ONNX model
            raise ArtifactError(f"OpenVINO cannot read {self.path}: {_first_line(e)}; run it on ort-cpu instead") \
                from None
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
        if self.threads and self.device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            self.compiled = core.compile_model(self.model, self.device, config)
        except RuntimeError as e:
            raise ArtifactError(f"OpenVINO cannot compile {self.path} for {self.device}: {_first_line(e)}; run it on "
                                "ort-cpu instead") from None
        self.request = self.compiled.create_infer_request()
        self._tensor = ov.Tensor
        batch = self.model.inputs[0].partial_shape[0]
        self.fixed_batch = batch.get_length() if batch.is_static else None

    def _run(self, x: np.ndarray) -> None:
        """One synchronous call on ``x``, handed to OpenVINO as a tensor over the array's own memory (no copy) and
        run without the dictionary of inputs and outputs that ``infer({0: x})`` builds and converts in Python: that
        path cost 34 us more per call on a 2-core EPYC (a no-op graph: 70 against 36 us), 4-5% of ELPV's 6 ms anomaly
        graphs (benchmarks/ov_call_path.py, docs/experiments.md)."""
        self._input = np.ascontiguousarray(x, dtype=np.float32)  # kept alive while the request's tensor points at it
        self.request.set_input_tensor(self._tensor(self._input, shared_memory=True))
        self.request.infer()

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch and len(x) != self.fixed_batch:
            return np.concatenate([self.infer(x[i:i + self.fixed_batch]) for i in range(0, len(x), self.fixed_batch)])
        self._run(x)
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def infer_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        if self.fixed_batch and len(x) != self.fixed_batch:
            runs = [self.infer_outputs(x[i:i + self.fixed_batch]) for i in range(0, len(x), self.fixed_batch)]
            return [np.concatenate(parts) for parts in zip(*runs)]
        self._run(x)
        return [np.array(self.request.get_output_tensor(k).data, copy=True)
                for k in range(len(self.request.model_outputs))]

    def metadata(self) -> dict[str, Any] | None:
        """The edgeft metadata (class names, input contract) the ONNX file carries, as OpenVINO read it."""
        key = ["framework", ONNX_META_KEY]
        if self.model is None or not self.model.has_rt_info(key):
            return None
        return json.loads(self.model.get_rt_info(key).astype(str))

    def deactivate(self) -> None:
        self.request = self.compiled = self.model = self._input = None


def _first_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and not line.startswith("Exception from")]
    return (lines[0] if lines else type(e).__name__)[:240]
