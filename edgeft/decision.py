"""Inspection decisions: the policy that turns a model's "not OK" score into pass, reject or review.

A line does not run on top-1 accuracy but on how many defective parts get through (escapes; recall is the
share caught) at how many good parts it throws away (false rejects), with a band of uncertain parts sent
to a person. The score is the total probability of the positive ("not OK") classes. A policy is chosen on
the validation split, never on test, by one rule:

- ``target_recall`` 0.95: the least false rejects that still catch >= 95% of val's defective parts;
- ``max_false_reject`` 0.05: the most defects caught rejecting at most 5% of val's good parts;
- ``escape_cost`` (with ``false_reject_cost``, default 1): the least total cost on val;

optionally with a **review band** sized by ``review_budget`` (the share of parts a person may look at): the
rule places the pass line (a part at or above it is not passed), and the band takes the least certain of
the not-passed parts, up to the budget, so a person sees them instead of the scrap bin. Recall counts every
defective part that is not passed; false reject counts good parts rejected without review.

A line that runs several products (mono and poly cells, two housings) gets an operating point per product with
``by_product``: the rule is applied to each product's own val parts (the data names each image's product,
:mod:`edgeft.data.products`), because one threshold over a mix moves with the mix; a part of no named product is
decided at the overall point.

The policy also keeps the val score distribution in ten bins, against which the camera measures drift
(population stability index, :func:`psi`). Numpy only: the runtime applies policies without torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeft.errors import ConfigError, DataError, close_matches
from edgeft.metrics import Outcome, _from_dict, _Record, labelled_not_ok, not_ok_score, roc_curve

DECISIONS = ("pass", "review", "reject")
DRIFT_BINS = 10
PSI_WARN, PSI_ALARM = 0.1, 0.25  # the usual reading: below 0.1 stable, above 0.25 the population has shifted


@dataclass(frozen=True)
class Rule(_Record):
    """How a policy is chosen: exactly one of ``target_recall``, ``max_false_reject`` or ``escape_cost``;
    ``max_false_reject`` may also bound a ``target_recall`` (then both must hold on val)."""

    WHERE = "decision"

    target_recall: float | None = None
    max_false_reject: float | None = None
    escape_cost: float | None = None
    false_reject_cost: float = 1.0
    review_budget: float | None = None
    by_product: bool = False  # an operating point per product, each chosen on that product's val parts

    def __post_init__(self) -> None:
        w = self.WHERE
        if self.target_recall is None and self.max_false_reject is None and self.escape_cost is None:
            raise ConfigError(f"{w}: name a rule: target_recall (e.g. 0.95), max_false_reject (e.g. 0.05) or "
                              "escape_cost (the cost of a missed defect, with false_reject_cost)")
        if self.escape_cost is not None and (self.target_recall is not None or self.max_false_reject is not None):
            raise ConfigError(f"{w}: escape_cost chooses the threshold by cost; drop target_recall/max_false_reject, "
                              "or drop escape_cost")
        for name in ("target_recall", "max_false_reject"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v < 1.0:
                raise ConfigError(f"{w}.{name} must be a fraction between 0 and 1 (0.95 = 95%), got {v}")
        if self.escape_cost is not None and (self.escape_cost <= 0 or self.false_reject_cost <= 0):
            raise ConfigError(f"{w}: escape_cost and false_reject_cost must be positive, got {self.escape_cost}, "
                              f"{self.false_reject_cost}")
        if self.review_budget is not None and not 0.0 < self.review_budget < 1.0:
            raise ConfigError(f"{w}.review_budget must be the share of parts a person may review, between 0 and 1 "
                              f"(0.05 = 5%), got {self.review_budget}; omit it for no review band")

    def text(self) -> str:
        parts = []
        if self.target_recall is not None:
            parts.append(f"recall >= {self.target_recall * 100:g}%")
        if self.max_false_reject is not None:
            parts.append(f"false reject <= {self.max_false_reject * 100:g}%")
        if self.escape_cost is not None:
            parts.append(f"least cost (escape {self.escape_cost:g}, false reject {self.false_reject_cost:g})")
        if self.review_budget is not None:
            parts.append(f"review <= {self.review_budget * 100:g}%")
        if self.by_product:
            parts.append("per product")
        return ", ".join(parts)


@dataclass(frozen=True)
class Point(_Record):
    """One product's operating point: its thresholds, its val outcome at them, and its val score distribution (a
    stream of one product measures drift against its own product's parts, not the mix)."""

    WHERE = "decision.products"

    pass_below: float
    reject_at: float
    val: Outcome
    drift_edges: list[float] = field(default_factory=list)
    drift_expected: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Policy:
    """A decision policy as an artifact carries it (``meta.json`` ``extra.decision``)."""

    positive: list[str]
    class_names: list[str]
    pass_below: float  # a part scoring below this passes
    reject_at: float  # at or above this it is rejected; in between (a review band) a person looks at it
    rule: Rule
    chosen_on: str
    val: Outcome
    drift_edges: list[float]  # inner edges of the val score bins
    drift_expected: list[float]  # val's share in each bin
    products: dict[str, Point] = field(default_factory=dict)  # by_product: each product's own point
    scored_with: str | None = None  # the backend whose scores chose it, when not its kind's default (ov-cpu, ...)

    @property
    def has_review(self) -> bool:
        return self.reject_at > self.pass_below

    def for_product(self, product: str | None) -> "Policy":
        """The policy a part of ``product`` is decided by: its own operating point where the policy has one, else the
        overall one (``product`` None, or a policy chosen for the whole mix)."""
        if product is None or not self.products:
            return self
        if product not in self.products:
            raise ConfigError(f"product {product!r} has no operating point in this model's policy (it has "
                              f"{', '.join(sorted(self.products))}){close_matches(product, list(self.products))}; "
                              "name one of those, or choose the policy again on val data that has it")
        p = self.products[product]
        drift = dict(drift_edges=p.drift_edges, drift_expected=p.drift_expected) if p.drift_expected else {}
        return dataclasses.replace(self, pass_below=p.pass_below, reject_at=p.reject_at, val=p.val, products={},
                                   **drift)

    def score(self, probabilities: np.ndarray) -> np.ndarray:
        """The "not OK" score of softmax rows (N x classes): the positive classes' total probability."""
        return not_ok_score(probabilities, self.class_names, self.positive)

    def decide(self, scores: np.ndarray | float, products: list[str | None] | None = None) -> np.ndarray:
        """'pass', 'review' or 'reject' for each score; ``products`` (one a score) picks each part's own operating
        point, a part of no product or of one the policy does not know taking the overall one."""
        s = np.asarray(scores, dtype=np.float64)
        if products is None or not self.products:
            return _decide(s, self.pass_below, self.reject_at)
        lo = np.array([self.products[p].pass_below if p in self.products else self.pass_below for p in products])
        hi = np.array([self.products[p].reject_at if p in self.products else self.reject_at for p in products])
        return _decide(s, lo, hi)

    def drift(self, scores: np.ndarray) -> float:
        """Population stability index of ``scores`` against the val scores the policy was chosen on."""
        return psi(self.drift_expected, bin_counts(self.drift_edges, scores))

    def outcome(self, positive: np.ndarray, scores: np.ndarray, products: list[str | None] | None = None) -> Outcome:
        return outcome(np.asarray(positive, dtype=bool), self.decide(scores, products))

    def text(self) -> str:
        band = (f", review {self.pass_below:.4f}-{self.reject_at:.4f}" if self.has_review else "")
        v = self.val
        text = (f"not OK = {' + '.join(self.positive)}; reject at score >= {self.reject_at:.4f}{band} "
                f"({self.rule.text()}, chosen on {self.chosen_on}: recall {v.recall * 100:.1f}%, false reject "
                f"{v.false_reject * 100:.1f}%{f', review {v.review_rate * 100:.1f}%' if self.has_review else ''})")
        if self.scored_with:
            text += f"; chosen on {self.scored_with}'s scores: the model runs there"
        for name, p in sorted(self.products.items()):
            text += (f"; {name}: reject at >= {p.reject_at:.4f} (recall {p.val.recall * 100:.1f}%, false reject "
                     f"{p.val.false_reject * 100:.1f}% of {p.val.n_positive} + {p.val.n_negative} val parts)")
        return text

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "extra.decision") -> "Policy":
        from edgeft.errors import ArtifactError

        p = _from_dict(cls, d, where)
        try:
            p = dataclasses.replace(p, rule=Rule.from_dict(p.rule, f"{where}.rule"),
                                    val=Outcome.from_dict(p.val, f"{where}.val"),
                                    products={k: _point(v, f"{where}.products.{k}") for k, v in p.products.items()})
        except ConfigError as e:
            raise ArtifactError(f"{where} is not a decision policy this edgeft reads ({e}); choose it again with "
                                "`edgeft decide`") from None
        unknown = [c for c in p.positive if c not in p.class_names]
        if unknown or len(p.drift_edges) + 1 != len(p.drift_expected):
            raise ArtifactError(f"{where} is damaged (positive {unknown} not among its classes, or its drift bins do "
                                "not add up); choose it again with `edgeft decide`")
        return p


def _point(d: Any, where: str) -> Point:
    p = Point.from_dict(d, where)
    return dataclasses.replace(p, val=Outcome.from_dict(p.val, f"{where}.val"))


def _decide(scores: np.ndarray | float, pass_below: Any, reject_at: Any) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return np.where(s < pass_below, "pass", np.where(s >= reject_at, "reject", "review"))


def outcome(positive: np.ndarray, decisions: np.ndarray) -> Outcome:
    y, d = np.asarray(positive, dtype=bool), np.asarray(decisions)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    escapes = int((y & (d == "pass")).sum())
    false_rejects = int((~y & (d == "reject")).sum())
    reviewed = int((d == "review").sum())
    return Outcome(n_positive=n_pos, n_negative=n_neg, recall=1.0 - escapes / max(1, n_pos),
                   false_reject=false_rejects / max(1, n_neg), review_rate=reviewed / max(1, len(d)),
                   escapes=escapes, false_rejects=false_rejects, reviewed=reviewed)


def _between(upper: float, lower: float) -> float:
    """A threshold between two adjacent distinct scores: the same decisions on this split, a margin on others."""
    if not math.isfinite(upper):
        return float(np.nextafter(lower, np.inf))
    return float((upper + lower) / 2) if math.isfinite(lower) else float(np.nextafter(upper, -np.inf))


def choose(rule: Rule, labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], positive: list[str],
           split: str = "val", products: list[str | None] | None = None) -> Policy:
    """The policy ``rule`` asks for, chosen on one labelled split (val): softmax ``probabilities`` (N x classes)
    and integer ``labels``. Refuses a split without both kinds of parts and a rule no threshold meets."""
    y, score = labelled_not_ok(labels, probabilities, class_names, positive, f"the {split} split")
    return choose_on_scores(rule, y, score, class_names, positive, split, products)


def choose_on_scores(rule: Rule, y: np.ndarray, score: np.ndarray, class_names: list[str], positive: list[str],
                     split: str = "val", products: list[str | None] | None = None) -> Policy:
    """The policy ``rule`` asks for on parts' "not OK" scores (``y``: which parts are not OK), however the task
    scores a part (a classifier: the positive classes' probability; a detector: its best defect box). With
    ``rule.by_product``, ``products`` names each part's product and every product named gets its own point."""
    y, score = np.asarray(y, dtype=bool), np.asarray(score, dtype=np.float64)
    pass_below, reject_at = _thresholds(rule, y, score, f"the {split} split", positive)
    policy = Policy(positive=list(positive), class_names=list(class_names), pass_below=pass_below, reject_at=reject_at,
                    rule=rule, chosen_on=split, val=outcome(y, _decide(score, pass_below, reject_at)),
                    **_drift_bins(score))
    if not rule.by_product:
        return policy
    named = sorted({p for p in (products or []) if p is not None})
    if not named:
        raise DataError(f"decision.by_product: the {split} split names no products; name each image's product in "
                        "the data folder's products.csv (pattern,product) or a manifest's product column, or drop "
                        "by_product")
    points = {}
    for name in named:
        m = np.array([p == name for p in products], dtype=bool)
        lo, hi = _thresholds(rule, y[m], score[m], f"the {split} split's {name} parts", positive)
        points[name] = Point(pass_below=lo, reject_at=hi, val=outcome(y[m], _decide(score[m], lo, hi)),
                             **_drift_bins(score[m]))
    policy = dataclasses.replace(policy, products=points)
    return dataclasses.replace(policy, val=policy.outcome(y, score, products))


def _drift_bins(score: np.ndarray) -> dict[str, list[float]]:
    """The val score distribution in ten bins (their inner edges and val's share in each), for :func:`psi`."""
    edges = np.unique(np.quantile(score, np.linspace(0, 1, DRIFT_BINS + 1)[1:-1]))
    return {"drift_edges": [float(e) for e in edges],
            "drift_expected": [float(e) for e in bin_counts(edges, score) / len(score)]}


def _thresholds(rule: Rule, y: np.ndarray, score: np.ndarray, split: str, positive: list[str]) -> tuple[float, float]:
    """(pass_below, reject_at) that ``rule`` chooses on these parts (``split`` names them in an error)."""
    if y.all() or not y.any():
        raise DataError(f"{split} has {'no' if not y.any() else 'only'} {'/'.join(positive)} parts: operating points "
                        "and thresholds are undefined on it; use data with both kinds of parts")
    fr, rec, thr = roc_curve(y, score)  # thr descending; point i rejects every score >= thr[i]
    distinct = np.r_[thr[1:], -np.inf]  # the next lower score after each point, for a threshold between the two
    if rule.escape_cost is not None:
        cost = rule.escape_cost * (1 - rec) * y.sum() + rule.false_reject_cost * fr * (~y).sum()
        i = int(np.argmin(cost))
    elif rule.target_recall is not None:
        i = int(np.nonzero(rec >= rule.target_recall - 1e-12)[0][0])
        if rule.max_false_reject is not None and fr[i] > rule.max_false_reject + 1e-12:
            raise DataError(f"decision: no threshold catches {rule.target_recall * 100:g}% of {split}'s "
                            f"defective parts with at most {rule.max_false_reject * 100:g}% false rejects (it takes "
                            f"{fr[i] * 100:.1f}%); lower target_recall, raise max_false_reject, or improve the model")
    else:
        i = int(np.nonzero(fr <= rule.max_false_reject + 1e-12)[0][-1])
        if rec[i] == 0:
            raise DataError(f"decision: no threshold catches any defective part of {split} with at most "
                            f"{rule.max_false_reject * 100:g}% false rejects; raise max_false_reject")
    pass_below = _between(thr[i], distinct[i]) if i > 0 else float(np.nextafter(thr[1], np.inf))
    reject_at = pass_below
    if rule.review_budget is not None:
        # the band: from the pass line up, as far as the budget allows (the least certain not-passed parts)
        above = np.sort(score[score >= pass_below])
        k = int(math.floor(rule.review_budget * len(score) + 1e-9))
        if k > 0 and len(above):
            upper = above[k] if k < len(above) else np.inf
            lower = above[k - 1]
            reject_at = _between(upper, lower) if upper > lower else float(lower)
    return pass_below, max(reject_at, pass_below)


def choose_for_anomaly(rule: Rule, anomalous: np.ndarray, scores: np.ndarray, good: str,
                       split: str = "val") -> Policy:
    """The policy ``rule`` asks for on an anomaly model's scores (larger: less like the good parts)."""
    from edgeft.metrics import ANOMALOUS, anomaly_columns

    return choose(rule, np.asarray(anomalous).astype(np.int64), anomaly_columns(scores), [good, ANOMALOUS],
                  [ANOMALOUS], split)


def bin_counts(edges: list[float] | np.ndarray, scores: np.ndarray) -> np.ndarray:
    """How many scores fall in each bin of the inner ``edges`` (len(edges) + 1 bins; an edge opens its bin)."""
    return np.bincount(np.searchsorted(edges, np.asarray(scores, dtype=np.float64), side="right"),
                       minlength=len(edges) + 1)


def psi(expected: list[float] | np.ndarray, observed_counts: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index of observed bin counts against expected shares: sum (o - e) ln(o / e)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    n = max(1, int(np.sum(observed_counts)))
    o = np.maximum(np.asarray(observed_counts, dtype=np.float64) / n, floor)
    return float(np.sum((o - e) * np.log(o / e)))


def read_policy(extra: dict[str, Any], where: str = "extra.decision") -> Policy | None:
    """The policy an artifact's ``extra`` carries, or None."""
    d = extra.get("decision")
    return None if d is None else Policy.from_dict(d, where)
