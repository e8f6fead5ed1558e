"""Typed metrics records (ground floor: numpy-free dataclasses): what stages write and every reader reads.

Stages store metrics in ``meta.json`` as plain JSON (``to_dict``); every reader (the CLI's summaries, the report,
compare-backends, the optimize gates) turns them back into these dataclasses (``from_dict`` / :func:`read`), so a
renamed or missing field fails loudly at the reader instead of printing nothing. Each record formats itself for a
terminal (``summary``), so no reader digs numbers out of raw dicts. ``METRICS_SCHEMA`` is stored in ``meta.json``;
:func:`upgrade` reads the previous schema (1: artifacts from before typed metrics, which lack where pruning landed
and the parity rule's verdict).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

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
    correct: list[int] | None = None  # 1 where the image was classified right, in the split's order (paired tests)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("tta_views", "decisions", "policy", "correct"):
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

    def summary(self, class_names: list[str], title: str = "") -> str:
        """A small human table: headline numbers, per-class recall/precision, confusion matrix."""
        lines = [title] if title else []
        lines.append(f"  accuracy {self.accuracy * 100:.2f}%  balanced accuracy {self.balanced_accuracy * 100:.2f}%  "
                     f"(n={self.n})")
        w = max(8, max(len(c) for c in class_names))
        lines.append(f"  {'class':<{w}}  precision  recall     f1  support")
        for c in class_names:
            pc = self.per_class[c]
            lines.append(f"  {c:<{w}}  {pc.precision * 100:8.1f}%  {pc.recall * 100:5.1f}%  "
                         f"{pc.f1 * 100:5.1f}%  {pc.support:7d}")
        lines.append("  confusion (rows: true, columns: predicted)")
        lines.append("  " + " " * w + "  " + "  ".join(f"{c[:10]:>10}" for c in class_names))
        for c, row in zip(class_names, self.confusion):
            lines.append(f"  {c:<{w}}  " + "  ".join(f"{v:>10d}" for v in row))
        return "\n".join(lines)


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

    @staticmethod
    def p50_of(entry: Any) -> float:
        """The p50 of a side-by-side latency entry (``{"p50_ms": ..., "rounds": [...]}``) as stages record it."""
        if not isinstance(entry, dict) or "p50_ms" not in entry:
            raise MetricsError(f"a latency entry must hold p50_ms, got {entry!r}; re-create the artifact")
        return float(entry["p50_ms"])


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

    def summary(self) -> str:
        """AUROC, AP and the operating points, as lines for a terminal."""
        lines = [f"  not OK = {' + '.join(self.positive)} ({self.n_positive} of {self.n_positive + self.n_negative} "
                 f"images): AUROC {self.auroc:.3f}, average precision {self.average_precision:.3f}"]
        if self.per_class and len(self.per_class) > 2:  # with two classes each one-vs-rest AUROC is the one above
            lines.append("  one-vs-rest: " + ", ".join(f"{c} AUROC {v['auroc']:.3f} AP {v['ap']:.3f}"
                                                     for c, v in self.per_class.items()))
        for k, p in self.recall_at_false_reject.items():
            lines.append(f"  at most {float(k) * 100:g}% false rejects: recall {p.recall * 100:.1f}% "
                         f"(threshold {p.threshold:.3f})")
        for k, p in self.false_reject_at_recall.items():
            lines.append(f"  recall >= {float(k) * 100:g}%: false rejects {p.false_reject * 100:.1f}% "
                         f"(threshold {p.threshold:.3f})")
        return "\n".join(lines)


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

    @property
    def recall_interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of the recall (caught of ``n_positive``)."""
        from edgeft.metrics.intervals import wilson_interval

        return wilson_interval(self.n_positive - self.escapes, self.n_positive)

    @property
    def false_reject_interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of the false-reject rate (rejected good parts of ``n_negative``)."""
        from edgeft.metrics.intervals import wilson_interval

        return wilson_interval(self.false_rejects, self.n_negative)

    def text(self) -> str:
        """A policy's outcome on a split, in a line's words."""
        text = (f"recall {self.recall * 100:.1f}% ({self.escapes} of {self.n_positive} defective parts escape), false "
                f"reject {self.false_reject * 100:.1f}% ({self.false_rejects} of {self.n_negative} good parts)")
        return text + (f", review {self.review_rate * 100:.1f}% ({self.reviewed} parts)" if self.reviewed else "")


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



def split_metrics(metrics: dict[str, Any], split: str, schema: int | None = METRICS_SCHEMA) -> Classification | None:
    """The classification metrics of ``split`` (``val``, ``test``, ``test_fp32``, ...), or None."""
    d = upgrade(metrics, schema).get(split)
    return None if d is None else Classification.from_dict(d, f"metrics.{split}")
