"""The install's extras: ONNX Runtime comes as `runtime` (CPU) or `gpu`, and no other extra pulls either, so the
natural combination on an x86 + NVIDIA box, `edgeft[onnx,gpu]`, installs one runtime (the two wheels overwrite each
other's files). Checked statically on every extra combination, and by pip's own resolver in a dry run."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = {"onnxruntime", "onnxruntime-gpu"}


def _extras() -> dict[str, set[str]]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {k: {Requirement(r).name.lower() for r in v} for k, v in extras.items()}


def test_no_extra_but_runtime_and_gpu_pulls_an_onnx_runtime():
    extras = _extras()
    assert {k for k, v in extras.items() if v & RUNTIMES} == {"runtime", "gpu"}
    for n in range(1, len(extras) + 1):
        for combo in itertools.combinations(sorted(set(extras) - {"runtime", "gpu"}), n):
            for runtime in ("runtime", "gpu"):
                pulled = set().union(*(extras[k] for k in (*combo, runtime))) & RUNTIMES
                assert len(pulled) == 1, (combo, runtime, pulled)


def test_pip_resolves_onnx_with_gpu_to_one_runtime(tmp_path):
    """pip's resolver on `.[onnx,gpu]` (a dry run, nothing installed): onnxruntime-gpu, not onnxruntime."""
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--disable-pip-version-check", "--report", str(report), "-c",
                        str(ROOT / "requirements/constraints.txt"), f"{ROOT}[onnx,gpu]"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and ("No matching distribution" in r.stderr or "connection" in r.stderr.lower()):
        pytest.skip(f"the package index is not reachable from here: {r.stderr.strip().splitlines()[-1][:200]}")
    assert r.returncode == 0, r.stderr[-2000:]
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names and {"onnx", "onnxslim"} <= names
