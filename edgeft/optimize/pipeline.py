"""``edgeft optimize``: run a recipe's stages in order, each into ``RUN/NN-stage/``, then gate and report.

The plan is a list of steps, each one stage call writing one artifact. Every fine-tuned or pruned
PyTorch model is also exported, so the report can show what pruning and INT8 each bought on the same
backend. ``RUN/pipeline.json`` records, per finished step, a hash of its settings, of the data folder's
files (names, sizes, times) and of its parent's model file; ``--resume`` reuses a step only when all three
still match and its artifact loads, so a stage
that was interrupted (its artifact never appeared: stages write to a temp dir and rename) or whose
input changed runs again. An interrupted fine-tuning continues from its last finished epoch.

With a ``search:`` section the prune step runs the search (:mod:`edgeft.optimize.search`) and the pruned model's
export and the quantize step take the chosen candidate's artifacts; the whole run is then made with the test split
sealed (:func:`edgeft.data.imagefolder.sealed_test`), and :func:`measure_holdout` reads it once at the end.

What is specific to the recipe's task (``edgeft.tasks``) the pipeline asks the task: how the first model is made,
how each model is measured, which class INT8 calibrates on, what data it needs, and what the report adds (an anomaly
model's gallery of test parts with heatmaps).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft import progress
from edgeft.errors import ConfigError, DataError, DependencyError, EdgeftError, close_matches
from edgeft.optimize.recipe import Recipe, config_hash, data_fingerprint

STATE_FILE = "pipeline.json"
STATE_VERSION = 1


@dataclass
class Step:
    name: str  # directory under the run, e.g. "02-prune"
    stage: str
    parent: str | None = None  # the step whose artifact this one reads
    inputs: list[str] = field(default_factory=list)  # bench: the steps it measures
    label: str = ""  # what the row is called in the report
    searched: bool = False  # made by the search (RUN/search/): the step takes the chosen candidate's artifact


class Skip(Exception):
    """A step with nothing to make in this run, and why (the search shipped an unquantized model: no INT8 step)."""


@dataclass
class StepResult:
    step: Step
    status: str  # done | reused | skipped
    seconds: float = 0.0
    reason: str = ""


def plan(recipe: Recipe) -> list[Step]:
    """The steps a recipe runs, in order."""
    steps: list[Step] = []

    def add(stage: str, parent: Step | None = None, suffix: str = "", label: str = "", inputs=(),
            searched: bool = False) -> Step:
        s = Step(name=f"{len(steps) + 1:02d}-{stage}{'-' + suffix if suffix else ''}", stage=stage,
                 parent=parent.name if parent else None, inputs=list(inputs), label=label or stage,
                 searched=searched and recipe.search is not None)
        steps.append(s)
        return s

    first = add(recipe.first_stage, label=recipe.first_label)
    onnx_fp32: Step | None = first if recipe.imports_onnx else None  # an imported ONNX file is its own FP32 graph
    torch_steps = [first]
    if "prune" in recipe.stages:
        label = "searched pruned FP32" if recipe.search else "pruned FP32"
        torch_steps.append(add("prune", torch_steps[-1], label=label, searched=True))
    gray = ", gray input" if "export" in recipe.stages and recipe.sections["export"].gray_input else ""
    first_onnx = onnx_fp32  # the first model's FP32 ONNX file: what the ship step judges and times against
    if "export" in recipe.stages:
        for t in torch_steps:
            src = t.stage if len(torch_steps) > 1 else ""
            onnx_fp32 = add("export", t, suffix=src, label=f"{t.label} ONNX{gray}", searched=t.stage == "prune")
            first_onnx = first_onnx or onnx_fp32
    quantized: Step | None = None
    if "quantize" in recipe.stages:
        q = recipe.sections["quantize"]
        parent = torch_steps[-1] if q.method == "qat" or onnx_fp32 is None else onnx_fp32
        method = ("/".join(m.upper() for m in recipe.search.method if m != "fp32") or "PTQ") + ", searched" \
            if recipe.search else q.method.upper()
        quantized = add("quantize", parent, label=f"{'pruned ' if len(torch_steps) > 1 else ''}INT8 {method} "
                                                  f"({q.target}{gray if parent is onnx_fp32 else ''})", searched=True)
    if "build" in recipe.stages:
        b = recipe.sections["build"]
        parent = quantized if b.precision == "int8" else onnx_fp32
        if parent is None:
            raise ConfigError(f"build.precision {b.precision} needs an FP32 ONNX model: add export to stages")
        add("build", parent, label=f"TensorRT {b.precision.upper()} engine")
    if "ship" in recipe.stages:
        kinds = recipe.sections["ship"].models or ["int8", "fp32"]
        models = [m.name for kind, m in (("int8", quantized), ("fp32", onnx_fp32)) if kind in kinds and m is not None]
        add("ship", inputs=[first_onnx.name, *models], label="shipped (runtime chosen on val)")
    if "bench" in recipe.stages:
        add("bench", inputs=[s.name for s in steps])
    return steps


# ----------------------------------------------------------------------------------------------- state

def _read_state(run: Path) -> dict[str, Any]:
    p = run / STATE_FILE
    if not p.is_file():
        return {"version": STATE_VERSION, "steps": {}}
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EdgeftError(f"{p} is damaged; start over with --force") from None
    if d.get("version") != STATE_VERSION:
        raise EdgeftError(f"{p} was written by another edgeft version; start over with --force")
    return d


def _write_state(run: Path, state: dict[str, Any]) -> None:
    art.write_json(run / STATE_FILE, state, indent=1)


def _model_sha(run: Path, step_name: str) -> str | None:
    try:
        return art.load(run / step_name).meta.model_sha256
    except EdgeftError:
        return None


def step_hash(recipe: Recipe, step: Step, run: Path, data_fp: str) -> str:
    """What decides a step's result: its stage settings, the data's files, and its inputs' model files."""
    settings: Any = recipe.stage_config(step.stage)
    if step.stage == recipe.first_stage:
        settings = {k: v for k, v in settings.items() if k != "threads"}
    if step.stage == recipe.first_stage and recipe.from_ is not None:  # a new deployed model is another start
        from edgeft.finetune.stage import deployed_weights

        settings = {**settings, "from": str(recipe.from_),
                    "from_sha256": deployed_weights(recipe.from_).meta.model_sha256}
    if step.stage == "import":  # the file replaced in place is another model
        from edgeft.importer.stage import source_sha256

        settings = {**settings, "model_sha256": source_sha256(Path(settings["model"]))}
    if step.stage == "export" and recipe.dynamic_batch != settings.get("dynamic_batch"):
        settings = {**settings, "dynamic_batch": recipe.dynamic_batch}  # forced by the bench's batch sizes
    if step.stage == "ship":  # the ship step chooses by the gates and the decision rule
        settings = {"stage": settings, "gates": asdict(recipe.gates),
                    "decision": asdict(recipe.decision) if recipe.decision else None, "threads": recipe.threads}
    if step.searched:  # the search chooses these, by the gates
        from edgeft.optimize.search import space_hash

        gates = {k: v for k, v in asdict(recipe.gates).items()  # a gate field left unset hashes as before it existed
                 if not (k == "accuracy_significance" and v is None)}
        settings = {"stage": settings, "search": space_hash(recipe), "gates": gates}
    inputs = [step.parent] if step.parent else step.inputs
    return config_hash({"stage": step.stage, "settings": settings, "data": data_fp,
                        "inputs": {n: _model_sha(run, n) for n in inputs}})


def _reusable(run: Path, step: Step, state: dict[str, Any], h: str) -> bool:
    rec = state["steps"].get(step.name)
    if not rec or rec.get("status") != "done" or rec.get("hash") != h:
        return False  # a skipped step (no TensorRT then) is tried again: the machine may have it now
    if step.stage == "bench":
        return (run / step.name / "results.json").is_file()
    return _model_sha(run, step.name) == rec.get("model_sha256")


# ----------------------------------------------------------------------------------------------- stages

def _run_first(recipe: Recipe, step: Step, out: Path, resume: bool) -> None:
    """The recipe's first model: the user's own, imported and measured on the data, or made by its task (fine-tuned,
    fitted on good parts, ...)."""
    if step.stage == "import":
        from edgeft.importer import import_model

        import_model(recipe.sections["import"], out, data=recipe.data, force=True)
        return
    recipe.plugin.run_first(recipe, out, resume)


def _run_prune(recipe: Recipe, step: Step, out: Path, parent: Path) -> None:
    from dataclasses import replace

    from edgeft.prune.pruner import prune

    cfg = recipe.sections["prune"]
    if recipe.threads and not cfg.threads:
        cfg = replace(cfg, threads=recipe.threads)
    # The bench stage times the fine-tuned and pruned models side by side; without one, prune times them itself.
    prune(parent, recipe.data, out, cfg, force=True, measure_latency="bench" not in recipe.stages)


def _run_export(recipe: Recipe, step: Step, out: Path, parent: Path) -> None:
    from edgeft.export.stage import export

    e = recipe.sections["export"]
    export(parent, out, opset=e.opset, dynamic_batch=recipe.dynamic_batch, do_simplify=e.simplify, data=recipe.data,
           n=e.parity_images, force=True, gray_input=e.gray_input)


def _policy_current(recipe: Recipe, out: Path) -> bool:
    """Whether a reused model's policy is the one the recipe asks for (none asked: nothing to redo)."""
    from edgeft.decision import read_policy

    if recipe.decision is None:
        return True
    p = read_policy(art.load(out).meta.extra)
    return p is not None and p.rule == recipe.decision.rule() and p.positive == list(recipe.decision.positive)


def _measure(recipe: Recipe, step: Step, out: Path, always: bool = False) -> None:
    """After a model step: the task measures the model on the held-out split as it reports it."""
    recipe.plugin.measure(recipe, step.stage, out, always)


def _run_quantize(recipe: Recipe, step: Step, out: Path, parent: Path, run: Path) -> None:
    from edgeft.data import calibration
    from edgeft.quantize.ptq import QuantizeConfig, quantize

    q = recipe.sections["quantize"]
    calib = Path(q.calib) if q.calib else None
    if calib is None:  # a class-balanced manifest from the train split, kept with the run for reproducibility
        calib = run / f"{step.name}-calibration.json"
        names = art.load(parent).meta.class_names
        calibration.save(recipe.plugin.calibration_manifest(recipe.data, q.calib_images, names), calib)
    cfg = QuantizeConfig(method=q.method, target=q.target, calib_method=q.calib_method, percentile=q.percentile,
                         exclude=list(q.exclude), auto_exclude=q.auto_exclude, threads=recipe.threads)
    if q.method == "qat":
        recipe.plugin.qat(parent, out, cfg, calib, recipe.data, epochs=q.epochs, lr=q.lr, mode=q.qat_mode, force=True)
    else:
        quantize(parent, out, cfg, calib, recipe.data, force=True)


def _run_searched(recipe: Recipe, step: Step, out: Path, parent: Path, run: Path, resume: bool) -> None:
    """A step the search decides: the prune step runs the search and takes its chosen candidate's pruned model; the
    export of that model and the quantize step take the same candidate's artifacts (made and measured on val during
    the search, so nothing is computed twice)."""
    from edgeft.optimize import search as srch

    if step.stage == "prune":
        result = srch.search(recipe, run, parent, resume=resume)
        progress.info(f"[{step.name}] the search chose {result.chosen.key}"
                      + ("" if result.passed else " (the best compromise: no candidate met every gate on val)"))
    src = srch.chosen_dir(run, step.stage)
    if src is None:
        raise Skip(f"the search ships {srch.chosen(run)['chosen']}: the pruned FP32 model, unquantized")
    srch.copy_artifact(src, out)


def _run_build(recipe: Recipe, step: Step, out: Path, parent: Path) -> None:
    from edgeft.tensorrt.build import BuildConfig, build

    b = recipe.sections["build"]
    build(parent, out, BuildConfig(precision=b.precision, batch=tuple(b.batch), workspace_mb=b.workspace_mb,
                                   timing_cache=b.timing_cache), force=True)


def _run_ship(recipe: Recipe, step: Step, out: Path, run: Path) -> None:
    from edgeft.optimize.ship import ship

    ship(recipe, run, step.inputs[0], step.inputs[1:], out)


def _run_bench(recipe: Recipe, step: Step, out: Path, run: Path, done: dict[str, StepResult]) -> None:
    from edgeft.bench.harness import BenchConfig, bench
    from edgeft.bench.profile import REPORT_FILE
    from edgeft.runtime.backends import BACKENDS

    b = recipe.sections["bench"]
    pairs = []
    for name in step.inputs:
        if done.get(name) is None or done[name].status == "skipped":
            continue
        meta = art.load(run / name).meta
        shipped = (meta.extra.get("runtime") or {}).get("backend")  # the search's runtime: timed where it ships
        backends = dict.fromkeys([*b.backends, *([shipped] if shipped else [])])
        pairs += [(str(run / name), backend) for backend in backends if BACKENDS[backend].model_file == meta.model_file]
    cfg = BenchConfig(backends=list(b.backends), batches=list(b.batches), warmup_s=b.warmup_s, duration_s=b.duration_s,
                      threads=b.threads or recipe.threads, rounds=b.rounds, memory=b.memory)
    doc = bench([], cfg, pairs=pairs)
    where = _where_time_goes(run, step, done, cfg.threads or 2) if b.profile else None
    with art.staging_dir(out, force=True) as tmp:
        (tmp / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
        if where is not None:
            (tmp / REPORT_FILE).write_text(json.dumps(where, indent=1) + "\n")


def _where_time_goes(run: Path, step: Step, done: dict[str, StepResult], threads: int) -> dict[str, Any] | None:
    """The last ONNX model the bench measured, on the runtime it ships on (the search's record, else ONNX Runtime):
    its operators' times grouped, against the p50 measured without profiling, and this CPU's floor for it
    (:mod:`edgeft.bench.profile`, :mod:`edgeft.bench.floor`). A profiler that fails is said in the report, not
    fatal: the bench's numbers stand without it."""
    from edgeft.bench.floor import floor
    from edgeft.bench.profile import profile

    models = [n for n in step.inputs if done.get(n) is not None and done[n].status != "skipped"
              and art.load(run / n).meta.model_file == "model.onnx"]
    if not models:
        return None
    a = art.load(run / models[-1])
    rt = a.meta.extra.get("runtime") or {}
    backend = rt.get("backend", "ort-cpu")
    precision = "int8" if a.meta.extra.get("quantized") == "int8" else "fp32"
    shape = (1, a.meta.input.channels, *a.meta.input.size)
    progress.info(f"[{step.name}] where {models[-1]}'s time goes on {backend}: its operators and this CPU's floor")
    try:
        p = profile(a.model_path, shape, backend, threads)
        f = floor(a.model_path, shape, backend, precision, threads)
    except Exception as e:  # a diagnostic: whatever stops a profiler is said in the report, the run stands
        return {"step": models[-1], "backend": backend,
                "error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"}
    return {"step": models[-1], "backend": backend, "profile": p.to_dict(), "floor": f.to_dict(),
            "floor_text": f.text(p.p50_us / 1000)}


# ----------------------------------------------------------------------------------------------- run

def prepare(recipe: Recipe) -> None:
    """Check (and, for the demo set, build) the data before any stage runs."""
    if not recipe.data.exists():
        if recipe.prepare_data == "elpv":
            from edgeft.data import elpv

            progress.info(f"building the ELPV demo set in {recipe.data}")
            elpv.build(recipe.data)
        elif recipe.prepare_data == "trees":
            from edgeft.data import trees

            progress.info(f"building the tree-crown detection demo set in {recipe.data}")
            trees.build(recipe.data)
        else:
            raise DataError(f"data: {recipe.data} does not exist; point data: at an ImageFolder with train/ val/ test/ "
                            "(or run from the folder the recipe's relative paths are written for)")
    splits = recipe.plugin.splits(recipe.data)
    if "train" not in splits:
        raise DataError(f"data: {recipe.data} has no train/ split (found: {', '.join(splits) or 'nothing'})")
    if recipe.gates.max_accuracy_drop_pp is not None and "test" not in splits:
        raise DataError(f"gates.max_accuracy_drop_pp needs a test/ split in {recipe.data} that no stage trains or "
                        "selects on; add one, or remove the gate")
    recipe.plugin.check_data(recipe, splits)


@dataclass
class RunResult:
    run: Path
    steps: list[StepResult]
    gates: list[Any]  # gates.GateVerdict per gate
    report: Path
    rows: list[Any] = field(default_factory=list)  # report.Row per model step
    promotion: Any = None  # edgeft.promote.compare.Promotion, with a promote: section and the gates passed

    @property
    def failed(self) -> bool:
        return any(g.status == "fail" for g in self.gates)

    @property
    def exit_code(self) -> int:
        """1 when a gate failed; with a promote: section, the promotion's (0 promote, 1 keep, 3 inconclusive)."""
        if self.failed:
            return 1
        return self.promotion.exit_code if self.promotion is not None else 0


def run_promotion(recipe: Recipe, run: Path, steps: list[Step], results: dict[str, StepResult]):
    """The recipe's promote: section: the run's final model against the deployed one, the report in RUN/promotion/,
    and on a promote the model directory's next version (``promote.into``). A model directory cannot run an engine
    built for another GPU, so the comparison takes the last CPU model (INT8 or FP32 ONNX) when the last step is a
    build."""
    from edgeft.promote.stage import promote

    cpu_steps = [s for s in steps if s.stage not in ("bench", "build") and results.get(s.name)
                 and results[s.name].status != "skipped"]
    final = cpu_steps[-1]
    decision = (list(recipe.decision.positive), recipe.decision.rule()) if recipe.decision else None
    progress.info(f"[promotion] {final.label} ({final.name}) against the deployed {recipe.from_}")
    return promote(recipe.from_, run / final.name, recipe.data, recipe.promote, run / "promotion", decision=decision)


def check_only(recipe: Recipe, only: list[str] | None) -> None:
    """Refuse an ``--only`` stage the recipe does not have (a typo would otherwise rerun nothing)."""
    for s in only or []:
        if s not in recipe.stages:
            raise ConfigError(f"--only {s}: not a stage of this recipe ({', '.join(recipe.stages)})"
                              f"{close_matches(s, recipe.stages)}")


def describe(recipe: Recipe, run: Path, resume: bool = False, only: list[str] | None = None) -> str:
    """The plan as text: each step, what it reads, and whether it would run or be reused (``only`` checked by
    the caller with ``check_only``)."""
    state = _read_state(run) if run.exists() else {"steps": {}}
    lines = [f"run {run}  (data {recipe.data}, stages {' -> '.join(recipe.stages)})"]
    for s in plan(recipe):
        first = recipe.sections[recipe.stages[0]]
        origin = (f"your {Path(first.model).name}" if s.stage == "import" else
                  f"deployed {recipe.from_}" if recipe.from_ is not None else
                  "pretrained " + getattr(first, "model", "weights"))
        src = s.parent or (", ".join(s.inputs) if s.inputs else origin)
        rec = state["steps"].get(s.name)
        if only and s.stage not in only:
            what = "reuse (not in --only)"
        elif resume and rec and rec.get("status") in ("done", "skipped"):
            what = "reuse if unchanged"
        else:
            what = "run"
        lines.append(f"  {s.name:<24} {s.label:<34} <- {src:<26} {what}")
    return "\n".join(lines)


def measure_holdout(recipe: Recipe, steps: list[Step], run: Path, results: dict[str, StepResult]) -> None:
    """After a search, with the seal lifted: the test split's one read, for the fine-tuned model and the models the
    search shipped (each at its own policy, chosen on val), which the gates and the report then judge."""
    progress.info(f"measuring the {recipe.first_label} and the shipped models on the test split (its first read)")
    for step in steps:
        r = results.get(step.name)
        if step.stage not in ("bench", "build") and r is not None and r.status in ("done", "reused"):
            _measure(recipe, step, run / step.name, always=True)


def _run_steps(recipe: Recipe, steps: list[Step], run: Path, state: dict[str, Any], results: dict[str, StepResult],
               data_fp: str, resume: bool, only: list[str] | None) -> None:
    """Run (or reuse) each step in order, recording it in ``RUN/pipeline.json`` as it finishes."""
    for step in steps:
        h = step_hash(recipe, step, run, data_fp)
        out_dir = run / step.name
        rec = state["steps"].get(step.name, {})
        forced = bool(only) and step.stage in only
        kept_by_only = bool(only) and not forced and rec.get("status") in ("done", "skipped")
        if not forced and ((resume and _reusable(run, step, state, h)) or kept_by_only):
            if rec.get("hash") != h:
                progress.warn(f"{step.name}: kept as --only asked, though its settings or inputs changed since it ran")
            results[step.name] = StepResult(step, "reused" if rec["status"] == "done" else "skipped",
                                            rec.get("seconds", 0.0), rec.get("reason", ""))
            progress.info(f"[{step.name}] reused ({rec['status']})")
            if rec["status"] == "done" and step.stage != "bench" and not _policy_current(recipe, out_dir):
                progress.info(f"[{step.name}] the decision section changed: choosing its policy again")
                _measure(recipe, step, out_dir)
            continue
        if only and not forced:
            raise EdgeftError(f"{step.name} has not run in {run}; run the whole recipe once before --only")
        parent = run / step.parent if step.parent else None
        if parent is not None and results.get(step.parent) and results[step.parent].status == "skipped":
            results[step.name] = StepResult(step, "skipped", reason=f"its input {step.parent} was skipped")
            state["steps"][step.name] = {"status": "skipped", "hash": h, "reason": results[step.name].reason}
            _write_state(run, state)
            continue
        progress.info(f"[{step.name}] {step.label}")
        continue_training = resume and rec.get("status") == "running" and rec.get("hash") == h
        state["steps"][step.name] = {"status": "running", "hash": h, "started": time.time()}
        _write_state(run, state)
        t0 = time.time()
        status, reason = "done", ""
        try:
            if step.searched:
                _run_searched(recipe, step, out_dir, parent, run, resume)
            elif step.stage == recipe.first_stage:
                _run_first(recipe, step, out_dir, continue_training)
            elif step.stage == "prune":
                _run_prune(recipe, step, out_dir, parent)
            elif step.stage == "export":
                _run_export(recipe, step, out_dir, parent)
            elif step.stage == "quantize":
                _run_quantize(recipe, step, out_dir, parent, run)
            elif step.stage == "build":
                _run_build(recipe, step, out_dir, parent)
            elif step.stage == "ship":
                _run_ship(recipe, step, out_dir, run)  # measures its model on its runtime itself
            elif step.stage == "bench":
                _run_bench(recipe, step, out_dir, run, results)
            if step.stage not in ("bench", "ship") and status == "done" and recipe.search is None:
                _measure(recipe, step, out_dir)  # with a search, every model is measured after the seal lifts
        except DependencyError as e:
            if step.stage != "build":
                raise
            status, reason = "skipped", str(e)
            progress.warn(f"{step.name} skipped: {reason}")
        except Skip as e:
            status, reason = "skipped", str(e)
            if out_dir.exists():  # an earlier run's model of this step would read as this run's
                shutil.rmtree(out_dir)
            progress.info(f"[{step.name}] skipped: {reason}")
        seconds = round(time.time() - t0, 1)
        results[step.name] = StepResult(step, status, seconds, reason)
        state["steps"][step.name] = {"status": status, "hash": h, "seconds": seconds, "reason": reason,
                                     "model_sha256": _model_sha(run, step.name) if status == "done" else None}
        _write_state(run, state)


def optimize(recipe: Recipe, out: str | os.PathLike | None = None, resume: bool = False, force: bool = False,
             only: list[str] | None = None) -> RunResult:
    """Run ``recipe`` into ``out`` (default ``runs/<name>``): stages, bench, gates, report."""
    from edgeft.optimize.gates import evaluate_gates
    from edgeft.optimize.report import write_report
    from edgeft.optimize.rows import collect

    run = Path(out) if out else Path("runs") / recipe.name
    check_only(recipe, only)
    if run.exists() and any(run.iterdir()) and not (resume or force or only):
        raise EdgeftError(f"{run} exists; pass --resume to continue it, --force to start over, or another --out")
    prepare(recipe)
    from edgeft.optimize.search import check_resume, check_runtimes

    if recipe.search is not None:  # a choice with no runtime here is refused before any stage
        check_runtimes(recipe.search.runtimes, "search.runtimes")
        if resume and not force:
            check_resume(recipe, run)
    elif "ship" in recipe.stages:
        check_runtimes(recipe.sections["ship"].runtimes, "ship.runtimes")
    if force and run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    from edgeft.training.track import ENV, ENV_EXPERIMENT

    if recipe.track:  # every training of the run logs to the recipe's tracker (or --track's), in the recipe's experiment
        os.environ[ENV] = recipe.track
    if os.environ.get(ENV):
        os.environ.setdefault(ENV_EXPERIMENT, recipe.name)
    state = _read_state(run)
    state["recipe"] = recipe.to_dict()
    steps = plan(recipe)
    results: dict[str, StepResult] = {}
    t_run = time.time()
    data_fp = data_fingerprint(recipe.data)
    if recipe.search is not None:
        from edgeft.data.imagefolder import sealed_test

        with sealed_test(recipe.data):  # every stage and every search decision sees train and val only
            _run_steps(recipe, steps, run, state, results, data_fp, resume, only)
        measure_holdout(recipe, steps, run, results)
    else:
        _run_steps(recipe, steps, run, state, results, data_fp, resume, only)
    state["seconds"] = round(time.time() - t_run, 1)
    _write_state(run, state)
    rows, doc = collect(run, steps, results)
    gallery, interval = recipe.plugin.report_extras(recipe, run, rows)
    gates = evaluate_gates(recipe.gates, rows, auroc_interval=interval)
    search = None
    if recipe.search is not None:
        from edgeft.optimize.search import load_result

        search = (load_result(run) or {}).get("result")
    report = write_report(recipe, run, steps, results, rows, doc, gates, search, gallery)
    result = RunResult(run, list(results.values()), gates, report, rows)
    if recipe.promote is not None:
        if result.failed:
            progress.warn("a gate failed: the run's model is not compared for promotion; the deployed model stays")
        else:
            result.promotion = run_promotion(recipe, run, steps, results)
    return result
