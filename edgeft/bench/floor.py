"""The floor a model could reach on this CPU, so the gap between it and the measured latency is stated, not guessed.

Two bounds, each from the model's own graph and a measurement on this machine:
- compute: the model's multiply-accumulates (convolutions and matrix products, from ONNX shape inference) at the rate
  the same runtime and precision reach on a compute-friendly graph here (a stack of large 1x1 convolutions: the
  shape CPU kernels are tuned for, so no layer of a real network runs faster);
- memory: the bytes a call must move (the weights once, every convolution's output written and read once, at the
  precision it runs in) at the copy bandwidth measured here.

The floor is the larger of the two. It is a floor, not a forecast: depthwise convolutions, small layers and the
runtime's per-operator work keep a small network well above it; the profile (:mod:`edgeft.bench.profile`) says where.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

BYTES = {"int8": 1, "bf16": 2, "fp32": 4}
_PEAK_CHANNELS, _PEAK_SIZE, _PEAK_LAYERS = 256, 28, 4  # 4 x 51 M MACs: large enough for every kernel's fast path


@dataclass
class GraphCost:
    macs: int
    weight_bytes: int
    activation_bytes: int  # every convolution / matrix product output, written and read once


@dataclass
class Floor:
    model: str
    backend: str
    precision: str  # what the arithmetic runs in: int8, bf16, fp32
    cost: GraphCost
    peak_gmacs: float  # measured on the 1x1-convolution stack, same runtime and precision
    bandwidth_gbs: float  # measured copy bandwidth

    @property
    def compute_ms(self) -> float:
        return self.cost.macs / (self.peak_gmacs * 1e9) * 1e3

    @property
    def memory_ms(self) -> float:
        return (self.cost.weight_bytes + self.cost.activation_bytes) / (self.bandwidth_gbs * 1e9) * 1e3

    @property
    def floor_ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compute_ms": round(self.compute_ms, 4), "memory_ms": round(self.memory_ms, 4),
                "floor_ms": round(self.floor_ms, 4)}

    def text(self, p50_ms: float | None = None) -> str:
        bound = "compute" if self.compute_ms >= self.memory_ms else "memory"
        out = (f"floor about {self.floor_ms:.3f} ms ({bound}-bound): {self.cost.macs / 1e6:.0f} M MACs at "
               f"{self.peak_gmacs:.0f} G MAC/s ({self.precision} on {self.backend}, measured on large 1x1 convolutions "
               f"here) = {self.compute_ms:.3f} ms; {(self.cost.weight_bytes + self.cost.activation_bytes) / 1e6:.1f} "
               f"MB moved at {self.bandwidth_gbs:.1f} GB/s = {self.memory_ms:.3f} ms")
        if p50_ms:
            out += f"; the measured p50 is {p50_ms / self.floor_ms:.1f}x the floor"
        return out


def graph_cost(model: str | Path, shape: tuple[int, ...], precision: str) -> GraphCost:
    """MACs, weight bytes and activation traffic of an ONNX model at input ``shape``; ``precision``: what its
    convolutions compute in (the bytes each activation takes)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    m = onnx.load(str(model))
    inp = m.graph.input[0]
    for d, v in zip(inp.type.tensor_type.shape.dim, shape):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    m = shape_inference.infer_shapes(m)
    dims: dict[str, tuple[int, ...]] = {}
    for vi in [*m.graph.value_info, *m.graph.input, *m.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = tuple(d.dim_value for d in t.shape.dim)
    inits = {t.name: t for t in m.graph.initializer}
    for t in inits.values():
        dims[t.name] = tuple(t.dims)
    producer = {o: n for n in m.graph.node for o in n.output}

    def weight_shape(name: str) -> tuple[int, ...] | None:
        n = producer.get(name)  # a QDQ model's weight comes through a DequantizeLinear
        if n is not None and n.op_type == "DequantizeLinear":
            name = n.input[0]
        return dims.get(name)

    macs, act = 0, 0
    per = BYTES[precision]
    for n in m.graph.node:
        out = dims.get(n.output[0]) if n.output else None
        if not out or any(d <= 0 for d in out):
            continue
        if n.op_type in ("Conv", "QLinearConv", "ConvInteger"):
            w = weight_shape(n.input[3] if n.op_type == "QLinearConv" else n.input[1])
            if w:
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
                act += 2 * int(np.prod(out)) * per
        elif n.op_type in ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger"):
            a = dims.get(n.input[0])
            if a:
                macs += int(np.prod(out)) * int(a[-1])
                act += 2 * int(np.prod(out)) * per
    weights = sum(numpy_helper.to_array(t).nbytes for t in inits.values())
    return GraphCost(macs=macs, weight_bytes=int(weights), activation_bytes=act)


def _peak_graph(path: Path, int8: bool) -> None:
    """A stack of 1x1 convolutions (FP32, or INT8 QDQ as edgeft's quantizer writes it) at ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c, s, rng = _PEAK_CHANNELS, _PEAK_SIZE, np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(_PEAK_LAYERS):
        w = (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"y{i}"]))
        x = f"y{i}"
    g = helper.make_graph(nodes, "peak", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, s, s])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c, s, s])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    if not int8:
        onnx.save(model, str(path))
        return
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fp32 = path.with_name("fp32.onnx")
    onnx.save(model, str(fp32))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.random((1, c, s, s), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph: a stack of 1x1 convolutions needs none
    try:
        quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def peak_gmacs(backend: str, precision: str, threads: int, rounds: int = 5) -> float:
    """G MAC/s that ``backend`` reaches on the 1x1-convolution stack at ``precision`` here (the best of ``rounds``
    medians: a peak, so the least disturbed round)."""
    from edgeft.runtime.backends import lookup
    from edgeft.runtime.timing import time_calls

    with tempfile.TemporaryDirectory(prefix="edgeft-floor-") as tmp:
        path = Path(tmp) / "peak.onnx"
        _peak_graph(path, precision == "int8")
        runner = lookup(backend).make(path, None, threads)
        x = np.random.default_rng(1).random((1, _PEAK_CHANNELS, _PEAK_SIZE, _PEAK_SIZE), dtype=np.float32)
        with runner:
            best = min(time_calls(lambda: runner.infer(x), warmup=3, iters=10)["p50_ms"] for _ in range(rounds))
    macs = _PEAK_LAYERS * _PEAK_CHANNELS * _PEAK_CHANNELS * _PEAK_SIZE * _PEAK_SIZE
    return macs / (best / 1e3) / 1e9


def bandwidth_gbs(mb: int = 256, rounds: int = 5) -> float:
    """Copy bandwidth here in GB/s (bytes read plus written), the best of ``rounds`` copies of ``mb`` MB."""
    a = np.ones(mb * 2**20 // 4, dtype=np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)  # pages touched before timing
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best / 1e9


def floor(model: str | Path, shape: tuple[int, ...], backend: str, model_precision: str, threads: int) -> Floor:
    """The floor of ``model`` on ``backend`` here. ``model_precision``: int8 or fp32 (an FP32 model on ov-cpu-bf16
    computes in bf16)."""
    from edgeft.runtime.backends import lookup

    precision = "int8" if model_precision == "int8" else (lookup(backend).precision or "fp32")
    peak = peak_gmacs(backend, "int8" if precision == "int8" else "fp32", threads)
    return Floor(model=str(model), backend=backend, precision=precision, cost=graph_cost(model, shape, precision),
                 peak_gmacs=round(peak, 2), bandwidth_gbs=round(bandwidth_gbs(), 2))
