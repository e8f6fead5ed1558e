"""The example CI workflows gate the model the recipe ships (its INT8 step), built from a cached fine-tuning: the
workflow names that step, caches what `--resume` needs to skip the fine-tuning, and its gate step runs as written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ("latency-gate.yml", "latency-gate-paired.yml")


def _workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / "benchmarks/ci" / name).read_text())


def _step(workflow: dict, prefix: str) -> dict:
    return next(s for s in workflow["jobs"]["gate"]["steps"] if s.get("name", "").startswith(prefix))


@pytest.mark.parametrize("name", WORKFLOWS)
def test_the_workflow_gates_the_step_the_recipe_ships_and_caches_its_fine_tuning(name):
    from edgeft.optimize.pipeline import plan
    from edgeft.optimize.recipe import load

    w = _workflow(name)
    steps = plan(load(ROOT / w["env"]["RECIPE"]))
    assert w["env"]["SHIPPED"] == next(s.name for s in steps if s.stage == "quantize")  # the INT8 model, not FP32
    build = _step(w, "Build")["run"]
    assert "optimize" in build and "--resume" in build and "finetune" not in build.replace("fine-tuning", "")
    for out in ("runs/candidate",) + (("runs/baseline",) if "paired" in name else ()):
        cached = [s["with"]["path"].split() for s in w["jobs"]["gate"]["steps"] if "cache" in s.get("uses", "")]
        assert any({f"{out}/01-finetune", f"{out}/pipeline.json", f"{out}/data"} <= set(p) for p in cached), out
    gated = _step(w, "Gate")["run"] + _step(w, "Bench")["run"] if "paired" not in name else _step(w, "Gate")["run"]
    assert "runs/candidate/$SHIPPED" in gated


def test_resume_skips_the_fine_tuning_when_only_the_cached_paths_are_restored(tiny_data, tmp_path, monkeypatch):
    """What the cache keeps (the data, 01-finetune, pipeline.json) is enough for --resume to reuse the fine-tuning
    and build the rest, as the workflows' build step does on a fresh runner."""
    from edgeft.optimize import pipeline
    from edgeft.optimize.recipe import parse
    from tests.test_optimize import tiny_recipe

    run = tmp_path / "runs/candidate"
    shutil.copytree(tiny_data, run / "data")  # copy2: file times kept, as the cache's archive keeps them
    d = tiny_recipe(run / "data")
    d.pop("prune"), d.pop("build")
    d["gates"] = {}
    d["bench"]["backends"] = ["ort-cpu"]
    pipeline.optimize(parse(d, source="r.yaml"), run, resume=True)  # the data already sits in the run folder
    for p in run.iterdir():
        if p.name not in ("data", "01-finetune", "pipeline.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    monkeypatch.setattr(pipeline, "_run_first", lambda *a, **k: pytest.fail("the fine-tuning must be reused"))
    result = pipeline.optimize(parse(d, source="r.yaml"), run, resume=True)
    assert {r.step.name: r.status for r in result.steps}["01-finetune"] == "reused"
    assert (run / "03-quantize" / "model.onnx").is_file()


def test_the_paired_gate_step_runs_as_written_on_the_shipped_models(tiny_onnx, tmp_path):
    w = _workflow("latency-gate-paired.yml")
    for side in ("baseline", "candidate"):
        shutil.copytree(tiny_onnx.path, tmp_path / "runs" / side / w["env"]["SHIPPED"])
    env = {**os.environ, **w["env"], "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", _step(w, "Gate")["run"]],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "baseline 05-quantize, candidate 05-quantize" in (tmp_path / "gate.md").read_text()
    # the history step, as written, on two runs of the workflow: both kept in the store the cache carries
    history = _step(w, "History")["run"]
    assert {"key": "latency-history-${{ github.run_id }}", "restore-keys": "latency-history-",
            "path": "history.sqlite"} == next(s["with"] for s in w["jobs"]["gate"]["steps"]
                                              if s.get("name") == "Restore the results history")
    for sha in ("a" * 40, "b" * 40):
        r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", history], cwd=tmp_path,
                           env={**env, "GITHUB_SHA": sha}, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    shown = (tmp_path / "history.txt").read_text()
    assert "05-quantize vs reference gate_ratio (gate) on ort-cpu batch 1" in shown and "bbbbbbbbbbbb" in shown
    assert "05-quantize gate_ratio (gate)" in shown  # the per-change gate's ratio, kept beside
    assert shown.count(": 2 points,") == 2 and (tmp_path / "reference" / "model.onnx").is_file()
    assert (tmp_path / "history.html").is_file()
