"""Frame sources for ``edgeft infer``: images, folders, globs, video files, cameras and streams.

Files are read completely, frame by frame. Live sources (a camera index, an RTSP/HTTP URL, or a GStreamer
pipeline ending in ``appsink``, e.g. with Jetson's hardware decoder) are read by a thread into a bounded queue: when inference falls behind, the oldest frames are dropped (and counted)
so results stay current; when the stream drops, it is reopened with exponential back-off.

A source is opened with its real spec and written under its name (``edgeft.redact``): a stream URL's
credentials appear in no frame, error line or result.
"""

from __future__ import annotations

import collections
import glob
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edgeft.errors import DataError, EdgeftError
from edgeft.images import IMAGE_SUFFIXES, read_image
from edgeft.redact import Source, redact_text, resolve

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
STREAM_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


@dataclass
class Frame:
    source: str
    index: int
    timestamp: float
    image: np.ndarray | None  # None when the frame could not be read
    error: str | None = None


@dataclass
class SourceStats:
    frames: int = 0
    dropped: int = 0
    unreadable: int = 0
    reconnects: int = 0
    lost: bool = False  # a live source that stayed away after its reconnect budget (the process exits non-zero)


def is_gstreamer(spec: str) -> bool:
    return "appsink" in spec and "!" in spec


def gstreamer_supported() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines (pip's opencv-python wheels cannot)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


FILE_KINDS = ("image", "folder", "glob", "video")  # read to their end as fast as they decode; the rest are live


def is_file(spec: str) -> bool:
    """Whether ``spec`` is a file source (images, a folder, a glob, a video), not a camera or a stream; a source that
    is not there counts as neither (its reader reports it)."""
    try:
        return describe(spec) in FILE_KINDS
    except EdgeftError:
        return False


def describe(spec: str) -> str:
    """What kind of source ``spec`` is: image, folder, glob, video, camera, stream or gstreamer."""
    if spec.isdigit():
        return "camera"
    if is_gstreamer(spec):
        return "gstreamer"
    if spec.lower().startswith(STREAM_PREFIXES):
        return "stream"
    p = Path(spec)
    if p.is_dir():
        return "folder"
    if any(c in spec for c in "*?["):
        return "glob"
    if p.is_file():
        if p.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return "image"
        raise DataError(f"{redact_text(spec)} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                        f"({', '.join(VIDEO_SUFFIXES)})")
    raise DataError(f"source not found: {redact_text(spec)}; pass an image, a folder, a glob, a video file, a camera index "
                    "or a stream URL")


def _files(paths: list[Path], stats: SourceStats) -> Iterator[Frame]:
    for i, p in enumerate(paths):
        stats.frames += 1
        try:
            yield Frame(str(p), i, time.time(), read_image(p))
        except DataError as e:
            stats.unreadable += 1
            yield Frame(str(p), i, time.time(), None, str(e))
    if stats.frames and stats.unreadable == stats.frames:  # as for a video with no readable frame: a failed run
        raise DataError(f"none of the {stats.frames} image(s) could be read (each has its error line); the first: "
                        f"{paths[0]}")


def _open_capture(spec: str):
    import cv2

    if is_gstreamer(spec):
        cap = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
    else:
        cap = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


def _video(src: Source, stats: SourceStats, realtime: bool = False) -> Iterator[Frame]:
    cap = _open_capture(src.spec)
    if cap is None:
        raise DataError(f"cannot open video {src.name}: OpenCV has no decoder for it or the file is corrupt")
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS) if realtime else 0.0
    start = time.monotonic()
    try:
        i = 0
        while True:
            if fps > 0:  # a recording replayed at the camera's pace (a station rehearsal)
                time.sleep(max(0.0, start + i / fps - time.monotonic()))
            ok, img = cap.read()
            if not ok:
                break
            stats.frames += 1
            yield Frame(src.name, i, time.time(), img)
            i += 1
    finally:
        cap.release()
    if stats.frames == 0:
        raise DataError(f"video {src.name} has no readable frames")


def _live(src: Source, stats: SourceStats, queue_size: int, max_reconnects: int, stop: threading.Event,
          backoff_s: float = 0.5) -> Iterator[Frame]:
    spec = src.spec
    cap = _open_capture(spec)
    if cap is None:
        what = "camera" if spec.isdigit() else "GStreamer pipeline" if is_gstreamer(spec) else "stream"
        raise DataError(f"cannot open {what} {src.name}; check the index/URL/pipeline and that nothing else holds the "
                        "device")
    queue: collections.deque[Frame] = collections.deque()
    lock = threading.Condition()
    done = threading.Event()

    def reader(cap) -> None:
        index, failures, delay = 0, 0, backoff_s
        try:
            while not stop.is_set():
                ok, img = cap.read() if cap is not None else (False, None)
                if not ok:
                    if cap is not None:
                        cap.release()
                    failures += 1
                    if failures > max_reconnects:
                        stats.lost = True
                        return
                    stats.reconnects += 1
                    stop.wait(delay)
                    delay = min(delay * 2, 30.0)
                    cap = _open_capture(spec)
                    continue
                failures, delay = 0, backoff_s
                with lock:
                    if len(queue) >= queue_size:
                        queue.popleft()
                        stats.dropped += 1
                    queue.append(Frame(src.name, index, time.time(), img))
                    stats.frames += 1
                    lock.notify()
                index += 1
        finally:
            if cap is not None:
                cap.release()
            done.set()
            with lock:
                lock.notify()

    t = threading.Thread(target=reader, args=(cap,), daemon=True, name="edgeft-capture")
    t.start()
    try:
        while True:
            with lock:
                while not queue and not done.is_set():
                    lock.wait(0.5)
                if not queue and done.is_set():
                    return
                frame = queue.popleft()
            yield frame
    finally:
        stop.set()
        t.join(timeout=5)


def frames(source: str | Source, stats: SourceStats, queue_size: int = 8, max_reconnects: int = 10,
           stop: threading.Event | None = None, realtime: bool = False) -> Iterator[Frame]:
    """Frames of ``source`` in order, each carrying the source's name; see the module doc for live sources.
    ``realtime``: a video file is read at its recorded frame rate rather than as fast as it decodes."""
    src = source if isinstance(source, Source) else resolve(source)
    spec = src.spec
    kind = describe(spec)
    if kind == "image":
        return _files([Path(spec)], stats)
    if kind == "folder":
        paths = sorted(p for p in Path(spec).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"folder {src.name} has no images ({', '.join(IMAGE_SUFFIXES)})")
        return _files(paths, stats)
    if kind == "glob":
        paths = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"no images match {src.name}")
        return _files(paths, stats)
    if kind == "video":
        return _video(src, stats, realtime)
    if kind == "gstreamer" and not gstreamer_supported():
        raise DataError("this OpenCV build has no GStreamer support (pip's opencv-python wheels do not); use "
                        "JetPack's OpenCV (python3-opencv) for GStreamer pipelines, or pass the rtsp:// URL instead")
    return _live(src, stats, queue_size, max_reconnects, stop or threading.Event())
