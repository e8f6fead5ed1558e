"""Run a TensorRT engine artifact (TensorRT 10 tensor API), refusing a stale engine; and what an engine is tied
to (the GPU and the TensorRT version), which the build stage records and this runner checks.

``tensorrt`` is imported only when a function runs, never by ``import edgeft``."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import ArtifactError, DependencyError
from edgeft.runtime.runner import Runner

MIN_VERSION = (8, 6)


def trt_module():
    """Import tensorrt, with a version floor and an actionable error."""
    try:
        import tensorrt as trt
    except ImportError:
        raise DependencyError("TensorRT is not installed: it comes with JetPack on Jetson and from NVIDIA's "
                              "containers or index on x86 GPU machines; `edgeft doctor` shows what is here") from None
    if version_tuple(trt.__version__) < MIN_VERSION:
        raise DependencyError(f"TensorRT {trt.__version__} is older than {'.'.join(map(str, MIN_VERSION))}, "
                              "the oldest this edgeft builds with")
    return trt


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


@dataclass(frozen=True)
class Device:
    gpu: str
    compute_capability: str
    tensorrt: str
    l4t: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_device(tensorrt_version: str) -> Device:
    """The GPU (name, compute capability) this process would run an engine on."""
    name = cc = ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            name, cc = [s.strip() for s in out.stdout.strip().splitlines()[0].split(",")[:2]]
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    if not name:  # Jetson has no nvidia-smi with these fields; torch knows the integrated GPU
        try:
            import torch

            if torch.cuda.is_available():
                name = torch.cuda.get_device_name(0)
                cc = "%d.%d" % torch.cuda.get_device_capability(0)
        except ImportError:
            pass
    tegra = Path("/etc/nv_tegra_release")
    l4t = tegra.read_text(errors="ignore").splitlines()[0].strip() if tegra.exists() else None
    if not name:
        raise DependencyError("no NVIDIA GPU found (nvidia-smi and torch.cuda see none); TensorRT engines are built "
                              "and run on the target GPU")
    return Device(gpu=name, compute_capability=cc, tensorrt=tensorrt_version, l4t=l4t)


def check_compatible(built_for: dict[str, Any], here: Device) -> None:
    """Refuse an engine built for another GPU or TensorRT version (engines are not portable)."""
    problems = []
    if built_for.get("tensorrt") != here.tensorrt:
        problems.append(f"TensorRT {built_for.get('tensorrt')} (here {here.tensorrt})")
    if built_for.get("compute_capability") != here.compute_capability or built_for.get("gpu") != here.gpu:
        problems.append(f"GPU {built_for.get('gpu')} sm {built_for.get('compute_capability')} "
                        f"(here {here.gpu} sm {here.compute_capability})")
    if problems:
        raise ArtifactError("this engine was built for " + " and ".join(problems) + "; rebuild it on this device with "
                            "`edgeft build` from the ONNX artifact in its lineage")


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine_path: Path, artifact_dir: Path | None):
        self.engine_path, self.artifact_dir = engine_path, artifact_dir

    def activate(self) -> None:
        import torch  # device buffers and the stream come from torch's CUDA runtime

        from edgeft import artifact

        trt = trt_module()
        if self.artifact_dir is not None:
            built_for = artifact.load(self.artifact_dir).meta.extra.get("engine", {})
            check_compatible(built_for, current_device(trt.__version__))
        self.trt, self.torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not load {self.engine_path}; rebuild it with `edgeft build`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        # every output is bound (an anomaly graph has two: score and heatmap), in the engine's order
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.infer_outputs(x)[0]

    def infer_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        xd = torch.from_numpy(np.ascontiguousarray(x)).to("cuda")
        self.context.set_input_shape(self.input, tuple(xd.shape))
        self.context.set_tensor_address(self.input, int(xd.data_ptr()))
        outs = []
        for name in self.outputs:
            yd = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, int(yd.data_ptr()))
            outs.append(yd)
        with torch.cuda.stream(self.stream):
            ok = self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        if not ok:
            raise RuntimeError("TensorRT execution failed")
        return [y.cpu().numpy() for y in outs]

    def deactivate(self) -> None:
        self.context = self.engine = None
