"""Predictor end to end (decode-free: frames in memory → preprocessing → ONNX Runtime → labels) against the
bare ONNX Runtime session on the same, already preprocessed frames; batch 1, measured interleaved. Prints JSON.

  python benchmarks/predictor_overhead.py --artifact runs/elpv-onnx --data data/elpv [--threads 2]
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
    ap.add_argument("--artifact", required=True, help="ONNX artifact directory")
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("EDGEFT_QUIET", "1")

    from edgeft.runtime.timing import time_calls
    from edgeft.data.imagefolder import find_splits, read_image, scan_split
    from edgeft.runtime import Predictor

    p = Predictor(args.artifact, backend="ort-cpu", threads=args.threads)
    files = scan_split(find_splits(args.data)["test"]).paths[: args.frames]
    frames = [read_image(f) for f in files]  # as a camera delivers them: native size, 8-bit, one channel here
    ready = [p.preprocess([f]) for f in frames]
    sess, name = p.runner.session, p.runner.input_name
    state = {"i": 0}

    def predictor_call():
        p.predict(frames[state["i"] % len(frames)])
        state["i"] += 1

    def bare_call():
        sess.run(None, {name: ready[state["i"] % len(ready)]})
        state["i"] += 1

    e2e, bare = [], []
    for _ in range(args.rounds):
        e2e.append(time_calls(predictor_call, warmup=5, iters=len(frames))["p50_ms"])
        bare.append(time_calls(bare_call, warmup=5, iters=len(frames))["p50_ms"])
    pre = time_calls(lambda: p.preprocess([frames[0]]), warmup=5, iters=200)["p50_ms"]
    print(json.dumps({"artifact": args.artifact, "frame_shape": list(frames[0].shape), "threads": args.threads,
                      "predictor_p50_ms": round(statistics.median(e2e), 3),
                      "bare_session_p50_ms": round(statistics.median(bare), 3),
                      "ratio": round(statistics.median(e2e) / statistics.median(bare), 3),
                      "preprocess_p50_ms": round(pre, 3), "rounds": args.rounds}, indent=2))


if __name__ == "__main__":
    main()
