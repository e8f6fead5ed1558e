"""Classification metrics computed from labels and predictions (numpy only, so any backend can use them).

Accuracy alone hides the failure that matters in inspection (a model that calls everything "OK"), so
every report carries balanced accuracy, per-class recall and the confusion matrix next to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support and the confusion matrix.

    ``confusion[i][j]`` counts images of true class i predicted as class j.
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    k = len(class_names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "confusion": cm.tolist(),
    }


def format_metrics(m: dict[str, Any], class_names: list[str], title: str = "") -> str:
    """A small human table: headline numbers, per-class recall/precision, confusion matrix."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"  accuracy {m['accuracy'] * 100:.2f}%  balanced accuracy {m['balanced_accuracy'] * 100:.2f}%  "
                 f"(n={m['n']})")
    w = max(8, max(len(c) for c in class_names))
    lines.append(f"  {'class':<{w}}  precision  recall     f1  support")
    for c in class_names:
        pc = m["per_class"][c]
        lines.append(f"  {c:<{w}}  {pc['precision'] * 100:8.1f}%  {pc['recall'] * 100:5.1f}%  "
                     f"{pc['f1'] * 100:5.1f}%  {pc['support']:7d}")
    lines.append("  confusion (rows: true, columns: predicted)")
    lines.append("  " + " " * w + "  " + "  ".join(f"{c[:10]:>10}" for c in class_names))
    for c, row in zip(class_names, m["confusion"]):
        lines.append(f"  {c:<{w}}  " + "  ".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)


def landing_text(target: dict[str, Any]) -> str:
    """Where pruning landed against its target (``metrics["prune"]["target"]``), in words, with the reason when
    it landed further below the target than its tolerance."""
    kind = "MACs" if target["kind"] == "macs" else "parameters"
    text = (f"kept {target['reached']:.3f} of the {kind} for a target of {target['fraction']:g} "
            f"(tolerance {target['tolerance']:g})")
    if not target["within_tolerance"]:
        text += f"; {target['fraction'] - target['reached']:.3f} below the target: {target['why']}"
    return text
