"""Fine-tuning configuration, validated once on creation with errors that name the field."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from edgeft.contract import RESIZE_POLICIES
from edgeft.data.augment import Augmentation
from edgeft.errors import ConfigError, close_matches

MODES = ("full", "partial", "linear", "lora")
MONITORS = ("accuracy", "balanced_accuracy", "auroc", "loss")  # auroc: mean one-vs-rest, how well scores rank
CLASS_BALANCE = ("weighted_loss", "sampler", "none")
CACHE = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FinetuneConfig:
    """How to adapt a pretrained model to a labelled ImageFolder.

    ``mode``: ``full`` trains everything; ``linear`` trains only the classifier on frozen features;
    ``lora`` adapts the blocks ``partial`` would train with low-rank adapters (``lora_rank``, ``lora_alpha``,
    ``lora_dropout``, ``lora_targets``; :mod:`edgeft.training.lora`), merged into the weights when training ends;
    ``partial`` trains the last ``trainable_blocks`` blocks and the head (default: half of the model's blocks,
resolved from the model by :func:`for_model`). ``weights`` ``auto`` takes the ImageNet weights an installed
package ships for ``model`` (``package:efficientnet_lite0``), and a model without them must name its weights
(a file) or ``None``. In ``partial``/``linear`` the
    frozen part's outputs are cached once (``cache_features``), so epochs cost only the trainable part.
    ``backbone_lr_mult`` scales the learning rate of pretrained layers relative to the new head.
    ``tta_views`` (1, 2, 4 or 8 flip/rotation views) is recorded in the artifact for evaluation.
    """

    model: str = "efficientnet_lite0"
    weights: str | None = "auto"  # auto: the weights a package ships for ``model``; None: random initialisation
    mode: str = "partial"
    trainable_blocks: int | None = None  # None: half of the model's blocks (8 of Lite0's 16)
    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-3
    backbone_lr_mult: float = 0.5
    weight_decay: float = 0.02
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 2.0
    accum_steps: int = 1
    patience: int = 6
    monitor: str = "accuracy"
    class_balance: str = "weighted_loss"
    image_size: int | None = None
    resize: str | None = None
    augment: Augmentation = field(default_factory=Augmentation)
    cache_features: str = "auto"
    cache_views: int = 8
    tta_views: int = 1
    drop_rate: float = 0.2
    distill_alpha: float = 0.5  # weight of the distillation term when a teacher is given: the later training
    distill_temperature: float = 4.0  # stages (pruning recovery, QAT) inherit it and distil from this model
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True
    threads: int | None = None
    val_fraction: float = 0.15
    grades: str | None = None  # "FILE.csv:COLUMN:CLASS": train on an expert's probability of CLASS per image
    lora_rank: int = 8  # mode lora: the adapters' rank
    lora_alpha: float = 16.0  # mode lora: the adapters' scale is alpha / rank
    lora_dropout: float = 0.0  # mode lora: dropout on the adapters' input
    lora_targets: list[str] | None = None  # mode lora: layer names or suffixes; None: the pointwise convs and linears

    def grades_spec(self) -> tuple[str, str, str] | None:
        """(csv file relative to the data folder, its probability column, the class it is the probability of)."""
        if self.grades is None:
            return None
        parts = str(self.grades).split(":")
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"grades must be FILE.csv:COLUMN:CLASS (e.g. split.csv:defect_probability:defective, "
                              f"what `edgeft data elpv` writes), got {self.grades!r}")
        return parts[0], parts[1], parts[2]

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            known = {f.name for f in fields(Augmentation)}
            unknown = set(self.augment) - known
            if unknown:
                bad = sorted(unknown)[0]
                raise ConfigError(f"unknown field augment.{bad}{close_matches(bad, known)}")
            self.augment = Augmentation(**self.augment)
        self._coerce_numbers()
        self._choice("mode", MODES)
        self._choice("monitor", MONITORS)
        self._choice("class_balance", CLASS_BALANCE)
        self._choice("cache_features", CACHE)
        self._choice("device", DEVICES)
        if self.resize is not None:
            self._choice("resize", RESIZE_POLICIES)
        self._at_least("epochs", 1)
        self._at_least("batch_size", 1)
        self._at_least("accum_steps", 1)
        self._at_least("patience", 1)
        if self.trainable_blocks is not None:
            self._at_least("trainable_blocks", 0)
        if self.image_size is not None:
            self._at_least("image_size", 16)
        self._at_least("lora_rank", 1)
        if not 0 <= self.lora_dropout < 1 or not self.lora_alpha > 0:
            raise ConfigError(f"lora_dropout must be in [0, 1) and lora_alpha positive, got {self.lora_dropout} and "
                              f"{self.lora_alpha}")
        if self.lora_targets is not None and (not isinstance(self.lora_targets, list) or not self.lora_targets
                                              or not all(isinstance(t, str) and t for t in self.lora_targets)):
            raise ConfigError(f"lora_targets must be a list of layer names, got {self.lora_targets!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        for name in ("backbone_lr_mult", "weight_decay", "warmup_epochs", "grad_clip", "drop_rate"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.distill_alpha <= 1:
            raise ConfigError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if not self.distill_temperature > 0:
            raise ConfigError(f"distill_temperature must be positive, got {self.distill_temperature}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.tta_views not in (1, 2, 4, 8):
            raise ConfigError(f"tta_views must be 1, 2, 4 or 8, got {self.tta_views}")
        if self.cache_views not in (1, 2, 4, 8):
            raise ConfigError(f"cache_views must be 1, 2, 4 or 8, got {self.cache_views}")
        if not 0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        self.grades_spec()

    def _coerce_numbers(self) -> None:
        """YAML reads ``1e-3`` as a string and ``1`` as an int; accept both for float fields, refuse the rest."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(f.default, float) and not isinstance(v, bool):
                try:
                    setattr(self, f.name, float(v))
                except (TypeError, ValueError):
                    raise ConfigError(f"{f.name} must be a number, got {v!r}") from None

    def _choice(self, name: str, allowed: tuple[str, ...]) -> None:
        v = getattr(self, name)
        if v not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {v!r}{close_matches(str(v), allowed)}")

    def _at_least(self, name: str, low: int) -> None:
        v = getattr(self, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ConfigError(f"unknown field {key!r}{close_matches(key, known)}")
        return cls(**d)

    def for_model(self, model) -> "FinetuneConfig":
        """These settings with the model-dependent defaults resolved and checked against ``model`` (before any
        image is decoded): ``trainable_blocks`` None becomes half of its blocks, and a count the model does not
        have is refused with the fix."""
        from edgeft.training.split import block_count

        if self.mode not in ("partial", "lora"):  # lora adapts the blocks partial would train
            return self
        n = block_count(model, self.model)
        if self.trainable_blocks is None:
            return replace(self, trainable_blocks=n // 2)
        if self.trainable_blocks > n:
            raise ConfigError(f"trainable_blocks {self.trainable_blocks} is more than the {n} blocks {self.model} has; "
                              f"pass --trainable-blocks N with N <= {n}, or leave it unset for half of them ({n // 2})")
        return self

    def fingerprint(self) -> str:
        """A hash of everything that changes the result (used to refuse resuming a different run)."""
        d = self.to_dict()
        d.pop("threads", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class RetrainConfig:
    """Fine-tuning the deployed model again (``edgeft finetune --from``, a recipe's ``from:``): its own network, head,
    input contract and training settings, with only these changed. A short, gentle run: the model already knows the
    line, and the new parts should move it, not reset it."""

    epochs: int = 3
    lr: float = 1e-4
    mode: str = "full"  # partial: the blocks the deployed model's fine-tuning trained (its cached prefix: faster)
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("full", "partial"):
            raise ConfigError(f"mode must be full or partial when fine-tuning the deployed model, got {self.mode!r}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr must be a learning rate between 0 and 1, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_from_parent(parent, mode: str, epochs: int, lr: float, threads: int | None = None,
                       seed: int = 0, cache_views: int | None = None, patience: int | None = None) -> FinetuneConfig:
    """Training settings for a later stage (pruning recovery, QAT): the parent's own fine-tuning settings
    (augmentation, class balance, batch size, ...) with the stage's mode, epochs and learning rate.

    ``partial`` retrains only the blocks the parent's fine-tuning trained, so it needs a parent fine-tuned in
    partial mode: for any other, which blocks those are is not defined.
    """
    base: dict[str, Any] = {}
    for entry in parent.meta.lineage:
        if entry.get("stage") == "finetune":
            known = {f.name for f in fields(FinetuneConfig)}
            base = {k: v for k, v in entry.get("params", {}).items() if k in known}
        if entry.get("stage") == "import":  # fine-tuned outside edgeft: defaults, and the blocks the user named
            blocks = entry.get("params", {}).get("trainable_blocks")
            base = {"mode": "partial", "trainable_blocks": blocks} if blocks else {"mode": "imported"}
    if mode == "partial" and base.get("mode") == "imported":
        raise ConfigError(f"partial mode retrains the last blocks of the model, and {parent.path} was imported without "
                          "naming them; import it with --trainable-blocks N (import.trainable_blocks), or use full "
                          "mode")
    if mode == "partial" and base.get("mode") == "lora":
        base["mode"] = "partial"  # LoRA adapted the same last blocks partial trains
    if mode == "partial" and base.get("mode") != "partial":
        raise ConfigError(f"partial mode retrains the blocks the parent's fine-tuning trained, but {parent.path} was "
                          f"fine-tuned in {base.get('mode', 'an unknown')} mode; use full mode")
    if cache_views is not None:
        base["cache_views"] = cache_views
    base.update(model=parent.meta.arch, weights=None, mode=mode, epochs=max(1, epochs), lr=lr, backbone_lr_mult=1.0,
                warmup_epochs=min(0.5, epochs / 4), patience=patience or max(1, epochs), seed=seed, tta_views=1,
                image_size=None, resize=None)
    if threads:
        base["threads"] = threads
    return FinetuneConfig.from_dict(base)
