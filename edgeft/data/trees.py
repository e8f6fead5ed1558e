"""The detection demo's data: aerial images with hand-drawn tree-crown boxes that ship inside the ``deepforest``
wheel (Weecology's DeepForest, MIT licence; images from the NEON airborne observation platform, 10 cm pixels).

Industrial box data does not ship in any package, so the demo detects tree crowns: small, many to an image,
touching each other, on a textured background, which is what makes a detector's INT8 and NMS hard. The wheel holds
three images labelled with one class (``Tree``), 914 boxes in all; they are cut into square tiles, split by
image and place so that no test tile shares pixels with a training tile:

- ``test``: every tile of ``2019_YELL_2_541000_4977000_image_crop`` (279 trees), an image training never sees;
- ``val``: the bottom quarter of ``2019_YELL_2_528000_4978000_image_crop2``, tiled without overlap;
- ``train``: the rest of that image, tiled with half-tile overlap, and ``OSBS_029`` (a second site).

A box is kept in a tile when at least ``min_visible`` of its area lies inside, clipped to the tile; the tiles are
written as PNG with one COCO file per split (``edgeft data trees``, or ``prepare_data: trees`` in a recipe).
Only the data files of the wheel are read: ``pip install --no-deps deepforest`` is all it needs (DeepForest's own
training stack is not imported).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from edgeft import progress
from edgeft.artifact import staging_dir
from edgeft.errors import DataError, DependencyError

CLASSES = ("tree",)
TRAIN_IMAGE = "2019_YELL_2_528000_4978000_image_crop2"
TEST_IMAGE = "2019_YELL_2_541000_4977000_image_crop"
SECOND_SITE = "OSBS_029"
LICENCE = """\
Images and boxes: DeepForest example data (Weecology, University of Florida), shipped in the PyPI wheel
deepforest (https://github.com/weecology/DeepForest), MIT licence. Imagery from the NEON Airborne Observation
Platform (National Ecological Observatory Network), open data.
Cite: B. G. Weinstein, S. Marconi, S. A. Bohlman, A. Zare, E. P. White, "Individual tree-crown detection in
RGB imagery using semi-supervised deep learning neural networks", Remote Sensing 11 (2019) 1309.
Cut into tiles by `edgeft data trees`; pixels copied unchanged.
"""


def package_data() -> Path:
    """The folder of the installed deepforest wheel's example images (found without importing deepforest)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        root = Path(distribution("deepforest").locate_file("deepforest/data"))
    except PackageNotFoundError:
        raise DependencyError("the detection demo's data ships in the deepforest wheel; install its files with: "
                              "pip install --no-deps deepforest==2.1.0 (make setup does)") from None
    for name in (TRAIN_IMAGE, TEST_IMAGE, SECOND_SITE):
        if not (root / f"{name}.xml").is_file() or not (root / f"{name}.png").is_file():
            raise DataError(f"deepforest is installed but {root / name}.png/.xml is missing; reinstall it")
    return root


def read_voc(path: Path) -> np.ndarray:
    """The boxes of a Pascal VOC XML file as (n, 4) x1, y1, x2, y2 (VOC's pixel bounds as written)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path} is not valid XML: {e}") from None
    boxes = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        boxes.append([float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering ``length``: every ``stride``, the last one flush with the far edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def cut(image: np.ndarray, boxes: np.ndarray, tile: int, stride: int, rows: tuple[int, int], min_visible: float
        ) -> list[tuple[tuple[int, int], np.ndarray, np.ndarray]]:
    """Tiles of ``image`` whose rows lie within ``rows`` (top, bottom): (origin x, y), pixels, boxes kept in it."""
    top, bottom = rows
    out = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for y in tile_starts(bottom - top, tile, stride):
        for x in tile_starts(image.shape[1], tile, stride):
            y0 = top + y
            c = boxes - np.array([x, y0, x, y0])
            c = np.concatenate([c[:, :2].clip(0, tile), c[:, 2:].clip(0, tile)], 1)
            inside = (c[:, 2] - c[:, 0]).clip(0) * (c[:, 3] - c[:, 1]).clip(0)
            keep = inside >= min_visible * np.maximum(area, 1e-9)
            out.append(((x, y0), image[y0:y0 + tile, x:x + tile], c[keep]))
    return out


def build(out: str | os.PathLike, tile: int = 320, min_visible: float = 0.6, val_fraction: float = 0.25,
          force: bool = False) -> dict[str, tuple[int, int]]:
    """Write the tiles and one COCO file per split to ``out``, atomically; returns {split: (tiles, boxes)}."""
    import cv2

    if not 0 < min_visible <= 1 or not 0 < val_fraction < 1 or tile < 32:
        raise DataError(f"tile must be >= 32, min_visible in (0, 1], val_fraction in (0, 1); got {tile}, "
                        f"{min_visible}, {val_fraction}")
    root = package_data()

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        im = cv2.imread(str(root / f"{name}.png"), cv2.IMREAD_COLOR)
        if im is None:
            raise DataError(f"cannot decode {root / name}.png")
        return im, read_voc(root / f"{name}.xml")

    big, big_boxes = load(TRAIN_IMAGE)
    h = big.shape[0]
    cut_row = int(round(h * (1 - val_fraction)))
    plan = {  # split -> [(source name, image, boxes, rows, stride)]
        "train": [(TRAIN_IMAGE, big, big_boxes, (0, cut_row), tile // 2), (SECOND_SITE, *load(SECOND_SITE), None,
                                                                           tile // 2)],
        "val": [(TRAIN_IMAGE, big, big_boxes, (cut_row, h), tile)],
        "test": [(TEST_IMAGE, *load(TEST_IMAGE), None, tile)],
    }
    counts: dict[str, tuple[int, int]] = {}
    with staging_dir(out, force=force) as tmp:
        for split, sources in plan.items():
            (tmp / split).mkdir()
            coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": CLASSES[0]}],
                    "info": {"description": f"DeepForest example tiles, {split} split, made by edgeft data trees"}}
            for name, image, boxes, rows, stride in sources:
                rows = rows or (0, image.shape[0])
                for (x, y), pixels, kept in progress.bar(cut(image, boxes, tile, stride, rows, min_visible),
                                                         desc=f"trees {split}", unit="tile"):
                    file = f"{name}_x{x}_y{y}.png"
                    cv2.imwrite(str(tmp / split / file), pixels)
                    image_id = len(coco["images"]) + 1
                    coco["images"].append({"id": image_id, "file_name": file, "width": int(pixels.shape[1]),
                                           "height": int(pixels.shape[0]), "source": name, "origin": [x, y]})
                    for b in kept:
                        w, hh = float(b[2] - b[0]), float(b[3] - b[1])
                        coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                                    "category_id": 1, "bbox": [float(b[0]), float(b[1]), w, hh],
                                                    "area": w * hh, "iscrowd": 0})
            (tmp / split / "annotations.json").write_text(json.dumps(coco))
            counts[split] = (len(coco["images"]), len(coco["annotations"]))
        (tmp / "LICENSE-DATA.txt").write_text(LICENCE)
        (tmp / "README.txt").write_text(
            f"Tree-crown detection tiles made by edgeft: {tile} px tiles; test = {TEST_IMAGE} (unseen image), val = "
            f"the bottom {val_fraction:.0%} of {TRAIN_IMAGE}, train = the rest of it (half-tile overlap) and "
            f"{SECOND_SITE}; a box is kept where >= {min_visible:.0%} of it lies in the tile.\n")
    return counts
