"""Which product each image shows, where a line runs more than one (mono and poly cells, two housings): each product
gets its own operating point (:mod:`edgeft.decision`), because one threshold over a mix moves with the mix.

A data folder says it in ``products.csv``, rows of a path pattern and a product; a path (relative to the folder,
``/``-separated, e.g. ``val/defective/kept-line2-0042.png``) takes the product of the first pattern it matches
(``fnmatch``: ``*`` crosses ``/``); ``edgeft data collect`` writes the parts it adds ahead of the rows there, one
exact path each, with ``--product`` or the product the station's stream named:

    pattern,product
    */kept-line2-*,poly
    *,mono

A manifest says it in an optional ``product`` column. An image no row matches has no product.
"""

from __future__ import annotations

import csv
import fnmatch
import re
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
    exact: dict[str, int] = {}  # a row naming one path (collect writes one a part): looked up, not matched
    for i, (pattern, _) in enumerate(rows):
        plain = _unescape(pattern)
        if plain is not None:
            exact.setdefault(plain, i)
    globs = [(i, pattern) for i, (pattern, _) in enumerate(rows) if _unescape(pattern) is None]
    base = r.resolve()
    out: list[str | None] = []
    for p in paths:
        try:
            rel = Path(p).resolve().relative_to(base).as_posix()
        except ValueError:
            rel = Path(p).as_posix()
        first = exact.get(rel, len(rows))
        first = next((i for i, pattern in globs if i < first and fnmatch.fnmatchcase(rel, pattern)), first)
        out.append(rows[first][1] if first < len(rows) else None)
    return out


def _unescape(pattern: str) -> str | None:
    """The one path a pattern matches when it has no wildcard (``[x]`` brackets one character), else None."""
    if any(c in re.sub(r"\[(.)\]", "", pattern) for c in "*?["):
        return None
    return re.sub(r"\[(.)\]", r"\1", pattern)


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
