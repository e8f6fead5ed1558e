"""``edgeft detect`` / a recipe's ``detect:`` section: the detector's shape (:class:`DetectSpec`) and the training
engine's settings (:class:`~edgeft.training.config.FinetuneConfig`, declared once there), read from one mapping.

Detection's defaults differ from a classifier's where the task needs it: 320 px stretched tiles, batches of 8,
30 epochs without early stop, no free rotation or shift (``augment.p_affine`` 0; boxes follow flips and
90-degree turns exactly, a small rotation would loosen them). A classifier-only field (label smoothing, class
balance, TTA, LoRA, ...) is refused in one line."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from edgeft.errors import ConfigError, close_matches
from edgeft.tasks.detect.model import DetectSpec

TRAIN_KEYS = ("model", "weights", "epochs", "batch_size", "lr", "backbone_lr_mult", "weight_decay", "warmup_epochs",
              "grad_clip", "accum_steps", "patience", "image_size", "resize", "augment", "seed", "device", "threads",
              "distill_alpha")
DEFAULTS = {"model": "efficientnet_lite0", "weights": "auto", "epochs": 30, "batch_size": 8, "lr": 2e-3,
            "backbone_lr_mult": 0.5, "image_size": 320, "resize": "stretch", "patience": 1000,
            "augment": {"p_affine": 0.0, "rotate_deg": 0.0, "shift": 0.0, "scale": 0.0}}


@dataclass(frozen=True)
class DetectConfig:
    """A detector's settings: its shape and how it trains."""

    spec: DetectSpec
    train: Any  # FinetuneConfig, mode full (what trains is set by spec.frozen_stages)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "detect") -> "DetectConfig":
        from edgeft.training.config import FinetuneConfig

        d = dict(d or {})
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a mapping of option: value")
        spec_keys = {f.name for f in fields(DetectSpec)} - {"strides"}
        finetune_keys = {f.name for f in fields(FinetuneConfig)}
        for k in d:
            if k in spec_keys or k in TRAIN_KEYS:
                continue
            if k in finetune_keys:
                raise ConfigError(f"{where}.{k} is a classifier's setting; a detector trains with "
                                  f"{', '.join(TRAIN_KEYS)} and shapes itself with {', '.join(sorted(spec_keys))}")
            raise ConfigError(f"unknown field {where}.{k}{close_matches(str(k), [*spec_keys, *TRAIN_KEYS])}")
        try:
            spec = DetectSpec(**{k: v for k, v in d.items() if k in spec_keys})
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None
        t = {**DEFAULTS, **{k: v for k, v in d.items() if k in TRAIN_KEYS}}
        t["augment"] = {**DEFAULTS["augment"], **(d.get("augment") or {})}
        if t["resize"] not in ("stretch", "letterbox"):
            raise ConfigError(f"{where}.resize must be stretch or letterbox, got {t['resize']!r} (a centre crop would "
                              "cut boxes away)")
        try:
            train = FinetuneConfig.from_dict({**t, "mode": "full"})
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        a = train.augment
        if a.p_affine and (a.rotate_deg or a.shift or a.scale):
            raise ConfigError(f"{where}.augment.p_affine must be 0: boxes follow flips and 90-degree turns exactly, "
                              "not a free rotation, shift or zoom")
        return cls(spec, train)

    def to_dict(self) -> dict[str, Any]:
        """The section as a recipe writes it (what :meth:`from_dict` reads back; the strides come from the model)."""
        t = self.train.to_dict()
        spec = {k: v for k, v in self.spec.to_dict().items() if k != "strides"}
        return {**spec, **{k: t[k] for k in TRAIN_KEYS}}

    def with_threads(self, threads: int | None) -> "DetectConfig":
        return self if not threads or self.train.threads else replace(self, train=replace(self.train, threads=threads))
