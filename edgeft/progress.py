"""Progress bars for long work (epochs, decoding, calibration, benchmark runs) with one quiet switch.

The CLI's ``--quiet`` (or ``EDGEFT_QUIET=1``) turns every bar off, for CI logs. When stderr is not a terminal
(``make demo > log``, a pipe, a service's journal), a redrawn bar would become thousands of carriage-return
frames, so each bar prints plain lines instead: one per finished epoch (a bar that is kept, ``leave=True``) and
one when any other bar finishes, with its count and time.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

from edgeft.redact import redact_text

T = TypeVar("T")

_quiet = os.environ.get("EDGEFT_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def bar(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
        leave: bool = False):
    """A tqdm bar on stderr when it is a terminal, plain lines when it is not, nothing in quiet mode."""
    if not _quiet and not _isatty(sys.stderr):
        return LineBar(iterable, desc=desc, total=total, unit=unit, leave=leave)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=_quiet, file=sys.stderr,
                dynamic_ncols=True)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


class LineBar:
    """The part of tqdm's interface edgeft uses, printing whole lines: a kept bar (``leave``) prints a line each
    time its count moves and the caller then sets the postfix (the epoch's loss and accuracy) or closes it; any
    other bar prints one line when it finishes."""

    def __init__(self, iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
                 unit: str = "it", leave: bool = False) -> None:
        self.iterable, self.desc, self.unit, self.leave = iterable, desc, unit, leave
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.postfix = total, 0, ""
        self._start, self._moved, self._closed = time.monotonic(), False, False

    def __iter__(self) -> Iterator[T]:
        try:
            for item in self.iterable or ():
                self.n += 1  # counted when handed out: a consumer may stop after the last item without asking again
                yield item
        finally:
            self.close()

    def __enter__(self) -> "LineBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._moved = self._moved or n > 0

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.leave and self._moved:
            self._line()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._moved or not self.leave:
            self._line()

    def _line(self) -> None:
        self._moved = False
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count} {self.unit} in {time.monotonic() - self._start:.1f} s{tail}", file=sys.stderr,
              flush=True)


def info(message: str) -> None:
    """A status line on stderr, suppressed in quiet mode; URL credentials in it are redacted."""
    if not _quiet:
        print(redact_text(message), file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning line on stderr; always shown, since it may explain a result."""
    print(f"warning: {redact_text(message)}", file=sys.stderr, flush=True)
