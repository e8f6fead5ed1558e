"""The loop's first step: the frames a station kept, labelled by a person (a CSV, or class folders), become training
data and a new test slice, each part with where it came from; bad labels are refused before anything is copied."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, write_folder


@pytest.fixture(scope="module")
def station_kept(tiny_onnx, tiny_data, tmp_path_factory) -> Path:
    """What a station kept: the decided tiny model run over new parts (another draw of the tiny images) with every
    decision saved, so each kept frame's source path says its true class."""
    from click.testing import CliRunner

    from edgeft.cli import cli as entry

    root = tmp_path_factory.mktemp("kept")
    model = root / "model"
    shutil.copytree(tiny_onnx.path, model)
    run = CliRunner()
    r = run.invoke(entry, ["-q", "decide", str(model), "--data", str(tiny_data), "--positive", "bad",
                           "--target-recall", "0.9"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    new_parts = write_folder(root / "line", {"today": 6}, seed=5) / "today"
    r = run.invoke(entry, ["-q", "infer", str(model), str(new_parts), "--source-name", "cam1", "--save",
                           "reject,review,pass", str(root / "saved"), "--out", str(root / "r.jsonl")],
                   catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return root / "saved"


def truth(png: Path) -> str:
    return Path(json.loads(png.with_suffix(".json").read_text())["source"]).parent.name


def fresh_data(tiny_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    return data


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_labelled_parts_join_train_and_a_new_test_slice_with_their_provenance(cli, station_kept, tiny_data,
                                                                             tmp_path):
    data = fresh_data(tiny_data, tmp_path)
    kept = sorted(station_kept.rglob("*.png"))
    assert len(kept) == 12
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["part", "label"])
        for k, p in enumerate(kept):
            w.writerow([p.name if k % 2 else f"cam1/{p.stem}", truth(p) if k != 3 else ""])  # one not labelled yet
    r = cli("data", "collect", station_kept, "--into", data, "--labels", labels, "--test-share", "0.4")
    assert r.exit_code == 0, r.output
    assert "collected 11 part(s)" in r.stdout and "1 not labelled" in r.stdout
    records = [json.loads(x) for x in (data / "collected.jsonl").read_text().splitlines()]
    assert len(records) == 11
    for rec in records:
        assert (data / rec["file"]).is_file() and rec["split"] in ("train", "new-test")
        assert rec["file"].split("/")[1] == rec["label"] and rec["stream"] == "cam1" and len(rec["model"]) == 12
        assert rec["decision"] in ("pass", "review", "reject")
    assert {r["split"] for r in records} == {"train", "new-test"}
    assert listing(data / "test") == listing(tiny_data / "test")  # the old test split is frozen
    r = cli("data", "collect", station_kept, "--into", data, "--labels", labels)
    assert r.exit_code == 0 and "collected 0 part(s)" in r.stdout and "11 collected before" in r.stdout
    r = cli("eval", station_kept.parent / "model", "--data", data, "--split", "new-test", "--json")
    assert r.exit_code == 0, r.output  # the new slice is measured like any split
    assert json.loads(r.stdout)["n"] == sum(x["split"] == "new-test" for x in records)
    from edgeft.data.imagefolder import find_splits, sealed_test

    with sealed_test(data):  # a search reads neither test slice
        assert set(find_splits(data)) == {"train", "val"}


def test_parts_sorted_into_class_folders_are_collected_too(cli, station_kept, tiny_data, tmp_path):
    data = fresh_data(tiny_data, tmp_path)
    for p in sorted(station_kept.rglob("*.png"))[:5]:
        (tmp_path / "sorted" / truth(p)).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / "sorted" / truth(p) / p.name)
    r = cli("data", "collect", station_kept, "--into", data, "--sorted", tmp_path / "sorted", "--test-share", "0")
    assert r.exit_code == 0, r.output
    assert len(list((data / "train").rglob("kept-*.png"))) == 5 and not (data / "new-test").exists()


def test_the_product_a_station_stream_named_follows_its_parts_into_the_data(cli, station_kept, tiny_data, tmp_path):
    """A station told what its stream shows (infer --product) keeps it in each sidecar; collect writes it into the
    data's products.csv (or --product's name), where decide --by-product finds it."""
    from edgeft.data.products import products_of

    model = station_kept.parent / "model"
    parts = write_folder(tmp_path / "line", {"today": 6}, seed=6) / "today"
    r = cli("infer", model, parts, "--source-name", "cam2", "--product", "poly", "--save", "reject,review,pass",
            tmp_path / "saved",
            "--out", tmp_path / "r.jsonl")
    assert r.exit_code == 0, r.output
    sides = [json.loads(p.read_text()) for p in (tmp_path / "saved").rglob("*.json")]
    assert len(sides) == 12 and {x["product"] for x in sides} == {"poly"}
    data = fresh_data(tiny_data, tmp_path)
    (data / "products.csv").write_text("pattern,product\n*,mono\n")  # the data the line had: all mono
    labels = tmp_path / "labels.csv"
    labels.write_text("part,label\n" + "".join(f"{p.parent.name}/{p.stem},{truth(p)}\n"
                                                for p in sorted((tmp_path / "saved").rglob("*.png"))))
    (data / "collected.jsonl").mkdir()  # the provenance cannot be written: the collect fails after the copies
    assert_one_line_error(cli("data", "collect", tmp_path / "saved", "--into", data, "--labels", labels),
                          "nothing was added")
    assert (data / "products.csv").read_text() == "pattern,product\n*,mono\n"  # the products as they were
    assert not list(data.rglob("kept-*.png"))
    (data / "collected.jsonl").rmdir()
    r = cli("data", "collect", tmp_path / "saved", "--into", data, "--labels", labels, "--test-share", "0.5")
    assert r.exit_code == 0, r.output
    records = [json.loads(x) for x in (data / "collected.jsonl").read_text().splitlines()]
    assert {x["product"] for x in records} == {"poly"}
    files = sorted(data.rglob("*.png"))
    named = dict(zip(files, products_of(data, files)))
    assert all(v == ("poly" if p.name.startswith("kept-") else "mono") for p, v in named.items())
    other = fresh_data(tiny_data, tmp_path / "other")
    r = cli("data", "collect", tmp_path / "saved", "--into", other, "--labels", labels, "--product", "housing-b")
    assert r.exit_code == 0, r.output  # --product names them, whatever the stream said
    kept = sorted(other.rglob("kept-*.png"))
    assert len(kept) == 12 and set(products_of(other, kept)) == {"housing-b"}


@pytest.mark.parametrize("breakage, fragments", [
    ("orphan", ["have no JSON sidecar"]),
    ("unknown part", ["part 'nowhere' is not among the kept frames"]),
    ("unknown class", ["class 'scratch' is not one of the data's"]),
    ("no header", ["the columns part and label"]),
    ("unknown folder", ["folder 'goood' is not a class", "good"]),
])
def test_bad_labels_are_refused_in_one_line_and_nothing_is_copied(cli, station_kept, tiny_data, tmp_path, breakage,
                                                                  fragments):
    data = fresh_data(tiny_data, tmp_path)
    saved = tmp_path / "saved"
    shutil.copytree(station_kept, saved)
    kept = sorted(saved.rglob("*.png"))
    rows = [["part", "label"]] + [[p.stem, truth(p)] for p in kept]
    args = ["--labels", tmp_path / "labels.csv"]
    if breakage == "orphan":
        kept[0].with_suffix(".json").unlink()
    elif breakage == "unknown part":
        rows.append(["nowhere", "good"])
    elif breakage == "unknown class":
        rows[2][1] = "scratch"
    elif breakage == "no header":
        rows = rows[1:]
    elif breakage == "unknown folder":
        (tmp_path / "sorted" / "goood").mkdir(parents=True)
        shutil.copy(kept[0], tmp_path / "sorted" / "goood" / kept[0].name)
        args = ["--sorted", tmp_path / "sorted"]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    before = listing(data)
    assert_one_line_error(cli("data", "collect", saved, "--into", data, *args), *fragments)
    assert listing(data) == before


def test_the_deployed_model_is_fine_tuned_on_old_and_new_parts_from_its_own_weights(cli, station_kept, tiny_data,
                                                                                    tmp_path):
    """`edgeft finetune --from DEPLOYED`: the deployed ONNX model's PyTorch weights are found through its lineage
    and trained further on the data with the collected parts; its classes, contract and lineage carry on."""
    import torch

    from edgeft import artifact
    from edgeft.finetune.stage import deployed_weights

    deployed = station_kept.parent / "model"
    data = fresh_data(tiny_data, tmp_path)
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([["part", "label"]] + [[p.stem, truth(p)] for p in station_kept.rglob("*.png")])
    assert cli("data", "collect", station_kept, "--into", data, "--labels", labels).exit_code == 0
    r = cli("finetune", "--from", deployed, "--data", data, "--out", tmp_path / "next", "--epochs", "1",
            "--threads", "2")
    assert r.exit_code == 0, r.output
    parent = deployed_weights(deployed)
    new = artifact.load(tmp_path / "next")
    assert new.meta.kind == "torch" and new.meta.class_names == parent.meta.class_names
    assert new.meta.input == artifact.load(deployed).meta.input
    assert new.meta.lineage[-1]["stage"] == "finetune" and new.meta.lineage[-1]["params"]["from"] == str(deployed)
    a = torch.load(parent.model_path, weights_only=True)
    b = torch.load(new.model_path, weights_only=True)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())  # it trained
    other = write_folder(tmp_path / "other", {"train": 2, "val": 2}, classes=("crack", "good", "spot"))
    assert_one_line_error(cli("finetune", "--from", deployed, "--data", other, "--out", tmp_path / "x"),
                          "are not the deployed model's")
    moved = tmp_path / "deployed"
    shutil.copytree(deployed, moved)
    meta = json.loads((moved / "meta.json").read_text())
    meta["lineage"][-1]["parent"] = str(tmp_path / "gone")
    (moved / "meta.json").write_text(json.dumps(meta))
    assert_one_line_error(cli("finetune", "--from", moved, "--data", data, "--out", tmp_path / "y"), "which is not here")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
