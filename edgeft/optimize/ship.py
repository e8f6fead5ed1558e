"""The ship step of ``edgeft optimize`` (a recipe's ``ship:`` section): which of the run's models ships, on which CPU
runtime and precision, chosen on val.

A run without a search ends with an INT8 model and an FP32 ONNX model, and this machine may offer several ways to
run each: ONNX Runtime, OpenVINO at FP32, OpenVINO at bf16 inference precision where the CPU has a bf16 unit. Each
computes the model its own way (OpenVINO's INT8 kernels round otherwise; bf16 keeps 8 bits of mantissa), so each
pair (model, runtime) is a candidate of its own, as in the classifier's search (:mod:`edgeft.optimize.search`):
scored on val there by the task (its threshold chosen there by the model's rule), judged by the recipe's gates
against the run's first model on val, and timed against the first model's FP32 ONNX file on ONNX Runtime in the same
interleaved rounds (paired per-round ratios). The fastest that passes every gate ships: within 2% (one speed to the
rounds) the one computing at its own precision goes first, then the fewer val false rejects at its operating point;
when none passes, the smallest worst miss. The step's artifact is the chosen model with the runtime recorded
(``extra.runtime``, which the camera's ``auto`` runs), its policy chosen on that runtime's val scores, and its
held-out numbers measured there (``Task.measure_shipped``); ``ship.json`` beside it keeps every candidate for the
report (read by ``edgeft.optimize.rows.load_choice``). Test is never read to choose.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft import progress
from edgeft.optimize.rows import CHOICE_FILE, Row

CANDIDATES = "candidates"  # models adapted to a runtime, one folder per candidate key, kept for inspection


@dataclass
class Choice:
    """One model on one runtime, and what it measured on val."""

    key: str  # e.g. "int8@ov-cpu"
    step: str  # the run's step whose model it is
    precision: str  # int8 | fp32: the model's
    runtime: str
    status: str = "not run"  # pass | fail | not run
    reason: str = ""  # why it did not run
    adapted: bool = False  # its model was adapted to the runtime (the task's for_runtime), kept in candidates/<key>
    quality: float | None = None  # the task's headline number on val (accuracy, AUROC)
    quality_name: str = ""
    recall: float | None = None  # on val at its own policy
    false_reject: float | None = None
    policy: dict[str, Any] | None = None  # chosen on this runtime's val scores
    p50_ms: float | None = None  # batch 1, median of the rounds
    baseline_p50_ms: float | None = None
    speedups: list[float] = field(default_factory=list)  # per round: baseline / this
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        return statistics.median(self.speedups) if self.speedups else None


def _row(step: str, fields: dict[str, Any]) -> Row:
    return Row(step, "ship", step, "", "done", split="val", **fields)


def _score(recipe, c: Choice, a: art.Artifact):
    """Score ``c`` on val on its runtime (the task's ``val_row``); its row for the gates."""
    fields, policy = recipe.plugin.val_row(recipe, a, c.runtime)
    row = _row(c.key, fields)
    c.quality, c.quality_name = fields.get("quality"), fields.get("quality_name", "")
    if row.policy is not None:
        c.recall, c.false_reject = row.policy.recall, row.policy.false_reject
    c.policy = policy.to_dict() if policy is not None else None
    return row


def _compromise(tried: list[Choice]) -> Choice:
    """No choice passed: the smallest worst miss relative to its limit, then the fastest."""
    from edgeft.optimize.search import _speed, excess

    return min(tried, key=lambda c: (max((excess(v) for v in c.verdicts), default=0.0), -_speed(c)))


def choose(recipe, run: Path, base_step: str, model_steps: list[str], work: Path
           ) -> tuple[Choice, bool, list[Choice]]:
    """Score, time and judge every (model, runtime) of the ship section; (the chosen one, whether it passed every gate
    on val, all of them in order). A model the task adapts to a runtime (an anomaly graph's statistics re-fitted on
    that runtime's INT8 features) is adapted into ``work``/<key> first, and judged as adapted."""
    from edgeft.optimize.gates import GateVerdict, judge_on_val
    from edgeft.optimize.search import check_runtimes, fastest, time_paired

    s = recipe.sections["ship"]
    base = art.load(run / base_step)
    models = {step: art.load(run / step) for step in model_steps}
    choices = [Choice(f"{_precision(models[step])}@{rt}", step, _precision(models[step]), rt)
               for step in model_steps for rt in s.runtimes]
    missing = check_runtimes(s.runtimes, "ship.runtimes")
    runnable = []
    for c in choices:
        c.reason = missing[c.runtime]
        if c.reason:
            progress.info(f"[ship] {c.key}: not run ({c.runtime} cannot run here: {c.reason})")
        else:
            runnable.append(c)
    arts = {}
    for c in runnable:
        adapted = recipe.plugin.for_runtime(models[c.step], c.runtime, recipe.data, work / c.key, recipe.threads or 2)
        c.adapted = adapted is not None
        arts[c.key] = art.load(adapted) if adapted is not None else models[c.step]
    progress.info(f"[ship] {base_step} on ort-cpu: the reference every candidate is judged and timed against")
    base_fields, _ = recipe.plugin.val_row(recipe, base, "ort-cpu")
    base_row = _row(recipe.first_label, base_fields)
    rows = {c.key: _score(recipe, c, arts[c.key]) for c in runnable}
    progress.info(f"[ship] timing {len(runnable)} candidate(s) against {base_step} on ort-cpu, "
                  f"{s.latency_rounds} interleaved rounds")
    time_paired(runnable, base.model_path, arts, recipe.threads or 2, s.latency_rounds)
    for c in runnable:
        c.verdicts = [v.to_dict() for v in judge_on_val(recipe.gates, base_row, rows[c.key], c.runtime, c.p50_ms)]
        c.status = "pass" if all(v["status"] == "pass" for v in c.verdicts) else "fail"
        missed = "; ".join(GateVerdict.from_dict(v).line().split("; try")[0] for v in c.verdicts
                           if v["status"] == "fail")
        progress.info(f"[ship] {c.key}: {c.status} on val: {c.quality_name} {c.quality:.4f}, {c.p50_ms:.2f} ms "
                      f"({c.speedup:.2f}x)" + (f"; {missed}" if missed else ""))
    chosen = fastest([c for c in runnable if c.status == "pass"])
    passed = chosen is not None
    return (chosen if passed else _compromise(runnable)), passed, choices


def _precision(a: art.Artifact) -> str:
    return "int8" if a.meta.extra.get("quantized") == "int8" else "fp32"


def ship(recipe, run: Path, base_step: str, model_steps: list[str], out: Path) -> Choice:
    """The ship step into ``out``: the chosen model's artifact, with its runtime, its policy there, its held-out
    numbers there, and ``ship.json`` (every candidate)."""
    from edgeft.runtime.backends import runtime_record

    t0 = time.time()
    with art.staging_dir(out, force=True) as tmp:
        chosen, passed, choices = choose(recipe, run, base_step, model_steps, tmp / CANDIDATES)
        progress.info(f"[ship] ships {chosen.key} ({chosen.step}" + (", adapted to its runtime" if chosen.adapted
                                                                     else "") + ")"
                      + ("" if passed else ": the best compromise, no candidate met every gate on val"))
        source = art.load(tmp / CANDIDATES / chosen.key if chosen.adapted else run / chosen.step)
        for f in source.path.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        a = art.load(tmp)
        a.meta.lineage = source.stage_record("ship", {"runtime": chosen.runtime, "candidate": chosen.key,
                                                      "passed": passed})
        extra: dict[str, Any] = {"runtime": runtime_record(
            chosen.runtime, chosen.precision, chosen_by="ship", speedup=chosen.speedup,
            speedup_range=[min(chosen.speedups), max(chosen.speedups)], rounds=len(chosen.speedups),
            p50_ms=chosen.p50_ms, measured=time.strftime("%Y-%m-%d"))}
        if chosen.policy is not None:
            extra["decision"] = chosen.policy
        art.update_metrics(a, {}, extra=extra)
        recipe.plugin.measure_shipped(recipe, tmp, chosen.runtime)
        doc = {"chosen": chosen.key, "step": chosen.step, "passed": passed, "base": base_step,
               "seconds": round(time.time() - t0, 1), "choices": [asdict(c) for c in choices]}
        (tmp / CHOICE_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    return chosen
