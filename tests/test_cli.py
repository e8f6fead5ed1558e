import json
import subprocess
import sys

from tests.conftest import assert_one_line_error

HEAVY = ("torch", "onnxruntime", "tensorrt", "timm", "onnx")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "; import sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_and_help_stay_light():
    """`import edgeft` and `edgeft --help` load no torch/onnxruntime/tensorrt, so CUDA is never initialised."""
    for code in ("import edgeft", "from click.testing import CliRunner; from edgeft.cli import cli; "
                                  "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output"):
        loaded = _modules_after(code)
        assert not [m for m in HEAVY if m in loaded], code


def test_help_lists_the_commands(cli):
    r = cli("--help")
    for name in ("doctor", "data", "finetune", "eval"):
        assert name in r.output


def test_doctor_tells_the_truth(cli):
    import importlib.util

    r = cli("doctor", "--json")
    assert r.exit_code == 0
    checks = {c["name"]: c for c in json.loads(r.output)["checks"]}
    assert checks["torch"]["ok"]
    assert checks["tensorrt"]["ok"] == (importlib.util.find_spec("tensorrt") is not None)
    if not checks["tensorrt"]["ok"]:
        assert "build" in checks["tensorrt"]["disables"]
    import torch

    assert checks["cuda (torch)"]["ok"] == torch.cuda.is_available()
    assert "CPUExecutionProvider" in checks["onnxruntime"]["detail"]
    r = cli("doctor")
    assert r.exit_code == 0 and "tensorrt" in r.output


def test_user_error_is_one_line_exit_2(cli, tmp_path):
    assert_one_line_error(cli("eval", tmp_path / "nope", "--data", tmp_path), "artifact not found")


def test_debug_shows_the_traceback(tmp_path):
    from click.testing import CliRunner

    from edgeft.cli import cli
    from edgeft.errors import ArtifactError

    r = CliRunner().invoke(cli, ["--debug", "eval", str(tmp_path / "nope"), "--data", str(tmp_path)])
    assert isinstance(r.exception, ArtifactError)


def test_set_values_are_parsed_not_evaluated():
    from edgeft.cli import parse_overrides

    assert parse_overrides(("lr=1e-3", "augment.rotate_deg=10", "weights=__import__('os')")) == {
        "lr": 1e-3, "augment": {"rotate_deg": 10}, "weights": "__import__('os')"}


def test_doctor_require_is_a_health_check(cli, monkeypatch):
    from edgeft import doctor as doc

    monkeypatch.setattr(doc, "run_checks", lambda: [doc.Check("onnxruntime", True, "1.0"),
                                                    doc.Check("tensorrt", False, detail="not installed")])
    assert cli("doctor", "--require", "onnxruntime").exit_code == 0
    r = cli("doctor", "--require", "onnxruntime", "--require", "tensorrt")
    assert r.exit_code == 1 and "required but not usable here: tensorrt" in r.stderr
    assert_one_line_error(cli("doctor", "--require", "tensorrtt"), "did you mean: tensorrt?")
