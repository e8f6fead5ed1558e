"""The input contract: how an image becomes the tensor a model expects.

It travels in every artifact's ``meta.json`` and is the single definition of preprocessing for
training, evaluation, calibration, export and the camera runtime. A mismatch there is the most
common silent accuracy loss in deployment, so nothing else in edgeft resizes or normalises images.

This module needs only numpy and OpenCV (no torch), so the camera runtime can use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeft.errors import ConfigError, DataError

COLOR_ORDERS = ("RGB", "BGR", "GRAY")
RESIZE_POLICIES = ("shorter_side_center_crop", "stretch", "letterbox")
LETTERBOX_FILL = 114  # the grey a letterbox pads with, per 255 (what YOLO-family detectors were trained with)
INTERPOLATIONS = ("bicubic", "bilinear", "area", "nearest")


def _cv2_interpolation(name: str) -> int:
    import cv2

    return {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
            "nearest": cv2.INTER_NEAREST}[name]


class ImageRangeError(DataError):
    """A frame the contract cannot take as declared (a region of interest outside it, pixels above its window): a
    mistake in the declaration or the camera, so data loading stops on it instead of skipping the file."""


def parse_window(value: Any) -> dict[str, Any] | None:
    """The pixel window of a 12/14/16-bit camera, as the contract stores it: ``{"bits": 12}`` (``12 bits`` in a
    recipe: 0..4095 is the full range), ``{"min": 100, "max": 3900}`` (fixed, values outside clipped) or
    ``{"percentiles": [1, 99]}`` (per image: its own 1st..99th percentile becomes the full range)."""
    if value is None:
        return None
    if isinstance(value, str):
        words = value.replace("-", " ").split()
        if len(words) == 2 and words[1] in ("bits", "bit") and words[0].isdigit():
            value = {"bits": int(words[0])}
        else:
            raise ConfigError(f"input.window {value!r} is not a window; write '12 bits', {{min: 100, max: 3900}} or "
                              "{percentiles: [1, 99]}")
    if not isinstance(value, dict) or set(value) not in ({"bits"}, {"min", "max"}, {"percentiles"}):
        raise ConfigError(f"input.window must be {{bits: N}}, {{min: A, max: B}} or {{percentiles: [LOW, HIGH]}}, got "
                          f"{value!r}")
    if "bits" in value:
        bits = value["bits"]
        if not isinstance(bits, int) or isinstance(bits, bool) or not 8 <= bits <= 16:
            raise ConfigError(f"input.window bits must be an integer from 8 to 16, got {bits!r}")
        return {"bits": bits}
    pair = [value["min"], value["max"]] if "min" in value else list(value["percentiles"])
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ConfigError(f"input.window needs two numbers, got {value!r}") from None
    if "min" in value:
        if not 0 <= lo < hi:
            raise ConfigError(f"input.window min must be >= 0 and below max, got {lo:g} and {hi:g}")
        return {"min": lo, "max": hi}
    if not 0 <= lo < hi <= 100:
        raise ConfigError(f"input.window percentiles must satisfy 0 <= low < high <= 100, got {lo:g} and {hi:g}")
    return {"percentiles": [lo, hi]}


@dataclass(frozen=True)
class InputContract:
    """What the model expects and how to get there from a decoded image.

    - ``size``: (height, width) of the model input.
    - ``color``: channel order the model was trained on: ``RGB``, ``BGR`` or ``GRAY`` (one channel).
    - ``mean``/``std``: per channel, applied to pixel values scaled to [0, 1].
    - ``resize``: ``shorter_side_center_crop`` scales the shorter side to ``size / crop_pct`` and cuts
      the centre (ImageNet style); ``stretch`` scales the whole image to ``size`` (nothing is cut off,
      which suits inspection images whose defects can sit at the border); ``letterbox`` scales the whole image
      to fit inside ``size`` keeping its aspect ratio and pads the rest with grey, centred (detectors: boxes keep
      their shape).
    - ``interpolation``: OpenCV interpolation used for resizing.
    - ``layout``: always NCHW float32 for the model.
    - ``roi``: (x, y, width, height) in the source frame, cut before anything else (a fixed camera that sees the
      part in one corner of a large frame); None: the whole frame.
    - ``window``: how a 12/14/16-bit image's values become [0, 1] (:func:`parse_window`); None: by the file's type
      (8-bit by 255, 16-bit by 65535).
    """

    size: tuple[int, int] = (224, 224)
    color: str = "RGB"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    resize: str = "shorter_side_center_crop"
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    layout: str = field(default="NCHW")
    roi: tuple[int, int, int, int] | None = None
    window: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.roi is not None:
            roi = self.roi
            if (not isinstance(roi, (list, tuple)) or len(roi) != 4
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in roi)
                    or min(roi[:2]) < 0 or min(roi[2:]) < 1):
                raise ConfigError(f"input.roi must be [x, y, width, height] in pixels (x, y >= 0; width, height >= 1), "
                                  f"got {roi!r}")
            object.__setattr__(self, "roi", tuple(roi))
        object.__setattr__(self, "window", parse_window(self.window))
        size = tuple(int(s) for s in (self.size if isinstance(self.size, (list, tuple)) else (self.size,) * 2))
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"input.size must be (height, width) of positive integers, got {self.size}")
        if self.color not in COLOR_ORDERS:
            raise ConfigError(f"input.color must be one of {', '.join(COLOR_ORDERS)}, got {self.color!r}")
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"input.resize must be one of {', '.join(RESIZE_POLICIES)}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"input.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if not 0.1 <= float(self.crop_pct) <= 1.0:
            raise ConfigError(f"input.crop_pct must be in [0.1, 1.0], got {self.crop_pct}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(f"input.mean and input.std need {self.channels} values for color {self.color}, "
                              f"got {len(self.mean)} and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"input.std must be positive, got {self.std}")
        if self.layout != "NCHW":
            raise ConfigError(f"input.layout must be NCHW, got {self.layout!r}")

    def __hash__(self) -> int:  # the window is a small mapping; hash the contract by its plain data
        import json

        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data for meta.json and the ONNX file; ``roi`` and ``window`` only when set."""
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        for key in ("roi", "window"):
            if d[key] is None:
                del d[key]
        if self.roi is not None:
            d["roi"] = list(self.roi)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputContract":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"input contract has unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "InputContract":
        d = self.to_dict()
        d.update(changes)
        return InputContract.from_dict(d)

    # -- preprocessing -----------------------------------------------------------------------------
    def convert_color(self, image: np.ndarray, source: str = "BGR") -> np.ndarray:
        """Return ``image`` (HxW, HxWx1, HxWx3 or HxWx4 in OpenCV's ``source`` order) as HxWxC in ``color``."""
        import cv2

        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise DataError(f"expected an image of shape HxW or HxWx{{1,3,4}}, got {image.shape}")
        c = image.shape[2]
        if c == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR if source == "BGR" else cv2.COLOR_RGBA2RGB)
            c = 3
        if self.color == "GRAY":
            if c == 3:
                code = cv2.COLOR_BGR2GRAY if source == "BGR" else cv2.COLOR_RGB2GRAY
                image = cv2.cvtColor(image, code)[:, :, None]
            return image
        if c == 1:
            return np.repeat(image, 3, axis=2)
        if source != self.color:
            image = image[:, :, ::-1]
        return image

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The region of interest of a frame (the frame itself without one); refuses a region outside the frame."""
        if self.roi is None:
            return image
        x, y, w, h = self.roi
        if x + w > image.shape[1] or y + h > image.shape[0]:
            raise ImageRangeError(f"input.roi (x {x}, y {y}, width {w}, height {h}) lies outside the "
                                  f"{image.shape[1]}x{image.shape[0]} image; declare a region inside the frame")
        return image[y:y + h, x:x + w]

    def check_depth(self, image: np.ndarray) -> None:
        """Refuse a frame the declared bit window cannot hold (values above 2^bits - 1, or 8-bit pixels under a
        wider window, which would come out 16 times too dark)."""
        if self.window is None or "bits" not in self.window:
            return
        bits = self.window["bits"]
        if image.dtype.kind != "u" or (image.dtype == np.uint8 and bits > 8):
            raise ImageRangeError(f"input.window {bits} bits is for 16-bit images holding {bits}-bit values; this "
                                  f"image is {image.dtype}; drop the window for 8-bit images")
        top = int(image.max())
        if top > (1 << bits) - 1:
            raise ImageRangeError(f"an image has values up to {top}, above the declared window of {bits} bits "
                                  f"(0..{(1 << bits) - 1}); declare the camera's real bit depth")

    def apply_window(self, image: np.ndarray) -> np.ndarray:
        """Map a prepared image's values to float32 [0, 1] by the window (unchanged without one)."""
        w = self.window
        if w is None:
            return image
        if image.dtype.kind not in "ui":
            raise ImageRangeError(f"input.window applies to integer images; this one is {image.dtype}")
        x = image.astype(np.float32)
        if "bits" in w:
            lo, hi = 0.0, float((1 << w["bits"]) - 1)
        elif "min" in w:
            lo, hi = w["min"], w["max"]
        else:
            lo, hi = (float(v) for v in np.percentile(x, w["percentiles"]))
            hi = max(hi, lo + 1.0)  # a flat image stays flat instead of dividing by zero
        x -= lo
        x *= 1.0 / (hi - lo)
        return np.clip(x, 0.0, 1.0, out=x)

    def geometry(self, image: np.ndarray) -> np.ndarray:
        """Cut the region of interest, then resize and crop an HxWxC image to ``size`` per the contract; keeps the
        dtype."""
        import cv2

        image = self.crop(image)
        h, w = image.shape[:2]
        out_h, out_w = self.size
        interp = _cv2_interpolation(self.interpolation)
        if self.resize == "stretch":
            if (h, w) != (out_h, out_w):
                image = cv2.resize(image, (out_w, out_h), interpolation=interp)
        elif self.resize == "letterbox":
            sx, sy, ox, oy = self.placement(h, w)
            new_w, new_h = round(w * sx), round(h * sy)
            if (h, w) != (new_h, new_w):
                image = cv2.resize(image, (new_w, new_h), interpolation=interp)
            if image.ndim == 2:
                image = image[:, :, None]
            fill = LETTERBOX_FILL / 255 * pixel_max(image.dtype) if image.dtype.kind in "ui" else LETTERBOX_FILL / 255
            canvas = np.full((out_h, out_w, image.shape[2]), fill, dtype=image.dtype)
            canvas[int(oy):int(oy) + new_h, int(ox):int(ox) + new_w] = image
            image = canvas
        else:
            scale_h, scale_w = out_h / self.crop_pct, out_w / self.crop_pct
            scale = max(scale_h / h, scale_w / w)
            new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
            if (h, w) != (new_h, new_w):
                image = cv2.resize(image, (new_w, new_h), interpolation=interp)
            top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
            image = image[top:top + out_h, left:left + out_w]
        if image.ndim == 2:
            image = image[:, :, None]
        return np.ascontiguousarray(image)

    def placement(self, h: int, w: int) -> tuple[float, float, float, float]:
        """Where a point of an ``h`` x ``w`` region of interest lands in the model input: ``(scale_x, scale_y,
        offset_x, offset_y)`` with ``x_in = x * scale_x + offset_x`` (a box follows the image through
        :meth:`geometry`; its inverse puts a detector's boxes back on the frame)."""
        out_h, out_w = self.size
        if self.resize == "stretch":
            return out_w / w, out_h / h, 0.0, 0.0
        if self.resize == "letterbox":
            s = min(out_h / h, out_w / w)
            new_h, new_w = min(out_h, max(1, round(h * s))), min(out_w, max(1, round(w * s)))
            return new_w / w, new_h / h, float((out_w - new_w) // 2), float((out_h - new_h) // 2)
        scale = max(out_h / self.crop_pct / h, out_w / self.crop_pct / w)
        new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
        return new_w / w, new_h / h, -float((new_w - out_w) // 2), -float((new_h - out_h) // 2)

    def prepare(self, image: np.ndarray, source: str = "BGR") -> np.ndarray:
        """Region of interest, colour conversion and geometry: a decoded image becomes HxWxC at model size, dtype
        kept (float32 in [0, 1] when a window is declared: the window is applied after resizing, at model size).

        A grayscale frame for a colour model is resized first and replicated after, so the resize costs a third.
        (OpenCV's one- and three-channel paths round a few pixels in 10^5 differently by one level; training
        and deployment both come through here, so they agree exactly.)
        """
        self.check_depth(image)
        if self.channels == 3 and (image.ndim == 2 or image.shape[2] == 1):
            return self.apply_window(np.repeat(self.geometry(image), 3, axis=2))
        return self.apply_window(self.geometry(self.convert_color(image, source)))

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """Scale prepared NxHxWxC (or HxWxC) pixels to [0, 1] by dtype, normalise, return NCHW float32."""
        single = images.ndim == 3
        if single:
            images = images[None]
        top = pixel_max(images.dtype)
        # Transpose the small integer pixels first, then convert: per-channel arithmetic on contiguous planes
        # is ~10x faster than broadcasting over a trailing axis of 3 (0.15 ms against 1.5 ms at 224x224).
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32)
        x *= np.asarray([1.0 / (top * s) for s in self.std], dtype=np.float32).reshape(1, -1, 1, 1)
        x += np.asarray([-m / s for m, s in zip(self.mean, self.std)], dtype=np.float32).reshape(1, -1, 1, 1)
        return x[0] if single else x

    def __call__(self, image: np.ndarray, source: str = "BGR") -> np.ndarray:
        """Full preprocessing of one decoded image: CHW float32 ready for the model."""
        return self.normalize(self.prepare(image, source))


def pixel_max(dtype: np.dtype) -> float:
    """The value that means 'full white' for an image dtype: 255 for 8-bit, 65535 for 16-bit, 1 for float."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if dtype.kind == "f":
        return 1.0
    raise DataError(f"unsupported pixel type {dtype}; use 8- or 16-bit unsigned images, or float in [0, 1]")
