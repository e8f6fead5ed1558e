"""Latency of one callable (warm-up, then timed iterations) and ONNX Runtime sessions: the runtime floor's timing
primitives, used by bench and by the stages that measure a choice (pruning's side-by-side latency, INT8 exclusions)."""

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


def ort_session(onnx_path: str, threads: int = 2, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                profile_prefix: str | None = None, optimized_path: str | None = None):
    """An ONNX Runtime session on exactly ``providers``; refuses a silent fallback to another provider.
    ``profile_prefix``: record every operator's time (ONNX Runtime's profiler, a JSON file from ``end_profiling``);
    ``optimized_path``: write the graph as ONNX Runtime runs it (its fused operators, the names the profile uses)."""
    try:
        import onnxruntime as ort
    except ImportError:
        from edgeft.errors import DependencyError

        raise DependencyError("onnxruntime is not installed: pip install 'edgeft[runtime]' (CPU) or "
                              "'edgeft[gpu]'") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    sess = ort.InferenceSession(str(onnx_path), so, providers=list(providers))
    missing = [p for p in providers if p not in sess.get_providers()]
    if missing:
        from edgeft.errors import DependencyError

        raise DependencyError(f"ONNX Runtime provider(s) {missing} did not load (active: {sess.get_providers()}); "
                              "run `edgeft doctor`")
    return sess


def _rounds(calls: dict[str, Callable[[], Any]], rounds: int, iters: int, min_seconds: float) -> dict[str, list[float]]:
    """p50 per round of each call, the calls interleaved within each round so machine noise hits all alike."""
    p50s: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for k, call in calls.items():
            p50s[k].append(time_calls(call, warmup=5, iters=iters, min_seconds=min_seconds)["p50_ms"])
    return p50s


def runner_rounds(runners: dict[str, Any], shape: tuple[int, ...], rounds: int = 3, iters: int = 40,
                  min_seconds: float = 0.5) -> dict[str, list[float]]:
    """:func:`ort_rounds` for runners of any backend (``edgeft.runtime.runner.Runner``, already activated), so a path
    on OpenVINO and the baseline on ONNX Runtime see the same machine state and their per-round ratio is a paired
    one."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return _rounds({k: (lambda r=r: r.infer(x)) for k, r in runners.items()}, rounds, iters, min_seconds)


def paired_rounds(runners: dict[str, Any], shape: tuple[int, ...], rounds: int, iters: int = 30,
                  min_seconds: float = 0.25) -> dict[str, list[float]]:
    """:func:`runner_rounds` for runners not yet active: all activated first (each holds its session or compiled
    model while the others run, as in the rounds), released after, also when a call fails."""
    for r in runners.values():
        r.activate()
    try:
        return runner_rounds(runners, shape, rounds, iters, min_seconds)
    finally:
        for r in runners.values():
            r.deactivate()


def ort_rounds(paths: dict[str, Any], shape: tuple[int, ...], threads: int = 2, rounds: int = 3,
               iters: int = 40, min_seconds: float = 0.5) -> dict[str, list[float]]:
    """p50 ONNX Runtime CPU latency of several models per round, the models interleaved within each round so
    machine noise hits all alike. Each session is created once and reused across rounds."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sessions = {k: ort_session(str(p), threads) for k, p in paths.items()}
    return _rounds({k: (lambda s=s, feed={s.get_inputs()[0].name: x}: s.run(None, feed)) for k, s in sessions.items()},
                   rounds, iters, min_seconds)
