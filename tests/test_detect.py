"""Object detection: the COCO and YOLO readers and their refusals, boxes through the input contract and the training
flips, the graph's NMS in ONNX Runtime against PyTorch, COCO metrics, and the chain detect -> export -> eval -> infer
on timm's tiny test model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error

CLASSES = ("scratch", "spot")


def synthetic(rng: np.random.Generator, size: tuple[int, int] = (64, 64)
              ) -> tuple[np.ndarray, list[list[float]], list[int]]:
    """A dark noisy image with one to three bright squares (class 0) or grey discs (class 1): boxes x1, y1, x2, y2."""
    import cv2

    h, w = size
    img = rng.integers(10, 50, size=(h, w, 3), dtype=np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, 4))):
        s = int(rng.integers(10, 20))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        k = int(rng.integers(0, 2))
        if k == 0:
            img[y:y + s, x:x + s] = 230
        else:
            cv2.circle(img, (x + s // 2, y + s // 2), s // 2, (140, 140, 140), -1)
        boxes.append([float(x), float(y), float(x + s), float(y + s)])
        labels.append(k)
    return img, boxes, labels


def write_coco(root: Path, counts: dict[str, int], seed: int = 0, size: tuple[int, int] = (64, 64)) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        cats = [{"id": 7 + i, "name": c} for i, c in enumerate(CLASSES)]  # ids need not start at 1
        coco = {"images": [], "annotations": [], "categories": cats}
        for i in range(n):
            img, boxes, labels = synthetic(rng, size)
            cv2.imwrite(str(d / f"{i:03d}.png"), img)
            coco["images"].append({"id": i + 1, "file_name": f"{i:03d}.png", "width": size[1], "height": size[0]})
            for b, k in zip(boxes, labels):
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": 7 + k,
                                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "iscrowd": 0})
        (d / "annotations.json").write_text(json.dumps(coco))
    return root


def coco_to_yolo(src: Path, dst: Path) -> Path:
    """The same data in the YOLO layout."""
    import shutil

    for split_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        coco = json.loads((split_dir / "annotations.json").read_text())
        (dst / "images" / split_dir.name).mkdir(parents=True)
        (dst / "labels" / split_dir.name).mkdir(parents=True)
        for im in coco["images"]:
            shutil.copy(split_dir / im["file_name"], dst / "images" / split_dir.name / im["file_name"])
            lines = []
            for a in coco["annotations"]:
                if a["image_id"] == im["id"]:
                    x, y, w, h = a["bbox"]
                    lines.append(f"{a['category_id'] - 7} {(x + w / 2) / im['width']} {(y + h / 2) / im['height']} "
                                 f"{w / im['width']} {h / im['height']}")
            (dst / "labels" / split_dir.name / im["file_name"]).with_suffix(".txt").write_text("\n".join(lines))
    (dst / "data.yaml").write_text(f"names: {list(CLASSES)}\n")
    return dst


@pytest.fixture(scope="module")
def boxes_data(tmp_path_factory) -> Path:
    return write_coco(tmp_path_factory.mktemp("det") / "data", {"train": 32, "val": 8, "test": 8})


def test_coco_and_yolo_layouts_read_alike(boxes_data, tmp_path):
    from edgeft.tasks.detect.data import read_split

    yolo = coco_to_yolo(boxes_data, tmp_path / "yolo")
    a, b = read_split(boxes_data, "train"), read_split(yolo, "train")
    assert (a.layout, b.layout) == ("coco", "yolo")
    assert a.classes == b.classes == list(CLASSES)
    assert [p.name for p in a.paths] == [p.name for p in b.paths]
    assert a.box_count() == b.box_count() > 32
    for ba, bb, la, lb in zip(a.boxes, b.boxes, a.labels, b.labels):
        np.testing.assert_allclose(ba, bb, atol=1e-3)
        assert la.tolist() == lb.tolist()


def test_broken_boxes_are_clipped_or_dropped_and_counted(tmp_path):
    from edgeft.tasks.detect.data import read_split

    root = write_coco(tmp_path / "d", {"train": 2})
    f = root / "train" / "annotations.json"
    coco = json.loads(f.read_text())
    n = len(coco["annotations"])
    coco["annotations"] += [
        {"id": 100, "image_id": 1, "category_id": 7, "bbox": [10, 10, 0, 5]},  # zero width
        {"id": 101, "image_id": 1, "category_id": 7, "bbox": [70, 70, 5, 5]},  # wholly outside the 64x64 image
        {"id": 102, "image_id": 1, "category_id": 8, "bbox": [-4, 50, 10, 20]},  # partly outside: clipped
    ]
    f.write_text(json.dumps(coco))
    ds = read_split(root, "train")
    assert ds.box_count() == n + 1
    assert ds.dropped == {"of zero size": 1, "outside the image": 1}
    assert ds.clipped == 1
    assert ds.boxes[0].min() >= 0 and ds.boxes[0].max() <= 64
    assert "dropped 1 of zero size, 1 outside the image" in ds.summary()


@pytest.mark.parametrize("breakage, fragments", [
    ("missing_image", ["annotations.json", "999.png"]),
    ("unknown_category", ["category id 42", "7: scratch"]),
    ("yolo_fields", ["000.txt:1", "4 fields"]),
    ("yolo_class", ["000.txt:1", "class index 5"]),
])
def test_bad_annotations_one_line_nothing_written(cli, tmp_path, breakage, fragments):
    root = write_coco(tmp_path / "d", {"train": 2, "val": 1})
    if breakage.startswith("yolo"):
        root = coco_to_yolo(root, tmp_path / "y")
        t = root / "labels" / "train" / "000.txt"
        t.write_text("0 0.5 0.5 0.2\n" if breakage == "yolo_fields" else "5 0.5 0.5 0.2 0.2\n")
    else:
        f = root / "train" / "annotations.json"
        coco = json.loads(f.read_text())
        if breakage == "missing_image":
            coco["images"][0]["file_name"] = "999.png"
        else:
            coco["annotations"][0]["category_id"] = 42
        f.write_text(json.dumps(coco))
    out = tmp_path / "art"
    r = cli("detect", "--data", root, "--out", out, "--model", "test_efficientnet", "--weights", "none")
    assert_one_line_error(r, *fragments)
    assert not out.exists() and not list(tmp_path.glob(".art*"))


def test_boxes_follow_letterbox_and_region_of_interest(boxes_data):
    from edgeft.contract import InputContract
    from edgeft.tasks.detect.boxes import to_frame
    from edgeft.tasks.detect.data import decode, read_split

    ds = read_split(boxes_data, "val")
    c = InputContract(size=(48, 80), mean=(0.5,) * 3, std=(0.5,) * 3, resize="letterbox", roi=(8, 0, 56, 64))
    s = decode(ds, c)
    assert s.images.shape == (8, 48, 80, 3) and s.sizes[0] == (64, 56)
    assert (s.images[:, :, :4] == 114).all()  # the letterbox's grey bars at the sides
    kept = 0
    for k in range(len(s)):
        back = to_frame(s.boxes[k], c, *s.sizes[k])
        orig = ds.boxes[k]
        inside = orig[(orig[:, 0] >= 8)]  # wholly inside the region: moved there and back exactly
        for b in inside:
            assert np.abs(back - b).max(1).min() < 1e-3
            kept += 1
    assert kept > 3


def test_training_flips_move_boxes_with_the_image():
    import torch

    from edgeft.data.augment import Augmentation
    from edgeft.tasks.detect.training import flip_boxes

    x = torch.zeros(6, 1, 32, 32)
    x[:, :, 4:10, 20:30] = 1.0  # rows 4..9, columns 20..29
    boxes = [torch.tensor([[20.0, 4.0, 30.0, 10.0]]) for _ in range(6)]
    y, moved = flip_boxes(x, boxes, Augmentation(), torch.Generator().manual_seed(3))
    seen = set()
    for img, b in zip(y, moved):
        rows, cols = torch.nonzero(img[0], as_tuple=True)
        found = [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]
        assert b[0].tolist() == found
        seen.add(tuple(found))
    assert len(seen) > 1  # the seed drew different flips and turns


def test_nms_in_the_onnx_graph_keeps_pytorchs_boxes(tmp_path):
    """Per class NMS: the ONNX operator in ONNX Runtime keeps the boxes torchvision's nms keeps, and both keep the
    same best ``max_detections`` of an image in an output of a fixed shape."""
    from dataclasses import replace

    import torch

    from edgeft.contract import InputContract
    from edgeft.models.onnx import export_onnx
    from edgeft.tasks.detect import onnx_detections
    from edgeft.tasks.detect.boxes import match
    from edgeft.tasks.detect.model import DetectSpec, Detector
    from edgeft.tasks.detect.nms import DetectorGraph
    from edgeft.tasks.detect.training import torch_detections

    torch.manual_seed(0)
    spec = DetectSpec(fpn_channels=32, head_convs=1, score_threshold=0.05, nms_iou=0.5, max_detections=1000)
    c = InputContract(size=(64, 64), mean=(0.5,) * 3, std=(0.5,) * 3, resize="stretch")
    g = DetectorGraph(Detector("test_efficientnet", 2, spec), spec, c.size).eval()
    cls = g.model.head.classification_head.cls_logits  # spread the scores as a trained head does (a fresh one
    torch.nn.init.normal_(cls.weight, std=0.3)  # scores every point at its prior, and ties then break by rounding)
    torch.nn.init.zeros_(cls.bias)
    images = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    path = export_onnx(g, c, tmp_path / "d.onnx", dynamic_batch=True, outputs=("detections",))
    ref, got = torch_detections(g, images, c), onnx_detections(path, images, c)
    assert sum(len(r[0]) for r in ref) > 10  # NMS has work to do
    for r, o in zip(ref, got):
        unmatched, ious, diffs = match(r, o)
        assert unmatched == 0 and ious.min() > 0.999 and diffs.max() < 1e-5
    capped = DetectorGraph(g.model, replace(spec, max_detections=5), c.size).eval()
    path = export_onnx(capped, c, tmp_path / "c.onnx", dynamic_batch=True, outputs=("detections",))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": c.normalize(images)})[0].shape == (4, 5, 6)  # fixed: M rows of six per image
    for r, o in zip(torch_detections(capped, images, c), onnx_detections(path, images, c)):
        assert len(r[0]) == len(o[0]) == 5  # the five best boxes of the image, whatever their class
        np.testing.assert_allclose(r[1], o[1], atol=1e-5)
        assert r[2].tolist() == o[2].tolist()


def test_a_class_keeps_its_colour_in_every_frame_of_the_overlays():
    from edgeft.runtime.predictor import Prediction
    from edgeft.tasks.detect import DetectHead
    from edgeft.tasks.detect.boxes import PALETTE

    head = DetectHead()
    frame = np.zeros((40, 40, 3), np.uint8)
    colours = []
    for boxes in ([{"box": [5, 5, 30, 30], "score": 0.9, "class": "spot"}],
                  [{"box": [2, 2, 10, 10], "score": 0.8, "class": "scratch"},
                   {"box": [5, 5, 30, 30], "score": 0.9, "class": "spot"}]):
        drawn = head.draw(frame, Prediction("spot", 1, 0.9, [], extras={"boxes": boxes}), None, ["scratch", "spot"])
        colours.append(tuple(int(v) for v in drawn[30, 18]))  # the spot box's bottom edge
    assert colours[0] == colours[1] == PALETTE[1]


def test_head_distillation_is_least_at_the_teachers_outputs_and_weighs_its_confident_points():
    import torch

    from edgeft.tasks.detect.model import head_distillation

    g = torch.Generator().manual_seed(0)
    t = (torch.randn(2, 50, 3, generator=g), torch.rand(2, 50, 4, generator=g), torch.randn(2, 50, 1, generator=g))
    same = head_distillation(t, t)
    moved = tuple(x + 0.5 * torch.randn(x.shape, generator=g) for x in t)
    assert head_distillation(moved, t) > same
    t[0][:, :, :] = -20.0  # the teacher sees nothing anywhere but one point
    t[0][0, 7, 1] = 5.0
    far = tuple(x.clone() for x in t)
    far[1][1, 30] += 10.0  # a box far off where the teacher sees nothing: hardly counts
    near = tuple(x.clone() for x in t)
    near[1][0, 7] += 10.0  # the same error at its one confident point: counts
    assert head_distillation(near, t) - head_distillation(t, t) > 100 * (head_distillation(far, t) -
                                                                         head_distillation(t, t))


def test_coco_metrics_of_perfect_shifted_and_missing_boxes():
    from edgeft.tasks.detect.metrics import coco_metrics

    truth = [(np.array([[10, 10, 30, 30], [40, 40, 60, 60]], np.float32), np.array([0, 1]))]
    sizes = [(64, 64)]
    perfect = [(truth[0][0], np.array([0.9, 0.8]), np.array([0, 1]))]
    m = coco_metrics(truth, perfect, ["a", "b"], sizes, confidence=0.5)
    assert m.map == pytest.approx(1.0) and m.box_recall == 1.0 and m.missed == 0
    shifted = [(truth[0][0] + 3, np.array([0.9, 0.8]), np.array([0, 1]))]  # IoU (17*17)/(2*400-289) = 0.57
    m = coco_metrics(truth, shifted, ["a", "b"], sizes, confidence=0.5)
    assert m.map50 == pytest.approx(1.0) and m.map == pytest.approx(0.2)  # found at IoU .50 and .55 of the ten
    one = [(truth[0][0][:1], np.array([0.9]), np.array([0]))]
    m = coco_metrics(truth, one, ["a", "b"], sizes, confidence=0.95)
    assert m.per_class["a"]["ap"] == pytest.approx(1.0) and m.per_class["b"]["ap"] == 0.0
    assert (m.box_recall, m.missed) == (0.0, 2)  # nothing scores 0.95


@pytest.fixture(scope="module")
def tiny_detector(boxes_data, tmp_path_factory) -> Path:
    """A detector on timm's tiny test model, trained 3 epochs on the synthetic boxes at 64 px."""
    from click.testing import CliRunner

    from edgeft.cli import cli as entry

    a = tmp_path_factory.mktemp("detector") / "det"
    r = CliRunner().invoke(entry, ["-q", "detect", "--data", str(boxes_data), "--out", str(a), "--model",
                                   "test_efficientnet", "--weights", "none", "--epochs", "3", "--image-size", "64",
                                   "--threads", "2", "--set", "fpn_channels=32", "--set", "head_convs=1",
                                   "--set", "frozen_stages=0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "mAP@[.5:.95]" in r.output
    return a


def test_pruned_detector_recovers_reloads_and_exports(cli, boxes_data, tiny_detector, tmp_path):
    """Backbone channels go to the MACs target (pyramid and head kept), the detector recovers with its parent's
    settings, and the pruned artifact rebuilds from its shape spec and exports with matched boxes."""
    from edgeft import artifact
    from edgeft.models import count_macs, from_artifact

    import torch

    p, o = tmp_path / "pruned", tmp_path / "pruned-onnx"
    r = cli("prune", tiny_detector, "--data", boxes_data, "--out", p, "--target-macs", "0.7", "--importance", "taylor",
            "--recover-epochs", "1", "--steps", "10", "--round-to", "1",
            "--target-tolerance", "0.05")  # the tiny model's few channels go in coarse groups
    assert r.exit_code == 0, r.output
    assert "val mAP" in r.output and "recovered" in r.output
    meta = artifact.load(p).meta
    rec = meta.metrics["detect_prune"]
    assert rec["target"]["within_tolerance"] and rec["macs_ratio"] <= 0.7 + 1e-9, rec
    assert meta.extra["pruned_spec"] and all(k.startswith("model.backbone.") or k.startswith("model.fpn.inner")
                                             for k in meta.extra["pruned_spec"])
    graph = from_artifact(artifact.load(p))
    assert count_macs(graph.model, torch.zeros(1, 3, 64, 64))[0] == rec["macs_after"]
    r = cli("export", p, "--out", o, "--data", boxes_data)
    assert r.exit_code == 0, r.output
    assert " 0 unmatched" in r.output


def test_detect_export_eval_infer_chain(cli, boxes_data, tiny_detector, tmp_path):
    """Train a tiny detector, export it (parity on matched boxes), get the same mAP from PyTorch and ONNX Runtime,
    calibrate on images with boxes and quantize it (decoding and NMS kept FP32); `edgeft infer` of the INT8 model
    returns boxes in the frame's pixels."""
    import cv2

    from edgeft import artifact

    a, o = tiny_detector, tmp_path / "det-onnx"
    meta = artifact.load(a).meta
    hist = meta.extra["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert meta.extra["data_counts"]["train"]["per_class"].keys() == set(CLASSES)
    r = cli("export", a, "--out", o, "--data", boxes_data, "--dynamic-batch")
    assert r.exit_code == 0, r.output
    assert "0 unmatched" in r.output
    evals = []
    for m, backend in ((a, "auto"), (o, "auto"), (o, "ov-cpu")):  # PyTorch, ONNX Runtime, OpenVINO: NMS in each
        r = cli("eval", m, "--data", boxes_data, "--split", "test", "--json", "--backend", backend)
        assert r.exit_code == 0, r.output
        evals.append(json.loads(r.stdout))
    assert evals[0]["map"] == pytest.approx(evals[1]["map"], abs=1e-4)
    assert evals[2]["map"] == pytest.approx(evals[1]["map"], abs=2e-3) and evals[2]["predictions"] > 0
    calib, q = tmp_path / "calib.json", tmp_path / "det-int8"
    r = cli("calibrate", "--data", boxes_data, "--out", calib, "--n", "16", "--artifact", a)
    assert r.exit_code == 0, r.output
    manifest = json.loads(calib.read_text())
    assert manifest["classes"] == list(CLASSES) and len(manifest["images"]) == 16
    r = cli("quantize", a, "--calib", calib, "--data", boxes_data, "--out", q, "--threads", "2")
    assert r.exit_code == 0, r.output
    assert "test mAP@[.5:.95]: FP32" in r.output
    qm = artifact.load(q).meta
    assert qm.extra["task"] == "detect" and qm.metrics["test_fp32"]["map"] == pytest.approx(evals[1]["map"], abs=1e-4)
    tail = [n for n in qm.extra["excluded_nodes"] if "NonMaxSuppression" in n]
    assert tail, "NMS and decoding stay FP32"
    import onnx

    nodes = {n.name: n for n in onnx.load(str(q / "model.onnx")).graph.node}
    assert any(n.op_type == "QuantizeLinear" for n in nodes.values())
    consumers = {i for n in nodes.values() if n.op_type == "NonMaxSuppression" for i in n.input}
    assert not any(n.op_type == "DequantizeLinear" and set(n.output) & consumers for n in nodes.values())
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[20:44, 30:54] = 230
    cv2.imwrite(str(tmp_path / "f.png"), frame)
    r = cli("infer", q, tmp_path / "f.png", "--overlays", tmp_path / "drawn")
    assert r.exit_code == 0, r.output
    assert [p.name for p in (tmp_path / "drawn").glob("*.png")] == ["f-000000.png"]  # the boxes over the frame
    line = json.loads(r.stdout.splitlines()[0])
    assert isinstance(line["boxes"], list)
    for b in line["boxes"]:
        x1, y1, x2, y2 = b["box"]
        assert 0 <= x1 <= x2 <= 128 and 0 <= y1 <= y2 <= 96 and b["class"] in CLASSES


def test_a_detector_trains_with_fake_quantized_convolutions_then_quantizes_with_nms_in_fp32(cli, boxes_data,
                                                                                            tiny_detector, tmp_path):
    from edgeft import artifact

    calib, q = tmp_path / "calib.json", tmp_path / "det-qat"
    assert cli("calibrate", "--data", boxes_data, "--out", calib, "--n", "16", "--artifact", tiny_detector).exit_code == 0
    r = cli("quantize", tiny_detector, "--calib", calib, "--data", boxes_data, "--out", q, "--method", "qat",
            "--epochs", "1", "--threads", "2")
    assert r.exit_code == 0, r.output
    assert "against the FP32 parent before QAT" in r.output
    meta = artifact.load(q).meta
    assert meta.extra["method"] == "qat" and meta.extra["task"] == "detect"
    qat_entry = next(e for e in meta.lineage if e["stage"] == "qat")
    assert qat_entry["params"]["qat"]["fake_quantized_layers"] > 10  # backbone, pyramid and head convolutions
    m = meta.metrics
    assert m["map_drop_vs_parent_points"] == pytest.approx((m["test_fp32_parent"]["map"] - m["test"]["map"]) * 100,
                                                           abs=0.01)
    assert [n for n in meta.extra["excluded_nodes"] if "NonMaxSuppression" in n]  # NMS and decoding stay FP32
    assert_one_line_error(cli("quantize", tiny_detector, "--calib", calib, "--data", boxes_data, "--out",
                              tmp_path / "p", "--method", "qat", "--qat-mode", "partial"), "--qat-mode partial",
                          "use full")
    assert not (tmp_path / "p").exists()


def test_a_detection_recipe_runs_detect_prune_export_int8_bench_and_gates_on_map(boxes_data, tmp_path):
    from edgeft.optimize import pipeline
    from edgeft.optimize.recipe import parse

    d = {
        "name": "det", "data": str(boxes_data), "threads": 2, "task": "detect",
        "detect": {"model": "test_efficientnet", "weights": None, "image_size": 64, "epochs": 2, "fpn_channels": 32,
                   "head_convs": 1, "frozen_stages": 0},
        "prune": {"target_macs": 0.8, "steps": 5, "round_to": 1, "target_tolerance": 0.1, "recover_epochs": 1},
        "export": {"parity_images": 8},
        "quantize": {"calib_images": 16, "auto_exclude": False},
        "bench": {"backends": ["ort-cpu"], "duration_s": 0.1, "warmup_s": 0.05, "rounds": 2},
        "decision": {"positive": ["spot"], "target_recall": 0.9},
        "gates": {"max_map_drop_points": 100, "max_p50_ms": {"ort-cpu": 10000}, "max_recall_drop_pp": 100},
    }
    recipe = parse(d, source="det.yaml")
    result = pipeline.optimize(recipe, tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "pipeline.json").read_text())["recipe"]
    assert parse(stored).sections["detect"] == recipe.sections["detect"]  # the resolved recipe reads back
    assert sorted(g.gate for g in result.gates) == ["max_map_drop_points", "max_p50_ms.ort-cpu", "max_recall_drop_pp"]
    assert {g.status for g in result.gates} == {"pass"}
    for r in result.rows:  # every model at its own policy, chosen on val, and measured on test
        if r.stage != "bench":
            assert r.policy is not None and r.policy.n_positive + r.policy.n_negative == 8, r.step
            assert len(r.task_metrics["pr"]["iou50_95"]) == 101
            assert np.mean(r.task_metrics["pr"]["iou50_95"]) == pytest.approx(r.quality, abs=1e-3)
    assert (tmp_path / "run" / "pr.svg").is_file() and "false reject" in (tmp_path / "run" / "report.md").read_text()
    rows = {r.step: r for r in result.rows}
    q = next(r for r in result.rows if r.stage == "quantize")
    assert q.precision == "INT8 (ort-cpu)" and q.quality is not None and q.quality_name == "mAP@[.5:.95]"
    md = (tmp_path / "run" / "report.md").read_text()
    assert "mAP@[.5:.95]" in md and "max_map_drop_points" in md
    assert "Test images, the most missed boxes first (05-quantize)" in md and " found, " in md
    assert len(list((tmp_path / "run" / "gallery").glob("*.png"))) == 6
    assert rows[next(s for s in rows if rows[s].stage == "prune")].macs < rows[next(iter(rows))].macs

    # the same run with a ship step: the INT8 and the pruned FP32 detectors judged on val on each runtime (mAP, the
    # image-level policy chosen there), the fastest passing one shipped with its test numbers measured there
    from edgeft import artifact as art
    from edgeft.optimize.rows import load_choice
    from edgeft.tasks import registry as tasks

    d["ship"] = {"runtimes": ["ort-cpu", "ov-cpu"], "latency_rounds": 3}
    d["gates"]["max_p50_ms"]["ov-cpu"] = 10000
    result = pipeline.optimize(parse(d, source="det.yaml"), tmp_path / "run", resume=True)
    assert [(r.step.name, r.status) for r in result.steps][-2:] == [("06-ship", "done"), ("07-bench", "done")]
    doc = load_choice(tmp_path / "run" / "06-ship")
    assert [c["key"] for c in doc["choices"]] == ["int8@ort-cpu", "int8@ov-cpu", "fp32@ort-cpu", "fp32@ov-cpu"]
    assert all(c["quality_name"] == "mAP@[.5:.95]" and c["policy"] and c["recall"] is not None
               for c in doc["choices"])
    chosen = next(c for c in doc["choices"] if c["key"] == doc["chosen"])
    shipped = art.load(tmp_path / "run" / "06-ship")
    assert shipped.meta.extra["runtime"]["backend"] == chosen["runtime"]
    assert shipped.meta.metrics["scored_on"] == chosen["runtime"]
    again = tasks.get("detect").evaluate(shipped, boxes_data, "test", chosen["runtime"])  # its test mAP: that runtime's
    assert shipped.meta.metrics["test"]["map"] == pytest.approx(again.map, abs=1e-9)
    assert shipped.meta.extra["decision"]["reject_at"] == pytest.approx(chosen["policy"]["reject_at"])
    gates = {g.gate: g for g in result.gates}
    assert gates["max_map_drop_points"].model == "06-ship" and gates["max_map_drop_points"].status == "pass"


@pytest.mark.parametrize("change, fragments", [
    ({"gates": {"max_accuracy_drop_pp": 1}}, ["gates.max_accuracy_drop_pp", "max_map_drop_points"]),
    ({"decision": {"positive": ["scratchh"], "target_recall": 0.9}}, ["decision.positive: 'scratchh'", "did you mean: scratch"]),
    ({"gates": {"max_recall_drop_pp": 1}}, ["gates.max_recall_drop_pp", "add a decision: section"]),
    ({"quantize": {"method": "qat", "qat_mode": "partial"}}, ["quantize.qat_mode partial", "use full"]),
])
def test_what_a_detection_recipe_cannot_do_is_refused_in_one_line(boxes_data, change, fragments):
    from edgeft.errors import ConfigError
    from edgeft.optimize.recipe import parse

    from edgeft.optimize.pipeline import prepare

    d = {"name": "d", "data": str(boxes_data), "task": "detect", "detect": {"epochs": 1}, **change}
    with pytest.raises(ConfigError) as e:
        prepare(parse(d, source="d.yaml"))  # the recipe's settings, then against its data
    for f in fragments:
        assert f in str(e.value)


class _YoloLayout:
    """A detector exported as Ultralytics exports YOLO without NMS: one output (1, 4 + classes, anchors), centre x,
    centre y, width, height in input pixels, then class scores in [0, 1]."""

    @staticmethod
    def export(graph, path: Path, size: int = 64) -> Path:
        import torch

        class Raw(torch.nn.Module):
            def __init__(self, g):
                super().__init__()
                self.g = g

            def forward(self, x):
                boxes, scores = self.g.scored(x)  # (B, P, 4) x1 y1 x2 y2, (B, C, P)
                c = torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2,
                                 boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]], 1)
                return torch.cat([c, scores], 1)

        torch.onnx.export(Raw(graph).eval(), (torch.zeros(1, 3, size, size),), str(path), opset_version=17,
                          input_names=["images"], output_names=["output0"], dynamo=False)
        return path


def test_an_onnx_detector_in_the_yolo_layout_imports_gets_nms_and_goes_through_int8_and_the_gate(
        cli, boxes_data, tiny_detector, tmp_path):
    """The raw layout is built here from the trained tiny detector, so the imported file with edgeft's NMS added
    must score exactly the detector's own mAP; then a recipe quantizes it and gates its mAP."""
    from edgeft import artifact
    from edgeft.models import from_artifact
    from edgeft.optimize import pipeline
    from edgeft.optimize.recipe import parse

    det = artifact.load(tiny_detector)
    raw = _YoloLayout.export(from_artifact(det), tmp_path / "yolo.onnx")
    r = cli("import", raw, "--task", "detect", "--layout", "yolo", "--classes", ",".join(CLASSES), "--size", "64",
            "--resize", "stretch", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--data", boxes_data,
            "--out", tmp_path / "imp")
    assert r.exit_code == 0, r.output
    imp = artifact.load(tmp_path / "imp")
    assert imp.meta.extra["task"] == "detect" and imp.meta.kind == "onnx"
    assert imp.meta.metrics["val"]["map"] == pytest.approx(det.meta.metrics["val"]["map"], abs=1e-4)
    r = cli("infer", tmp_path / "imp", det.meta.extra and next(iter(sorted((boxes_data / "test").glob("*.png")))))
    assert r.exit_code == 0 and "boxes" in json.loads(r.stdout.splitlines()[0])
    recipe = parse({"name": "imp", "data": str(boxes_data), "threads": 2, "task": "detect",
                    "import": {"model": str(raw), "layout": "yolo", "classes": list(CLASSES),
                               "input": {"size": [64, 64], "resize": "stretch", "mean": [0.485, 0.456, 0.406],
                                         "std": [0.229, 0.224, 0.225]}},
                    "quantize": {"calib_images": 16, "auto_exclude": False},
                    "gates": {"max_map_drop_points": 100}}, source="imp.yaml")
    result = pipeline.optimize(recipe, tmp_path / "run")
    assert [(g.gate, g.status) for g in result.gates] == [("max_map_drop_points", "pass")]
    q = artifact.load(next(p for p in (tmp_path / "run").iterdir() if p.name.endswith("quantize")))
    assert q.meta.extra["quantized"] == "int8" and any("postprocess" in n for n in q.meta.extra["excluded_nodes"])


def test_a_declared_layout_that_does_not_fit_the_outputs_is_refused(cli, boxes_data, tiny_detector, tmp_path):
    from edgeft import artifact
    from edgeft.models import from_artifact

    raw = _YoloLayout.export(from_artifact(artifact.load(tiny_detector)), tmp_path / "yolo.onnx")
    r = cli("import", raw, "--task", "detect", "--layout", "yolo", "--classes", "a,b,c", "--size", "64",
            "--out", tmp_path / "imp")
    assert_one_line_error(r, "import.layout yolo expects one output (1, 4 + 3 classes, anchors)", "--classes")
    assert not (tmp_path / "imp").exists()
    r = cli("import", raw, "--task", "detect", "--classes", "scratch,spot", "--size", "64", "--out", tmp_path / "imp")
    assert_one_line_error(r, "import.layout must say how the detector's raw output is laid out")


def test_a_classifier_asked_for_its_numbers_on_box_data_is_told_what_the_data_is(cli, boxes_data, tmp_path):
    from tests.conftest import make_artifact

    make_artifact(tmp_path / "clf")
    assert_one_line_error(cli("eval", tmp_path / "clf", "--data", boxes_data, "--split", "test"),
                          "holds box annotations", "a detector's data")


def test_a_detector_decides_on_its_best_defect_box_with_a_threshold_chosen_on_val(cli, boxes_data, tiny_detector,
                                                                                   tmp_path):
    import shutil

    from edgeft import artifact
    from edgeft.decision import read_policy

    a = tmp_path / "det"
    shutil.copytree(tiny_detector, a)  # decide writes into the artifact
    r = cli("decide", a, "--data", boxes_data, "--positive", "spot", "--target-recall", "0.9")
    assert r.exit_code == 0, r.output
    assert "on test:" in r.output
    policy = read_policy(artifact.load(a).meta.extra)
    assert policy.positive == ["spot"] and policy.chosen_on == "val" and policy.val.recall >= 0.9
    image = next(iter(sorted((boxes_data / "test").glob("*.png"))))
    r = cli("infer", a, image, "--stats-every", "1")
    line = json.loads(r.stdout.splitlines()[0])
    stats = json.loads(r.stderr.strip().splitlines()[-1])["stats"]
    from collections import Counter

    assert stats.get("boxes", {}) == dict(Counter(b["class"] for b in line["boxes"]))  # per-class box counters
    assert line["decision"] in ("pass", "review", "reject")
    assert line["decision"] == str(policy.decide(np.array([line["not_ok"]]))[0])  # its best spot box, thresholded
    assert_one_line_error(cli("decide", a, "--data", boxes_data, "--positive", "spott", "--target-recall", "0.9"),
                          "'spott' is not a class of the detector", "spot")


def test_a_torchvision_fcos_checkpoint_imports_with_torchvisions_own_boxes(cli, boxes_data, tmp_path):
    """A checkpoint as torchvision's detection reference scripts save it (its args beside the weights, class 0 the
    background) imports, and edgeft's graph returns the boxes torchvision's own FCOS returns, then exports them."""
    import argparse

    import torch
    import torchvision

    from edgeft import artifact
    from edgeft.models import from_artifact
    from edgeft.models.inference import normalize
    from edgeft.tasks.detect.boxes import match

    torch.manual_seed(0)
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3).eval()
    with torch.no_grad():  # confident, varied scores instead of the initial prior's near-ties
        tv.head.classification_head.cls_logits.bias.normal_(0, 1)
    ckpt = tmp_path / "checkpoint.pth"
    torch.save({"model": tv.state_dict(), "args": argparse.Namespace(lr=0.01), "epoch": 25}, ckpt)
    out = tmp_path / "imported"
    r = cli("import", ckpt, "--task", "detect", "--model", "torchvision:fcos_resnet50_fpn", "--size", "128",
            "--data", boxes_data, "--out", out)
    assert r.exit_code == 0, r.output
    a = artifact.load(out)
    assert a.meta.class_names == list(CLASSES) and a.meta.input.resize == "letterbox"  # torchvision's output 0 dropped
    assert "map" in a.meta.metrics["val"]  # its baseline
    graph = from_artifact(a)
    spec = graph.spec
    tv.transform.min_size, tv.transform.max_size = (128,), 128  # the graph's input size: no resize inside
    tv.score_thresh, tv.nms_thresh, tv.detections_per_img = spec.score_threshold, spec.nms_iou, spec.max_detections
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        ref = tv(list(x))
        ours = graph(normalize(x, a.meta.input))
    from edgeft.tasks.detect.nms import split_detections

    for r_, (b, s, c) in zip(ref, split_detections(ours.numpy(), 2)):
        tb, ts, tc = r_["boxes"].numpy(), r_["scores"].numpy(), r_["labels"].numpy() - 1
        solid = (tb[:, 2] > tb[:, 0]) & (tb[:, 3] > tb[:, 1])  # torchvision keeps boxes clipped to a line; edgeft not
        tb, ts, tc = tb[solid], ts[solid], tc[solid]
        if len(r_["boxes"]) == tv.detections_per_img:  # torchvision's rows ran out first: compare above its last
            keep = s >= ts.min()
            b, s, c = b[keep], s[keep], c[keep]
        assert len(tb) > 10
        unmatched, ious, diffs = match((tb, ts, tc), (b, s, c))
        assert unmatched == 0 and ious.min() > 0.999 and diffs.max() < 1e-5
    r = cli("export", out, "--out", tmp_path / "onnx", "--data", boxes_data)
    assert r.exit_code == 0, r.output
    assert "0 unmatched" in r.output
    assert_one_line_error(cli("prune", out, "--out", tmp_path / "p", "--data", boxes_data, "--target-macs", "0.5"),
                          "no detect stage", "imported")
    assert_one_line_error(cli("import", ckpt, "--task", "detect", "--model", "torchvision:retinanet_resnet50_fpn",
                              "--data", boxes_data, "--out", tmp_path / "r"), "retinanet_resnet50_fpn",
                          "fcos_resnet50_fpn")
    assert_one_line_error(cli("import", ckpt, "--task", "detect", "--model", "torchvision:fcos_resnet50_fpn",
                              "--classes", "a,b,c,d", "--out", tmp_path / "c"), "scores 3 classes but 4")
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


@pytest.mark.tensorrt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed here")
def test_a_tensorrt_engine_of_the_detector_graph_keeps_its_boxes(cli, boxes_data, tiny_detector, tmp_path):
    """TensorRT parses the graph's ONNX NonMaxSuppression (its INMSLayer): the FP32 engine's mAP is ONNX Runtime's."""
    o, e = tmp_path / "onnx", tmp_path / "engine"
    assert cli("export", tiny_detector, "--out", o, "--data", boxes_data).exit_code == 0
    r = cli("build", o, "--out", e, "--precision", "fp32")
    assert r.exit_code == 0, r.output
    got = json.loads(cli("eval", e, "--data", boxes_data, "--split", "test", "--json").stdout)
    want = json.loads(cli("eval", o, "--data", boxes_data, "--split", "test", "--json").stdout)
    assert got["map"] == pytest.approx(want["map"], abs=2e-3) and got["predictions"] == pytest.approx(
        want["predictions"], rel=0.05)
