"""The recipe's gates, judged on the run's rows: typed verdicts (pass, fail, or not evaluated with the reason), one
line each for a terminal or a CI log. The search judges every candidate on val with the same function
(:mod:`edgeft.optimize.search`); the report renders the verdicts (:mod:`edgeft.optimize.report`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgeft.metrics import mcnemar_worse
from edgeft.optimize.rows import Row, final, p50_ms

UNITS = {"max_accuracy_drop_pp": " pp", "max_recall_drop_pp": " pp", "max_false_reject_rise_pp": " pp",
         "max_auroc_drop": "", "max_map_drop_points": " AP points"}  # every other gate is a latency in ms


@dataclass(frozen=True)
class GateVerdict:
    """One gate on one model: its limit, the measured value (None when not evaluated), the status (pass, fail, not
    evaluated) and what was compared, in words. True when it passed."""

    gate: str
    limit: float
    value: float | None
    model: str | None
    status: str
    detail: str

    def __bool__(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GateVerdict":
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})

    @property
    def unit(self) -> str:
        return UNITS.get(self.gate, " ms")

    def line(self) -> str:
        """One line: met, or by how much it missed and what to try."""
        u = self.unit
        if self.status == "pass":
            return f"{self.gate}: met ({self.value}{u}, limit {self.limit}{u})"
        if self.status != "fail":
            return f"{self.gate}: {self.status} ({self.detail})"
        if self.gate.startswith("max_p50_ms"):
            hint = "add smaller ratios to search.target_macs, or relax the latency gate"
        else:
            hint = ("add larger ratios to search.target_macs, qat to search.method, more prune.recover_epochs, or "
                    "relax the gate")
        return (f"{self.gate}: missed by {self.value - self.limit:.4g}{u} ({self.value}{u} against {self.limit}{u}, "
                f"on val); try: {hint}")


def evaluate_gates(gates, rows: list[Row], auroc_interval: tuple[float, float] | None = None) -> list[GateVerdict]:
    """Each of the recipe's ``gates`` (``recipe.Gates``) on the last model of the run that the gate can judge: pass,
    fail, or not evaluated (with the reason). ``auroc_interval``: the paired bootstrap interval of the AUROC drop,
    said beside the AUROC gate (it does not change the verdict)."""
    out: list[GateVerdict] = []
    if gates.max_accuracy_drop_pp is not None:
        out.append(_accuracy_gate(gates.max_accuracy_drop_pp, gates.accuracy_significance, rows))
    out += _decision_gates(gates, rows, auroc_interval)
    if gates.max_map_drop_points is not None:
        out.append(_map_gate(gates.max_map_drop_points, rows))
    for key, limit in gates.max_p50_ms.items():
        out.append(_latency_gate(str(key), float(limit), rows))
    return out


def judge_on_val(gates, base: Row, row: Row, runtime: str, p50: float | None) -> list[GateVerdict]:
    """Every gate on val, as the search and the ship step judge a model on a runtime: ``row`` against ``base`` (the
    run's first model), each at its own val-chosen policy, and the latency budgets of ``runtime`` at batch 1 on
    ``p50`` (measured in the choice's rounds; the other runtimes' budgets are theirs)."""
    verdicts = evaluate_gates(dataclasses.replace(gates, max_p50_ms={}), [base, row])
    for key, limit in gates.max_p50_ms.items():
        backend, _, batch = str(key).partition("@")
        if backend != runtime or batch not in ("", "1"):
            continue
        verdicts.append(GateVerdict(f"max_p50_ms.{key}", float(limit), p50, row.step,
                                    "pass" if p50 is not None and p50 <= float(limit) else "fail",
                                    f"{row.step} on {runtime}@1"))
    return verdicts


def _map_gate(limit: float, rows: list[Row]) -> GateVerdict:
    """A detector's mAP@[.5:.95] drop, final model against the first, on the held-out split, in AP points."""
    def has_map(r: Row) -> bool:
        return isinstance(r.task_metrics, dict) and "map" in r.task_metrics

    base, last = rows[0], final(rows, has_map)
    if not has_map(base) or last is None:
        return GateVerdict("max_map_drop_points", limit, None, None, "not evaluated",
                           "no mAP measured on the held-out split")
    drop = round((base.task_metrics["map"] - last.task_metrics["map"]) * 100, 2)
    return GateVerdict("max_map_drop_points", limit, drop, last.step, "pass" if drop <= limit else "fail",
                       f"mAP@[.5:.95] {base.task_metrics['map']:.4f} ({base.step}) -> {last.task_metrics['map']:.4f} "
                       f"({last.step}) on {last.split}")


def _accuracy_gate(limit: float, significance: float | None, rows: list[Row]) -> GateVerdict:
    """The final model's accuracy drop against the first model's, said in images (one image on a small test set is
    a point or more); with ``significance``, a drop past the limit fails only when McNemar's test on the images the
    two disagree on says the final model is worse at that level."""
    base = rows[0]
    last = final(rows, lambda r: r.accuracy is not None)
    a, b = base.accuracy, last.accuracy
    drop = (a.accuracy - b.accuracy) * 100
    detail = f"{last.label} {b.accuracy * 100:.2f}% vs {base.label} {a.accuracy * 100:.2f}% on {base.split}"
    failed = drop > limit
    if a.correct is not None and b.correct is not None and len(a.correct) == len(b.correct):
        m = mcnemar_worse(a.correct, b.correct)
        images = sum(a.correct) - sum(b.correct)
        detail += (f": {'a drop' if images >= 0 else 'a gain'} of {abs(images)} image(s) of {m['n']} (one image = "
                   f"{100 / m['n']:.2f} pp); worse on {m['worse']}, better on {m['better']} (McNemar one-sided p = "
                   f"{m['p']:.3g})")
        if significance is not None:
            failed = failed and m["p"] < significance
            detail += f"; fails only if also significantly worse at {significance:g}"
    return GateVerdict("max_accuracy_drop_pp", limit, round(drop, 2), last.step, "fail" if failed else "pass",
                       detail)


def _latency_gate(key: str, limit: float, rows: list[Row]) -> GateVerdict:
    backend, _, batch = key.partition("@")
    k = f"{backend}@{batch or 1}"
    name = f"max_p50_ms.{key}"
    shipped = final(rows, lambda r: r.measured)
    ships_on = ((shipped.runtime if shipped is not None else None) or {}).get("backend")
    if ships_on and ships_on != backend:  # the search chose another runtime, whose own limit judges it
        return GateVerdict(name, limit, None, shipped.step, "not evaluated",
                           f"{shipped.label} ships on {ships_on}, not {backend}")
    last = final(rows, lambda r: k in r.latency)
    if last is None:
        return GateVerdict(name, limit, None, None, "not evaluated", f"no model was benched on {k}")
    r = last.latency[k]
    if r["status"] != "ok":  # a model that fails on the gated backend fails the gate; a backend missing here (a
        return GateVerdict(name, limit, None, last.step,  # TensorRT gate on a CPU machine) cannot judge it
                           "fail" if r["status"] == "failed" else "not evaluated",
                           f"{backend} {r['status']}: {r.get('reason', '')[:160]}")
    p50 = p50_ms(r)
    return GateVerdict(name, limit, round(p50, 3), last.step, "pass" if p50 <= limit else "fail",
                       f"{last.label} on {k}")


def _decision_gates(g, rows: list[Row], auroc_interval: tuple[float, float] | None = None) -> list[GateVerdict]:
    """The final model against the first one, each at its own policy's operating point on the held-out split."""
    asked = [(name, getattr(g, name)) for name in g.DECISION_GATES if getattr(g, name) is not None]
    if not asked:
        return []
    base = rows[0]
    last = final(rows, lambda r: r.policy is not None or (r.anomaly is not None and r.decisions is not None))
    out = []
    for name, limit in asked:
        needs = (lambda r: r.decisions is not None) if name == "max_auroc_drop" else (lambda r: r.policy is not None)
        if last is None or not needs(base) or not needs(last):
            out.append(GateVerdict(name, limit, None, last.step if last else None, "not evaluated",
                                   "no model was measured at a decision policy" if name != "max_auroc_drop" else
                                   "AUROC is undefined: the held-out split lacks good or anomalous parts"))
            continue
        b, f = base, last
        if name == "max_auroc_drop":
            value = b.decisions.auroc - f.decisions.auroc
            text = f"AUROC {f.decisions.auroc:.3f} vs {b.decisions.auroc:.3f}"
        elif name == "max_recall_drop_pp":
            value = (b.policy.recall - f.policy.recall) * 100
            text = f"recall {f.policy.recall * 100:.1f}% vs {b.policy.recall * 100:.1f}%"
        else:
            value = (f.policy.false_reject - b.policy.false_reject) * 100
            text = f"false reject {f.policy.false_reject * 100:.1f}% vs {b.policy.false_reject * 100:.1f}%"
        detail = f"{last.label} {text} {base.label}, on {base.split}, each at its own val-chosen policy"
        if name == "max_auroc_drop" and auroc_interval is not None:
            lo, hi = auroc_interval
            detail += (f"; paired bootstrap 95% interval of the drop {lo:+.3f} to {hi:+.3f}"
                       + (" (it holds the limit: more test parts would settle the verdict)" if lo <= limit <= hi
                          else ""))
        out.append(GateVerdict(name, limit, round(value, 4 if name == "max_auroc_drop" else 2), last.step,
                               "pass" if value <= limit + 1e-12 else "fail", detail))
    return out
