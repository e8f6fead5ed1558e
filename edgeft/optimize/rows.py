"""The report's rows: one per model the run produced, with what its task measured (accuracy, AUROC, ...), size,
parameters, MACs, where pruning landed, and latency per backend from one interleaved bench run (so ratios between
rows are measured on the same machine state). Collecting only: gates judge rows (:mod:`edgeft.optimize.gates`), the
report renders them (:mod:`edgeft.optimize.report`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft.bench.footprint import model_mb
from edgeft.errors import DependencyError
from edgeft.metrics import AnomalyFit, Classification, Decisions, Landing, Latency, Outcome, read
from edgeft.tasks import registry as tasks


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
    quality: float | None = None  # the number the charts plot against latency (accuracy, AUROC, ...), from the task
    quality_name: str = "quality"  # what ``quality`` is, in words
    task_metrics: Any = None  # a task's own record where it has no accuracy or AUROC
    image_decisions: Decisions | None = None  # a task's own part-level ones (a detector: its best defect box)
    image_policy: Outcome | None = None
    history: list[dict[str, Any]] | None = None  # a trained model's epoch records (meta.json extra.history)
    runtime: dict[str, Any] | None = None  # the runtime it ships on, where the search chose one (extra.runtime)

    @property
    def decisions(self) -> Decisions | None:
        """AUROC and operating points on the held-out split, of a classifier's "not OK" score or an anomaly score."""
        if self.accuracy is not None:
            return self.accuracy.decisions
        return self.anomaly.test if self.anomaly is not None else self.image_decisions

    @property
    def policy(self) -> Outcome | None:
        """What the model's own policy (its threshold, chosen on val) does on the held-out split."""
        if self.accuracy is not None:
            return self.accuracy.policy
        return self.anomaly.test_policy if self.anomaly is not None else self.image_policy

    @property
    def measured(self) -> bool:
        return self.accuracy is not None or self.anomaly is not None or self.quality is not None


def p50_ms(bench_row: dict[str, Any]) -> float:
    """The p50 latency of an ok bench row, read through the typed latency statistics."""
    return Latency.from_dict(bench_row["latency_ms"], f"bench row {bench_row.get('model', '')}").p50


def p99_ms(bench_row: dict[str, Any]) -> float:
    """The p99 latency of an ok bench row: the tail a camera's frame budget must hold, beside the median."""
    return Latency.from_dict(bench_row["latency_ms"], f"bench row {bench_row.get('model', '')}").p99


def rate_text(rate: float, interval: tuple[float, float]) -> str:
    """A recall or false-reject rate with its 95% interval, in percent: ``92.7% (86.7-96.1)``."""
    lo, hi = interval
    return f"{rate * 100:.1f}% ({lo * 100:.1f}-{hi * 100:.1f})"


CHOICE_FILE = "ship.json"  # the ship step's candidates, beside its artifact (edgeft.optimize.ship)


def load_choice(step_dir: Path) -> dict[str, Any] | None:
    """A ship step's ``ship.json`` (None when the folder has none)."""
    p = step_dir / CHOICE_FILE
    return json.loads(p.read_text()) if p.is_file() else None


def _bench_doc(run: Path, steps) -> dict[str, Any] | None:
    for s in steps:
        if s.stage == "bench" and (run / s.name / "results.json").is_file():
            return json.loads((run / s.name / "results.json").read_text())
    return None


def _precision(meta: art.Meta) -> str:
    if meta.kind == "engine":
        return str(meta.extra.get("engine", {}).get("precision", "engine")).upper()
    rt = meta.extra.get("runtime")
    if rt:  # chosen by the search or the ship step: the precision it computes in there
        inference = rt.get("inference_precision", "")
        return (f"{'INT8' if meta.extra.get('quantized') else 'FP32'} on {rt.get('backend')}"
                + (f", {inference} inference" if inference == "bf16" else ""))
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
        for key, value in tasks.of(a.meta).read_row(a.meta).items():  # the task says what its numbers are
            setattr(row, key, value)
        row.size_bytes = a.model_path.stat().st_size
        if a.meta.kind == "torch" and a.meta.extra.get("history"):
            row.history = a.meta.extra["history"]
        row.sha256 = a.meta.model_sha256
        row.runtime = a.meta.extra.get("runtime")
        source = s.parent or (load_choice(run / s.name) or {}).get("step")  # the ship step: its chosen model's
        counts[s.name] = _count(a) if a.meta.kind == "torch" else counts.get(source, (None, None))
        row.params, row.macs = counts[s.name]
        row.latency = by_model.get(s.name, {})
        prune = read(a.meta.metrics, "prune")
        anomaly_prune = read(a.meta.metrics, "anomaly_prune")
        row.pruning = prune.target if prune else (anomaly_prune.target if anomaly_prune else None)
    return rows, doc


def final(rows: list[Row], pred) -> Row | None:
    return next((r for r in reversed(rows) if pred(r)), None)


def fmt(v: float | None, spec: str, scale: float = 1.0) -> str:
    return "—" if v is None else format(v * scale, spec)


def latency_keys(rows: list[Row]) -> list[str]:
    """Latency columns in the runtime's backend-table order (deployment backends first, PyTorch last); then batch."""
    from edgeft.runtime.backends import BACKENDS

    keys = {k for r in rows for k in r.latency}
    rank = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(keys, key=lambda k: (rank.get(k.split("@")[0], len(rank)), int(k.split("@")[1])))


def reference(rows: list[Row], key: str) -> Row | None:
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


def ratio_text(slow: dict[str, Any], fast: dict[str, Any]) -> str:
    r = round_ratios(slow, fast)
    return f"per round {min(r):.1f}-{max(r):.1f}x over {len(r)} interleaved rounds" if r else ""


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """The stages table: a classifier's accuracy, an anomaly model's AUROC, average precision and statistics, or
    another task's own number, next to its operating point on the held-out split (at its own threshold), size and
    latency."""
    keys = latency_keys(rows)
    classify = any(r.accuracy for r in rows)
    anomaly = any(r.anomaly for r in rows)
    decided = any(r.policy for r in rows) or any(r.anomaly and r.decisions for r in rows)
    review = any(r.policy and r.policy.reviewed for r in rows)
    own = not classify and not anomaly and any(r.quality is not None for r in rows)  # a task's own number
    header = ["stage", "model", "precision"] + (["accuracy", "balanced acc."] if classify else [])
    header += [next(r.quality_name for r in rows if r.quality is not None)] if own else []
    if decided:
        header += ["AUROC"] + (["AP"] if anomaly else []) + ["recall", "false reject"] + (["review"] if review else [])
    header += (["statistics MB"] if anomaly else []) + ["size MB", "params M", "MMACs"]
    header += [f"{k} p50 / p99 ms" for k in keys] + ["memory MB"]
    body = []
    for r in rows:
        acc = r.accuracy
        line = [r.step, r.label, r.precision or r.status]
        if classify:
            line += [fmt(acc and acc.accuracy, ".2f", 100) + ("%" if acc else ""),
                     fmt(acc and acc.balanced_accuracy, ".2f", 100) + ("%" if acc else "")]
        if own:
            line.append(fmt(r.quality, ".4f"))
        if decided:
            d, pol = r.decisions, r.policy
            line += [fmt(d and d.auroc, ".3f")] + ([fmt(d and d.average_precision, ".3f")] if anomaly else [])
            line += [rate_text(pol.recall, pol.recall_interval) if pol else "—",
                     rate_text(pol.false_reject, pol.false_reject_interval) if pol else "—"]
            line += [fmt(pol and pol.review_rate, ".1f", 100) + ("%" if pol else "")] if review else []
        if anomaly:
            line.append(fmt(r.anomaly and r.anomaly.bank_bytes, ".2f", 1e-6))
        line += [fmt(r.size_bytes, ".2f", 1e-6), fmt(r.params, ".2f", 1e-6), fmt(r.macs, ".0f", 1e-6)]
        for k in keys:
            b = r.latency.get(k)
            ref = reference(rows, k)
            if b is None:
                line.append("")
            elif b["status"] != "ok":
                line.append(b["status"])
            else:
                p50 = p50_ms(b)
                speed = p50_ms(ref.latency[k]) / p50 if ref is not None and ref is not r else None
                calls = b.get("calls_per_batch", 1)  # a fixed-batch graph looped: not a batched call
                line.append(f"{p50:.2f} / {p99_ms(b):.2f}" + (f" ({speed:.2f}x)" if speed else "")
                            + (f" [{calls} sequential calls]" if calls > 1 else ""))
        # memory: the model's resident memory in a process of its own, above the runtime's (largest over backends)
        mem = [m for b in r.latency.values() if b["status"] == "ok" and (m := model_mb(b)) is not None]
        line.append(f"{max(mem):.0f}" if mem else "")
        if r.status == "skipped":
            line[2] = "skipped"
        body.append(line)
    return header, body
