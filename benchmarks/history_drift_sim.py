"""The history's drift check (edgeft.history.drift) on simulated series; prints JSON.

    python benchmarks/history_drift_sim.py [--series 400] [--min-change 0.03] [--z 3]

Per noise level sigma (log-normal, relative spread a point; seeded numpy): 10 reference points then
  * ten commits each 3% slower than the last: the first slower commit flagged (the check runs after every commit);
  * one step of +5% held for 5 commits: flagged at the 3rd slower commit (the first the last-3 median can show it);
  * a flat series of 30 points judged after every commit from the 13th: the share with any false alarm.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from edgeft.history.drift import MIN_CHANGE, Z, check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=400)
    ap.add_argument("--min-change", type=float, default=MIN_CHANGE)
    ap.add_argument("--z", type=float, default=Z)
    a = ap.parse_args()
    judge = lambda v: check(v, min_change=a.min_change, z=a.z).flagged  # noqa: E731
    out = []
    for sigma in (0.01, 0.02, 0.03):
        firsts, step5, alarms = [], 0, 0
        for s in range(a.series):
            rng = np.random.default_rng(s)
            v, level, first = list(np.exp(rng.normal(0, sigma, 10))), 1.0, None
            for k in range(1, 11):
                level *= 1.03
                v.append(level * math.exp(rng.normal(0, sigma)))
                if first is None and len(v) >= 13 and judge(v):
                    first = k
            firsts.append(first or 0)
            rng = np.random.default_rng(10_000 + s)
            step = np.concatenate([np.exp(rng.normal(0, sigma, 10)), 1.05 * np.exp(rng.normal(0, sigma, 3))])
            step5 += judge(step)
            flat = np.exp(np.random.default_rng(1000 + s).normal(0, sigma, 30))
            alarms += any(judge(flat[:n]) for n in range(13, 31))
        f = np.array(firsts)
        out.append({"sigma": sigma, "series": a.series,
                    "steps_3pct_first_flagged": {str(k): int(np.sum(f == k)) for k in range(1, 11) if np.sum(f == k)},
                    "steps_3pct_never": int(np.sum(f == 0)), "step_5pct_flagged_at_3rd": step5,
                    "flat_series_with_a_false_alarm": alarms})
    print(json.dumps({"min_change": a.min_change, "z": a.z, "results": out}, indent=1))


if __name__ == "__main__":
    main()
