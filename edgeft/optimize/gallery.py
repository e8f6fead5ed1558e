"""The anomaly report's gallery: the test parts the shipped model finds most anomalous, and the defective parts it
lets through, each with its heatmap drawn over the part as the camera draws it (``edgeft.runtime.heatmap``: fixed
scale, blue at a typical good patch, red at the reject threshold).

Made through the torch-free :class:`~edgeft.runtime.predictor.Predictor` from the image files, so what the report
shows is what ``edgeft infer --heatmaps`` would write for the same frames. The scores it measures on the way also
give the AUROC gate its paired bootstrap interval (``edgeft.optimize.pipeline``). Test is only read here, after
every choice was made on val; nothing is chosen from it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeft import progress

TOP = 8  # the most anomalous test parts shown
ESCAPES = 4  # the defective parts passed with the lowest scores shown
FOLDER = "gallery"  # under the run: the tiles as PNG files, which report.md links (report.html embeds them)


@dataclass
class Tile:
    """One part in the gallery: its overlay as PNG bytes, the file it is written to under the run, a caption."""

    group: str  # "most anomalous" or "escaped"
    file: str
    caption: str
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


def _picks(scores: np.ndarray, anomalous: np.ndarray, passed: np.ndarray, top: int, escapes: int):
    """(index, group) of the ``top`` highest scores, then of up to ``escapes`` anomalous parts the policy passed,
    lowest score first (the defects the line would miss most surely)."""
    order = np.argsort(-scores, kind="stable")
    picks = [(int(i), "most anomalous") for i in order[:top]]
    shown = {i for i, _ in picks}
    missed = [int(i) for i in order[::-1] if anomalous[i] and passed[i] and int(i) not in shown]
    return picks + [(i, "escaped") for i in missed[:escapes]]


@dataclass
class Gallery:
    """The tiles, and what drawing them measured: every test part's score and whether it is anomalous."""

    tiles: list[Tile]
    scores: np.ndarray
    anomalous: np.ndarray


def scores_on_test(artifact_dir: Path, data: Path, threads: int | None = None) -> np.ndarray:
    """An anomaly model's score of every test part, in ``scan_split`` order, through the Predictor."""
    from edgeft.data.imagefolder import find_splits, scan_split
    from edgeft.images import read_image
    from edgeft.runtime.predictor import Predictor

    files = scan_split(find_splits(data)["test"])
    with Predictor(artifact_dir, threads=threads) as predictor:
        return np.array([predictor.predict(read_image(f))[0].score for f in
                         progress.bar(files.paths, desc=f"score test ({artifact_dir.name})", unit="img")])


def gallery(artifact_dir: Path, data: Path, out: Path, top: int = TOP, escapes: int = ESCAPES,
            threads: int | None = None) -> Gallery | None:
    """Score ``data``/test with the anomaly model at ``artifact_dir`` and draw the gallery's tiles into
    ``out``/gallery/ (replacing an earlier gallery there). None when the data has no test split."""
    import cv2

    from edgeft.data.imagefolder import find_splits, scan_split
    from edgeft.images import read_image
    from edgeft.metrics import anomalous_mask
    from edgeft.runtime.heatmap import overlay
    from edgeft.runtime.predictor import Predictor

    splits = find_splits(data)
    if "test" not in splits:
        return None
    files = scan_split(splits["test"])
    with Predictor(artifact_dir, threads=threads) as predictor:
        floor, ceiling = predictor.heatmap_scale
        good = predictor.class_names[0]
        scores, maps, decisions = [], [], []
        for path in progress.bar(files.paths, desc="gallery: score test", unit="img"):
            p = predictor.predict(read_image(path))[0]
            scores.append(p.score)
            maps.append(p.heatmap)
            decisions.append(p.decision or "unknown")
        contract = predictor.contract
    anomalous = anomalous_mask(np.asarray(files.labels), files.classes, good)
    passed = np.array([d == "pass" for d in decisions])
    folder = out / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    tiles = []
    for n, (i, group) in enumerate(_picks(np.asarray(scores), anomalous, passed, top, escapes), 1):
        path = files.paths[i]
        part = contract.geometry(read_image(path))  # the model's view of the part (resized, cropped), colours kept
        ok, png = cv2.imencode(".png", overlay(part, maps[i], floor, ceiling))
        if not ok:
            continue
        name = f"{n:02d}-{path.stem}.png"
        (folder / name).write_bytes(png.tobytes())
        tiles.append(Tile(group, f"{FOLDER}/{name}", f"{path.parent.name}/{path.name}: score {scores[i]:.3g}, "
                                                      f"{decisions[i]}", png.tobytes()))
    return Gallery(tiles, np.asarray(scores), anomalous)
