"""Latency of one callable: warm-up, then timed iterations; statistics from per-iteration samples."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def time_calls(fn: Callable[[], Any], warmup: int = 10, iters: int = 50, min_seconds: float = 0.0) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then at least ``iters`` times (and ``min_seconds``); milliseconds."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    s = sorted(samples)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]

    return {"n": len(s), "mean_ms": statistics.fmean(s), "p50_ms": statistics.median(s), "p90_ms": pct(90),
            "min_ms": s[0], "max_ms": s[-1], "samples_ms": samples}


def ort_session(onnx_path: str, threads: int = 2, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    """An ONNX Runtime session on exactly ``providers``; refuses a silent fallback to another provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        from edgeft.errors import DependencyError

        raise DependencyError("onnxruntime is not installed: pip install 'edgeft[onnx]' (CPU) or 'edgeft[gpu]'") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=list(providers))
    missing = [p for p in providers if p not in sess.get_providers()]
    if missing:
        from edgeft.errors import DependencyError

        raise DependencyError(f"ONNX Runtime provider(s) {missing} did not load (active: {sess.get_providers()}); "
                              "run `edgeft doctor`")
    return sess


def ort_latency(onnx_path: str, shape: tuple[int, ...], threads: int = 2, warmup: int = 10, iters: int = 100,
                min_seconds: float = 1.0) -> dict[str, Any]:
    """Median ONNX Runtime CPU latency of a model for one input of ``shape``."""
    import numpy as np

    sess = ort_session(onnx_path, threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return time_calls(lambda: sess.run(None, {name: x}), warmup, iters, min_seconds)
