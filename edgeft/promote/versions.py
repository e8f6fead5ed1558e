"""A model directory the station watches: numbered versions and a ``current`` link.

    models/line7/
      v0001/            the model that ran first (an artifact directory, copied whole)
      v0002/            the promoted one
      current -> v0002  what `edgeft infer models/line7/current --watch` serves
      history.jsonl     every promotion and rollback: when, from which version to which, and why

A new version is copied in under a temporary name and renamed when complete; ``current`` is flipped by renaming a new
link over it (atomic on POSIX), so the station's watcher sees either the old model or the new one, never a half-written
one, and swaps between two frames. Old versions stay: ``edgeft rollback DIR`` points ``current`` back at the one
before. Nothing here deletes a version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from edgeft.errors import ConfigError
from edgeft.station.swap import model_hash_at  # the hash the station's watcher compares

CURRENT = "current"
HISTORY = "history.jsonl"
_VERSION = re.compile(r"v(\d{4,})")


def versions(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """The versions under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in root.iterdir() if (m := _VERSION.fullmatch(p.name)) and p.is_dir()]
    return sorted(out)


def current(root: str | os.PathLike) -> int | None:
    """The version ``root/current`` points at (None: no link yet)."""
    link = Path(root) / CURRENT
    if not link.is_symlink():
        if link.exists():
            raise ConfigError(f"{link} is not a link to a version; the model directory's current must be a symlink "
                              "(ln -sfn v0001 current)")
        return None
    m = _VERSION.fullmatch(Path(os.readlink(link)).name)
    if not m or not link.is_dir():
        raise ConfigError(f"{link} points at {os.readlink(link)}, not a version of {root}: point it at one "
                          f"(ln -sfn v0001 {link})")
    return int(m.group(1))


def _flip(root: Path, version: Path) -> None:
    tmp = root / f".{CURRENT}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(version.name, tmp)  # relative: the directory may be mounted elsewhere in a container
    os.replace(tmp, root / CURRENT)


def _log(root: Path, record: dict[str, Any]) -> None:
    with open(root / HISTORY, "a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}) + "\n")


def _copy_in(root: Path, source: Path, n: int, decision: dict[str, Any] | None) -> Path:
    """``source`` copied whole as version ``n`` (under a temporary name until complete); ``decision``: the operating
    point the version ships with, written into its meta.json before it becomes visible."""
    from edgeft.artifact import load, staging_dir, update_metrics

    dst = root / f"v{n:04d}"
    with staging_dir(dst) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        if decision is not None:
            update_metrics(load(tmp), {}, extra={"decision": decision})
    return dst


def check(root: str | os.PathLike, deployed: Path) -> None:
    """Refuse a model directory that cannot take a successor of ``deployed``: versions without a ``current`` link, or a
    ``current`` that serves another model than the one the candidate is compared with."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--into {root} is a file; name a model directory (it is made when absent)")
    have = versions(root)
    now = current(root)
    if have and now is None:
        raise ConfigError(f"{root} holds versions but no {CURRENT} link; point it at the running one "
                          f"(ln -sfn {have[-1][1].name} {root / CURRENT})")
    serving, compared = (model_hash_at(root / CURRENT), model_hash_at(deployed)) if now is not None else (None, None)
    if serving != compared:
        raise ConfigError(f"{root / CURRENT} serves another model (sha256 {str(serving)[:12]}) than the deployed one "
                          f"the candidate is compared with ({deployed}, sha256 {str(compared)[:12]}); compare against "
                          f"{root / CURRENT}, what the station runs")


def install(root: str | os.PathLike, deployed: Path, candidate: Path, decision: dict[str, Any] | None,
            record: dict[str, Any]) -> dict[str, Any]:
    """Make ``candidate`` the next version of ``root`` and point ``current`` at it. In an empty directory the deployed
    model becomes v0001 first (what a rollback returns to); otherwise ``current`` must be the deployed model the
    candidate was compared with."""
    root = Path(root)
    check(root, deployed)
    root.mkdir(parents=True, exist_ok=True)
    have = versions(root)
    now = current(root)
    dep_sha = model_hash_at(deployed)
    if not have:
        first = _copy_in(root, deployed, 1, None)
        _flip(root, first)
        _log(root, {"event": "adopt", "to": first.name, "model_sha256": dep_sha, "source": str(deployed)})
        have, now = [(1, first)], 1
    nxt = have[-1][0] + 1
    new = _copy_in(root, candidate, nxt, decision)
    _flip(root, new)
    _log(root, {"event": "promote", "from": f"v{now:04d}", "to": new.name, "model_sha256": model_hash_at(new),
                "source": str(candidate), **record})
    return {"dir": str(root), "version": new.name, "previous": f"v{now:04d}", "current": str(root / CURRENT)}


def rollback(root: str | os.PathLike, to: int | None = None, reason: str = "") -> dict[str, Any]:
    """Point ``root/current`` at version ``to`` (default: the newest one older than the current one)."""
    root = Path(root)
    have = dict(versions(root))
    if not have:
        raise ConfigError(f"{root} holds no model versions (v0001, v0002, ...): nothing to roll back to")
    now = current(root)
    if to is None:
        older = [n for n in have if now is not None and n < now]
        if not older:
            raise ConfigError(f"{root / CURRENT} is v{now:04d}, the oldest version: nothing older to roll back to")
        to = max(older)
    if to not in have:
        raise ConfigError(f"{root} has no version {to}; it has {', '.join(p.name for p in have.values())}")
    if model_hash_at(have[to]) is None:
        raise ConfigError(f"{have[to]} has no readable meta.json: it is not a model version to serve")
    _flip(root, have[to])
    _log(root, {"event": "rollback", "from": f"v{now:04d}" if now is not None else None, "to": f"v{to:04d}",
                "model_sha256": model_hash_at(have[to]), "reason": reason})
    return {"dir": str(root), "version": f"v{to:04d}", "previous": f"v{now:04d}" if now is not None else None}
