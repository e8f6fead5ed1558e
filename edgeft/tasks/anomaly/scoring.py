"""An anomaly graph scored on a runtime: its threshold, heatmap scale and numbers as that runtime computes them.

OpenVINO's INT8 kernels round otherwise than ONNX Runtime's, and bf16 keeps 8 bits of mantissa of features whose
Mahalanobis distance magnifies small shifts, so the scores move with the runtime. Wherever a model is to run on a
runtime (the INT8 stage on ONNX Runtime; the ship step, ``edgeft.optimize.ship``, on each runtime it tries), its
threshold is the recipe's rule applied to val's scores there, its heatmap's colours are scaled by val's good parts
there, and test is scored there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft import artifact as art
from edgeft.decision import Policy, Rule, choose_for_anomaly, read_policy
from edgeft.runtime.backends import scored_on


@dataclass
class ValScores:
    """What val gives a model on one runtime: the policy its rule chooses there (None without a rule or without both
    kinds of parts), AUROC and operating points (``Decisions``), the policy's outcome on val, and the heatmap scale
    (floor, ceiling) from val's good parts (None without good val parts)."""

    policy: Policy | None
    decisions: Any
    outcome: Any
    scale: tuple[float, float] | None


def both(y: np.ndarray) -> bool:
    """Whether a split has good and anomalous parts (AUROC is undefined otherwise)."""
    return bool(y.any() and not y.all())


def on_val(model: Path, data: Path, contract: Any, good: str, rule: Rule | None, backend: str = "ort-cpu",
           threads: int | None = None, desc: str = "val") -> ValScores | None:
    """``model`` (an ONNX anomaly graph) on ``data``'s val split, computed by ``backend``; None when there is no val."""
    from edgeft.data.imagefolder import find_splits, load_split
    from edgeft.metrics import anomalous_mask, anomaly_decisions
    from edgeft.runtime.logits import onnx_outputs
    from edgeft.tasks.anomaly.features import map_scale

    if "val" not in find_splits(data):
        return None
    val = load_split(data, "val", contract)
    y = anomalous_mask(val.labels, val.classes, good)
    scores, maps = onnx_outputs(model, val.images, contract, threads=threads, desc=f"{desc} on {backend}",
                                backend=backend)[:2]
    scale = map_scale(maps[~y], scores[~y]) if (~y).any() else None
    if not both(y):
        return ValScores(None, None, None, scale)
    policy = scored_on(choose_for_anomaly(rule, y, scores, good), backend) if rule is not None else None
    return ValScores(policy, anomaly_decisions(y, scores, good), policy.outcome(y, scores) if policy else None, scale)


def rule_of(a: art.Artifact) -> Rule | None:
    """The rule an anomaly artifact's threshold was chosen by (None: fitted without one)."""
    p = read_policy(a.meta.extra, f"{a.path}/meta.json extra.decision")
    return p.rule if p is not None else None


def measure_on(out: Path, data: Path, backend: str, threads: int | None = None) -> None:
    """Score the anomaly artifact ``out`` on ``backend`` and write it there: its policy and heatmap scale chosen on
    val's scores there, and its ``anomaly`` record (val and test AUROC, test at that policy) computed there; the fit's
    own figures (good images, bank size) are kept."""
    from edgeft.data.imagefolder import find_splits, load_split
    from edgeft.metrics import AnomalyFit, anomalous_mask, anomaly_decisions, read
    from edgeft.runtime.logits import onnx_outputs

    a = art.load(out)
    contract, good = a.meta.input, a.meta.class_names[0]
    v = on_val(a.model_path, data, contract, good, rule_of(a), backend, threads)
    test = dec = outcome = None
    if "test" in find_splits(data):
        test = load_split(data, "test", contract)
        y = anomalous_mask(test.labels, test.classes, good)
        scores = onnx_outputs(a.model_path, test.images, contract, threads=threads, desc=f"test on {backend}",
                              backend=backend)[0].reshape(-1)
        dec = anomaly_decisions(y, scores, good) if both(y) else None
        if v is not None and v.policy is not None and dec is not None:
            outcome = v.policy.outcome(y, scores)
    fit = read(a.meta.metrics, "anomaly")
    record = AnomalyFit(method=a.meta.extra["anomaly"]["method"], good_images=fit.good_images if fit else 0,
                        fit_s=fit.fit_s if fit else 0.0, bank_bytes=fit.bank_bytes if fit else 0,
                        val=v.decisions if v else None, test=dec, test_policy=outcome)
    extra: dict[str, Any] = {}
    if v is not None and v.policy is not None:
        extra["decision"] = v.policy.to_dict()
    if v is not None and v.scale is not None:
        extra["anomaly"] = {**a.meta.extra["anomaly"], "map_floor": v.scale[0], "map_ceiling": v.scale[1]}
    art.update_metrics(a, {"anomaly": record.to_dict(), "eval_split": "test" if test is not None else "val",
                           "scored_on": backend}, extra=extra)
