"""A detector's data: images with boxes, read from the two layouts labelling tools write.

- **COCO JSON** (CVAT, Label Studio, Roboflow, the COCO data sets): ``ROOT/<split>/`` holds the images and one
  COCO file (``annotations.json``, ``_annotations.coco.json`` or ``instances_<split>.json``); ``file_name`` is
  relative to that folder. Class names are the ``categories``' names in the order of their ids.
- **YOLO txt** (Ultralytics): ``ROOT/images/<split>/`` and ``ROOT/labels/<split>/``, one ``.txt`` per image with
  ``class cx cy w h`` lines in [0, 1]; class names from ``ROOT/data.yaml`` (``names:``) or ``ROOT/classes.txt``.
  An image without a label file is a background image (no boxes).

What is refused, in one line naming the file: an annotation naming a missing image, an unknown category id or
class index, a YOLO line without five fields, a split with no images. What is repaired and counted: a box partly
outside its image is clipped to it; a box of zero size, or one wholly outside, is dropped (labelling tools leave
such boxes from a stray click; they carry no object to learn). The counts travel with the split
(``DetectionSet.dropped``) into the artifact and the printed summary.

Boxes are kept as ``x1, y1, x2, y2`` in the image's own pixels (float32); the model's input geometry is applied
where images are decoded (:func:`decode`), boxes following the image through the contract's placement.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import DataError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
COCO_NAMES = ("annotations.json", "_annotations.coco.json")


@dataclass
class DetectionSet:
    """One split: image paths with their boxes (x1, y1, x2, y2 in the image's pixels) and class indices."""

    name: str
    paths: list[Path]
    boxes: list[np.ndarray]  # per image: (n, 4) float32
    labels: list[np.ndarray]  # per image: (n,) int64, indices into classes
    classes: list[str]
    layout: str  # "coco" or "yolo"
    dropped: dict[str, int] = field(default_factory=dict)  # boxes dropped, by reason
    clipped: int = 0  # boxes clipped to their image

    def __len__(self) -> int:
        return len(self.paths)

    def box_count(self) -> int:
        return int(sum(len(b) for b in self.boxes))

    def counts(self) -> dict[str, Any]:
        """What the artifact records of this split: images, boxes per class, what was repaired."""
        per = np.bincount(np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64),
                          minlength=len(self.classes))
        return {"images": len(self), "boxes": self.box_count(), "per_class": dict(zip(self.classes, per.tolist())),
                "dropped": dict(self.dropped), "clipped": self.clipped}

    def summary(self) -> str:
        fixed = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n)
        return (f"{self.name}: {len(self)} images, {self.box_count()} boxes"
                + (f" ({self.clipped} clipped to their image)" if self.clipped else "")
                + (f"; dropped {fixed}" if fixed else ""))


def find_layout(root: str | os.PathLike) -> tuple[str, dict[str, Path]]:
    """("coco" | "yolo", {split: its folder}) of a detection data folder; refuses a folder in neither layout."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}; pass a folder with train/ val/ [test/] holding COCO JSON, or "
                        "images/ and labels/ in the YOLO layout")
    if (root / "images").is_dir() and (root / "labels").is_dir():
        splits = {s: root / "images" / s for s in SPLITS if (root / "images" / s).is_dir()}
        if "train" not in splits:
            raise DataError(f"{root}/images has no train/ folder; the YOLO layout is images/train, labels/train, ...")
        return "yolo", splits
    splits = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if "train" not in splits:
        raise DataError(f"{root} has neither train/ (COCO JSON in each split folder) nor images/ and labels/ (YOLO); "
                        "see docs/detect.md for the layouts")
    for s, d in splits.items():
        _coco_file(d)  # refuse a split without its annotations before anything is read
    return "coco", splits


def _coco_file(split_dir: Path) -> Path:
    for name in (*COCO_NAMES, f"instances_{split_dir.name}.json"):
        if (split_dir / name).is_file():
            return split_dir / name
    raise DataError(f"{split_dir} has no COCO annotation file ({', '.join(COCO_NAMES)} or "
                    f"instances_{split_dir.name}.json)")


def read_split(root: str | os.PathLike, split: str, classes: list[str] | None = None) -> DetectionSet:
    """The ``split`` of a detection data folder; ``classes`` (a model's) must equal the data's class names."""
    layout, splits = find_layout(root)
    if split not in splits:
        raise DataError(f"{root} has no {split} split ({', '.join(splits)})")
    ds = _read_coco(splits[split], split) if layout == "coco" else _read_yolo(Path(root), split)
    if not ds.paths:
        raise DataError(f"{splits[split]} holds no images")
    if classes is not None and ds.classes != list(classes):
        raise DataError(f"the data's classes {ds.classes} ({split}) differ from the model's {list(classes)}; use the "
                        "data the model was trained on, or name the categories alike")
    return ds


def class_names(root: str | os.PathLike) -> list[str]:
    """The class names of a detection data folder (its train split's)."""
    return read_split(root, "train").classes


class _Boxes:
    """Collects one split's boxes, clipping and dropping as the module says, counting both."""

    def __init__(self) -> None:
        self.dropped = {"of zero size": 0, "outside the image": 0}
        self.clipped = 0

    def add(self, xyxy: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """(the boxes kept, clipped to the ``w`` x ``h`` image; which of the given ones were kept)."""
        if len(xyxy) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, bool)
        x = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        size_zero = (x[:, 2] <= x[:, 0]) | (x[:, 3] <= x[:, 1])
        outside = ~size_zero & ((x[:, 2] <= 0) | (x[:, 3] <= 0) | (x[:, 0] >= w) | (x[:, 1] >= h))
        keep = ~size_zero & ~outside
        c = x.copy()
        c[:, [0, 2]] = c[:, [0, 2]].clip(0, w)
        c[:, [1, 3]] = c[:, [1, 3]].clip(0, h)
        self.clipped += int((keep & (np.abs(c - x).max(1) > 1e-6)).sum())
        self.dropped["of zero size"] += int(size_zero.sum())
        self.dropped["outside the image"] += int(outside.sum())
        return c[keep].astype(np.float32), keep


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header (Pillow, which torchvision installs): the pixels are
    decoded once, later, by :func:`decode`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError):
        raise DataError(f"cannot read image {path}: not a valid PNG/JPEG/BMP/TIFF file") from None


def _read_coco(split_dir: Path, split: str) -> DetectionSet:
    f = _coco_file(split_dir)
    try:
        d = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(f"{f} is not a COCO detection file: it needs images, annotations and categories lists")
    cats = sorted(d["categories"], key=lambda c: c["id"])
    classes = [str(c["name"]) for c in cats]
    index = {c["id"]: i for i, c in enumerate(cats)}
    images = {}
    for im in d["images"]:
        p = split_dir / im["file_name"]
        if not p.is_file():
            raise DataError(f"{f}: image id {im['id']} names {im['file_name']}, which is not in {split_dir}")
        w, h = (int(im["width"]), int(im["height"])) if im.get("width") and im.get("height") else _image_size(p)
        images[im["id"]] = (p, w, h)
    per: dict[Any, list[tuple[list[float], int]]] = {k: [] for k in images}
    for a in d["annotations"]:
        if a.get("image_id") not in images:
            raise DataError(f"{f}: annotation {a.get('id')} names image id {a.get('image_id')}, which is not among "
                            "its images")
        if a.get("category_id") not in index:
            raise DataError(f"{f}: annotation {a.get('id')} has category id {a.get('category_id')}, which is not "
                            f"among its categories ({', '.join(str(c['id']) + ': ' + str(c['name']) for c in cats)})")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{f}: annotation {a.get('id')} has bbox {bbox!r}; COCO boxes are [x, y, width, height]")
        if a.get("iscrowd"):
            continue  # a crowd region marks many objects at once: COCO's evaluator ignores it, so training does too
        x, y, bw, bh = (float(v) for v in bbox)
        per[a["image_id"]].append(([x, y, x + bw, y + bh], index[a["category_id"]]))
    fixer = _Boxes()
    paths, boxes, labels = [], [], []
    for k, (p, w, h) in sorted(images.items(), key=lambda kv: str(kv[1][0])):
        b = np.array([v[0] for v in per[k]], np.float64).reshape(-1, 4)
        lab = np.array([v[1] for v in per[k]], np.int64)
        kept, keep = fixer.add(b, w, h)
        paths.append(p)
        boxes.append(kept)
        labels.append(lab[keep])
    return DetectionSet(split, paths, boxes, labels, classes, "coco", fixer.dropped, fixer.clipped)


def _yolo_names(root: Path) -> list[str]:
    if (root / "data.yaml").is_file():
        import yaml

        try:
            names = (yaml.safe_load((root / "data.yaml").read_text()) or {}).get("names")
        except yaml.YAMLError as e:
            raise DataError(f"{root / 'data.yaml'} is not valid YAML: {str(e).splitlines()[0]}") from None
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list) or not names:
            raise DataError(f"{root / 'data.yaml'} needs names: a list of class names in index order")
        return [str(n) for n in names]
    if (root / "classes.txt").is_file():
        names = [ln.strip() for ln in (root / "classes.txt").read_text().splitlines() if ln.strip()]
        if names:
            return names
    raise DataError(f"{root} has no class names: add data.yaml (names: [...]) or classes.txt, one name a line in "
                    "index order")


def _read_yolo(root: Path, split: str) -> DetectionSet:
    classes = _yolo_names(root)
    img_dir, lab_dir = root / "images" / split, root / "labels" / split
    fixer = _Boxes()
    paths, boxes, labels = [], [], []
    for p in sorted(q for q in img_dir.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES):
        w, h = _image_size(p)
        txt = lab_dir / p.relative_to(img_dir).with_suffix(".txt")
        rows: list[list[float]] = []
        if txt.is_file():
            for n, line in enumerate(txt.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise DataError(f"{txt}:{n}: {len(parts)} fields; a YOLO box line is 'class cx cy w h' (5 fields, "
                                    "coordinates in [0, 1])")
                try:
                    k, cx, cy, bw, bh = int(parts[0]), *(float(v) for v in parts[1:])
                except ValueError:
                    raise DataError(f"{txt}:{n}: {line.strip()!r} is not 'class cx cy w h' numbers") from None
                if not 0 <= k < len(classes):
                    raise DataError(f"{txt}:{n}: class index {k} is not among the {len(classes)} names "
                                    f"({', '.join(classes)})")
                rows.append([k, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        r = np.array(rows, np.float64).reshape(-1, 5)
        kept, keep = fixer.add(r[:, 1:], w, h)
        paths.append(p)
        boxes.append(kept)
        labels.append(r[:, 0].astype(np.int64)[keep])
    return DetectionSet(split, paths, boxes, labels, classes, "yolo", fixer.dropped, fixer.clipped)


@dataclass
class DecodedSet:
    """A split decoded at model size: NxHxWxC images (dtype kept), boxes moved onto them, the originals' sizes."""

    name: str
    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    classes: list[str]
    paths: list[Path]
    sizes: list[tuple[int, int]]  # (height, width) of each source image (its region of interest)
    truth: list[tuple[np.ndarray, np.ndarray]]  # per image: the same boxes in the frame's pixels, and classes

    def __len__(self) -> int:
        return len(self.images)


def decode(ds: DetectionSet, contract: Any, limit: int | None = None, threads: int | None = None) -> DecodedSet:
    """Decode ``ds``'s images through ``contract`` (region of interest, colour, geometry) and move each box with
    its image; a box the region of interest cuts away is dropped (counted in ``ds.dropped``)."""
    from concurrent.futures import ThreadPoolExecutor

    from edgeft import progress
    from edgeft.images import read_image

    n = len(ds) if limit is None else min(limit, len(ds))

    def work(i: int):
        im = read_image(ds.paths[i])
        h, w = contract.crop(im).shape[:2]
        return contract.prepare(im), (h, w)

    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        done = list(progress.bar(pool.map(work, range(n)), total=n, desc=f"decode {ds.name}", unit="img"))
    images = np.stack([d[0] for d in done]) if done else np.zeros((0, *contract.size, contract.channels), np.uint8)
    boxes, labels, truth = [], [], []
    cut = 0
    for i in range(n):
        b, lab = ds.boxes[i], ds.labels[i]
        if contract.roi is not None and len(b):
            x0, y0, rw, rh = contract.roi
            b = b - np.array([x0, y0, x0, y0], np.float32)
            inside = (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < rw) & (b[:, 1] < rh)
            cut += int((~inside).sum())
            b, lab = b[inside], lab[inside]
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, rw)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, rh)
        h, w = done[i][1]
        sx, sy, ox, oy = contract.placement(h, w)
        moved = b * np.array([sx, sy, sx, sy], np.float32) + np.array([ox, oy, ox, oy], np.float32)
        out_h, out_w = contract.size
        moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, out_w)
        moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, out_h)
        ok = (moved[:, 2] - moved[:, 0] >= 1) & (moved[:, 3] - moved[:, 1] >= 1)  # under a pixel at model size
        ds.dropped["under a pixel at model size"] = ds.dropped.get("under a pixel at model size", 0) + int((~ok).sum())
        boxes.append(moved[ok].astype(np.float32))
        labels.append(lab[ok])
        x0, y0 = contract.roi[:2] if contract.roi is not None else (0, 0)
        truth.append(((b[ok] + np.array([x0, y0, x0, y0], np.float32)).astype(np.float32), lab[ok]))
    if cut:
        ds.dropped["outside the region of interest"] = ds.dropped.get("outside the region of interest", 0) + cut
    return DecodedSet(ds.name, images, boxes, labels, ds.classes, ds.paths[:n], [d[1] for d in done], truth)
