"""``Predictor``: load one artifact (or a bare ``.onnx`` file), feed frames, get labels and scores.

Preprocessing is the artifact's input contract, applied with OpenCV and numpy exactly as in training;
frames may be BGR (OpenCV's order), RGB or grayscale, of any size. No torch import on this path unless
the ``torch`` backend is asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeft import progress
from edgeft.contract import InputContract
from edgeft.decision import Policy, read_policy
from edgeft.errors import ArtifactError, ConfigError
from edgeft.tasks import registry as tasks
from edgeft.runtime.backends import choose_with_reason, int8_note
from edgeft.runtime.runner import ONNX_META_KEY, Runner  # noqa: F401 (ONNX_META_KEY: where readers find it)


@dataclass
class Prediction:
    """One frame's class (``label``, ``index``, its probability ``score``) and, where the model carries a decision
    policy, the line's ``decision`` (pass, review or reject) on its ``not_ok`` score.

    From an anomaly model: ``score`` and ``not_ok`` are the anomaly score (the heatmap's peak; larger is less like
    the good parts), ``probabilities`` is empty, ``heatmap`` the grid of patch distances (``edgeft.tasks.anomaly.heatmap``
    draws it over the frame) and the label the good class or ``anomalous`` by the decision (``unknown`` for a model
    fitted without a threshold)."""

    label: str
    index: int
    score: float
    probabilities: list[float]
    decision: str | None = None
    not_ok: float | None = None
    heatmap: np.ndarray | None = None
    extras: dict = field(default_factory=dict)  # what the task adds to a frame's JSON line (an anomaly's hot_spot)

    def to_dict(self) -> dict:
        d = {"label": self.label, "index": self.index, "score": self.score, "probabilities": self.probabilities}
        if self.decision is not None:
            d.update(decision=self.decision, not_ok=self.not_ok)
        return {**d, **self.extras}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """Run a model on frames. ``source`` of a model: an artifact directory, or a ``.onnx`` file.

    For an ONNX file without edgeft metadata pass ``contract`` (input size, mean, std, ...) and
    ``class_names`` explicitly; guessing preprocessing is how deployments silently lose accuracy.

    An artifact's decision policy (``edgeft decide``; every stage of ``edgeft optimize`` with a ``decision:``
    section) makes each prediction carry pass / review / reject; ``require_policy`` refuses a model without one.
    """

    def __init__(self, source: str | os.PathLike, backend: str = "auto", threads: int | None = None,
                 contract: InputContract | None = None, class_names: Sequence[str] | None = None,
                 require_policy: bool = False):
        p = Path(source)
        files: dict[str, Path] = {}
        artifact_dir = None
        self.policy: Policy | None = None
        self._product_policies: dict[str, Policy] = {}
        task_meta: dict = {}  # where the model says what its task is (meta.json's extra, or a bare .onnx's metadata)
        if p.is_dir():
            from edgeft import artifact

            a = artifact.load(p)
            artifact_dir = p
            files[a.meta.model_file] = a.model_path
            self.contract, self.class_names = a.meta.input, list(a.meta.class_names)
            self.policy = read_policy(a.meta.extra, f"{p}/meta.json extra.decision")
            task_meta, where = a.meta.extra, f"{p}/meta.json extra"
            self.model_sha256 = a.meta.model_sha256
        elif p.is_file() and p.suffix == ".onnx":
            files["model.onnx"] = p
            import hashlib

            self.model_sha256 = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            raise ArtifactError(f"model not found: {p}; pass an artifact directory or a .onnx file")
        if require_policy and self.policy is None:
            raise ArtifactError(f"{p} carries no decision policy; choose one on val with `edgeft decide {p} --data "
                                "DATA --positive CLASS --target-recall 0.95` (a bare .onnx file cannot carry one: "
                                "pass its artifact directory)")
        measured = a.meta.extra.get("cpu_runtime") if artifact_dir is not None else None
        recorded = a.meta.extra.get("runtime") if artifact_dir is not None else None
        self.backend, self.backend_reason = choose_with_reason(backend, files, measured,
                                                               self.policy.scored_with if self.policy else None,
                                                               recorded)
        note = int8_note(self.backend.name, a.meta.extra) if artifact_dir is not None else ""
        if note:
            self.backend_reason += f"; {note}"
            progress.warn(note)
        self.runner: Runner = self.backend.make(files[self.backend.model_file], artifact_dir, threads)
        self.runner.activate()
        if artifact_dir is None:  # a bare .onnx: its metadata comes from the runtime that reads it
            meta = self.runner.metadata()
            if meta is None and (contract is None or class_names is None):
                self.runner.deactivate()
                raise ArtifactError(f"{p} carries no edgeft metadata; import it once with its preprocessing and class "
                                    f"names (edgeft import {p.name} --size HxW --mean ... --std ... --classes ... --out "
                                    "ART) and run the artifact, or pass the contract here (--input-size, --mean, --std, "
                                    "--classes)")
            self.contract = InputContract.from_dict(meta["input"]) if meta else contract
            self.class_names = list(meta["class_names"]) if meta else list(class_names or [])
            task_meta, where = meta or {}, f"{p} metadata"
        self.task = tasks.of(task_meta)
        self.head = self.task.head(task_meta, where)  # the task's post-processing of the graph's outputs
        if contract is not None:
            self.contract = contract
        if class_names is not None:
            self.class_names = list(class_names)

    @property
    def model_hash(self) -> str:
        """The model file's SHA-256, short: what every output of a station names its decisions by."""
        return (self.model_sha256 or "")[:12]

    @property
    def anomaly(self):
        """An anomaly model's spec (heatmap grid and colour scale), None for other tasks."""
        return getattr(self.head, "spec", None)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def preprocess(self, frames: Sequence[np.ndarray], source: str = "BGR") -> np.ndarray:
        if source not in ("BGR", "RGB"):
            raise ConfigError(f"frame colour order must be BGR or RGB, got {source!r}")
        prepared = [self.contract.prepare(f, source) for f in frames]
        return self.contract.normalize(np.stack(prepared))

    def logits(self, frames: Sequence[np.ndarray], source: str = "BGR") -> np.ndarray:
        return self.runner.infer(self.preprocess(frames, source))

    @property
    def heatmap_scale(self) -> tuple[float, float]:
        """(floor, ceiling) of an anomaly model's heatmap colours: a typical good patch, and the reject threshold
        (without a policy: the fit's highest good val score)."""
        scale = getattr(self.head, "scale", None)
        if scale is None:
            raise ConfigError(f"heatmaps come from anomaly models (`edgeft anomaly`); this model is a {self.task.name} "
                              "model")
        return scale(self.policy)

    def check_draws(self) -> None:
        """Refuse a task that draws nothing over its frames."""
        if getattr(self.head, "draw", None) is None:
            raise ConfigError(f"a {self.task.name} model draws nothing over its frames; anomaly models draw heatmaps "
                              "(`edgeft anomaly`), detectors their boxes (`edgeft detect`)")

    def draw(self, frame: np.ndarray, prediction: Prediction) -> np.ndarray:
        """What the task draws of a prediction over its frame (an anomaly model: the heatmap on a fixed scale; a
        detector: its boxes), as an 8-bit BGR image; refused for a task that draws nothing."""
        self.check_draws()
        return self.head.draw(frame, prediction, self.policy, self.class_names)

    def predict(self, frames: Sequence[np.ndarray] | np.ndarray, source: str = "BGR",
                product: str | None = None) -> list[Prediction]:
        """Predictions for a list of frames (a single HxW[xC] array is one frame). ``product``: the product these
        frames show, decided at its own operating point where the policy has one per product."""
        if isinstance(frames, np.ndarray) and frames.ndim in (2, 3):
            frames = [frames]
        x = self.preprocess(frames, source)
        policy = self.policy
        if policy is not None and product is not None:  # a product's point, made once (the station asks every batch)
            policy = self._product_policies.get(product) or self._product_policies.setdefault(
                product, policy.for_product(product))
        if getattr(self.head, "places_boxes", False):  # a detector's boxes go back onto each frame
            sizes = [self.contract.crop(f).shape[:2] for f in frames]
            return self.head.predict(self.runner, x, policy, self.class_names, sizes=sizes, contract=self.contract)
        return self.head.predict(self.runner, x, policy, self.class_names)

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
