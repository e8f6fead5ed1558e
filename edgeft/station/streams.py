"""Several streams through one model (``edgeft infer MODEL cam1 cam2 cam3``): one process, one model session.

Each stream has a reader thread of its own (:func:`edgeft.runtime.sources.frames`: a live camera's reader drops the
oldest frames when inference falls behind, a file's waits) and a small queue; the inference loop takes frames from the
streams in turn (a camera's as soon as one is there, a file's a whole ``batch`` at a time), so a slow or dead stream
never holds up the others: a stream that has nothing waiting is skipped, and one that ends (a file, even a truncated
one) or is lost (a live source past its reconnect budget) leaves the others running. Per stream: its own JSON lines
(``source`` names it), counters on the metrics endpoint, MQTT topic, OPC UA variables, evidence folder and decision
sequence number.

What a supervisor acts on: the process exits :data:`EXIT_SOURCE_LOST` (3) when every stream has stopped and a live
one among them was lost, so ``systemd``'s ``Restart=on-failure`` (or a container's restart policy) brings the station
back; a stream lost while others still run is reported (warning, MQTT status, ``/readyz``) and the others go on.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from edgeft import progress
from edgeft.errors import ConfigError, EdgeftError
from edgeft.redact import Source
from edgeft.runtime.sources import Frame, SourceStats, frames, is_file

EXIT_SOURCE_LOST = 3  # every stream stopped, and a live one was lost: the supervisor should restart the station
STREAM_QUEUE = 4  # frames (at least a batch) a stream's reader hands over ahead of inference; a file's reader waits


@dataclass
class Stream:
    """One source of the station and what it has done."""

    source: Source
    stats: SourceStats = field(default_factory=SourceStats)
    metrics: Any = None  # its LineMetrics, when metrics are served or printed
    seq: int = 0  # decisions published so far (the MQTT payload's sequence number)
    last_frame: float = 0.0  # when its last frame was inferred (time.time())
    error: str | None = None  # why it could not be opened or read
    done: threading.Event = field(default_factory=threading.Event)
    queue: collections.deque = field(default_factory=collections.deque)
    fills: bool = False  # a file read as fast as it decodes: its frames wait for a whole batch (a live one never)
    product: str | None = None  # what it shows: decided at the policy's operating point for that product

    @property
    def name(self) -> str:
        return self.source.name


def check_names(sources: list[Source]) -> None:
    """Refuse two streams of one name: their lines, counters, topics and evidence would mix."""
    seen: dict[str, int] = {}
    for s in sources:
        seen[s.name] = seen.get(s.name, 0) + 1
    twice = [n for n, k in seen.items() if k > 1]
    if twice:
        raise ConfigError(f"two streams are named {twice[0]!r}: give each its own with --source-name (one per "
                          "SOURCE, in order)")


class Station:
    """The streams, the model they share (:class:`~edgeft.station.swap.ModelSlot`), and where results go."""

    def __init__(self, slot: Any, streams: list[Stream], out: IO[str], batch: int = 1, queue_size: int = 8,
                 max_reconnects: int = 10, mqtt: Any = None, evidence: Any = None, overlays: Any = None,
                 opcua: Any = None, stats_every: int | None = None, stats_out: IO[str] | None = None,
                 max_frames: int | None = None, realtime: bool = False) -> None:
        self.slot, self.streams, self.out, self.batch = slot, streams, out, batch
        self.queue_size, self.max_reconnects = queue_size, max_reconnects
        self.mqtt, self.evidence, self.overlays, self.opcua = mqtt, evidence, overlays, opcua
        self.stats_every, self.stats_out = stats_every, stats_out
        self.stop = threading.Event()  # set it (from any thread) to end the run after the current frame
        self._ready = threading.Condition()
        self._written = 0
        self._turn = 0  # the stream whose frames are taken next
        self.max_frames = max_frames  # all streams together
        self.realtime = realtime  # video files read at their frame rate (a rehearsal with recorded footage)
        for s in streams:  # nothing is late on a file: its batches fill up (fewer, larger calls); a camera's never wait
            s.fills = batch > 1 and not realtime and is_file(s.source.spec)

    # ------------------------------------------------------------------------------------------- readers
    def _read(self, stream: Stream) -> None:
        ahead = max(STREAM_QUEUE, self.batch)  # room for a whole batch
        try:
            for f in frames(stream.source, stream.stats, self.queue_size, self.max_reconnects, self.stop,
                            self.realtime):
                with self._ready:
                    while len(stream.queue) >= ahead and not self.stop.is_set():
                        self._ready.wait(0.1)  # a file waits for inference; a live reader drops on its own side
                    if self.stop.is_set():
                        return
                    stream.queue.append(f)
                    self._ready.notify_all()
        except Exception as e:  # a reader must never take the station down; the others go on
            stream.error = str(e) if isinstance(e, EdgeftError) else f"{type(e).__name__}: {e}"
            if len(self.streams) > 1:
                progress.warn(f"stream {stream.name} stopped, the others go on: {stream.error}")
        finally:
            if stream.stats.lost:
                progress.warn(f"stream {stream.name} lost after {self.max_reconnects} reconnects")
                if self.mqtt is not None:
                    self.mqtt.event("stream_lost", stream=stream.name)
            stream.done.set()
            with self._ready:
                self._ready.notify_all()

    # ------------------------------------------------------------------------------------------- the loop
    def _take(self) -> tuple[Stream, list[Frame]] | None:
        """The next stream in turn with frames waiting, and up to ``batch`` of them; None when every stream is done
        and drained. Waits while frames are on their way."""
        while True:
            with self._ready:
                n = len(self.streams)
                for k in range(n):
                    s = self.streams[(self._turn + k) % n]
                    if s.queue and (not s.fills or len(s.queue) >= self.batch or s.done.is_set()):
                        self._turn = (self._turn + k + 1) % n
                        group = [s.queue.popleft() for _ in range(min(self.batch, len(s.queue)))]
                        self._ready.notify_all()
                        return s, group
                if all(s.done.is_set() for s in self.streams) or self.stop.is_set():
                    return None
                self._ready.wait(0.1)

    def run(self) -> dict[str, SourceStats]:
        """Read every stream and infer until they all end (or ``stop``); returns each stream's counts."""
        readers = [threading.Thread(target=self._read, args=(s,), daemon=True, name=f"edgeft-read-{k}")
                   for k, s in enumerate(self.streams)]
        for t in readers:
            t.start()
        if self.mqtt is not None:
            self.mqtt.event("started", streams=[s.name for s in self.streams], model=self.slot.current.model_hash)
        try:
            while True:
                self.slot.swap_if_due()  # between frames: a new model, checked, or the old one kept
                taken = self._take()
                if taken is None:
                    break
                self._infer(*taken)
                if self.max_frames is not None and self._written >= self.max_frames:
                    break
        except KeyboardInterrupt:
            print("interrupted: stopped cleanly", file=sys.stderr)
        finally:
            self.stop.set()
            with self._ready:
                self._ready.notify_all()
            for t in readers:
                t.join(timeout=5)
            if self.mqtt is not None:
                self.mqtt.event("stopped")
        return {s.name: s.stats for s in self.streams}

    def _infer(self, stream: Stream, group: list[Frame]) -> None:
        predictor = self.slot.current
        good = [f for f in group if f.image is not None]
        for f in good:
            self.slot.remember(f.image)
        t0 = time.perf_counter()
        preds = predictor.predict([f.image for f in good], product=stream.product) if good else []
        per_frame_ms = (time.perf_counter() - t0) * 1000 / max(1, len(good))
        by_id = {id(f): p for f, p in zip(good, preds)}
        for f in group:
            line: dict[str, Any] = {"source": f.source, "frame": f.index, "timestamp": round(f.timestamp, 6)}
            if stream.product is not None:
                line["product"] = stream.product
            if f.image is None:
                line["error"] = f.error
                if stream.metrics is not None:
                    stream.metrics.record(None, None)
            else:
                p = by_id[id(f)]
                line.update(label=p.label, score=round(p.score, 6),
                            probabilities=[round(v, 6) for v in p.probabilities], latency_ms=round(per_frame_ms, 3),
                            backend=predictor.backend_name, model=predictor.model_hash)
                if p.decision is not None:
                    line.update(decision=p.decision, not_ok=round(p.not_ok, 6))
                line.update(p.extras)  # what the task adds (an anomaly model: where its heatmap peaks; boxes)
                if self.overlays is not None:
                    line["heatmap"] = str(self.overlays(predictor, f, p))
                if stream.metrics is not None:
                    stream.metrics.record(p.label, per_frame_ms, p.decision, p.not_ok, p.extras.get("boxes"))
                if p.decision is not None:
                    stream.seq += 1
                    if self.mqtt is not None:
                        self.mqtt.decision(stream.name, line, stream.seq, predictor.model_hash)
                    if self.opcua is not None:
                        self.opcua.decision(stream.name, line, stream.seq)
                    if self.evidence is not None:
                        self.evidence.offer(stream.name, f.image, line, predictor.policy, predictor.model_hash)
            stream.last_frame = time.time()
            self.out.write(json.dumps(line) + "\n")
            self._written += 1
            if stream.metrics is not None and self.stats_every and self._written % self.stats_every == 0:
                print(json.dumps({"stats": stream.metrics.snapshot()}), file=self.stats_out or sys.stderr,
                      flush=True)
            if self.max_frames is not None and self._written >= self.max_frames:
                break
        self.out.flush()
        if stream.metrics is not None:
            stream.metrics.set_source_counts(stream.stats.dropped, stream.stats.reconnects)

    def lost(self) -> list[str]:
        return [s.name for s in self.streams if s.stats.lost]

    def readiness(self, fresh_s: float) -> tuple[bool, dict[str, Any]]:
        """Ready: a model is loaded and every stream still running gave a frame in the last ``fresh_s`` seconds."""
        now = time.time()
        running = [s for s in self.streams if not s.done.is_set()]
        status = {s.name: ("lost" if s.stats.lost else "ended" if s.done.is_set() else
                           f"last frame {now - s.last_frame:.1f} s ago" if s.last_frame else "no frame yet")
                  for s in self.streams}
        ok = bool(running) and all(s.last_frame and now - s.last_frame <= fresh_s for s in running) \
            and self.slot.current is not None
        return ok, {"ready": ok, "model": self.slot.current.model_hash if self.slot.current else None,
                    "streams": status}
