"""Where a model's time goes on the CPU (``edgeft profile``): every operator's time per call from ONNX Runtime's own
profiler, grouped as a kernel engineer reads a MobileNet-like network, beside the measured latency.

Groups: depthwise convolutions (one filter per channel: memory-bound), pointwise (1x1) convolutions and other
convolutions (compute-bound), matrix products (the head), elementwise and activations (Add, Mul, Sigmoid, HardSwish,
... not fused away), quantize/dequantize (Q/DQ left between INT8 kernels), layout (ONNX Runtime's NCHWc reorders,
Transpose, Reshape), pooling and reductions, and the rest. The profile is taken on the graph ONNX Runtime runs (its
fused operators: FusedConv, QLinearConv, ...), whose attributes decide a convolution's group. ``coverage``: the share of
each call's wall time (ONNX Runtime's ``model_run``) that its operators account for; the rest is the session's own
work (input binding, thread hand-offs), so a low coverage says the time is not in the kernels.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GROUPS = ("depthwise conv", "pointwise conv", "other conv", "matmul/gemm", "elementwise", "quantize/dequantize",
          "layout", "pool/reduce", "other")
_ELEMENTWISE = {"Add", "Mul", "Sub", "Div", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Swish", "Silu",
                "QuickGelu", "Gelu", "Tanh", "Sum", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "Cast", "Softmax",
                "QLinearSoftmax", "BatchNormalization", "Neg", "Exp", "Erf", "Pow", "Sqrt", "Min", "Max"}
_QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_LAYOUT = {"ReorderInput", "ReorderOutput", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat",
           "Split", "Slice", "Gather", "Identity", "Expand", "Pad", "Shape"}
_POOL = {"GlobalAveragePool", "AveragePool", "MaxPool", "QLinearGlobalAveragePool", "QLinearAveragePool",
         "ReduceMean", "ReduceSum", "ReduceMax", "GlobalMaxPool"}
_MATMUL = {"MatMul", "Gemm", "QLinearMatMul", "MatMulInteger", "FusedMatMul", "MatMulIntegerToFloat", "QGemm"}
_CONV = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NhwcFusedConv", "ConvTranspose"}


@dataclass
class OpTime:
    name: str
    op: str
    group: str
    us: float  # per call, the median over the profiled calls


@dataclass
class Profile:
    """One model's operator times on one backend."""

    model: str
    backend: str
    threads: int
    calls: int
    run_us: float  # the median call's wall time, as the profiler saw it
    ops: list[OpTime] = field(default_factory=list)

    @property
    def kernel_us(self) -> float:
        return float(sum(o.us for o in self.ops))

    @property
    def coverage(self) -> float:
        return self.kernel_us / self.run_us if self.run_us else 0.0

    def groups(self) -> dict[str, dict[str, float]]:
        """Per group: microseconds per call, its share of the call, and how many operators."""
        out = {}
        for g in GROUPS:
            members = [o for o in self.ops if o.group == g]
            if members:
                us = sum(o.us for o in members)
                out[g] = {"us": round(us, 1), "share": round(us / self.run_us, 4) if self.run_us else 0.0,
                          "ops": len(members)}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "threads": self.threads, "calls": self.calls,
                "run_us": round(self.run_us, 1), "kernel_us": round(self.kernel_us, 1),
                "coverage": round(self.coverage, 4), "groups": self.groups(),
                "top": [{"name": o.name, "op": o.op, "group": o.group, "us": round(o.us, 1)}
                        for o in sorted(self.ops, key=lambda o: -o.us)[:15]]}

    def text(self) -> str:
        lines = [f"{Path(self.model).name} on {self.backend} ({self.threads} threads, {self.calls} calls): "
                 f"{self.run_us / 1000:.3f} ms a call, operators {self.kernel_us / 1000:.3f} ms "
                 f"({self.coverage:.0%} of it)"]
        for g, v in sorted(self.groups().items(), key=lambda kv: -kv[1]["us"]):
            lines.append(f"  {g:<20} {v['us'] / 1000:>8.3f} ms  {v['share']:>6.1%}  ({v['ops']} ops)")
        return "\n".join(lines)


def group_of(op: str, attrs: dict[str, Any], weight_shape: tuple[int, ...] | None) -> str:
    """The group of one operator of the optimized graph (its type, attributes and, for a convolution, the weight's
    shape: group > 1 with one input channel per group is depthwise, a 1x1 kernel pointwise)."""
    if op in _CONV:
        group = int(attrs.get("group", 1))
        kernel = tuple(attrs.get("kernel_shape") or (weight_shape[2:] if weight_shape else ()))
        if group > 1 and (weight_shape is None or weight_shape[1] == 1):
            return "depthwise conv"
        if kernel and all(k == 1 for k in kernel):
            return "pointwise conv"
        return "other conv"
    if op in _MATMUL:
        return "matmul/gemm"
    if op in _QDQ:
        return "quantize/dequantize"
    if op in _LAYOUT:
        return "layout"
    if op in _POOL:
        return "pool/reduce"
    if op in _ELEMENTWISE:
        return "elementwise"
    return "other"


def _graph_ops(optimized: Path) -> dict[str, tuple[str, dict[str, Any], tuple[int, ...] | None]]:
    """name -> (op type, attributes, conv weight shape) of the graph ONNX Runtime ran."""
    import onnx
    from onnx import helper

    m = onnx.load(str(optimized), load_external_data=False)
    shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        w = n.input[3] if n.op_type == "QLinearConv" and len(n.input) > 3 else (n.input[1] if len(n.input) > 1 else "")
        out[n.name] = (n.op_type, attrs, shapes.get(w))
    return out


def profile_ort(model: str | Path, shape: tuple[int, ...], threads: int = 2, calls: int = 200,
                warmup: int = 20) -> Profile:
    """``calls`` profiled calls of ``model`` (an ONNX file) on ONNX Runtime's CPU provider, after ``warmup``."""
    from edgeft.runtime.timing import ort_session

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="edgeft-profile-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        sess = ort_session(str(model), threads, profile_prefix=str(Path(tmp) / "ort"), optimized_path=str(optimized))
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(warmup + calls):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
        graph = _graph_ops(optimized)
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[warmup:]
    if not runs:
        from edgeft.errors import EdgeftError

        raise EdgeftError(f"ONNX Runtime's profile of {model} has no calls; nothing to report")
    starts = np.array([r["ts"] for r in runs])
    ends = starts + np.array([r["dur"] for r in runs])
    per_node: dict[str, list[float]] = {}
    op_names: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        k = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if k < 0 or e["ts"] > ends[k]:
            continue  # a warm-up call's
        name = e["name"].removesuffix("_kernel_time")
        per_node.setdefault(name, [0.0] * len(runs))[k] += float(e["dur"])
        op_names[name] = (e.get("args") or {}).get("op_name") or "?"
    ops = []
    for name, durations in per_node.items():
        op_type, attrs, w = graph.get(name, (op_names[name], {}, None))
        ops.append(OpTime(name, op_names[name], group_of(op_type, attrs, w), float(statistics.median(durations))))
    return Profile(model=str(model), backend="ort-cpu", threads=threads, calls=len(runs),
                   run_us=float(statistics.median(r["dur"] for r in runs)), ops=ops)
