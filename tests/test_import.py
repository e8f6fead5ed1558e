"""``edgeft import``: models fine-tuned outside edgeft (a plain PyTorch loop here, on real ELPV cells listed by a
manifest) come in with the metrics their own script measured, and go through prune, INT8 and the gates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from edgeft import artifact
from tests.conftest import assert_one_line_error

SIZE = 32
CONTRACT = {"size": SIZE, "resize": "stretch", "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
CONTRACT_FLAGS = ["--size", str(SIZE), "--resize", "stretch", "--interpolation", "bilinear", "--mean", "0.5,0.5,0.5",
                  "--std", "0.5,0.5,0.5"]
CLASSES = ["defective", "functional"]


@pytest.fixture(scope="module")
def elpv_manifest(tmp_path_factory) -> Path:
    """A manifest of real ELPV cells read where the elpv-dataset package keeps them: 24 per class in train, 12 per
    class in val and test (a defect probability of at least 0.5 is defective, as in the demo set)."""
    from edgeft.data.elpv import package_root, read_labels

    root = package_root()
    rows = read_labels(root)
    by_class = {c: [r for r in rows if (r[1] >= 0.5) == (c == "defective")] for c in CLASSES}
    out = tmp_path_factory.mktemp("manifest") / "cells.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for c, items in by_class.items():
            for i, (rel, _, _) in enumerate(items[::7][:48]):
                split = "train" if i < 24 else "val" if i < 36 else "test"
                w.writerow([root / rel, c, split])
    return out


def script_inputs(manifest: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What a user's own script feeds its model: OpenCV decode, bilinear resize, /255, (x - 0.5) / 0.5, RGB."""
    xs, ys = [], []
    with open(manifest) as f:
        for row in csv.DictReader(f):
            if row["split"] != split:
                continue
            gray = cv2.imread(row["path"], cv2.IMREAD_GRAYSCALE)
            small = cv2.resize(gray, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
            xs.append(np.repeat(((small - 0.5) / 0.5)[None], 3, axis=0))
            ys.append(CLASSES.index(row["label"]))
    return torch.tensor(np.stack(xs)), torch.tensor(ys)


def train_outside(model: torch.nn.Module, manifest: Path, steps: int = 40) -> dict[str, list[int]]:
    """A plain PyTorch training loop, no edgeft: full-batch AdamW; returns the script's own predictions per split
    (in the manifest's order within each class). Callers seed torch before building the model."""
    x, y = script_inputs(manifest, "train")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        model.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    preds = {}
    with torch.no_grad():
        for split in ("val", "test"):
            xs, _ = script_inputs(manifest, split)
            preds[split] = model(xs).argmax(1).tolist()
    return preds


def edgeft_predictions(path: Path, manifest: Path, split: str) -> list[int]:
    """The imported artifact's predictions per image, as `edgeft eval` computes them (manifest order by class)."""
    from edgeft.data import load_split
    from edgeft.evaluate import logits

    a = artifact.load(path)
    s = load_split(manifest, split, a.meta.input, classes=a.meta.class_names)
    out, _ = logits(a, s)
    return out.argmax(1).tolist()


def confusion(preds: list[int], manifest: Path, split: str) -> list[list[int]]:
    _, y = script_inputs(manifest, split)
    m = np.zeros((2, 2), dtype=int)
    for t, p in zip(y.tolist(), preds):
        m[t, p] += 1
    return m.tolist()


def recipe(tmp_path: Path, manifest: Path, model: Path, arch: str | None, onnx: bool = False) -> str:
    d = {"name": "imported", "data": str(manifest), "threads": 2,
         "import": {"model": str(model), **({"arch": arch} if arch else {}), "input": CONTRACT},
         **({} if onnx else {"prune": {"target_macs": 0.7, "steps": 5, "round_to": 4, "recover_epochs": 1,
                                       "recover_mode": "full"},
                             "export": {"parity_images": 8}}),
         "quantize": {"calib_images": 16, "auto_exclude": False},
         "bench": {"backends": ["ort-cpu"], "duration_s": 0.1, "warmup_s": 0.05, "rounds": 2},
         "decision": {"positive": ["defective"], "target_recall": 0.9},
         "gates": {"max_accuracy_drop_pp": 100, "max_p50_ms": {"ort-cpu": 10000}, "max_recall_drop_pp": 100,
                   "max_auroc_drop": 1.0}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def test_a_timm_model_trained_outside_comes_in_with_its_own_numbers_and_ships(elpv_manifest, tmp_path, cli):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=2)
    script = train_outside(model, elpv_manifest)
    torch.save(model.state_dict(), tmp_path / "mine.pth")

    r = cli("import", tmp_path / "mine.pth", "--model", "test_efficientnet", "--out", tmp_path / "imported",
            "--data", elpv_manifest, "--splits", "val,test", *CONTRACT_FLAGS)
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "imported")
    assert a.meta.class_names == CLASSES and a.meta.lineage[0]["stage"] == "import"
    assert a.meta.imported["source_sha256"] == artifact.sha256_file(tmp_path / "mine.pth")
    for split in ("val", "test"):  # the same decision on every image as the user's own script
        assert edgeft_predictions(tmp_path / "imported", elpv_manifest, split) == script[split]
        assert a.meta.metrics[split]["confusion"] == confusion(script[split], elpv_manifest, split)

    r = cli("optimize", recipe(tmp_path, elpv_manifest, tmp_path / "mine.pth", "test_efficientnet"),
            "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.is_dir() and p.name[0].isdigit()) == [
        "01-import", "02-prune", "03-export-import", "04-export-prune", "05-quantize", "06-bench"]
    assert artifact.load(run / "05-quantize").meta.extra.get("quantized")
    report = (run / "report.md").read_text()
    assert "| max_accuracy_drop_pp |" in report and "| fail |" not in report
    assert f"mine.pth (sha256 {a.meta.imported['source_sha256'][:12]})" in report


def test_a_torchvision_model_timm_cannot_load_is_pruned_and_quantized(elpv_manifest, tmp_path, cli):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=2)
    script = train_outside(model, elpv_manifest, steps=25)
    torch.save(model.state_dict(), tmp_path / "mnv3.pth")

    r = cli("import", tmp_path / "mnv3.pth", "--model", "torchvision:mobilenet_v3_small", "--out", tmp_path / "imp",
            "--data", elpv_manifest, *CONTRACT_FLAGS)
    assert r.exit_code == 0, r.output
    for split in ("val", "test"):
        assert edgeft_predictions(tmp_path / "imp", elpv_manifest, split) == script[split]

    r = cli("optimize", recipe(tmp_path, elpv_manifest, tmp_path / "mnv3.pth", "torchvision:mobilenet_v3_small"),
            "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    pruned = artifact.load(tmp_path / "run" / "02-prune")
    assert pruned.meta.metrics["prune"]["macs_after"] < pruned.meta.metrics["prune"]["macs_before"]
    assert artifact.load(tmp_path / "run" / "05-quantize").meta.extra.get("quantized")


def test_an_onnx_classifier_takes_the_deploy_only_path(elpv_manifest, tmp_path, cli):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=2)
    script = train_outside(model, elpv_manifest, steps=20)
    torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), str(tmp_path / "theirs.onnx"), opset_version=17,
                      input_names=["images"], output_names=["scores"], dynamo=False,
                      dynamic_axes={"images": {0: "n"}, "scores": {0: "n"}})

    r = cli("import", tmp_path / "theirs.onnx", "--out", tmp_path / "imp", "--data", elpv_manifest,
            "--splits", "val,test", *CONTRACT_FLAGS)
    assert r.exit_code == 0, r.output
    assert edgeft_predictions(tmp_path / "imp", elpv_manifest, "test") == script["test"]
    a = artifact.load(tmp_path / "imp")
    assert a.meta.kind == "onnx"

    # eval and decide take the imported artifact; pruning and QAT refuse it in one line
    r = cli("eval", tmp_path / "imp", "--data", elpv_manifest, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["confusion"] == a.meta.metrics["test"]["confusion"]
    r = cli("decide", tmp_path / "imp", "--data", elpv_manifest, "--positive", "defective", "--target-recall", "0.9")
    assert r.exit_code == 0, r.output
    r = cli("compare-backends", tmp_path / "imp", "--data", elpv_manifest, "--n", "8")  # against the file as brought
    assert r.exit_code == 0, r.output
    assert "ort-cpu     pass" in r.output
    r = cli("prune", tmp_path / "imp", "--data", elpv_manifest, "--out", tmp_path / "pruned", "--target-macs", "0.5")
    assert_one_line_error(r, "imported ONNX model", "edgeft import FILE.pth --model ARCH")
    assert not (tmp_path / "pruned").exists()

    r = cli("optimize", recipe(tmp_path, elpv_manifest, tmp_path / "theirs.onnx", None, onnx=True),
            "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.is_dir() and p.name[0].isdigit()) == [
        "01-import", "02-quantize", "03-bench"]
    report = (run / "report.md").read_text()
    assert "vs imported ONNX FP32" in report  # the INT8 model's drop is against the imported baseline
    # the paired latency gate takes the imported model as its baseline (any verdict; this is no timing test)
    r = cli("gate", run / "01-import", run / "02-quantize", "--time-cap-s", "3", "--block-s", "0.05",
            "--min-rounds", "6", "--threads", "1")
    assert r.exit_code in (0, 1, 3), r.output
    assert "rounds" in r.output


def test_the_demo_models_state_dict_imported_again_gives_the_same_model_downstream(tiny_data, tmp_path, cli):
    """An edgeft fine-tuned model exported as a plain state dict and imported: the same logits, and pruning
    (without recovery), export and INT8 with the same settings give byte-identical files."""
    from edgeft.evaluate import logits
    from edgeft.data import load_split

    r = cli("finetune", "--data", tiny_data, "--out", tmp_path / "ft", "--model", "test_efficientnet", "--weights",
            "none", "--mode", "full", "--image-size", "32", "--resize", "stretch", "--epochs", "2", "--threads", "2")
    assert r.exit_code == 0, r.output
    ft = artifact.load(tmp_path / "ft")
    c = ft.meta.input
    torch.save(torch.load(ft.model_path, weights_only=True), tmp_path / "plain.pth")
    r = cli("import", tmp_path / "plain.pth", "--model", "test_efficientnet", "--out", tmp_path / "imp",
            "--size", "32", "--resize", "stretch", "--interpolation", c.interpolation,
            "--mean", ",".join(map(str, c.mean)), "--std", ",".join(map(str, c.std)), "--classes", "bad,good")
    assert r.exit_code == 0, r.output
    imp = artifact.load(tmp_path / "imp")
    assert imp.meta.input == c
    s = load_split(tiny_data, "test", c)
    a, _ = logits(ft, s, backend="torch")
    b, _ = logits(imp, s, backend="torch")
    assert np.abs(a - b).max() <= 1e-6

    from edgeft.data import calibration
    from edgeft.export.stage import export
    from edgeft.prune.config import PruneConfig
    from edgeft.prune.pruner import prune
    from edgeft.quantize.ptq import QuantizeConfig, quantize

    manifest = calibration.save(calibration.create(tiny_data, n=16), tmp_path / "calib.json")
    for name in ("ft", "imp"):
        prune(tmp_path / name, tiny_data, tmp_path / f"{name}-p", PruneConfig(target_macs=0.7, steps=5, round_to=4,
                                                                             recover_epochs=0, threads=2),
              measure_latency=False)
        export(tmp_path / f"{name}-p", tmp_path / f"{name}-x", data=tiny_data, n=8)
        quantize(tmp_path / f"{name}-x", tmp_path / f"{name}-q", QuantizeConfig(auto_exclude=False, threads=2),
                 manifest, tiny_data)
    for stage in ("p", "x", "q"):
        assert artifact.load(tmp_path / f"ft-{stage}").meta.model_sha256 == \
            artifact.load(tmp_path / f"imp-{stage}").meta.model_sha256, stage


def test_a_12_bit_set_with_its_window_predicts_as_its_8_bit_rendering(elpv_manifest, tmp_path, cli):
    """16-bit PNGs holding 0..4095, made from the real cells: with window 12 bits the imported model decides every
    image as it does on the 8-bit files, in evaluation and in the camera's Predictor."""
    import timm

    from edgeft.images import read_image
    from edgeft.runtime.predictor import Predictor

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=2)
    train_outside(model, elpv_manifest, steps=20)
    torch.save(model.state_dict(), tmp_path / "m.pth")
    rows = list(csv.DictReader(open(elpv_manifest)))
    deep = tmp_path / "deep.csv"
    with open(deep, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for i, row in enumerate(rows):
            eight = cv2.imread(row["path"], cv2.IMREAD_GRAYSCALE)
            twelve = np.round(eight.astype(np.float64) * 4095 / 255).astype(np.uint16)
            p = tmp_path / "deep" / f"{i:03d}.png"
            p.parent.mkdir(exist_ok=True)
            cv2.imwrite(str(p), twelve)
            w.writerow([p, row["label"], row["split"]])
    assert read_image(tmp_path / "deep" / "000.png").dtype == np.uint16

    for name, data, extra in (("eight", elpv_manifest, []), ("twelve", deep, ["--window", "12 bits"])):
        r = cli("import", tmp_path / "m.pth", "--model", "test_efficientnet", "--out", tmp_path / name,
                "--data", data, *CONTRACT_FLAGS, *extra)
        assert r.exit_code == 0, r.output
    for split in ("val", "test"):
        assert edgeft_predictions(tmp_path / "twelve", deep, split) == \
            edgeft_predictions(tmp_path / "eight", elpv_manifest, split)
    # the camera: the exported model carries the window in its contract
    for name in ("eight", "twelve"):
        r = cli("export", tmp_path / name, "--out", tmp_path / f"{name}-x")
        assert r.exit_code == 0, r.output
    eight = Predictor(tmp_path / "eight-x")
    twelve = Predictor(tmp_path / "twelve-x")
    assert twelve.contract.window == {"bits": 12}
    a = eight.predict([read_image(row["path"]) for row in rows])
    b = twelve.predict([read_image(tmp_path / "deep" / f"{i:03d}.png") for i in range(len(rows))])
    assert [p.index for p in a] == [p.index for p in b]
    # 12-bit levels are 16 times finer: the scores differ by about the 8-bit files' own rounding after resizing
    assert max(abs(x.score - y.score) for x, y in zip(a, b)) < 1e-2


# ------------------------------------------------------------------------------------------------ bad input

def test_a_checkpoint_of_another_architecture_names_keys_and_the_one_that_fits(tmp_path, cli):
    import torchvision

    torch.save(torchvision.models.get_model("mobilenet_v3_small", num_classes=2).state_dict(), tmp_path / "m.pth")
    r = cli("import", tmp_path / "m.pth", "--model", "torchvision:mobilenet_v3_large", "--out", tmp_path / "o",
            "--classes", "a,b")
    assert_one_line_error(r, "missing", "unexpected", "pass --model torchvision:mobilenet_v3_small")
    assert not (tmp_path / "o").exists()


def test_a_class_count_unlike_the_datas_is_refused_before_writing(tiny_data, tmp_path, cli):
    import timm

    torch.save(timm.create_model("test_efficientnet", num_classes=3).state_dict(), tmp_path / "m.pth")
    r = cli("import", tmp_path / "m.pth", "--model", "test_efficientnet", "--out", tmp_path / "o", "--data", tiny_data)
    assert_one_line_error(r, "3 outputs", "2 class names")
    r = cli("import", tmp_path / "m.pth", "--model", "test_efficientnet", "--out", tmp_path / "o", "--data", tiny_data,
            "--classes", "bad,good,ugly")
    assert_one_line_error(r, "the data's classes", "differ")
    assert not (tmp_path / "o").exists()


def test_onnx_files_edgeft_cannot_take_are_refused(tmp_path, cli):
    import onnx
    from onnx import TensorProto, helper

    def write(name, inputs, out_shape):
        nodes = [helper.make_node("GlobalAveragePool", [inputs[0].name], ["p"]),
                 helper.make_node("Flatten", ["p"], ["logits"])]
        g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                                                 out_shape)])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / name))

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    write("two.onnx", [x, helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])], [1, 3])
    write("dyn.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])], [1, 3])
    r = cli("import", tmp_path / "two.onnx", "--out", tmp_path / "o", "--classes", "a,b,c")
    assert_one_line_error(r, "2 inputs", "one image input")
    r = cli("import", tmp_path / "dyn.onnx", "--out", tmp_path / "o", "--classes", "a,b,c")
    assert_one_line_error(r, "dynamic input height or width", "--size")
    r = cli("import", tmp_path / "dyn.onnx", "--out", tmp_path / "o", "--classes", "a,b,c", "--size", "32")
    assert r.exit_code == 0, r.output
    r = cli("import", tmp_path / "dyn.onnx", "--out", tmp_path / "o2", "--classes", "a,b", "--size", "32")
    assert_one_line_error(r, "3 outputs", "2 class names")
    assert not (tmp_path / "o2").exists()


def test_line_data_that_breaks_its_declaration_stops_in_one_line(tmp_path, cli):
    import timm

    torch.save(timm.create_model("test_efficientnet", num_classes=2).state_dict(), tmp_path / "m.pth")
    img = np.full((40, 40), 3000, dtype=np.uint16)
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img if i else img * 2)  # 0.png holds 6000: above 12 bits

    def manifest(name, rows):
        p = tmp_path / name
        p.write_text("path,label,split\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
        return p

    good = [("1.png", "a", "train"), ("2.png", "b", "train"), ("3.png", "a", "val"), ("1.png", "b", "val")]
    base = ["--model", "test_efficientnet", "--out", tmp_path / "o", "--size", "32", "--resize", "stretch"]
    r = cli("import", tmp_path / "m.pth", *base, "--data", manifest("deep.csv", good + [("0.png", "a", "val")]),
            "--window", "12 bits")
    assert_one_line_error(r, "0.png", "above the declared window of 12 bits")
    r = cli("import", tmp_path / "m.pth", *base, "--data", manifest("gone.csv", good + [("9.png", "a", "val")]))
    assert_one_line_error(r, "line 6", "image not found")
    r = cli("import", tmp_path / "m.pth", *base, "--data", manifest("split.csv", good + [("1.png", "a", "tset")]))
    assert_one_line_error(r, "unknown split 'tset'", "did you mean: test")
    r = cli("import", tmp_path / "m.pth", *base, "--data", manifest("roi.csv", good), "--roi", "30,30,20,20")
    assert_one_line_error(r, "input.roi", "outside the 40x40 image")
    assert not (tmp_path / "o").exists()
    r = cli("import", tmp_path / "m.pth", *base, "--data", manifest("ok.csv", good), "--roi", "10,10,20,20",
            "--window", "12 bits")
    assert r.exit_code == 0, r.output
    assert artifact.load(tmp_path / "o").meta.input.roi == (10, 10, 20, 20)


def test_recipes_refuse_what_an_onnx_import_cannot_do(tmp_path, tiny_onnx):
    from edgeft.errors import ConfigError
    from edgeft.optimize.recipe import parse

    onnx_file = str(tiny_onnx.model_path)
    base = {"data": str(tmp_path), "import": {"model": onnx_file}, "quantize": {}}
    with pytest.raises(ConfigError, match="prune: import.model model.onnx is an ONNX file"):
        parse({**base, "prune": {"target_macs": 0.5}})
    with pytest.raises(ConfigError, match="QAT retrains PyTorch weights"):
        parse({**base, "quantize": {"method": "qat"}})
    with pytest.raises(ConfigError, match="not both"):
        parse({**base, "finetune": {}})
    with pytest.raises(ConfigError, match="leave out --model"):
        parse({**base, "import": {"model": onnx_file, "arch": "resnet18"}})
    r = parse(base)
    assert r.stages == ["import", "quantize"] and r.imports_onnx


def test_a_safetensors_checkpoint_reads_its_class_count_from_the_head(tmp_path, cli):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = timm.create_model("test_efficientnet", num_classes=4)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "m.safetensors"))
    (tmp_path / "names.txt").write_text("crack\ndark\nok\nscratch\n")
    r = cli("import", tmp_path / "m.safetensors", "--model", "test_efficientnet", "--out", tmp_path / "o",
            "--classes", tmp_path / "names.txt", "--size", "48x64", "--resize", "stretch")
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "o")
    assert a.meta.class_names == ["crack", "dark", "ok", "scratch"] and a.meta.input.size == (48, 64)
    from edgeft.models import from_artifact

    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(from_artifact(a)(x), m.eval()(x))


def test_partial_recovery_of_an_import_needs_the_blocks_named(tmp_path, cli):
    """edgeft does not know which blocks the user's fine-tuning trained: partial recovery and partial QAT retrain the
    last N the import names, and refuse, saying how to name them, when it names none."""
    import timm

    from edgeft.errors import ConfigError
    from edgeft.training.config import config_from_parent

    torch.save(timm.create_model("test_efficientnet", num_classes=2).state_dict(), tmp_path / "m.pth")
    common = ["--model", "test_efficientnet", "--classes", "bad,good", "--size", "32"]
    r = cli("import", tmp_path / "m.pth", "--out", tmp_path / "named", "--trainable-blocks", "2", *common)
    assert r.exit_code == 0, r.output
    assert cli("import", tmp_path / "m.pth", "--out", tmp_path / "unnamed", *common).exit_code == 0
    cfg = config_from_parent(artifact.load(tmp_path / "named"), "partial", 1, 1e-3)
    assert cfg.mode == "partial" and cfg.trainable_blocks == 2 and cfg.model == "test_efficientnet"
    assert config_from_parent(artifact.load(tmp_path / "unnamed"), "full", 1, 1e-3).mode == "full"
    with pytest.raises(ConfigError, match="--trainable-blocks N"):
        config_from_parent(artifact.load(tmp_path / "unnamed"), "partial", 1, 1e-3)
    r = cli("import", tmp_path / "m.pth", "--out", tmp_path / "many", "--trainable-blocks", "99", *common)
    assert_one_line_error(r, "trainable_blocks 99 is more than the")
