"""Which product each image shows, where a line runs more than one (mono and poly cells, two housings): each product
gets its own operating point (:mod:`edgeft.decision`), because one threshold over a mix moves with the mix.

A data folder says it in ``products.csv``, rows of a path pattern and a product; a path (relative to the folder,
``/``-separated, e.g. ``val/defective/kept-line2-0042.png``) takes the product of the first pattern it matches
(``fnmatch``: ``*`` crosses ``/``), and ``edgeft data collect --product`` appends the parts it adds:

    pattern,product
    */kept-line2-*,poly
    *,mono

A manifest says it in an optional ``product`` column. An image no row matches has no product.
"""

from __future__ import annotations

import csv
import fnmatch
from pathlib import Path

from edgeft.errors import DataError

PRODUCTS_FILE = "products.csv"


def _patterns(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("pattern", "product") if c not in (reader.fieldnames or [])]
        if missing:
            has = ", ".join(reader.fieldnames or []) or "no header"
            raise DataError(f"{path} has no {missing[0]!r} column (it has {has}); its header must be: pattern,product")
        rows = []
        for i, row in enumerate(reader, start=2):
            pattern, product = (row.get("pattern") or "").strip(), (row.get("product") or "").strip()
            if not pattern or not product:
                raise DataError(f"{path} line {i} has no {'pattern' if not pattern else 'product'}; every row names "
                                "a path pattern and a product")
            rows.append((pattern, product))
    return rows


def products_of(root: str | Path, paths: list[Path]) -> list[str | None] | None:
    """The product of each image (None where nothing names one), or None when the data names no products at all."""
    from edgeft.data.manifest import is_manifest, manifest_column

    r = Path(root)
    if is_manifest(r):
        return manifest_column(r, "product", paths)
    table = r / PRODUCTS_FILE
    if not table.is_file():
        return None
    rows = _patterns(table)
    out: list[str | None] = []
    for p in paths:
        try:
            rel = Path(p).resolve().relative_to(r.resolve()).as_posix()
        except ValueError:
            rel = Path(p).as_posix()
        out.append(next((product for pattern, product in rows if fnmatch.fnmatchcase(rel, pattern)), None))
    return out


def append_products(root: str | Path, files: list[str], product: str) -> None:
    """Name ``product`` for ``files`` (paths relative to ``root``) in its products.csv, ahead of the rows there: the
    exact paths of new parts win over the patterns the folder had."""
    table = Path(root) / PRODUCTS_FILE
    old = _patterns(table) if table.is_file() else []
    tmp = table.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["pattern", "product"], *[[fnmatch_escape(x), product] for x in files], *old])
    tmp.replace(table)


def fnmatch_escape(path: str) -> str:
    """``path`` as a pattern that matches only itself ([, ], * and ? bracketed)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in path)
