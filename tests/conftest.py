"""Shared fixtures: tiny image folders made on the fly and a CLI runner.

Unit tests use timm's registered tiny test models (about 100k parameters) on 32x32 images so the whole
suite runs in minutes on 2 CPU cores; the real EfficientNet-Lite0 appears only in tests marked slow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("EDGEFT_QUIET", "1")


def make_image(label: int, rng: np.random.Generator, size: int = 32, channels: int = 1) -> np.ndarray:
    """A learnable pattern: class 0 has a bright bar across the top half, class 1 across the bottom half."""
    img = rng.integers(20, 60, size=(size, size), dtype=np.uint8)
    rows = slice(2, size // 2 - 2) if label == 0 else slice(size // 2 + 2, size - 2)
    img[rows, 4:size - 4] = rng.integers(180, 240)
    if channels == 3:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img


def write_folder(root: Path, counts: dict[str, int], classes=("bad", "good"), seed: int = 0, size: int = 32,
                 channels: int = 1) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for label, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                cv2.imwrite(str(d / f"{name}_{i:03d}.png"), make_image(label, rng, size, channels))
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """train/val/test, two classes, 32x32 grayscale PNGs."""
    return write_folder(tmp_path_factory.mktemp("tiny") / "data", {"train": 24, "val": 8, "test": 8})


@pytest.fixture
def cli():
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from edgeft.cli import cli as entry

    def run(*args: str):
        return CliRunner().invoke(entry, ["-q", *[str(a) for a in args]], catch_exceptions=False)

    return run


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit 2, a single 'error: ...' line on stderr naming every fragment, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in err, (f, err)


# A tiny contract and training settings shared by the unit tests: 32x32 RGB, timm's test models.
TINY = dict(model="test_efficientnet", weights=None, trainable_blocks=2, image_size=32, resize="stretch", batch_size=8,
            lr=3e-3, threads=2)


def tiny_contract():
    from edgeft.contract import InputContract

    return InputContract(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, resize="stretch")


def make_artifact(path, arch: str = "test_efficientnet"):
    """A PyTorch artifact of ``arch`` with random weights, two classes (bad, good) and the tiny contract."""
    from edgeft import artifact
    from edgeft.models import create, save_artifact

    model, _ = create(arch, weights=None, num_classes=2)
    meta = artifact.Meta(kind="torch", arch=arch, class_names=["bad", "good"], input=tiny_contract())
    return save_artifact(model, path, meta)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """An ONNX artifact of timm's tiny test_efficientnet (random weights, 32x32 RGB, classes bad/good)."""
    import torch

    from edgeft.export.stage import export

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny-onnx")
    return export(make_artifact(root / "torch").path, root / "onnx", dynamic_batch=True)
