"""Training augmentation for inspection images, applied to whole batches of tensors.

Inspection cameras see parts in fixed lighting at a fixed distance, so the useful augmentations are the
geometric symmetries of the part (flips, 90° turns when the part is square-symmetric), small rotations
and shifts, and mild brightness/contrast changes. Colour jitter is off for grayscale sources: it would
teach the model colours the camera never produces. Batched on tensors, augmentation costs little next
to the forward pass, which matters on a 2-core CPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from edgeft.errors import ConfigError


@dataclass(frozen=True)
class Augmentation:
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True  # the part looks the same turned by 90° (square cells, wafers, tiles)
    rotate_deg: float = 5.0  # small free rotation, ± degrees
    shift: float = 0.03  # ± fraction of the image size
    scale: float = 0.05  # ± relative zoom
    brightness: float = 0.1  # ± additive, in [0, 1] pixel units
    contrast: float = 0.1  # ± relative
    saturation: float = 0.0  # colour sources only
    p_affine: float = 0.5

    def __post_init__(self) -> None:
        for name in ("rotate_deg", "shift", "scale", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.p_affine <= 1:
            raise ConfigError(f"augment.p_affine must be in [0, 1], got {self.p_affine}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def none(cls) -> "Augmentation":
        return cls(False, False, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def apply(x, aug: Augmentation, generator=None, grayscale: bool = False):
    """Augment a batch ``x`` (N, C, H, W) of pixels in [0, 1] before normalisation; returns a new tensor."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    if aug.hflip:
        m = rand(n) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    if aug.vflip:
        m = rand(n) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(2), x)
    if aug.rot90 and x.shape[2] == x.shape[3]:
        k = (rand(n) * 4).long().clamp(max=3)
        x = torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, k.tolist())])
    if aug.p_affine > 0 and (aug.rotate_deg or aug.shift or aug.scale):
        apply_mask = rand(n) < aug.p_affine
        angle = (rand(n) * 2 - 1) * math.radians(aug.rotate_deg)
        scale = 1 + (rand(n) * 2 - 1) * aug.scale
        tx, ty = ((rand(n) * 2 - 1) * aug.shift * 2, (rand(n) * 2 - 1) * aug.shift * 2)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=dev).expand(n, 2, 3)
        theta = torch.where(apply_mask[:, None, None], theta, eye)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if aug.contrast:
        c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * aug.contrast
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
    if aug.brightness:
        x = x + (rand(n, 1, 1, 1) * 2 - 1) * aug.brightness
    if aug.saturation and not grayscale and x.shape[1] == 3:
        gray = x.mean(dim=1, keepdim=True)
        s = 1 + (rand(n, 1, 1, 1) * 2 - 1) * aug.saturation
        x = (x - gray) * s + gray
    return x.clamp(0.0, 1.0)


def dihedral_views(x, count: int = 8):
    """The first ``count`` of the 8 flip/rotation views of a square batch, for test-time averaging."""
    import torch

    views = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3)) if k else x
        views.append(r)
        views.append(r.flip(3))
    return views[:count]
