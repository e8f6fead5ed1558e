"""Where a model's time goes: ONNX Runtime's per-operator profile, grouped, beside the call's wall time."""

from __future__ import annotations

import json

from tests.conftest import assert_one_line_error


def test_the_profile_groups_every_operator_of_the_graph_onnx_runtime_runs(cli, tiny_onnx, tmp_path):
    r = cli("profile", tiny_onnx.path, "--calls", "30", "--threads", "1", "--json", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["calls"] == 30 and doc["backend"] == "ort-cpu" and doc["threads"] == 1
    groups = doc["groups"]
    assert {"depthwise conv", "pointwise conv"} <= set(groups)  # an EfficientNet's two kinds of convolution
    assert abs(sum(g["us"] for g in groups.values()) - doc["kernel_us"]) < 1.0
    assert 0 < doc["kernel_us"] <= doc["run_us"] * 1.05
    assert doc["coverage"] == round(doc["kernel_us"] / doc["run_us"], 4)
    assert doc["top"][0]["us"] >= doc["top"][-1]["us"] and "depthwise conv" in r.stdout


def test_group_of_reads_a_convolution_s_shape():
    from edgeft.bench.profile import group_of

    assert group_of("QLinearConv", {"group": 32}, (32, 1, 3, 3)) == "depthwise conv"
    assert group_of("FusedConv", {"group": 1, "kernel_shape": [1, 1]}, (64, 32, 1, 1)) == "pointwise conv"
    assert group_of("Conv", {"group": 1}, (32, 3, 3, 3)) == "other conv"
    assert group_of("Conv", {"group": 2}, (64, 16, 3, 3)) == "other conv"  # grouped, not depthwise
    assert group_of("ReorderInput", {}, None) == "layout" and group_of("DequantizeLinear", {}, None) == \
        "quantize/dequantize"


def test_bad_profile_input_is_one_line(cli, tiny_onnx, tmp_path):
    assert_one_line_error(cli("profile", tiny_onnx.path, "--calls", "0"), "--calls must be >= 1")
    assert_one_line_error(cli("profile", tiny_onnx.model_path), "bare ONNX file", "artifact directory")
    assert_one_line_error(cli("profile", tmp_path / "nothing"), "model not found")
