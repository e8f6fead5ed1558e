"""``edgeft eval``: the metrics of any artifact a backend of the runtime can run, on a labelled split.

ONNX models and TensorRT engines run through the runtime's backend table (the same runners the camera
uses); PyTorch artifacts through the rebuilt model and the engine's inference helper, so the numbers are
those the stages report."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeft.artifact import Artifact
from edgeft.data.imagefolder import ImageSet
from edgeft.metrics import Classification, classification_metrics, decision_metrics

DEFAULT_BACKEND = {"torch": "torch", "onnx": "ort-cpu", "engine": "tensorrt"}


def evaluate(artifact: Artifact, split: ImageSet, tta_views: int | None = None, batch_size: int | None = None,
             device: str = "cpu", backend: str | None = None, positive: list[str] | None = None) -> Classification:
    """Metrics of an artifact on a decoded split (class names must match the artifact's). ``backend``: a name
    from the runtime's table that runs this artifact's model file (default: torch, ort-cpu or tensorrt).
    ``positive``: the "not OK" classes, for AUROC and operating points (:func:`edgeft.metrics.decision_metrics`)."""
    from edgeft.errors import DataError

    if list(split.classes) != list(artifact.meta.class_names):
        raise DataError(f"the data's classes {split.classes} differ from the model's {artifact.meta.class_names}")
    views = tta_views if tta_views is not None else int(artifact.meta.extra.get("tta_views", 1))
    name = backend or DEFAULT_BACKEND.get(artifact.meta.kind, "auto")
    if artifact.meta.kind == "torch" and name in ("torch", "torch-cuda"):
        from edgeft.models.inference import torch_logits
        from edgeft.runtime.torch_model import from_artifact

        dev = "cuda" if name == "torch-cuda" else device
        logits = torch_logits(from_artifact(artifact).to(dev), split.images, artifact.meta.input, batch_size, views,
                              dev)
    else:
        from edgeft.runtime.backends import choose
        from edgeft.runtime.logits import runner_logits

        chosen = choose(name, {artifact.meta.model_file: artifact.model_path})
        with chosen.make(artifact.model_path, artifact.path, None) as runner:
            logits = runner_logits(runner, split.images, artifact.meta.input, batch_size or 32, views,
                                   desc=f"eval {chosen.name}")
    m = classification_metrics(split.labels, logits.argmax(1), artifact.meta.class_names)
    decisions = None
    if positive:
        from edgeft.runtime.predictor import softmax

        decisions = decision_metrics(split.labels, softmax(logits.astype(np.float64)), artifact.meta.class_names,
                                     positive)
    return replace(m, tta_views=views, decisions=decisions)
