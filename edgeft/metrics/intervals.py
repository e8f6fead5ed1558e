"""Intervals of measured proportions (ground floor, standard library and numpy): how far a recall or a false-reject
rate measured on a few hundred parts may lie from the line's true rate. No other metrics module is imported here, so
records and scores can both use it."""

from __future__ import annotations

import numpy as np


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (a recall, a false-reject rate): where a share measured on
    ``n`` parts may lie. On 123 defective cells one cell is 0.8 points, and the interval says how far that goes;
    unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n. (nan, nan) for n = 0."""
    from statistics import NormalDist

    if n <= 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))
    return float(lo), float(hi)
