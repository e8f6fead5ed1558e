"""How often the paired latency gate (`edgeft gate`) is right on this machine; prints JSON.

  python benchmarks/gate_trials.py MODEL [--trials 20] [--time-cap-s 60] [--hog-trials 10]

MODEL: an artifact or .onnx file (the demo's final INT8 model: runs/elpv/05-quantize). Each trial runs the gate
as `edgeft gate` does (one process, ABBA rounds, sequential stopping) on ort-cpu with 2 threads, against:

- ``unchanged``: the same model (must say "pass"; "inconclusive" is allowed rarely);
- ``slow25``: the same model with 25% more time per call (after each inference the candidate computes for a
  quarter of the time the inference took, so the slowdown scales with the machine's load like more MACs would),
  threshold 10% (must be flagged);
- ``slow10_at5``: 10% more time per call, threshold 5% (flagged or inconclusive, never passed);
- ``threads1``: the same model on 1 thread instead of 2 (a real planted slowdown, threshold 10%);

then, with a CPU hog (a busy loop in another process) beside the gate, ``unchanged`` and ``slow25`` again
(``--hog-trials``): no more false alarms than without it. Conditions are interleaved trial by trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def slowed(call, factor: float):
    """``call`` plus ``factor`` of its own time in busy work: a candidate that does that much more compute."""
    def run() -> None:
        t0 = time.perf_counter()
        call()
        end = time.perf_counter() + (time.perf_counter() - t0) * factor
        while time.perf_counter() < end:
            pass
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--hog-trials", type=int, default=10)
    ap.add_argument("--time-cap-s", type=float, default=60.0)
    args = ap.parse_args()
    os.environ.setdefault("EDGEFT_QUIET", "1")
    import numpy as np

    from edgeft.bench.gate import GateConfig, measure
    from edgeft.bench.harness import fingerprint, reference_workload_ms
    from edgeft.runtime.backends import choose, model_files

    files, artifact_dir, chw = model_files(args.model)
    backend = choose("ort-cpu", files)
    x = np.random.default_rng(0).standard_normal((1, *chw)).astype(np.float32)
    runners = {t: backend.make(files[backend.model_file], artifact_dir, t) for t in (1, 2)}
    for r in runners.values():
        r.activate()
    base = lambda: runners[2].infer(x)  # noqa: E731
    conditions = {  # name: (candidate, threshold)
        "unchanged": (base, 0.10),
        "slow25": (slowed(base, 0.25), 0.10),
        "slow10_at5": (slowed(base, 0.10), 0.05),
        "threads1": (lambda: runners[1].infer(x), 0.10),
    }
    results: dict[str, list] = {k: [] for k in conditions}
    results.update({"hog_unchanged": [], "hog_slow25": []})
    ref = [reference_workload_ms()]

    def trial(name: str, key: str) -> None:
        cand, thr = conditions[name]
        r = measure(base, cand, GateConfig(max_regression=thr, time_cap_s=args.time_cap_s))
        results[key].append({"verdict": r.verdict, "ratio": r.ratio, "interval": r.interval, "rounds": r.rounds,
                             "seconds": r.seconds})
        print(f"{key}: {r.verdict} ratio {r.ratio:.3f} [{r.interval[0]:.3f}, {r.interval[1]:.3f}] "
              f"{r.rounds} rounds {r.seconds:.0f} s", file=sys.stderr, flush=True)

    for _ in range(args.trials):
        for name in conditions:
            trial(name, name)
    ref.append(reference_workload_ms())
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(args.hog_trials):
            trial("unchanged", "hog_unchanged")
            trial("slow25", "hog_slow25")
    finally:
        hog.kill()
    for r in runners.values():
        r.deactivate()
    right = {  # what counts as right; beside a hog, "inconclusive" is allowed for the unchanged model
        "unchanged": {"pass"}, "slow25": {"regression"}, "slow10_at5": {"regression", "inconclusive"},
        "threads1": {"regression"}, "hog_unchanged": {"pass", "inconclusive"}, "hog_slow25": {"regression"}}
    summary = {}
    for key, rows in results.items():
        if not rows:
            continue
        verdicts = Counter(r["verdict"] for r in rows)
        summary[key] = {"right": f"{sum(verdicts[v] for v in right[key])}/{len(rows)}", "verdicts": dict(verdicts),
                        "median_seconds": statistics.median(r["seconds"] for r in rows),
                        "max_seconds": max(r["seconds"] for r in rows),
                        "median_ratio": statistics.median(r["ratio"] for r in rows),
                        "ratio_range": [min(r["ratio"] for r in rows), max(r["ratio"] for r in rows)],
                        "median_rounds": statistics.median(r["rounds"] for r in rows)}
    print(json.dumps({"model": args.model, "device": fingerprint()["cpu"], "cpu_count": os.cpu_count(),
                      "reference_workload_ms_before_after": [round(v, 4) for v in ref],
                      "time_cap_s": args.time_cap_s, "trials": args.trials, "hog_trials": args.hog_trials,
                      "summary": summary, "trials_detail": results}, indent=1))


if __name__ == "__main__":
    main()
