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
from typing import Any, Callable

import numpy as np

from edgeft.errors import ArtifactError, ConfigError, DependencyError, close_matches
from edgeft.runtime.runner import ONNX_META_KEY, Runner


class OrtRunner(Runner):
    def __init__(self, path: Path, provider: str, threads: int | None = None):
        self.path, self.provider, self.threads = path, provider, threads
        self.name = {"CPUExecutionProvider": "ort-cpu", "CUDAExecutionProvider": "ort-cuda",
                     "TensorrtExecutionProvider": "ort-trt"}[provider]
        self.session = None

    def activate(self) -> None:
        from edgeft.runtime.timing import ort_session

        self.session = ort_session(str(self.path), self.threads or os.cpu_count() or 1, (self.provider,))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch and len(x) != self.fixed_batch:
            return np.concatenate([self.session.run(None, {self.input_name: x[i:i + self.fixed_batch]})[0]
                                   for i in range(0, len(x), self.fixed_batch)])
        return self.session.run(None, {self.input_name: x})[0]

    def infer_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        if self.fixed_batch and len(x) != self.fixed_batch:
            runs = [self.session.run(None, {self.input_name: x[i:i + self.fixed_batch]})
                    for i in range(0, len(x), self.fixed_batch)]
            return [np.concatenate(parts) for parts in zip(*runs)]
        return self.session.run(None, {self.input_name: x})

    def deactivate(self) -> None:
        self.session = None

    def metadata(self) -> dict | None:
        import json

        raw = self.session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY) if self.session else None
        return json.loads(raw) if raw else None


class TorchRunner(Runner):
    """PyTorch eager: the reference on the CPU; on CUDA also device-side timing with events and CUDA graphs."""

    def __init__(self, artifact_dir: Path, threads: int | None = None, device: str = "cpu"):
        self.artifact_dir, self.threads, self.device = artifact_dir, threads, device
        self.name = "torch" if device == "cpu" else "torch-cuda"

    def activate(self) -> None:
        import torch

        from edgeft import artifact
        from edgeft.runtime.torch_model import from_artifact

        if self.threads:
            torch.set_num_threads(self.threads)
        self.model = from_artifact(artifact.load(self.artifact_dir)).to(self.device)
        if self.device != "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.infer_outputs(x)[0]

    def infer_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.model(torch.from_numpy(x).to(self.device))
        return [o.float().cpu().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    def gpu_times_ms(self, x: np.ndarray, iters: int, cuda_graph: bool = False) -> list[float]:
        """Device time per forward pass from CUDA events (host overhead excluded); replayed as a CUDA graph if asked."""
        import torch

        xd = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
        run = lambda: self.model(xd)  # noqa: E731
        with torch.no_grad():
            if cuda_graph:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        self.model(xd)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.model(xd)
                run = graph.replay
            times = []
            for _ in range(iters):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        return times

    def device_memory_mb(self) -> dict[str, float]:
        import torch

        free, total = torch.cuda.mem_get_info()
        return {"allocator_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "device_used_mb": round((total - free) / 2**20, 1), "device_total_mb": round(total / 2**20, 1)}


def _torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and _torch_cuda()


def _tensorrt_runner(f: Path, a: Path | None, t: int | None) -> Runner:
    from edgeft.runtime.tensorrt import TensorRTRunner

    return TensorRTRunner(f, a)


def _openvino_runner(device: str, precision: str = "f32"):
    def make(f: Path, a: Path | None, t: int | None) -> Runner:
        from edgeft.runtime.openvino import OpenVINORunner

        return OpenVINORunner(f, device, t, precision)
    return make


def _openvino_bf16() -> bool:
    from edgeft.runtime.openvino import cpu_capabilities

    return "BF16" in cpu_capabilities()


def _no_bf16() -> str:
    """Why ov-cpu-bf16 cannot run here, naming what is missing."""
    from edgeft.host import BF16_UNITS, cpu_model
    from edgeft.runtime.openvino import available_devices

    if "CPU" not in available_devices():
        return "OpenVINO is not installed (pip install 'edgeft[openvino]')"
    return (f"this CPU ({cpu_model() or 'unknown'}) has no bf16 unit (none of {', '.join(f for f, _ in BF16_UNITS)} "
            "in its flags), so OpenVINO would emulate bf16 slower than FP32; use ov-cpu or ort-cpu")


def _openvino(device: str) -> Callable[[], bool]:
    def available() -> bool:
        from edgeft.runtime.openvino import available_devices

        return any(d.split(".")[0] == device for d in available_devices())
    return available


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
    missing: Callable[[], str] | None = None  # why it is not available here, when a description alone cannot say
    precision: str | None = None  # a reduced precision it computes an FP32 model in (bf16), judged by its parity rule

    def why_not(self) -> str:
        """Why it cannot run here, naming what is missing; empty when it can."""
        if self.available():
            return ""
        return self.missing() if self.missing is not None else self.description

    def require(self) -> "Backend":
        """This backend, or one line saying why it is not available here."""
        why = self.why_not()
        if why:
            raise DependencyError(f"backend {self.name} is not available here ({why}); run `edgeft doctor`")
        return self


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("tensorrt", "model.engine", _tensorrt, _tensorrt_runner, "TensorRT engine (native; needs tensorrt)"),
    Backend("ort-cuda", "model.onnx", lambda: "CUDAExecutionProvider" in _ort_providers(),
            lambda f, a, t: OrtRunner(f, "CUDAExecutionProvider", t), "ONNX Runtime, CUDA provider (onnxruntime-gpu)"),
    Backend("ort-trt", "model.onnx", lambda: "TensorrtExecutionProvider" in _ort_providers(),
            lambda f, a, t: OrtRunner(f, "TensorrtExecutionProvider", t), "ONNX Runtime, TensorRT provider"),
    Backend("ort-cpu", "model.onnx", lambda: "CPUExecutionProvider" in _ort_providers(),
            lambda f, a, t: OrtRunner(f, "CPUExecutionProvider", t), "ONNX Runtime on the CPU"),
    Backend("ov-cpu", "model.onnx", _openvino("CPU"), _openvino_runner("CPU"),
            "OpenVINO on the CPU (pip install 'edgeft[openvino]')"),
    Backend("ov-cpu-bf16", "model.onnx", _openvino_bf16, _openvino_runner("CPU", "bf16"),
            "OpenVINO on the CPU at bf16 inference precision (a CPU with a bf16 unit)", _no_bf16, "bf16"),
    Backend("ov-gpu", "model.onnx", _openvino("GPU"), _openvino_runner("GPU"),
            "OpenVINO on an Intel GPU (openvino and the GPU's driver)"),
    Backend("torch", "model.pt", lambda: importlib.util.find_spec("torch") is not None,
            lambda f, a, t: TorchRunner(a, t), "PyTorch eager (reference; needs torch and timm)"),
    Backend("torch-cuda", "model.pt", _torch_cuda, lambda f, a, t: TorchRunner(a, t, device="cuda"),
            "PyTorch eager on an NVIDIA GPU"),
)}
# "auto" tries these in order: the NVIDIA GPU runtimes first, then the CPU runtimes (ONNX Runtime, OpenVINO: the one
# measured fastest for the model on this machine, when a measurement exists), OpenVINO on an Intel GPU, PyTorch.
AUTO_ORDER = ("tensorrt", "ort-trt", "ort-cuda", "ort-cpu", "ov-cpu", "ov-gpu", "torch-cuda", "torch")
CPU_BACKENDS = ("ort-cpu", "ov-cpu")
# The CPU paths (runtime x precision) a model is chosen among by the search and the ship step, and profiled on. No
# ONNX Runtime bf16: its CPU provider has no bf16 convolution (a bf16 Conv graph fails "NOT_IMPLEMENTED", ORT 1.32)
# and no x86 bf16 fast-math option (ARM64 only), so bf16 is OpenVINO's.
CPU_PATHS = ("ort-cpu", "ov-cpu", "ov-cpu-bf16")


def lookup(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}{close_matches(name, BACKENDS)}; "
                          f"choose one of auto, {', '.join(BACKENDS)}")
    return BACKENDS[name]


def choose(name: str, files: dict[str, Path], measured: dict[str, Any] | None = None) -> Backend:
    """The backend to use for the model files present; ``auto`` picks the first available in AUTO_ORDER, and on
    the CPU the runtime ``measured`` fastest for this model on this machine (an artifact's ``cpu_runtime`` record,
    written by ``edgeft bench``: :func:`edgeft.bench.harness.fastest_cpu_runtimes`)."""
    return choose_with_reason(name, files, measured)[0]


KIND_DEFAULT = {"torch": "torch", "onnx": "ort-cpu", "engine": "tensorrt"}  # the runtime a model kind is scored on


def scored_on(policy: Any, backend: str | None, kind: str = "onnx") -> Any:
    """``policy`` (a ``decision.Policy``) marked as chosen on ``backend``'s scores when that is another runtime than
    its model kind's default: that runtime rounds otherwise, so the camera's ``auto`` runs the model there."""
    from dataclasses import replace

    if backend in BACKENDS and backend != KIND_DEFAULT.get(kind):
        return replace(policy, scored_with=backend)
    return policy


def runtime_record(backend: str, model_precision: str, **measured: Any) -> dict[str, Any]:
    """What an artifact records about the runtime it ships on (``meta.json`` extra ``runtime``): the backend, the
    model's precision and the one it computes in there, the machine it was chosen on, and how it measured."""
    b = lookup(backend)
    return {"backend": backend, "model_precision": model_precision, "inference_precision": b.precision or
            model_precision, "machine": machine_key(), **measured}


def choose_with_reason(name: str, files: dict[str, Path], measured: dict[str, Any] | None = None,
                       scored_with: str | None = None, recorded: dict[str, Any] | None = None) -> tuple[Backend, str]:
    """:func:`choose`, and in words why that backend (for ``auto``). ``recorded``: the artifact's runtime record
    (:func:`runtime_record`, the search's choice); ``scored_with``: the backend the model's operating point was chosen
    on (its policy's). ``auto`` runs the recorded (else the scored) backend where it can, and says why not where it
    cannot; another backend asked for by name runs, with the reason saying decisions near the threshold may differ."""
    pinned = (recorded or {}).get("backend") or scored_with
    if pinned and pinned in BACKENDS:
        s = BACKENDS[pinned]
        if recorded and recorded.get("backend") == pinned:
            why = (f"the artifact ships on {pinned} ({recorded.get('model_precision', '?')} model, "
                   f"{recorded.get('inference_precision', '?')} inference), its operating point chosen on its scores")
        else:
            why = f"its operating point was chosen on {pinned}'s {s.precision or 'own'} scores"
        if name == "auto" and s.available() and s.model_file in files:
            where = (recorded or {}).get("machine")
            if where and where != machine_key():
                why += (f"; chosen as fastest on {where}, not this machine ({machine_key()}): `edgeft bench --backend "
                        f"{pinned}` measures it here")
            return s, why
        if name == "auto":
            missing = s.why_not() or "it cannot run this file"
            b, reason = choose_with_reason(name, files, measured)
            return b, f"{why}, which cannot run here ({missing}): decisions near the threshold may differ; {reason}"
        if name != pinned:
            b, _ = choose_with_reason(name, files)
            return b, f"asked for; {why}: decisions near the threshold may differ on {name}"
    if name != "auto":
        b = lookup(name)
        if b.model_file not in files:
            raise ConfigError(f"backend {name} runs {b.model_file}, which this artifact does not have "
                              f"(it has {', '.join(files) or 'no model file'})")
        return b.require(), "asked for"
    first = next((BACKENDS[c] for c in AUTO_ORDER if BACKENDS[c].model_file in files and BACKENDS[c].available()),
                 None)
    if first is None:
        raise DependencyError(f"no backend can run {', '.join(files) or 'this artifact'} here: install onnxruntime "
                              "(pip install 'edgeft[runtime]' or 'edgeft[gpu]') or run `edgeft doctor`")
    if first.name not in CPU_BACKENDS:
        return first, "the first of the automatic order available here"
    record = (measured or {}).get(machine_key())
    if not record:
        why = "no CPU runtime measurement for this machine" if measured else "no CPU runtime measured for this model"
        return first, f"{why} (edgeft bench with --backend ort-cpu --backend ov-cpu records one); default order"
    fastest = BACKENDS.get(record["fastest"])
    if fastest is None or not fastest.available() or fastest.model_file not in files:
        return first, f"measured fastest here was {record['fastest']}, which is not available now; default order"
    return fastest, (f"measured fastest on this machine: {record['fastest']}, median of {record['rounds']} paired "
                     f"rounds {record['ratio']:.2f}x ({record['measured']})")


def int8_note(backend: str, extra: dict[str, Any]) -> str:
    """A warning for an INT8 model (uint8 activations) about to run on ONNX Runtime on a CPU without VNNI or AMX, when
    its numbers were measured on another machine (``extra``: its meta.json extra; ``measured_on`` as the quantize
    stage records it, else the machine its runtime was chosen on): ONNX Runtime's INT8 kernels saturate there and
    can move the scores far (:func:`edgeft.host.int8_may_saturate`). Empty otherwise."""
    from edgeft.host import int8_may_saturate

    where, here = extra.get("measured_on") or (extra.get("runtime") or {}).get("machine"), machine_key()
    if backend != "ort-cpu" or extra.get("quantized") != "int8" or extra.get("target") == "tensorrt" \
            or not where or where == here or not int8_may_saturate():
        return ""
    return (f"its INT8 numbers were measured on {where}; this CPU ({here}) has no INT8 dot-product unit, on "
            "which ONNX Runtime's INT8 kernels can saturate and move the scores: re-score it here (`edgeft eval "
            "--backend ort-cpu`) or run it on ov-cpu")


def machine_key() -> str:
    """The machine a CPU runtime measurement belongs to: its CPU model, core count, and the units its INT8 and bf16
    run on (one model name covers CPUs with and without them, which rank the runtimes differently)."""
    from edgeft.host import cpu_model, unit_flags

    return f"{cpu_model() or 'unknown CPU'} x{os.cpu_count()} ({', '.join(unit_flags()) or 'no INT8 or bf16 unit'})"


def model_files(spec: str) -> tuple[dict[str, Path], Path | None, tuple[int, ...] | None]:
    """Model files of an artifact directory or a bare .onnx file, its directory, and its C,H,W when known."""
    p = Path(spec)
    if p.is_dir():
        from edgeft import artifact

        a = artifact.load(p)
        return {a.meta.model_file: a.model_path}, p, (a.meta.input.channels, *a.meta.input.size)
    if p.is_file() and p.suffix == ".onnx":
        return {"model.onnx": p}, None, None
    if p.is_file() and p.suffix in (".engine", ".plan"):
        return {"model.engine": p}, None, None
    raise ArtifactError(f"model not found: {p}; pass an artifact directory or a .onnx file")
