"""Where a model's time goes: ONNX Runtime's per-operator profile, grouped, beside the call's wall time."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_one_line_error


def test_the_profile_groups_every_operator_of_the_graph_onnx_runtime_runs(cli, tiny_onnx, tmp_path):
    r = cli("profile", tiny_onnx.path, "--calls", "30", "--threads", "1", "--no-floor", "--json", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "p.json").read_text())["profile"]
    assert doc["calls"] == 30 and doc["backend"] == "ort-cpu" and doc["threads"] == 1
    groups = doc["groups"]
    assert {"depthwise conv", "pointwise conv"} <= set(groups)  # an EfficientNet's two kinds of convolution
    assert abs(sum(g["us"] for g in groups.values()) - doc["kernel_us"]) < 1.0
    assert 0 < doc["kernel_us"] <= doc["run_us"] * 1.05 and doc["p50_us"] > 0
    assert 0 < doc["coverage"] <= 1.0  # the operators of a call take a part of that call
    assert 0 < doc["call_us"] < doc["run_us"]  # a call that does no work: the runtime's own cost of any call
    assert doc["top"][0]["us"] >= doc["top"][-1]["us"] and "depthwise conv" in r.stdout


def test_openvino_s_layer_counters_are_grouped_and_the_floor_is_stated(cli, tiny_onnx, tmp_path):
    """OpenVINO's per-layer counters, matched to the ONNX graph by name, in the same groups; the floor is the larger
    of the model's MACs at the rate measured on large 1x1 convolutions and its bytes at the copy bandwidth."""
    from edgeft.bench.floor import graph_cost

    r = cli("profile", tiny_onnx.path, "--backend", "ov-cpu", "--calls", "20", "--threads", "1", "--json",
            tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "p.json").read_text())
    p, f = doc["profile"], doc["floor"]
    assert p["backend"] == "ov-cpu" and {"depthwise conv", "pointwise conv"} <= set(p["groups"])
    # one thread runs one layer at a time: its layers fit in its calls (the counters' warm-up calls taken out)
    assert 0 < p["kernel_us"] and 0 < p["coverage"] <= 1.0 and p["p50_us"] > 0
    assert 0 < p["call_us"] < p["run_us"] and "a call that does no work" in r.stdout
    cost = graph_cost(tiny_onnx.model_path, (1, *[tiny_onnx.meta.input.channels, *tiny_onnx.meta.input.size]), "fp32")
    assert f["cost"]["macs"] == cost.macs > 0 and f["precision"] == "fp32" and f["peak_gmacs"] > 0
    assert f["floor_ms"] == pytest.approx(max(f["compute_ms"], f["memory_ms"]), abs=1e-3)
    assert "floor about" in r.stdout and "x the floor" in r.stdout


def test_openvino_s_running_averages_give_the_profiled_calls_own_time():
    """OpenVINO's CPU layer counters average every call since compile, warm-up included (a first call of 5 ms before
    calls of 100 us): the profiled calls' own average is what the total grew by over them."""
    from edgeft.bench.profile import since

    times = [5000.0] + [100.0] * 19 + [120.0] * 200  # 20 warm-up calls, then 200 profiled ones

    def average(n):
        return sum(times[:n]) // n  # as the counter reports it: whole microseconds

    assert average(220) == 140  # what a read at the end says: 17% over the profiled calls' 120 us
    assert since(average(20), average(220), 20, 200) == pytest.approx(120, abs=1.1)
    assert since(0.0, 0.0, 20, 200) == 0.0


def test_graph_cost_counts_a_convolution_s_multiply_accumulates(tmp_path):
    """MACs from ONNX shape inference: output elements x input channels per group x kernel area."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeft.bench.floor import graph_cost

    w = numpy_helper.from_array(np.ones((8, 4, 3, 3), np.float32), "w")
    dw = numpy_helper.from_array(np.ones((8, 1, 3, 3), np.float32), "dw")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
                           helper.make_node("Conv", ["y", "dw"], ["z"], group=8, pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 16, 16])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 8, 16, 16])], [w, dw])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    c = graph_cost(tmp_path / "m.onnx", (1, 4, 16, 16), "int8")
    assert c.macs == 8 * 16 * 16 * 4 * 9 + 8 * 16 * 16 * 9
    assert c.weight_bytes == (8 * 4 * 9 + 8 * 9) * 4 and c.activation_bytes == 2 * 2 * 8 * 16 * 16


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
