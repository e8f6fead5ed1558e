"""The search behind ``edgeft optimize`` with a ``search:`` section: the fastest model that meets every gate.

A user states constraints (the recipe's gates) and a space (pruning ratios; INT8 by PTQ and/or QAT, or FP32; the
CPU runtimes the model may ship on: ONNX Runtime, OpenVINO at FP32 or bf16 inference precision); the search tries
candidates and ships the fastest one that meets every gate **on val**, or, when none does, the best compromise with
a verdict per gate. A candidate is a model on a runtime: each runtime computes the model its own way (OpenVINO's
INT8 kernels round otherwise, bf16 keeps 8 bits of mantissa), so each is scored on val there, gets its own
threshold there, and is judged there; the shipped artifact records the runtime (``extra.runtime``), and the camera's
``auto`` runs exactly that. The pipeline seals the test split while it runs
(``edgeft.data.imagefolder.sealed_test``), so no stage and no decision here can read test: the shipped model and the
fine-tuned one are measured on it once, at the end, and the gates are judged there.

Cheap before expensive:
- the fine-tuned model is pruned **once** along the schedule, with a snapshot at every ratio of the space (BatchNorm
  re-estimated, val accuracy before recovery: what each ratio costs before any recovery is paid for);
- models are then paid for in order (fewest MACs first; the methods as listed), each scored and timed on every
  listed runtime this machine has (cheap next to a recovery), and the fastest passing candidate ships. Speed is the
  median of per-round ratios against the fine-tuned FP32 model on ONNX Runtime timed in the same rounds, so
  candidates timed at different moments compare. A model is paid for only while it could beat the best passing
  candidate: on each runtime a model with more MACs is no faster than one with fewer at the same precision, QAT is
  the same graph as PTQ, and once a ratio fails on latency on a runtime no slower one is tried there;
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
    """One point of the space, a model on a runtime, and what it measured on val."""

    key: str  # e.g. "macs0.50-ptq@ov-cpu"
    target_macs: float
    method: str  # ptq | qat | fp32
    runtime: str = "ort-cpu"
    status: str = "not run"  # pass | fail | not run
    reason: str = ""  # why it did not run
    macs_ratio: float | None = None  # where pruning landed
    val_before_recovery: float | None = None  # accuracy of the BN-re-estimated snapshot
    val: dict[str, Any] | None = None  # the model's Classification on val on this runtime, at its own val policy
    p50_ms: float | None = None  # on this runtime, batch 1 (median of the interleaved rounds)
    baseline_p50_ms: float | None = None  # the fine-tuned FP32 ONNX model on ONNX Runtime in the same rounds
    speedups: list[float] = field(default_factory=list)  # per-round paired ratios baseline / candidate
    seconds: float = 0.0  # what making and measuring its model cost (shared by the model's runtimes)
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # each gate on val
    calibration: dict[str, float] = field(default_factory=dict)  # PTQ: val accuracy per calibration tried
    val_predictions: list[int] = field(default_factory=list)  # per val image, for the paired comparison
    policy: dict[str, Any] | None = None  # the operating point chosen on this runtime's val scores

    @property
    def model(self) -> str:
        """The model's folder under RUN/search/, shared by its runtimes."""
        return self.key.split("@")[0]

    @property
    def precision(self) -> str:
        """The model's precision class: INT8 (PTQ and QAT make the same graph) or FP32."""
        return "fp32" if self.method == "fp32" else "int8"

    @property
    def recall(self) -> float | None:
        """Defect recall on val at its own operating point (None without a decision section)."""
        return ((self.val or {}).get("policy") or {}).get("recall")

    @property
    def false_reject(self) -> float | None:
        """False-reject rate on val at its own operating point (None without a decision section)."""
        return ((self.val or {}).get("policy") or {}).get("false_reject")

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
        return {"chosen": self.chosen.key, "model": self.chosen.model, "target_macs": self.chosen.target_macs,
                "method": self.chosen.method,
                "runtime": self.chosen.runtime, "passed": self.passed, "seconds": round(self.seconds, 1),
                "budget_s": self.budget_s, "baseline_val": self.baseline_val,
                "candidates": [asdict(c) for c in self.candidates]}


def space_hash(recipe: Recipe) -> str:
    """What the candidates' results depend on besides their inputs: the space and the stages' settings."""
    return config_hash({"search": asdict(recipe.search), "prune": recipe.stage_config("prune"),
                        "export": recipe.stage_config("export"), "quantize": recipe.stage_config("quantize"),
                        "decision": asdict(recipe.decision) if recipe.decision else None,
                        "threads": recipe.threads})


def candidates(recipe: Recipe) -> list[Candidate]:
    """The space in the order it is paid for: fewest MACs first, then the methods as listed, then the runtimes."""
    s = recipe.search
    return [Candidate(f"{ratio_name(r)}-{m}@{rt}", r, m, rt) for r in sorted(s.target_macs) for m in s.method
            for rt in s.runtimes]


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


def check_runtimes(runtimes: list[str], where: str = "search.runtimes") -> dict[str, str]:
    """Why each of ``runtimes`` (the recipe's ``where``) cannot run here (empty: it can); refused in one line when
    none can."""
    from edgeft.runtime.backends import BACKENDS

    missing = {rt: BACKENDS[rt].why_not() for rt in runtimes}
    if all(missing.values()):
        raise ConfigError(f"{where}: none can run on this machine ("
                          + "; ".join(f"{rt}: {why}" for rt, why in missing.items()) + "); add ort-cpu")
    return missing


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


def _score_val(recipe: Recipe, a: art.Artifact, val, backend: str | None = None
               ) -> tuple[dict[str, Any], list[int], dict[str, Any] | None]:
    """A model on val on ``backend`` (default: its kind's), scored once (:func:`edgeft.evaluate.score_split`): its
    metrics at the policy chosen there (with a decision section), its prediction per image, and the policy."""
    from edgeft.evaluate import score_split

    d = recipe.decision
    m, predictions, policy = score_split(a, val, d.rule() if d else None, list(d.positive) if d else [], backend)
    return m.to_dict(), predictions, policy.to_dict() if policy else None


def _baseline(recipe: Recipe, finetuned: Path, root: Path) -> tuple[dict[str, Any], Path]:
    """The fine-tuned model on val (at its own val-chosen policy) and its FP32 ONNX file (the latency baseline,
    gray input as the shipped model's)."""
    from edgeft.data import load_split
    from edgeft.export.stage import export

    a = art.load(finetuned)
    val = load_split(recipe.data, "val", a.meta.input, classes=a.meta.class_names)
    d, predictions, _ = _score_val(recipe, a, val)
    d["labels"], d["predictions"] = val.labels.tolist(), predictions
    onnx_dir = root / "baseline-onnx"
    if not (onnx_dir / "meta.json").is_file():
        e = recipe.sections["export"]
        export(finetuned, onnx_dir, opset=e.opset, dynamic_batch=recipe.dynamic_batch, do_simplify=e.simplify,
               data=recipe.data, n=min(16, e.parity_images), force=True, gray_input=e.gray_input)
    return d, onnx_dir / "model.onnx"


def ratio_name(target_macs: float) -> str:
    """A ratio's name in candidate keys and folders: macs0.50."""
    return f"macs{target_macs:.2f}"


def recovered_dir(root: Path, target_macs: float) -> Path:
    """Where a ratio's recovered model and its FP32 ONNX export live, shared by the ratio's methods."""
    return root / ratio_name(target_macs)


def _run_candidate(recipe: Recipe, c: Candidate, finetuned: Path, snapshot: Path, root: Path) -> Path:
    """Make ``c``'s model (shared by its runtimes): the ratio's snapshot recovered and exported once (shared by its
    methods: the recovery is the expensive part), then quantized with the candidate's method (none for fp32); the
    folder of the artifact that would ship (``quantize``, or the ratio's ``export`` for fp32)."""
    from edgeft.data import calibration
    from edgeft.export.stage import export
    from edgeft.prune.pruner import recover_snapshot
    from edgeft.quantize.ptq import QuantizeConfig, quantize

    r = recovered_dir(root, c.target_macs)
    if not (r / "export" / "meta.json").is_file():
        if r.exists():
            shutil.rmtree(r)  # an interrupted recovery starts over
        r.mkdir(parents=True)
        p = replace(recipe.sections["prune"], target_macs=c.target_macs, target_params=None)
        if recipe.threads and not p.threads:
            p = replace(p, threads=recipe.threads)
        progress.info(f"[search] recovering the {c.target_macs:g}-MACs snapshot")
        recover_snapshot(snapshot, finetuned, recipe.data, r / "prune", p, force=True)
        e = recipe.sections["export"]
        export(r / "prune", r / "export", opset=e.opset, dynamic_batch=recipe.dynamic_batch, do_simplify=e.simplify,
               data=recipe.data, n=e.parity_images, force=True, gray_input=e.gray_input)
    if c.method == "fp32":
        return r / "export"
    d = root / c.model
    if d.exists():
        shutil.rmtree(d)  # an interrupted quantization starts over
    d.mkdir(parents=True)
    q = recipe.sections["quantize"]
    calib = Path(q.calib) if q.calib else root / "calibration.json"
    if not calib.is_file():
        calibration.save(recipe.plugin.calibration_manifest(recipe.data, q.calib_images,
                                                            art.load(finetuned).meta.class_names), calib)
    cfg = QuantizeConfig(method=c.method, target=q.target, calib_method=q.calib_method, percentile=q.percentile,
                         exclude=list(q.exclude), auto_exclude=q.auto_exclude, threads=recipe.threads or 2)
    if c.method == "qat":
        recipe.plugin.qat(r / "prune", d / "quantize", cfg, calib, recipe.data, epochs=q.epochs, lr=q.lr,
                          mode=q.qat_mode, force=True)
        return d / "quantize"
    for m in recipe.search.calib_method or [q.calib_method]:  # each measured on val by the quantize stage itself
        a = quantize(r / "export", d / f"quantize-{m}", replace(cfg, calib_method=m), calib, recipe.data, force=True)
        c.calibration[m] = a.meta.metrics[a.meta.metrics["eval_split"]]["accuracy"]
    best = max(c.calibration, key=lambda m: c.calibration[m])  # ties: the first listed
    if len(c.calibration) > 1:
        progress.info(f"[search] {c.model}: calibration {best} kept (val accuracy "
                      + ", ".join(f"{m} {v * 100:.2f}%" for m, v in c.calibration.items()) + ")")
    os.replace(d / f"quantize-{best}", d / "quantize")
    return d / "quantize"


def _measure(recipe: Recipe, group: list[Candidate], model_dir: Path, baseline_onnx: Path) -> None:
    """One model on each of its candidates' runtimes: scored on val there at its own val-chosen policy, and timed
    there against the fine-tuned FP32 ONNX model on ONNX Runtime, all of them interleaved in the same rounds (paired
    per-round ratios)."""
    from edgeft.data import load_split

    a = art.load(model_dir)
    val = load_split(recipe.data, "val", a.meta.input, classes=a.meta.class_names)
    for c in group:
        c.val, c.val_predictions, c.policy = _score_val(recipe, a, val, c.runtime)
    time_paired(group, baseline_onnx, {c.key: a for c in group}, recipe.threads or 2, recipe.search.latency_rounds)


def time_paired(cands: list[Any], baseline: Path, models: dict[str, art.Artifact], threads: int, rounds: int) -> None:
    """Time each candidate (anything with ``key``, ``runtime``, ``p50_ms``, ``baseline_p50_ms``, ``speedups``: the
    search's and the ship step's) on its runtime, its model ``models[key]``, against the ``baseline`` ONNX file on
    ONNX Runtime, all interleaved in the same ``rounds``: each one's p50 and its per-round paired speed-ups."""
    from edgeft.runtime.backends import BACKENDS, OrtRunner
    from edgeft.runtime.timing import paired_rounds

    runners = {"base": OrtRunner(baseline, "CPUExecutionProvider", threads)}
    for c in cands:
        runners[c.key] = BACKENDS[c.runtime].make(models[c.key].model_path, models[c.key].path, threads)
    contract = models[cands[0].key].meta.input
    times = paired_rounds(runners, (1, contract.channels, *contract.size), rounds)
    for c in cands:
        c.p50_ms = round(statistics.median(times[c.key]), 3)
        c.baseline_p50_ms = round(statistics.median(times["base"]), 3)
        c.speedups = [round(b / x, 3) for b, x in zip(times["base"], times[c.key])]


def judge(recipe: Recipe, baseline_val: dict[str, Any], c: Candidate) -> list[dict[str, Any]]:
    """Every gate on val: the candidate against the fine-tuned model, each at its own val-chosen policy, and the
    latency gate of the candidate's runtime on its measured p50 (batch 1; the recipe gives each runtime its limit)."""
    from edgeft.optimize.gates import judge_on_val
    from edgeft.optimize.rows import Row

    base = Row(recipe.first_stage, recipe.first_stage, recipe.first_label, "", "done",
               accuracy=Classification.from_dict({k: v for k, v in baseline_val.items()
                                                  if k not in ("labels", "predictions")}, "search baseline"),
               split="val")
    row = Row(c.key, "quantize", c.key, "", "done", accuracy=c.val_metrics(), split="val")
    return [v.to_dict() for v in judge_on_val(recipe.gates, base, row, c.runtime, c.p50_ms)]  # JSON in the result


def _fails(verdicts: list[dict[str, Any]]) -> tuple[bool, bool]:
    """(fails a latency gate, fails another gate)."""
    failed = [v["gate"] for v in verdicts if v["status"] == "fail"]
    return any(g.startswith("max_p50_ms") for g in failed), any(not g.startswith("max_p50_ms") for g in failed)


def excess(v: dict[str, Any]) -> float:
    """How far a failed gate is from its limit, relative to the limit (0 when it passes)."""
    if v["status"] != "fail" or v["value"] is None:
        return 0.0 if v["status"] != "fail" else float("inf")
    return (v["value"] - v["limit"]) / max(abs(v["limit"]), 1e-9)


def _speed(c: Candidate) -> float:
    """Paired speed-up, for ordering (a candidate never timed sorts last)."""
    return c.speedup if c.speedup is not None else float("-inf")


def compromise(tried: list[Candidate], baseline_val: dict[str, Any]) -> Candidate:
    """When no candidate meets every gate: the smallest worst miss relative to its limit; among candidates whose worst
    miss is within one paired standard error of that one's (an accuracy miss the val split cannot tell apart), the
    fastest. Trading measured speed for a difference val cannot resolve would be paying for noise."""
    def worst(c: Candidate) -> float:
        return max((excess(v) for v in c.verdicts), default=0.0)

    best = min(tried, key=lambda c: (worst(c), -_speed(c)))
    tolerance = 0.0
    gate = max(best.verdicts, key=excess, default=None)
    paired = bool(best.val_predictions and baseline_val.get("labels"))
    if gate is not None and gate["gate"] == "max_accuracy_drop_pp" and paired:
        se = paired_drop(baseline_val["labels"], baseline_val["predictions"], best.val_predictions)["se_pp"]
        tolerance = se / max(abs(gate["limit"]), 1e-9)
    close = [c for c in tried if worst(c) <= worst(best) + tolerance]
    return min(close, key=lambda c: (-_speed(c), worst(c)))


SAME_SPEED = 0.02  # paired speed-ups this close (relative) are one speed: the plainer path ships


def fastest(passed: list[Any]) -> Any | None:
    """The fastest of the passing candidates (the search's :class:`Candidate` or the ship step's ``Choice``) by
    paired speed-up. Among those within SAME_SPEED of it (one speed to the rounds), one that computes in the model's
    own precision goes before one at a reduced precision (an INT8 model on ov-cpu-bf16 runs its unquantized layers in
    bf16: no reason to ship that for a speed-up the rounds cannot tell apart); then what the line pays at each one's
    own val operating point: fewer false rejects, then more recall; then the faster; ties: the first paid for."""
    from edgeft.runtime.backends import BACKENDS

    if not passed:
        return None
    top = _speed(max(passed, key=_speed))
    close = [c for c in passed if _speed(c) >= top * (1 - SAME_SPEED)]
    return min(close, key=lambda c: (BACKENDS[c.runtime].precision is not None, _or(c.false_reject, 0.0),
                                     -_or(c.recall, 0.0), -_speed(c)))


def _or(x: float | None, default: float) -> float:
    return default if x is None else x


def pareto_front(candidates: list[dict[str, Any]]) -> list[str]:
    """The keys of the measured candidates (result dicts) no other beats on both paired speed-up and val accuracy:
    the trade-offs the space offers, fastest first."""
    pts = sorted(((statistics.median(c["speedups"]), c["val"]["accuracy"], c["key"]) for c in candidates
                  if c.get("val") and c.get("speedups")), key=lambda p: -p[0])
    return [k for sp, acc, k in pts if not any(s2 >= sp and a2 >= acc and (s2, a2) != (sp, acc) for s2, a2, _ in pts)]


def skip_reason(c: Candidate, result: list[Candidate], best: Candidate | None) -> str:
    """Why ``c`` need not be paid for, given the candidates already judged (``result``) and the passing one that
    ships so far (``best``); empty when it could still be measurably faster than every passing one (by more than
    SAME_SPEED), or none has passed. On one runtime, a model with more MACs at the same precision is no faster than a
    measured one with fewer (QAT is the same graph as PTQ)."""
    same = [r for r in result if r.runtime == c.runtime and r.precision == c.precision and r.speedup is not None
            and r.target_macs <= c.target_macs]
    slow = [r for r in same if r.status == "fail" and _fails(r.verdicts) == (True, False)]  # only on latency
    if slow:
        r = min(slow, key=lambda r: r.target_macs)
        if r.target_macs < c.target_macs:
            return (f"{r.target_macs:g} of the MACs already missed the latency gate on {c.runtime}; this one is no "
                    "faster")
        return "the same graph missed only the latency gate with another method"
    if best is None:
        return ""
    if not same:
        return ""  # nothing bounds its speed yet
    bound = min(same, key=lambda r: r.speedup)
    top = max(_speed(r) for r in result if r.status == "pass")
    if bound.speedup <= top * (1 + SAME_SPEED):
        return (f"no faster than {best.key}, which passed at {best.speedup:.2f}x: {bound.key} reached "
                f"{bound.speedup:.2f}x with fewer or as many MACs")
    return ""


def search(recipe: Recipe, run: Path, finetuned: Path, resume: bool = False) -> SearchResult:
    """Run the search of ``recipe`` under ``run/search`` from the fine-tuned artifact ``finetuned``; the test split
    must be sealed by the caller. Returns the chosen candidate (its artifacts in ``run/search/<model>/``)."""
    from edgeft.optimize.recipe import data_fingerprint
    from edgeft.prune.pruner import prune_schedule

    t0 = time.time()
    s = recipe.search
    budget = s.budget_min * 60
    root = run / SEARCH_DIR
    parent = art.load(finetuned)
    inputs = config_hash({"finetuned": parent.meta.model_sha256, "data": data_fingerprint(recipe.data)})
    missing = check_runtimes(recipe.search.runtimes)
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
    result: list[Candidate] = []
    models: dict[str, list[Candidate]] = {}
    for c in space:
        models.setdefault(c.model, []).append(c)
    for model, group in models.items():
        snap_meta = art.load(snaps[group[0].target_macs]).meta.metrics
        runnable = [c for c in group if not missing[c.runtime]]
        for c in group:
            if missing[c.runtime]:
                c.reason = f"{c.runtime} cannot run here: {missing[c.runtime]}"
        prior = [done.get(c.key) for c in runnable]
        best = fastest([r for r in result if r.status == "pass"])
        if runnable and all(p is not None and p.status in ("pass", "fail") for p in prior):
            group = [done.get(c.key) or c for c in group]
            progress.info(f"[search] {model}: reused ({', '.join(f'{c.runtime} {c.status}' for c in group)})")
        elif runnable:
            reasons = [skip_reason(c, result, best) for c in runnable]
            if all(reasons):
                for c, why in zip(runnable, reasons):
                    c.reason = why
            else:
                spent = time.time() - t0
                need = statistics.mean(costs) if costs else estimate
                if costs and spent + need > budget:  # the first always runs: its estimate was checked above
                    for c in runnable:
                        c.reason = (f"budget: {spent / 60:.1f} of {s.budget_min:g} min spent, a candidate costs about "
                                    f"{need / 60:.1f} min")
                else:
                    t1 = time.time()
                    shipped = _run_candidate(recipe, runnable[0], finetuned, snaps[group[0].target_macs], root)
                    for c in runnable[1:]:
                        c.calibration = dict(runnable[0].calibration)
                    _measure(recipe, runnable, shipped, baseline_onnx)
                    seconds = round(time.time() - t1, 1)
                    for c in runnable:
                        c.seconds = seconds
                    costs.append(seconds)
        for c in group:
            c.macs_ratio = (snap_meta.get("prune") or {}).get("macs_ratio")
            split = snap_meta.get("eval_split", "val")
            c.val_before_recovery = (snap_meta.get(split) or {}).get("accuracy")
            if c.val is not None:
                c.verdicts = judge(recipe, baseline_val, c)
                c.status = "pass" if all(v["status"] == "pass" for v in c.verdicts) else "fail"
                _say(c, baseline_val)
            elif c.reason:
                progress.info(f"[search] {c.key}: not run ({c.reason})")
            result.append(c)
            state["candidates"][c.key] = asdict(c)
        _write_state(root, state)
    tried = [c for c in result if c.val is not None]
    if not tried:
        raise ConfigError(f"search: no candidate could run within search.budget_min {s.budget_min:g}; raise it")
    chosen = fastest([c for c in result if c.status == "pass"])
    passed = chosen is not None
    if chosen is None:
        chosen = compromise(tried, baseline_val)
    _ship(chosen, root)
    res = SearchResult(chosen, passed, result, baseline_val, time.time() - t0, budget)
    state["result"] = res.to_dict()
    _write_state(root, state)
    return res


def _say(c: Candidate, baseline_val: dict[str, Any]) -> None:
    """One progress line: the candidate's verdict on val, its paired drop and speed, and the gates it missed."""
    from edgeft.optimize.gates import GateVerdict

    va = c.val_metrics()
    pd = paired_drop(baseline_val["labels"], baseline_val["predictions"], c.val_predictions) \
        if c.val_predictions else None
    progress.info(f"[search] {c.key}: {c.status} on val: accuracy {va.accuracy * 100:.2f}%"
                  + (f" (drop {pd['drop_pp']:+.2f} ± {pd['se_pp']:.2f} pp, one paired standard error)" if pd else "")
                  + f", {c.p50_ms:.2f} ms ({c.speedup:.2f}x the fine-tuned FP32 ONNX model on ort-cpu), "
                  + "; ".join(GateVerdict.from_dict(v).line() for v in c.verdicts if v["status"] == "fail"))


def _artifact_dir(root: Path, target_macs: float, method: str, stage: str) -> Path:
    """A candidate's artifact for ``stage``: the ratio's recovered prune and export, or the method's quantize."""
    if stage == "quantize":
        return root / f"{ratio_name(target_macs)}-{method}" / stage
    return recovered_dir(root, target_macs) / stage


def _ship(c: Candidate, root: Path) -> None:
    """Write the chosen candidate's runtime and its operating point (chosen on that runtime's val scores) into the
    artifact that ships: its model was scored on every runtime of its group, each writing its own policy there."""
    from edgeft.runtime.backends import runtime_record

    for d in [*root.glob("macs*/quantize"), *root.glob("macs*/export")]:  # an earlier choice of a resumed search
        other = art.load(d)
        if other.meta.extra.get("runtime"):
            other.meta.extra.pop("runtime")
            art.update_metrics(other, {})
    a = art.load(_artifact_dir(root, c.target_macs, c.method, "export" if c.method == "fp32" else "quantize"))
    extra = {"runtime": runtime_record(c.runtime, c.precision, chosen_by="search", speedup=c.speedup,
                                       speedup_range=[min(c.speedups), max(c.speedups)], rounds=len(c.speedups),
                                       p50_ms=c.p50_ms, measured=time.strftime("%Y-%m-%d"))}
    if c.policy is not None:
        extra["decision"] = c.policy
    art.update_metrics(a, {}, extra=extra)


def chosen(run: Path) -> dict[str, Any]:
    """The finished search's result (its chosen candidate's key, model folder, method and runtime)."""
    doc = load_result(run)
    if not doc or "result" not in doc:
        raise ConfigError(f"{run / SEARCH_DIR / STATE_FILE} has no finished search; run the recipe again")
    return doc["result"]


def chosen_dir(run: Path, stage: str) -> Path | None:
    """The chosen candidate's artifact for ``stage`` (prune, export or quantize), from the finished search; None for
    quantize when the chosen model ships unquantized (fp32)."""
    r = chosen(run)
    if stage == "quantize" and r["method"] == "fp32":
        return None
    return _artifact_dir(run / SEARCH_DIR, float(r["target_macs"]), r["method"], stage)


def copy_artifact(src: Path, out: Path) -> None:
    """Copy a finished artifact folder to ``out`` atomically (a temp folder renamed into place)."""
    with art.staging_dir(out, force=True) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
