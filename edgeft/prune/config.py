"""Pruning configuration, validated on creation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgeft.errors import ConfigError

IMPORTANCES = ("l2", "taylor", "bn-scale")
RECOVER_MODES = ("full", "partial")


@dataclass
class PruneConfig:
    """Channel pruning to a MACs (or parameter) target, then recovery fine-tuning.

    ``target_macs``: fraction of the parent's MACs to keep (0.5 = half). ``target_params`` instead keeps a
    fraction of parameters. ``steps``: the channels go in this many small steps, importance re-estimated
    between steps. ``max_layer_ratio`` caps the fraction of any one layer's channels removed, so no layer
    collapses (global pruning alone took Lite0's stem from 32 to 8 channels). ``round_to`` keeps channel
    counts multiples of 8 for tensor cores. The step that reaches the target stops at the first layer group
that reaches it (a whole step at coarse ``round_to`` overshot: 0.445 of the MACs for 0.5); landing more than
``target_tolerance`` (of the parent's MACs) below the target is reported with the reason. The classifier is never pruned; ``ignore`` protects more layers.
    Recovery re-uses the fine-tuning loop, with knowledge distillation from the unpruned parent when
    ``distill``. ``recover_mode="partial"`` trains only the blocks the parent's fine-tuning trained, on
    features (and teacher logits) of ``recover_views`` augmented views cached once: on a CPU an epoch then
    costs a fifth of a full one, which is what lets enough recovery fit a CPU budget.
    """

    target_macs: float | None = 0.5
    target_params: float | None = None
    importance: str = "l2"
    steps: int = 40
    target_tolerance: float = 0.02  # landing further below the target than this is reported (with why)
    round_to: int = 8
    max_layer_ratio: float = 0.7
    ignore: list[str] = field(default_factory=list)
    global_pruning: bool = True
    taylor_batches: int = 4
    bn_images: int = 512  # training images used to re-estimate BatchNorm statistics after pruning
    recover_epochs: int = 4
    recover_lr: float = 5e-4
    recover_mode: str = "full"
    recover_views: int | None = None  # partial recovery: augmented views cached per image (None: the parent's)
    recover_patience: int | None = None  # stop recovery after this many epochs without a better val score (None:
                                         # run every epoch); the best epoch's weights are kept either way
    distill: bool = True
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.target_params is not None and self.target_macs == 0.5:
            self.target_macs = None  # a params target replaces the default MACs target
        if (self.target_macs is None) == (self.target_params is None):
            raise ConfigError("give exactly one of target_macs and target_params")
        for name in ("target_macs", "target_params"):
            v = getattr(self, name)
            if v is not None and not 0 < float(v) < 1:
                raise ConfigError(f"{name} must be a fraction in (0, 1) of the parent's, got {v}")
        if not 0 <= self.target_tolerance < 0.5:
            raise ConfigError(f"target_tolerance must be in [0, 0.5), got {self.target_tolerance}")
        if not 0 < self.max_layer_ratio < 1:
            raise ConfigError(f"max_layer_ratio must be in (0, 1), got {self.max_layer_ratio}")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}")
        if self.recover_mode not in RECOVER_MODES:
            raise ConfigError(f"recover_mode must be one of {', '.join(RECOVER_MODES)}, got {self.recover_mode!r}")
        for name, low in (("steps", 1), ("round_to", 1), ("taylor_batches", 1), ("recover_epochs", 0), ("bn_images", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.recover_views is not None and self.recover_views not in (1, 2, 4, 8):
            raise ConfigError(f"recover_views must be 1, 2, 4 or 8, got {self.recover_views!r}")
        if self.recover_views is not None and self.recover_mode != "partial":
            raise ConfigError("recover_views applies to recover_mode partial (full recovery caches nothing)")
        if self.recover_patience is not None and (not isinstance(self.recover_patience, int)
                                                  or isinstance(self.recover_patience, bool) or self.recover_patience < 1):
            raise ConfigError(f"recover_patience must be an integer >= 1, got {self.recover_patience!r}")
        if not self.recover_lr > 0:
            raise ConfigError(f"recover_lr must be positive, got {self.recover_lr}")

    @property
    def target(self) -> tuple[str, float]:
        return ("macs", float(self.target_macs)) if self.target_macs is not None else ("params", float(self.target_params))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_for_anomaly(cfg: PruneConfig) -> None:
    """Refuse what pruning an anomaly model's backbone cannot do (one line each, with what to use instead)."""
    if cfg.importance == "taylor":
        raise ConfigError("prune.importance taylor ranks channels by a loss from labels, and an anomaly model is "
                          "fitted without any; use l2 or bn-scale")
    if cfg.recover_mode != "full" or cfg.recover_views is not None or cfg.recover_patience is not None:
        raise ConfigError("prune.recover_mode partial, recover_views and recover_patience are for classifiers; an "
                          "anomaly backbone recovers by distilling its own features for prune.recover_epochs epochs")
    if not cfg.distill:
        raise ConfigError("prune.distill false: an anomaly model has no labels to recover from, only its unpruned "
                          "backbone's features; leave distill on (or recover_epochs: 0 for no recovery)")
