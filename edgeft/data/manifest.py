"""A manifest instead of class folders: one CSV or JSON-lines file that lists every image with its label and split.

Lines keep their images where the camera wrote them (by date, by station) and their labels in a table; copying
them into ``train/CLASS/`` folders loses where they came from. A manifest says the same thing as the folders:

    path,label,split                                        {"path": "2026-12-01/cam1/0001.png", "label": "ok",
    2026-12-01/cam1/0001.png,ok,train                        "split": "train"}
    2026-12-01/cam1/0002.png,scratch,val                    (one JSON object a line)

Paths are relative to the manifest's folder (or absolute); the split is ``train``, ``val`` or ``test``; class names
are the labels, ordered as folder names are (sorted). Everything is checked when the manifest is read (a file that
is missing, an unknown split, a row without a label), so a bad line stops a stage before it writes anything.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeft.errors import DataError, close_matches

MANIFEST_SUFFIXES = (".csv", ".jsonl")
COLUMNS = ("path", "label", "split")


@dataclass
class ManifestSplit:
    """The rows of one split of a manifest: absolute image paths and their labels (class names)."""

    name: str
    source: Path
    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def is_dir(self) -> bool:  # a split, not a folder: readers that list folders ask this
        return False


def is_manifest(path: Path) -> bool:
    return path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file()


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with a header, or of a JSON-lines file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"manifest {path} has no {missing[0]!r} column (it has "
                            f"{', '.join(reader.fieldnames or []) or 'no header'}); the header must name "
                            f"{', '.join(COLUMNS)}")
        return [(i + 2, {k: (v or "").strip() for k, v in row.items() if k}) for i, row in enumerate(reader)]
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"manifest {path} line {i} is not JSON ({e.msg}); write one object a line with "
                            f"{', '.join(COLUMNS)}") from None
        if not isinstance(row, dict):
            raise DataError(f"manifest {path} line {i} is not an object with {', '.join(COLUMNS)}")
        out.append((i, {k: str(v).strip() for k, v in row.items() if v is not None}))
    return out


def read_manifest(path: str | Path, splits: tuple[str, ...]) -> dict[str, ManifestSplit]:
    """Every split a manifest lists (``splits`` are the known names), each file checked to exist."""
    path = Path(path)
    found: dict[str, ManifestSplit] = {}
    for line, row in _rows(path):
        for column in COLUMNS:
            if not row.get(column):
                raise DataError(f"manifest {path} line {line} has no {column}; every row names "
                                f"{', '.join(COLUMNS)}")
        split = row["split"]
        if split not in splits:
            raise DataError(f"manifest {path} line {line}: unknown split {split!r}{close_matches(split, splits)}; "
                            f"use {', '.join(splits)}")
        image = Path(row["path"])
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise DataError(f"manifest {path} line {line}: image not found: {image}")
        s = found.setdefault(split, ManifestSplit(name=split, source=path))
        s.paths.append(image)
        s.labels.append(row["label"])
    if not found:
        raise DataError(f"manifest {path} lists no images")
    return found


def manifest_column(path: str | Path, column: str, images: list[Path]) -> list[str | None] | None:
    """An optional column's value for each of ``images`` (None where a row leaves it empty), or None when no row of
    the manifest has it."""
    path = Path(path)
    table: dict[Path, str] = {}
    for _, row in _rows(path):
        if row.get(column):
            image = Path(row["path"])
            table[(image if image.is_absolute() else path.parent / image).resolve()] = row[column]
    if not table:
        return None
    return [table.get(Path(p).resolve()) for p in images]
