"""Every ranking score against scikit-learn's definition, ties included: INT8 models tie, and a hand-written score
that breaks ties by input order gives a number nobody can compare."""

from __future__ import annotations

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels with both kinds, scores drawn from few levels so that ties are frequent."""
    n = int(rng.integers(2, 60))
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    y[0], y[-1] = True, False
    levels = int(rng.integers(1, 12))
    s = np.round(rng.random(n) * levels) / levels + 0.3 * y * rng.random()
    return y, s


def test_average_precision_equals_scikit_learn_on_1000_random_cases_with_ties():
    from edgeft.metrics import average_precision

    rng = np.random.default_rng(0)
    tied = 0
    for _ in range(1000):
        y, s = _case(rng)
        tied += len(np.unique(s)) < len(s)
        assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
    assert tied > 900  # the cases do exercise ties


def test_ties_do_not_depend_on_input_order():
    from edgeft.metrics import average_precision

    assert average_precision([1, 0], [0.5, 0.5]) == average_precision([0, 1], [0.5, 0.5]) == 0.5


def test_auroc_and_roc_corners_equal_scikit_learn_on_random_cases_with_ties():
    from edgeft.metrics import auroc, roc_curve

    rng = np.random.default_rng(1)
    for _ in range(300):
        y, s = _case(rng)
        assert auroc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
        fr, rec, thr = roc_curve(y, s)
        fpr, tpr, sk_thr = sk.roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(fr, fpr)
        np.testing.assert_allclose(rec, tpr)
        np.testing.assert_allclose(thr[1:], sk_thr[1:])


def test_per_class_scores_and_the_confusion_equal_scikit_learn():
    from edgeft.metrics import classification_metrics, one_vs_rest

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200)
    probs = np.round(probs * 8) / 8  # ties
    names = ["a", "b", "c"]
    per = one_vs_rest(labels, probs, names)
    for k, c in enumerate(names):
        assert per[c]["auroc"] == pytest.approx(sk.roc_auc_score(labels == k, probs[:, k]))
        assert per[c]["ap"] == pytest.approx(sk.average_precision_score(labels == k, probs[:, k]))
    preds = probs.argmax(1)
    m = classification_metrics(labels, preds, names)
    assert m.accuracy == pytest.approx(sk.accuracy_score(labels, preds))
    assert m.balanced_accuracy == pytest.approx(sk.balanced_accuracy_score(labels, preds))
    assert m.confusion == sk.confusion_matrix(labels, preds).tolist()
    p, r, f, s = sk.precision_recall_fscore_support(labels, preds, zero_division=0)
    for k, c in enumerate(names):
        pc = m.per_class[c]
        assert (pc.precision, pc.recall, pc.f1, pc.support) == pytest.approx((p[k], r[k], f[k], s[k]))


def test_wilson_intervals_contain_the_binomial_truth_95_percent_of_the_time():
    """Recall on 123 defective cells and false rejects on 271 good ones, simulated: the 95% interval holds the true
    rate in 93-97% of 4,000 draws at every rate a line meets (the normal approximation falls short near 0 and 1)."""
    from edgeft.metrics import wilson_interval

    rng = np.random.default_rng(0)
    for n, p in ((123, 0.927), (123, 0.99), (271, 0.317), (271, 0.02), (30, 0.5)):
        k = rng.binomial(n, p, 4000)
        lo, hi = np.array([wilson_interval(int(x), n) for x in k]).T
        coverage = float(((lo <= p) & (p <= hi)).mean())
        assert 0.93 <= coverage <= 0.975, (n, p, coverage)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(114, 123) == pytest.approx((0.8669, 0.9607), abs=1e-3)
    assert all(np.isnan(wilson_interval(0, 0)))
