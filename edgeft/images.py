"""Image files as a camera or a data folder delivers them, decoded with OpenCV (ground floor: numpy + OpenCV).

One reader for training data, calibration sets and the camera runtime's file sources, so a corrupt or
truncated file is refused the same way everywhere: with a DataError naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeft.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as OpenCV does (BGR/BGRA/GRAY, 8- or 16-bit kept). Raises DataError if unreadable."""
    import cv2

    p = Path(path)
    try:
        buf = np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read image {p}: {e.strerror}") from None
    if buf.size == 0:
        raise DataError(f"image file is empty: {p}")
    if _truncated(p, buf):
        raise DataError(f"image file is truncated: {p}")
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DataError(f"cannot decode image {p}: not a valid PNG/JPEG/BMP/TIFF file")
    if image.dtype not in (np.uint8, np.uint16):
        if image.dtype.kind == "f":
            image = np.clip(image, 0.0, 1.0).astype(np.float32)
        else:
            raise DataError(f"unsupported pixel type {image.dtype} in {p}; use 8- or 16-bit images")
    return image


def _truncated(path: Path, buf: np.ndarray) -> bool:
    """Cheap end-of-file checks: OpenCV decodes a cut-off JPEG or PNG without an error, padding it with grey."""
    suffix = path.suffix.lower()
    tail = buf[-12:].tobytes()
    if suffix in (".jpg", ".jpeg"):
        return b"\xff\xd9" not in buf[-64:].tobytes()
    if suffix == ".png":
        return not tail.endswith(b"IEND\xaeB`\x82")
    return False


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an image (PNG/JPEG by suffix), atomically: a reader never sees half an image."""
    import cv2

    from edgeft.errors import ConfigError

    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{p.suffix}")
    if not cv2.imwrite(str(tmp), image):
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write image {p}; check the folder is writable and the suffix is .png or .jpg")
    os.replace(tmp, p)
    return p
