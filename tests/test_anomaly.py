"""Anomaly detection from good parts: the fit stage, the graph's distances, the export's parity, the runtime's
score, decision and heatmap, and bad input. Tiny timm test models (random weights) on 32x32 images whose
anomalies are bright strokes at a known place, so a test can check that the heatmap sits on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error

TINY_ANOMALY = ("--model", "test_efficientnet", "--weights", "none", "--image-size", "32", "--layers", "1,2",
                "--threads", "2")


def good_image(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A part: a textured plate with a dark frame, as every good part has it."""
    img = rng.integers(90, 130, size=(size, size), dtype=np.uint8)
    img[:2, :] = img[-2:, :] = img[:, :2] = img[:, -2:] = 30
    return img


def stroke(img: np.ndarray, quadrant: int, mask: bool = False) -> np.ndarray:
    """A bright crack-like stroke in one quadrant (0: top left, 1: top right, 2: bottom left, 3: bottom right); with
    ``mask``, the stroke's mask (255 on it) instead of the image."""
    import cv2

    out = np.zeros_like(img) if mask else img.copy()
    h = img.shape[0] // 2
    y0, x0 = (quadrant // 2) * h, (quadrant % 2) * h
    cv2.line(out, (x0 + 3, y0 + 3), (x0 + h - 4, y0 + h - 5), 255 if mask else 250, 2)
    return out


def write_anomaly_folder(root: Path, n_good: int = 24, n_eval: int = 8, seed: int = 0,
                         test_defects: bool = True, masks: bool = False) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    plan = {"train": {"good": n_good}, "val": {"good": n_eval, "crack": n_eval},
            "test": {"good": n_eval, "crack": n_eval if test_defects else 0}}
    for split, classes in plan.items():
        for name, n in classes.items():
            if n == 0:
                continue
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = good_image(rng)
                if name == "crack":
                    if masks and split == "test" and i % 2 == 0:  # half the test cracks have a mask
                        (root / "masks" / split / name).mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(root / "masks" / split / name / f"{name}_{i:03d}.png"), stroke(img, i % 4, True))
                    img = stroke(img, i % 4)
                cv2.imwrite(str(d / f"{name}_{i:03d}.png"), img)
    return root


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    return write_anomaly_folder(tmp_path_factory.mktemp("parts") / "data")


@pytest.fixture(scope="module")
def fitted(parts, tmp_path_factory):
    """(torch artifact, exported ONNX artifact) of a PaDiM fit on the parts."""
    from click.testing import CliRunner

    from edgeft.cli import cli as entry

    root = tmp_path_factory.mktemp("fitted")
    runner = CliRunner()
    r = runner.invoke(entry, ["-q", "anomaly", "--data", str(parts), "--good", "good", "--out", str(root / "padim"),
                              *TINY_ANOMALY], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = runner.invoke(entry, ["-q", "export", str(root / "padim"), "--out", str(root / "onnx"), "--data", str(parts),
                              "--dynamic-batch"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return root / "padim", root / "onnx"


def test_fit_separates_strokes_from_good_parts_and_chooses_the_threshold_on_val(fitted):
    from edgeft import artifact
    from edgeft.metrics import read

    a = artifact.load(fitted[0])
    assert a.meta.extra["task"] == "anomaly" and a.meta.class_names == ["good", "anomalous"]
    m = read(a.meta.metrics, "anomaly")
    assert m.good_images == 24 and m.method == "padim"
    # random-weight features still see a bright stroke on a plate: far from chance, on val and on unseen test parts
    assert m.val.auroc >= 0.9 and m.test.auroc >= 0.9, (m.val.auroc, m.test.auroc)
    policy = a.meta.extra["decision"]
    assert policy["chosen_on"] == "val" and policy["positive"] == ["anomalous"]
    assert m.test_policy is not None and m.test_policy.n_positive == 8
    spec = a.meta.extra["anomaly"]
    assert spec["grid"] == [4, 4] and spec["map_ceiling"] > spec["map_floor"]
    # the statistics the graph carries: a mean and an inverse covariance per position of 24 + 32 channels
    assert m.bank_bytes == 16 * 56 * 4 + 16 * 56 * 56 * 4


def test_export_parity_and_the_runtime_score_decision_and_heatmap(fitted, parts):
    import cv2

    from edgeft import artifact
    from edgeft.metrics import read
    from edgeft.runtime import Predictor

    onnx_art = artifact.load(fitted[1])
    p = read(onnx_art.meta.metrics, "parity")
    assert p.passed and p.max_rel_diff <= 1e-3 and p.min_map_correlation >= 0.99
    frames = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in sorted((parts / "test" / "crack").iterdir())]
    with Predictor(fitted[1], backend="ort-cpu") as ort, Predictor(fitted[0], backend="torch") as torch_p:
        got, ref = ort.predict(frames), torch_p.predict(frames)
    for g, r in zip(got, ref):
        assert g.heatmap.shape == (4, 4) and g.probabilities == []
        assert g.score == pytest.approx(r.score, rel=1e-3)
        assert g.decision in ("pass", "reject") and g.label == ("good" if g.decision == "pass" else "anomalous")
        assert g.score == pytest.approx(float(g.heatmap.max()), rel=1e-5)  # the score is the map's peak
    # the map peaks in the quadrant of the stroke on most parts (frames alternate quadrants 0, 1, 2, 3)
    on_stroke = 0
    for i, g in enumerate(got):
        row, col = g.to_dict()["hot_spot"]
        on_stroke += (int(row >= 0.5), int(col >= 0.5)) == divmod(i % 4, 2)
    assert on_stroke >= 6, on_stroke


def test_bare_onnx_file_is_still_an_anomaly_model(fitted, parts):
    import cv2

    from edgeft.runtime import Predictor

    frame = cv2.imread(str(next((parts / "test" / "crack").iterdir())), cv2.IMREAD_UNCHANGED)
    with Predictor(fitted[1] / "model.onnx") as p:
        pred = p.predict(frame)[0]
    assert p.anomaly is not None and pred.heatmap is not None
    assert pred.decision is None and pred.label == "unknown"  # a bare file carries no policy


def test_infer_writes_heatmaps_over_the_frames(fitted, parts, tmp_path, cli):
    import cv2

    out = tmp_path / "maps"
    r = cli("infer", fitted[1], parts / "test" / "crack", "--heatmaps", out, "--max-frames", "3")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 3
    for line in lines:
        img = cv2.imread(line["heatmap"])
        assert img is not None and img.shape == (32, 32, 3)
        assert line["decision"] in ("pass", "reject") and len(line["hot_spot"]) == 2


def test_heatmap_overlay_uses_a_fixed_scale():
    from edgeft.tasks.anomaly.heatmap import overlay

    frame = np.full((40, 60), 100, np.uint8)
    cool = overlay(frame, np.full((4, 4), 1.0, np.float32), floor=1.0, ceiling=5.0)
    hot = overlay(frame, np.full((4, 4), 9.0, np.float32), floor=1.0, ceiling=5.0)
    assert cool.shape == hot.shape == (40, 60, 3)
    # a map at the floor is tinted blue, one past the threshold red; never rescaled to its own range
    assert cool[..., 0].mean() > cool[..., 2].mean() and hot[..., 2].mean() > hot[..., 0].mean()


def test_patchcore_distances_are_the_nearest_bank_entry_in_chunks():
    import timm
    import torch

    from edgeft.tasks.anomaly.graph import AnomalySpec, cut_backbone, graph

    torch.manual_seed(0)
    spec = AnomalySpec(method="patchcore", layers=[1, 2], channels=[24, 32], grid=[4, 4], sizes=[[8, 8], [4, 4]],
                       bank_size=50, chunk=16)
    g = graph(cut_backbone(timm.create_model("test_efficientnet"), [1, 2]), spec).eval()
    g.bank.copy_(torch.randn(50, 56))
    g.bank_sq.copy_((g.bank ** 2).sum(1))
    f = torch.randn(3, 56, 4, 4)
    got = g.distances(f)
    q = f.permute(0, 2, 3, 1).reshape(-1, 56)
    want = torch.cdist(q.double(), g.bank.double()).min(1).values.reshape(3, 1, 4, 4)
    assert torch.allclose(got.double(), want, atol=1e-4)


def test_padim_distances_are_mahalanobis_per_position():
    import timm
    import torch

    from edgeft.tasks.anomaly.graph import AnomalySpec, cut_backbone, graph

    torch.manual_seed(0)
    spec = AnomalySpec(method="padim", layers=[1, 2], channels=[24, 32], grid=[2, 2], sizes=[[8, 8], [4, 4]])
    g = graph(cut_backbone(timm.create_model("test_efficientnet"), [1, 2]), spec).eval()
    a = torch.randn(4, 56, 56)
    inv = a @ a.transpose(1, 2) + torch.eye(56)
    g.mean.copy_(torch.randn(4, 56))
    g.inv_cov.copy_(inv)
    f = torch.randn(2, 56, 2, 2)
    got = g.distances(f).numpy()
    for n in range(2):
        for p in range(4):
            d = (f[n, :, p // 2, p % 2] - g.mean[p]).double().numpy()
            assert got[n, 0, p // 2, p % 2] == pytest.approx(np.sqrt(d @ inv[p].double().numpy() @ d), rel=1e-4)


def test_greedy_coreset_covers_every_point():
    import torch

    from edgeft.tasks.anomaly.features import greedy_coreset

    x = torch.arange(100, dtype=torch.float32).reshape(-1, 1)
    idx = greedy_coreset(x, 5, seed=0)
    assert len(set(idx.tolist())) == 5
    radius = (x - x[idx].T).abs().min(1).values.max()
    assert radius <= 20  # k-center greedy is within twice the best covering radius (10 for 5 centres on 0..99)
    clusters = torch.cat([torch.randn(50, 3) * 0.1, torch.randn(50, 3) * 0.1 + 10])
    picked = greedy_coreset(clusters, 2, seed=1).tolist()
    assert {i < 50 for i in picked} == {True, False}  # one centre in each cluster


def test_patchcore_fit_and_export(parts, tmp_path, cli):
    from edgeft import artifact
    from edgeft.metrics import read

    r = cli("anomaly", "--data", parts, "--good", "good", "--out", tmp_path / "pc", "--method", "patchcore", "--coreset", "0.1",
            *TINY_ANOMALY)
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "pc")
    spec = a.meta.extra["anomaly"]
    assert spec["bank_size"] == int(np.ceil(0.1 * 24 * 16))
    assert read(a.meta.metrics, "anomaly").test.auroc >= 0.9
    r = cli("export", tmp_path / "pc", "--out", tmp_path / "pc-onnx", "--data", parts)
    assert r.exit_code == 0, r.output
    assert read(artifact.load(tmp_path / "pc-onnx").meta.metrics, "parity").passed


def test_pixel_auroc_from_masks_next_to_the_images(tmp_path, cli):
    from edgeft import artifact
    from edgeft.metrics import read

    data = write_anomaly_folder(tmp_path / "data", masks=True)
    r = cli("anomaly", "--data", data, "--good", "good", "--out", tmp_path / "a", *TINY_ANOMALY)
    assert r.exit_code == 0, r.output
    m = read(artifact.load(tmp_path / "a").meta.metrics, "anomaly")
    assert m.test_masks == 4  # the 4 masked cracks; the unmasked ones are left out, the good parts are all-good pixels
    assert m.test_pixel_auroc >= 0.8, m.test_pixel_auroc  # the maps are hot on the strokes, not only somewhere
    assert m.test_pixel_pro > 0.3, m.test_pixel_pro  # each stroke covered well above a map without information (0.15)
    r = cli("anomaly", "--data", write_anomaly_folder(tmp_path / "plain"), "--good", "good", "--out", tmp_path / "b",
            *TINY_ANOMALY)
    plain = read(artifact.load(tmp_path / "b").meta.metrics, "anomaly")
    assert plain.test_pixel_auroc is None and plain.test_pixel_pro is None  # no masks: none


def test_a_test_split_without_defects_has_no_auroc(tmp_path, cli):
    from edgeft import artifact
    from edgeft.metrics import read

    data = write_anomaly_folder(tmp_path / "data", test_defects=False)
    r = cli("anomaly", "--data", data, "--good", "good", "--out", tmp_path / "a", *TINY_ANOMALY)
    assert r.exit_code == 0, r.output
    m = read(artifact.load(tmp_path / "a").meta.metrics, "anomaly")
    assert m.test is None and m.test_policy is None and m.val is not None  # undefined, not 0.5
    assert "AUROC is undefined" in r.stderr


def test_bad_input_is_one_line_and_writes_nothing(parts, fitted, tmp_path, cli, tiny_onnx):
    few = write_anomaly_folder(tmp_path / "few", n_good=5)
    cases = [
        (("anomaly", "--data", few, "--good", "good", "--out", tmp_path / "o1", *TINY_ANOMALY), ("5 image(s)", "at least 10")),
        (("anomaly", "--data", parts, "--good", "ok", "--out", tmp_path / "o2", *TINY_ANOMALY), ("'ok'", "good")),
        (("anomaly", "--data", parts, "--good", "good", "--out", tmp_path / "o3", *TINY_ANOMALY[:-4], "--layers", "1,7",
          "--threads", "2"), ("anomaly.layers [1, 7]", "blocks.2")),
        (("anomaly", "--data", parts, "--good", "good", "--out", tmp_path / "o4", *TINY_ANOMALY, "--coreset", "0"),
         ("anomaly.coreset",)),
        (("infer", tiny_onnx.path, parts / "test" / "crack", "--heatmaps", tmp_path / "maps"),
         ("--heatmaps needs an anomaly model",)),
    ]
    # eval and decide say where an anomaly model's numbers are, prune what it can rank channels by
    cases += [(("eval", fitted[0], "--data", parts), ("is an anomaly model",)),
              (("decide", fitted[0], "--data", parts, "--positive", "crack", "--target-recall", "0.9"),
               ("is an anomaly model",)),
              (("prune", fitted[0], "--data", parts, "--out", tmp_path / "o5", "--importance", "taylor"),
               ("prune.importance taylor", "l2"))]
    for args, fragments in cases:
        assert_one_line_error(cli(*args), *fragments)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6)) and not (tmp_path / "maps").exists()


def test_a_channel_subset_shrinks_the_statistics_and_exports(parts, tmp_path, cli):
    from edgeft import artifact
    from edgeft.metrics import read

    r = cli("anomaly", "--data", parts, "--good", "good", "--out", tmp_path / "small", "--dims", "20", *TINY_ANOMALY)
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "small")
    keep = a.meta.extra["anomaly"]["keep"]
    assert len(keep) == 20 and keep == sorted(set(keep)) and max(keep) < 56
    m = read(a.meta.metrics, "anomaly")
    assert m.bank_bytes == 16 * 20 * 4 + 16 * 20 * 20 * 4 and m.test.auroc >= 0.8
    r = cli("export", tmp_path / "small", "--out", tmp_path / "small-onnx", "--data", parts)
    assert r.exit_code == 0, r.output
    assert read(artifact.load(tmp_path / "small-onnx").meta.metrics, "parity").passed
    assert_one_line_error(cli("anomaly", "--data", parts, "--good", "good", "--out", tmp_path / "big", "--dims", "99",
                              *TINY_ANOMALY), "anomaly.dims 99", "56 channels")


def _onnx_scores(path: Path, parts: Path) -> np.ndarray:
    from edgeft.images import read_image
    from edgeft.runtime import Predictor

    with Predictor(path) as p:
        return np.array([p.predict(read_image(f))[0].score for f in sorted((parts / "test").glob("*/*.png"))])


def test_fp16_storage_halves_the_statistics_through_export_and_int8(parts, fitted, tmp_path, cli):
    import onnx
    import torch

    from edgeft import artifact
    from edgeft.metrics import read

    r = cli("anomaly", "--data", parts, "--good", "good", "--out", tmp_path / "h", "--storage", "fp16", *TINY_ANOMALY)
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "h")
    assert a.meta.extra["anomaly"]["storage"] == "fp16"
    state = torch.load(a.model_path, map_location="cpu", weights_only=True)  # the artifact holds a state dict
    inv = next(v for k, v in state.items() if k.endswith("inv_cov"))
    assert inv.dtype == torch.float16 and next(v for k, v in state.items() if k.endswith("mean")).dtype == torch.float32
    assert read(a.meta.metrics, "anomaly").bank_bytes == 16 * 56 * 4 + 16 * 56 * 56 * 2  # the inverses halved
    r = cli("export", tmp_path / "h", "--out", tmp_path / "h-onnx", "--data", parts)
    assert r.exit_code == 0, r.output
    assert read(artifact.load(tmp_path / "h-onnx").meta.metrics, "parity").passed  # the same graph as PyTorch's
    # the exporter folded the graph's Cast into an FP32 constant: the file stores FP16 again, read through a Cast
    g = onnx.load(str(tmp_path / "h-onnx" / "model.onnx")).graph
    halves = [i for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert [list(i.dims) for i in halves] == [[16, 56, 56]]
    assert [n.input[0] for n in g.node if n.op_type == "Cast"] == [halves[0].name]
    fp32_file = (fitted[1] / "model.onnx").stat().st_size
    assert fp32_file - (tmp_path / "h-onnx" / "model.onnx").stat().st_size == pytest.approx(16 * 56 * 56 * 2, rel=0.01)
    # FP16 inverse covariances move the Mahalanobis scores by rounding, not by more
    np.testing.assert_allclose(_onnx_scores(tmp_path / "h-onnx", parts), _onnx_scores(fitted[1], parts), rtol=2e-3)
    # INT8: ONNX Runtime's passes fold the store back to FP32; the INT8 graph is stored FP16 again, refit included
    r = cli("calibrate", "--data", parts, "--out", tmp_path / "cal.json", "--n", "16")
    assert r.exit_code == 0, r.output
    r = cli("quantize", tmp_path / "h-onnx", "--calib", tmp_path / "cal.json", "--data", parts, "--out",
            tmp_path / "h8", "--no-auto-exclude")
    assert r.exit_code == 0, r.output
    g8 = onnx.load(str(tmp_path / "h8" / "model.onnx")).graph
    assert [list(i.dims) for i in g8.initializer if i.data_type == onnx.TensorProto.FLOAT16] == [[16, 56, 56]]
    assert artifact.load(tmp_path / "h8").meta.extra["refit_on_int8"]["images"] == 24
    assert read(artifact.load(tmp_path / "h8").meta.metrics, "anomaly").test.auroc >= 0.6  # as the FP32 store's


def test_fp16_patchcore_bank_norms_are_of_the_stored_bank(parts, tmp_path, cli):
    import onnx
    import torch

    from edgeft import artifact
    from edgeft.tasks.anomaly.graph import store_statistics

    r = cli("anomaly", "--data", parts, "--good", "good", "--out", tmp_path / "pc", "--method", "patchcore", "--coreset", "0.1",
            "--storage", "fp16", *TINY_ANOMALY)
    assert r.exit_code == 0, r.output
    state = torch.load(artifact.load(tmp_path / "pc").model_path, map_location="cpu", weights_only=True)
    bank, sq = (next(v for k, v in state.items() if k.endswith(name)) for name in ("bank", "bank_sq"))
    assert bank.dtype == torch.float16 and sq.dtype == torch.float32
    assert torch.equal(sq, (bank.float() ** 2).sum(1))  # an entry's distance to itself stays exactly 0
    r = cli("export", tmp_path / "pc", "--out", tmp_path / "pc-onnx", "--data", parts)
    assert r.exit_code == 0, r.output
    m = onnx.load(str(tmp_path / "pc-onnx" / "model.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    assert store_statistics(m, "fp16") == 0  # stored once: a second pass changes nothing
    from edgeft.tasks.anomaly.config import AnomalyConfig
    from edgeft.errors import ConfigError

    with pytest.raises(ConfigError, match=r"anomaly.storage must be one of fp32, fp16, got 'fp8'"):
        AnomalyConfig(storage="fp8")  # a recipe's anomaly.storage (the CLI offers the two)


def test_int8_backbone_keeps_the_distances_in_fp32_and_rechooses_the_threshold(fitted, parts, tmp_path, cli):
    import onnx

    from edgeft import artifact
    from edgeft.images import read_image
    from edgeft.metrics import read
    from edgeft.runtime import Predictor
    from edgeft.tasks.anomaly.graph import distance_nodes

    r = cli("calibrate", "--data", parts, "--out", tmp_path / "cal.json", "--n", "16")
    assert r.exit_code == 0, r.output
    r = cli("quantize", fitted[1], "--calib", tmp_path / "cal.json", "--data", parts, "--out", tmp_path / "int8",
            "--no-auto-exclude")
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "int8")
    assert a.meta.extra["task"] == "anomaly" and a.meta.extra["decision"]["chosen_on"] == "val"
    assert a.meta.extra["refit_on_int8"]["images"] == 24  # the statistics describe the INT8 backbone's features
    m = a.meta.metrics
    assert m["graph"]["quantize_linear"] > 0 and read(m, "anomaly").test.auroc >= 0.6  # random weights lose more
    assert m["anomaly_fp32"]["auroc"] >= 0.9 and m["int8_vs_fp32"]["n"] == 16
    # re-fitted on the INT8 features, the heatmaps keep the FP32 graph's shape
    assert m["int8_vs_fp32"]["median_map_correlation"] >= 0.8, m["int8_vs_fp32"]
    g = onnx.load(str(a.model_path)).graph
    producers = {o: n for n in g.node for o in n.output}
    # the features reach the pooling and the Mahalanobis product unrounded: no DequantizeLinear feeds them
    kept = set(distance_nodes(a.model_path))
    readers = [n for n in g.node if n.op_type in ("AveragePool", "Concat", "Sub", "MatMul") and n.name in kept]
    assert readers and not any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
                               for n in readers for i in n.input)
    with Predictor(tmp_path / "int8") as p:
        pred = p.predict(np.full((32, 32), 110, np.uint8))[0]
        assert p.heatmap_scale == (a.meta.extra["anomaly"]["map_floor"], a.meta.extra["decision"]["reject_at"])
        # the heatmap's blue is the INT8 model's own typical good patch on val, not the FP32 fit's
        maps = np.stack([p.predict(read_image(f))[0].heatmap for f in sorted((parts / "val" / "good").glob("*.png"))])
    assert a.meta.extra["anomaly"]["map_floor"] == pytest.approx(float(np.median(maps)), rel=1e-5)
    assert a.meta.extra["anomaly"]["map_floor"] != artifact.load(fitted[1]).meta.extra["anomaly"]["map_floor"]  # not
    # copied from the FP32 graph (how far INT8 moves it depends on the tiny random model; on ELPV scores moved 18-29%)
    assert pred.heatmap.shape == (4, 4) and pred.decision in ("pass", "reject")
    assert_one_line_error(cli("quantize", fitted[1], "--calib", tmp_path / "cal.json", "--data", parts, "--out",
                              tmp_path / "qat", "--method", "qat"), "anomaly model", "--method ptq")


def test_pruning_the_backbone_keeps_its_features_and_recovers_them_by_distillation(parts, fitted, tmp_path, cli):
    """Half the MACs, the feature levels' channels kept, the features distilled back towards the parent's on good
    parts (no label read), statistics and threshold fitted again; the pruned graph exports with parity."""
    import torch

    from edgeft import artifact
    from edgeft.metrics import read
    from edgeft.models import from_artifact

    r = cli("prune", fitted[0], "--data", parts, "--out", tmp_path / "pruned", "--target-macs", "0.5", "--steps", "4",
            "--round-to", "2", "--recover-epochs", "3", "--recover-lr", "1e-3", "--threads", "2")
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "pruned")
    rec = read(a.meta.metrics, "anomaly_prune")
    assert 0.4 < rec.macs_ratio < 0.55 and rec.target.fraction == 0.5
    assert len(rec.distill_loss) == 4 and rec.distill_loss[-1] < 0.8 * rec.distill_loss[0]
    parent, pruned = from_artifact(artifact.load(fitted[0])), from_artifact(a)  # rebuilt from spec + weights
    x = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        assert pruned.features(x).shape == parent.features(x).shape  # the levels the distances read are whole
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in parent.parameters())
    fit = read(a.meta.metrics, "anomaly")
    assert fit.test.auroc >= 0.9 and a.meta.extra["decision"] != artifact.load(fitted[0]).meta.extra["decision"]
    r = cli("export", tmp_path / "pruned", "--out", tmp_path / "pruned-onnx", "--data", parts)
    assert r.exit_code == 0, r.output  # the export's parity rule (scores 1e-3, maps 0.99) holds
