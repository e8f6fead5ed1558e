"""The ``edgeft optimize`` recipe: one YAML file, validated completely before any stage runs.

A recipe names the data, the stages with their settings, and the gates. Every section is turned into
the stage's own typed config here (``FinetuneConfig``, ``PruneConfig``, ``QuantizeConfig``, ...), so a
typo or an out-of-range value fails in the first second with the field's full name, not an hour later
when the stage is reached.

``task:`` names the task (``edgeft.tasks``; a classifier by default): its first stage is its own section (``finetune:``,
``anomaly:``, ...), parsed and checked by the task, and the task refuses, with what to use instead, what it cannot
honour (an anomaly recipe has no accuracy gate, no ``decision:`` section and no QAT).

An ``import:`` section (``edgeft.importer.ImportConfig``) takes the first stage's place: the chain starts from the
user's own fine-tuned checkpoint or ONNX file, measured on the data as it was brought. An ONNX file has no PyTorch
weights, so its chain is import -> quantize (PTQ) -> build -> bench.

The retraining loop: ``from: DEPLOYED`` (or ``edgeft optimize --from``) fine-tunes the deployed model again instead of
the pretrained weights (its ``finetune:`` section then holds only ``RetrainConfig``'s epochs, lr, mode, threads and
seed), and a ``promote:`` section (``edgeft.promote.rule``) judges the run's final model against it and, on a promote,
installs it in the station's model directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeft.errors import ConfigError, close_matches
from edgeft.runtime.backends import CPU_PATHS
from edgeft.settings import section

SHARED_STAGES = ("prune", "export", "quantize", "build", "ship", "bench")  # every task's; its first stage is its own
IMPORT = "import"  # a recipe may start from the user's own model instead of its task's first stage
FROM, PROMOTE = "from", "promote"  # the retraining loop: start from the deployed model; when the result replaces it
TRACK = "track"  # an MLflow store or server every training of the run logs its curves to (edgeft.training.track)
KEYS = {"name", "data", "prepare_data", "threads", "task", "stages", "gates", "decision", "search", IMPORT, FROM,
        PROMOTE, TRACK, *SHARED_STAGES}
PREPARERS = ("elpv", "trees")


@dataclass
class ExportSection:
    opset: int = 17
    dynamic_batch: bool = False
    simplify: bool = True
    parity_images: int = 64
    gray_input: bool = False  # 1-channel ONNX models for monochrome cameras (exact; see edgeft.export.gray_input)


@dataclass
class QuantizeSection:
    method: str = "ptq"
    target: str = "ort-cpu"
    calib: str | None = None  # a manifest from `edgeft calibrate`; None: made from the train split
    calib_images: int = 256
    calib_method: str = "percentile"
    percentile: float = 99.999
    exclude: list[str] = field(default_factory=list)
    auto_exclude: bool = True
    epochs: int = 2  # qat
    lr: float = 1e-4  # qat
    qat_mode: str = "full"  # qat: full, or partial (only the blocks the fine-tuning trained, cached prefix)


@dataclass
class BuildSection:
    precision: str = "fp16"
    batch: list[int] = field(default_factory=lambda: [1, 1, 1])
    workspace_mb: int = 1024
    timing_cache: str | None = None


@dataclass
class BenchSection:
    backends: list[str] = field(default_factory=lambda: ["ort-cpu", "torch"])
    batches: list[int] = field(default_factory=lambda: [1])
    warmup_s: float = 1.0
    duration_s: float = 3.0
    rounds: int = 3  # models measured interleaved, this many times: ratios come from one run, side by side
    threads: int | None = None
    memory: bool = True  # CPU backends: each model's resident memory, in a process of its own
    profile: bool = True  # where the final model's time goes on its runtime (operators, grouped) and this CPU's floor


@dataclass
class DecisionSection:
    """The line's decision policy (``edgeft.decision``), named once: every model of the run gets its own threshold,
    chosen on val by this rule, and is reported at it on test."""

    positive: list[str] = field(default_factory=list)  # the "not OK" classes
    target_recall: float | None = None
    max_false_reject: float | None = None
    escape_cost: float | None = None
    false_reject_cost: float = 1.0
    review_budget: float | None = None
    by_product: bool = False  # an operating point per product the data names (products.csv), each on its val parts

    def rule(self):
        from edgeft.decision import Rule

        return Rule(target_recall=self.target_recall, max_false_reject=self.max_false_reject,
                    escape_cost=self.escape_cost, false_reject_cost=self.false_reject_cost,
                    review_budget=self.review_budget, by_product=self.by_product)


@dataclass
class SearchSection:
    """What ``edgeft optimize`` may try to meet the gates: pruning ratios (fractions of the fine-tuned model's MACs),
    precisions (INT8 by PTQ or QAT, or FP32) and the CPU runtimes each model may ship on; the fastest candidate that
    meets every gate on val ships (see :mod:`edgeft.optimize.search`). ``budget_min``: minutes the search may spend
    after the fine-tuning."""

    target_macs: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7])
    method: list[str] = field(default_factory=lambda: ["ptq"])
    calib_method: list[str] = field(default_factory=list)  # PTQ calibrations to try per candidate, the best on val
                                                          # kept (cheap next to a recovery); empty: quantize's
    runtimes: list[str] = field(default_factory=lambda: ["ort-cpu"])  # each model scored and timed on each of these
                                                                      # this machine has (the others: said why not)
    budget_min: float = 20.0
    latency_rounds: int = 5  # interleaved rounds when each candidate is timed against the fine-tuned FP32 model

    METHODS = ("ptq", "qat", "fp32")  # fp32: the pruned model unquantized (ov-cpu-bf16 computes it in bf16)
    RUNTIMES = CPU_PATHS


@dataclass
class ShipSection:
    """Which of the run's models ships, on which CPU runtime (``edgeft.optimize.ship``): each of ``models`` (the INT8
    model, the last FP32 ONNX model) on each of ``runtimes`` this machine has is scored on val with its own threshold
    there, judged by the gates, and timed against the first model's FP32 ONNX file on ONNX Runtime in the same
    ``latency_rounds`` interleaved rounds; the fastest that passes ships. A search chooses the runtime itself
    (``search.runtimes``)."""

    runtimes: list[str] = field(default_factory=lambda: ["ort-cpu", "ov-cpu", "ov-cpu-bf16"])
    models: list[str] | None = None  # int8, fp32 or both; None: those the run makes
    latency_rounds: int = 15

    MODELS = ("int8", "fp32")


@dataclass
class Gates:
    """Checked on the last model of the run. ``max_p50_ms`` keys are ``backend`` (batch 1) or ``backend@batch``.
    The decision gates compare the final model with the fine-tuned one, each at its own operating point on test."""

    max_accuracy_drop_pp: float | None = None
    max_p50_ms: dict[str, float] = field(default_factory=dict)
    max_recall_drop_pp: float | None = None
    max_false_reject_rise_pp: float | None = None
    max_auroc_drop: float | None = None
    accuracy_significance: float | None = None  # with it, the accuracy gate fails only on a McNemar p below it
    max_map_drop_points: float | None = None  # a detector: mAP@[.5:.95] drop on test, in AP points (x 100)

    DECISION_GATES = ("max_recall_drop_pp", "max_false_reject_rise_pp", "max_auroc_drop")


@dataclass
class Recipe:
    name: str
    data: Path
    stages: list[str]
    sections: dict[str, Any]  # stage -> its typed config
    gates: Gates
    prepare_data: str | None = None
    threads: int | None = None
    source: str = ""
    decision: DecisionSection | None = None
    search: SearchSection | None = None
    task: str = "classify"
    from_: Path | None = None  # the deployed model the first stage fine-tunes again (recipe key ``from``)
    track: str | None = None  # an MLflow tracking store file or server URL (edgeft.training.track)
    promote: Any = None  # an edgeft.promote.rule.PromoteRule: when the run's model replaces the deployed one

    @property
    def dynamic_batch(self) -> bool:
        """Whether exported graphs take any batch size: asked for, or needed because the bench measures batches above
        one (a fixed batch-1 graph would run a batch of 8 as eight calls)."""
        benched = self.sections["bench"].batches if "bench" in self.stages else [1]
        return bool(self.sections["export"].dynamic_batch if "export" in self.stages else False) or \
            any(b > 1 for b in benched)

    @property
    def first_stage(self) -> str:
        """The stage that makes the first model: ``import`` or the task's own (``finetune``, ``anomaly``, ...)."""
        return self.stages[0]

    @property
    def imports_onnx(self) -> bool:
        """Whether the first model is an imported ONNX file (a deploy-only chain: no pruning, export or QAT)."""
        return self.first_stage == IMPORT and self.sections[IMPORT].is_onnx

    @property
    def first_label(self) -> str:
        """What the first model is called in the plan, the report and the search: imported, or the task's own."""
        if self.first_stage == IMPORT:
            return "imported ONNX FP32" if self.imports_onnx else "imported FP32"
        if self.from_ is not None:
            return "retrained FP32 (from the deployed model)"
        return self.plugin.first_label(self)

    @property
    def plugin(self):
        """The task object (``edgeft.tasks``) this recipe runs."""
        from edgeft import tasks

        return tasks.get(self.task)

    def stage_config(self, stage: str) -> dict[str, Any]:
        """A stage's settings as plain data (for hashing, the plan and the report)."""
        c = self.sections[stage]
        return c.to_dict() if hasattr(c, "to_dict") else asdict(c)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **({"task": self.task} if self.task != "classify" else {}), "data": str(self.data),
                "prepare_data": self.prepare_data, "threads": self.threads, "stages": self.stages,
                **{s: self.stage_config(s) for s in self.stages}, "gates": asdict(self.gates),
                **({"decision": asdict(self.decision)} if self.decision else {}),
                **({"search": asdict(self.search)} if self.search else {}),
                **({FROM: str(self.from_)} if self.from_ is not None else {}),
                **({PROMOTE: self.promote.to_dict()} if self.promote is not None else {}),
                **({TRACK: self.track} if self.track else {})}


def config_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_fingerprint(data: Path) -> str:
    """A cheap fingerprint of a data folder: every file's relative path, size and modification time (of a manifest:
    its own bytes and the size and time of every image it lists)."""
    if data.is_file():
        from edgeft.data.imagefolder import find_splits, scan_split

        listed = sorted((str(p), st.st_size, st.st_mtime_ns) for s in find_splits(data).values()
                        for p in scan_split(s).paths for st in [p.stat()])
        return config_hash([hashlib.sha256(data.read_bytes()).hexdigest(), listed])
    entries = sorted((str(p.relative_to(data)), st.st_size, st.st_mtime_ns)
                     for p in data.rglob("*") if p.is_file() for st in [p.stat()])
    return config_hash(entries)


def _int_list(value: Any, where: str, length: int | None = None) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ConfigError(f"{where} must be a list of positive integers, got {value!r}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{where} must have {length} values, got {value!r}")
    return value


def _runtimes(value: Any, where: str) -> list[str]:
    """A list of distinct CPU runtimes the search and the ship step can time (one name alone is a list of one)."""
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value):
        raise ConfigError(f"{where} must list distinct CPU runtimes, e.g. [ort-cpu, ov-cpu, ov-cpu-bf16]; got "
                          f"{value!r}")
    for r in value:
        if r not in SearchSection.RUNTIMES:
            raise ConfigError(f"{where}: {r!r} is not a CPU runtime edgeft times to choose one; choose from "
                              f"{', '.join(SearchSection.RUNTIMES)}{close_matches(str(r), SearchSection.RUNTIMES)}")
    return value


def _check_stage_sections(sections: dict[str, Any], task) -> None:
    """Turn each section into the stage's own validated config; errors name the section."""
    from edgeft.prune.config import PruneConfig
    from edgeft.quantize.ptq import QuantizeConfig

    def wrap(stage: str, build):
        try:
            return build()
        except ConfigError as e:
            msg = str(e)
            msg = re.sub(r"^unknown field '?([\w.]+)'?", lambda m: "unknown field " + (
                m.group(1) if m.group(1).startswith(stage + ".") else f"{stage}.{m.group(1)}"), msg)
            if not msg.startswith(("unknown field", stage + ".")):
                msg = f"{stage}: {msg}"
            raise ConfigError(msg) from None
        except TypeError as e:
            raise ConfigError(f"{stage}: {e}") from None

    if task.first_stage in sections:
        sections[task.first_stage] = wrap(task.first_stage, lambda: task.first_config(sections[task.first_stage]))
    if IMPORT in sections:
        from edgeft.importer.stage import ImportConfig

        d = sections[IMPORT] or {}
        if not isinstance(d, dict) or "model" not in d:
            raise ConfigError("import: needs model: (a .pth/.safetensors checkpoint with arch:, or an .onnx file)")
        cfg = section(ImportConfig, d, IMPORT)
        cfg.task = task.name
        wrap(IMPORT, cfg.check)
        sections[IMPORT] = cfg
        if cfg.is_onnx:
            for stage, why in (("prune", "pruning retrains PyTorch weights"),
                               ("export", "the model is ONNX already")):
                if stage in sections:
                    raise ConfigError(f"{stage}: import.model {Path(cfg.model).name} is an ONNX file and {why}; remove "
                                      f"{stage}, or import the PyTorch checkpoint (model: FILE.pth, arch: ARCH)")
    if "prune" in sections:
        d = sections["prune"] or {}
        if not isinstance(d, dict):
            raise ConfigError("prune must be a mapping of option: value")
        known = {f.name for f in fields(PruneConfig)}
        for key in d:
            if key not in known:
                raise ConfigError(f"unknown field prune.{key}{close_matches(str(key), known)}")
        sections["prune"] = wrap("prune", lambda: PruneConfig(**d))
    if "export" in sections:
        s = section(ExportSection, sections["export"], "export")
        if s.opset < 13:
            raise ConfigError(f"export.opset must be >= 13, got {s.opset}")
        sections["export"] = s
    if "quantize" in sections:
        s = section(QuantizeSection, sections["quantize"], "quantize")
        wrap("quantize", lambda: QuantizeConfig(method=s.method, target=s.target, calib_method=s.calib_method,
                                                percentile=s.percentile))
        if s.calib is not None and not Path(s.calib).is_file():
            raise ConfigError(f"quantize.calib: calibration manifest not found: {s.calib} (make one with "
                              "`edgeft calibrate`, or leave calib out to sample the train split)")
        if s.calib_images < 16:
            raise ConfigError(f"quantize.calib_images must be >= 16, got {s.calib_images}")
        if s.qat_mode not in ("full", "partial"):
            raise ConfigError(f"quantize.qat_mode must be full or partial, got {s.qat_mode!r}")
        if s.epochs < 1 or not s.lr > 0:
            raise ConfigError(f"quantize.epochs must be >= 1 and quantize.lr positive, got {s.epochs}, {s.lr}")
        sections["quantize"] = s
    if "build" in sections:
        from edgeft.tensorrt.build import BuildConfig

        s = section(BuildSection, sections["build"], "build")
        s.batch = _int_list(s.batch, "build.batch", 3)
        wrap("build", lambda: BuildConfig(precision=s.precision, batch=tuple(s.batch), workspace_mb=s.workspace_mb))
        sections["build"] = s
    if "ship" in sections:
        s = section(ShipSection, sections["ship"], "ship")
        s.runtimes = _runtimes(s.runtimes, "ship.runtimes")
        if isinstance(s.models, str):
            s.models = [s.models]
        if s.models is not None and (not isinstance(s.models, list) or not s.models or len(set(s.models)) != len(
                s.models) or any(m not in ShipSection.MODELS for m in s.models)):
            raise ConfigError(f"ship.models must list int8, fp32 or both (distinct), got {s.models!r}")
        if not isinstance(s.latency_rounds, int) or isinstance(s.latency_rounds, bool) or s.latency_rounds < 1:
            raise ConfigError(f"ship.latency_rounds must be an integer >= 1, got {s.latency_rounds!r}")
        sections["ship"] = s
    if "bench" in sections:
        from edgeft.runtime.backends import BACKENDS

        s = section(BenchSection, sections["bench"], "bench")
        if isinstance(s.backends, str):
            s.backends = [s.backends]
        for b in s.backends:
            if b not in BACKENDS:
                raise ConfigError(f"bench.backends: unknown backend {b!r}; choose from {', '.join(BACKENDS)}"
                                  f"{close_matches(str(b), BACKENDS)}")
        s.batches = _int_list(s.batches, "bench.batches")
        if s.rounds < 1 or s.duration_s <= 0 or s.warmup_s < 0:
            raise ConfigError("bench.rounds must be >= 1, bench.duration_s positive and bench.warmup_s >= 0")
        sections["bench"] = s


def _decision(d: Any) -> DecisionSection | None:
    if d is None:
        return None
    s = section(DecisionSection, d, "decision")
    if isinstance(s.positive, str):
        s.positive = [s.positive]
    if not isinstance(s.positive, list) or not s.positive or not all(isinstance(c, str) and c for c in s.positive):
        raise ConfigError(f"decision.positive must name the 'not OK' class(es), e.g. [defective], got {s.positive!r}")
    s.rule()  # a rule that cannot be chosen fails now, not after the fine-tuning
    return s


def _search(d: Any, stages: list[str], sections: dict[str, Any], gates: Gates) -> SearchSection | None:
    """The search space, refused when empty or contradictory (one line naming the field and the fix)."""
    if d is None:
        return None
    s = section(SearchSection, d, "search")
    if isinstance(s.target_macs, (int, float)) and not isinstance(s.target_macs, bool):
        s.target_macs = [s.target_macs]
    if isinstance(s.method, str):
        s.method = [s.method]
    if not isinstance(s.target_macs, list) or not s.target_macs:
        raise ConfigError("search.target_macs is empty: list the fractions of the MACs to try, e.g. [0.5, 0.6, 0.7]")
    for v in s.target_macs:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ConfigError(f"search.target_macs: {v!r} is not a fraction in (0, 1) of the fine-tuned model's MACs")
    if len(set(s.target_macs)) != len(s.target_macs):
        raise ConfigError(f"search.target_macs lists a ratio twice: {s.target_macs}")
    s.target_macs = sorted(float(v) for v in s.target_macs)
    if not isinstance(s.method, list) or not s.method:
        raise ConfigError("search.method is empty: list ptq, qat, fp32 or several")
    for m in s.method:
        if m not in SearchSection.METHODS:
            raise ConfigError(f"search.method: unknown method {m!r}; choose from {', '.join(SearchSection.METHODS)}"
                              f"{close_matches(str(m), SearchSection.METHODS)}")
    if len(set(s.method)) != len(s.method):
        raise ConfigError(f"search.method lists a method twice: {s.method}")
    s.runtimes = _runtimes(s.runtimes, "search.runtimes")
    from edgeft.quantize.ptq import CALIB_METHODS

    if isinstance(s.calib_method, str):
        s.calib_method = [s.calib_method]
    if not isinstance(s.calib_method, list) or len(set(s.calib_method)) != len(s.calib_method):
        raise ConfigError(f"search.calib_method must list distinct calibrations, got {s.calib_method!r}")
    for m in s.calib_method:
        if m not in CALIB_METHODS:
            raise ConfigError(f"search.calib_method: unknown calibration {m!r}; choose from {', '.join(CALIB_METHODS)}"
                              f"{close_matches(str(m), CALIB_METHODS)}")
    if not s.budget_min > 0:
        raise ConfigError(f"search.budget_min must be a positive number of minutes, got {s.budget_min}")
    if not isinstance(s.latency_rounds, int) or s.latency_rounds < 1:
        raise ConfigError(f"search.latency_rounds must be an integer >= 1, got {s.latency_rounds!r}")
    missing = [st for st in ("prune", "export", "quantize") if st not in stages]
    if missing:
        raise ConfigError(f"search: the candidates are pruned, exported and quantized; add {', '.join(missing)} to the "
                          "recipe (or remove search: to run the stages as written)")
    if sections["prune"].target_params is not None:
        raise ConfigError("search.target_macs contradicts prune.target_params: the search chooses the MACs ratio; "
                          "remove prune.target_params")
    if gates.max_accuracy_drop_pp is None and not gates.max_p50_ms and \
            not any(getattr(gates, g) is not None for g in Gates.DECISION_GATES):
        raise ConfigError("search: no gate to meet; add gates: (e.g. max_accuracy_drop_pp: 1.0 and max_p50_ms: "
                          "{ort-cpu: 5}) so the search knows what passes")
    from edgeft.runtime.backends import BACKENDS

    gated = set()
    for key in gates.max_p50_ms:
        backend, _, batch = str(key).partition("@")
        # a runtime of search.runtimes that this CPU lacks is reported as not run, naming what is missing
        if not BACKENDS[backend].available() and backend not in s.runtimes:
            raise ConfigError(f"gates.max_p50_ms.{key}: {backend} is not available on this machine, so the search "
                              "cannot evaluate this gate; run where it is (`edgeft doctor`) or remove the gate")
        if backend not in s.runtimes or batch not in ("", "1"):
            raise ConfigError(f"gates.max_p50_ms.{key}: the search times its candidates on "
                              f"{', '.join(s.runtimes)} at batch 1 only, so {key} cannot be evaluated while searching; "
                              "gate it in a run without search:")
        gated.add(backend)
    ungated = [r for r in s.runtimes if gated and r not in gated]
    if ungated:  # a latency budget is the camera's: a candidate shipping on another runtime must meet one too
        raise ConfigError(f"gates.max_p50_ms limits {', '.join(sorted(gated))} but search.runtimes also ships on "
                          f"{', '.join(ungated)}; give each runtime its limit (max_p50_ms: {{{ungated[0]}: ...}})")
    return s


def _check_ship(stages: list[str], sections: dict[str, Any], gates: Gates, task, searched: bool) -> None:
    """The ship section against the rest of the recipe: ONNX models to choose among, a task that can be judged per
    runtime, no search (which chooses the runtime itself), and a latency budget for every runtime it may ship on."""
    if "ship" not in stages:
        return
    s = sections["ship"]
    if searched:
        raise ConfigError("ship: the search chooses the runtime each candidate ships on; list them in search.runtimes "
                          "and remove ship")
    if not task.ships_per_runtime:
        raise ConfigError(f"ship: a {task.name} model cannot be judged on each runtime yet; remove ship (bench "
                          "--backend ov-cpu measures it there)")
    onnx_import = IMPORT in sections and sections[IMPORT].is_onnx
    if "export" not in stages and not onnx_import:
        raise ConfigError("ship chooses among the run's ONNX models; add export (and quantize) before it")
    has = {"int8": "quantize" in stages, "fp32": True}
    for m in s.models or []:
        if not has[m]:
            raise ConfigError(f"ship.models {m}: the run makes no INT8 model; add quantize, or list fp32 only")
    if "quantize" in stages and "int8" in (s.models or ["int8"]) and sections["quantize"].target != "ort-cpu":
        raise ConfigError(f"ship: quantize.target {sections['quantize'].target} makes an INT8 graph for that runtime, "
                          "and ship chooses among CPU runtimes; use quantize.target: ort-cpu (OpenVINO reads the same "
                          "file), or ship.models: [fp32]")
    gated = {str(k).partition("@")[0] for k in gates.max_p50_ms}
    ungated = [r for r in s.runtimes if gated and r not in gated]
    if ungated:  # a latency budget is the camera's: a model shipping on another runtime must meet one too
        raise ConfigError(f"gates.max_p50_ms limits {', '.join(sorted(gated))} but ship.runtimes also ships on "
                          f"{', '.join(ungated)}; give each runtime its limit (max_p50_ms: {{{ungated[0]}: ...}})")


def _gates(d: Any, stages: list[str], decision: DecisionSection | None, sections: dict[str, Any], task) -> Gates:
    """The gates, checked against what the run will measure (the task refuses the gates it cannot evaluate)."""
    g = section(Gates, d, "gates")
    for name in ("max_accuracy_drop_pp", "max_map_drop_points", *Gates.DECISION_GATES):
        value = getattr(g, name)
        if value is not None and value < 0:
            raise ConfigError(f"gates.{name} must be >= 0, got {value}")
    task.check_gates(g, decision, sections)
    if g.accuracy_significance is not None and not 0 < g.accuracy_significance < 1:
        raise ConfigError(f"gates.accuracy_significance is a significance level in (0, 1) such as 0.05, got "
                          f"{g.accuracy_significance}")
    if g.accuracy_significance is not None and g.max_accuracy_drop_pp is None:
        raise ConfigError("gates.accuracy_significance qualifies gates.max_accuracy_drop_pp; add that gate too")
    if not isinstance(g.max_p50_ms, dict):
        raise ConfigError("gates.max_p50_ms must map backend (or backend@batch) to milliseconds, e.g. {ort-cpu: 5}")
    if g.max_p50_ms and "bench" not in stages:
        raise ConfigError("gates.max_p50_ms needs the bench stage; add a bench: section")
    from edgeft.runtime.backends import BACKENDS

    for key, ms in g.max_p50_ms.items():
        backend, _, batch = str(key).partition("@")
        if backend not in BACKENDS or (batch and not batch.isdigit()):
            raise ConfigError(f"gates.max_p50_ms: {key!r} must be a backend or backend@batch (backends: "
                              f"{', '.join(BACKENDS)}){close_matches(backend, BACKENDS)}")
        if not isinstance(ms, (int, float)) or isinstance(ms, bool) or ms <= 0:
            raise ConfigError(f"gates.max_p50_ms.{key} must be a positive number of milliseconds, got {ms!r}")
    return g


def parse(d: Any, source: str = "<recipe>", overrides: dict[str, Any] | None = None) -> Recipe:
    """Validate a recipe mapping (with ``--set`` overrides merged in) into a :class:`Recipe`."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source} must be a mapping with data: and stage sections (finetune:, prune:, ...)")
    d = _merge(dict(d), overrides or {})
    if "data" not in d or not d["data"]:
        raise ConfigError(f"{source}: data: is required (an ImageFolder with train/ val/ [test/])")
    from edgeft import tasks

    task = tasks.get(d.get("task"))  # unknown names: one line with the close ones
    order = task.stages
    listed = d.get("stages") if isinstance(d.get("stages"), list) else []
    if IMPORT in d or IMPORT in listed:
        if not task.importable:
            raise ConfigError(f"import: task {task.name} makes its first model with {task.first_stage}: "
                              f"({task.summary}); a recipe imports classifiers (task: classify)")
        if task.first_stage in d:
            raise ConfigError(f"a recipe starts from import: (your model) or {task.first_stage}: (a new one), not "
                              f"both; remove one")
        order = (IMPORT, *order[1:])
    others = {st for n in tasks.names() for st in tasks.get(n).stages} - set(order)
    for key in d:
        if key not in KEYS and key not in order and key not in others:
            raise ConfigError(f"unknown field {key!r} in {source}{close_matches(str(key), KEYS | set(order))}")
        if key in others:
            raise ConfigError(_other_task(task, key))
    present = [s for s in order if s in d]
    stages = d.get("stages", present)
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"stages must be a non-empty list, e.g. [{', '.join(s for s in order if s != 'build')}]")
    for s in stages:
        if s in others:
            raise ConfigError(f"stages: {_other_task(task, s)}")
        if s not in order:
            raise ConfigError(f"stages: unknown stage {s!r}; stages are {', '.join(order)}"
                              f"{close_matches(str(s), order)}")
    for a, b in zip(stages, stages[1:]):
        if order.index(a) >= order.index(b):
            raise ConfigError(f"stages: {b} cannot come after {a}; the order is {' -> '.join(order)}")
    if stages[0] != order[0]:
        raise ConfigError(f"stages must start with {order[0]}: every later stage works on the model it makes "
                          f"({task.summary})")
    unused = [s for s in present if s not in stages]
    if unused:
        raise ConfigError(f"section {unused[0]}: is given but {unused[0]} is not in stages: {stages}")
    sections = {s: d.get(s) or {} for s in stages}
    retrain_section = sections.get("finetune") if d.get(FROM) not in (None, "") else None
    if retrain_section is not None:
        sections["finetune"] = {}  # with from:, the section is a RetrainConfig (_from), not a fresh fine-tuning's
    _check_stage_sections(sections, task)
    from_ = _from(d, task, stages, sections, retrain_section)
    onnx_import = IMPORT in sections and sections[IMPORT].is_onnx
    if "build" in stages and "export" not in stages and "quantize" not in stages and not onnx_import:
        raise ConfigError("stages: build needs an ONNX model; add export (FP32/FP16) or quantize (INT8) before it")
    if onnx_import and "quantize" in sections and sections["quantize"].method == "qat":
        raise ConfigError("quantize.method qat: import.model is an ONNX file, and QAT retrains PyTorch weights; use "
                          "method: ptq, or import the PyTorch checkpoint")
    if "build" in stages and sections["build"].precision != "int8" and "export" not in stages and not onnx_import:
        raise ConfigError(f"build.precision {sections['build'].precision} builds from the FP32 ONNX model: add export "
                          "to stages")
    if "build" in stages and sections["build"].precision == "int8" and "quantize" not in stages:
        raise ConfigError("build.precision int8 needs the quantize stage (INT8 engines are built from the QDQ model)")
    if "build" in stages and sections["build"].precision == "int8" and sections["quantize"].target != "tensorrt":
        raise ConfigError("build.precision int8 needs quantize.target: tensorrt (TensorRT runs symmetric int8 "
                          "activations; the ort-cpu graph's uint8 activations are for ONNX Runtime on the CPU)")
    threads = d.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    prepare = d.get("prepare_data")
    if prepare is not None and prepare not in PREPARERS:
        raise ConfigError(f"prepare_data must be one of {', '.join(PREPARERS)}, got {prepare!r}")
    name = str(d.get("name") or re.sub(r"[^\w.-]", "_", Path(source).stem).strip("_") or "run")
    if not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"name must be letters, digits, '.', '_' or '-', got {name!r}")
    task.check_recipe(d, sections)
    decision = _decision(d.get("decision"))
    gates = _gates(d.get("gates"), stages, decision, sections, task)
    promote = None
    if PROMOTE in d:
        from edgeft.promote.rule import parse as parse_rule

        if from_ is None:
            raise ConfigError("promote: judges the run's model against the deployed one; name that model with from: "
                              "(or edgeft optimize --from), or compare by hand with edgeft promote")
        promote = parse_rule(d[PROMOTE])
    _check_ship(stages, sections, gates, task, d.get("search") is not None)
    return Recipe(name=name, data=Path(os.path.expanduser(str(d["data"]))), stages=stages, sections=sections,
                  gates=gates, prepare_data=prepare, threads=threads, source=source, decision=decision,
                  search=_search(d.get("search"), stages, sections, gates), task=task.name, from_=from_,
                  promote=promote, track=_track(d.get(TRACK)))


def _track(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"track must be an MLflow store file (mlflow.db) or a tracking server URL, got {value!r}")
    from edgeft.training.track import tracking_uri

    tracking_uri(value)
    return value


def _from(d: dict[str, Any], task, stages: list[str], sections: dict[str, Any], raw: Any) -> Path | None:
    """The deployed model of ``from:``, checked now (a classifier whose PyTorch weights its lineage finds); the
    ``finetune:`` section (``raw``) becomes a :class:`~edgeft.training.config.RetrainConfig`: the deployed model's own
    settings, at these epochs and learning rate."""
    if d.get(FROM) in (None, ""):
        return None
    if task.name != "classify" or stages[0] != "finetune":
        raise ConfigError(f"from: fine-tunes a deployed classifier again; a {task.name} recipe starting with "
                          f"{stages[0]}: cannot (retrain it with its own first stage, and compare with edgeft promote)")
    from edgeft.finetune.stage import deployed_parent
    from edgeft.training.config import RetrainConfig

    deployed = Path(os.path.expanduser(str(d[FROM])))
    parent = deployed_parent(deployed)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"finetune must be a mapping of option: value, got {type(raw).__name__}")
    section_d = dict(raw or {})
    model = section_d.pop("model", None)
    if model is not None and model != parent.meta.arch:
        raise ConfigError(f"finetune.model {model} is not the deployed model's architecture ({parent.meta.arch}); with "
                          "from:, the deployed model is fine-tuned again: drop finetune.model")
    try:
        sections["finetune"] = section(RetrainConfig, section_d, "finetune")
    except ConfigError as e:
        msg = str(e)
        if msg.startswith("unknown field"):
            msg += ("; with from:, the deployed model's own settings are used and finetune: takes only epochs, lr, "
                    "mode, threads and seed")
        raise ConfigError(msg) from None
    return deployed


def _other_task(task, stage: str) -> str:
    """Why a stage of another task is refused, and what to do instead."""
    from edgeft import tasks

    owner = tasks.stage_owner(stage)
    if owner is not None:
        return (f"{stage} is the first stage of task: {owner} ({tasks.get(owner).summary}); a task: {task.name} recipe "
                f"starts with {task.first_stage}: ({task.summary}); set task: {owner} at the top of the recipe, or "
                f"remove {stage}")
    return f"{stage} is not a stage of task: {task.name} ({', '.join(task.stages)})"


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base


def load(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe not found: {p}")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse(d, source=str(p), overrides=overrides)
