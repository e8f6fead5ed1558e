"""The store's rows grouped into series (one model's metric on one device, backend and batch size) and judged."""

from __future__ import annotations

from dataclasses import dataclass

from edgeft.history.drift import MIN_CHANGE, Z, Verdict, check
from edgeft.history.store import Row


@dataclass(frozen=True)
class Series:
    kind: str  # bench | gate: measured differently, so never one series
    device: str
    model: str
    backend: str
    batch: int
    metric: str
    rows: list[Row]

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.rows]

    def judge(self, reference: int = 10, recent: int = 3, min_change: float = MIN_CHANGE, z: float = Z) -> Verdict:
        return check(self.values, self.metric, reference, recent, min_change, z)

    def title(self) -> str:
        return f"{self.model} {self.metric} ({self.kind}) on {self.backend} batch {self.batch}, device {self.device}"


def group(rows: list[Row]) -> list[Series]:
    """Rows (oldest first) split by kind, device, model, backend, batch and metric: never mixed across devices."""
    out: dict[tuple, list[Row]] = {}
    for r in rows:
        out.setdefault((r.kind, r.device, r.model, r.backend, r.batch, r.metric), []).append(r)
    return [Series(*k, rows=v) for k, v in sorted(out.items())]
