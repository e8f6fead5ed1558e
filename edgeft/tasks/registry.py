"""Tasks as plug-ins (ground floor: imports nothing but errors): one object per task, found by name.

A task declares what is task-specific: how a recipe's first stage makes its model (fine-tuning, fitting on good
parts, ...), how its data is checked, how its model is rebuilt, what its exported graph outputs and how parity is
judged, how its INT8 graph is calibrated and measured, how the runtime turns outputs into predictions, how it is
evaluated, and what the report shows of it. Stages, the pipeline, the predictor and the report ask
``tasks.of(meta)`` or ``tasks.get(name)``; they never branch on a task's name.

Every floor may look a task up here; the task's own code imports the pieces it composes lazily, so the camera's
torch-free path loads nothing heavy when it asks for a task's runtime head. The built-in tasks are imported by name
on first use (:data:`BUILTIN`); a third-party task registers with :func:`register` (or through the ``edgeft.tasks``
entry-point group of its package). Like timm's ``@register_model``: one registration point, one small object a kind.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar

from edgeft.errors import ConfigError, close_matches

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

BUILTIN = {"classify": "edgeft.tasks.classify", "anomaly": "edgeft.tasks.anomaly", "detect": "edgeft.tasks.detect"}
DEFAULT = "classify"  # an artifact whose meta.json names no task is a classifier (artifacts from before tasks)
_REGISTRY: dict[str, "Task"] = {}


class Task:
    """What a task declares. Subclasses set the class attributes and override the hooks they need; the defaults
    say what a hook does when a task has nothing special there (or refuse, naming what is missing)."""

    name: ClassVar[str]
    first_stage: ClassVar[str]  # the recipe section and step that make the first model ("finetune", "anomaly", ...)
    stages: ClassVar[tuple[str, ...]]  # the recipe's stage order, first_stage first
    graph_outputs: ClassVar[tuple[str, ...]] = ("logits",)  # the exported graph's output names
    summary: ClassVar[str] = ""  # one line for `edgeft optimize --help` and errors
    supports_qat: ClassVar[bool] = False  # QAT trains against labels
    importable: ClassVar[bool] = False  # a recipe may start from the user's own model (import:) instead
    imports_checkpoints: ClassVar[bool] = False  # a PyTorch checkpoint imports as this task (else ONNX files only)

    # ------------------------------------------------------------------------------------------- recipe and data
    def first_config(self, section: dict[str, Any]) -> Any:
        """The first stage's typed, validated settings from its recipe section (errors name ``first_stage.field``)."""
        raise NotImplementedError

    def check_recipe(self, recipe_dict: dict[str, Any], sections: dict[str, Any]) -> None:
        """Refuse, in one line with what to use instead, a recipe key this task cannot honour."""

    def check_gates(self, gates: Any, decision: Any, sections: dict[str, Any]) -> None:
        """Refuse a gate this task cannot evaluate."""

    def check_data(self, recipe: Any, splits: dict[str, "Path"]) -> None:
        """Check the data folder's splits and classes before any stage runs."""

    def splits(self, data: "Path") -> dict[str, Any]:
        """The splits of a data folder in this task's layout (class folders or a manifest; a detector's COCO/YOLO)."""
        raise NotImplementedError

    def read_images(self, data: "Path", split: str, contract: Any, class_names: list[str],
                    limit: int | None = None) -> Any:
        """Real images of ``split`` prepared by ``contract`` (``.images`` N x H x W x C, ``.paths``), for export
        parity and INT8 measurement."""
        raise NotImplementedError

    def data_classes(self, data: "Path") -> list[str]:
        """The class names of a data folder in this task's layout (its train split's)."""
        raise NotImplementedError

    def adopt_onnx(self, model: Any, names: list[str], contract: Any, layout: str | None) -> tuple[Any, dict]:
        """An imported ONNX file made this task's graph: (the model, what ``meta.extra`` records of it). A classifier
        keeps its file as brought; a task whose graph needs more (a detector's decoding and NMS) adds it here, by the
        declared output ``layout``."""
        if layout is not None:
            raise ConfigError(f"import.layout {layout!r}: a {self.name} model's ONNX output has no layout to declare; "
                              "leave it out")
        return model, {}

    def calibration_manifest(self, data: "Path", n: int, class_names: list[str], split: str = "train", seed: int = 0,
                             contract: Any = None) -> Any:
        """A deterministic sample of ``n`` images of ``split`` for INT8 calibration, pinned by their hashes
        (``edgeft.data.calibration.Manifest``)."""
        raise NotImplementedError

    def first_label(self, recipe: Any) -> str:
        """What the first model is called in the plan and the report."""
        return f"{self.name} FP32"

    def calibration_class(self, class_names: list[str]) -> str | None:
        """The one class INT8 calibration images come from (None: a class-balanced sample of all)."""
        return None

    def import_checkpoint(self, cfg: Any, source: "Path", names: list[str] | None) -> tuple[Any, int | None, Any, str,
                                                                                          dict[str, Any]]:
        """With ``imports_checkpoints``: the network of the checkpoint ``source`` (``cfg`` is the import's
        :class:`~edgeft.importer.stage.ImportConfig`, ``names`` the class names known so far) as (model, its output
        count, its input contract, the format in words, what ``meta.extra`` records)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- stages
    def run_first(self, recipe: Any, out: "Path", resume: bool) -> None:
        """Make the first model of a recipe into ``out`` (an artifact directory)."""
        raise NotImplementedError

    def measure(self, recipe: Any, stage: str, out: "Path", always: bool) -> None:
        """After a model step of ``optimize``: measure the model on the held-out split the way this task reports
        it (a task whose stages measure their models themselves does nothing)."""

    def torch_model(self, artifact: Any) -> Any:
        """Rebuild a ``torch`` artifact's network (eval mode), pruned shapes and weights included."""
        raise NotImplementedError

    own_pruning: ClassVar[bool] = False  # False: the shared pruning (torch-pruning, recovered by labels)

    def prune(self, parent: Any, data: "Path", out: "Path", cfg: Any, force: bool, measure_latency: bool) -> Any:
        """With ``own_pruning``: prune and recover ``parent`` this task's way, returning the artifact."""
        raise NotImplementedError

    def prune_summary(self, metrics: dict[str, Any]) -> str:
        """``edgeft prune``'s lines of what pruning did (the shared pruning's record)."""
        from edgeft.metrics import read

        return read(metrics, "prune").summary(metrics)

    # ------------------------------------------------------------------------------------------- export
    extra_carried: ClassVar[tuple[str, ...]] = ("tta_views", "task")  # meta.extra keys an exported graph keeps

    def onnx_metadata(self, extra: dict[str, Any]) -> dict[str, Any]:
        """What a bare .onnx file says of this task beyond class names and the input contract."""
        return {"task": self.name}

    def finish_graph(self, model: Any, extra: dict[str, Any]) -> None:
        """Last touches on an exported (or INT8) ONNX graph, in place, before its metadata is written."""

    def carried_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The parent's metrics an exported FP32 graph keeps (it computes the same numbers)."""
        return {}

    def parity(self, model: Any, path: "Path", images: Any, onnx_images: Any, contract: Any, onnx_contract: Any,
               split: str, names: list[str], gray_input: bool) -> dict[str, Any]:
        """The exported graph against PyTorch on real images, as the artifact records it; raises on a mismatch."""
        raise NotImplementedError

    def parity_line(self, record: dict[str, Any]) -> str:
        """``edgeft export``'s line of the parity record :meth:`parity` returned."""
        from edgeft.metrics import ParityCheck

        p = ParityCheck.from_dict(record, "metrics.parity")
        return (f"parity vs PyTorch on {p.n} {p.split} images: max abs diff {p.max_abs_diff:.2e} "
                f"({p.max_rel_diff:.1e} of the logit scale), top-1 agreement {p.top1_agreement * 100:.1f}%")

    def parity_classes(self, class_names: list[str]) -> list[str] | None:
        """The classes the parity and evaluation images are read with (None: any class folder)."""
        return class_names

    # ------------------------------------------------------------------------------------------- quantize
    dedicated_qdq: ClassVar[bool] = False  # a Q/DQ pair per INT8 consumer (ONNX Runtime's DedicatedQDQPair)

    def qat(self, parent: "Path", out: "Path", cfg: Any, calib: "Path", data: "Path", epochs: int, lr: float,
            mode: str, force: bool) -> Any:
        """With ``supports_qat``: fine-tune ``parent`` with INT8 fake quantization on its labels, then quantize it
        for real (PTQ's path, the same calibration) into ``out``."""
        raise NotImplementedError

    def after_quantize_file(self, int8: "Path", fp32: "Path") -> None:
        """Rewire a freshly quantized graph in place (every quantization trial, the exclusion measurements too)."""

    def int8_excluded(self, pre: "Path") -> list[str]:
        """ONNX nodes of the FP32 graph that stay FP32 whatever the measurement says."""
        return []

    def after_int8(self, int8: "Path", data: "Path", parent: Any, threads: int) -> dict[str, Any]:
        """Adjust the INT8 graph in place before it is timed and measured; returns what the artifact's extra records."""
        return {}

    def int8_metrics(self, fp32: "Path", int8: "Path", eval_set: Any, data: "Path", parent: Any, cfg: Any,
                     graph: dict[str, Any], meta: Any) -> None:
        """Fill ``meta.metrics`` (and task keys of ``meta.extra``) of the INT8 artifact, given the shared
        ``graph`` metrics (sizes, Q/DQ summary, latency)."""
        raise NotImplementedError

    def int8_summary(self, metrics: dict[str, Any]) -> list[str]:
        """What ``edgeft quantize`` prints of this task's INT8 numbers against the FP32 graph."""
        return []

    # ------------------------------------------------------------------------------------------- runtime
    def head(self, extra: dict[str, Any], where: str) -> Any:
        """The runtime's post-processing for an artifact of this task (``meta.extra`` or a bare .onnx's metadata):
        an object with ``predict(outputs, policy, class_names) -> list[Prediction]``, numpy only."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- ship
    ships_per_runtime: ClassVar[bool] = False  # the ship step can judge its models on each runtime (the hooks below)

    def val_row(self, recipe: Any, artifact: Any, backend: str) -> tuple[dict[str, Any], Any]:
        """With ``ships_per_runtime``: an ONNX model on val as ``backend`` computes it, as the gates judge it: the
        report row's fields (``accuracy``; or ``image_decisions`` and ``image_policy``; ``task_metrics``;
        ``quality``) at the operating point the model's rule chooses on those scores, and that policy (a
        ``decision.Policy``; None without a rule). Nothing is written."""
        raise NotImplementedError

    def for_runtime(self, artifact: Any, runtime: str, data: "Path", out: "Path", threads: int) -> "Path | None":
        """A copy of ``artifact`` at ``out`` adapted to run on ``runtime`` (statistics re-fitted on the features that
        runtime computes, ...), or None when it runs there unchanged (the default)."""
        return None

    def measure_shipped(self, recipe: Any, out: "Path", backend: str) -> None:
        """With ``ships_per_runtime``: measure the shipped artifact ``out`` on ``backend``, the runtime it records,
        as its row reports it (its policy chosen on val there, the held-out split scored there)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- measure, report
    def require_logits(self, artifact: Any) -> None:
        """Refuse where a classifier's logits are read (``eval``'s logits, ``decide``, ``compare-backends``)."""
        raise ConfigError(f"{artifact.path} is a {self.name} model ({self.summary}); this command reads a "
                          "classifier's logits")

    def evaluate(self, artifact: Any, data: "Path", split: str, backend: str | None = None,
                 positive: list[str] | None = None, tta_views: int | None = None) -> Any:
        """``edgeft eval``: a typed record of the artifact on ``split``, with ``summary(...)`` and ``to_dict()``."""
        raise ConfigError(f"{artifact.path} is a {self.name} model, and `edgeft eval` has no measure for it")

    def decide(self, artifact: Any, data: "Path", rule: Any, positive: list[str], backend: str | None) -> list[str]:
        """``edgeft decide``: choose the artifact's policy on val, write it into the artifact; the lines to print."""
        self.require_logits(artifact)
        raise NotImplementedError

    def eval_text(self, record: Any, artifact: Any, title: str) -> str:
        """``edgeft eval``'s lines for ``record`` (what :meth:`evaluate` returned)."""
        return record.summary(artifact.meta.class_names, title=title + ":")

    def read_row(self, meta: Any) -> dict[str, Any]:
        """The report's numbers of one model: ``accuracy`` (a Classification), ``anomaly`` (an AnomalyFit),
        ``quality`` (the value charts plot), ``split`` and ``task_metrics`` (anything else), as available."""
        return {}

    def report_extras(self, recipe: Any, run: "Path", rows: list[Any]) -> tuple[Any, Any]:
        """(a gallery of test parts, ``edgeft.tasks.gallery.Gallery``; the AUROC gate's bootstrap interval) the report
        adds for this task; (None, None): none."""
        return None, None


def register(task: Task) -> Task:
    """Make ``task`` found by its name (a second task of the same name is refused)."""
    if not getattr(task, "name", "") or not getattr(task, "first_stage", "") or not getattr(task, "stages", ()):
        raise ConfigError(f"{type(task).__name__} must set name, first_stage and stages")
    if task.name in _REGISTRY and type(_REGISTRY[task.name]) is not type(task):
        raise ConfigError(f"a task named {task.name!r} is registered already ({type(_REGISTRY[task.name]).__name__})")
    _REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    """Forget a registered task (tests register toy tasks)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Every task that can be found: the built-in ones, those registered, and those of installed plug-ins."""
    return sorted({*BUILTIN, *_REGISTRY, *_entry_points()})


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="edgeft.tasks")}


def get(name: str | None) -> Task:
    """The task called ``name`` (None: the default, a classifier); unknown names get the close ones."""
    name = name or DEFAULT
    if name not in _REGISTRY:
        if name in BUILTIN:
            importlib.import_module(BUILTIN[name])  # registers itself
        elif name in (eps := _entry_points()):
            register(eps[name].load()())
    if name not in _REGISTRY:
        raise ConfigError(f"task must be one of {', '.join(names())}, got {name!r}{close_matches(str(name), names())}")
    return _REGISTRY[name]


def of(meta_or_extra: Any) -> Task:
    """The task of an artifact (its ``Meta``, its ``meta.extra``, or a bare .onnx's metadata dict)."""
    extra = meta_or_extra.extra if hasattr(meta_or_extra, "extra") else (meta_or_extra or {})
    return get(extra.get("task"))


def stage_owner(stage: str) -> str | None:
    """The task whose first stage is ``stage`` (for errors that say which task a section belongs to)."""
    for n in names():
        if get(n).first_stage == stage:
            return n
    return None
