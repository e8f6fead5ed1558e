"""The ``edgeft optimize`` report and gates: what each stage bought and what it cost, side by side.

One row per model the run produced: accuracy and balanced accuracy on the held-out split, size,
parameters, MACs, and latency per backend from one interleaved bench run (so ratios between rows are
measured on the same machine state). ``report.md`` is for a repository or a CI log; ``report.html`` is
self-contained (inline SVG and CSS, nothing fetched) for forwarding.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft.bench.footprint import model_mb
from edgeft.bench.harness import cpu_runtime_text
from edgeft.errors import DependencyError, EdgeftError
from edgeft.metrics import (AnomalyFit, Classification, Decisions, Landing, Latency, Outcome, paired_drop,
                            read, split_metrics)


@dataclass
class Row:
    step: str
    stage: str
    label: str
    precision: str
    status: str
    accuracy: Classification | None = None
    split: str = ""  # the split ``accuracy`` was measured on
    size_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # "backend@batch" -> bench row
    sha256: str = ""
    seconds: float = 0.0
    reason: str = ""
    pruning: Landing | None = None  # where pruning landed against its target
    anomaly: AnomalyFit | None = None  # an anomaly model's numbers (task: anomaly), in place of ``accuracy``

    @property
    def decisions(self) -> Decisions | None:
        """AUROC and operating points on the held-out split, of a classifier's "not OK" score or an anomaly score."""
        if self.accuracy is not None:
            return self.accuracy.decisions
        return self.anomaly.test if self.anomaly is not None else None

    @property
    def policy(self) -> Outcome | None:
        """What the model's own policy (its threshold, chosen on val) does on the held-out split."""
        if self.accuracy is not None:
            return self.accuracy.policy
        return self.anomaly.test_policy if self.anomaly is not None else None

    @property
    def measured(self) -> bool:
        return self.accuracy is not None or self.anomaly is not None


def p50_ms(bench_row: dict[str, Any]) -> float:
    """The p50 latency of an ok bench row, read through the typed latency statistics."""
    return Latency.from_dict(bench_row["latency_ms"], f"bench row {bench_row.get('model', '')}").p50


def _bench_doc(run: Path, steps) -> dict[str, Any] | None:
    for s in steps:
        if s.stage == "bench" and (run / s.name / "results.json").is_file():
            return json.loads((run / s.name / "results.json").read_text())
    return None


def _precision(meta: art.Meta) -> str:
    if meta.kind == "engine":
        return str(meta.extra.get("engine", {}).get("precision", "engine")).upper()
    if meta.extra.get("quantized"):
        return f"INT8 ({meta.extra.get('target')})"
    return "FP32"


def _count(a: art.Artifact) -> tuple[int | None, int | None]:
    """(params, MACs) of a PyTorch artifact: torch-pruning's counter when installed, else parameters only."""
    p = read(a.meta.metrics, "prune")
    if p:
        return p.params_after, p.macs_after
    from edgeft.models import count_macs, count_params, from_artifact

    model = from_artifact(a)
    try:
        import torch

        macs, params = count_macs(model, torch.zeros(1, a.meta.input.channels, *a.meta.input.size))
        return params, macs
    except DependencyError:  # torch-pruning not installed: parameters only
        return count_params(model), None


def collect(run: Path, steps, results) -> tuple[list[Row], dict[str, Any] | None]:
    """The report's rows (one per model step) and the bench document."""
    doc = _bench_doc(run, steps)
    by_model: dict[str, dict[str, Any]] = {}
    for r in (doc or {}).get("results", []):
        by_model.setdefault(Path(r["model"]).name, {})[f"{r['backend']}@{r['batch']}"] = r
    rows: list[Row] = []
    counts: dict[str, tuple[int | None, int | None]] = {}
    for s in steps:
        if s.stage == "bench":
            continue
        res = results.get(s.name)
        row = Row(s.name, s.stage, s.label, "", res.status if res else "not run", seconds=res.seconds if res else 0.0,
                  reason=res.reason if res else "")
        rows.append(row)
        if not res or res.status == "skipped":
            continue
        a = art.load(run / s.name)
        row.precision = _precision(a.meta)
        row.anomaly = read(a.meta.metrics, "anomaly")
        if row.anomaly is not None:  # scored on test once, at its own threshold chosen on val
            row.split = "test"
        else:
            split = a.meta.metrics.get("eval_split") or ("test" if "test" in a.meta.metrics else "val")
            row.accuracy, row.split = split_metrics(a.meta.metrics, split), split
        row.size_bytes = a.model_path.stat().st_size
        row.sha256 = a.meta.model_sha256
        counts[s.name] = _count(a) if a.meta.kind == "torch" else counts.get(s.parent, (None, None))
        row.params, row.macs = counts[s.name]
        row.latency = by_model.get(s.name, {})
        prune = read(a.meta.metrics, "prune")
        anomaly_prune = read(a.meta.metrics, "anomaly_prune")
        row.pruning = prune.target if prune else (anomaly_prune.target if anomaly_prune else None)
    return rows, doc


def _final(rows: list[Row], pred) -> Row | None:
    return next((r for r in reversed(rows) if pred(r)), None)


def evaluate_gates(recipe, rows: list[Row], auroc_interval: tuple[float, float] | None = None) -> list[dict[str, Any]]:
    """Each gate on the last model of the run: pass, fail, or not evaluated (with the reason). ``auroc_interval``: the
    paired bootstrap interval of the AUROC drop, said beside the AUROC gate (it does not change the verdict)."""
    gates: list[dict[str, Any]] = []
    g = recipe.gates
    if g.max_accuracy_drop_pp is not None:
        base = rows[0]
        final = _final(rows, lambda r: r.accuracy is not None)
        drop = (base.accuracy.accuracy - final.accuracy.accuracy) * 100
        gates.append({"gate": "max_accuracy_drop_pp", "limit": g.max_accuracy_drop_pp, "value": round(drop, 2),
                      "model": final.step, "status": "pass" if drop <= g.max_accuracy_drop_pp else "fail",
                      "detail": f"{final.label} {final.accuracy.accuracy * 100:.2f}% vs fine-tuned "
                                f"{base.accuracy.accuracy * 100:.2f}% on {base.split}"})
    gates += _decision_gates(g, rows, auroc_interval)
    for key, limit in g.max_p50_ms.items():
        backend, _, batch = str(key).partition("@")
        k = f"{backend}@{batch or 1}"
        final = _final(rows, lambda r: k in r.latency)
        entry = {"gate": f"max_p50_ms.{key}", "limit": float(limit), "value": None, "model": None}
        if final is None:
            gates.append({**entry, "status": "not evaluated", "detail": f"no model was benched on {k}"})
            continue
        r = final.latency[k]
        if r["status"] != "ok":  # a model that fails on the gated backend fails the gate; a backend missing here
            gates.append({**entry, "model": final.step,  # (a TensorRT gate on a CPU machine) cannot judge it
                          "status": "fail" if r["status"] == "failed" else "not evaluated",
                          "detail": f"{backend} {r['status']}: {r.get('reason', '')[:160]}"})
            continue
        p50 = p50_ms(r)
        gates.append({**entry, "value": round(p50, 3), "model": final.step,
                      "status": "pass" if p50 <= float(limit) else "fail", "detail": f"{final.label} on {k}"})
    return gates


def _decision_gates(g, rows: list[Row], auroc_interval: tuple[float, float] | None = None) -> list[dict[str, Any]]:
    """The final model against the fine-tuned one, each at its own policy's operating point on the held-out split."""
    asked = [(name, getattr(g, name)) for name in g.DECISION_GATES if getattr(g, name) is not None]
    if not asked:
        return []
    base = rows[0]
    final = _final(rows, lambda r: r.policy is not None or (r.anomaly is not None and r.decisions is not None))
    out = []
    for name, limit in asked:
        entry = {"gate": name, "limit": limit, "value": None, "model": final.step if final else None}
        needs = (lambda r: r.decisions is not None) if name == "max_auroc_drop" else (lambda r: r.policy is not None)
        if final is None or not needs(base) or not needs(final):
            out.append({**entry, "status": "not evaluated", "detail": "no model was measured at a decision policy"
                        if name != "max_auroc_drop" else "AUROC is undefined: the held-out split lacks good or "
                                                          "anomalous parts"})
            continue
        b, f = base, final
        if name == "max_auroc_drop":
            value, text = b.decisions.auroc - f.decisions.auroc, f"AUROC {f.decisions.auroc:.3f} vs {b.decisions.auroc:.3f}"
        elif name == "max_recall_drop_pp":
            value = (b.policy.recall - f.policy.recall) * 100
            text = f"recall {f.policy.recall * 100:.1f}% vs {b.policy.recall * 100:.1f}%"
        else:
            value = (f.policy.false_reject - b.policy.false_reject) * 100
            text = f"false reject {f.policy.false_reject * 100:.1f}% vs {b.policy.false_reject * 100:.1f}%"
        detail = f"{final.label} {text} {base.label}, on {base.split}, each at its own val-chosen policy"
        if name == "max_auroc_drop" and auroc_interval is not None:
            lo, hi = auroc_interval
            detail += (f"; paired bootstrap 95% interval of the drop {lo:+.3f} to {hi:+.3f}"
                       + (" (it holds the limit: more test parts would settle the verdict)" if lo <= limit <= hi
                          else ""))
        out.append({**entry, "value": round(value, 4 if name == "max_auroc_drop" else 2),
                    "status": "pass" if value <= limit + 1e-12 else "fail", "detail": detail})
    return out


# ----------------------------------------------------------------------------------------------- rendering

def _fmt(v: float | None, spec: str, scale: float = 1.0) -> str:
    return "—" if v is None else format(v * scale, spec)


def _latency_keys(rows: list[Row]) -> list[str]:
    """Latency columns in the runtime's backend-table order (deployment backends first, PyTorch last); then batch."""
    from edgeft.runtime.backends import BACKENDS

    keys = {k for r in rows for k in r.latency}
    rank = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(keys, key=lambda k: (rank.get(k.split("@")[0], len(rank)), int(k.split("@")[1])))


def _reference(rows: list[Row], key: str) -> Row | None:
    """The row a latency column's speed-ups are relative to: the first model measured there."""
    return next((r for r in rows if key in r.latency and r.latency[key]["status"] == "ok"), None)


def round_ratios(slow: dict[str, Any], fast: dict[str, Any]) -> list[float]:
    """How many times faster ``fast`` ran than ``slow`` in each interleaved bench round (two bench rows of one run).

    Round r of every row is measured in the same pass over the models, seconds apart, so each ratio sees one machine
    state; their spread shows how much a ratio of medians owes to the moment on a shared host. Empty when the rows
    were not measured in the same rounds."""
    a, b = slow.get("round_p50_ms") or [], fast.get("round_p50_ms") or []
    if len(a) < 2 or len(a) != len(b) or slow.get("status") != "ok" or fast.get("status") != "ok":
        return []
    return [x / y for x, y in zip(a, b)]


def _ratio_text(slow: dict[str, Any], fast: dict[str, Any]) -> str:
    r = round_ratios(slow, fast)
    return f"per round {min(r):.1f}-{max(r):.1f}x over {len(r)} interleaved rounds" if r else ""


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """The stages table: a classifier's accuracy, or an anomaly model's AUROC, average precision and statistics, next
    to its operating point on the held-out split (at its own threshold), size and latency."""
    keys = _latency_keys(rows)
    classify = any(r.accuracy for r in rows)
    anomaly = any(r.anomaly for r in rows)
    decided = any(r.policy for r in rows) or any(r.anomaly and r.decisions for r in rows)
    review = any(r.policy and r.policy.reviewed for r in rows)
    header = ["stage", "model", "precision"] + (["accuracy", "balanced acc."] if classify else [])
    if decided:
        header += ["AUROC"] + (["AP"] if anomaly else []) + ["recall", "false reject"] + (["review"] if review else [])
    header += (["statistics MB"] if anomaly else []) + ["size MB", "params M", "MMACs"]
    header += [f"{k} p50 ms" for k in keys] + ["memory MB"]
    body = []
    for r in rows:
        acc = r.accuracy
        line = [r.step, r.label, r.precision or r.status]
        if classify:
            line += [_fmt(acc and acc.accuracy, ".2f", 100) + ("%" if acc else ""),
                     _fmt(acc and acc.balanced_accuracy, ".2f", 100) + ("%" if acc else "")]
        if decided:
            d, pol = r.decisions, r.policy
            line += [_fmt(d and d.auroc, ".3f")] + ([_fmt(d and d.average_precision, ".3f")] if anomaly else [])
            line += [_fmt(pol and pol.recall, ".1f", 100) + ("%" if pol else ""),
                     _fmt(pol and pol.false_reject, ".1f", 100) + ("%" if pol else "")]
            line += [_fmt(pol and pol.review_rate, ".1f", 100) + ("%" if pol else "")] if review else []
        if anomaly:
            line.append(_fmt(r.anomaly and r.anomaly.bank_bytes, ".2f", 1e-6))
        line += [_fmt(r.size_bytes, ".2f", 1e-6), _fmt(r.params, ".2f", 1e-6), _fmt(r.macs, ".0f", 1e-6)]
        for k in keys:
            b = r.latency.get(k)
            ref = _reference(rows, k)
            if b is None:
                line.append("")
            elif b["status"] != "ok":
                line.append(b["status"])
            else:
                p50 = p50_ms(b)
                speed = p50_ms(ref.latency[k]) / p50 if ref is not None and ref is not r else None
                line.append(f"{p50:.2f}" + (f" ({speed:.2f}x)" if speed else ""))
        # memory: the model's resident memory in a process of its own, above the runtime's (largest over backends)
        mem = [m for b in r.latency.values() if b["status"] == "ok" and (m := model_mb(b)) is not None]
        line.append(f"{max(mem):.0f}" if mem else "")
        if r.status == "skipped":
            line[2] = "skipped"
        body.append(line)
    return header, body


def headline(rows: list[Row], gates: list[dict[str, Any]],
             cpu_runtimes: dict[str, Any] | None = None) -> list[str]:
    """Plain sentences: what the final model gained over the fine-tuned one, and the gates."""
    out = []
    final = _final(rows, lambda r: r.measured)
    base = rows[0]
    if final is not None and final is not base and base.measured:
        smaller = f"; {base.size_bytes / final.size_bytes:.1f}x smaller" if final.size_bytes and base.size_bytes else ""
        if base.accuracy and final.accuracy:
            out.append(f"Final model {final.step} ({final.label}): accuracy {final.accuracy.accuracy * 100:.2f}% vs "
                       f"{base.accuracy.accuracy * 100:.2f}% fine-tuned "
                       f"({(final.accuracy.accuracy - base.accuracy.accuracy) * 100:+.2f} pp), balanced "
                       f"{final.accuracy.balanced_accuracy * 100:.2f}% vs {base.accuracy.balanced_accuracy * 100:.2f}%"
                       + smaller + ".")
        elif base.decisions and final.decisions:
            f, b = final.decisions.auroc, base.decisions.auroc
            out.append(f"Final model {final.step} ({final.label}): {final.split} AUROC {f:.3f} vs {b:.3f} for "
                       f"{base.label} ({f - b:+.3f})" + smaller + ".")
        for k in final.latency:
            b = final.latency[k]
            ref = _reference(rows, k)
            if b["status"] == "ok" and ref is not None and ref is not final:
                ref_ms = p50_ms(ref.latency[k])
                spread = _ratio_text(ref.latency[k], b)
                out.append(f"On {k}: {p50_ms(b):.2f} ms p50, {ref_ms / p50_ms(b):.2f}x faster "
                           f"than {ref.label} ({ref_ms:.2f} ms" + (f"; {spread}" if spread else "") + ").")
        eager = base.latency.get("torch@1")
        fk = next((k for k in final.latency if k.endswith("@1") and final.latency[k]["status"] == "ok"), None)
        if eager and eager["status"] == "ok" and fk and fk != "torch@1":
            spread = _ratio_text(eager, final.latency[fk])
            out.append(f"Against PyTorch eager FP32 (batch 1): {p50_ms(eager) / p50_ms(final.latency[fk]):.1f}x "
                       f"faster on {fk}" + (f" ({spread})" if spread else "") + ".")
    if final is not None and final.policy and base.policy:
        f, b = final, base
        out.append(f"Decisions on {final.split} (not OK = {' + '.join(f.decisions.positive)}; each model's threshold "
                   f"chosen on val): final recall {f.policy.recall * 100:.1f}% at {f.policy.false_reject * 100:.1f}% "
                   f"false rejects" + (f", {f.policy.review_rate * 100:.1f}% reviewed" if f.policy.reviewed else "")
                   + f", AUROC {f.decisions.auroc:.3f}; {base.label} {b.policy.recall * 100:.1f}% at "
                   f"{b.policy.false_reject * 100:.1f}%, AUROC {b.decisions.auroc:.3f}.")
    for r in rows:
        if r.pruning:
            out.append(f"Pruning ({r.step}) {r.pruning.text()}.")
    for model, record in (cpu_runtimes or {}).items():
        text = cpu_runtime_text(Path(model).name, record)
        out.append(text[0].upper() + text[1:] + ".")
    if gates:
        failed = [g for g in gates if g["status"] == "fail"]
        out.append("Gates: " + ("FAILED — " + "; ".join(f"{g['gate']} = {g['value']} (limit {g['limit']})"
                                                         if g["value"] is not None else f"{g['gate']}: {g['detail']}"
                                                         for g in failed)
                                if failed else "all passed" if all(g["status"] == "pass" for g in gates)
                                else "passed where evaluated"))
    return out


def stage_time(results) -> str:
    """The run's wall time, summed over its stages; stages reused from an earlier run count with their first time."""
    ran = sum(r.seconds for r in results.values() if r.status == "done")
    reused = sum(r.seconds for r in results.values() if r.status == "reused")
    return (f"Stage time: {(ran + reused) / 60:.1f} min" + (f" ({ran / 60:.1f} min in this run, {reused / 60:.1f} min "
                                                            "reused from earlier runs)" if reused else "") + ".")


def pareto_svg(rows: list[Row], width: int = 640, height: int = 380) -> str:
    """Accuracy (an anomaly model: AUROC) against p50 latency for every (model, backend) at batch 1; the Pareto front
    joined."""
    pts = []
    quality = "accuracy (%)" if any(r.accuracy for r in rows) else "AUROC (x 100)"
    for r in rows:
        value = r.accuracy.accuracy if r.accuracy else (r.decisions.auroc if r.anomaly and r.decisions else None)
        if value is None:
            continue
        for k, b in r.latency.items():
            if k.endswith("@1") and b["status"] == "ok":
                pts.append((p50_ms(b), value * 100, f"{r.step} {k[:-2]}"))
    if not pts:
        return ""
    ml, mr, mt, mb = 60, 20, 20, 45
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys) - 2, max(ys) + 2
    sx = lambda v: ml + (v - x0) / (x1 - x0) * (width - ml - mr)  # noqa: E731
    sy = lambda v: height - mb - (v - y0) / (y1 - y0) * (height - mt - mb)  # noqa: E731
    front, best = [], -1.0
    for p in sorted(pts):
        if p[1] > best:
            front.append(p)
            best = p[1]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{ml}" y1="{height - mb}" x2="{width - mr}" y2="{height - mb}" stroke="#333"/>',
             f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{height - mb}" stroke="#333"/>']
    for i in range(6):
        xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - mb + 15}" text-anchor="middle">{xv:.1f}</text>')
        parts.append(f'<text x="{ml - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.1f}</text>')
        parts.append(f'<line x1="{ml}" y1="{sy(yv):.1f}" x2="{width - mr}" y2="{sy(yv):.1f}" stroke="#eee"/>')
    parts.append(f'<text x="{(width + ml) / 2}" y="{height - 8}" text-anchor="middle">p50 latency, batch 1 (ms)</text>')
    parts.append(f'<text x="14" y="{(height - mb) / 2}" text-anchor="middle" transform="rotate(-90 14 {(height - mb) / 2})">'
                 f'{quality}</text>')
    if len(front) > 1:
        parts.append('<polyline fill="none" stroke="#2a7" stroke-width="1.5" stroke-dasharray="4 3" points="'
                     + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in front) + '"/>')
    for x, y, label in pts:
        on_front = any(p[2] == label for p in front)
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{"#2a7" if on_front else "#888"}"/>')
        parts.append(_point_label(sx(x), sy(y), label, width))
    parts.append("</svg>")
    return "\n".join(parts)


ROC_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def roc_svg(rows: list[Row], size: int = 380) -> str:
    """The ROC curve of every model on the held-out split, overlaid, each model's operating point (its policy's
    recall and false reject there) marked with a dot."""
    curves = [r for r in rows if r.decisions and r.decisions.roc]
    if not curves:
        return ""
    m, legend_w = 45, 260
    w = size - m - 10
    sx = lambda v: m + v * w  # noqa: E731
    sy = lambda v: size - m - v * w  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + legend_w}" height="{size}" '
             'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<rect x="{m}" y="{size - m - w}" width="{w}" height="{w}" fill="none" stroke="#333"/>',
             f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="#ddd" stroke-dasharray="3 3"/>']
    for i in range(6):
        v = i / 5
        parts.append(f'<text x="{sx(v):.1f}" y="{size - m + 14}" text-anchor="middle">{v:.1f}</text>')
        parts.append(f'<text x="{m - 5}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    parts.append(f'<text x="{m + w / 2}" y="{size - 8}" text-anchor="middle">false-reject rate (good parts)</text>')
    parts.append(f'<text x="12" y="{size / 2}" text-anchor="middle" transform="rotate(-90 12 {size / 2})">'
                 'recall (defective parts caught)</text>')
    for i, r in enumerate(curves):
        c = ROC_COLOURS[i % len(ROC_COLOURS)]
        d = r.decisions
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                     + " ".join(f"{sx(f):.1f},{sy(t):.1f}" for f, t in d.roc) + '"/>')
        pol = r.policy
        if pol:
            parts.append(f'<circle cx="{sx(pol.false_reject):.1f}" cy="{sy(pol.recall):.1f}" r="4" fill="{c}"/>')
        y = 20 + i * 16
        parts.append(f'<rect x="{size + 5}" y="{y - 9}" width="10" height="10" fill="{c}"/>')
        parts.append(f'<text x="{size + 20}" y="{y}">{html.escape(f"{r.step} AUROC {d.auroc:.3f}")}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


LABEL_CHAR_PX = 6.5  # a generous width of one character at font-size 11 in a sans-serif font


def _point_label(x: float, y: float, label: str, width: int) -> str:
    """A point's label to its right, or to its left where it would run past the plot's right edge."""
    if x + 6 + len(label) * LABEL_CHAR_PX > width - 2:
        return f'<text x="{x - 6:.1f}" y="{y - 6:.1f}" text-anchor="end">{html.escape(label)}</text>'
    return f'<text x="{x + 6:.1f}" y="{y - 6:.1f}">{html.escape(label)}</text>'


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def _html_table(header: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _confusion(rows: list[Row], classes: list[str]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    for r in rows:
        if r.accuracy:
            header = ["true \\ predicted", *classes, "recall"]
            body = [[c, *[str(v) for v in line], f"{r.accuracy.per_class[c].recall * 100:.1f}%"]
                    for c, line in zip(classes, r.accuracy.confusion)]
            out.append((f"{r.step} — {r.label} ({r.split}, n={r.accuracy.n})", header, body))
    return out


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}td:first-child,th:first-child,td:nth-child(2){text-align:left}th{background:#f3f3f3}
.pass{color:#1a7f37;font-weight:600}.fail{color:#c62828;font-weight:600}.skip{color:#8a6d00}
pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:12px}.grid{display:flex;flex-wrap:wrap;gap:1.5em}
figure{margin:0;width:224px;font-size:12px}figure img{width:224px;image-rendering:auto}"""


GALLERY_NOTE = ("The final model's view of each test part (the highest anomaly scores first, then the defective parts "
                "its policy passed, lowest score first), with its heatmap on a fixed scale: blue at a typical good "
                "patch, red at the reject threshold, as `edgeft infer --heatmaps` draws it.")


def _pct(d: dict[str, Any] | None, *keys: str) -> str:
    for k in keys:
        d = (d or {}).get(k)
    return "—" if d is None else f"{d * 100:.1f}%"


def verdict_line(v: dict[str, Any]) -> str:
    """One line per gate: by how much it missed, and what to try."""
    unit = {"max_accuracy_drop_pp": " pp", "max_recall_drop_pp": " pp", "max_false_reject_rise_pp": " pp",
            "max_auroc_drop": ""}.get(v["gate"], " ms")
    if v["status"] == "pass":
        return f"{v['gate']}: met ({v['value']}{unit}, limit {v['limit']}{unit})"
    if v["gate"].startswith("max_p50_ms"):
        hint = "add smaller ratios to search.target_macs, or relax the latency gate"
    else:
        hint = ("add larger ratios to search.target_macs, qat to search.method, more prune.recover_epochs, or relax "
                "the gate")
    return (f"{v['gate']}: missed by {v['value'] - v['limit']:.4g}{unit} ({v['value']}{unit} against {v['limit']}"
            f"{unit}, on val); try: {hint}")


def _drop_text(p: dict[str, Any]) -> str:
    return f"{p['drop_pp']:+.2f} ± {p['se_pp']:.2f} pp (worse on {p['worse_on']}, better on {p['better_on']})"


def search_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every candidate the search considered, in the order it was paid for, with what it measured on val."""
    base = result["baseline_val"]
    header = ["candidate", "MACs kept", "val acc. before recovery", "val acc. (INT8)", "drop ± 1 SE (paired)", "AUROC",
              "recall / false reject", "ORT CPU p50", "speed-up (rounds)", "minutes", "status"]
    body = []
    for c in result["candidates"]:
        v = c.get("val")
        sp = c.get("speedups") or []
        failed = [g["gate"] for g in c.get("verdicts", []) if g["status"] == "fail"]
        status = ("**shipped** " if c["key"] == result["chosen"] else "") + (
            c["status"] + (f" ({', '.join(failed)})" if failed else "") if v else f"not run: {c.get('reason', '')}")
        body.append([c["key"], _fmt(c.get("macs_ratio"), ".3f"), _pct(c, "val_before_recovery"), _pct(v, "accuracy"),
                     _drop_text(paired_drop(base["labels"], base["predictions"], c["val_predictions"]))
                     if v and c.get("val_predictions") and base.get("labels") else "—",
                     _fmt(((v or {}).get("decisions") or {}).get("auroc"), ".3f"),
                     f"{_pct(v, 'policy', 'recall')} / {_pct(v, 'policy', 'false_reject')}" if v and v.get("policy")
                     else "—", _fmt(c.get("p50_ms"), ".2f") + (" ms" if c.get("p50_ms") else ""),
                     f"{statistics.median(sp):.2f}x ({min(sp):.2f}-{max(sp):.2f})" if sp else "—",
                     f"{c['seconds'] / 60:.1f}" if c.get("seconds") else "—", status])
    return header, body


def search_lines(result: dict[str, Any]) -> list[str]:
    """What the search did and why it shipped what it shipped, in sentences."""
    if not result.get("candidates"):
        return []
    chosen = next(c for c in result["candidates"] if c["key"] == result["chosen"])
    tried = sum(1 for c in result["candidates"] if c.get("val"))
    out = [f"Search: {tried} of {len(result['candidates'])} candidates paid for in {result['seconds'] / 60:.1f} min "
           f"(budget {result['budget_s'] / 60:.0f} min); every decision on val, with the test split sealed until "
           f"the shipped model was chosen; test was then read once, for the fine-tuned and the shipped models.",
           f"Shipped {chosen['key']}: " + ("it met every gate on val, and no faster candidate did." if result["passed"]
                                          else "no candidate met every gate on val; this is the best compromise "
                                               "(the fastest whose worst miss, relative to its limit, is within one "
                                               "paired standard error of the smallest).")]
    out += [f"On val, {verdict_line(v)}" for v in chosen.get("verdicts", []) if v["status"] == "fail"]
    return out


def search_svg(result: dict[str, Any], width: int = 560, height: int = 320) -> str:
    """Val accuracy against ORT CPU p50 for every candidate paid for; the shipped one ringed."""
    pts = [(c["p50_ms"], c["val"]["accuracy"] * 100, c["key"]) for c in result["candidates"]
           if c.get("val") and c.get("p50_ms")]
    if not pts:
        return ""
    base_acc = result["baseline_val"]["accuracy"] * 100
    ml, mr, mt, mb = 60, 20, 20, 45
    xs, ys = [p[0] for p in pts], [p[1] for p in pts] + [base_acc]
    x0, x1, y0, y1 = 0.0, max(xs) * 1.15, min(ys) - 2, max(ys) + 2
    sx = lambda v: ml + (v - x0) / (x1 - x0) * (width - ml - mr)  # noqa: E731
    sy = lambda v: height - mb - (v - y0) / (y1 - y0) * (height - mt - mb)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{ml}" y1="{height - mb}" x2="{width - mr}" y2="{height - mb}" stroke="#333"/>',
             f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{height - mb}" stroke="#333"/>',
             f'<line x1="{ml}" y1="{sy(base_acc):.1f}" x2="{width - mr}" y2="{sy(base_acc):.1f}" stroke="#999" '
             f'stroke-dasharray="4 3"/>', _point_label(width - mr - 80, sy(base_acc), "fine-tuned (val)", width)]
    for i in range(6):
        xv, yv = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - mb + 15}" text-anchor="middle">{xv:.1f}</text>')
        parts.append(f'<text x="{ml - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.1f}</text>')
    parts.append(f'<text x="{(width + ml) / 2}" y="{height - 8}" text-anchor="middle">ORT CPU p50, batch 1 (ms)</text>')
    parts.append(f'<text x="14" y="{(height - mb) / 2}" text-anchor="middle" transform="rotate(-90 14 {(height - mb) / 2})">'
                 'val accuracy, INT8 (%)</text>')
    for x, y, label in pts:
        shipped = label == result["chosen"]
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{"#2a7" if shipped else "#888"}"/>')
        if shipped:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="8" fill="none" stroke="#2a7" stroke-width="2"/>')
        parts.append(_point_label(sx(x), sy(y), label + (" (shipped)" if shipped else ""), width))
    parts.append("</svg>")
    return "\n".join(parts)


def write_report(recipe, run: Path, steps, results, rows: list[Row], doc: dict[str, Any] | None,
                 gates: list[dict[str, Any]], search: dict[str, Any] | None = None, tiles: list | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``pareto.svg`` into the run folder (atomically each); with a search's
    result, its candidates too (``search.svg``); with an anomaly model's gallery (``tiles``,
    :func:`edgeft.optimize.gallery.gallery`), its test parts and heatmaps (embedded in the HTML)."""
    first = next((r for r in rows if r.measured), None)
    if first is None:
        raise EdgeftError(f"no stage in {run} produced a model to report on")
    classes = art.load(run / rows[0].step).meta.class_names
    header, body = table(rows)
    lines = headline(rows, gates, (doc or {}).get("cpu_runtime")) + [stage_time(results)]
    svg = pareto_svg(rows)
    roc = roc_svg(rows)
    device = (doc or {}).get("device") or {}
    gate_header = ["gate", "limit", "value", "model", "status", "detail"]
    gate_body = [[g["gate"], str(g["limit"]), "—" if g["value"] is None else str(g["value"]), g["model"] or "—",
                  g["status"], g["detail"]] for g in gates]
    lineage_header = ["step", "stage", "reads", "status", "seconds", "model sha256", "note"]
    lineage_body = []
    for s in steps:
        res = results.get(s.name)
        sha = next((r.sha256[:12] for r in rows if r.step == s.name and r.sha256), "")
        lineage_body.append([s.name, s.stage, s.parent or (", ".join(s.inputs) if s.inputs else "pretrained weights"),
                             res.status if res else "not run", f"{res.seconds:.0f}" if res else "", sha,
                             (res.reason[:120] if res else "")])
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    import yaml

    recipe_yaml = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
    bench_note = ""
    if doc:
        c = doc["config"]
        bench_note = (f"Latency: batch {', '.join(map(str, c['batches']))}, {c.get('threads') or 'default'} threads, "
                      f"{c.get('rounds', 1)} interleaved rounds of {c.get('duration_s')} s per model and backend; "
                      "p50 = median of the rounds' p50s; (Nx) = speed-up over the first model measured on that backend; "
                      "memory = peak resident memory of a process that loads and runs only that model, above the same "
                      "process's resident memory with the runtime imported (CPU backends).")

    md = [f"# edgeft optimize: {recipe.name}", "", f"Recipe `{recipe.source}`, data `{recipe.data}`, written {created}.", ""]
    md += [f"- {line}" for line in lines] + [""]
    md += ["## Stages", ""] + _md_table(header, body) + ["", bench_note, ""]
    quality = "Accuracy" if any(r.accuracy for r in rows) else "AUROC"
    if svg:
        md += [f"![{quality} vs latency](pareto.svg)", ""]
    if roc:
        md += ["![ROC of every model, each operating point marked](roc.svg)", ""]
    if gates:
        md += ["## Gates", ""] + _md_table(gate_header, gate_body) + [""]
    ssvg = ""
    if search:
        sh, sb = search_table(search)
        ssvg = search_svg(search)
        md += ["## Search (on val)", ""] + [f"- {line}" for line in search_lines(search)] + [""] + _md_table(sh, sb)
        md += ([""] + (["![val accuracy vs latency of every candidate](search.svg)"] if ssvg else []) + [""])
    if tiles:
        md += ["## Test parts and their heatmaps", "", GALLERY_NOTE, ""]
        for group in ("most anomalous", "escaped"):
            md += [f"**{group}**", ""] + [f"![{t.caption}]({t.file}) {t.caption}  " for t in tiles if t.group == group]
            md += [""]
    if any(r.accuracy for r in rows):
        md += ["## Confusion matrices", ""]
    for title, h, b in _confusion(rows, classes):
        md += [f"**{title}**", ""] + _md_table(h, b) + [""]
    md += ["## Lineage", ""] + _md_table(lineage_header, lineage_body) + [""]
    md += ["## Device", "", "```json", json.dumps(device, indent=1), "```", "", "## Recipe (resolved)", "", "```yaml",
           recipe_yaml.rstrip(), "```", ""]

    def gate_cell(status: str) -> str:
        cls = {"pass": "pass", "fail": "fail"}.get(status, "skip")
        return f'<span class="{cls}">{html.escape(status)}</span>'

    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgeft optimize: {html.escape(recipe.name)}</title>"
         f"<style>{CSS}</style></head><body>",
         f"<h1>edgeft optimize: {html.escape(recipe.name)}</h1>",
         f"<p>Recipe <code>{html.escape(recipe.source)}</code>, data <code>{html.escape(str(recipe.data))}</code>, "
         f"written {created}.</p>",
         "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>",
         "<h2>Stages</h2>", _html_table(header, body), f"<p>{html.escape(bench_note)}</p>"]
    if svg:
        h += [f"<h2>{quality} vs latency</h2>", svg]
    if roc:
        h += ["<h2>ROC on the held-out split</h2><p>Each model's operating point (its own threshold, chosen on val) is "
              "the dot on its curve.</p>", roc]
    if gates:
        gt = _html_table(gate_header, gate_body)
        for g in gates:
            gt = gt.replace(f"<td>{html.escape(g['status'])}</td>", f"<td>{gate_cell(g['status'])}</td>", 1)
        h += ["<h2>Gates</h2>", gt]
    if search:
        h += ["<h2>Search (on val)</h2>", "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in search_lines(search))
              + "</ul>", _html_table(*search_table(search)), ssvg]
    if tiles:
        h += ["<h2>Test parts and their heatmaps</h2>", f"<p>{html.escape(GALLERY_NOTE)}</p>"]
        for group in ("most anomalous", "escaped"):
            shown = [t for t in tiles if t.group == group]
            h += [f"<h3>{group} ({len(shown)})</h3><div class='grid'>"] + [
                f"<figure><img src='{t.data_uri()}' alt='{html.escape(t.caption)}'><figcaption>"
                f"{html.escape(t.caption)}</figcaption></figure>" for t in shown] + ["</div>"]
    if any(r.accuracy for r in rows):
        h.append("<h2>Confusion matrices</h2>")
    h.append("<div class='grid'>")
    for title, hh, b in _confusion(rows, classes):
        h += [f"<div><b>{html.escape(title)}</b>", _html_table(hh, b), "</div>"]
    h += ["</div>", "<h2>Lineage</h2>", _html_table(lineage_header, lineage_body),
          "<h2>Device</h2>", f"<pre>{html.escape(json.dumps(device, indent=1))}</pre>",
          "<h2>Recipe (resolved)</h2>", f"<pre>{html.escape(recipe_yaml)}</pre>", "</body></html>"]
    for name, text in (("report.md", "\n".join(md)), ("report.html", "\n".join(h)), ("pareto.svg", svg),
                       ("roc.svg", roc), ("search.svg", ssvg)):
        if not text:
            continue
        tmp = run / f".{name}.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(run / name)
    return run / "report.html"
