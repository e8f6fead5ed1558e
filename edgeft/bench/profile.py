"""Where a model's time goes on the CPU (``edgeft profile``): every operator's time per call from the runtime's own
profiler (ONNX Runtime's profiler, OpenVINO's per-layer counters), grouped as a kernel engineer reads a MobileNet-like
network, beside the latency measured without profiling, and the floor this CPU could reach for the model.

Groups: depthwise convolutions (one filter per channel: memory-bound), pointwise (1x1) convolutions and other
convolutions (compute-bound), matrix products (the head), elementwise and activations (Add, Mul, Sigmoid, HardSwish,
... not fused away), quantize/dequantize (Q/DQ left between INT8 kernels), layout (ONNX Runtime's NCHWc reorders,
OpenVINO's Reorder, Transpose, Reshape), pooling and reductions, input/output (OpenVINO's Parameter and Result copies)
and the rest. The ONNX Runtime profile is taken on the graph it runs (its fused operators: FusedConv, QLinearConv,
...), whose attributes decide a convolution's group; OpenVINO's layers are matched to the ONNX graph by name.

``coverage``: the share of each profiled call's wall time that its operators account for, the median over the calls
(one call against itself: a host that changes speed between calls moves both alike; OpenVINO's counters keep only an
average per layer, so there it is their sum over the same calls' average wall time); the rest is the runtime's own
work. Part of that is what any call costs it (binding the input, starting its threads, handing back an output):
``call_us``, a no-op graph with the same input timed the same way (ONNX Runtime's run events; OpenVINO's calls as
the runner makes them); the remainder is its work between operators. Beside it, the p50 measured **without**
profiling (the same model on the same runtime, timed in the same process right after the profiled calls, the
profiled model released first: an idle session's or compiled model's worker threads spin and would contend): how
much the profiler itself adds.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPORT_FILE = "profile.json"  # where the optimize bench step keeps the final model's profile and floor
OVER_100 = "over 100%: the runtime ran independent operators at once"  # what a share above 100% means

GROUPS = ("depthwise conv", "pointwise conv", "other conv", "matmul/gemm", "elementwise", "quantize/dequantize",
          "layout", "pool/reduce", "input/output", "other")
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
    us: float  # per call over the profiled calls: their median (ONNX Runtime), their average (OpenVINO)


def statistic(backend: str) -> str:
    """Which statistic over the profiled calls a profile on ``backend`` gives: ONNX Runtime's profiler times every
    call, OpenVINO's counters keep an average per layer."""
    return "average" if backend.startswith("ov-") else "median"


@dataclass
class Profile:
    """One model's operator times on one backend."""

    model: str
    backend: str
    threads: int
    calls: int
    run_us: float  # a profiled call's wall time: the median (ONNX Runtime), the average (OpenVINO, whose counters are)
    p50_us: float  # the median call without profiling, same runtime, same process
    coverage: float  # the share of a profiled call its operators account for: the median over the calls of each
    # call's share (ONNX Runtime's events are per call); OpenVINO's averages over the calls' average wall time
    ops: list[OpTime] = field(default_factory=list)
    call_us: float | None = None  # a call that does no work (a no-op graph with this input), timed as run_us is

    @property
    def kernel_us(self) -> float:
        return float(sum(o.us for o in self.ops))

    @property
    def call_share(self) -> float:
        """The share of a profiled call that a call doing no work takes (at most what its operators leave)."""
        if self.call_us is None or not self.run_us:
            return 0.0
        return min(self.call_us / self.run_us, max(1 - self.coverage, 0.0))

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
                "run_us": round(self.run_us, 1), "p50_us": round(self.p50_us, 1), "kernel_us": round(self.kernel_us, 1),
                "coverage": round(self.coverage, 4), "groups": self.groups(),
                "call_us": round(self.call_us, 1) if self.call_us is not None else None,
                "top": [{"name": o.name, "op": o.op, "group": o.group, "us": round(o.us, 1)}
                        for o in sorted(self.ops, key=lambda o: -o.us)[:15]]}

    def text(self) -> str:
        path = Path(self.model)
        name = path.parent.name if path.name == "model.onnx" else path.name  # an artifact's folder names it
        lines = [f"{name} on {self.backend} ({self.threads} threads, {self.calls} calls): p50 "
                 f"{self.p50_us / 1000:.3f} ms unprofiled, {self.run_us / 1000:.3f} ms profiled; operators "
                 f"{self.kernel_us / 1000:.3f} ms, {self.coverage:.0%} of a profiled call"
                 + (f" ({OVER_100})" if self.coverage > 1 else "")
                 + (f"; a call that does no work {self.call_us / 1000:.3f} ms ({self.call_share:.0%}: together "
                    f"{self.coverage + self.call_share:.0%})" if self.call_us is not None else "")]
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
    """name -> (op type, attributes, conv weight shape) of a graph's operators, by node name and by first output name
    (ONNX Runtime's profile names the nodes of the graph it ran; OpenVINO names its layers after either)."""
    import onnx
    from onnx import helper

    m = onnx.load(str(optimized), load_external_data=False)
    shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        w = n.input[3] if n.op_type == "QLinearConv" and len(n.input) > 3 else (n.input[1] if len(n.input) > 1 else "")
        out[n.name] = (n.op_type, attrs, shapes.get(w))
        if n.output:
            out.setdefault(n.output[0], out[n.name])
    return out


def noop_model(shape: tuple[int, ...], path: Path) -> Path:
    """An ONNX graph that reads an input of ``shape`` and returns one element of it: timed on a runtime, what a call
    costs it when the model does no work (binding the input, starting its threads, handing back an output)."""
    import onnx
    from onnx import TensorProto, helper

    rank = len(shape)
    graph = helper.make_graph(
        [helper.make_node("Slice", ["x", "starts", "ends"], ["y"])], "noop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1] * rank)],
        [helper.make_tensor("starts", TensorProto.INT64, [rank], [0] * rank),
         helper.make_tensor("ends", TensorProto.INT64, [rank], [1] * rank)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _ort_runs(sess, feed, warmup: int, calls: int, profile_file
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every profile event, the ``model_run`` events of the ``calls`` profiled calls after ``warmup``, in order)."""
    for _ in range(warmup + calls):
        sess.run(None, feed)
    events = json.loads(Path(profile_file()).read_text())
    return events, sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                          key=lambda e: e["ts"])[warmup:]


def profile_ort(model: str | Path, shape: tuple[int, ...], threads: int = 2, calls: int = 200,
                warmup: int = 20) -> Profile:
    """``calls`` profiled calls of ``model`` (an ONNX file) on ONNX Runtime's CPU provider, after ``warmup``."""
    from edgeft.runtime.timing import ort_session, time_calls

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="edgeft-profile-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        sess = ort_session(str(model), threads, profile_prefix=str(Path(tmp) / "ort"), optimized_path=str(optimized))
        events, runs = _ort_runs(sess, {sess.get_inputs()[0].name: x}, warmup, calls, sess.end_profiling)
        del sess  # its intra-op threads spin after each call: a second live session would time their contention
        plain = ort_session(str(model), threads)
        plain_feed = {plain.get_inputs()[0].name: x}
        unprofiled = time_calls(lambda: plain.run(None, plain_feed), warmup=warmup, iters=calls)["p50_ms"] * 1000
        plain = None  # released before the no-op graph is timed
        noop = ort_session(str(noop_model(shape, Path(tmp) / "noop.onnx")), threads,
                           profile_prefix=str(Path(tmp) / "noop"))
        _, noop_runs = _ort_runs(noop, {"x": x}, warmup, calls, noop.end_profiling)
        graph = _graph_ops(optimized)
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
    shares = [sum(d[k] for d in per_node.values()) / r["dur"] for k, r in enumerate(runs) if r["dur"]]
    return Profile(model=str(model), backend="ort-cpu", threads=threads, calls=len(runs),
                   run_us=float(statistics.median(r["dur"] for r in runs)), p50_us=unprofiled,
                   coverage=float(statistics.median(shares)), ops=ops,
                   call_us=float(statistics.median(r["dur"] for r in noop_runs)) if noop_runs else None)


_OV_GROUPS = {"FullyConnected": "matmul/gemm", "MatMul": "matmul/gemm", "FakeQuantize": "quantize/dequantize",
              "Reorder": "layout", "Reshape": "layout", "Transpose": "layout", "Concatenation": "layout",
              "Split": "layout", "Gather": "layout", "Pooling": "pool/reduce", "Input": "input/output",
              "Parameter": "input/output", "Output": "input/output", "Result": "input/output"}


def ov_group(node_type: str, exec_type: str, onnx_op: tuple[str, dict[str, Any], tuple[int, ...] | None] | None
             ) -> str:
    """The group of one OpenVINO layer: from the ONNX operator it came from where the names match (a convolution's
    shape), else from its type (GroupConvolution: depthwise in these networks; a 1x1 kernel in the executed kernel's
    name: pointwise)."""
    if node_type == "GroupConvolution":
        return "depthwise conv"
    if node_type == "Convolution":
        if onnx_op is not None and onnx_op[0] in _CONV:
            return group_of(*onnx_op)
        return "pointwise conv" if "1x1" in exec_type else "other conv"
    for prefix, group in _OV_GROUPS.items():
        if node_type.startswith(prefix):
            return group
    if node_type.startswith("Reduce"):
        return "pool/reduce"
    if node_type in ("Eltwise", "Subgraph", "Math", "Softmax", "SoftMax", "Multiply", "Add", "Convert") or \
            node_type in _ELEMENTWISE:
        return "elementwise"
    return "other"


def _ov_counters(request, ov) -> dict[str, tuple[float, str, str]]:
    """Each executed layer's (average microseconds per call since compile, layer type, kernel) from OpenVINO's
    per-layer counters (``PERF_COUNT``)."""
    return {i.node_name: (i.real_time.total_seconds() * 1e6, i.node_type, i.exec_type)
            for i in request.get_profiling_info() if i.status == ov.ProfilingInfo.Status.EXECUTED}


def since(avg_before: float, avg_after: float, before: int, calls: int) -> float:
    """A layer's average time over the last ``calls`` calls, from OpenVINO's CPU counter, which holds its average over
    every call since the model was compiled (in whole microseconds): ``avg_before`` after ``before`` calls,
    ``avg_after`` after ``calls`` more. Warm-up calls left in would count the first one, many times the rest."""
    return max((avg_after * (before + calls) - avg_before * before) / calls, 0.0)


def profile_ov(model: str | Path, shape: tuple[int, ...], threads: int = 2, precision: str = "f32", calls: int = 200,
               warmup: int = 20) -> Profile:
    """``calls`` profiled calls of ``model`` (an ONNX file) on OpenVINO's CPU plugin at ``precision`` (f32, bf16),
    from its per-layer counters (``PERF_COUNT``): each executed layer's average real time over the profiled calls
    (the counters average every call, so the warm-up calls are taken out), against the calls' average wall time."""
    import time

    from edgeft.runtime.openvino import ov_module
    from edgeft.runtime.timing import time_calls

    ov = ov_module()
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
    m = core.read_model(str(model))
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    graph = _graph_ops(Path(model))
    runs: list[float] = []

    def call(request) -> None:  # as the runner calls it (edgeft.runtime.openvino.OpenVINORunner._run)
        request.set_input_tensor(ov.Tensor(x, shared_memory=True))
        request.infer()

    profiled = core.compile_model(m, "CPU", {**config, "PERF_COUNT": True}).create_infer_request()
    for _ in range(warmup):
        call(profiled)
    before = _ov_counters(profiled, ov)
    for _ in range(calls):
        t0 = time.perf_counter()
        call(profiled)
        runs.append((time.perf_counter() - t0) * 1e6)
    ops = [OpTime(name, f"{node_type} ({exec_type})", ov_group(node_type, exec_type, graph.get(name)),
                  since(before.get(name, (0.0,))[0], avg, warmup, calls))
           for name, (avg, node_type, exec_type) in _ov_counters(profiled, ov).items()]
    del profiled  # one compiled model at a time: an idle one's worker threads would contend with the timed one
    plain = core.compile_model(m, "CPU", config).create_infer_request()
    p50_us = time_calls(lambda: call(plain), warmup=warmup, iters=calls)["p50_ms"] * 1000
    plain = None  # released before the no-op graph is timed
    with tempfile.TemporaryDirectory(prefix="edgeft-profile-") as tmp:
        noop = core.compile_model(core.read_model(str(noop_model(shape, Path(tmp) / "noop.onnx"))), "CPU",
                                  config).create_infer_request()
        call_us = time_calls(lambda: call(noop), warmup=warmup, iters=calls)["p50_ms"] * 1000
    run_us = statistics.fmean(runs)  # the counters give averages: the calls' average is what they share
    return Profile(model=str(model), backend="ov-cpu" + ("-bf16" if precision == "bf16" else ""), threads=threads,
                   calls=len(runs), run_us=run_us, p50_us=p50_us, coverage=sum(o.us for o in ops) / run_us, ops=ops,
                   call_us=call_us)


def profile(model: str | Path, shape: tuple[int, ...], backend: str = "ort-cpu", threads: int = 2,
            calls: int = 200) -> Profile:
    """The profile of ``model`` on a CPU runtime by name: ort-cpu, ov-cpu or ov-cpu-bf16."""
    from edgeft.errors import ConfigError

    if backend == "ort-cpu":
        return profile_ort(model, shape, threads, calls)
    if backend in ("ov-cpu", "ov-cpu-bf16"):
        return profile_ov(model, shape, threads, "bf16" if backend == "ov-cpu-bf16" else "f32", calls)
    raise ConfigError(f"profile: {backend} has no profiler here; choose ort-cpu, ov-cpu or ov-cpu-bf16")
