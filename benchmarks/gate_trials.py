"""How often the latency gate is right on this machine; prints JSON.

  python benchmarks/gate_trials.py MODEL [--trials 20] [--rounds 5] [--duration-s 0.6]

Each trial benches MODEL (artifact or .onnx) on ort-cpu three times: a baseline and an unchanged rerun
with 2 threads, and a planted slowdown with 1 thread; then asks `compare` about the rerun (must say
"no regression") and about the slowdown (must be flagged). Also reports the p50 coefficient of
variation over the unchanged runs. Each run benches in ``--rounds`` interleaved rounds of ``--duration-s``
(the gate's p50 is the median of the rounds' p50s, and its interval comes from a bootstrap over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--duration-s", type=float, default=0.6)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-regression", type=float, default=0.10)
    args = ap.parse_args()
    os.environ.setdefault("EDGEFT_QUIET", "1")
    from edgeft.bench.compare import compare
    from edgeft.bench.harness import BenchConfig, bench

    def run(threads: int) -> dict:
        return bench([args.model], BenchConfig(backends=["ort-cpu"], batches=[1], warmup_s=0.5,
                                               duration_s=args.duration_s, threads=threads, rounds=args.rounds))

    same_ok = slow_flagged = 0
    p50s, ratios_same, ratios_slow, raw_same = [], [], [], []
    for _ in range(args.trials):
        base, again, slow = run(2), run(2), run(1)
        rows, s = compare(base, again, max_regression=args.max_regression)
        same_ok += not s["failed"]
        ratios_same.append(rows[0].ratio)
        raw_same.append(again["results"][0]["latency_ms"]["p50"] / base["results"][0]["latency_ms"]["p50"])
        rows, s = compare(base, slow, max_regression=args.max_regression)
        slow_flagged += s["failed"]
        ratios_slow.append(rows[0].ratio)
        p50s += [base["results"][0]["latency_ms"]["p50"], again["results"][0]["latency_ms"]["p50"]]
    cv = statistics.stdev(p50s) / statistics.fmean(p50s)
    print(json.dumps({
        "model": args.model, "trials": args.trials, "rounds": args.rounds, "duration_s_per_round": args.duration_s,
        "max_regression": args.max_regression,
        "unchanged_no_regression": f"{same_ok}/{args.trials}", "planted_slowdown_flagged": f"{slow_flagged}/{args.trials}",
        "unchanged_ratio_normalized": {"min": min(ratios_same), "median": statistics.median(ratios_same),
                                       "max": max(ratios_same)},
        "unchanged_ratio_raw": {"min": min(raw_same), "median": statistics.median(raw_same), "max": max(raw_same)},
        "planted_ratio_normalized": {"min": min(ratios_slow), "median": statistics.median(ratios_slow)},
        "p50_ms_runs": len(p50s), "p50_ms_median": statistics.median(p50s), "p50_cv": round(cv, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
