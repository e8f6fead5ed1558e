"""The anomaly report's gallery: the test parts the shipped model finds most anomalous, and the defective parts it
lets through, each with its heatmap drawn over the part as the camera draws it (``edgeft.tasks.anomaly.heatmap``: fixed
scale, blue at a typical good patch, red at the reject threshold).

Made through the torch-free :class:`~edgeft.runtime.predictor.Predictor` from the image files, so what the report
shows is what ``edgeft infer --heatmaps`` would write for the same frames. The run's first model scores the same
parts through the same function (:func:`score_test`), which gives the AUROC gate its paired bootstrap interval
(``edgeft.optimize.pipeline``). Test is only read here, after every choice was made on val; nothing is chosen
from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeft import progress
from edgeft.tasks.gallery import Gallery, fresh_folder, write_tile

TOP = 8  # the most anomalous test parts shown
ESCAPES = 4  # the defective parts passed with the lowest scores shown
NOTE = ("The final model's view of each test part (the highest anomaly scores first, then the defective parts its "
        "policy passed, lowest score first), with its heatmap on a fixed scale: blue at a typical good patch, red at "
        "the reject threshold, as `edgeft infer --heatmaps` draws it.")


def _picks(scores: np.ndarray, anomalous: np.ndarray, passed: np.ndarray, top: int, escapes: int):
    """(index, group) of the ``top`` highest scores, then of up to ``escapes`` anomalous parts the policy passed,
    lowest score first (the defects the line would miss most surely)."""
    order = np.argsort(-scores, kind="stable")
    picks = [(int(i), "most anomalous") for i in order[:top]]
    shown = {i for i, _ in picks}
    missed = [int(i) for i in order[::-1] if anomalous[i] and passed[i] and int(i) not in shown]
    return picks + [(i, "escaped") for i in missed[:escapes]]


@dataclass
class Scored:
    """What one model gave for every test part (in ``scan_split`` order): score, heatmap, decision; and the heatmap's
    colour scale and good class it was read with."""

    scores: np.ndarray
    maps: list[np.ndarray]
    decisions: list[str]
    scale: tuple[float, float]
    good: str


@dataclass
class TestScores:
    """The test parts (paths, labels, class names) and each model's :class:`Scored` on them."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    models: list[Scored]

    def anomalous(self) -> np.ndarray:
        from edgeft.metrics import anomalous_mask

        return anomalous_mask(self.labels, self.classes, self.models[0].good)


def score_test(models: list[Path], data: Path, threads: int | None = None) -> TestScores | None:
    """Every test part through each anomaly model's Predictor, as the camera runs it; only scores, heatmaps and
    decisions are kept (no frame). One model after the other, each image decoded once per model: interleaving two
    runtimes image by image took 10.3 s for ELPV's 394 cells against 4.5 s this way (their thread pools contend),
    and decoding costs far less than that. None when the data has no test split."""
    from edgeft.data.imagefolder import find_splits, scan_split
    from edgeft.images import read_image
    from edgeft.runtime.predictor import Predictor

    splits = find_splits(data)
    if "test" not in splits:
        return None
    files = scan_split(splits["test"])
    scored = []
    for model in models:
        scores, maps, decisions = [], [], []
        with Predictor(model, threads=threads) as predictor:
            for path in progress.bar(files.paths, desc=f"score test ({Path(model).name})", unit="img"):
                p = predictor.predict(read_image(path))[0]
                scores.append(p.score)
                maps.append(p.heatmap)
                decisions.append(p.decision or "unknown")
            scored.append(Scored(np.asarray(scores), maps, decisions, predictor.heatmap_scale,
                                 predictor.class_names[0]))
    return TestScores(list(files.paths), np.asarray(files.labels), list(files.classes), scored)


def gallery(test: TestScores, model: int, contract, out: Path, top: int = TOP, escapes: int = ESCAPES) -> Gallery:
    """Draw the tiles of ``test.models[model]`` into ``out``/gallery/ (replacing an earlier gallery there); only the
    picked parts are decoded again. ``contract``: that model's input contract (its view of the part)."""
    from edgeft.images import read_image
    from edgeft.tasks.anomaly.heatmap import overlay

    m = test.models[model]
    passed = np.array([d == "pass" for d in m.decisions])
    folder = fresh_folder(out)
    g = Gallery("Test parts and their heatmaps", NOTE, ("most anomalous", "escaped"))
    for n, (i, group) in enumerate(_picks(m.scores, test.anomalous(), passed, top, escapes), 1):
        path = test.paths[i]
        part = contract.geometry(read_image(path))  # the model's view of the part (resized, cropped), colours kept
        tile = write_tile(folder, n, path, overlay(part, m.maps[i], *m.scale), group,
                          f"{path.parent.name}/{path.name}: score {m.scores[i]:.3g}, {m.decisions[i]}")
        if tile is not None:
            g.tiles.append(tile)
    return g
