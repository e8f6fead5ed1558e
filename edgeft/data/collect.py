"""``edgeft data collect SAVED --into DATA``: the frames a station kept (``edgeft infer --save``), labelled by a
person, become training data.

A person labels the kept parts in one of two ways: a CSV (columns ``part`` and ``label``; ``part`` is the kept
frame's file name, with or without its stream folder and suffix), or by moving the PNG files into one folder per
class (``--sorted DIR``: ``DIR/CLASS/*.png``). A part without a label stays where it is, not collected. Each
labelled part is copied into the data folder, most of each class into ``train/CLASS/``, a share into
``new-test/CLASS/`` (and with ``--val-share`` one into ``val/CLASS/``, where operating points are chosen): a test
slice of new parts that no model was trained or tuned on, beside the old ``test/``, which stays as it was (the
deployed model and its successor are compared on both). ``DATA/collected.jsonl`` keeps where each
one came from: the station's stream, the time, the model that judged it (its hash), its decision and score, and who
labelled it how.

Everything is checked before a file is written: kept frames without their sidecar, a CSV naming a part that was not
kept or a class the data does not have, a folder of another class; one line each, exit 2, nothing copied. A part
collected before is not collected twice.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeft.errors import DataError, close_matches

NEW_TEST = "new-test"  # the slice of new parts, beside the frozen test/
PROVENANCE = "collected.jsonl"


@dataclass(frozen=True)
class KeptPart:
    """A frame the station kept, and its sidecar (prediction, decision, policy, model hash)."""

    png: Path
    sidecar: dict[str, Any]
    key: str  # STREAM/STEM, the part's id in a label CSV

    @property
    def stem(self) -> str:
        return self.png.stem


def read_kept(saved: Path) -> list[KeptPart]:
    """Every kept frame under ``saved`` (``STREAM/*.png``) with its sidecar; refuses frames without one."""
    saved = Path(saved)
    if not saved.is_dir():
        raise DataError(f"{saved} is not a folder of kept frames (what `edgeft infer --save KINDS DIR` writes)")
    pngs = sorted(p for p in saved.rglob("*.png") if not p.name.startswith("."))
    if not pngs:
        raise DataError(f"{saved} holds no kept frames (*.png under a folder per stream)")
    orphans = [p for p in pngs if not p.with_suffix(".json").is_file()]
    if orphans:
        raise DataError(f"{len(orphans)} kept frame(s) in {saved} have no JSON sidecar (the first: "
                        f"{orphans[0].relative_to(saved)}); a sidecar records the prediction and the model a part came "
                        "from: collect frames the station kept, with their .json")
    out = []
    for p in pngs:
        try:
            side = json.loads(p.with_suffix(".json").read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"sidecar {p.with_suffix('.json')} cannot be read: {e}") from None
        out.append(KeptPart(p, side, f"{p.parent.relative_to(saved).as_posix()}/{p.stem}"))
    return out


def _index(parts: list[KeptPart]) -> tuple[dict[str, KeptPart], dict[str, list[KeptPart]]]:
    """The kept parts by key (STREAM/STEM) and by stem alone (a stem kept by several streams is ambiguous)."""
    by_stem: dict[str, list[KeptPart]] = {}
    for p in parts:
        by_stem.setdefault(p.stem, []).append(p)
    return {p.key: p for p in parts}, by_stem


def _find(part: str, kept: dict[str, KeptPart], by_stem: dict[str, list[KeptPart]], where: str) -> KeptPart:
    key = part.strip().removesuffix(".png")
    if key in kept:
        return kept[key]
    hits = by_stem.get(Path(key).name, [])
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise DataError(f"{where}: part {part!r} is kept by {len(hits)} streams; name it with its stream folder "
                        f"({hits[0].key})")
    raise DataError(f"{where}: part {part!r} is not among the kept frames{close_matches(key, list(kept))}")


def labels_from_csv(path: Path, parts: list[KeptPart], classes: list[str]) -> dict[str, tuple[KeptPart, str]]:
    """{part key: (part, label)} from a CSV with ``part`` and ``label`` columns (an empty label: not labelled yet)."""
    kept, by_stem = _index(parts)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"--labels {path}: cannot read it as CSV: {e}") from None
    if not rows or "part" not in header or "label" not in header:
        raise DataError(f"--labels {path}: needs a header with the columns part and label, and a row per part")
    out: dict[str, tuple[KeptPart, str]] = {}
    for k, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip()
        part = _find(row.get("part") or "", kept, by_stem, f"--labels {path} line {k}")
        if not label:
            continue
        if label not in classes:
            raise DataError(f"--labels {path} line {k}: class {label!r} is not one of the data's ({', '.join(classes)})"
                            f"{close_matches(label, classes)}")
        out[part.key] = (part, label)
    return out


def labels_from_folders(sorted_dir: Path, parts: list[KeptPart], classes: list[str]) -> dict[str, tuple[KeptPart, str]]:
    """{part key: (part, label)} from the kept PNGs a person moved into ``sorted_dir/CLASS/``."""
    sorted_dir = Path(sorted_dir)
    if not sorted_dir.is_dir():
        raise DataError(f"--sorted {sorted_dir} is not a folder (one subfolder per class, holding kept PNGs)")
    kept, by_stem = _index(parts)
    out: dict[str, tuple[KeptPart, str]] = {}
    for d in sorted(q for q in sorted_dir.iterdir() if q.is_dir() and not q.name.startswith(".")):
        if d.name not in classes:
            raise DataError(f"--sorted {sorted_dir}: folder {d.name!r} is not a class of the data "
                            f"({', '.join(classes)}){close_matches(d.name, classes)}")
        for png in sorted(d.rglob("*.png")):
            part = _find(png.stem, kept, by_stem, f"--sorted {d.name}/{png.name}")
            out[part.key] = (part, d.name)
    if not out:
        raise DataError(f"--sorted {sorted_dir} holds no kept PNGs in class folders")
    return out


def collect(saved: Path, into: Path, labels: Path | None = None, sorted_dir: Path | None = None,
            test_share: float = 0.3, seed: int = 0, val_share: float = 0.0,
            product: str | None = None) -> dict[str, Any]:
    """Copy the labelled kept parts into ``into`` (train, the new test slice, and with ``val_share`` val, where
    operating points are chosen: a share there moves them toward the line as it is now) and record where each came
    from; returns counts per split and class. Each part's product (``product``, else the one its station stream
    named, ``infer --product``) goes into ``into``'s products.csv, for operating points per product."""
    from edgeft.data.products import PRODUCTS_FILE, append_products
    from edgeft.data.imagefolder import find_splits, scan_split

    if (labels is None) == (sorted_dir is None):
        raise DataError("say how the kept parts were labelled: --labels CSV (part,label) or --sorted DIR (class folders)")
    if not 0 <= test_share < 1 or not 0 <= val_share < 1 or test_share + val_share >= 1:
        raise DataError(f"--test-share and --val-share must be in [0, 1) and leave a share for train, got {test_share} "
                        f"and {val_share}")
    into = Path(into)
    splits = find_splits(into)
    if not isinstance(splits["train"], Path):
        raise DataError(f"--into {into} is a manifest; collect into a folder data set (train/CLASS/...)")
    classes = scan_split(splits["train"]).classes
    parts = read_kept(Path(saved))
    labelled = (labels_from_csv(Path(labels), parts, classes) if labels is not None
                else labels_from_folders(Path(sorted_dir), parts, classes))  # type: ignore[arg-type]
    prov = into / PROVENANCE
    done = set()
    if prov.is_file():
        done = {json.loads(line)["part"] for line in prov.read_text().splitlines() if line.strip()}
    fresh = [(p, lab) for key, (p, lab) in sorted(labelled.items()) if key not in done]
    rng = random.Random(seed)
    by_class: dict[str, list[KeptPart]] = {}
    for p, lab in fresh:
        by_class.setdefault(lab, []).append(p)
    plan: list[tuple[KeptPart, str, str, Path]] = []
    for lab, ps in sorted(by_class.items()):
        ps = list(ps)
        rng.shuffle(ps)
        n_test = int(round(len(ps) * test_share))
        n_val = int(round(len(ps) * val_share))
        for k, p in enumerate(ps):
            split = NEW_TEST if k < n_test else "val" if k < n_test + n_val else "train"
            name = f"kept-{p.key.replace('/', '-')}.png"
            plan.append((p, lab, split, into / split / lab / name))
    clash = [dst for *_, dst in plan if dst.exists()]
    if clash:
        raise DataError(f"{clash[0]} exists but {prov.name} does not list it; remove it or restore {prov.name}")
    written: list[Path] = []
    records = []
    table = into / PRODUCTS_FILE
    table_before = table.read_bytes() if table.is_file() else None
    how = f"csv {labels}" if labels is not None else f"folders {sorted_dir}"
    try:
        for p, lab, split, dst in plan:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(p.png, tmp)
            os.replace(tmp, dst)
            written.append(dst)
            s = p.sidecar
            records.append({"part": p.key, "file": dst.relative_to(into).as_posix(), "split": split, "label": lab,
                            "labelled_by": how, "stream": s.get("stream"), "time": s.get("timestamp"),
                            "frame": s.get("frame"), "model": s.get("model"), "decision": s.get("decision"),
                            "not_ok": s.get("not_ok"), "predicted": s.get("label"),
                            "product": product or s.get("product")})
        for name in sorted({r["product"] for r in records if r["product"]}):
            append_products(into, [r["file"] for r in records if r["product"] == name], name)
        with open(prov, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    except OSError as e:
        for w in written:
            w.unlink(missing_ok=True)
        if table_before is None:
            table.unlink(missing_ok=True)
        else:
            table.write_bytes(table_before)
        raise DataError(f"collecting into {into} failed ({e.strerror or e}); nothing was added") from None
    counts: dict[str, dict[str, int]] = {}
    for _, lab, split, _ in plan:
        counts.setdefault(split, {}).setdefault(lab, 0)
        counts[split][lab] += 1
    return {"collected": len(plan), "already": len(labelled) - len(fresh), "unlabelled": len(parts) - len(labelled),
            "splits": counts, "provenance": str(prov)}
