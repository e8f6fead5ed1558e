"""``edgeft eval``: the metrics of any artifact a backend of the runtime can run, on a labelled split.

ONNX models and TensorRT engines run through the runtime's backend table (the same runners the camera
uses); PyTorch artifacts through the rebuilt model and the training floor's inference helper, so the numbers are
those the stages report."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeft.artifact import Artifact
from edgeft.data.imagefolder import ImageSet
from edgeft.decision import Policy, Rule
from edgeft.errors import ConfigError
from edgeft.metrics import Classification, classification_metrics, decision_metrics, positive_mask
from edgeft.runtime.backends import KIND_DEFAULT, scored_on


def classifier_only(artifact: Artifact) -> None:
    """Refuse a model of another task where a classifier's logits are read; its task says where its numbers are."""
    from edgeft.tasks import registry as tasks

    tasks.of(artifact.meta).require_logits(artifact)


def logits(artifact: Artifact, split: ImageSet, tta_views: int | None = None, batch_size: int | None = None,
           device: str = "cpu", backend: str | None = None) -> tuple[np.ndarray, int]:
    """(logits N x classes, test-time views used) of an artifact on a decoded split, through ``backend``."""
    from edgeft.errors import DataError

    classifier_only(artifact)
    if list(split.classes) != list(artifact.meta.class_names):
        raise DataError(f"the data's classes {split.classes} differ from the model's {artifact.meta.class_names}")
    views = tta_views if tta_views is not None else int(artifact.meta.extra.get("tta_views", 1))
    name = scoring_backend(artifact, backend)
    if artifact.meta.kind == "torch" and name in ("torch", "torch-cuda"):
        from edgeft.models.inference import torch_logits
        from edgeft.runtime.torch_model import from_artifact

        dev = "cuda" if name == "torch-cuda" else device
        return torch_logits(from_artifact(artifact).to(dev), split.images, artifact.meta.input, batch_size, views,
                            dev), views
    from edgeft.runtime.backends import choose
    from edgeft.runtime.logits import runner_logits

    chosen = choose(name, {artifact.meta.model_file: artifact.model_path})
    with chosen.make(artifact.model_path, artifact.path, None) as runner:
        return runner_logits(runner, split.images, artifact.meta.input, batch_size or 32, views,
                             desc=f"eval {chosen.name}"), views


def scoring_backend(artifact: Artifact, backend: str | None = None) -> str:
    """The backend a split is scored on: ``backend`` when given, else the runtime the artifact ships on (its
    ``runtime`` record, written by the search: the camera runs it there, so its numbers come from there), else the
    default for its kind. A recorded runtime that cannot run here is refused in one line naming what is missing (the
    artifact's numbers would silently come from another precision); pass ``backend`` to score it elsewhere."""
    if backend:
        return backend
    recorded = (artifact.meta.extra.get("runtime") or {}).get("backend")
    if recorded and artifact.meta.kind == "onnx":
        from edgeft.errors import DependencyError
        from edgeft.runtime.backends import lookup

        why = lookup(recorded).why_not()
        if why:
            raise DependencyError(f"{artifact.path} ships on {recorded}, which cannot run here ({why}); score it on "
                                  "another backend by name (--backend ort-cpu), knowing its decisions may differ")
        return recorded
    return KIND_DEFAULT.get(artifact.meta.kind, "auto")


def evaluate(artifact: Artifact, split: ImageSet, tta_views: int | None = None, batch_size: int | None = None,
             device: str = "cpu", backend: str | None = None, positive: list[str] | None = None) -> Classification:
    """Metrics of an artifact on a decoded split (class names must match the artifact's). ``backend``: a name
    from the runtime's table that runs this artifact's model file (default: torch, ort-cpu or tensorrt).
    ``positive``: the "not OK" classes, for AUROC and operating points (:func:`edgeft.metrics.decision_metrics`);
    by default those of the artifact's decision policy, whose outcome on the split is then reported too."""
    out, views = logits(artifact, split, tta_views, batch_size, device, backend)
    return metrics_from_logits(artifact, split, out, views, positive)


def metrics_from_logits(artifact: Artifact, split: ImageSet, out: np.ndarray, views: int,
                        positive: list[str] | None = None) -> Classification:
    """:func:`evaluate`'s metrics from logits already computed (``out``, N x classes, over ``views`` views), for a
    caller that needs the logits too: scoring a split once instead of once per use."""
    from edgeft.decision import read_policy
    from edgeft.runtime.predictor import softmax

    m = classification_metrics(split.labels, out.argmax(1), artifact.meta.class_names)
    policy = read_policy(artifact.meta.extra, f"{artifact.path}/meta.json extra.decision")
    positive = list(positive or (policy.positive if policy else []))
    decisions = outcome = None
    if positive:
        probs = softmax(out.astype(np.float64))
        decisions = decision_metrics(split.labels, probs, artifact.meta.class_names, positive)
        if policy is not None:
            outcome = policy.outcome(positive_mask(split.labels, policy.class_names, policy.positive),
                                     policy.score(probs), split.products)
    correct = (out.argmax(1) == np.asarray(split.labels)).astype(int).tolist()
    return replace(m, tta_views=views, decisions=decisions, policy=outcome, correct=correct)


def choose_policy(artifact: Artifact, val: ImageSet, rule: Rule, positive: list[str], backend: str | None = None,
                  batch_size: int | None = None, tta_views: int | None = 1, out: np.ndarray | None = None) -> Policy:
    """Choose ``artifact``'s decision policy on the validation split ``val`` and write it into its meta.json
    (``extra.decision``), atomically. Each model gets its own: pruning and INT8 move scores, and a threshold
    carried over from another model silently changes the escape rate. Scored on one view by default, as the
    camera's Predictor runs it (test-time views would move the scores the threshold is set on)."""
    from edgeft import artifact as art

    policy = policy_on(artifact, val, rule, positive, backend, batch_size, tta_views, out)
    art.update_metrics(artifact, {}, extra={"decision": policy.to_dict()})
    return policy


def policy_on(artifact: Artifact, val: ImageSet, rule: Rule, positive: list[str], backend: str | None = None,
              batch_size: int | None = None, tta_views: int | None = 1, out: np.ndarray | None = None) -> Policy:
    """:func:`choose_policy` without writing it: the policy ``rule`` chooses on ``artifact``'s val scores as
    ``backend`` computes them (``out``: those logits, when the caller has them)."""
    from edgeft.decision import choose
    from edgeft.runtime.predictor import softmax

    if val.name != "val":
        raise ConfigError(f"a decision policy is chosen on the val split, not on {val.name}: test must stay unseen")
    backend = scoring_backend(artifact, backend)
    if out is None:
        out, _ = logits(artifact, val, tta_views, batch_size, "cpu", backend)
    policy = choose(rule, val.labels, softmax(out.astype(np.float64)), list(artifact.meta.class_names), positive,
                    split=val.name, products=val.products)
    return scored_on(policy, backend, artifact.meta.kind)


def score_split(artifact: Artifact, val: ImageSet, rule: Rule | None, positive: list[str],
                backend: str | None = None) -> tuple[Classification, list[int], Policy | None]:
    """``artifact`` on val through ``backend``, scored once and nothing written: the policy ``rule`` chooses there
    (None without a rule), the metrics at that policy, and the prediction per image (for paired comparisons). How a
    model is judged on each runtime it might ship on (the search, the ship step)."""
    out, views = logits(artifact, val, tta_views=1, backend=backend)
    policy = None
    if rule is not None:
        policy = policy_on(artifact, val, rule, positive, backend, out=out)
        extra = {**artifact.meta.extra, "decision": policy.to_dict()}
        artifact = Artifact(artifact.path, replace(artifact.meta, extra=extra))
    return metrics_from_logits(artifact, val, out, views), out.argmax(1).tolist(), policy
