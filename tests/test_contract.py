import numpy as np
import pytest

from edgeft.contract import InputContract
from edgeft.errors import ConfigError


def test_stretch_grayscale_to_rgb_and_normalise():
    c = InputContract(size=(4, 6), color="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="stretch")
    gray = np.full((8, 12), 255, dtype=np.uint8)
    x = c(gray)
    assert x.shape == (3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0)


def test_sixteen_bit_scales_by_its_own_range():
    c = InputContract(size=(2, 2), color="GRAY", mean=(0.0,), std=(1.0,), resize="stretch")
    img = np.full((2, 2), 65535 // 2, dtype=np.uint16)
    np.testing.assert_allclose(c(img), 0.5, atol=1e-4)


def test_bgr_source_becomes_rgb():
    c = InputContract(size=(2, 2), color="RGB", mean=(0, 0, 0), std=(1, 1, 1), resize="stretch")
    bgr = np.zeros((2, 2, 3), dtype=np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    x = c(bgr, source="BGR")
    assert x[2].min() == 1.0 and x[0].max() == 0.0


def test_center_crop_keeps_aspect():
    c = InputContract(size=(10, 10), crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    img = np.zeros((20, 40, 3), dtype=np.uint8)
    img[:, 10:30] = 255  # the centre 20 columns are white
    out = c.prepare(img)
    assert out.shape == (10, 10, 3)
    assert out.min() == 255  # only the white centre survives the crop


def test_round_trip_and_validation_names_field():
    c = InputContract(size=(3, 5), color="GRAY", mean=(0.1,), std=(0.2,), resize="stretch", interpolation="area")
    assert InputContract.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="input.color"):
        InputContract(color="CMYK")
    with pytest.raises(ConfigError, match="input.mean"):
        InputContract(color="GRAY")
    with pytest.raises(ConfigError, match="unknown field"):
        InputContract.from_dict({**c.to_dict(), "bogus": 1})


def test_gray_fast_path_equals_convert_then_resize():
    import cv2

    c = InputContract(size=(224, 224), resize="stretch", mean=(0.5,) * 3, std=(0.5,) * 3)
    gray = np.random.default_rng(0).integers(0, 256, size=(300, 300), dtype=np.uint8)
    slow = c.geometry(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)[:, :, ::-1])
    diff = np.abs(c.prepare(gray).astype(int) - slow.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


def test_normalize_matches_the_definition():
    c = InputContract(size=(2, 2), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize="stretch")
    img = np.random.default_rng(1).integers(0, 256, size=(2, 2, 3), dtype=np.uint8)
    want = ((img / 255.0 - np.array(c.mean)) / np.array(c.std)).transpose(2, 0, 1)
    np.testing.assert_allclose(c.normalize(img), want, rtol=1e-5, atol=1e-5)


def test_windows_map_deep_pixels_to_the_unit_range():
    """A declared window decides what 0 and 1 are for 12/16-bit frames: the bit depth, a fixed range (clipped), or
    each image's own percentiles; the contract carries it (and a region of interest) through its dict, and a contract
    without them reads as before they existed."""
    import numpy as np

    from edgeft.contract import ImageRangeError, InputContract, parse_window

    frame = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (256, 1))  # 0..4080 across the width
    bits = InputContract(size=(256, 256), resize="stretch", window="12 bits", color="GRAY", mean=[0], std=[1])
    x = bits.prepare(frame)
    assert x.dtype == np.float32 and x.min() == 0 and abs(x.max() - 4080 / 4095) < 1e-6
    fixed = bits.replace(window={"min": 1000, "max": 2000})
    y = fixed.prepare(frame)[0, :, 0]
    assert y[0] == 0 and y[-1] == 1 and abs(y[96] - (1536 - 1000) / 1000) < 1e-6  # clipped outside the range
    pct = bits.replace(window={"percentiles": [10, 90]}).prepare(frame)
    assert abs((pct == 0).mean() - 0.1) < 0.02 and abs((pct == 1).mean() - 0.1) < 0.02
    assert parse_window("14 bits") == {"bits": 14}
    with pytest.raises(ImageRangeError, match="above the declared window of 12 bits"):
        bits.prepare(frame * 2)
    roi = bits.replace(roi=[16, 0, 32, 8])
    assert roi.crop(frame).shape == (8, 32) and roi.crop(frame)[0, 0] == 256
    assert InputContract.from_dict(roi.to_dict()) == roi and len({roi, InputContract.from_dict(roi.to_dict())}) == 1
    assert "roi" not in InputContract().to_dict() and "window" not in InputContract().to_dict()
    for bad in ("12 bytes", {"bits": 20}, {"min": 5, "max": 1}, {"percentiles": [50, 40]}, {"bits": 12, "min": 0}):
        with pytest.raises(ConfigError, match="input.window"):
            parse_window(bad)
    with pytest.raises(ConfigError, match="input.roi"):
        InputContract(roi=[0, 0, 0, 10])
