"""The parts a station keeps (``edgeft infer --save reject,review DIR``): every frame of the kinds asked, and a
sampled share of passed ones for audit, so that a person can check a decision and relabel the parts the model was
unsure of (what the next model learns from).

Each kept frame is a PNG (the frame as the camera gave it, lossless; one channel when its three are equal, as a
monochrome camera's are) and a JSON sidecar of the same name: the stream,
the frame number and time, the prediction (class, score, not-OK score, a detector's boxes), the decision and the
policy it came from, and the model's hash. Files go to ``DIR/STREAM/`` named ``YYYYmmdd-HHMMSS-FRAME-DECISION``.

Writing never stalls inference: frames are handed to a writer thread through a bounded queue; a frame that finds it
full is not kept and is counted (``edgeft_evidence_total{result="skipped"}``). The writing still takes CPU, in
proportion to the share of frames kept (``benchmarks/station_evidence.py``). ``cap_mb`` bounds the folder: past it, the
oldest kept frames go first (the folder is a rolling window of the latest evidence, never a disk-full failure).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft import progress
from edgeft.errors import ConfigError

KINDS = ("reject", "review", "pass", "unreadable")
QUEUE_FRAMES = 64  # frames waiting for the writer before new ones are skipped (and counted)


@dataclass(frozen=True)
class EvidenceConfig:
    folder: Path
    kinds: tuple[str, ...] = ("reject", "review")
    cap_mb: float = 2048.0
    sample_pass: float = 0.0  # the share of passed frames kept for audit, besides the kinds asked

    @classmethod
    def parse(cls, kinds: str, folder: str | os.PathLike, cap_mb: float, sample_pass: float) -> "EvidenceConfig":
        asked = tuple(k.strip() for k in kinds.split(",") if k.strip())
        bad = [k for k in asked if k not in KINDS[:3]]
        if not asked or bad:
            raise ConfigError(f"--save {kinds!r}: name the decisions to keep, comma-separated, from reject, review, "
                              "pass (e.g. --save reject,review DIR)")
        if not cap_mb > 0:
            raise ConfigError(f"--save-cap-mb must be positive (the folder's size before the oldest frames go), got "
                              f"{cap_mb}")
        if not 0 <= sample_pass <= 1:
            raise ConfigError(f"--save-pass-share must be in [0, 1], got {sample_pass}")
        return cls(Path(folder), asked, float(cap_mb), float(sample_pass))


class EvidenceKeeper:
    """Keeps the frames a :class:`EvidenceConfig` asks for, from a writer thread; ``close()`` writes what waits."""

    def __init__(self, cfg: EvidenceConfig, seed: int = 0) -> None:
        self.cfg = cfg
        try:
            cfg.folder.mkdir(parents=True, exist_ok=True)
            probe = cfg.folder / f".edgeft-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"--save {cfg.folder}: cannot write there ({e.strerror or e}); pick a folder this "
                              "process may write") from None
        self.cap_bytes = int(cfg.cap_mb * 1e6)
        self._files: collections.deque[tuple[Path, int]] = collections.deque()  # kept files, oldest first
        for p in sorted((p for p in cfg.folder.rglob("*") if p.is_file() and p.suffix in (".png", ".json")),
                        key=lambda p: p.stat().st_mtime):
            self._files.append((p, p.stat().st_size))
        self.bytes = sum(b for _, b in self._files)
        self.kept = self.skipped = self.removed = 0
        self._rng = random.Random(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._folders: set[Path] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._write_loop, daemon=True, name="edgeft-evidence")
        self._thread.start()

    def wants(self, decision: str | None) -> bool:
        """Whether a frame of this decision is kept (``None``: a model without a policy keeps nothing)."""
        if decision in self.cfg.kinds:
            return True
        return decision == "pass" and self.cfg.sample_pass > 0 and self._rng.random() < self.cfg.sample_pass

    def offer(self, stream: str, image: np.ndarray, line: dict[str, Any], policy: Any, model: str) -> bool:
        """Keep this frame if its decision is asked for; never blocks (a full queue skips it, counted). ``policy``:
        the model's :class:`~edgeft.decision.Policy`, put into words by the writer."""
        if not self.wants(line.get("decision")):
            return False
        try:
            self._queue.put_nowait((stream, image, line, policy, model))
        except queue.Full:
            with self._lock:
                self.skipped += 1
            return False
        return True

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(*item)
            except (OSError, ConfigError) as e:  # a full or vanished disk: counted, the station goes on
                with self._lock:
                    self.skipped += 1
                progress.warn(f"evidence: could not keep a frame in {self.cfg.folder}: "
                              f"{getattr(e, 'strerror', None) or e}")

    def _write(self, stream: str, image: np.ndarray, line: dict[str, Any], policy: Any, model: str) -> None:
        """The PNG, then its sidecar (written to a temporary name and renamed: a sidecar present means both are
        complete, what a relabelling tool keys on); sizes from the bytes written, the folder made once."""
        import cv2

        folder = self.cfg.folder / _safe(stream)
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(line.get("timestamp") or time.time()))
        stem = f"{stamp}-{int(line.get('frame', 0)):06d}-{line.get('decision')}"
        if image.ndim == 3 and image.shape[2] == 3 and (image[..., 0] == image[..., 1]).all() and \
                (image[..., 1] == image[..., 2]).all():
            image = image[..., 0]  # a monochrome camera's frame, decoded as BGR: the same pixels, a third to encode
        # Huffman coding only: lossless, as small as the default here, and about 30% less CPU to encode
        ok, png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY])
        if not ok:
            raise OSError(f"PNG encoding failed for a {image.shape} frame")
        png_path, side = folder / f"{stem}.png", folder / f"{stem}.json"
        png_path.write_bytes(png.tobytes())
        text = (json.dumps({"stream": stream, **line, "policy": policy.text(), "model": model}, indent=1) + "\n").encode()
        tmp = folder / f".{stem}.json.tmp"
        tmp.write_bytes(text)
        tmp.replace(side)
        with self._lock:
            for p, size in ((png_path, len(png)), (side, len(text))):
                self._files.append((p, size))
                self.bytes += size
            self.kept += 1
            while self.bytes > self.cap_bytes and len(self._files) > 2:  # the oldest first, never what was just kept
                old, size = self._files.popleft()
                try:
                    old.unlink()
                except FileNotFoundError:
                    pass
                self.bytes -= size
                self.removed += 1

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"kept": self.kept, "skipped": self.skipped, "removed_files": self.removed, "bytes": self.bytes}

    def close(self, timeout_s: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-80:] or "stream"
