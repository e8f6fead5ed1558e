"""A new model without stopping the line (``edgeft infer MODEL ... --watch``).

The station watches MODEL's path (an artifact directory, usually a symlink a deployment flips:
``ln -sfn /models/v7 /opt/edgeft/current``) and, on ``SIGHUP``, looks at once. When the model file's hash in its
``meta.json`` changes, a thread beside the inference loads the new artifact on the same backend, checks it, and hands
it over; the inference loop swaps it in between two frames, so no frame waits for the load and none is dropped; the
first frame after the swap carries the new model's hash. The check refuses, in one line, a model that cannot be
loaded, one for another task, other classes or another input contract (size, colour, region of interest, window),
one without a decision policy where the running one has one, and one whose outputs on the last frames the station
saw are not finite; the old model keeps serving. Swaps and refusals are counted, logged and published.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeft import progress
from edgeft.errors import ConfigError, EdgeftError

CHECK_FRAMES = 4  # the last frames seen, run through a new model before it serves


def model_hash_at(path: Path) -> str | None:
    """The model file's SHA-256 an artifact directory's meta.json records (None while it is absent or partial)."""
    import json

    try:
        return json.loads((Path(path) / "meta.json").read_text()).get("model_sha256") or None
    except (OSError, ValueError):
        return None


class ModelSlot:
    """The predictor the station runs now, and the one waiting to replace it."""

    def __init__(self, current: Any, load: Callable[[Path], Any], path: Path | None = None,
                 poll_s: float = 2.0) -> None:
        self.current, self._load, self.path, self.poll_s = current, load, path, poll_s
        self.swaps = self.refused = 0
        self.on_event: Callable[..., None] | None = None  # (event, **fields): the station's MQTT status, if any
        self._next: Any = None
        self._lock = threading.Lock()
        self._recent: collections.deque[np.ndarray] = collections.deque(maxlen=CHECK_FRAMES)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seen = model_hash_at(path) if path is not None else None
        self.products: set[str] = set()  # the products the streams name: a new model must decide each
        self._thread: threading.Thread | None = None

    def remember(self, image: np.ndarray) -> None:
        """A frame the station saw: the next model is checked on the last few."""
        self._recent.append(image)

    # ------------------------------------------------------------------------------------------- watching
    def watch(self) -> None:
        """Poll the model path (and wake on SIGHUP) from a daemon thread."""
        if self.path is None:
            return
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self._wake.set())
        self._thread = threading.Thread(target=self._poll, daemon=True, name="edgeft-model-watch")
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            h = model_hash_at(self.path)
            if h is not None and h != self._seen:
                self._seen = h
                self.prepare(self.path)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------------------------------- loading
    def prepare(self, path: Path) -> bool:
        """Load and check the model at ``path`` (from the watcher's thread); True when it waits to be swapped in."""
        real = Path(os.path.realpath(path))
        try:
            new = self._load(real)
        except EdgeftError as e:
            return self._refuse(real, str(e))
        except Exception as e:  # noqa: BLE001: a broken file must never stop the line
            return self._refuse(real, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        problem = self.incompatible(new)
        if problem:
            new.close()
            return self._refuse(real, problem)
        with self._lock:
            if self._next is not None:
                self._next.close()
            self._next = new
        progress.info(f"model {new.model_hash} ({real}) loaded and checked; swapping it in between frames")
        return True

    def incompatible(self, new: Any) -> str | None:
        """Why ``new`` cannot replace the running model, or None."""
        old = self.current
        if new.task.name != old.task.name:
            return f"it is a {new.task.name} model and the station runs a {old.task.name} model"
        if list(new.class_names) != list(old.class_names):
            return f"its classes {list(new.class_names)} differ from the running model's {list(old.class_names)}"
        a, b = new.contract, old.contract
        for f in ("size", "color", "roi", "window", "resize"):
            if getattr(a, f) != getattr(b, f):
                return (f"its input contract differs ({f}: {getattr(a, f)} vs {getattr(b, f)}); the station's cameras "
                        "are set up for the running one: restart the station for a new contract")
        if old.policy is not None and new.policy is None:
            return "it carries no decision policy and the running model decides (edgeft decide, or a recipe's decision:)"
        for product in sorted(self.products) if new.policy is not None else ():
            try:
                new.policy.for_product(product)
            except ConfigError as e:
                return str(e)
        frames = list(self._recent)
        if frames:
            try:
                preds = new.predict(frames)
            except Exception as e:  # noqa: BLE001
                return f"it fails on the station's last frames: {type(e).__name__}: {str(e)[:200]}"
            if not all(np.isfinite(p.score) and (p.not_ok is None or np.isfinite(p.not_ok)) for p in preds):
                return "its scores on the station's last frames are not finite"
        return None

    def _refuse(self, path: Path, why: str) -> bool:
        self.refused += 1
        progress.warn(f"new model {path} refused, the running model {self.current.model_hash} keeps serving: {why}")
        if self.on_event is not None:
            self.on_event("model_refused", path=str(path), reason=why, model=self.current.model_hash)
        return False

    def swap_if_due(self) -> None:
        """Between frames (the inference loop's thread): put the checked new model in place, close the old one."""
        if self._next is None:
            return
        with self._lock:
            new, self._next = self._next, None
        old, self.current = self.current, new
        self.swaps += 1
        progress.info(f"model swapped: {old.model_hash} -> {new.model_hash}")
        if self.on_event is not None:
            self.on_event("model_swapped", model=new.model_hash, previous=old.model_hash)
        old.close()
