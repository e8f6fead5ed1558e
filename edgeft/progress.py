"""Progress bars for long work (epochs, decoding, calibration, benchmark runs) with one quiet switch.

The CLI's ``--quiet`` (or ``EDGEFT_QUIET=1``) turns every bar off, for CI logs.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

_quiet = os.environ.get("EDGEFT_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def bar(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
        leave: bool = False):
    """A tqdm bar on stderr, disabled in quiet mode."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=_quiet, file=sys.stderr,
                dynamic_ncols=True)


def info(message: str) -> None:
    """A status line on stderr, suppressed in quiet mode."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning line on stderr; always shown, since it may explain a result."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
