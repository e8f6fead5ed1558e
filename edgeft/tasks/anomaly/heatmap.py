"""The anomaly heatmap over the part: what an operator looks at to trust (or overrule) a reject.

The map is resized to the frame and coloured on a **fixed** scale, never per image: blue at ``floor`` (a typical
good patch's distance, measured on val's good parts at fit time), red at ``ceiling`` (the reject threshold: a patch
that alone rejects the part). Scaling each map to its own min and max paints every good part with a red spot,
which is how exported anomaly models come to "flag everything" in an operator's eyes. OpenCV and numpy only.
"""

from __future__ import annotations

import numpy as np

from edgeft.errors import ConfigError


def to_bgr8(frame: np.ndarray) -> np.ndarray:
    """A displayable 8-bit BGR copy of a frame (gray, BGR or BGRA; 8-bit, 16-bit or float in [0, 1])."""
    import cv2

    img = np.asarray(frame)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img.copy()


def overlay(frame: np.ndarray, heat: np.ndarray, floor: float, ceiling: float, alpha: float = 0.45) -> np.ndarray:
    """``heat`` (h x w distances) over ``frame`` (BGR order), as an 8-bit BGR image of the frame's size."""
    import cv2

    if not ceiling > floor:
        raise ConfigError(f"heatmap scale: the ceiling ({ceiling:g}) must lie above the floor ({floor:g})")
    img = to_bgr8(frame)
    h, w = img.shape[:2]
    m = cv2.resize(np.asarray(heat, dtype=np.float32).reshape(np.shape(heat)[-2:]), (w, h),
                   interpolation=cv2.INTER_LINEAR)
    level = np.clip((m - floor) / (ceiling - floor), 0.0, 1.0)
    colour = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (alpha * np.maximum(level, 0.25))[..., None]  # good regions stay visible under a light tint
    return (img * (1 - weight) + colour * weight).astype(np.uint8)


def hot_spot(heat: np.ndarray) -> list[float]:
    """Where the map peaks, as (row, column) fractions of the frame (0..1, centre of the patch)."""
    m = np.asarray(heat).reshape(np.shape(heat)[-2:])
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    return [round((r + 0.5) / m.shape[0], 4), round((c + 0.5) / m.shape[1], 4)]
