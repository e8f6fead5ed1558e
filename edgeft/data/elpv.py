"""The demo data set: electroluminescence images of solar cells from the ``elpv-dataset`` package.

Binary task as in Deitsch et al. (2019): a cell is ``defective`` when its annotated defect probability is
at least 0.5, else ``functional``. Splits are stratified by defect probability *and* cell type
(mono/poly), deterministic for a seed, and the PNG files are copied byte for byte.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from edgeft import progress
from edgeft.artifact import staging_dir
from edgeft.errors import DataError, DependencyError

CLASSES = ("defective", "functional")  # sorted, as ImageFolder orders them
LICENCE = """\
Images: ELPV data set, Buerhop-Lutz, Deitsch et al., https://github.com/zae-bayern/elpv-dataset
Licence: Creative Commons Attribution-NonCommercial-ShareAlike 4.0 (CC BY-NC-SA 4.0).
Cite: S. Deitsch, V. Christlein, S. Berger, C. Buerhop-Lutz, A. Maier, F. Gallwitz, C. Riess,
"Automatic classification of defective photovoltaic module cells in electroluminescence images",
Solar Energy 185 (2019) 455-468.
Copied unchanged from the installed PyPI package elpv-dataset by `edgeft data elpv`.
"""


def package_root() -> Path:
    try:
        import elpv_dataset
    except ImportError:
        raise DependencyError("the demo data needs the package elpv-dataset; install it with: "
                              "pip install 'edgeft[demo]'") from None
    root = Path(elpv_dataset.__file__).parent / "data"
    if not (root / "labels.csv").is_file():
        raise DataError(f"elpv-dataset is installed but {root / 'labels.csv'} is missing; reinstall it")
    return root


def read_labels(root: Path) -> list[tuple[str, float, str]]:
    """(relative image path, defect probability, cell type) for every image, as in the package's labels.csv."""
    rows = []
    for line in (root / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], float(parts[1]), parts[2]))
    if not rows:
        raise DataError(f"{root / 'labels.csv'} lists no images")
    return rows


def split_indices(strata: list[str], fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Assign 'train'/'val'/'test' to each item, stratified by ``strata``, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    out = [""] * len(strata)
    for key in sorted(set(strata)):
        idx = np.flatnonzero(np.asarray(strata) == key)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * fractions[1]))
        n_test = int(round(len(idx) * fractions[2]))
        for j, i in enumerate(idx):
            out[i] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return out


def build(out: str | os.PathLike, fractions: tuple[float, float, float] = (0.70, 0.15, 0.15), seed: int = 0,
          threshold: float = 0.5, force: bool = False) -> dict[str, Counter]:
    """Write the ELPV binary ImageFolder (train/val/test × defective/functional) to ``out``, atomically."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise DataError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    root = package_root()
    rows = read_labels(root)
    strata = [f"{prob:.3f}-{kind}" for _, prob, kind in rows]
    splits = split_indices(strata, fractions, seed)
    counts: dict[str, Counter] = {s: Counter() for s in ("train", "val", "test")}
    with staging_dir(out, force=force) as tmp:
        for split in counts:
            for c in CLASSES:
                (tmp / split / c).mkdir(parents=True)
        manifest = [("split", "class", "file", "defect_probability", "cell_type")]
        for (rel, prob, kind), split in zip(progress.bar(rows, desc="elpv", unit="img"), splits):
            label = "defective" if prob >= threshold else "functional"
            src = root / rel
            shutil.copyfile(src, tmp / split / label / src.name)
            counts[split][label] += 1
            manifest.append((split, label, src.name, f"{prob:.4f}", kind))
        with open(tmp / "split.csv", "w", newline="") as f:
            csv.writer(f).writerows(manifest)
        (tmp / "LICENSE-DATA.txt").write_text(LICENCE)
        (tmp / "README.txt").write_text(
            f"ELPV binary split made by edgeft: defective = defect probability >= {threshold}; "
            f"fractions train/val/test = {fractions}, stratified by probability and cell type, seed {seed}.\n")
    return counts
