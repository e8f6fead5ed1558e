"""The detector report's gallery: the test images with the shipped model's boxes (coloured, with their scores) over the
true ones (white), the images with the most missed boxes first: the escapes a line asks about before anything else.

Boxes are drawn at an operating confidence chosen on val, where the box F1 at IoU 0.5 is highest (a recipe has no
decision section for detectors yet); test is read only to show, after every choice was made. The images are scored
through the torch-free :class:`~edgeft.runtime.predictor.Predictor` on the image files, as the camera scores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeft.tasks.gallery import Gallery, fresh_folder, write_tile

SHOWN = 6
GROUPS = ("most missed",)


def operating_confidence(truth: list, predicted: list) -> float:
    """The confidence (a step of 0.05 in [0.05, 0.95]) with the best box F1 at IoU 0.5; ties go to the higher."""
    from edgeft.tasks.detect.metrics import at_confidence

    best, chosen = -1.0, 0.5
    for c in np.round(np.arange(0.05, 0.951, 0.05), 2):
        found, kept, total = at_confidence(truth, predicted, float(c))
        f1 = 2 * found / max(kept + total, 1)
        if f1 >= best:
            best, chosen = f1, float(c)
    return chosen


def _predict(predictor: Any, paths: list[Path]) -> tuple[list, list]:
    """(frames, per frame (boxes, scores, classes) in the frame's pixels) from the camera's predictor."""
    from edgeft.images import read_image

    frames, out = [], []
    for p in paths:
        frame = read_image(p)
        pred = predictor.predict([frame])[0]
        names = predictor.class_names
        boxes = pred.extras.get("boxes", [])
        out.append((np.array([b["box"] for b in boxes], np.float32).reshape(-1, 4),
                    np.array([b["score"] for b in boxes], np.float32),
                    np.array([names.index(b["class"]) for b in boxes], np.int64)))
        frames.append(frame)
    return frames, out


def detector_gallery(recipe: Any, run: Path, rows: list[Any]) -> Gallery | None:
    """The final model's test images, most missed boxes first, at the confidence chosen on val."""
    from edgeft import artifact as art
    from edgeft import progress
    from edgeft.runtime.predictor import Predictor
    from edgeft.tasks.detect.boxes import draw
    from edgeft.tasks.detect.data import find_layout, read_split
    from edgeft.tasks.detect.metrics import at_confidence

    final = next((r for r in reversed(rows) if r.quality is not None and r.stage != "build"), None)
    if final is None or "test" not in find_layout(recipe.data)[1]:
        return None
    a = art.load(run / final.step)
    progress.info(f"drawing the report's gallery: {final.step}'s boxes on the test images")
    val, test = (read_split(recipe.data, s, classes=a.meta.class_names) for s in ("val", "test"))
    with Predictor(run / final.step, threads=recipe.threads) as predictor:
        _, val_pred = _predict(predictor, val.paths)
        frames, test_pred = _predict(predictor, test.paths)
    conf = operating_confidence(list(zip(val.boxes, val.labels)), val_pred)
    missed = []
    for k in range(len(test)):
        found, kept, total = at_confidence([(test.boxes[k], test.labels[k])], [test_pred[k]], conf)
        missed.append((total - found, kept - found, found, total))
    order = sorted(range(len(test)), key=lambda k: (-missed[k][0], -missed[k][1], str(test.paths[k])))[:SHOWN]
    folder = fresh_folder(run)
    shown = Gallery(
        title=f"Test images, the most missed boxes first ({final.step})",
        note=(f"Boxes the model returned at confidence >= {conf:.2f} (the best box F1 on val), coloured with their "
              "scores; the true boxes in white. Scored by the camera's predictor on the image files."),
        groups=GROUPS)
    for n, k in enumerate(order):
        b, s, c = test_pred[k]
        keep = s >= conf
        image = draw(frames[k], b[keep], s[keep], c[keep], a.meta.class_names, truth=test.boxes[k])
        m, extra, found, total = missed[k]
        tile = write_tile(folder, n, test.paths[k], image, GROUPS[0],
                          f"{test.paths[k].name}: {found} of {total} found, {m} missed, {extra} boxes on nothing")
        if tile is not None:
            shown.tiles.append(tile)
    return shown
