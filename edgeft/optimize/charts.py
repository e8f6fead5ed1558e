"""The report's charts as inline SVG (nothing fetched, so report.html is self-contained): quality against latency
with the Pareto front, the ROC of every model with its operating point, a detector's precision-recall curves, and
the search's candidates, all on one set of axes (:class:`edgeft.svg.Axes`)."""

from __future__ import annotations

import html
from typing import Any

from edgeft.optimize.rows import Row, p50_ms
from edgeft.svg import Axes

ROC_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def quality_name(rows: list[Row]) -> str:
    """What the rows' quality is (the task says: accuracy, AUROC, ...), for the charts' axis and the report."""
    return next((r.quality_name for r in rows if r.quality is not None), "quality")


def pareto_svg(rows: list[Row], width: int = 640, height: int = 380) -> str:
    """Each model's quality (its task's number: accuracy, AUROC, ...) against p50 latency for every (model, backend) at
    batch 1; the Pareto front joined."""
    pts = [(p50_ms(b), r.quality * 100, f"{r.step} {k[:-2]}") for r in rows if r.quality is not None
           for k, b in r.latency.items() if k.endswith("@1") and b["status"] == "ok"]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    ax = Axes(width, height, 0.0, max(xs) * 1.1, min(ys) - 2, max(ys) + 2)
    front, best = [], -1e300
    for p in sorted(pts):
        if p[1] > best:
            front.append(p)
            best = p[1]
    parts = ax.frame("p50 latency, batch 1 (ms)", f"{quality_name(rows)} (x 100)", grid=True)
    if len(front) > 1:
        parts.append('<polyline fill="none" stroke="#2a7" stroke-width="1.5" stroke-dasharray="4 3" points="'
                     + " ".join(f"{ax.sx(x):.1f},{ax.sy(y):.1f}" for x, y, _ in front) + '"/>')
    for x, y, label in pts:
        on_front = any(p[2] == label for p in front)
        parts.append(f'<circle cx="{ax.sx(x):.1f}" cy="{ax.sy(y):.1f}" r="4" fill="{"#2a7" if on_front else "#888"}"/>')
        parts.append(ax.label(ax.sx(x), ax.sy(y), label))
    parts.append("</svg>")
    return "\n".join(parts)


def roc_svg(rows: list[Row], size: int = 380) -> str:
    """The ROC curve of every model on the held-out split, overlaid, each model's operating point (its policy's
    recall and false reject there) marked with a dot."""
    curves = [r for r in rows if r.decisions and r.decisions.roc]
    if not curves:
        return ""
    ax = Axes(size, size, 0.0, 1.0, 0.0, 1.0, margins=(45, 10, 10, 45))
    parts = ax.frame("false-reject rate (good parts)", "recall (defective parts caught)", extra_width=260)
    parts.append(f'<line x1="{ax.sx(0)}" y1="{ax.sy(0)}" x2="{ax.sx(1)}" y2="{ax.sy(1)}" stroke="#ddd" '
                 'stroke-dasharray="3 3"/>')
    for i, r in enumerate(curves):
        c = ROC_COLOURS[i % len(ROC_COLOURS)]
        d = r.decisions
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                     + " ".join(f"{ax.sx(f):.1f},{ax.sy(t):.1f}" for f, t in d.roc) + '"/>')
        if r.policy:
            parts.append(f'<circle cx="{ax.sx(r.policy.false_reject):.1f}" cy="{ax.sy(r.policy.recall):.1f}" r="4" '
                         f'fill="{c}"/>')
        y = 20 + i * 16
        parts.append(f'<rect x="{size + 5}" y="{y - 9}" width="10" height="10" fill="{c}"/>')
        parts.append(f'<text x="{size + 20}" y="{y}">{html.escape(f"{r.step} AUROC {d.auroc:.3f}")}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def pr_svg(rows: list[Row], size: int = 380) -> str:
    """A detector's precision against recall on the held-out split, one colour per model: at IoU .5 dashed, and
    averaged over IoU .50:.95 solid (the area under that one is mAP@[.5:.95]); from the task's record's ``pr``."""
    curves = [r for r in rows if isinstance(r.task_metrics, dict) and r.task_metrics.get("pr")]
    if not curves:
        return ""
    ax = Axes(size, size, 0.0, 1.0, 0.0, 1.0, margins=(45, 10, 10, 45))
    parts = ax.frame("recall (true boxes found)", "precision (boxes that are right)", extra_width=300)
    for i, r in enumerate(curves):
        c = ROC_COLOURS[i % len(ROC_COLOURS)]
        pr = r.task_metrics["pr"]
        for key, dash in (("iou50", ' stroke-dasharray="4 3"'), ("iou50_95", "")):
            ys = pr[key]
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5"{dash} points="'
                         + " ".join(f"{ax.sx(k / (len(ys) - 1)):.1f},{ax.sy(v):.1f}" for k, v in enumerate(ys))
                         + '"/>')
        y = 20 + i * 16
        text = f"{r.step} mAP {r.task_metrics['map']:.3f}, mAP@.5 {r.task_metrics['map50']:.3f}"
        parts.append(f'<rect x="{size + 5}" y="{y - 9}" width="10" height="10" fill="{c}"/>')
        parts.append(f'<text x="{size + 20}" y="{y}">{html.escape(text)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def search_svg(result: dict[str, Any], width: int = 560, height: int = 320) -> str:
    """Val accuracy against paired speed-up (each candidate on its runtime, against the fine-tuned FP32 ONNX model on
    ONNX Runtime in the same rounds) for every candidate paid for; the shipped one ringed, the fine-tuned model's val
    accuracy dashed."""
    import statistics

    pts = [(statistics.median(c["speedups"]), c["val"]["accuracy"] * 100, c["key"]) for c in result["candidates"]
           if c.get("val") and c.get("speedups")]
    if not pts:
        return ""
    base_acc = result["baseline_val"]["accuracy"] * 100
    ys = [p[1] for p in pts] + [base_acc]
    ax = Axes(width, height, 0.0, max(p[0] for p in pts) * 1.15, min(ys) - 2, max(ys) + 2)
    parts = ax.frame("speed-up vs fine-tuned FP32 on ort-cpu, batch 1 (x)", "val accuracy (%)")
    _, mr, _, _ = ax.margins
    parts += [f'<line x1="{ax.margins[0]}" y1="{ax.sy(base_acc):.1f}" x2="{width - mr}" y2="{ax.sy(base_acc):.1f}" '
              'stroke="#999" stroke-dasharray="4 3"/>', ax.label(width - mr - 80, ax.sy(base_acc), "fine-tuned (val)")]
    for x, y, label in pts:
        shipped = label == result["chosen"]
        parts.append(f'<circle cx="{ax.sx(x):.1f}" cy="{ax.sy(y):.1f}" r="4" fill="{"#2a7" if shipped else "#888"}"/>')
        if shipped:
            parts.append(f'<circle cx="{ax.sx(x):.1f}" cy="{ax.sy(y):.1f}" r="8" fill="none" stroke="#2a7" '
                         'stroke-width="2"/>')
        parts.append(ax.label(ax.sx(x), ax.sy(y), label + (" (shipped)" if shipped else "")))
    parts.append("</svg>")
    return "\n".join(parts)


LOSS_KEYS = ("train_loss", "val_loss", "distill_loss")


def training_svg(history: list[dict[str, Any]], width: int = 320, height: int = 210) -> str:
    """One training's curves from its epoch history: the losses on the left, the val metrics (accuracy, AUROC, mAP,
    each in [0, 1]) on the right, the best epoch's marker where the record says so."""
    if not history:
        return ""
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    losses = {k: [h.get(k) for h in history] for k in LOSS_KEYS if any(h.get(k) is not None for h in history)}
    quality = {k: [h.get(k) for h in history] for k in history[0] if k.startswith("val_") and k not in LOSS_KEYS
               and all(isinstance(h.get(k), (int, float)) for h in history)}
    panels = []
    for offset, (title, series) in enumerate((("loss", losses), ("val", quality))):
        values = [v for vs in series.values() for v in vs if v is not None]
        if not values:
            continue
        lo, hi = (0.0, 1.0) if title == "val" else (0.0, max(values) * 1.1)
        ax = Axes(width, height, min(epochs), max(max(epochs), min(epochs) + 1), lo, hi,
                  margins=(45, 10, 10, 40))
        parts = ax.frame("epoch", title, grid=True, ticks=4)[1:]  # the panel's axes, without the SVG's opening
        for i, (name, vs) in enumerate(series.items()):
            colour = ROC_COLOURS[i % len(ROC_COLOURS)]
            pts = " ".join(f"{ax.sx(e):.1f},{ax.sy(v):.1f}" for e, v in zip(epochs, vs) if v is not None)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}"/>')
            parts.append(f'<text x="{width - 12}" y="{22 + 13 * i}" text-anchor="end" fill="{colour}">'
                         f'{html.escape(name)}</text>')
        panels.append(f'<g transform="translate({offset * width},0)">' + "\n".join(parts) + "</g>")
    if not panels:
        return ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * 2}" height="{height}" font-family="sans-serif" '
            'font-size="11"><rect width="100%" height="100%" fill="white"/>' + "\n".join(panels) + "</svg>")
