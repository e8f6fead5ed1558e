import hashlib

import cv2
import numpy as np
import pytest

from edgeft.contract import InputContract
from edgeft.data import elpv, load_dataset, load_split, read_image
from edgeft.errors import DataError
from tests.conftest import assert_one_line_error, write_folder

GRAY = InputContract(size=(16, 16), color="GRAY", mean=(0.5,), std=(0.5,), resize="stretch")
RGB = InputContract(size=(16, 16), color="RGB", mean=(0.5,) * 3, std=(0.5,) * 3, resize="stretch")


FORMATS = [(s, d) for s in (".png", ".jpg", ".bmp", ".tif") for d in (8, 16) if d == 8 or s in (".png", ".tif")]


@pytest.mark.parametrize("suffix, depth", FORMATS)  # JPEG and BMP have no 16-bit form
@pytest.mark.parametrize("channels", [1, 3])
def test_formats_and_bit_depths(tmp_path, suffix, channels, depth):
    dtype, top = (np.uint8, 255) if depth == 8 else (np.uint16, 65535)
    img = np.zeros((20, 20, channels) if channels == 3 else (20, 20), dtype=dtype)
    img[:10] = top  # top half white
    path = tmp_path / f"x{suffix}"
    assert cv2.imwrite(str(path), img)
    decoded = read_image(path)
    assert decoded.dtype == dtype
    for contract in (GRAY, RGB):
        x = contract(decoded)
        assert x.shape == (contract.channels, 16, 16)
        assert x[:, :6].mean() == pytest.approx(1.0, abs=0.05)  # white → (1 - 0.5) / 0.5
        assert x[:, 10:].mean() == pytest.approx(-1.0, abs=0.05)


def _corrupt_files(folder):
    (folder / "garbage.png").write_bytes(b"not an image at all")
    good = (folder / "bad_000.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    ok, jpg = cv2.imencode(".jpg", np.full((32, 32), 128, np.uint8))
    (folder / "cut.jpg").write_bytes(jpg.tobytes()[:-100])
    (folder / "empty.png").write_bytes(b"")


def test_corrupt_images_are_skipped_and_counted(tmp_path, capsys):
    root = write_folder(tmp_path / "d", {"train": 4, "val": 2})
    _corrupt_files(root / "train" / "bad")
    ds = load_dataset(root, GRAY)
    assert len(ds.train) == 8
    assert len(ds.train.skipped) == 4
    assert "skipped 4 unreadable image(s) in train" in capsys.readouterr().err


def test_val_is_carved_when_missing(tmp_path, capsys):
    root = write_folder(tmp_path / "d", {"train": 10})
    ds = load_dataset(root, GRAY, val_fraction=0.2, seed=1)
    assert len(ds.val) == 4 and len(ds.train) == 16 and ds.val_carved
    assert not set(ds.val.paths) & set(ds.train.paths)
    assert sorted(ds.val.class_counts()) == [2, 2]
    assert "carved 4 images" in capsys.readouterr().err


@pytest.mark.parametrize("make, message", [
    (lambda r: None, "data folder not found"),
    (lambda r: r.mkdir(), "has no train/ subfolder"),
    (lambda r: (r / "good").mkdir(parents=True), "looks like class folders directly"),
    (lambda r: (r / "train").mkdir(parents=True), "has no class subfolders"),
    (lambda r: (r / "train" / "a").mkdir(parents=True), "class folder"),
])
def test_layout_errors(tmp_path, make, message):
    root = tmp_path / "d"
    make(root)
    with pytest.raises(DataError, match=message):
        load_dataset(root, GRAY)


def test_single_class_is_refused(tmp_path):
    root = write_folder(tmp_path / "d", {"train": 3}, classes=("only",))
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(root, GRAY)


def test_split_with_unknown_class(tmp_path):
    root = write_folder(tmp_path / "d", {"train": 3})
    write_folder(root, {"test": 2}, classes=("bad", "other"))
    with pytest.raises(DataError, match="'other'"):
        load_split(root, "test", GRAY, classes=["bad", "good"])


def test_all_images_unreadable(tmp_path):
    root = write_folder(tmp_path / "d", {"train": 1})
    for p in (root / "train").rglob("*.png"):
        p.write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable images"):
        load_dataset(root, GRAY)


def test_elpv_build_is_stratified_deterministic_and_byte_for_byte(tmp_path, cli):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("data", "elpv", a).exit_code == 0
    elpv.build(b, seed=0)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert len(files_a) == 2624
    counts = {s: {c: len(list((a / s / c).glob("*.png"))) for c in elpv.CLASSES} for s in ("train", "val", "test")}
    assert sum(counts["test"].values()) == 394
    total_def = sum(c["defective"] for c in counts.values())
    assert total_def == 106 + 715  # probabilities 2/3 and 1 are defective
    for s in counts:  # each split keeps the data set's defect rate
        assert counts[s]["defective"] / sum(counts[s].values()) == pytest.approx(821 / 2624, abs=0.01)
    src = elpv.package_root() / "images" / files_a[0].name
    assert hashlib.sha256(src.read_bytes()).digest() == hashlib.sha256((a / files_a[0]).read_bytes()).digest()
    assert "CC BY-NC-SA 4.0" in (a / "LICENSE-DATA.txt").read_text()
    assert_one_line_error(cli("data", "elpv", a), "output exists", "--force")


def test_load_split_limit_decodes_an_even_spread_of_every_class(tiny_data):
    from edgeft.errors import ConfigError

    contract = InputContract(size=(32, 32), resize="stretch")
    full = load_split(tiny_data, "test", contract)
    few = load_split(tiny_data, "test", contract, limit=4)
    assert len(few) == 4 and set(few.labels.tolist()) == set(full.labels.tolist())  # files are sorted by class
    picked = [full.paths.index(p) for p in few.paths]
    assert picked == sorted(set(picked)) and picked[0] == 0 and picked[-1] == len(full) - 1
    np.testing.assert_array_equal(few.images, full.images[picked])
    np.testing.assert_array_equal(few.labels, full.labels[picked])
    assert len(load_split(tiny_data, "test", contract, limit=10_000)) == len(full)
    with pytest.raises(ConfigError, match=">= 1"):
        load_split(tiny_data, "test", contract, limit=0)


def test_a_manifest_reads_as_the_folders_it_lists(tiny_data, tmp_path):
    """The same images listed by a JSON-lines manifest (paths relative to it) decode to the same splits, labels and
    pixels as the folders, and the model's class order is followed where it differs from the sorted names."""
    import json
    import shutil

    lines = [json.dumps({"path": str(p.relative_to(tiny_data)), "label": p.parent.name, "split": p.parent.parent.name})
             for p in sorted(tiny_data.rglob("*.png"))]
    (tmp_path / "set.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copytree(tiny_data, tmp_path, dirs_exist_ok=True)
    c = InputContract(size=(32, 32), resize="stretch")
    folders, listed = load_dataset(tiny_data, c), load_dataset(tmp_path / "set.jsonl", c)
    assert listed.classes == folders.classes
    for a, b in ((folders.train, listed.train), (folders.val, listed.val), (folders.test, listed.test)):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    flipped = load_split(tmp_path / "set.jsonl", "test", c, classes=["good", "bad"])
    assert [flipped.classes[y] for y in flipped.labels] == [p.parent.name for p in flipped.paths]
    assert flipped.labels[0] == 0 and flipped.paths[0].parent.name == "good"
    assert load_dataset(tmp_path / "set.jsonl", c, classes=["good", "bad"]).classes == ["good", "bad"]
