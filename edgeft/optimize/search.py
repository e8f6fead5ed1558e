"""The search behind ``edgeft optimize`` with a ``search:`` section: the fastest model that meets every gate.

A user states constraints (the recipe's gates) and a space (pruning ratios, PTQ and/or QAT); the search tries
candidates and ships the fastest one that meets every gate **on val**, or, when none does, the best compromise with
a verdict per gate. The pipeline seals the test split while it runs (``edgeft.data.imagefolder.sealed_test``), so
no stage and no decision here can read test: the shipped model and the fine-tuned one are measured on it once, at
the end, and the gates are judged there.

Cheap before expensive:
- the fine-tuned model is pruned **once** along the schedule, with a snapshot at every ratio of the space (BatchNorm
  re-estimated, val accuracy before recovery: what each ratio costs before any recovery is paid for);
- candidates are then paid for fastest first (fewest MACs, PTQ before QAT of the same ratio) and the search stops at
  the first that passes: the space is ordered by speed, so that one is the fastest passing candidate. A ratio that
  fails only on latency is not retried with QAT (same graph, same speed), and once a ratio fails on latency no
  slower one is tried;
- each candidate's cost is measured; the next one starts only when the budget can still pay for it, and finished
  candidates are kept in ``RUN/search/search.json`` for ``--resume``.

Recovery that generalises: each candidate's recovery is the prune section's (distillation from the fine-tuned
parent when ``prune.distill``, cached augmented views, ``prune.recover_patience`` early stopping), and its length
is chosen on val: the best val epoch's weights are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft import progress
from edgeft.errors import ConfigError
from edgeft.metrics import Classification, paired_drop
from edgeft.optimize.recipe import Recipe, config_hash

SEARCH_DIR = "search"
STATE_FILE = "search.json"


@dataclass
class Candidate:
    """One point of the space, and what it measured on val."""

    key: str  # e.g. "macs0.50-ptq": its folder under RUN/search/
    target_macs: float
    method: str
    status: str = "not run"  # pass | fail | not run
    reason: str = ""  # why it did not run
    macs_ratio: float | None = None  # where pruning landed
    val_before_recovery: float | None = None  # accuracy of the BN-re-estimated snapshot
    val: dict[str, Any] | None = None  # the INT8 model's Classification on val, at its own val-chosen policy
    p50_ms: float | None = None  # INT8, ONNX Runtime CPU, batch 1 (median of the interleaved rounds)
    baseline_p50_ms: float | None = None  # the fine-tuned FP32 ONNX model in the same rounds
    speedups: list[float] = field(default_factory=list)  # per-round paired ratios baseline / candidate
    seconds: float = 0.0
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # each gate on val
    calibration: dict[str, float] = field(default_factory=dict)  # PTQ: val accuracy per calibration tried
    val_predictions: list[int] = field(default_factory=list)  # per val image, for the paired comparison

    @property
    def speedup(self) -> float | None:
        return statistics.median(self.speedups) if self.speedups else None

    def val_metrics(self) -> Classification | None:
        return Classification.from_dict(self.val, f"search candidate {self.key}") if self.val else None


@dataclass
class SearchResult:
    chosen: Candidate
    passed: bool  # whether the chosen candidate met every gate on val
    candidates: list[Candidate]
    baseline_val: dict[str, Any]
    seconds: float
    budget_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.key, "passed": self.passed, "seconds": round(self.seconds, 1),
                "budget_s": self.budget_s, "baseline_val": self.baseline_val,
                "candidates": [asdict(c) for c in self.candidates]}


def space_hash(recipe: Recipe) -> str:
    """What the candidates' results depend on besides their inputs: the space and the stages' settings."""
    return config_hash({"search": asdict(recipe.search), "prune": recipe.stage_config("prune"),
                        "export": recipe.stage_config("export"), "quantize": recipe.stage_config("quantize"),
                        "decision": asdict(recipe.decision) if recipe.decision else None,
                        "threads": recipe.threads})


def candidates(recipe: Recipe) -> list[Candidate]:
    """The space in the order it is paid for: fewest MACs first, then the methods as listed (PTQ before QAT)."""
    s = recipe.search
    return [Candidate(f"macs{r:.2f}-{m}", r, m) for r in sorted(s.target_macs) for m in s.method]


def load_result(run: Path) -> dict[str, Any] | None:
    """The search's state file of a run (None when it has none)."""
    p = run / SEARCH_DIR / STATE_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{p} is damaged; start over with --force") from None


def _write_state(root: Path, state: dict[str, Any]) -> None:
    art.write_json(root / STATE_FILE, state, indent=1)


def _state(recipe: Recipe, root: Path, inputs: str, resume: bool) -> dict[str, Any]:
    """The search's state: kept candidates when the space and inputs are unchanged; a resumed search whose space
    changed is refused (its finished candidates would answer another question)."""
    space = space_hash(recipe)
    fresh = {"space": space, "inputs": inputs, "space_settings": asdict(recipe.search), "candidates": {},
             "snapshots": {}}
    old = load_result(root.parent)
    if old is None:
        return fresh
    if old.get("space") != space:
        if resume:
            _refuse_changed(recipe, root, old)
        return fresh
    if old.get("inputs") != inputs:
        progress.info("search: the fine-tuned model or the data changed since the last search; starting it again")
        return fresh
    return old


def _refuse_changed(recipe: Recipe, root: Path, old: dict[str, Any]) -> None:
    raise ConfigError(f"search: --resume with a changed space or stage settings (search was "
                      f"{old.get('space_settings')}, now {asdict(recipe.search)}); its finished candidates answer "
                      f"another question: delete {root} to search again from the finished fine-tuning, start over "
                      "with --force, or run into another --out")


def check_resume(recipe: Recipe, run: Path) -> None:
    """Before a resumed run touches anything: refuse it when the search it would continue had another space."""
    old = load_result(run)
    if old is not None and old.get("space") != space_hash(recipe):
        _refuse_changed(recipe, run / SEARCH_DIR, old)


def estimate_candidate_s(finetuned: art.Artifact, recipe: Recipe) -> float:
    """What one candidate should cost before any has run, from the fine-tuning's own measured time: its recovery
    is the fine-tuning's loop at the recovery's epochs and cached views (the pruned blocks cost less, so this
    leans high), plus about one epoch's worth for export and calibration."""
    m = finetuned.meta.metrics
    total, epochs = float(m.get("total_seconds") or 0.0), int(m.get("epochs_run") or 0)
    p = recipe.sections["prune"]
    if not total or not epochs:
        return 0.0
    views = finetuned.meta.lineage[-1].get("params", {}).get("cache_views") or 1
    ratio = (p.recover_views or views) / views if p.recover_mode == "partial" else 1.0
    return total / epochs * (max(1, p.recover_epochs) * ratio + 1)


def _score_val(recipe: Recipe, a: art.Artifact, val) -> tuple[dict[str, Any], list[int]]:
    """A model on val, scored once: its policy chosen there (with a decision section), its metrics at that policy,
    and its prediction per image (for the paired comparison)."""
    from edgeft.evaluate import choose_policy, logits, metrics_from_logits

    out, views = logits(a, val, tta_views=1)
    if recipe.decision is not None:
        choose_policy(a, val, recipe.decision.rule(), list(recipe.decision.positive), out=out)
    return metrics_from_logits(a, val, out, views).to_dict(), out.argmax(1).tolist()


def _baseline(recipe: Recipe, finetuned: Path, root: Path) -> tuple[dict[str, Any], Path]:
    """The fine-tuned model on val (at its own val-chosen policy) and its FP32 ONNX file (the latency baseline,
    gray input as the shipped model's)."""
    from edgeft.data import load_split
    from edgeft.export.stage import export

    a = art.load(finetuned)
    val = load_split(recipe.data, "val", a.meta.input, classes=a.meta.class_names)
    d, predictions = _score_val(recipe, a, val)
    d["labels"], d["predictions"] = val.labels.tolist(), predictions
    onnx_dir = root / "baseline-onnx"
    if not (onnx_dir / "meta.json").is_file():
        e = recipe.sections["export"]
        export(finetuned, onnx_dir, opset=e.opset, dynamic_batch=recipe.dynamic_batch, do_simplify=e.simplify,
               data=recipe.data, n=min(16, e.parity_images), force=True, gray_input=e.gray_input)
    return d, onnx_dir / "model.onnx"


def _run_candidate(recipe: Recipe, c: Candidate, finetuned: Path, snapshot: Path, root: Path) -> Path:
    """Recover the snapshot, export it, quantize it with the candidate's method; the quantized artifact's folder."""
    from edgeft.data import calibration
    from edgeft.export.stage import export
    from edgeft.prune.pruner import recover_snapshot
    from edgeft.quantize.ptq import QuantizeConfig, quantize

    d = root / c.key
    if d.exists():
        shutil.rmtree(d)  # an interrupted candidate starts over
    d.mkdir(parents=True)
    p = replace(recipe.sections["prune"], target_macs=c.target_macs, target_params=None)
    if recipe.threads and not p.threads:
        p = replace(p, threads=recipe.threads)
    progress.info(f"[search] {c.key}: recovering the {c.target_macs:g}-MACs snapshot")
    recover_snapshot(snapshot, finetuned, recipe.data, d / "prune", p, force=True)
    e = recipe.sections["export"]
    export(d / "prune", d / "export", opset=e.opset, dynamic_batch=recipe.dynamic_batch, do_simplify=e.simplify,
           data=recipe.data, n=e.parity_images, force=True, gray_input=e.gray_input)
    q = recipe.sections["quantize"]
    calib = Path(q.calib) if q.calib else root / "calibration.json"
    if not calib.is_file():
        calibration.save(recipe.plugin.calibration_manifest(recipe.data, q.calib_images,
                                                            art.load(finetuned).meta.class_names), calib)
    cfg = QuantizeConfig(method=c.method, target=q.target, calib_method=q.calib_method, percentile=q.percentile,
                         exclude=list(q.exclude), auto_exclude=q.auto_exclude, threads=recipe.threads or 2)
    if c.method == "qat":
        recipe.plugin.qat(d / "prune", d / "quantize", cfg, calib, recipe.data, epochs=q.epochs, lr=q.lr,
                          mode=q.qat_mode, force=True)
        return d / "quantize"
    for m in recipe.search.calib_method or [q.calib_method]:  # each measured on val by the quantize stage itself
        a = quantize(d / "export", d / f"quantize-{m}", replace(cfg, calib_method=m), calib, recipe.data, force=True)
        c.calibration[m] = a.meta.metrics[a.meta.metrics["eval_split"]]["accuracy"]
    best = max(c.calibration, key=lambda m: c.calibration[m])  # ties: the first listed
    if len(c.calibration) > 1:
        progress.info(f"[search] {c.key}: calibration {best} kept (val accuracy "
                      + ", ".join(f"{m} {v * 100:.2f}%" for m, v in c.calibration.items()) + ")")
    os.replace(d / f"quantize-{best}", d / "quantize")
    return d / "quantize"


def _measure(recipe: Recipe, c: Candidate, quantized: Path, baseline_onnx: Path) -> None:
    """The candidate's INT8 model on val at its own val-chosen policy, and its latency against the fine-tuned FP32
    ONNX model in interleaved rounds (paired per-round ratios)."""
    from edgeft.data import load_split
    from edgeft.runtime.timing import ort_rounds

    a = art.load(quantized)
    val = load_split(recipe.data, "val", a.meta.input, classes=a.meta.class_names)
    c.val, c.val_predictions = _score_val(recipe, a, val)
    shape = (1, a.meta.input.channels, *a.meta.input.size)
    r = ort_rounds({"base": baseline_onnx, "cand": a.model_path}, shape, recipe.threads or 2,
                   recipe.search.latency_rounds, iters=30, min_seconds=0.25)
    c.p50_ms = round(statistics.median(r["cand"]), 3)
    c.baseline_p50_ms = round(statistics.median(r["base"]), 3)
    c.speedups = [round(b / x, 3) for b, x in zip(r["base"], r["cand"])]


def judge(recipe: Recipe, baseline_val: dict[str, Any], c: Candidate) -> list[dict[str, Any]]:
    """Every gate on val: the candidate against the fine-tuned model, each at its own val-chosen policy, and the
    latency gates on the candidate's measured p50 (ONNX Runtime CPU, batch 1)."""
    from edgeft.optimize.gates import GateVerdict, evaluate_gates
    from edgeft.optimize.rows import Row

    rows = [Row(recipe.first_stage, recipe.first_stage, recipe.first_label, "", "done",
                accuracy=Classification.from_dict({k: v for k, v in baseline_val.items()
                                                   if k not in ("labels", "predictions")}, "search baseline"),
                split="val"),
            Row(c.key, "quantize", c.key, "", "done", accuracy=c.val_metrics(), split="val")]
    verdicts = evaluate_gates(replace(recipe.gates, max_p50_ms={}), rows)
    for key, limit in recipe.gates.max_p50_ms.items():
        verdicts.append(GateVerdict(f"max_p50_ms.{key}", float(limit), c.p50_ms, c.key,
                                    "pass" if c.p50_ms is not None and c.p50_ms <= float(limit) else "fail",
                                    f"{c.key} on ort-cpu@1"))
    return [v.to_dict() for v in verdicts]  # kept as JSON in the search's result


def _fails(verdicts: list[dict[str, Any]]) -> tuple[bool, bool]:
    """(fails a latency gate, fails another gate)."""
    failed = [v["gate"] for v in verdicts if v["status"] == "fail"]
    return any(g.startswith("max_p50_ms") for g in failed), any(not g.startswith("max_p50_ms") for g in failed)


def excess(v: dict[str, Any]) -> float:
    """How far a failed gate is from its limit, relative to the limit (0 when it passes)."""
    if v["status"] != "fail" or v["value"] is None:
        return 0.0 if v["status"] != "fail" else float("inf")
    return (v["value"] - v["limit"]) / max(abs(v["limit"]), 1e-9)


def compromise(tried: list[Candidate], baseline_val: dict[str, Any]) -> Candidate:
    """When no candidate meets every gate: the smallest worst miss relative to its limit; among candidates whose worst
    miss is within one paired standard error of that one's (an accuracy miss the val split cannot tell apart), the
    fastest. Trading measured speed for a difference val cannot resolve would be paying for noise."""
    def worst(c: Candidate) -> float:
        return max((excess(v) for v in c.verdicts), default=0.0)

    best = min(tried, key=lambda c: (worst(c), c.p50_ms or 0.0))
    tolerance = 0.0
    gate = max(best.verdicts, key=excess, default=None)
    paired = bool(best.val_predictions and baseline_val.get("labels"))
    if gate is not None and gate["gate"] == "max_accuracy_drop_pp" and paired:
        se = paired_drop(baseline_val["labels"], baseline_val["predictions"], best.val_predictions)["se_pp"]
        tolerance = se / max(abs(gate["limit"]), 1e-9)
    close = [c for c in tried if worst(c) <= worst(best) + tolerance]
    return min(close, key=lambda c: (c.p50_ms if c.p50_ms is not None else float("inf"), worst(c)))


def search(recipe: Recipe, run: Path, finetuned: Path, resume: bool = False) -> SearchResult:
    """Run the search of ``recipe`` under ``run/search`` from the fine-tuned artifact ``finetuned``; the test split
    must be sealed by the caller. Returns the chosen candidate (its artifacts in ``run/search/<key>/``)."""
    from edgeft.optimize.recipe import data_fingerprint
    from edgeft.optimize.gates import GateVerdict
    from edgeft.prune.pruner import prune_schedule

    t0 = time.time()
    s = recipe.search
    budget = s.budget_min * 60
    root = run / SEARCH_DIR
    parent = art.load(finetuned)
    inputs = config_hash({"finetuned": parent.meta.model_sha256, "data": data_fingerprint(recipe.data)})
    state = _state(recipe, root, inputs, resume)
    space = candidates(recipe)
    done = {k: Candidate(**v) for k, v in state["candidates"].items()}
    estimate = estimate_candidate_s(parent, recipe)
    if not done and estimate and budget < estimate:
        raise ConfigError(f"search.budget_min {s.budget_min:g} is smaller than one candidate here (about "
                          f"{estimate / 60:.1f} min: its recovery, estimated from the fine-tuning's measured time, "
                          "export and calibration); raise search.budget_min")
    root.mkdir(parents=True, exist_ok=True)
    _write_state(root, state)

    snaps = {float(k): Path(v) for k, v in state["snapshots"].items()}
    if not snaps or any(not (p / "meta.json").is_file() for p in snaps.values()):
        ratios = ", ".join(f"{r:g}" for r in s.target_macs)
        progress.info(f"[search] pruning once along the schedule, snapshots at {ratios} of the MACs")
        p = recipe.sections["prune"]
        if recipe.threads and not p.threads:
            p = replace(p, threads=recipe.threads)
        snaps = prune_schedule(finetuned, recipe.data, root / "snapshots", p, list(s.target_macs))
        state["snapshots"] = {str(k): str(v) for k, v in snaps.items()}
        _write_state(root, state)
    baseline_val, baseline_onnx = _baseline(recipe, finetuned, root)
    costs = [c.seconds for c in done.values() if c.status != "not run"]
    too_slow_at: float | None = None  # a ratio that failed on latency: no slower one can pass
    chosen: Candidate | None = None
    result: list[Candidate] = []
    for c in space:
        snap_meta = art.load(snaps[c.target_macs]).meta.metrics
        prior = done.get(c.key)
        if prior is not None and prior.status in ("pass", "fail"):
            c = prior
            progress.info(f"[search] {c.key}: reused ({c.status})")
        elif chosen is not None:
            c.reason = f"{chosen.key} passed first and is at least as fast"
        elif too_slow_at is not None and c.target_macs >= too_slow_at:
            c.reason = f"{too_slow_at:g} of the MACs already missed the latency gate; this one is no faster"
        elif any(r.target_macs == c.target_macs and r.status == "fail" and _fails(r.verdicts) == (True, False)
                 for r in result):
            c.reason = "the same graph missed only the latency gate with another method"
        else:
            spent = time.time() - t0
            need = statistics.mean(costs) if costs else estimate
            if costs and spent + need > budget:  # the first always runs: its estimate was checked before the schedule
                c.reason = (f"budget: {spent / 60:.1f} of {s.budget_min:g} min spent, a candidate costs about "
                            f"{need / 60:.1f} min")
            else:
                t1 = time.time()
                quantized = _run_candidate(recipe, c, finetuned, snaps[c.target_macs], root)
                _measure(recipe, c, quantized, baseline_onnx)
                c.seconds = round(time.time() - t1, 1)
                costs.append(c.seconds)
        c.macs_ratio = (snap_meta.get("prune") or {}).get("macs_ratio")
        split = snap_meta.get("eval_split", "val")
        c.val_before_recovery = (snap_meta.get(split) or {}).get("accuracy")
        if c.val is not None:
            c.verdicts = judge(recipe, baseline_val, c)
            c.status = "pass" if all(v["status"] == "pass" for v in c.verdicts) else "fail"
            slow, other = _fails(c.verdicts)
            if slow and not other:
                too_slow_at = c.target_macs if too_slow_at is None else min(too_slow_at, c.target_macs)
            if c.status == "pass" and chosen is None:
                chosen = c
            va = c.val_metrics()
            pd = paired_drop(baseline_val["labels"], baseline_val["predictions"], c.val_predictions) \
                if c.val_predictions else None
            progress.info(f"[search] {c.key}: {c.status} on val: accuracy {va.accuracy * 100:.2f}%"
                          + (f" (drop {pd['drop_pp']:+.2f} ± {pd['se_pp']:.2f} pp, one paired standard error)"
                             if pd else "") + ", "
                          f"{c.p50_ms:.2f} ms ({c.speedup:.2f}x the fine-tuned FP32 ONNX model), "
                          + "; ".join(GateVerdict.from_dict(v).line() for v in c.verdicts if v["status"] == "fail"))
        elif c.reason:
            progress.info(f"[search] {c.key}: not run ({c.reason})")
        result.append(c)
        state["candidates"][c.key] = asdict(c)
        _write_state(root, state)
    tried = [c for c in result if c.val is not None]
    if not tried:
        raise ConfigError(f"search: no candidate could run within search.budget_min {s.budget_min:g}; raise it")
    passed = chosen is not None
    if chosen is None:
        chosen = compromise(tried, baseline_val)
    res = SearchResult(chosen, passed, result, baseline_val, time.time() - t0, budget)
    state["result"] = res.to_dict()
    _write_state(root, state)
    return res


def chosen_dir(run: Path, stage: str) -> Path:
    """The chosen candidate's artifact for ``stage`` (prune, export or quantize), from the finished search."""
    doc = load_result(run)
    if not doc or "result" not in doc:
        raise ConfigError(f"{run / SEARCH_DIR / STATE_FILE} has no finished search; run the recipe again")
    return run / SEARCH_DIR / doc["result"]["chosen"] / stage


def copy_artifact(src: Path, out: Path) -> None:
    """Copy a finished artifact folder to ``out`` atomically (a temp folder renamed into place)."""
    with art.staging_dir(out, force=True) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
