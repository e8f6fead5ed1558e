"""Results files as rows of the store: what ``edgeft bench --out`` and ``edgeft gate --out`` wrote (an optimize run's
bench step writes the bench's file, ``RUN/NN-bench/results.json``).

A series is one model's number on one device, backend and batch size, over time: the device is a key of the
fingerprint's hardware (CPU model and count, GPU, Jetson model and power mode), never of its software, so a runtime
upgrade stays inside the series it may have slowed down (the versions are kept on every row to say so). Results from
different devices are different series and are never averaged together.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

from edgeft.errors import ConfigError
from edgeft.history.store import Row

# What makes a device another device. cpu_units (the INT8/bf16 units' flags): one CPU name ("AMD EPYC") covers a Zen 3
# without VNNI or bf16 and a Zen 4 with both, whose latencies differ by about 2x.
HARDWARE = ("cpu", "cpu_count", "cpu_units", "machine", "gpu", "jetson", "power_mode")
VERSIONS = ("edgeft", "python", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt", "numpy", "driver",
            "l4t")


def device_key(fp: dict[str, Any]) -> str:
    """A short stable key of the device a fingerprint (``edgeft.bench.harness.fingerprint``) describes."""
    hw = {k: fp.get(k) for k in HARDWARE if fp.get(k) is not None}
    return hashlib.sha256(json.dumps(hw, sort_keys=True).encode()).hexdigest()[:12]


def _common(fp: dict[str, Any], kind: str, commit: str, when: float) -> dict[str, Any]:
    return {"recorded_at": when, "kind": kind, "commit": commit, "device": device_key(fp),
            "device_desc": json.dumps({k: fp.get(k) for k in HARDWARE if fp.get(k) is not None}, sort_keys=True),
            "versions": json.dumps({k: fp[k] for k in VERSIONS if k in fp}, sort_keys=True)}


def _created(doc: dict[str, Any]) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(doc["created"])).timestamp()
    except (KeyError, ValueError):
        return None


def rows_of(path: Path, commit: str, name: str | None = None, when: float | None = None) -> list[Row]:
    """The rows a results file holds (its kind found from its content); ``name`` names the model's series (default:
    the model's file or folder name)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read as a results file: {e}") from None
    if isinstance(doc, dict) and doc.get("schema") == "edgeft.bench":
        return _bench(doc, commit, name, when if when is not None else _created(doc) or time.time())
    if isinstance(doc, dict) and {"verdict", "ratios", "models"} <= set(doc):
        return _gate(doc, commit, name, when if when is not None else time.time())
    raise ConfigError(f"{path} is not a results file edgeft records (edgeft bench --out, edgeft gate --out)")


def _bench(doc: dict[str, Any], commit: str, name: str | None, when: float) -> list[Row]:
    fp = doc.get("device") or {}
    base = _common(fp, "bench", commit, when)
    out = []
    for r in doc.get("results", []):
        if r.get("status") != "ok":
            continue
        lat = r.get("latency_ms") or {}
        model = name or Path(str(r["model"])).name
        extra = json.dumps({"reference_ms": fp.get("reference_ms"), "rounds": len(r.get("round_p50_ms") or []),
                            "round_p50_ms": r.get("round_p50_ms")})
        for metric, value in (("p50_ms", lat.get("p50")), ("p99_ms", lat.get("p99")),
                              ("throughput_ips", lat.get("throughput_ips"))):
            if value is not None:
                out.append(Row(**base, model=model, model_sha256=r.get("model_sha256") or "", backend=r["backend"],
                               batch=int(r["batch"]), metric=metric, value=float(value), extra=extra))
    if not out:
        raise ConfigError("the bench results hold no measured row (every one failed or was skipped): nothing to record")
    return out


SKIPPED = ("per_class", "recall_at_false_reject", "false_reject_at_recall", "roc", "confusion", "correct", "pr_curve",
           "pr")


def eval_rows(model: str, model_sha256: str, split: str, backend: str, metrics: dict[str, Any], commit: str,
              when: float | None = None) -> list[Row]:
    """An evaluation's numbers (``edgeft eval --record``: a task's record as a dict) as ``SPLIT.NAME`` metrics, the
    scalars of its top two levels (accuracy, balanced accuracy, AUROC, the policy's recall and false rejects, a
    detector's mAP); curves, matrices and per-class tables stay in the artifact."""
    from edgeft.bench.harness import fingerprint

    flat: dict[str, float] = {}
    for k, v in metrics.items():
        if k in SKIPPED:
            continue
        if isinstance(v, dict):
            for kk, vv in v.items():
                if kk not in SKIPPED and isinstance(vv, (int, float)) and not isinstance(vv, bool):
                    flat[f"{k}.{kk}"] = float(vv)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[k] = float(v)
    base = _common(fingerprint(), "eval", commit, when if when is not None else time.time())
    return [Row(**base, model=model, model_sha256=model_sha256, backend=backend, batch=1, metric=f"{split}.{k}",
                value=v, extra="{}") for k, v in sorted(flat.items()) if v == v]


def _sha(value: Any) -> str:
    """A gate's model hash, the SHA-256 of its file: a string, or {file: SHA-256} for an artifact's files (one file:
    its hash; several: the SHA-256 of their sorted name:hash lines, one identity for the set)."""
    if isinstance(value, dict):
        if len(value) == 1:
            return str(next(iter(value.values())))
        lines = "\n".join(f"{k}:{v}" for k, v in sorted(value.items()))
        return hashlib.sha256(lines.encode()).hexdigest()
    return str(value or "")


def _gate(doc: dict[str, Any], commit: str, name: str | None, when: float) -> list[Row]:
    if not doc.get("candidate_ms"):
        raise ConfigError(f"the gate measured nothing ({doc.get('verdict')}: {doc.get('reason')}): nothing to record")
    fp = doc.get("device") or {}
    cand = doc["models"]["candidate"]
    model = name or Path(str(cand["spec"])).name
    extra = json.dumps({"verdict": doc["verdict"], "ratio": doc["ratio"], "interval": doc["interval"],
                        "baseline_sha256": _sha(doc["models"]["baseline"].get("sha256")), "rounds": doc["rounds"]})
    base = _common(fp, "gate", commit, when)
    common = dict(base, model=model, model_sha256=_sha(cand.get("sha256")), backend=str(doc["models"].get("backend")),
                  batch=int(doc["config"]["batch"]), extra=extra)
    return [Row(**common, metric="p50_ms", value=float(statistics.median(doc["candidate_ms"]))),
            Row(**common, metric="gate_ratio", value=float(doc["ratio"]))]
