"""OpenVINO as a CPU backend: the same ONNX artifacts (FP32 and INT8 QDQ) through ov-cpu, measured side by side
with ONNX Runtime, and auto choosing the runtime measured fastest for the model on this machine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeft.runtime import Predictor
from edgeft.runtime import backends as backends_mod
from tests.conftest import assert_one_line_error

pytest.importorskip("openvino", reason="OpenVINO is not installed here (pip install 'edgeft[openvino]')")


def _frames(n=4):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A tiny model trained on the bar images, FP32 ONNX and INT8 QDQ (real logits, not a random model's ~0)."""
    from edgeft.data import calibration
    from edgeft.export.stage import export
    from edgeft.finetune import FinetuneConfig, finetune
    from edgeft.quantize.ptq import QuantizeConfig, quantize

    root = tmp_path_factory.mktemp("ov")
    ft = finetune(FinetuneConfig(model="test_efficientnet", weights=None, mode="full", image_size=32,
                                 resize="stretch", batch_size=8, epochs=6, lr=3e-3, threads=2), tiny_data, root / "ft")
    onnx_art = export(ft.path, root / "onnx", dynamic_batch=True)
    calibration.save(calibration.create(tiny_data, n=16), root / "calib.json")
    int8 = quantize(onnx_art.path, root / "int8", QuantizeConfig(auto_exclude=False), root / "calib.json", tiny_data)
    return ft, onnx_art, int8


def test_ov_cpu_agrees_with_pytorch_and_onnx_runtime_on_fp32_and_int8(cli, trained, tiny_data):
    """compare-backends runs ov-cpu as one row of the table, on real images, by the precision's parity rule."""
    from edgeft.data import load_split
    from edgeft.parity import compare

    ft, onnx_art, int8 = trained
    r = cli("compare-backends", onnx_art.path, "--data", tiny_data, "--reference", ft.path)
    rows = {line.split()[0]: line for line in r.output.splitlines()[1:]}
    assert r.exit_code == 0 and "precision fp32" in r.output, r.output
    assert rows["ov-cpu"].split()[1] == "pass" and rows["ort-cpu"].split()[1] == "pass", r.output
    # the INT8 QDQ graph: OpenVINO computes what ONNX Runtime computes (PyTorch FP32 is no reference for INT8)
    images = load_split(tiny_data, "test", int8.meta.input).images
    ov = Predictor(int8.path, backend="ov-cpu")
    assert ov.backend_name == "ov-cpu" and ov.backend_reason == "asked for"
    x = int8.meta.input.normalize(images)
    p = compare(Predictor(int8.path, backend="ort-cpu").runner.infer(x), ov.runner.infer(x), "int8")
    # the two runtimes round INT8 differently; the decisions agree and the logits within 10% of their scale
    assert p.agreement == 1.0 and p.max_rel_diff < 0.1, p.explain()


def test_a_bare_onnx_file_keeps_its_metadata_under_openvino(tiny_onnx):
    p = Predictor(tiny_onnx.model_path, backend="ov-cpu")
    assert p.class_names == ["bad", "good"] and p.contract == tiny_onnx.meta.input
    assert p.predict(_frames(1))[0].label in ("bad", "good")


def test_bench_records_the_fastest_cpu_runtime_and_auto_uses_it(cli, tiny_onnx, tmp_path, monkeypatch):
    import shutil

    art = tmp_path / "model"
    shutil.copytree(tiny_onnx.path, art)
    r = cli("bench", art, "--backend", "ort-cpu", "--backend", "ov-cpu", "--iters", "20", "--warmup-s", "0.05",
            "--rounds", "3", "--no-memory", "--out", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    record = doc["cpu_runtime"][str(art)]
    assert record["fastest"] in ("ort-cpu", "ov-cpu") and record["rounds"] == 3 and record["ratio"] >= 1
    assert "fastest CPU runtime for model on this machine" in r.output
    stored = json.loads((art / "meta.json").read_text())["extra"]["cpu_runtime"]
    assert stored[backends_mod.machine_key()]["fastest"] == record["fastest"]
    p = Predictor(art)
    assert p.backend_name == record["fastest"] and "measured fastest on this machine" in p.backend_reason
    # a measurement from another machine is not this one's: default order, and it says why
    monkeypatch.setattr(backends_mod, "machine_key", lambda: "another CPU x64")
    p = Predictor(art)
    assert p.backend_name == "ort-cpu" and "no CPU runtime measurement for this machine" in p.backend_reason


def test_openvino_missing_falls_back_with_a_reason(cli, tiny_onnx, tmp_path, monkeypatch):
    import shutil

    from edgeft import artifact

    art = tmp_path / "model"
    shutil.copytree(tiny_onnx.path, art)
    a = artifact.load(art)
    artifact.update_metrics(a, {}, extra={"cpu_runtime": {backends_mod.machine_key(): {
        "fastest": "ov-cpu", "other": "ort-cpu", "ratio": 1.2, "range": [1.1, 1.3], "rounds": 15,
        "measured": "2026-12-01"}}})
    monkeypatch.setitem(backends_mod.BACKENDS, "ov-cpu",
                        backends_mod.Backend("ov-cpu", "model.onnx", lambda: False, lambda f, a, t: None, "OpenVINO"))
    p = Predictor(art)
    assert p.backend_name == "ort-cpu" and "ov-cpu, which is not available now" in p.backend_reason
    assert_one_line_error(cli("infer", art, "x.png", "--backend", "ov-cpu"), "backend ov-cpu is not available here")
    r = cli("bench", art, "--backend", "ov-cpu", "--iters", "5", "--no-memory")
    assert r.exit_code == 0 and "skipped" in r.output


def test_bad_input_is_one_line(cli, tiny_onnx, tmp_path):
    import onnx
    from onnx import helper

    from edgeft.errors import ConfigError
    from edgeft.runtime.openvino import OpenVINORunner

    with pytest.raises(ConfigError, match="OpenVINO has no device 'NPU7' here"):
        OpenVINORunner(tiny_onnx.model_path, "NPU7").activate()
    # a model with an op OpenVINO cannot read
    node = helper.make_node("Frobnicate", ["input"], ["logits"], domain="com.example")
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph([node], "g", [tensor("input", onnx.TensorProto.FLOAT, [1, 3, 32, 32])],
                              [tensor("logits", onnx.TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, tmp_path / "odd.onnx")
    r = cli("infer", tmp_path / "odd.onnx", "x.png", "--backend", "ov-cpu", "--input-size", "32", "--mean",
            "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--classes", "a,b")
    assert_one_line_error(r, "OpenVINO cannot read", "run it on ort-cpu instead")


XEON_SPR = "avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16"
EPYC_ZEN3 = "avx2 fma sse4_2"
EPYC_ZEN4 = "avx2 avx512f avx512_vnni avx512_bf16"
NEOVERSE_V1 = "fp asimd asimddp bf16 i8mm sve"


def test_the_cpu_s_precision_units_are_read_from_its_flags():
    from edgeft.host import cpu_flags, precision_units

    assert precision_units(set(XEON_SPR.split())) == {"int8": "AMX-INT8 tiles", "bf16": "AMX-BF16 tiles"}
    assert precision_units(set(EPYC_ZEN3.split())) == {"int8": None, "bf16": None}
    assert precision_units(set(EPYC_ZEN4.split())) == {"int8": "AVX512-VNNI dot products",
                                                       "bf16": "AVX512-BF16 dot products (no AMX)"}
    assert precision_units(set(NEOVERSE_V1.split())) == {"int8": "NEON dot product", "bf16": "Arm BF16"}
    assert cpu_flags("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n") == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd asimddp\n") == {"fp", "asimd", "asimddp"}



def test_one_cpu_name_with_other_units_is_another_machine_and_int8_there_is_flagged(tiny_onnx, tmp_path, monkeypatch):
    """"AMD EPYC" is a Zen 3 (no VNNI, no bf16) and a Zen 4 (both): the machine a runtime choice was measured on is
    named with its units, so a choice made on one is not taken for the other's; an INT8 model measured on a Zen 4 and
    run on ONNX Runtime on a Zen 3 says that ONNX Runtime's INT8 kernels can saturate there and how to check."""
    from edgeft.host import int8_may_saturate, unit_flags

    assert unit_flags(set(XEON_SPR.split())) == ["amx_int8", "amx_bf16"]
    assert unit_flags(set(EPYC_ZEN4.split())) == ["avx512_vnni", "avx512_bf16"]
    assert unit_flags(set(EPYC_ZEN3.split())) == []
    assert int8_may_saturate(set(EPYC_ZEN3.split()))
    assert not any(int8_may_saturate(set(f.split())) for f in (XEON_SPR, EPYC_ZEN4, NEOVERSE_V1))
    monkeypatch.setattr("edgeft.host.cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr("edgeft.host.cpu_flags", lambda cpuinfo=None: frozenset(EPYC_ZEN4.split()))
    zen4 = backends_mod.machine_key()
    record = backends_mod.runtime_record("ort-cpu", "int8")
    monkeypatch.setattr("edgeft.host.cpu_flags", lambda cpuinfo=None: frozenset(EPYC_ZEN3.split()))
    zen3 = backends_mod.machine_key()
    assert zen4.startswith("AMD EPYC x") and zen4.endswith("(avx512_vnni, avx512_bf16)")
    assert zen3.endswith("(no INT8 or bf16 unit)") and zen3 != zen4 == record["machine"]
    b, why = backends_mod.choose_with_reason("auto", {"model.onnx": tiny_onnx.model_path}, recorded=record)
    assert b.name == "ort-cpu" and f"chosen as fastest on {zen4}, not this machine ({zen3})" in why
    int8 = {"quantized": "int8", "target": "ort-cpu", "measured_on": zen4}
    note = backends_mod.int8_note("ort-cpu", int8)
    assert f"measured on {zen4}" in note and "ONNX Runtime's INT8 kernels can saturate" in note
    assert "edgeft eval --backend ort-cpu" in note and "ov-cpu" in note
    assert backends_mod.int8_note("ort-cpu", {"quantized": "int8", "runtime": record}) != ""  # the ship's record
    for backend, extra in (("ov-cpu", int8), ("ort-cpu", {**int8, "measured_on": zen3}), ("ort-cpu", {}),
                           ("ort-cpu", {**int8, "target": "tensorrt"}), ("ort-cpu", {"quantized": "int8"})):
        assert backends_mod.int8_note(backend, extra) == ""  # another runtime, this machine, FP32, unknown
    monkeypatch.setattr("edgeft.host.cpu_flags", lambda cpuinfo=None: frozenset(EPYC_ZEN4.split()))
    assert backends_mod.int8_note("ort-cpu", {**int8, "measured_on": zen3}) == ""  # a CPU with VNNI


def test_bf16_runs_where_the_cpu_has_a_unit_and_is_refused_in_one_line_elsewhere(cli, trained, tiny_data,
                                                                                  monkeypatch):
    """ov-cpu-bf16 is a backend asked for by name: where OpenVINO reports a bf16 unit it runs the FP32 artifact in
    bf16 (judged by the bf16 parity rule against ov-cpu's FP32); where the CPU has none, one line names the missing
    unit, and auto never picks it (a precision nobody measured the accuracy of)."""
    from edgeft.parity import compare
    from edgeft.runtime import openvino as ov_mod

    ft, onnx_art, _ = trained
    x = onnx_art.meta.input.normalize(np.stack([onnx_art.meta.input.prepare(f) for f in _frames(8)]))
    if backends_mod.BACKENDS["ov-cpu-bf16"].available():
        with Predictor(onnx_art.path, backend="ov-cpu-bf16") as bf16, Predictor(onnx_art.path, backend="ov-cpu") as f32:
            assert bf16.backend_name == "ov-cpu-bf16"
            p = compare(f32.runner.infer(x), bf16.runner.infer(x), "bf16")
            assert p.passed, p.explain()
        r = cli("compare-backends", onnx_art.path, "--data", tiny_data, "--reference", ft.path)
        row = next(line for line in r.output.splitlines() if line.startswith("ov-cpu-bf16"))
        assert row.split()[1] == "pass", r.output
    with Predictor(onnx_art.path) as auto:
        assert auto.backend_name != "ov-cpu-bf16"
    monkeypatch.setattr(ov_mod, "cpu_capabilities", lambda: ("FP32", "INT8"))
    monkeypatch.setattr("edgeft.host.cpu_flags", lambda cpuinfo=None: frozenset(EPYC_ZEN3.split()))
    assert_one_line_error(cli("infer", onnx_art.path, "x.png", "--backend", "ov-cpu-bf16"),
                          "backend ov-cpu-bf16 is not available here", "has no bf16 unit", "amx_bf16, avx512_bf16")
    from edgeft.doctor import check_cpu

    assert "bf16: none (bf16 would be emulated; --backend ov-cpu-bf16 is unavailable)" in check_cpu().detail
    assert "CPU paths here: ort-cpu, ov-cpu (bf16 is OpenVINO's" in check_cpu().detail


def test_onnx_runtime_has_no_bf16_convolution_so_bf16_is_openvinos():
    """Why no ort-cpu-bf16 path exists: ONNX allows bf16 convolutions from opset 22, but ONNX Runtime's CPU provider
    has no kernel for one. When a release adds it, this fails: measure it, and add the path to CPU_PATHS."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.BFLOAT16, [8, 3, 3, 3], [0.5] * 216)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 8, 6, 6])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)], ir_version=10)
    onnx.checker.check_model(model)  # a valid graph: the runtime, not the format, lacks it
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    from edgeft.runtime.backends import CPU_PATHS

    assert not any(p.startswith("ort-") and "bf16" in p for p in CPU_PATHS)


def test_a_policy_chosen_on_bf16_scores_runs_on_bf16_and_says_so_where_it_cannot(cli, trained, tiny_data, tmp_path,
                                                                                   monkeypatch):
    """decide --backend ov-cpu-bf16 chooses the threshold on bf16 scores and records it: auto then runs the model in
    bf16 (the precision its operating point belongs to); on a CPU without a bf16 unit it runs FP32 and says that the
    decisions near the threshold may differ, never silently."""
    import shutil

    from edgeft import artifact
    from edgeft.decision import read_policy
    from edgeft.runtime import openvino as ov_mod

    _, onnx_art, _ = trained
    art = tmp_path / "model"
    shutil.copytree(onnx_art.path, art)
    if not backends_mod.BACKENDS["ov-cpu-bf16"].available():
        pytest.skip("this CPU has no bf16 unit (OpenVINO lists no BF16): the bf16 path cannot be chosen here")
    r = cli("decide", art, "--data", tiny_data, "--positive", "bad", "--target-recall", "0.9", "--backend",
            "ov-cpu-bf16")
    assert r.exit_code == 0 and "chosen on ov-cpu-bf16's scores" in r.stdout, r.output
    assert read_policy(artifact.load(art).meta.extra).scored_with == "ov-cpu-bf16"
    with Predictor(art) as p:
        assert p.backend_name == "ov-cpu-bf16" and "chosen on ov-cpu-bf16's bf16 scores" in p.backend_reason
    with Predictor(art, backend="ort-cpu") as p:
        assert "asked for" in p.backend_reason and "may differ on ort-cpu" in p.backend_reason
    monkeypatch.setattr(ov_mod, "cpu_capabilities", lambda: ("FP32", "INT8"))
    with Predictor(art) as p:
        assert p.backend_name in ("ort-cpu", "ov-cpu") and "which cannot run here" in p.backend_reason
        assert "has no bf16 unit" in p.backend_reason


def test_the_runtime_an_artifact_records_is_what_auto_runs_and_each_fallback_says_why(trained, tmp_path,
                                                                                        monkeypatch, cli, tiny_data):
    """The search's runtime record (backend, precision, machine): auto runs exactly that; on another machine it
    still runs it and says the speed was measured elsewhere; where it cannot run (no bf16 unit) it falls back and
    says decisions near the threshold may differ; eval scores it there by default, and refuses in one line when it
    cannot (its numbers would come from another precision)."""
    import shutil

    from edgeft import artifact
    from edgeft.runtime import openvino as ov_mod
    from edgeft.runtime.backends import runtime_record

    _, onnx_art, _ = trained
    art = tmp_path / "model"
    shutil.copytree(onnx_art.path, art)
    a = artifact.load(art)
    if not backends_mod.BACKENDS["ov-cpu-bf16"].available():
        pytest.skip("this CPU has no bf16 unit (OpenVINO lists no BF16): a bf16 record cannot run here")
    artifact.update_metrics(a, {}, extra={"runtime": runtime_record("ov-cpu-bf16", "fp32", speedup=2.0)})
    with Predictor(art) as p:
        assert p.backend_name == "ov-cpu-bf16" and "ships on ov-cpu-bf16 (fp32 model, bf16 inference)" in \
            p.backend_reason and "not this machine" not in p.backend_reason
    artifact.update_metrics(a, {}, extra={"runtime": {**a.meta.extra["runtime"], "machine": "Intel Xeon x2"}})
    with Predictor(art) as p:
        assert p.backend_name == "ov-cpu-bf16" and "chosen as fastest on Intel Xeon x2, not this machine" in \
            p.backend_reason
    r = cli("eval", art, "--data", tiny_data, "--split", "val")
    assert r.exit_code == 0 and "ov-cpu-bf16" in r.output, r.output  # scored where it ships
    monkeypatch.setattr(ov_mod, "cpu_capabilities", lambda: ("FP32", "INT8"))
    monkeypatch.setattr("edgeft.host.cpu_flags", lambda cpuinfo=None: frozenset(EPYC_ZEN3.split()))
    with Predictor(art) as p:
        assert p.backend_name in ("ort-cpu", "ov-cpu") and "which cannot run here" in p.backend_reason
        assert "has no bf16 unit" in p.backend_reason and "decisions near the threshold may differ" in \
            p.backend_reason
    assert_one_line_error(cli("eval", art, "--data", tiny_data, "--split", "val"), "ships on ov-cpu-bf16",
                          "which cannot run here", "--backend ort-cpu")
