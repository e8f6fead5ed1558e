"""A report's gallery of test parts (tasks floor): what a plant manager asks first, shown as the camera sees it.
Each task fills one: an anomaly model its most anomalous parts and the defects it passed, with heatmaps; a
classifier its escapes and its false rejects at the operating point, with class activation maps. The report renders
a :class:`Gallery` in Markdown (the tiles linked) and HTML (the tiles embedded)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FOLDER = "gallery"  # under the run: the tiles as PNG files, which report.md links (report.html embeds them)


@dataclass
class Tile:
    """One part in the gallery: its picture as PNG bytes, the file it is written to under the run, a caption."""

    group: str
    file: str
    caption: str
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


@dataclass
class Gallery:
    """The report's gallery section: a title, a note saying what is shown and how it is drawn, the groups in order
    (a group without tiles is said to be empty), and the tiles."""

    title: str
    note: str
    groups: tuple[str, ...]
    tiles: list[Tile] = field(default_factory=list)


def fresh_folder(run: Path) -> Path:
    """``run``/gallery/, emptied of an earlier gallery's tiles."""
    folder = run / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


def write_tile(folder: Path, n: int, source: Path, image: np.ndarray, group: str, caption: str) -> Tile | None:
    """Encode ``image`` (8-bit BGR) as PNG under ``folder`` and return its tile (None if OpenCV cannot encode it)."""
    import cv2

    ok, png = cv2.imencode(".png", image)
    if not ok:
        return None
    name = f"{n:02d}-{source.stem}.png"
    (folder / name).write_bytes(png.tobytes())
    return Tile(group, f"{FOLDER}/{name}", caption, png.tobytes())
