"""The settings of an anomaly fit, declared and validated once, with errors that name the field."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgeft.contract import RESIZE_POLICIES
from edgeft.errors import ConfigError, close_matches
from edgeft.tasks.anomaly.graph import METHODS, STORAGES

MIN_GOOD_IMAGES = 10  # fewer good images describe no line's variation; a real line gives hundreds


@dataclass
class AnomalyConfig:
    """How to fit an anomaly model on the good images of ``train/<good>``.

    ``layers``: timm feature levels of ``model`` (Lite0: 2 = stride 8, 40 channels; 3 = stride 16, 112 channels).
    ``method``: ``padim`` (a Gaussian per map position; parts in a fixture) or ``patchcore`` (nearest neighbour in a
    coreset of good patches; parts anywhere in the frame). ``grid``: the heatmap's side, None = the deepest level's
    map. ``coreset``: patchcore's bank as a fraction of all good patches, at most ``max_bank`` entries.
    ``dims``: keep this many of the feature channels, a random subset (seeded), to shrink the statistics (padim:
    by the square of the share kept) and the distance computation; None keeps all.
    ``storage``: the bulk of the statistics (padim's inverse covariances, patchcore's bank) in ``fp32`` or ``fp16``
    (half the bytes on the camera; the distances are computed in FP32 either way).
    ``eps``: padim's covariance regularisation (added to the diagonal). The decision rule (``target_recall``, ...)
    picks the threshold on val, which needs anomalous images there.
    """

    good: str = "good"
    model: str = "efficientnet_lite0"
    weights: str | None = "auto"
    image_size: int | None = 224
    resize: str | None = "stretch"
    layers: list[int] = field(default_factory=lambda: [2, 3])
    method: str = "padim"
    pool: int = 3
    grid: int | None = None
    dims: int | None = None
    storage: str = "fp32"
    eps: float = 0.01
    coreset: float = 0.01
    max_bank: int = 16384
    chunk: int = 4096
    batch_size: int = 16
    threads: int | None = None
    seed: int = 0
    target_recall: float | None = 0.95
    max_false_reject: float | None = None
    escape_cost: float | None = None
    false_reject_cost: float = 1.0
    review_budget: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"anomaly.method must be one of {', '.join(METHODS)}, got {self.method!r}"
                              f"{close_matches(str(self.method), METHODS)}")
        if self.storage not in STORAGES:
            raise ConfigError(f"anomaly.storage must be one of {', '.join(STORAGES)}, got {self.storage!r}"
                              f"{close_matches(str(self.storage), STORAGES)}")
        if self.resize is not None and self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"anomaly.resize must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")
        self.layers = [int(v) for v in self.layers]
        for name, low in (("pool", 1), ("batch_size", 1), ("chunk", 1), ("max_bank", 1)):
            if int(getattr(self, name)) < low:
                raise ConfigError(f"anomaly.{name} must be >= {low}, got {getattr(self, name)}")
        if self.pool % 2 == 0:
            raise ConfigError(f"anomaly.pool must be odd (a neighbourhood centred on each patch), got {self.pool}")
        if self.dims is not None and self.dims < 1:
            raise ConfigError(f"anomaly.dims must be >= 1 (feature channels kept), got {self.dims}")
        if self.grid is not None and self.grid < 1:
            raise ConfigError(f"anomaly.grid must be >= 1 (the heatmap's side), got {self.grid}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"anomaly.image_size must be >= 8 pixels, got {self.image_size}")
        if not 0 < self.coreset <= 1:
            raise ConfigError(f"anomaly.coreset must be in (0, 1] (a fraction of all good patches), got {self.coreset}")
        if self.eps <= 0:
            raise ConfigError(f"anomaly.eps must be > 0 (it keeps the covariance invertible), got {self.eps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
