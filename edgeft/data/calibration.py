"""Calibration sets as manifests: relative image paths, content hashes, and (optionally) the input contract.

INT8 scales depend on the calibration images, so an INT8 build is only reproducible if the images are
pinned. The manifest is small enough to commit next to the recipe; a changed or missing image is
detected when the manifest is used, not silently calibrated on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.contract import InputContract
from edgeft.data.imagefolder import ImageSet, find_splits, read_image, scan_split
from edgeft.errors import ConfigError, DataError

SCHEMA = 1
MIN_IMAGES = 8


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Manifest:
    classes: list[str]
    entries: list[dict[str, str]]  # path (relative to the data root), sha256, label
    input: InputContract | None
    source: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA, "classes": self.classes, "input": self.input.to_dict() if self.input else None,
                "source": self.source, "images": self.entries}


def _base(data: str | os.PathLike) -> Path:
    """Where a manifest's paths are relative to: the data folder, or a data manifest's own folder."""
    root = Path(data)
    return root.parent if root.is_file() else root


def _relative(path: Path, root: Path) -> str:
    """``path`` below ``root`` as a relative POSIX path; one elsewhere (a data manifest may list any) absolute."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.resolve().as_posix()


def create(data: str | os.PathLike, n: int = 512, split: str = "train", seed: int = 0,
           contract: InputContract | None = None, only: str | None = None) -> Manifest:
    """A class-balanced, deterministic sample of ``n`` images from a split of ``data``'s class folders; with ``only``,
    of that one class (an anomaly model is calibrated on its good parts)."""
    if n < MIN_IMAGES:
        raise ConfigError(f"--n must be at least {MIN_IMAGES} calibration images, got {n}")
    found = find_splits(data)
    if split not in found:
        raise DataError(f"data folder {data} has no {split}/ split; available: {', '.join(found)}")
    files = scan_split(found[split])
    if only is not None and only not in files.classes:
        raise DataError(f"{found[split]} has no class folder {only!r} to calibrate on (it has "
                        f"{', '.join(files.classes)})")
    return from_files(files.paths, np.asarray(files.labels), files.classes, data, n, seed, contract,
                      {"split": split, **({"only": only} if only is not None else {})}, only)


def from_files(paths: list[Path], labels: np.ndarray, classes: list[str], data: str | os.PathLike, n: int, seed: int,
               contract: InputContract | None, source: dict[str, Any], only: str | None = None) -> Manifest:
    """The manifest of a class-balanced, deterministic sample of ``n`` of ``paths`` (``labels`` index ``classes``;
    -1: an image of no class, never sampled); with ``only``, of that class alone."""
    if n < MIN_IMAGES:
        raise ConfigError(f"--n must be at least {MIN_IMAGES} calibration images, got {n}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    sampled = [classes.index(only)] if only is not None else list(range(len(classes)))
    per_class = max(1, n // len(sampled))
    chosen: list[int] = []
    for c in sampled:
        idx = np.flatnonzero(labels == c)
        chosen += rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist()
    rest = np.setdiff1d(np.flatnonzero(np.isin(labels, sampled)), chosen)  # top up from the larger classes
    if len(chosen) < n and len(rest):
        chosen += rng.choice(rest, size=min(n - len(chosen), len(rest)), replace=False).tolist()
    root = _base(data)
    entries = [{"path": _relative(paths[i], root), "sha256": _sha256(paths[i]),
                "label": classes[labels[i]]} for i in sorted(chosen)]
    return Manifest(classes=list(classes), entries=entries, input=contract,
                    source={"data": str(data), "seed": seed, "requested": n, **source})


def save(manifest: Manifest, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=1) + "\n")
    os.replace(tmp, out)
    return out


def load(path: str | os.PathLike) -> Manifest:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"calibration manifest not found: {p}; create one with `edgeft calibrate DATA --out {p}`")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"calibration manifest {p} is not valid JSON ({e})") from None
    if d.get("schema_version") != SCHEMA or "images" not in d:
        raise DataError(f"{p} is not an edgeft calibration manifest (schema {SCHEMA})")
    return Manifest(classes=d["classes"], entries=d["images"],
                    input=InputContract.from_dict(d["input"]) if d.get("input") else None, source=d.get("source", {}))


def load_images(manifest: Manifest, data: str | os.PathLike, contract: InputContract) -> ImageSet:
    """Decode the manifest's images from ``data`` per ``contract``, after checking every hash."""
    if manifest.input is not None and manifest.input != contract:
        raise DataError("the calibration manifest was made for another input contract than the model's "
                        f"(manifest {manifest.input.size} {manifest.input.resize}, model {contract.size} "
                        f"{contract.resize}); re-run `edgeft calibrate` with --artifact")
    if len(manifest.entries) < MIN_IMAGES:
        raise DataError(f"the calibration manifest lists {len(manifest.entries)} images; at least {MIN_IMAGES} are "
                        "needed (a few hundred is typical)")
    root = _base(data)
    images, labels, paths = [], [], []
    for e in manifest.entries:
        p = root / e["path"]
        if not p.is_file():
            raise DataError(f"calibration image missing: {p}; pass the data folder the manifest was made from")
        if _sha256(p) != e["sha256"]:
            raise DataError(f"calibration image changed since the manifest was made: {p} (hash mismatch); "
                            "re-run `edgeft calibrate` to pin the new images")
        images.append(contract.prepare(read_image(p)))
        labels.append(manifest.classes.index(e["label"]))
        paths.append(p)
    return ImageSet(name="calibration", images=np.stack(images), labels=np.asarray(labels), paths=paths,
                    classes=manifest.classes)
