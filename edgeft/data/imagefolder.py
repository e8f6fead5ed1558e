"""ImageFolder-style data (``train/ val/ [test/]``, one subfolder per class) or a manifest listing the same
(``edgeft.data.manifest``), decoded with OpenCV.

Inspection data sets are small (hundreds to a few thousand images), so a split is decoded once, brought
to the model's size per the input contract, and held in memory: epochs then cost only compute, and a
corrupt or truncated file is found up front and skipped with a counted warning instead of crashing an
epoch halfway through.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgeft import progress
from edgeft.contract import ImageRangeError, InputContract
from edgeft.errors import ConfigError, DataError
from edgeft.images import IMAGE_SUFFIXES, is_image, read_image  # noqa: F401 (part of this module's interface)

SPLITS = ("train", "val", "test", "new-test")  # new-test: new parts a station kept (edgeft data collect), never trained on
HELD_OUT = ("test", "new-test")  # what a search must not read
_SEALED: set[Path] = set()  # data folders whose test splits are hidden (see sealed_test)


@contextmanager
def sealed_test(root: str | os.PathLike) -> Iterator[None]:
    """Hide ``root``'s test split from every reader while inside: :func:`find_splits` does not list it, so each
    stage measures on val, as it does for a folder without test. A search that selects models must not see the
    split its winner is judged on; the seal makes "test is read once, at the end" a property of the data layer
    rather than a promise of each stage."""
    key = Path(root).resolve()
    _SEALED.add(key)
    try:
        yield
    finally:
        _SEALED.discard(key)


@dataclass
class SplitFiles:
    """The files of one split: paths, integer labels, and the class names (sorted folder names)."""

    name: str
    paths: list[Path]
    labels: list[int]
    classes: list[str]


@dataclass
class ImageSet:
    """A decoded split: prepared HxWxC images at model size (dtype kept), labels, and what was skipped."""

    name: str
    images: np.ndarray  # N x H x W x C, uint8/uint16/float32
    labels: np.ndarray  # N, int64
    paths: list[Path]
    classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    products: list[str | None] | None = None  # each image's product (load_split; data/products.py), for decisions

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).tolist()


def find_splits(root: str | os.PathLike) -> dict[str, Any]:
    """Check the layout of a data folder (or manifest) and return the splits that exist: split folders, or a
    manifest's rows per split (train required)."""
    from edgeft.data.manifest import MANIFEST_SUFFIXES, is_manifest, read_manifest

    r = Path(root)
    if not r.exists():
        raise DataError(f"data folder not found: {r}; pass a folder with train/ (and val/, test/) inside, "
                        "one subfolder per class, or a manifest (.csv or .jsonl with path, label, split)")
    found: dict[str, Any]
    if is_manifest(r):
        found = dict(read_manifest(r, SPLITS))
    elif not r.is_dir():
        raise DataError(f"data path is neither a folder nor a manifest ({', '.join(MANIFEST_SUFFIXES)}): {r}")
    else:
        found = {s: r / s for s in SPLITS if (r / s).is_dir()}
    if _SEALED and r.resolve() in _SEALED:
        for s in HELD_OUT:
            found.pop(s, None)
    if "train" not in found and is_manifest(r):
        raise DataError(f"manifest {r} has no train rows; give some rows split train")
    if "train" not in found:
        entries = sorted(p.name for p in r.iterdir())[:8]
        hint = ("it looks like class folders directly; move them into train/ (and val/, test/)"
                if entries and all((r / e).is_dir() for e in entries) else f"found: {entries or 'nothing'}")
        raise DataError(f"data folder {r} has no train/ subfolder ({hint}); expected train/CLASS/*.png, "
                        "val/CLASS/..., test/CLASS/...")
    return found


def scan_split(split_dir: Any, classes: list[str] | None = None, classes_from: str = "train/") -> SplitFiles:
    """List a split's images by class folder (or a manifest's rows); ``classes`` (from train, or the model: say
    which in ``classes_from``) fixes names and label order."""
    from edgeft.data.manifest import ManifestSplit

    if isinstance(split_dir, ManifestSplit):
        return _manifest_files(split_dir, classes, classes_from)
    if not split_dir.is_dir():
        raise DataError(f"split folder not found: {split_dir}")
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p.name for p in split_dir.iterdir() if p.is_file() and is_image(p)]
    if not class_dirs:
        if any(split_dir.glob("*.json")) or split_dir.parent.name == "images":
            raise DataError(f"{split_dir} holds box annotations (COCO JSON or YOLO labels), not class folders: it is "
                            "a detector's data; measure a detector on it (`edgeft detect`), a classifier on class "
                            "folders")
        raise DataError(f"{split_dir} has no class subfolders" + (f" (found {len(loose)} loose images; put them in "
                        "one folder per class)" if loose else " and no images"))
    names = [p.name for p in class_dirs]
    if classes is None:
        classes = names
    else:
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DataError(f"{split_dir} has class folder(s) {extra} that {classes_from} does not have ({classes}); "
                            f"every split must use the classes of {classes_from}")
    paths: list[Path] = []
    labels: list[int] = []
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and is_image(p))
        if not files:
            raise DataError(f"class folder {d} has no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it")
        paths += files
        labels += [classes.index(d.name)] * len(files)
    return SplitFiles(name=split_dir.name, paths=paths, labels=labels, classes=list(classes))


def _manifest_files(split: Any, classes: list[str] | None, classes_from: str) -> SplitFiles:
    """A manifest split as :class:`SplitFiles`, in the order a folder would list it (by class, then path)."""
    names = sorted(set(split.labels))
    if classes is None:
        classes = names
    extra = [c for c in names if c not in classes]
    if extra:
        raise DataError(f"manifest {split.source}: {split.name} rows have label(s) {extra} that {classes_from} does "
                        f"not have ({classes}); every split must use the classes of {classes_from}")
    order = sorted(range(len(split.paths)), key=lambda i: (classes.index(split.labels[i]), str(split.paths[i])))
    return SplitFiles(name=split.name, paths=[split.paths[i] for i in order],
                      labels=[classes.index(split.labels[i]) for i in order], classes=list(classes))


def decode_split(files: SplitFiles, contract: InputContract, threads: int | None = None) -> ImageSet:
    """Decode and prepare every image of a split; unreadable files are skipped and counted, never fatal."""
    def work(p: Path):
        try:
            return contract.prepare(read_image(p)), None
        except ImageRangeError as e:  # the declaration or the camera is wrong: stop, naming the file
            raise ImageRangeError(f"{p}: {e}") from None
        except DataError as e:
            return None, str(e)

    threads = threads or min(8, (os.cpu_count() or 2))
    images, labels, kept, skipped = [], [], [], []
    with ThreadPoolExecutor(threads) as pool:  # OpenCV releases the GIL while decoding
        results = pool.map(work, files.paths)
        for p, y, (img, err) in zip(files.paths, files.labels,
                                    progress.bar(results, desc=f"decode {files.name}", total=len(files.paths),
                                                 unit="img")):
            if img is None:
                skipped.append((p, err))
                continue
            images.append(img)
            labels.append(y)
            kept.append(p)
    if skipped:
        progress.warn(f"skipped {len(skipped)} unreadable image(s) in {files.name}, e.g. {skipped[0][1]}")
    if not images:
        raise DataError(f"no readable images in split {files.name!r} ({len(skipped)} skipped)")
    dtypes = {im.dtype for im in images}
    if len(dtypes) > 1:  # mixed 8/16-bit: bring all to float in [0, 1]
        from edgeft.contract import pixel_max

        images = [(im.astype(np.float32) / pixel_max(im.dtype)) for im in images]
    return ImageSet(name=files.name, images=np.stack(images), labels=np.asarray(labels, dtype=np.int64),
                    paths=kept, classes=files.classes, skipped=skipped)


def stratified_carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, carved) with ``fraction`` of each class carved out, deterministically."""
    rng = np.random.default_rng(seed)
    keep, carved = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction))
        n = min(max(n, 1), len(idx) - 1) if len(idx) > 1 else 0
        carved += idx[:n].tolist()
        keep += idx[n:].tolist()
    return np.sort(np.asarray(keep, dtype=np.int64)), np.sort(np.asarray(carved, dtype=np.int64))


def subset(s: ImageSet, idx: np.ndarray, name: str) -> ImageSet:
    return ImageSet(name=name, images=s.images[idx], labels=s.labels[idx], paths=[s.paths[i] for i in idx],
                    classes=s.classes, skipped=[])


def with_products(root: str | os.PathLike, s: ImageSet) -> ImageSet:
    """``s`` with each image's product, as the data folder or manifest at ``root`` names them."""
    from edgeft.data.products import products_of

    return replace(s, products=products_of(root, s.paths))


@dataclass
class Dataset:
    """The decoded splits of a data folder. ``val`` is carved from train when the folder has none."""

    root: Path
    classes: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    val_carved: bool = False


def load_dataset(root: str | os.PathLike, contract: InputContract, splits: tuple[str, ...] = SPLITS,
                 val_fraction: float = 0.15, seed: int = 0, classes: list[str] | None = None) -> Dataset:
    """Load the splits of an ImageFolder data set per the contract; carve val from train if missing. ``classes``: a
    model's class names, whose order the labels follow when the data has the same classes (an imported model's
    order need not be sorted like folder names)."""
    found = find_splits(root)
    train_files = scan_split(found["train"])
    if classes is not None and sorted(classes) == sorted(train_files.classes) and classes != train_files.classes:
        train_files = scan_split(found["train"], list(classes), classes_from="the model")
    if len(train_files.classes) < 2:
        raise DataError(f"{getattr(found['train'], 'source', found['train'])} has {len(train_files.classes)} class(es) "
                        f"({', '.join(train_files.classes)}); a classifier needs at least 2")
    classes = train_files.classes
    train = decode_split(train_files, contract)
    carved = False
    val = None
    if "val" in splits and "val" in found:
        val = decode_split(scan_split(found["val"], classes), contract)
    elif "val" in splits:
        keep, cut = stratified_carve(train.labels, val_fraction, seed)
        train, val = subset(train, keep, "train"), subset(train, cut, "val")
        carved = True
        progress.warn(f"{root} has no val/ split; carved {len(val)} images ({val_fraction:.0%} of each class) "
                      f"from train with seed {seed}")
    test = decode_split(scan_split(found["test"], classes), contract) if "test" in splits and "test" in found else None
    if val is None:
        val = train
    return Dataset(root=Path(root), classes=classes, train=train, val=val, test=test, val_carved=carved)


def load_split(root: str | os.PathLike, split: str, contract: InputContract,
               classes: list[str] | None = None, limit: int | None = None) -> ImageSet:
    """Decode one split of a data folder (for evaluation and calibration). ``limit``: decode at most that many
    images, evenly spread over the split's files (which are sorted by class), so a check on a few images sees every
    class and does not pay for decoding the rest."""
    found = find_splits(root)
    if split not in found:
        raise DataError(f"data folder {root} has no {split}/ split; available: {', '.join(found)}")
    files = scan_split(found[split], classes, classes_from="the model")
    if limit is not None and limit < len(files.paths):
        if limit < 1:
            raise ConfigError(f"the number of images to check must be >= 1, got {limit}")
        idx = np.linspace(0, len(files.paths) - 1, limit).round().astype(int)
        files = replace(files, paths=[files.paths[i] for i in idx], labels=[files.labels[i] for i in idx])
    return with_products(root, decode_split(files, contract))


def read_grades(root: str | os.PathLike, csv_name: str, column: str, s: ImageSet) -> np.ndarray:
    """An expert's probability (``column`` of ``root/csv_name``) for every image of split ``s``, found by the CSV's
    ``split``, ``class`` and ``file`` columns (as ``edgeft data elpv`` writes ``split.csv``)."""
    import csv

    path = Path(root) / csv_name
    if not path.is_file():
        raise DataError(f"grades: {path} not found; give a CSV in the data folder with split, class, file and "
                        f"{column} columns")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("split", "class", "file", column) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"grades: {path} has no {missing[0]!r} column (it has {', '.join(reader.fieldnames or [])})")
        table = {}
        for row in reader:
            try:
                table[(row["split"], row["class"], row["file"])] = float(row[column])
            except ValueError:
                raise DataError(f"grades: {path} row {row['file']!r}: {column} must be a number, got "
                                f"{row[column]!r}") from None
    keys = [(s.name, p.parent.name, p.name) for p in s.paths]
    absent = [k for k in keys if k not in table]
    if absent:
        raise DataError(f"grades: {len(absent)} of {len(keys)} {s.name} images are not in {path} (first: "
                        f"{'/'.join(absent[0])}); grade every image or leave grades out")
    values = np.array([table[k] for k in keys], dtype=np.float32)
    if values.min() < 0 or values.max() > 1:
        raise DataError(f"grades: {column} in {path} must be probabilities in [0, 1], found {values.min():g}.."
                        f"{values.max():g}")
    return values
