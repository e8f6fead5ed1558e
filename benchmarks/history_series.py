"""A real latency series on this host, recorded and judged by the history's drift check; prints JSON.

    python benchmarks/history_series.py MODEL_DIR [--runs 10] [--slow-runs 5] [--slowdown 0.05] [--store F]

MODEL_DIR: an ONNX artifact (the demo's final INT8 model, runs/elpv/05-quantize). The model is benched ``--runs``
times (``edgeft bench``, ort-cpu, 2 threads, 5 interleaved rounds each), every result recorded in a fresh store as
commits c00, c01, ...; then a slowed copy of it, the same graph with a chain of multiplications of its input by 2 and
by 0.5 in turn (exact in floating point: the outputs do not change) grown until the paired gate (``edgeft gate``)
measures it ``--slowdown`` slower than the original, is benched ``--slow-runs`` times and recorded as the next
commits. The drift check's verdict after each commit is printed, with the host's run-to-run spread (the CV of the
first runs' p50s).

``--paired``: each commit is instead gated (``edgeft gate``, ABBA rounds in one process) against the original model
kept as a pinned baseline, and the series is the gate's ratio: a host that changes speed between runs slows both sides
of a round alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeft.host import cpu_model

ROOT = Path(__file__).resolve().parents[1]
EDGEFT = [sys.executable, "-m", "edgeft"]


def edgeft(*args, ok=(0,)) -> subprocess.CompletedProcess:
    r = subprocess.run([*EDGEFT, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    if r.returncode not in ok:
        raise SystemExit(f"edgeft {' '.join(map(str, args))} exited {r.returncode}: {r.stderr[-400:]}")
    return r


def slowed(model_dir: Path, out: Path, n_ops: int) -> Path:
    """A copy of the artifact whose graph first multiplies its input by 2 and by 0.5 in turn, ``n_ops`` times (made
    even): real work on every call, the same outputs (ONNX Runtime's optimiser removes a multiplication by 1)."""
    import onnx
    from onnx import TensorProto, helper

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out)
    path = out / "model.onnx"
    m = onnx.load(str(path))
    g = m.graph
    x = g.input[0].name
    g.initializer.append(helper.make_tensor("edgeft_slow_two", TensorProto.FLOAT, [], [2.0]))
    g.initializer.append(helper.make_tensor("edgeft_slow_half", TensorProto.FLOAT, [], [0.5]))
    prev = x
    nodes = []
    for i in range(n_ops + n_ops % 2):
        nxt = f"edgeft_slow_{i}"
        k = "edgeft_slow_two" if i % 2 == 0 else "edgeft_slow_half"
        nodes.append(helper.make_node("Mul", [prev, k], [nxt], name=f"edgeft_slow_mul_{i}"))
        prev = nxt
    for node in g.node:
        node.input[:] = [prev if v == x else v for v in node.input]
    for k, node in enumerate(nodes):
        g.node.insert(k, node)
    onnx.save(m, str(path))
    meta = json.loads((out / "meta.json").read_text())
    import hashlib

    meta["model_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def gate_and_record(baseline: Path, model: Path, store: Path, commit: str, work: Path, name: str) -> float:
    out = work / f"{commit}-gate.json"
    edgeft("-q", "gate", baseline, model, "--max-regression", "50%", "--threads", "2", "--min-rounds", "15",
           "--time-cap-s", "60", "--out", out, ok=(0, 1, 3))
    edgeft("-q", "history", "record", out, "--store", store, "--commit", commit, "--name", name)
    return json.loads(out.read_text())["ratio"]


def bench_and_record(model: Path, store: Path, commit: str, work: Path, name: str) -> float:
    out = work / f"{commit}.json"
    edgeft("-q", "bench", model, "--backend", "ort-cpu", "--threads", "2", "--rounds", "5", "--duration-s", "1",
           "--no-memory", "--out", out)
    edgeft("-q", "history", "record", out, "--store", store, "--commit", commit, "--name", name)
    return json.loads(out.read_text())["results"][0]["latency_ms"]["p50"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--slow-runs", type=int, default=5)
    ap.add_argument("--slowdown", type=float, default=0.05)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--paired", action="store_true", help="gate each commit against the original (a ratio series)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeft-history-", dir=ROOT / "runs"))
    store = args.store or work / "history.sqlite"
    name = args.model.name
    # the slowed copy, sized by the paired gate: more multiplications until the median ratio reaches the slowdown
    n, ratio, tried = 8, 1.0, []
    while True:
        slow = slowed(args.model, work / "slow", n)
        g = work / "gate.json"
        edgeft("-q", "gate", args.model, slow, "--max-regression", "50%", "--time-cap-s", "60", "--out", g, ok=(0, 1, 3))
        ratio = json.loads(g.read_text())["ratio"]
        tried.append({"muls": n, "ratio": round(ratio, 4)})
        if ratio >= 1 + args.slowdown or n >= 4096:
            break
        n = max(n + 2, int(n * min(4.0, max(1.2, args.slowdown / max(ratio - 1, 1e-3)))))
    p50s, verdicts = [], []
    for k in range(args.runs + args.slow_runs):
        model = args.model if k < args.runs else slow
        if args.paired:
            p50s.append(gate_and_record(args.model, model, store, f"c{k:02d}", work, name))
        else:
            p50s.append(bench_and_record(model, store, f"c{k:02d}", work, name))
        metric = "gate_ratio" if args.paired else "p50_ms"
        doc = json.loads(edgeft("-q", "history", "show", "--store", store, "--metric", metric, "--json").stdout)
        v = next(d for d in doc if d["kind"] == ("gate" if args.paired else "bench"))["verdict"]
        verdicts.append({"commit": f"c{k:02d}", "slowed": k >= args.runs, metric: round(p50s[-1], 4),
                         "flagged": v["flagged"], "change": v["change"] and round(v["change"], 4)})
    edgeft("-q", "history", "show", "--store", store, "--metric", metric, "--html", work / "history.html", ok=(0, 1))
    base = p50s[:args.runs]
    cpu = cpu_model()
    first = next((v["commit"] for v in verdicts if v["flagged"]), None)
    print(json.dumps({"cpu": cpu, "model": str(args.model), "store": str(store), "chart": str(work / "history.html"),
                      "metric": metric, "cv_first_runs": round(statistics.stdev(base) / statistics.mean(base), 4),
                      "slowed": {"muls": n, "gate_ratio": round(ratio, 4), "sizing": tried},
                      "first_flagged": first, "series": verdicts}, indent=1))


if __name__ == "__main__":
    main()
