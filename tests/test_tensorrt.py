"""TensorRT: the pure-Python parts run everywhere; building and running engines needs TensorRT and a GPU."""

import importlib.util
import json

import pytest

from edgeft.errors import ArtifactError, ConfigError
from edgeft.runtime.tensorrt import Device, check_compatible
from edgeft.tensorrt.build import BuildConfig, unquantized_residual_adds
from tests.conftest import assert_one_line_error

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def test_stale_engine_is_refused_with_a_rebuild_hint():
    built = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    check_compatible(built, Device("Orin (nvgpu)", "8.7", "10.3.0"))
    with pytest.raises(ArtifactError, match="TensorRT 10.3.0 \\(here 10.7.0\\).*rebuild"):
        check_compatible(built, Device("Orin (nvgpu)", "8.7", "10.7.0"))
    with pytest.raises(ArtifactError, match="GPU Orin \\(nvgpu\\) sm 8.7 \\(here NVIDIA H200 sm 9.0\\)"):
        check_compatible(built, Device("NVIDIA H200", "9.0", "10.3.0"))


def test_residual_add_rule_on_qdq_graphs(tmp_path):
    """The TensorRT-target QDQ graph has every residual Add quantized; the ort-cpu graph need not."""
    from edgeft.data import calibration
    from edgeft.quantize.ptq import QuantizeConfig, quantize
    from tests.conftest import write_folder
    from tests.conftest import make_artifact

    data = write_folder(tmp_path / "d", {"train": 8, "test": 4})
    calibration.save(calibration.create(data, n=8), tmp_path / "c.json")
    parent = make_artifact(tmp_path / "resnet", "test_resnet")
    trt = quantize(parent.path, tmp_path / "trt", QuantizeConfig(target="tensorrt", calib_method="minmax",
                                                                 auto_exclude=False, threads=1), tmp_path / "c.json", data)
    assert unquantized_residual_adds(trt.model_path) == []
    from edgeft.export.stage import export

    fp32 = export(parent.path, tmp_path / "fp32")
    assert len(unquantized_residual_adds(fp32.model_path)) > 0  # no Q/DQ at all: every residual add flagged


def test_build_config_validation():
    with pytest.raises(ConfigError, match="MIN <= OPT <= MAX"):
        BuildConfig(batch=(4, 2, 8))
    with pytest.raises(ConfigError, match="--precision"):
        BuildConfig(precision="int4")


@pytest.mark.skipif(HAVE_TRT, reason="checks the message shown where TensorRT is missing")
def test_build_without_tensorrt_says_what_to_do(cli, tmp_path):
    from edgeft.export.stage import export
    from tests.conftest import make_artifact

    onnx_art = export(make_artifact(tmp_path / "t").path, tmp_path / "onnx")
    assert_one_line_error(cli("build", onnx_art.path, "--out", tmp_path / "e"), "TensorRT is not installed")
    assert not (tmp_path / "e").exists()


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installed here")
def test_build_and_run_engines(tmp_path):
    import numpy as np

    from edgeft.export.stage import export
    from edgeft.runtime import Predictor
    from edgeft.tensorrt.build import build
    from tests.conftest import make_artifact

    onnx_art = export(make_artifact(tmp_path / "t").path, tmp_path / "onnx", dynamic_batch=True)
    ref = Predictor(onnx_art.path, backend="ort-cpu")
    frames = [np.full((32, 32), v, np.uint8) for v in (30, 200)]
    for precision in ("fp32", "fp16"):
        eng = build(onnx_art.path, tmp_path / precision, BuildConfig(precision=precision, batch=(1, 2, 4)))
        p = Predictor(eng.path, backend="tensorrt")
        np.testing.assert_allclose(p.logits(frames), ref.logits(frames), atol=1e-3 if precision == "fp32" else 5e-2)


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installed here")
def test_eval_runs_an_engine_through_the_runtime(cli, tiny_data, tmp_path):
    """`edgeft eval` on a TensorRT engine: the same metrics as the ONNX model it was built from (FP32)."""
    from edgeft.export.stage import export
    from edgeft.tensorrt.build import build
    from tests.conftest import make_artifact

    onnx_art = export(make_artifact(tmp_path / "t").path, tmp_path / "onnx", dynamic_batch=True)
    eng = build(onnx_art.path, tmp_path / "fp32", BuildConfig(precision="fp32", batch=(1, 8, 32)))
    got = json.loads(cli("eval", eng.path, "--data", tiny_data, "--json").output)
    want = json.loads(cli("eval", onnx_art.path, "--data", tiny_data, "--json").output)
    assert got["confusion"] == want["confusion"]
