"""Run a TensorRT engine artifact (TensorRT 10 tensor API; 8.6 via bindings), refusing a stale engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.runtime.backends import Runner


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, engine_path: Path, artifact_dir: Path | None):
        self.engine_path, self.artifact_dir = engine_path, artifact_dir

    def activate(self) -> None:
        import torch  # device buffers and the stream come from torch's CUDA runtime

        from edgeft import artifact
        from edgeft.tensorrt.build import check_compatible, current_device, trt_module

        trt = trt_module()
        if self.artifact_dir is not None:
            built_for = artifact.load(self.artifact_dir).meta.extra.get("engine", {})
            check_compatible(built_for, current_device(trt.__version__))
        self.trt, self.torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            from edgeft.errors import ArtifactError

            raise ArtifactError(f"TensorRT could not load {self.engine_path}; rebuild it with `edgeft build`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = torch.cuda.Stream()

    def infer(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        xd = torch.from_numpy(np.ascontiguousarray(x)).to("cuda")
        self.context.set_input_shape(self.input, tuple(xd.shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output))
        yd = torch.empty(out_shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input, int(xd.data_ptr()))
        self.context.set_tensor_address(self.output, int(yd.data_ptr()))
        with torch.cuda.stream(self.stream):
            ok = self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        if not ok:
            raise RuntimeError("TensorRT execution failed")
        return yd.cpu().numpy()

    def deactivate(self) -> None:
        self.context = self.engine = None
