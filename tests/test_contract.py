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
