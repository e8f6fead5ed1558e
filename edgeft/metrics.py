"""Typed metrics (ground floor: numpy only, so any backend can use them): what stages write and every reader reads.

Accuracy alone hides the failure that matters in inspection (a model that calls everything "OK"), so
every report carries balanced accuracy, per-class recall and the confusion matrix next to it.

Stages store metrics in ``meta.json`` as plain JSON (``to_dict``); every reader (the CLI's summaries, the
report, compare-backends, the optimize gates) turns them back into these dataclasses (``from_dict`` /
:func:`read`), so a renamed or missing field fails loudly at the reader instead of printing nothing.
``METRICS_SCHEMA`` is stored in ``meta.json``; :func:`upgrade` reads the previous schema (1: artifacts from
before typed metrics, which lack where pruning landed and the parity rule's verdict).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edgeft.errors import ArtifactError

METRICS_SCHEMA = 2
T = TypeVar("T")


class MetricsError(ArtifactError):
    """An artifact's metrics lack a field a reader needs (written by another version, or edited by hand)."""


def _from_dict(cls: type[T], d: Any, where: str) -> T:
    """``cls`` from a JSON mapping: every field without a default must be there (extra keys are kept aside)."""
    if not isinstance(d, dict):
        raise MetricsError(f"{where} must be a mapping, got {type(d).__name__}; re-create the artifact")
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in d:
            values[f.name] = d[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise MetricsError(f"{where} has no field {f.name!r} (it has {', '.join(sorted(d)) or 'none'}); the "
                               "artifact was written by another edgeft version: re-create it")
    return cls(**values)  # type: ignore[call-arg]


class _Record:
    """JSON in and out for a flat metrics dataclass; ``WHERE`` names it in a reader's error."""

    WHERE = "metrics"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: Any, where: str | None = None):
        return _from_dict(cls, d, where or cls.WHERE)


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Classification:
    """Metrics of a classifier on one labelled split. ``confusion[i][j]`` counts images of true class i predicted
    as class j."""

    n: int
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]
    tta_views: int | None = None
    decisions: "Decisions | None" = None  # with a positive ("not OK") class: AUROC and operating points
    policy: "Outcome | None" = None  # with the artifact's decision policy: what it does on this split

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("tta_views", "decisions", "policy"):
            if d[key] is None:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "metrics") -> "Classification":
        c = _from_dict(cls, d, where)
        per_class = {k: _from_dict(ClassMetrics, v, f"{where}.per_class.{k}") for k, v in c.per_class.items()}
        decisions = Decisions.from_dict(c.decisions, f"{where}.decisions") if c.decisions is not None else None
        policy = Outcome.from_dict(c.policy, f"{where}.policy") if c.policy is not None else None
        return dataclasses.replace(c, per_class=per_class, decisions=decisions, policy=policy)


@dataclass(frozen=True)
class Latency(_Record):
    """Per-iteration latency statistics of one bench row, milliseconds (``throughput_ips``: images per second)."""

    WHERE = "latency_ms"

    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    throughput_ips: float


@dataclass(frozen=True)
class Landing:
    """Where pruning landed against its target: ``reached`` is the fraction of the parent's MACs (or parameters)
    kept, and ``why`` explains a landing further below the target than ``tolerance``."""

    kind: str
    fraction: float
    tolerance: float
    reached: float
    within_tolerance: bool
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.why:
            d.pop("why")
        return d


@dataclass(frozen=True)
class PruneCounts:
    """MACs and parameters before and after pruning, and what share of each is kept."""

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    macs_ratio: float
    params_ratio: float


@dataclass(frozen=True)
class PruneStats(PruneCounts):
    """What pruning did: MACs and parameters before and after, where it landed, accuracy before and right after
    pruning (before recovery), and the ONNX Runtime latency of both measured side by side."""

    prune_seconds: float
    eval_split: str
    accuracy_before: Classification
    accuracy_after_prune: Classification
    target: Landing | None = None  # None in schema 1
    ort_cpu_latency: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["accuracy_before"] = self.accuracy_before.to_dict()
        d["accuracy_after_prune"] = self.accuracy_after_prune.to_dict()
        d["target"] = self.target.to_dict() if self.target else None
        if self.ort_cpu_latency is None:
            d.pop("ort_cpu_latency")
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "metrics.prune") -> "PruneStats":
        p = _from_dict(cls, d, where)
        return dataclasses.replace(
            p, accuracy_before=Classification.from_dict(p.accuracy_before, f"{where}.accuracy_before"),
            accuracy_after_prune=Classification.from_dict(p.accuracy_after_prune, f"{where}.accuracy_after_prune"),
            target=_from_dict(Landing, p.target, f"{where}.target") if p.target is not None else None)


@dataclass(frozen=True)
class OnnxGraph(_Record):
    """An exported ONNX file: opset, node count, size on disk, whether the batch dimension is dynamic."""

    WHERE = "metrics.onnx"

    opset: int
    nodes: int
    size_bytes: int
    dynamic_batch: bool


@dataclass(frozen=True)
class QuantGraph(_Record):
    """An INT8 QDQ graph: Q/DQ node counts, the op types that take INT8 inputs, and all op counts."""

    WHERE = "metrics.graph"

    quantize_linear: int
    dequantize_linear: int
    int8_inputs_by_op: dict[str, int]
    ops: dict[str, int]


@dataclass(frozen=True)
class Size(_Record):
    """Model file sizes before and after a stage that shrinks them, and their ratio."""

    WHERE = "metrics.size"

    fp32_bytes: int
    int8_bytes: int
    ratio: float


@dataclass(frozen=True)
class ParityCheck(_Record):
    """The export's parity check against PyTorch on real images (``edgeft.parity``'s rule); ``max_rel_diff``
    and ``passed`` are None in schema 1, which judged an absolute difference only. A classifier has
    ``top1_agreement``; an anomaly graph has its scores' differences and ``min_map_correlation`` instead."""

    WHERE = "metrics.parity"

    n: int
    split: str
    max_abs_diff: float
    top1_agreement: float | None = None
    max_rel_diff: float | None = None
    passed: bool | None = None
    min_map_correlation: float | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold on the "not OK" score and what it does on one split: the share of defective parts
    caught (recall; 1 - recall escapes) and the share of good parts rejected (false reject)."""

    threshold: float
    recall: float
    false_reject: float


@dataclass(frozen=True)
class Decisions:
    """How well a classifier separates the ``positive`` classes ("not OK": their total probability is the score)
    from the rest: AUROC, average precision, and operating points at fixed false-reject rates and recalls."""

    positive: list[str]
    n_positive: int
    n_negative: int
    auroc: float
    average_precision: float
    recall_at_false_reject: dict[str, OperatingPoint]  # "0.05" -> the best recall rejecting at most 5% of good parts
    false_reject_at_recall: dict[str, OperatingPoint]  # "0.95" -> the least false reject catching >= 95% of defects
    roc: list[list[float]] | None = None  # the ROC curve's corners, [false reject, recall], for the report's plot
    per_class: dict[str, dict[str, float]] | None = None  # each class one-vs-rest: {"auroc": ..., "ap": ...}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "metrics.decisions") -> "Decisions":
        c = _from_dict(cls, d, where)
        points = {name: {k: _from_dict(OperatingPoint, v, f"{where}.{name}.{k}") for k, v in getattr(c, name).items()}
                  for name in ("recall_at_false_reject", "false_reject_at_recall")}
        return dataclasses.replace(c, **points)


@dataclass(frozen=True)
class Outcome(_Record):
    """What a policy does on a labelled split: defective parts caught (rejected or sent to review), good parts
    rejected without review, and the share of all parts a person reviews."""

    WHERE = "metrics.policy"

    n_positive: int
    n_negative: int
    recall: float
    false_reject: float
    review_rate: float
    escapes: int
    false_rejects: int
    reviewed: int


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
                      "ap": _average_precision(y, probabilities[:, k])}
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
    fr, rec, thr = roc_curve(y, score)
    at_fr = {f"{f:g}": _point(thr, rec, fr, np.nonzero(fr <= f + 1e-12)[0][-1]) for f in false_rejects}
    at_rec = {f"{r:g}": _point(thr, rec, fr, np.nonzero(rec >= r - 1e-12)[0][0]) for r in recalls}
    return Decisions(positive=list(positive), n_positive=int(y.sum()), n_negative=int((~y).sum()),
                     auroc=_area(fr, rec), average_precision=_average_precision(y, score),
                     recall_at_false_reject=at_fr, false_reject_at_recall=at_rec,
                     roc=[[round(float(f), 5), round(float(r), 5)] for f, r in zip(fr, rec)],
                     per_class=one_vs_rest(labels, probabilities, class_names))


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


def _average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """The mean precision at each positive part's rank, scores descending."""
    ranked = np.asarray(y, dtype=bool)[np.argsort(-np.asarray(score), kind="mergesort")]
    precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
    return float((precision * ranked).sum() / ranked.sum())


def _point(thresholds: np.ndarray, recall: np.ndarray, false_reject: np.ndarray, i: int) -> OperatingPoint:
    # the first point rejects nothing: its threshold is just above the highest score (JSON has no infinity)
    t = thresholds[i] if np.isfinite(thresholds[i]) else np.nextafter(thresholds[1], np.inf)
    return OperatingPoint(threshold=float(t), recall=float(recall[i]), false_reject=float(false_reject[i]))


def format_decisions(d: Decisions) -> str:
    """AUROC, AP and the operating points, as lines for a terminal."""
    lines = [f"  not OK = {' + '.join(d.positive)} ({d.n_positive} of {d.n_positive + d.n_negative} images): AUROC "
             f"{d.auroc:.3f}, average precision {d.average_precision:.3f}"]
    if d.per_class and len(d.per_class) > 2:  # with two classes each one-vs-rest AUROC is the one above
        lines.append("  one-vs-rest: " + ", ".join(f"{c} AUROC {v['auroc']:.3f} AP {v['ap']:.3f}"
                                                 for c, v in d.per_class.items()))
    for k, p in d.recall_at_false_reject.items():
        lines.append(f"  at most {float(k) * 100:g}% false rejects: recall {p.recall * 100:.1f}% "
                     f"(threshold {p.threshold:.3f})")
    for k, p in d.false_reject_at_recall.items():
        lines.append(f"  recall >= {float(k) * 100:g}%: false rejects {p.false_reject * 100:.1f}% "
                     f"(threshold {p.threshold:.3f})")
    return "\n".join(lines)


@dataclass(frozen=True)
class AnomalyFit:
    """An anomaly model's fit (``edgeft anomaly``): from how many good images, in how long, how large its
    statistics are (the bank the graph carries), and how well its score separates good from anomalous parts on val
    (where the policy was chosen) and test (touched once, at the end). ``val``/``test`` are None for a split
    without both kinds of parts, on which AUROC is undefined."""

    method: str
    good_images: int
    fit_s: float
    bank_bytes: int
    val: "Decisions | None" = None
    test: "Decisions | None" = None
    test_policy: "Outcome | None" = None
    test_pixel_auroc: float | None = None  # heatmaps against masks/ where the data has them
    test_masks: int = 0  # anomalous test images with a mask (good images count as all-good pixels)
    test_pixel_pro: float | None = None  # per-region overlap up to 30% false-positive pixels (metrics.pro_auc)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "metrics.anomaly") -> "AnomalyFit":
        c = _from_dict(cls, d, where)
        return dataclasses.replace(
            c, val=Decisions.from_dict(c.val, f"{where}.val") if c.val is not None else None,
            test=Decisions.from_dict(c.test, f"{where}.test") if c.test is not None else None,
            test_policy=Outcome.from_dict(c.test_policy, f"{where}.test_policy") if c.test_policy is not None else None)


@dataclass(frozen=True)
class AnomalyPrune(PruneCounts, _Record):
    """What pruning an anomaly model's backbone did (``edgeft prune`` on an ``edgeft anomaly`` artifact): MACs and
    parameters of the patch-feature half before and after, where it landed against its target, and the recovery by
    feature distillation on good images (``distill_loss``: the pruned backbone's features against its parent's, mean
    squared difference per channel standard deviation, before recovery and after each epoch)."""

    WHERE = "metrics.anomaly_prune"

    target: Landing | None
    prune_s: float
    recover_s: float
    distill_loss: list[float]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target"] = self.target.to_dict() if self.target else None
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str | None = None) -> "AnomalyPrune":
        p = _from_dict(cls, d, where or cls.WHERE)
        return dataclasses.replace(p, target=_from_dict(Landing, p.target, f"{where or cls.WHERE}.target")
                                   if p.target is not None else None)


# the typed entries of an artifact's metrics, by key; split metrics ("val", "test", "test_fp32", ...) are
# Classification and found by :func:`split_metrics`
TYPED: dict[str, Any] = {"prune": PruneStats, "onnx": OnnxGraph, "graph": QuantGraph, "size": Size,
                         "parity": ParityCheck, "anomaly": AnomalyFit, "anomaly_prune": AnomalyPrune}


def upgrade(metrics: dict[str, Any], schema: int | None) -> dict[str, Any]:
    """An artifact's metrics in the current schema. Schema 1 (no ``metrics_schema`` in meta.json) lacks where
    pruning landed (``prune.target``: None) and the parity rule's verdict, which stay absent."""
    if schema is None or schema == 1:
        m = dict(metrics)
        if isinstance(m.get("prune"), dict):
            m["prune"] = {**m["prune"], "target": m["prune"].get("target")}
        return m
    if schema == METRICS_SCHEMA:
        return metrics
    raise MetricsError(f"metrics schema {schema} is newer than this edgeft reads ({METRICS_SCHEMA}); upgrade edgeft")


def read(metrics: dict[str, Any], key: str, schema: int | None = METRICS_SCHEMA):
    """The typed entry ``key`` of an artifact's metrics (None when the artifact has none)."""
    m = upgrade(metrics, schema)
    if key not in m or m[key] is None:
        return None
    cls = TYPED.get(key, Classification)
    return cls.from_dict(m[key], f"metrics.{key}")


def split_metrics(metrics: dict[str, Any], split: str, schema: int | None = METRICS_SCHEMA) -> Classification | None:
    """The classification metrics of ``split`` (``val``, ``test``, ``test_fp32``, ...), or None."""
    d = upgrade(metrics, schema).get(split)
    return None if d is None else Classification.from_dict(d, f"metrics.{split}")


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


def format_metrics(m: Classification, class_names: list[str], title: str = "") -> str:
    """A small human table: headline numbers, per-class recall/precision, confusion matrix."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"  accuracy {m.accuracy * 100:.2f}%  balanced accuracy {m.balanced_accuracy * 100:.2f}%  "
                 f"(n={m.n})")
    w = max(8, max(len(c) for c in class_names))
    lines.append(f"  {'class':<{w}}  precision  recall     f1  support")
    for c in class_names:
        pc = m.per_class[c]
        lines.append(f"  {c:<{w}}  {pc.precision * 100:8.1f}%  {pc.recall * 100:5.1f}%  "
                     f"{pc.f1 * 100:5.1f}%  {pc.support:7d}")
    lines.append("  confusion (rows: true, columns: predicted)")
    lines.append("  " + " " * w + "  " + "  ".join(f"{c[:10]:>10}" for c in class_names))
    for c, row in zip(class_names, m.confusion):
        lines.append(f"  {c:<{w}}  " + "  ".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)


def landing_text(target: Landing) -> str:
    """Where pruning landed against its target, in words, with the reason when it landed further below the
    target than its tolerance."""
    kind = "MACs" if target.kind == "macs" else "parameters"
    text = (f"kept {target.reached:.3f} of the {kind} for a target of {target.fraction:g} "
            f"(tolerance {target.tolerance:g})")
    if not target.within_tolerance:
        text += f"; {target.fraction - target.reached:.3f} below the target: {target.why}"
    return text


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
