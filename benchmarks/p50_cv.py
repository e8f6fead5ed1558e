"""Run-to-run spread of the bench p50 on this machine; prints JSON.

  python benchmarks/p50_cv.py MODEL [--runs 5] [--rounds 5] [--duration-s 1] [--backend ort-cpu]

Benches MODEL ``--runs`` times, one after the other, each run in ``--rounds`` interleaved rounds (p50 = median
of the rounds' p50s, as `edgeft bench --rounds` reports it), and prints the coefficient of variation of the
runs' p50s next to the single-round CV (each run's first round alone), so the effect of rounds is visible.
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
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration-s", type=float, default=1.0)
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("EDGEFT_QUIET", "1")
    from edgeft.bench.harness import BenchConfig, bench

    p50s, first_round = [], []
    for _ in range(args.runs):
        doc = bench([args.model], BenchConfig(backends=[args.backend], batches=[1], warmup_s=0.5,
                                              duration_s=args.duration_s, threads=args.threads, rounds=args.rounds))
        row = doc["results"][0]
        p50s.append(row["latency_ms"]["p50"])
        first_round.append(row.get("round_p50_ms", [row["latency_ms"]["p50"]])[0])

    def cv(v: list[float]) -> float:
        return round(statistics.stdev(v) / statistics.fmean(v), 4)

    print(json.dumps({"model": args.model, "backend": args.backend, "threads": args.threads, "runs": args.runs,
                      "rounds": args.rounds, "duration_s_per_round": args.duration_s,
                      "p50_ms": [round(v, 3) for v in p50s], "p50_cv": cv(p50s),
                      "single_round_p50_cv": cv(first_round)}, indent=2))


if __name__ == "__main__":
    main()
