"""The change detector over a series: a cumulative slowdown that every per-change gate passed.

Method (a step test against a fixed reference, on logarithms so a change is a ratio): the reference level is the
median of the series' first ``reference`` points (or of those since a point the user accepted); the current level
is the median of the last ``recent`` points. The noise is estimated from the reference points themselves: the larger
of their logarithms' standard deviation and 1.4826 x their median absolute deviation (the host's own run-to-run
spread; ten points' MAD alone often reads a noisy host as a quiet one). A series is flagged when the current level
exceeds the reference by more than ``min_change`` and by more than ``z`` standard errors of the difference of the two
medians (a median's standard error is 1.2533 sigma / sqrt(n)). A fixed
reference is what catches a slow drift: a sliding one moves with it and never sees ten 3% steps. Lower-is-better
metrics (latency) flag a rise, higher-is-better ones (throughput, accuracy) a fall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_CHANGE = 0.03  # the smallest change ever flagged; above it the series' own noise decides (docs/experiments.md)
Z = 3.0  # standard errors of the difference of the two medians a change must exceed
HIGHER_IS_BETTER = ("throughput_ips", "accuracy", "balanced_accuracy", "auroc", "recall", "map", "map50",
                    "average_precision")


def higher_is_better(metric: str) -> bool:
    """Whether a rise of ``metric`` (its last dotted part: test.decisions.auroc is an AUROC) is an improvement."""
    return metric.rsplit(".", 1)[-1] in HIGHER_IS_BETTER


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    change: float | None  # current / reference - 1 (None: too few points)
    threshold: float | None  # the change it takes to flag, given the noise
    noise: float | None  # sigma of one point, relative
    at: int | None  # index of the first point whose window flagged (scanning point by point; may have recovered)
    reason: str


def check(values: list[float] | np.ndarray, metric: str = "p50_ms", reference: int = 10, recent: int = 3,
          min_change: float = MIN_CHANGE, z: float = Z) -> Verdict:
    """Whether the series' latest ``recent`` points have moved away from its first ``reference`` ones."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < reference + recent or np.any(v <= 0):
        return Verdict(False, None, None, None, None,
                       f"{len(v)} points: a verdict needs {reference + recent} ({reference} reference, {recent} recent)")
    logs = np.log(v)
    sign = -1.0 if higher_is_better(metric) else 1.0
    ref = logs[:reference]
    sigma = max(1.4826 * float(np.median(np.abs(ref - np.median(ref)))), float(np.std(ref, ddof=1)), 1e-6)
    se = 1.2533 * sigma * math.sqrt(1 / reference + 1 / recent)
    limit = max(math.log1p(min_change), z * se)
    first = None
    for end in range(reference + recent, len(v) + 1):
        d = sign * (float(np.median(logs[end - recent:end])) - float(np.median(ref)))
        if d > limit:
            first = end - 1
            break
    d = sign * (float(np.median(logs[-recent:])) - float(np.median(ref)))
    change = math.expm1(sign * d)
    flagged = d > limit
    worse = "slower" if sign > 0 else "lower"
    reason = (f"the last {recent} points' median is {abs(change) * 100:.1f}% {'above' if change > 0 else 'below'} the "
              f"first {reference}'s; flagging takes {math.expm1(limit) * 100:.1f}% {worse} (noise {sigma * 100:.1f}% a "
              f"point, z {z:g}, at least {min_change * 100:g}%)")
    return Verdict(flagged, change, math.expm1(limit), sigma, first, reason)
