"""The promotion rule (a recipe's ``promote:`` section, or ``edgeft promote --rule FILE``): when a candidate model
replaces the deployed one.

A relative bound is on a difference, candidate minus deployed, measured on one slice of parts: the candidate at its
operating point (chosen on val by the line's decision rule), the deployed model as it runs today (its own policy; the
alternative to promoting is keeping it as it is): recall and false-reject rate in percentage points, AUROC in its own
unit. An absolute bound (``min_recall``, ``max_false_reject``) is on the candidate's own rate, the line's requirement
whatever the deployed model did (a model that rejects nearly every part of a new kind has nearly 100% recall on it,
and "recall not lower" would admit only another such model). A bound is **met** when the whole paired-bootstrap interval of the difference lies on its good side, **missed**
when the measured difference itself lies on the bad side, and **inconclusive** in between (the candidate looks good
enough, but the slice has too few parts to be sure). The candidate is promoted when every bound is met, kept out when
one is missed, and the verdict is inconclusive otherwise, with how many more parts would settle it.

Two slices: ``test``, the old test split, frozen since the deployed model was made (did the candidate forget
anything?), and ``new-test``, the station's new parts that no model trained on (does it handle the line as it is
now?); latency is judged by the paired gate (:mod:`edgeft.bench.gate`) on the deployed model's runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgeft.errors import ConfigError, close_matches
from edgeft.settings import section

SLICES = ("test", "new-test")  # the frozen old test split; the new parts (edgeft.data.collect.NEW_TEST)
METRICS = ("recall", "false_reject", "auroc")  # what a bound may name: a classifier's per-part numbers


@dataclass(frozen=True)
class Bound:
    """One bound of the rule: ``candidate - deployed`` of ``metric`` on ``slice`` (with ``absolute``, the candidate's
    own rate) must be ``>= value`` (``sense`` ``>=``) or ``<= value``; ``value`` in the metric's own unit (a fraction
    for recall and false reject)."""

    slice: str
    field: str  # the rule's field, e.g. min_false_reject_drop_pp
    metric: str
    sense: str  # ">=" or "<="
    value: float
    strict: bool = False  # a gain (min_..._pp): the change must lie beyond the value, not on it (no change, no gain)
    absolute: bool = False  # on the candidate's own rate (its Wilson interval), not on the change

    def text(self) -> str:
        unit = 100.0 if self.metric != "auroc" else 1.0
        word = {"recall": "recall", "false_reject": "false reject", "auroc": "AUROC"}[self.metric]
        if self.absolute:
            return f"{self.slice}: candidate's {word} {self.sense} {self.value * 100:g}% ({self.field})"
        pp = " pp" if self.metric != "auroc" else ""
        sense = self.sense.rstrip("=") if self.strict else self.sense
        return f"{self.slice}: {word} change {sense} {self.value * unit:+g}{pp} ({self.field})"

    def good(self, d: float) -> bool:
        """Whether a change ``d`` lies on the bound's good side."""
        eps = -1e-12 if self.strict else 1e-12
        return d >= self.value - eps if self.sense == ">=" else d <= self.value + eps


@dataclass
class SliceBounds:
    """The bounds on one slice; pp = percentage points, each a change candidate minus deployed."""

    max_recall_drop_pp: float | None = None  # recall at most this much lower (0: not lower)
    min_recall_gain_pp: float | None = None  # recall at least this much higher
    max_false_reject_rise_pp: float | None = None  # false rejects at most this much higher
    min_false_reject_drop_pp: float | None = None  # false rejects at least this much lower (0: lower at all)
    max_auroc_drop: float | None = None  # AUROC at most this much lower (0.01 = one hundredth)
    min_auroc_gain: float | None = None  # AUROC at least this much higher
    min_recall: float | None = None  # the candidate catches at least this share of the defective parts (0.9 = 90%)
    max_false_reject: float | None = None  # the candidate rejects at most this share of the good parts

    def bounds(self, slice_name: str) -> list[Bound]:
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name in ABSOLUTE:
                if not 0 < v < 1:
                    raise ConfigError(f"promote.{slice_name}.{f.name} must be a share between 0 and 1 (0.9 = 90%), "
                                      f"got {v:g}")
                metric, sense = ABSOLUTE[f.name]
                out.append(Bound(slice_name, f.name, metric, sense, float(v), absolute=True))
                continue
            if v < 0:
                raise ConfigError(f"promote.{slice_name}.{f.name} must be >= 0 (a size of change), got {v:g}")
            metric, sense, sign, scale = BOUNDS[f.name]
            out.append(Bound(slice_name, f.name, metric, sense, sign * v / scale + 0.0,  # + 0.0: no "-0" in the text
                             strict=f.name.startswith("min_")))
        return out


# field -> (metric, which side of the bound is good, the change's sign, the field's unit per metric unit)
BOUNDS = {"max_recall_drop_pp": ("recall", ">=", -1, 100.0), "min_recall_gain_pp": ("recall", ">=", 1, 100.0),
          "max_false_reject_rise_pp": ("false_reject", "<=", 1, 100.0),
          "min_false_reject_drop_pp": ("false_reject", "<=", -1, 100.0),
          "max_auroc_drop": ("auroc", ">=", -1, 1.0), "min_auroc_gain": ("auroc", ">=", 1, 1.0)}
ABSOLUTE = {"min_recall": ("recall", ">="), "max_false_reject": ("false_reject", "<=")}  # the candidate's own rates


@dataclass
class PromoteRule:
    """When a candidate replaces the deployed model; the defaults are a line's usual caution: on the new parts it
    must reject fewer good parts and catch as many defective ones (within 2 points); on the frozen old test it may
    lose at most 3 points of recall and add at most 3 points of false rejects; it may be at most 10% slower."""

    test: SliceBounds = field(default_factory=lambda: SliceBounds(max_recall_drop_pp=3.0,
                                                                  max_false_reject_rise_pp=3.0))
    new_test: SliceBounds = field(default_factory=lambda: SliceBounds(max_recall_drop_pp=2.0,
                                                                      min_false_reject_drop_pp=0.0))
    max_latency_regression: float | None = 0.10  # the paired gate's limit (None: latency not judged)
    latency_backend: str = "ort-cpu"
    latency_time_cap_s: float = 60.0
    level: float = 0.95  # of the paired bootstrap's intervals
    resamples: int = 2000
    seed: int = 0
    into: str | None = None  # a model directory the station watches: a promoted model becomes its next version
    also: dict[str, str] = field(default_factory=dict)  # NAME: labelled folder (class subfolders), reported, not judged

    def bounds(self) -> list[Bound]:
        return self.test.bounds("test") + self.new_test.bounds("new-test")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["new-test"] = d.pop("new_test")
        return d


def parse(d: Any, where: str = "promote") -> PromoteRule:
    """A :class:`PromoteRule` from a mapping (a recipe's ``promote:`` section), every key and value checked."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping of option: value, got {type(d).__name__}")
    d = dict(d)
    slices: dict[str, SliceBounds] = {}
    for name in SLICES:
        if name in d:
            sub = d.pop(name)
            slices[name.replace("-", "_")] = section(SliceBounds, sub or {}, f"{where}.{name}")
    for key in d:
        if key in ("new_test", "newtest"):
            raise ConfigError(f"{where}.{key}: the new parts' slice is spelled new-test")
        if isinstance(d[key], dict) and key != "also":
            metrics_hint = "; a bound names recall, false_reject or auroc" if key in ("map", "accuracy") else ""
            raise ConfigError(f"{where}.{key}: slices are {', '.join(SLICES)}{close_matches(str(key), SLICES)}"
                              f"{metrics_hint}")
    rule = section(PromoteRule, d, where)
    for k, v in slices.items():
        setattr(rule, k, v)
    if rule.max_latency_regression is not None and not 0 < rule.max_latency_regression < 10:
        raise ConfigError(f"{where}.max_latency_regression must be a fraction like 0.10 (10% slower at most), got "
                          f"{rule.max_latency_regression}; null: latency not judged")
    if not 0.5 < rule.level < 1:
        raise ConfigError(f"{where}.level must be between 0.5 and 1 (0.95: 95% intervals), got {rule.level}")
    if rule.resamples < 200:
        raise ConfigError(f"{where}.resamples must be >= 200 (the intervals' tails need them), got {rule.resamples}")
    if not isinstance(rule.also, dict) or not all(isinstance(v, str) for v in rule.also.values()):
        raise ConfigError(f"{where}.also must map a name to a labelled folder, e.g. also: {{golden: data/golden}}")
    taken = [k for k in rule.also if k in ("val", *SLICES)]
    if taken:
        raise ConfigError(f"{where}.also.{taken[0]}: the name is taken by the data's own split; call it something else")
    if not rule.bounds() and rule.max_latency_regression is None:
        raise ConfigError(f"{where} states no bound: name at least one, e.g. new-test: {{min_false_reject_drop_pp: "
                          "0}}")
    return rule
