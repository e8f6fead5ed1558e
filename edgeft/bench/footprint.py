"""Resident memory of one model on a CPU backend, measured in a process of its own.

Inside the benchmark process, the growth of the resident set when a model loads says little: the first model
pays for the runtime's own start-up and the allocator reuses pages the previous model freed (the INT8 model read
0 MB). A fresh process per model that imports the runtime first, notes its resident set, then loads and runs the
model, gives the number a camera process pays for the model: peak resident set minus the runtime's baseline.
Run as ``python -m edgeft.bench.footprint SPEC BACKEND N,C,H,W THREADS``; prints one JSON line.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# What each CPU backend imports before a model is loaded: the baseline the model's memory is counted above.
RUNTIME_MODULES = {"ort-cpu": ("numpy", "onnxruntime"), "ov-cpu": ("numpy", "openvino"),
                   "ov-cpu-bf16": ("numpy", "openvino"),
                   "torch": ("numpy", "torch", "timm", "edgeft.models")}


def model_mb(row: dict[str, Any]) -> float | None:
    """The model's own resident memory from a bench result row, when it was measured (CPU backends)."""
    return ((row.get("memory") or {}).get("footprint") or {}).get("model_mb")


def _status_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def measure(spec: str, backend: str, shape: tuple[int, ...], threads: int | None, runs: int = 10) -> dict[str, Any]:
    """In this process: import ``backend``'s runtime, then load ``spec`` and run it ``runs`` times."""
    import numpy as np

    for module in RUNTIME_MODULES[backend]:
        importlib.import_module(module)
    from edgeft.runtime.backends import choose, model_files

    files, artifact_dir, _ = model_files(spec)
    b = choose(backend, files)
    runner = b.make(files[b.model_file], artifact_dir, threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    baseline, _ = _status_mb()
    try:  # reset the peak to the current resident set, so the imports' own peak does not count (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        peak_reset = True
    except OSError:
        peak_reset = False
    runner.activate()
    for _ in range(runs):
        runner.infer(x)
    resident, peak = _status_mb()
    top = peak if peak_reset else resident
    return {"runtime_baseline_mb": round(baseline, 1), "model_mb": round(top - baseline, 1),
            "resident_after_mb": round(resident, 1), "peak_rss_mb": round(peak, 1), "peak_reset": peak_reset}


def footprints(rows: list[tuple[str, str, tuple[int, ...]]], threads: int | None,
               timeout_s: float = 300) -> list[dict[str, Any] | None]:
    """``measure`` for each (model, backend, input shape), each in a fresh Python process, all at once (memory does
    not depend on the other processes; this runs after the timing); None where it cannot run (not Linux, not a
    CPU backend, a failure)."""
    procs: list[subprocess.Popen | None] = []
    for spec, backend, shape in rows:
        if backend not in RUNTIME_MODULES or not Path("/proc/self/status").exists():
            procs.append(None)
            continue
        cmd = [sys.executable, "-m", "edgeft.bench.footprint", spec, backend, ",".join(map(str, shape)),
               str(threads or 0)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    out: list[dict[str, Any] | None] = []
    for p in procs:
        if p is None:
            out.append(None)
            continue
        try:
            stdout, _ = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            out.append(None)
            continue
        lines = stdout.strip().splitlines()
        out.append(json.loads(lines[-1]) if p.returncode == 0 and lines else None)
    return out


if __name__ == "__main__":
    spec_, backend_, shape_, threads_ = sys.argv[1:5]
    print(json.dumps(measure(spec_, backend_, tuple(int(v) for v in shape_.split(",")), int(threads_) or None)))
