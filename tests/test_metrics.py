"""Typed metrics: stages write them as JSON, every reader goes through the dataclasses, and a renamed or missing
field fails at the reader instead of printing an empty column; the previous schema is still read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeft import artifact
from edgeft.contract import InputContract
from tests.conftest import assert_one_line_error
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

    from edgeft.optimize import rows as report

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


def _mann_whitney_auroc(y, s):
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_decision_metrics_against_independent_computations():
    from edgeft.metrics import decision_metrics, macro_auroc

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    p_bad = np.clip(rng.normal(0.3 + 0.4 * (labels == 0), 0.2), 0, 1).round(2)  # ties on purpose
    d = decision_metrics(labels, np.stack([p_bad, 1 - p_bad], 1), CLASSES, ["bad"])
    y = labels == 0
    assert d.auroc == pytest.approx(_mann_whitney_auroc(y, p_bad)) and d.n_positive == y.sum()
    # the fine-tuning's "auroc" monitor: for two classes, the same number
    assert macro_auroc(labels, np.stack([p_bad, 1 - p_bad], 1)) == pytest.approx(d.auroc)
    assert np.isnan(macro_auroc(np.zeros(5, int), np.full((5, 2), 0.5)))  # one class only: undefined, not 0.5
    for k, point in d.recall_at_false_reject.items():  # the best recall rejecting at most k of the good parts
        rejected = p_bad >= point.threshold
        assert point.recall == pytest.approx(rejected[y].mean()) and point.false_reject == rejected[~y].mean()
        feasible = [(p_bad[y] >= t).mean() for t in np.unique(p_bad) if (p_bad[~y] >= t).mean() <= float(k)]
        assert point.false_reject <= float(k) and point.recall == pytest.approx(max(feasible, default=0.0))
    for k, point in d.false_reject_at_recall.items():  # the least false reject catching at least k of the defects
        feasible = [(p_bad[~y] >= t).mean() for t in np.unique(p_bad) if (p_bad[y] >= t).mean() >= float(k)]
        assert point.recall >= float(k) and point.false_reject == pytest.approx(min(feasible))


def test_per_class_one_vs_rest_auroc_of_a_three_class_model():
    from edgeft.metrics import Decisions, decision_metrics

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 240)
    logits = rng.normal(0, 1, (240, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = ["crack", "ok", "scratch"]
    d = decision_metrics(labels, probs, names, ["crack", "scratch"])
    for k, c in enumerate(names):
        assert d.per_class[c]["auroc"] == pytest.approx(_mann_whitney_auroc(labels == k, probs[:, k]))
    assert d.auroc == pytest.approx(_mann_whitney_auroc(labels != 1, probs[:, [0, 2]].sum(1)))
    assert "one-vs-rest: crack AUROC" in d.summary()
    assert Decisions.from_dict(d.to_dict()) == d


def test_average_precision_and_typed_round_trip():
    from edgeft.metrics import Classification, decision_metrics

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9]])
    d = decision_metrics(np.array([0, 1, 0, 1]), probs, CLASSES, ["bad"])
    assert d.average_precision == pytest.approx((1 + 2 / 3) / 2) and d.auroc == pytest.approx(0.75)
    m = classification_metrics(np.array([0, 1, 0, 1]), probs.argmax(1), CLASSES)
    import dataclasses

    m = dataclasses.replace(m, decisions=d)
    assert Classification.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_undefined_decisions_are_refused_not_printed_as_half():
    from edgeft.errors import ConfigError, DataError
    from edgeft.metrics import decision_metrics

    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(DataError, match="the split has no bad images: AUROC, operating points and thresholds are undefined"):
        decision_metrics(np.array([1, 1]), probs, CLASSES, ["bad"])
    with pytest.raises(ConfigError, match="positive class 'scratch' is not a class of the model"):
        decision_metrics(np.array([0, 1]), probs, CLASSES, ["scratch"])


def test_eval_prints_auroc_and_operating_points(cli, tiny_onnx, tiny_data):
    r = cli("eval", tiny_onnx.path, "--data", tiny_data, "--positive", "bad")
    assert r.exit_code == 0, r.output
    assert "not OK = bad (8 of 16 images): AUROC" in r.output and "at most 5% false rejects: recall" in r.output
    d = json.loads(cli("eval", tiny_onnx.path, "--data", tiny_data, "--positive", "bad", "--json").output)
    assert 0 <= d["decisions"]["auroc"] <= 1
    assert set(d["decisions"]["false_reject_at_recall"]) == {"0.9", "0.95", "0.99"}
    assert_one_line_error(cli("eval", tiny_onnx.path, "--data", tiny_data, "--positive", "scratch"),
                          "positive class 'scratch' is not a class of the model")


def test_paired_drop_counts_only_the_images_two_models_disagree_on():
    from edgeft.metrics import paired_drop

    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    base = [1, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # wrong on image 0
    cand = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]  # right on 0, wrong on 4 and 5
    p = paired_drop(labels, base, cand)
    assert p == {"drop_pp": 10.0, "se_pp": round(((0.3 - 0.01) ** 0.5 / 10 ** 0.5) * 100, 2), "better_on": 1,
                 "worse_on": 2, "n": 10}
    assert paired_drop(labels, base, base)["se_pp"] == 0.0  # the same predictions: no doubt about the difference


def test_pro_weighs_every_defect_region_the_same_whatever_its_size():
    from edgeft.metrics import pro_auc

    rng = np.random.default_rng(0)
    normal = rng.random(50_000)  # the heatmap on defect-free pixels
    found, missed = rng.random(40) + 2.0, rng.random(40)  # a region the map is hot on, one it is not
    assert pro_auc([found], normal) == pytest.approx(1.0, abs=1e-3)
    assert pro_auc([missed], normal) == pytest.approx(0.15, abs=0.03)  # no information: about half the FPR limit
    big_found = rng.random(4000) + 2.0
    # one large region found and one thin one missed: PRO halves, where pixel AUROC would barely move
    assert pro_auc([big_found, missed], normal) == pytest.approx((1.0 + 0.15) / 2, abs=0.03)
    assert np.isnan(pro_auc([], normal))


def test_the_paired_bootstrap_of_an_auroc_drop_is_zero_for_one_model_and_brackets_a_real_drop():
    from edgeft.metrics import auroc, auroc_drop_interval, bootstrap_auroc_drops

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    a = y + rng.normal(0, 1.0, 100)  # a model that separates somewhat
    assert np.all(bootstrap_auroc_drops(y, a, a.copy(), 200, seed=0) == 0)  # the same scores: no drop on any resample
    worse = a + rng.normal(0, 1.5, 100)  # the same model with noise added
    lo, hi = auroc_drop_interval(y, a, worse, 500, seed=0)
    assert lo < auroc(y, a) - auroc(y, worse) < hi and hi - lo > 0.05  # 100 parts: a wide interval
