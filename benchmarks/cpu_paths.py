"""Every CPU path of a finished demo run on this host: runtime x precision, speed and decisions side by side; JSON.

    python benchmarks/cpu_paths.py [--run runs/elpv] [--data data/elpv] [--rounds 15]

Models: the run's fine-tuned FP32 ONNX model (03-export-finetune), its pruned FP32 one (04-export-prune) and the
shipped pruned INT8 one (05-quantize); backends: ort-cpu, ov-cpu (FP32 inference precision) and, where the CPU has a
bf16 unit, ov-cpu-bf16. Speed: `edgeft bench`'s interleaved rounds (batch 1, the recipe's threads), each path's
speed-up the median of its per-round p50 ratios against the fine-tuned FP32 model on ONNX Runtime, with the range.
Decisions: every val and test image through the camera's Predictor on each path, at the model's own operating point
(chosen on val when the run made it): recall, false rejects, accuracy, and how many decisions differ from the same
model on ONNX Runtime (a reduced precision is measured, never assumed).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("03-export-finetune", "04-export-prune", "05-quantize")
BACKENDS = ("ort-cpu", "ov-cpu", "ov-cpu-bf16")


def decisions(model, policy, backend: str, split) -> list[str]:
    """Each image's decision on ``backend``, one view, through the runtime's runner (what `edgeft eval` runs)."""
    import numpy as np

    from edgeft.evaluate import logits
    from edgeft.runtime.predictor import softmax

    out, _ = logits(model, split, tta_views=1, backend=backend)
    return [str(d) for d in policy.decide(policy.score(softmax(out.astype(np.float64))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "elpv")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "elpv")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import numpy as np

    from edgeft import artifact
    from edgeft.bench.harness import BenchConfig, bench
    from edgeft.data import load_split
    from edgeft.decision import outcome, read_policy
    from edgeft.host import cpu_model, precision_units
    from edgeft.runtime.backends import BACKENDS as TABLE

    backends = [b for b in BACKENDS if TABLE[b].available()]
    models = [a.run / m for m in MODELS]
    pairs = [(str(m), b) for m in models for b in backends]
    cfg = BenchConfig(backends=backends, batches=[1], warmup_s=0.5, duration_s=0.5, rounds=a.rounds,
                      threads=a.threads, memory=False)
    doc = bench([], cfg, pairs=pairs)
    rounds = {(Path(r["model"]).name, r["backend"]): r.get("round_p50_ms") or [r["latency_ms"]["p50"]]
              for r in doc["results"] if r["status"] == "ok"}
    base = rounds[(MODELS[0], "ort-cpu")]
    speed = {}
    for (m, b), r in rounds.items():
        ratios = [x / y for x, y in zip(base, r)]
        speed[f"{m} {b}"] = {"p50_ms": round(statistics.median(r), 3),
                             "speedup": round(statistics.median(ratios), 3),
                             "range": [round(min(ratios), 3), round(max(ratios), 3)], "rounds": len(ratios)}
    quality = {}
    for m in models:
        art = artifact.load(m)
        meta = art.meta
        policy = read_policy(meta.extra)
        for split_name in ("val", "test"):
            split = load_split(a.data, split_name, meta.input, classes=meta.class_names)
            y = np.array([meta.class_names[k] in policy.positive for k in split.labels])
            ref = None
            for b in backends:
                d = decisions(art, policy, b, split)
                ref = d if b == "ort-cpu" else ref
                o = outcome(y, d)
                quality[f"{m.name} {b} {split_name}"] = {
                    "recall": round(o.recall, 4), "false_reject": round(o.false_reject, 4),
                    "decisions_differing_from_ort_cpu": sum(x != z for x, z in zip(d, ref)), "n": len(d)}
    print(json.dumps({"cpu": cpu_model(), "units": precision_units(), "reference_ms": doc["device"].get("reference_ms"),
                      "backends": backends, "speed": speed, "decisions": quality}, indent=1))


if __name__ == "__main__":
    main()
