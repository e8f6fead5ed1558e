"""``edgeft history plot``: each series as an SVG line chart (points in commit order, the reference level, the level
that would flag, the recent window), and one self-contained HTML page with every chart and the table beside it."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from edgeft.history.drift import Verdict, higher_is_better
from edgeft.history.series import Series
from edgeft.svg import Axes


def series_svg(s: Series, v: Verdict, reference: int = 10, recent: int = 3, width: int = 640,
               height: int = 300) -> str:
    """One series: its points, the reference median (grey), the flag level (dashed) and the recent points (red when
    the series is flagged)."""
    vals = np.asarray(s.values, dtype=np.float64)
    ref = float(np.median(vals[:reference])) if len(vals) else 0.0
    limit = None
    if v.threshold is not None:
        limit = ref / (1 + v.threshold) if higher_is_better(s.metric) else ref * (1 + v.threshold)
    lo = min(float(vals.min()), limit or math.inf, ref) if len(vals) else 0.0
    hi = max(float(vals.max()), limit or -math.inf, ref) if len(vals) else 1.0
    pad = (hi - lo) * 0.1 or abs(hi) * 0.05 or 1.0
    ax = Axes(width, height, 0, max(1, len(vals) - 1), lo - pad, hi + pad)
    parts = ax.frame("point (oldest first)", f"{s.metric}", grid=True)
    parts.append(f'<line x1="{ax.sx(0):.1f}" y1="{ax.sy(ref):.1f}" x2="{ax.sx(len(vals) - 1):.1f}" '
                 f'y2="{ax.sy(ref):.1f}" stroke="#999"/>')
    if limit is not None:
        parts.append(f'<line x1="{ax.sx(0):.1f}" y1="{ax.sy(limit):.1f}" x2="{ax.sx(len(vals) - 1):.1f}" '
                     f'y2="{ax.sy(limit):.1f}" stroke="#d62728" stroke-dasharray="5,4"/>')
        parts.append(ax.label(ax.sx(0), ax.sy(limit), "flags beyond"))
    pts = " ".join(f"{ax.sx(i):.1f},{ax.sy(x):.1f}" for i, x in enumerate(vals))
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4"/>')
    for i, x in enumerate(vals):
        late = i >= len(vals) - recent
        colour = "#d62728" if (late and v.flagged) else ("#999" if i < reference else "#1f77b4")
        tip = html.escape(f"{s.rows[i].commit[:12]}: {x:.4g}")
        parts.append(f'<circle cx="{ax.sx(i):.1f}" cy="{ax.sy(x):.1f}" r="3" fill="{colour}"><title>{tip}</title>'
                     '</circle>')
    parts.append("</svg>")
    return "\n".join(parts)


def page(verdicts: list[tuple[Series, Verdict]], reference: int, recent: int) -> str:
    """The HTML page: per series a heading, its verdict and its chart."""
    body = []
    for s, v in verdicts:
        flag = "DRIFT" if v.flagged else "ok"
        body.append(f"<h2>{html.escape(flag)}: {html.escape(s.title())}</h2>")
        body.append(f"<p>{len(s.rows)} points, from {html.escape(s.rows[0].commit[:12])} to "
                    f"{html.escape(s.rows[-1].commit[:12])}. {html.escape(v.reason)}.</p>")
        body.append(series_svg(s, v, reference, recent))
    method = ("The reference level is the median of a series' first points; the current level the median of its "
              "last; a series is flagged when the current level is beyond the reference by more than the minimum "
              "change and by more than z standard errors of the two medians' difference (noise from the reference "
              "points' spread). Grey: reference points; red: the recent points of a flagged series.")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>edgeft history</title></head>"
            "<body style='font-family:sans-serif;max-width:720px'><h1>Results history</h1>"
            f"<p>{html.escape(method)}</p>" + "\n".join(body) + "</body></html>\n")


def write(verdicts: list[tuple[Series, Verdict]], out: Path, reference: int, recent: int) -> Path:
    """``out`` (an .html file, written atomically)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page(verdicts, reference, recent))
    tmp.replace(out)
    return out
