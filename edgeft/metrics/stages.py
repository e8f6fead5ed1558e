"""Typed records of what the stages did (ground floor): where pruning landed, the exported and the INT8 graphs, the
export's parity check, an anomaly model's fit and its pruning. :func:`read` turns an artifact's metrics entry back
into its record, so a renamed or missing field fails at the reader with its name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgeft.metrics.records import (METRICS_SCHEMA, Classification, Decisions, Latency, Outcome, _from_dict, _Record,
                                    split_metrics, upgrade)


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

    def text(self) -> str:
        """Where pruning landed against its target, in words, with the reason when it landed further below the
        target than its tolerance."""
        kind = "MACs" if self.kind == "macs" else "parameters"
        text = (f"kept {self.reached:.3f} of the {kind} for a target of {self.fraction:g} "
                f"(tolerance {self.tolerance:g})")
        if not self.within_tolerance:
            text += f"; {self.fraction - self.reached:.3f} below the target: {self.why}"
        return text


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

    def summary(self, metrics: dict[str, Any]) -> str:
        """What pruning did, in lines: MACs and parameters, where it landed, accuracy before, right after pruning
        and after recovery (``metrics``: the artifact's, which hold the recovered model's split), and the latency."""
        lines = [f"MACs {self.macs_before / 1e6:.1f}M -> {self.macs_after / 1e6:.1f}M, params "
                 f"{self.params_before / 1e6:.2f}M -> {self.params_after / 1e6:.2f}M"
                 + (f": {self.target.text()}" if self.target else "")]
        line = (f"{self.eval_split} accuracy: before {self.accuracy_before.accuracy * 100:.2f}%, after pruning "
                f"{self.accuracy_after_prune.accuracy * 100:.2f}%")
        recovered = split_metrics(metrics, self.eval_split)
        if recovered is not None and recovered != self.accuracy_after_prune:
            line += f", after recovery {recovered.accuracy * 100:.2f}%"
        lines.append(line)
        lat = self.ort_cpu_latency
        if lat:
            parent, pruned = (Latency.p50_of(lat.get(k)) for k in ("parent", "pruned"))
            lines.append(f"ONNX Runtime CPU latency (batch 1, {lat.get('threads')} threads, p50): parent "
                         f"{parent:.2f} ms, pruned {pruned:.2f} ms ({lat.get('speedup', parent / pruned):.2f}x)")
        return "\n".join(lines)


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

    def summary(self) -> str:
        """The fit in lines: from how much, how large, and how well it separates on val and test."""
        lines = [f"{self.method} on {self.good_images} good images in {self.fit_s:.0f} s, {self.bank_bytes / 1e6:.1f} MB "
                 "of statistics"]
        for split, d in (("val", self.val), ("test", self.test)):
            if d is not None:
                lines.append(f"{split}: image AUROC {d.auroc:.3f}, AP {d.average_precision:.3f} ({d.n_positive} "
                             f"anomalous, {d.n_negative} good)")
        if self.test_policy is not None:
            lines.append(f"test at the val threshold: {self.test_policy.text()}")
        if self.test_pixel_auroc is not None:
            lines.append(f"test pixel AUROC {self.test_pixel_auroc:.3f} ({self.test_masks} anomalous images with a "
                         "mask)")
        return "\n".join(lines)


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

    def summary(self, metrics: dict[str, Any]) -> str:
        """What pruning the backbone did, the recovery's feature loss, and the refitted model's AUROC."""
        lines = [f"MACs {self.macs_before / 1e6:.1f}M -> {self.macs_after / 1e6:.1f}M, params "
                 f"{self.params_before / 1e6:.2f}M -> {self.params_after / 1e6:.2f}M"
                 + (f": {self.target.text()}" if self.target else "")]
        if self.distill_loss:
            lines.append(f"feature distillation loss {self.distill_loss[0]:.4f} -> {self.distill_loss[-1]:.4f} in "
                         f"{len(self.distill_loss) - 1} epoch(s)")
        fit = read(metrics, "anomaly")
        for split, d in (("val", fit and fit.val), ("test", fit and fit.test)):
            if d is not None:
                lines.append(f"{split} AUROC {d.auroc:.4f}")
        return "\n".join(lines)


@dataclass(frozen=True)
class TrainingRun:
    """What a training run took (fine-tuning, recovery, QAT write it at the top of their metrics): epochs run, the
    epoch kept, seconds of training and in all, the process's peak memory."""

    epochs_run: int
    best_epoch: int
    train_seconds: float
    total_seconds: float
    peak_rss_mb: float

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> "TrainingRun":
        return _from_dict(cls, metrics, "metrics")

    def summary(self) -> str:
        return (f"trained {self.epochs_run} epochs (best {self.best_epoch}) in {self.train_seconds:.0f}s, total "
                f"{self.total_seconds:.0f}s, peak memory {self.peak_rss_mb:.0f} MB")


# the typed entries of an artifact's metrics, by key; split metrics ("val", "test", "test_fp32", ...) are
# Classification and found by :func:`split_metrics`


TYPED: dict[str, Any] = {"prune": PruneStats, "onnx": OnnxGraph, "graph": QuantGraph, "size": Size,
                         "parity": ParityCheck, "anomaly": AnomalyFit, "anomaly_prune": AnomalyPrune}



def read(metrics: dict[str, Any], key: str, schema: int | None = METRICS_SCHEMA):
    """The typed entry ``key`` of an artifact's metrics (None when the artifact has none)."""
    m = upgrade(metrics, schema)
    if key not in m or m[key] is None:
        return None
    cls = TYPED.get(key, Classification)
    return cls.from_dict(m[key], f"metrics.{key}")


