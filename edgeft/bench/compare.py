"""``edgeft compare``: a latency regression gate that knows about noise.

A change fails the gate only when it is beyond the threshold *and* beyond the measured noise: the
ratio of the metric (current / baseline) comes with a bootstrap confidence interval computed from
the per-iteration samples both runs stored (for runs benched in several interleaved rounds, a
two-level bootstrap over rounds and then samples, so the drift between rounds counts as noise), and a regression needs the ratio above ``1 + threshold``
and the whole interval above 1. Both runs also timed the same reference workload; when the machine is
uniformly slower today, the ratio is divided by the reference's ratio (``normalize``), so a busy
shared runner does not fail a pull request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.bench.footprint import model_mb
from edgeft.bench.harness import same_device
from edgeft.errors import ConfigError, EdgeftError
from edgeft.metrics import Latency

METRICS = ("p50", "p90", "throughput", "memory")
RUNTIME_VERSIONS = ("onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "torch", "driver", "l4t")


@dataclass
class Row:
    key: tuple[str, str, int]
    verdict: str  # ok | regression | failed | improvement | noise | missing | skipped
    baseline: float | None = None
    current: float | None = None
    ratio: float | None = None  # > 1 means worse, whatever the metric
    ci: tuple[float, float] | None = None
    note: str = ""


def _key(r: dict[str, Any]) -> tuple[str, str, int]:
    return (Path(r["model"]).name or r["model"], r["backend"], int(r["batch"]))


def _value(r: dict[str, Any], metric: str, own_memory: bool = False) -> float:
    if metric == "memory":  # like with like: the model's own memory when both sides have it, else process peaks
        return float(model_mb(r) if own_memory else r["memory"]["peak_rss_mb"])
    if metric == "throughput":
        return Latency.from_dict(r["latency_ms"]).throughput_ips
    return float(getattr(Latency.from_dict(r["latency_ms"]), metric))


def _bootstrap_ratio(base: np.ndarray, cur: np.ndarray, q: float, n: int, level: float,
                     rng: np.random.Generator) -> tuple[float, float]:
    """Confidence interval of percentile_q(cur) / percentile_q(base) by resampling both sample sets."""
    b = np.percentile(rng.choice(base, size=(n, len(base)), replace=True), q, axis=1)
    c = np.percentile(rng.choice(cur, size=(n, len(cur)), replace=True), q, axis=1)
    r = c / b
    lo, hi = np.percentile(r, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def _rounds(r: dict[str, Any]) -> list[np.ndarray] | None:
    """The per-round sample arrays of a row benched with several interleaved rounds, else None."""
    sizes = r.get("round_n")
    if not sizes or len(sizes) < 2 or sum(sizes) != len(r.get("samples_ms", ())):
        return None
    return np.split(np.asarray(r["samples_ms"]), np.cumsum(sizes)[:-1])


def _hierarchical_median(rounds: list[np.ndarray], q: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap distribution of "median over rounds of each round's q-th percentile": rounds are resampled,
    then samples within each drawn round, so the between-round spread (what one long run cannot show)
    widens the interval."""
    k = len(rounds)
    picks = rng.integers(0, k, size=(n, k))
    per_round = np.empty((k, n))
    for i, samples in enumerate(rounds):
        per_round[i] = np.percentile(rng.choice(samples, size=(n, len(samples)), replace=True), q, axis=1)
    return np.median(per_round[picks, np.arange(n)[:, None]], axis=1)


def _bootstrap_ratio_rounds(base: list[np.ndarray], cur: list[np.ndarray], q: float, n: int, level: float,
                            rng: np.random.Generator) -> tuple[float, float]:
    r = _hierarchical_median(cur, q, n, rng) / _hierarchical_median(base, q, n, rng)
    lo, hi = np.percentile(r, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def _device(fp: dict[str, Any]) -> str:
    """A fingerprint's device in words: CPU (with its INT8/bf16 units where recorded) and GPU."""
    units = f" ({', '.join(fp['cpu_units']) or 'no INT8 or bf16 unit'})" if "cpu_units" in fp else ""
    return f"{fp.get('cpu')}{units}" + (f" / {fp['gpu']}" if fp.get("gpu") else "")


def compare(baseline: dict[str, Any], current: dict[str, Any], metric: str = "p50", max_regression: float = 0.10,
            allow_different_device: bool = False, normalize: bool = True, level: float = 0.95,
            n_boot: int = 2000, seed: int = 0) -> tuple[list[Row], dict[str, Any]]:
    """Rows of the comparison and a summary (``failed`` is True when any row regressed)."""
    if metric not in METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 0 < max_regression < 10:
        raise ConfigError(f"--max-regression must be a positive fraction like 0.10 (10%), got {max_regression}")
    if not same_device(baseline["device"], current["device"]) and not allow_different_device:
        raise EdgeftError(f"baseline and current were measured on different devices ({_device(baseline['device'])} "
                          f"vs {_device(current['device'])}); compare like with like, or pass --allow-different-device")
    changed = [f"{k} {baseline['device'].get(k)} -> {current['device'].get(k)}" for k in RUNTIME_VERSIONS
               if baseline["device"].get(k) != current["device"].get(k)]
    if changed:  # a runtime upgrade moves latency by itself: say so next to the verdict
        from edgeft import progress

        progress.warn(f"baseline and current ran on different runtime versions ({'; '.join(changed)}): a change may be "
                      "the runtime's, not the model's; refresh the baseline after an upgrade")
    scale = 1.0
    ref_b, ref_c = baseline["device"].get("reference_ms"), current["device"].get("reference_ms")
    if normalize and metric != "memory" and ref_b and ref_c:
        scale = ref_c / ref_b  # > 1: the machine itself is slower now
    rng = np.random.default_rng(seed)
    base_rows = {_key(r): r for r in baseline["results"]}
    cur_rows = {_key(r): r for r in current["results"]}
    rows: list[Row] = []
    for key in sorted(set(base_rows) | set(cur_rows)):
        b, c = base_rows.get(key), cur_rows.get(key)
        if b is None or c is None:
            rows.append(Row(key, "missing", note="only in " + ("current" if b is None else "baseline")))
            continue
        if b["status"] == "ok" and c["status"] == "failed":  # it ran before and crashes now: the worst slowdown
            rows.append(Row(key, "failed", note=c.get("reason", "")[:80]))
            continue
        if b["status"] != "ok" or c["status"] != "ok":  # e.g. a backend missing on this runner: nothing to judge
            rows.append(Row(key, "skipped", note=(c if c["status"] != "ok" else b).get("reason", "")[:80]))
            continue
        own = model_mb(b) is not None and model_mb(c) is not None
        vb, vc = _value(b, metric, own), _value(c, metric, own)
        worse = vb / vc if metric == "throughput" else vc / vb
        ci = None
        if metric in ("p50", "p90", "throughput") and b.get("samples_ms") and c.get("samples_ms"):
            q = 90 if metric == "p90" else 50
            rb, rc = _rounds(b), _rounds(c)
            if metric == "p50" and rb and rc:  # p50 is the median of round p50s: resample rounds too
                ci = _bootstrap_ratio_rounds(rb, rc, q, n_boot, level, rng)
            else:
                ci = _bootstrap_ratio(np.asarray(b["samples_ms"]), np.asarray(c["samples_ms"]), q, n_boot, level, rng)
        if metric != "memory":
            worse /= scale
            ci = (ci[0] / scale, ci[1] / scale) if ci else None
        beyond = worse > 1 + max_regression
        better = worse < 1 / (1 + max_regression)
        significant_worse = ci is None or ci[0] > 1.0
        significant_better = ci is None or ci[1] < 1.0
        verdict = ("regression" if beyond and significant_worse else "improvement" if better and significant_better
                   else "noise" if beyond or better else "ok")
        rows.append(Row(key, verdict, vb, vc, worse, ci))
    summary = {"metric": metric, "max_regression": max_regression, "machine_scale": round(scale, 4),
               "normalized": scale != 1.0, "runtime_changed": changed, "failed": any(r.verdict in ("regression", "failed") for r in rows),
               "counts": {v: sum(r.verdict == v for r in rows) for v in
                          ("ok", "regression", "failed", "improvement", "noise", "missing", "skipped")}}
    return rows, summary


def render(rows: list[Row], summary: dict[str, Any], markdown: bool = False) -> str:
    unit = {"p50": "ms", "p90": "ms", "throughput": "img/s", "memory": "MB"}[summary["metric"]]
    header = ["model", "backend", "batch", f"baseline {unit}", f"current {unit}", "change", "95% CI", "verdict"]
    body = []
    for r in rows:
        change = f"{(r.ratio - 1) * 100:+.1f}%" if r.ratio is not None else ""
        ci = f"{(r.ci[0] - 1) * 100:+.1f}%..{(r.ci[1] - 1) * 100:+.1f}%" if r.ci else ""
        body.append([r.key[0], r.key[1], str(r.key[2]), f"{r.baseline:.3f}" if r.baseline is not None else "",
                     f"{r.current:.3f}" if r.current is not None else "", change, ci,
                     (r.verdict.upper() if r.verdict in ("regression", "failed") else r.verdict)
                     + (f" ({r.note})" if r.note else "")])
    foot = (f"metric {summary['metric']}, threshold +{summary['max_regression'] * 100:.0f}%"
            + (f", machine speed factor {summary['machine_scale']:.3f} divided out" if summary["normalized"] else "")
            + f": {'FAIL' if summary['failed'] else 'pass'} (change > 0 is worse)")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + ["", foot])
    widths = [max(len(header[i]), *(len(row[i]) for row in body)) if body else len(header[i]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*row) for row in body] + [foot])
