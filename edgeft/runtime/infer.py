"""``edgeft infer``: a model over a source of frames, one JSON line per frame.

Each line names the source by its redacted name (``edgeft.redact``), never by a URL with credentials; with
``metrics``, every frame is also counted for the line supervisor's endpoint (``edgeft.runtime.monitor``)."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import IO, Iterable

from edgeft.redact import Source
from edgeft.runtime.monitor import LineMetrics
from edgeft.runtime.predictor import Predictor
from edgeft.runtime.sources import Frame, SourceStats, frames


def _batches(it: Iterable[Frame], size: int) -> Iterable[list[Frame]]:
    batch: list[Frame] = []
    for f in it:
        batch.append(f)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_drawing(predictor: Predictor, f: Frame, p, folder: Path) -> Path:
    """What the task draws over the frame (an anomaly model's heatmap, a detector's boxes), named after its source
    and frame number
    (``cell0001-000000.png``)."""
    from edgeft.images import write_image

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(f.source.split("?")[0]).stem or "frame")[:80]
    return write_image(folder / f"{stem}-{f.index:06d}.png", predictor.draw(f.image, p))


def run(predictor: Predictor, source: str | Source, out: IO[str], batch: int = 1, queue_size: int = 8,
        max_reconnects: int = 10, max_frames: int | None = None, stop: threading.Event | None = None,
        metrics: LineMetrics | None = None, stats_every: int | None = None,
        stats_out: IO[str] | None = None, heatmaps: str | os.PathLike | None = None) -> SourceStats:
    """Write one JSON line per frame to ``out``; unreadable frames get a line with ``error``. Returns counts.
    With ``metrics`` and ``stats_every`` N, a JSON line of the counters goes to ``stats_out`` (stderr) every N
    frames and at the end: the periodic alternative to the Prometheus endpoint. With ``heatmaps`` (a folder), what
    the model draws over each frame (an anomaly model's heatmap, a detector's boxes) is written there and named in
    its line."""
    stats = SourceStats()
    stop = stop or threading.Event()
    if heatmaps is not None:
        predictor.check_draws()  # a task that draws nothing is refused before any frame is read
        Path(heatmaps).mkdir(parents=True, exist_ok=True)
    try:
        return _run(predictor, source, out, batch, queue_size, max_reconnects, max_frames, stop, metrics, stats,
                    stats_every, stats_out, heatmaps)
    finally:
        if metrics is not None and stats_every:
            print(json.dumps({"stats": metrics.snapshot()}), file=stats_out or sys.stderr, flush=True)


def _run(predictor: Predictor, source: str | Source, out: IO[str], batch: int, queue_size: int, max_reconnects: int,
         max_frames: int | None, stop: threading.Event, metrics: LineMetrics | None, stats: SourceStats,
         stats_every: int | None, stats_out: IO[str] | None = None,
         heatmaps: str | os.PathLike | None = None) -> SourceStats:
    written = 0
    try:
        for group in _batches(frames(source, stats, queue_size, max_reconnects, stop), batch):
            good = [f for f in group if f.image is not None]
            t0 = time.perf_counter()
            preds = predictor.predict([f.image for f in good]) if good else []
            per_frame_ms = (time.perf_counter() - t0) * 1000 / max(1, len(good))
            by_id = {id(f): p for f, p in zip(good, preds)}
            for f in group:
                line = {"source": f.source, "frame": f.index, "timestamp": round(f.timestamp, 6)}
                if f.image is None:
                    line["error"] = f.error
                    if metrics is not None:
                        metrics.record(None, None)
                else:
                    p = by_id[id(f)]
                    line.update(label=p.label, score=round(p.score, 6), probabilities=[round(v, 6) for v in
                                                                                      p.probabilities],
                                latency_ms=round(per_frame_ms, 3), backend=predictor.backend_name)
                    if p.decision is not None:
                        line.update(decision=p.decision, not_ok=round(p.not_ok, 6))
                    line.update(p.extras)  # what the task adds (an anomaly model: where its heatmap peaks)
                    if heatmaps is not None:
                        line["heatmap"] = str(_write_drawing(predictor, f, p, Path(heatmaps)))
                    if metrics is not None:
                        metrics.record(p.label, per_frame_ms, p.decision, p.not_ok, p.extras.get("boxes"))
                out.write(json.dumps(line) + "\n")
                written += 1
                if metrics is not None and stats_every and written % stats_every == 0:
                    print(json.dumps({"stats": metrics.snapshot()}), file=stats_out or sys.stderr, flush=True)
                if max_frames is not None and written >= max_frames:
                    stop.set()
                    return stats
            out.flush()
            if metrics is not None:
                metrics.set_source_counts(stats.dropped, stats.reconnects)
    except KeyboardInterrupt:
        stop.set()
        print("interrupted: stopped cleanly", file=sys.stderr)
    return stats
