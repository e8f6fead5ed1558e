"""What a call through OpenVINO's Python API costs beyond the model's own work; prints JSON.

  python benchmarks/ov_call_path.py MODEL [MODEL ...] [--rounds 15] [--iters 200] [--precision f32]

For each ONNX model: one compiled model, one infer request, and two ways to call it, interleaved in ``--rounds``
rounds (the order alternating), each round a p50 over ``--iters`` calls:
- ``dict``: ``request.infer({0: x})``, the dictionary call (OpenVINO converts the inputs and builds its results
  dictionary in Python), then the output tensor copied out;
- ``tensor``: the input handed over as a tensor on the array's own memory, ``request.infer()`` with no arguments,
  the output tensor copied out: how ``edgeft.runtime.openvino.OpenVINORunner`` calls it.
Per model: each path's p50 (median of the rounds), the per-round paired ratio dict / tensor (median and range), and
the same on a no-op graph with the model's input (one Slice of one element): what a call costs OpenVINO when the
model does no work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def paths(model: Path, precision: str, threads: int, rounds: int, iters: int) -> dict:
    from edgeft.runtime.openvino import ov_module
    from edgeft.runtime.timing import time_calls

    ov = ov_module()
    core = ov.Core()
    m = core.read_model(str(model))
    shape = tuple(d.get_length() for d in m.inputs[0].partial_shape)
    compiled = core.compile_model(m, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision,
                                             "INFERENCE_NUM_THREADS": threads})
    req = compiled.create_infer_request()
    x = np.random.default_rng(0).random(shape, dtype=np.float32)

    def dict_call():
        req.infer({0: x})
        return np.array(req.get_output_tensor(0).data, copy=True)

    def tensor_call():
        req.set_input_tensor(ov.Tensor(x, shared_memory=True))
        req.infer()
        return np.array(req.get_output_tensor(0).data, copy=True)

    calls = {"dict": dict_call, "tensor": tensor_call}
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(rounds):
        for k in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            times[k].append(time_calls(calls[k], warmup=20, iters=iters)["p50_ms"])
    ratios = [a / b for a, b in zip(times["dict"], times["tensor"])]
    return {"model": str(model), "input": list(shape), "precision": precision,
            "p50_ms": {k: round(statistics.median(v), 4) for k, v in times.items()},
            "dict_over_tensor": {"median": round(statistics.median(ratios), 4), "min": round(min(ratios), 4),
                                 "max": round(max(ratios), 4), "rounds": rounds}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="f32")
    args = ap.parse_args()
    from edgeft.bench.harness import reference_workload_ms
    from edgeft.host import cpu_model

    out = {"cpu": cpu_model(), "reference_workload_ms": round(reference_workload_ms(), 4), "models": []}
    for model in args.models:
        out["models"].append(paths(model, args.precision, args.threads, args.rounds, args.iters))
    with tempfile.TemporaryDirectory() as tmp:
        from openvino import Core

        from edgeft.bench.profile import noop_model

        shape = tuple(d.get_length() for d in Core().read_model(str(args.models[0])).inputs[0].partial_shape)
        out["noop"] = paths(noop_model(shape, Path(tmp) / "noop.onnx"), args.precision, args.threads, args.rounds,
                            args.iters)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
