"""Scores (ground floor: numpy only, so the camera's path can use them): ROC, AUROC, average precision, PRO,
per-class and paired statistics, computed once per model and split.

Accuracy alone hides the failure that matters in inspection (a model that calls everything "OK"), so every
classification carries balanced accuracy, per-class recall and the confusion matrix next to it; ranking scores
follow scikit-learn's definitions (ties included), which the tests check them against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeft.metrics.intervals import wilson_interval  # noqa: F401 (a score of a proportion)
from edgeft.metrics.records import ClassMetrics, Classification, Decisions, OperatingPoint


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-reject rates, recalls, thresholds), thresholds descending: rejecting every part with a score >= the
    threshold gives that recall and false-reject rate (computed once; any operating point is then a lookup)."""
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, y = np.asarray(scores, dtype=np.float64)[order], positive[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    recall = np.r_[0.0, tp / max(1, y.sum())]
    false_reject = np.r_[0.0, fp / max(1, (~y).sum())]
    return false_reject, recall, np.r_[np.inf, s[last]]


def _area(false_reject: np.ndarray, recall: np.ndarray) -> float:
    """The area under a ROC curve, by trapezoids (ties count half, as in the Mann-Whitney statistic)."""
    return float(np.sum(np.diff(false_reject) * (recall[1:] + recall[:-1]) / 2))


def auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """The area under the ROC curve of ``scores`` for the ``positive`` items (NaN without both kinds)."""
    y = np.asarray(positive, dtype=bool).ravel()
    if y.all() or not y.any():
        return float("nan")
    return _area(*roc_curve(y, np.asarray(scores).ravel())[:2])


PRO_FPR_LIMIT = 0.3  # the MVTec AD convention: the PRO curve integrated up to 30% false-positive pixels


def pro_auc(regions: list[np.ndarray], normal: np.ndarray, fpr_limit: float = PRO_FPR_LIMIT,
            steps: int = 300) -> float:
    """The normalised area under the per-region-overlap (PRO) curve up to ``fpr_limit`` false-positive pixels
    (Bergmann et al., MVTec AD): each defect region (``regions``: the heatmap's values on one connected region of a
    mask) weighs the same, however large, so a map that covers one big region and misses the thin cracks scores low
    where pixel AUROC would not. ``normal``: the heatmap's values on every defect-free pixel. 1.0 is perfect; a map
    with no information scores about ``fpr_limit / 2``."""
    normal = np.sort(np.asarray(normal, dtype=np.float64).ravel())
    if not regions or normal.size == 0:
        return float("nan")
    fpr_grid = np.linspace(0.0, fpr_limit, steps + 1)
    thresholds = np.quantile(normal, 1.0 - fpr_grid)  # descending: the thresholds where the grid's FPRs are reached
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="left") / normal.size
    overlap = np.zeros(len(thresholds))
    for r in regions:
        r = np.sort(np.asarray(r, dtype=np.float64).ravel())
        overlap += 1.0 - np.searchsorted(r, thresholds, side="left") / r.size
    overlap /= len(regions)
    fpr = np.clip(fpr, 0.0, fpr_limit)
    return float(np.sum(np.diff(fpr) * (overlap[1:] + overlap[:-1]) / 2) / fpr_limit)


def one_vs_rest(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """AUROC and average precision of each class against the rest, for the classes the split has with both kinds
    of parts (a class alone, or absent, has neither)."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=np.float64)
    out = {}
    for k, c in enumerate(class_names):
        y = labels == k
        if y.any() and not y.all():
            out[c] = {"auroc": _area(*roc_curve(y, probabilities[:, k])[:2]),
                      "ap": average_precision(y, probabilities[:, k])}
    return out


def macro_auroc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over the classes present with both kinds of parts (for two classes, the AUROC);
    NaN when no class has both. How well scores rank, whatever threshold a line later picks."""
    per_class = one_vs_rest(labels, probabilities, [str(k) for k in range(np.shape(probabilities)[1])])
    return float(np.mean([v["auroc"] for v in per_class.values()])) if per_class else float("nan")


def positive_mask(labels: np.ndarray, class_names: list[str], positive: list[str]) -> np.ndarray:
    """Which labelled parts are "not OK" (their class is one of ``positive``); refuses a class the model lacks."""
    from edgeft.errors import ConfigError

    unknown = [c for c in positive if c not in class_names]
    if unknown or not positive:
        raise ConfigError(f"positive class {unknown[0] if unknown else '(none)'!r} is not a class of the model "
                          f"({', '.join(class_names)}); name one or more of them")
    return np.isin(np.asarray(labels), [class_names.index(c) for c in positive])


def not_ok_score(probabilities: np.ndarray, class_names: list[str], positive: list[str]) -> np.ndarray:
    """The "not OK" score of softmax rows (... x classes): the positive classes' total probability."""
    return np.asarray(probabilities, dtype=np.float64)[..., [class_names.index(c) for c in positive]].sum(-1)


def labelled_not_ok(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], positive: list[str],
                    split: str = "the split") -> tuple[np.ndarray, np.ndarray]:
    """(which parts are "not OK", their scores) on a labelled split; refuses a split without both kinds of parts,
    on which AUROC, operating points and thresholds are undefined."""
    from edgeft.errors import DataError

    y = positive_mask(labels, class_names, positive)
    if y.all() or not y.any():
        raise DataError(f"{split} has {'no' if not y.any() else 'only'} {'/'.join(positive)} images: AUROC, "
                        "operating points and thresholds are undefined on it; use a split with both kinds of parts")
    return y, not_ok_score(probabilities, class_names, positive)


def decision_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], positive: list[str],
                     false_rejects: tuple[float, ...] = (0.01, 0.05, 0.10, 0.25),
                     recalls: tuple[float, ...] = (0.90, 0.95, 0.99)) -> Decisions:
    """:class:`Decisions` of softmax ``probabilities`` (N x classes) against integer ``labels``."""
    y, score = labelled_not_ok(labels, probabilities, class_names, positive)
    return score_decisions(y, score, positive, false_rejects, recalls,
                           per_class=one_vs_rest(labels, probabilities, class_names))


def score_decisions(y: np.ndarray, score: np.ndarray, positive: list[str],
                    false_rejects: tuple[float, ...] = (0.01, 0.05, 0.10, 0.25),
                    recalls: tuple[float, ...] = (0.90, 0.95, 0.99),
                    per_class: dict[str, dict[str, float]] | None = None) -> Decisions:
    """:class:`Decisions` of parts' "not OK" scores however a task scores a part (``y``: which parts are not OK;
    both kinds must be present)."""
    y, score = np.asarray(y, dtype=bool), np.asarray(score, dtype=np.float64)
    fr, rec, thr = roc_curve(y, score)
    at_fr = {f"{f:g}": _point(thr, rec, fr, np.nonzero(fr <= f + 1e-12)[0][-1]) for f in false_rejects}
    at_rec = {f"{r:g}": _point(thr, rec, fr, np.nonzero(rec >= r - 1e-12)[0][0]) for r in recalls}
    return Decisions(positive=list(positive), n_positive=int(y.sum()), n_negative=int((~y).sum()),
                     auroc=_area(fr, rec), average_precision=average_precision(y, score),
                     recall_at_false_reject=at_fr, false_reject_at_recall=at_rec,
                     roc=[[round(float(f), 5), round(float(r), 5)] for f, r in zip(fr, rec)],
                     per_class=per_class)


ANOMALOUS = "anomalous"  # the positive class of an anomaly model: its class names are [good class, ANOMALOUS]


def anomaly_columns(scores: np.ndarray) -> np.ndarray:
    """Anomaly scores as the (good, anomalous) columns the decision code reads: the anomalous column is the score,
    so "not OK" = the score, and AUROC, operating points and policies work on it unchanged."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return np.stack([-s, s], axis=1)


def anomalous_mask(labels: np.ndarray, classes: list[str], good: str) -> np.ndarray:
    """Which labelled parts an anomaly model should flag: every class folder but the ``good`` one."""
    labels = np.asarray(labels)
    return labels != classes.index(good) if good in classes else np.ones(len(labels), dtype=bool)


def anomaly_decisions(anomalous: np.ndarray, scores: np.ndarray, good: str) -> Decisions:
    """:class:`Decisions` of anomaly ``scores`` against which parts are ``anomalous``."""
    return decision_metrics(np.asarray(anomalous).astype(np.int64), anomaly_columns(scores), [good, ANOMALOUS],
                            [ANOMALOUS])


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision as scikit-learn defines it: the precision at each distinct score threshold (scores
    descending), weighted by the recall gained there. Tied scores form one threshold, so the result does not depend
    on the order of tied parts (INT8 models tie often)."""
    y = np.asarray(y, dtype=bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _point(thresholds: np.ndarray, recall: np.ndarray, false_reject: np.ndarray, i: int) -> OperatingPoint:
    # the first point rejects nothing: its threshold is just above the highest score (JSON has no infinity)
    t = thresholds[i] if np.isfinite(thresholds[i]) else np.nextafter(thresholds[1], np.inf)
    return OperatingPoint(threshold=float(t), recall=float(recall[i]), false_reject=float(false_reject[i]))



def classification_metrics(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> Classification:
    """Accuracy, balanced accuracy, per-class precision/recall/F1/support and the confusion matrix."""
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
    return Classification(
        n=n, accuracy=float(tp.sum() / n) if n else 0.0,
        balanced_accuracy=float(recall[present].mean()) if present.any() else 0.0,
        per_class={name: ClassMetrics(precision=float(precision[i]), recall=float(recall[i]), f1=float(f1[i]),
                                      support=int(support[i])) for i, name in enumerate(class_names)},
        confusion=cm.tolist())



def paired_drop(labels: list[int], base: list[int], cand: list[int]) -> dict[str, Any]:
    """The accuracy drop of a candidate against the fine-tuned model on the same images, with its standard error
    from the images the two disagree on (a paired comparison: images both get right or both get wrong say nothing
    about the difference). On ELPV's 394 val cells one standard error is 1-2 points, as large as the 1-point gate."""
    n = len(labels)
    gain = sum(1 for y, b, c in zip(labels, base, cand) if c == y and b != y)
    loss = sum(1 for y, b, c in zip(labels, base, cand) if b == y and c != y)
    d = (loss - gain) / n
    se = ((gain + loss) / n - d * d) ** 0.5 / n ** 0.5 if n else 0.0
    return {"drop_pp": round(d * 100, 2), "se_pp": round(se * 100, 2), "better_on": gain, "worse_on": loss, "n": n}


def auroc_drop_interval(anomalous: np.ndarray, base: np.ndarray, final: np.ndarray, resamples: int = 2000,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` interval of AUROC(base) - AUROC(final) over a paired bootstrap: the same parts resampled with
    replacement for both models (anomalous and good ones separately, so every resample has both). Where the interval
    is wider than an AUROC gate, the split has too few parts to say whether the gate was met."""
    y = np.asarray(anomalous, dtype=bool)
    a, b = np.asarray(base, dtype=np.float64), np.asarray(final, dtype=np.float64)
    drops = bootstrap_auroc_drops(y, a, b, resamples, seed)
    lo, hi = np.percentile(drops, [50 * (1 - level), 100 - 50 * (1 - level)])
    return float(lo), float(hi)


def bootstrap_auroc_drops(y: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """AUROC(a) - AUROC(b) on each of ``resamples`` stratified resamples of the parts (:func:`auroc_drop_interval`)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    out = np.empty(resamples)
    for k in range(resamples):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        out[k] = auroc(y[idx], a[idx]) - auroc(y[idx], b[idx])
    return out


def mcnemar_worse(base_correct: list[int], cand_correct: list[int]) -> dict[str, Any]:
    """Whether a candidate classifies a split significantly worse than a base model, judged on the images the two
    disagree on (McNemar's exact test, one-sided): ``worse`` images the base got right and the candidate wrong,
    ``better`` the reverse, and ``p``, the chance of at least ``worse`` of the ``worse + better`` discordant images
    going against the candidate if both were equally good. Images both get right or both get wrong say nothing."""
    from math import comb

    if len(base_correct) != len(cand_correct):
        raise ValueError(f"paired results of {len(base_correct)} and {len(cand_correct)} images")
    worse = sum(1 for b, c in zip(base_correct, cand_correct) if b and not c)
    better = sum(1 for b, c in zip(base_correct, cand_correct) if c and not b)
    n = worse + better
    p = sum(comb(n, k) for k in range(worse, n + 1)) / 2 ** n if n else 1.0
    return {"n": len(base_correct), "worse": worse, "better": better, "p": float(p)}
