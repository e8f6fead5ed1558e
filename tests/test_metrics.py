"""Typed metrics: stages write them as JSON, every reader goes through the dataclasses, and a renamed or missing
field fails at the reader instead of printing an empty column; the previous schema is still read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeft import artifact
from edgeft.contract import InputContract
from edgeft.metrics import (METRICS_SCHEMA, Classification, Landing, MetricsError, PruneStats,
                            classification_metrics, read, split_metrics)

CLASSES = ["bad", "good"]


def _artifact(tmp_path, metrics: dict, schema: int | None = METRICS_SCHEMA):
    meta = artifact.Meta(kind="torch", arch="test_efficientnet", class_names=CLASSES,
                         input=InputContract(size=(32, 32)), metrics=metrics)
    a = artifact.save(tmp_path / "a", meta, lambda p: p.write_bytes(b"weights"))
    if schema != METRICS_SCHEMA:  # rewrite meta.json as an older edgeft wrote it
        d = json.loads((a.path / "meta.json").read_text())
        d.pop("metrics_schema")
        if schema is not None:
            d["metrics_schema"] = schema
        (a.path / "meta.json").write_text(json.dumps(d))
    return a.path


def _prune(m: Classification) -> PruneStats:
    return PruneStats(macs_before=100, macs_after=49, params_before=10, params_after=8, macs_ratio=0.49,
                      params_ratio=0.8, prune_seconds=1.0, eval_split="test", accuracy_before=m,
                      accuracy_after_prune=m, target=Landing("macs", 0.5, 0.02, 0.49, True))


def test_round_trip_through_meta_json(tmp_path):
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), CLASSES)
    assert m.accuracy == 0.75 and m.per_class["bad"].recall == 0.5 and m.confusion == [[1, 1], [0, 2]]
    path = _artifact(tmp_path, {"test": m.to_dict(), "prune": _prune(m).to_dict()})
    meta = artifact.load(path).meta
    assert json.loads((path / "meta.json").read_text())["metrics_schema"] == METRICS_SCHEMA
    assert split_metrics(meta.metrics, "test") == m
    assert read(meta.metrics, "prune") == _prune(m)


def test_a_renamed_field_fails_at_every_reader(tmp_path, cli):
    """As if a writer renamed balanced_accuracy: the report, the CLI summaries and the gates refuse to read it,
    naming the field, instead of printing an empty column."""
    m = classification_metrics(np.array([0, 1]), np.array([0, 1]), CLASSES).to_dict()
    m["balanced_acc"] = m.pop("balanced_accuracy")
    meta = artifact.load(_artifact(tmp_path, {"test": m, "eval_split": "test"})).meta
    with pytest.raises(MetricsError, match="metrics.test has no field 'balanced_accuracy'"):
        split_metrics(meta.metrics, "test")

    from edgeft.optimize import report

    class Step:
        name, stage, label, parent, inputs = "a", "finetune", "fine-tuned", None, []

    class Done:
        status, seconds, reason = "done", 1.0, ""

    with pytest.raises(MetricsError, match="balanced_accuracy"):
        report.collect(tmp_path, [Step()], {"a": Done()})


def test_the_previous_schema_is_read(tmp_path):
    """Schema 1 (no metrics_schema in meta.json): pruning stats without where pruning landed."""
    m = classification_metrics(np.array([0, 1]), np.array([0, 1]), CLASSES)
    old = _prune(m).to_dict()
    old.pop("target")
    meta = artifact.load(_artifact(tmp_path, {"prune": old}, schema=None)).meta
    p = read(meta.metrics, "prune")
    assert p.target is None and p.macs_ratio == 0.49 and p.accuracy_before == m
    assert meta.metrics_schema == METRICS_SCHEMA  # upgraded on reading; saved again in the current schema


def test_a_newer_schema_is_refused(tmp_path):
    with pytest.raises(MetricsError, match="metrics schema 99 is newer than this edgeft reads"):
        artifact.load(_artifact(tmp_path, {}, schema=99))
