"""The detection recipe's targets (issue #36), checked on a finished `edgeft optimize` run; prints JSON.

  python benchmarks/detect_bars.py --run runs/trees      # a finished run of examples/trees.yaml

Targets: the final model (pruned, INT8 for ONNX Runtime's CPU kernels) within 1.0 AP point (mAP@[.5:.95] x 100) of
the trained FP32 detector on test, at least 2x faster than the trained FP32 ONNX graph on ort-cpu at batch 1 as the
median of at least 15 per-round paired ratios (the bench stage's interleaved rounds), and the recipe within 20
minutes (the sum of its stages' recorded times) on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_WALL_S = 20 * 60
MIN_SPEEDUP = 2.0
MIN_ROUNDS = 15
MAX_MAP_DROP_POINTS = 1.0


def check(run: Path) -> dict:
    """The targets on a finished run, from the rows its report is made of (``edgeft.optimize.rows.collect``)."""
    from edgeft.host import cpu_model
    from edgeft.optimize.pipeline import StepResult, plan
    from edgeft.optimize.recipe import parse
    from edgeft.optimize.rows import collect, p50_ms, round_ratios

    state = json.loads((run / "pipeline.json").read_text())
    steps = plan(parse(state["recipe"]))
    results = {s.name: StepResult(s, state["steps"][s.name]["status"], state["steps"][s.name].get("seconds") or 0.0)
               for s in steps if s.name in state["steps"]}
    rows, _ = collect(run, steps, results)
    first = rows[0]
    fp32_onnx = next(r for r in rows if r.stage == "export" and r.step.endswith(first.stage))
    final = next(r for r in reversed(rows) if r.stage == "quantize")
    ratios = round_ratios(fp32_onnx.latency["ort-cpu@1"], final.latency["ort-cpu@1"])
    speedup = statistics.median(ratios) if ratios else None
    m0, m1 = first.task_metrics, final.task_metrics
    wall = sum(r.seconds for r in results.values())
    return {
        "run": str(run), "host_cpu": cpu_model(),
        "stage_seconds": {k: round(r.seconds, 1) for k, r in results.items()}, "wall_s": round(wall, 1),
        "map": {"trained_fp32": m0["map"], "final": m1["map"], "drop_points": round((m0["map"] - m1["map"]) * 100, 2),
                "map50_trained_fp32": m0["map50"], "map50_final": m1["map50"]},
        "ort_cpu_p50_ms": {"fp32": p50_ms(fp32_onnx.latency["ort-cpu@1"]), "final": p50_ms(final.latency["ort-cpu@1"])},
        "speedup": {"median_of_paired_rounds": round(speedup, 3) if speedup else None, "rounds": len(ratios),
                    "range": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None},
        "bars": {"map_drop_le_1_point": (m0["map"] - m1["map"]) * 100 <= MAX_MAP_DROP_POINTS,
                 "speedup_ge_2x": bool(speedup and speedup >= MIN_SPEEDUP and len(ratios) >= MIN_ROUNDS),
                 "wall_le_20_min": wall <= MAX_WALL_S},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="A finished run of examples/trees.yaml.")
    print(json.dumps(check(ap.parse_args().run), indent=2))


if __name__ == "__main__":
    main()
