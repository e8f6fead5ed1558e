"""Tasks are plug-ins: a third task, written here and registered by this test alone, runs through the recipe, the
pipeline (its own first stage, export with its own parity rule, bench), the report and ``edgeft eval`` without a
line changed anywhere else. The toy task predicts an image's mean brightness (an exposure check a line might run):
a 1x1 convolution and a global average, fitted by least squares."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeft import tasks
from edgeft.tasks.folders import FolderData


@dataclass
class FitSection:
    image_size: int = 32


@dataclass(frozen=True)
class BrightnessMetrics:
    n: int
    mae: float  # mean absolute error of the predicted brightness, in [0, 1] units

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mae": self.mae}

    def summary(self, class_names: list[str], title: str = "") -> str:
        return (title + "\n" if title else "") + f"  brightness MAE {self.mae:.4f} (n={self.n})"


def _module():
    import torch

    class Brightness(torch.nn.Module):
        def __init__(self, channels: int):
            super().__init__()
            self.proj = torch.nn.Conv2d(channels, 1, 1)

        def forward(self, x):
            return self.proj(x).mean(dim=(1, 2, 3))

    return Brightness


def _truth(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).mean(1) / 255.0


class Brightness(FolderData, tasks.Task):  # its data: class folders
    name = "brightness"
    first_stage = "fit"
    stages = ("fit", "export", "bench")
    graph_outputs = ("brightness",)
    summary = "an image's mean brightness"

    def first_config(self, section):
        from edgeft.settings import section as read

        return read(FitSection, section, "fit")

    def run_first(self, recipe, out, resume):
        import torch

        from edgeft.artifact import Meta
        from edgeft.contract import InputContract
        from edgeft.data import load_split
        from edgeft.models import save_artifact

        size = recipe.sections["fit"].image_size
        contract = InputContract(size=(size, size), mean=(0.5,), std=(0.25,), resize="stretch", color="GRAY")
        train = load_split(recipe.data, "train", contract)
        x = contract.normalize(train.images).mean(axis=(2, 3))[:, 0]  # the model's pooled input, per image
        w, b = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), _truth(train.images), rcond=None)[0]
        model = _module()(1)
        with torch.no_grad():
            model.proj.weight.fill_(float(w))
            model.proj.bias.fill_(float(b))
        meta = Meta(kind="torch", arch="brightness", class_names=["brightness"], input=contract,
                    extra={"task": self.name})
        save_artifact(model, out, meta, force=True)

    def torch_model(self, artifact):
        return _module()(artifact.meta.input.channels)

    def parity(self, model, path, images, onnx_images, contract, onnx_contract, split, names, gray_input):
        import torch

        from edgeft.runtime.timing import ort_session

        with torch.no_grad():
            ref = model(torch.from_numpy(contract.normalize(images))).numpy()
        sess = ort_session(str(path), 1)
        got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: contract.normalize(images[i:i + 1])})[0]
                              for i in range(len(images))])
        diff = float(np.abs(ref - got).max())
        assert diff < 1e-5, diff
        return {"n": len(images), "split": split, "max_abs_diff": diff}

    def parity_classes(self, class_names):
        return None

    def evaluate(self, artifact, data, split, backend=None, positive=None, tta_views=None):
        from edgeft.data import load_split
        from edgeft.runtime.backends import choose

        s = load_split(data, split, artifact.meta.input)
        chosen = choose(backend or "auto", {artifact.meta.model_file: artifact.model_path})
        with chosen.make(artifact.model_path, artifact.path, None) as runner:
            got = np.concatenate([runner.infer_outputs(artifact.meta.input.normalize(s.images[i:i + 1]))[0]
                                  for i in range(len(s))])
        return BrightnessMetrics(n=len(s), mae=float(np.abs(got - _truth(s.images)).mean()))

    def measure(self, recipe, stage, out, always):
        from edgeft import artifact as art

        a = art.load(out)
        art.update_metrics(a, {"brightness": self.evaluate(a, recipe.data, "test").to_dict()})

    def read_row(self, meta):
        m = meta.metrics.get("brightness")
        return {"quality": 1 - m["mae"], "quality_name": "1 - brightness MAE", "split": "test"} if m else {}


@pytest.fixture
def brightness():
    task = tasks.register(Brightness())
    yield task
    tasks.unregister(task.name)


def test_a_task_registered_by_a_test_runs_fit_export_eval_and_bench(brightness, tiny_data, tmp_path, cli):
    from edgeft.optimize import pipeline
    from edgeft.optimize.recipe import parse

    recipe = parse({"name": "toy", "task": "brightness", "data": str(tiny_data), "threads": 1,
                    "fit": {"image_size": 32}, "export": {"parity_images": 8},
                    "bench": {"backends": ["ort-cpu", "torch"], "duration_s": 0.05, "warmup_s": 0.02, "rounds": 2,
                              "memory": False}}, source="toy.yaml")
    assert recipe.stages == ["fit", "export", "bench"]
    result = pipeline.optimize(recipe, tmp_path / "run")
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["01-fit", "02-export", "03-bench"]
    onnx_meta = json.loads((run / "02-export" / "meta.json").read_text())
    assert onnx_meta["metrics"]["parity"]["max_abs_diff"] < 1e-5  # the task's own parity rule ran on real images
    assert onnx_meta["metrics"]["brightness"]["mae"] < 1e-3  # least squares on the pooled input is exact
    bench = json.loads((run / "03-bench" / "results.json").read_text())
    assert {(Path(r["model"]).name, r["backend"], r["status"]) for r in bench["results"]} == {
        ("01-fit", "torch", "ok"), ("02-export", "ort-cpu", "ok")}
    rows = {r.step: r for r in result.rows}
    assert rows["02-export"].quality == pytest.approx(1 - onnx_meta["metrics"]["brightness"]["mae"])
    report = (run / "report.md").read_text()
    assert "1 - brightness MAE" in report and "02-export" in report
    r = cli("eval", run / "02-export", "--data", tiny_data)
    assert r.exit_code == 0, r.output
    assert "brightness MAE 0.000" in r.stdout


def test_a_task_without_the_per_runtime_hooks_refuses_a_ship_step(brightness, tiny_data, monkeypatch):
    from edgeft.errors import ConfigError
    from edgeft.optimize.recipe import parse

    d = {"name": "toy", "task": "brightness", "data": str(tiny_data), "fit": {}, "export": {}, "ship": {}}
    with pytest.raises(ConfigError, match="ship is not a stage of task: brightness"):
        parse(d, source="toy.yaml")
    monkeypatch.setattr(type(brightness), "stages", ("fit", "export", "ship", "bench"))  # listed, without its hooks
    with pytest.raises(ConfigError, match="ship: a brightness model cannot be judged on each runtime yet"):
        parse(d, source="toy.yaml")


def test_an_unknown_task_is_refused_with_the_known_ones():
    from edgeft.errors import ConfigError
    from edgeft.optimize.recipe import parse

    with pytest.raises(ConfigError, match="task must be one of anomaly, classify, detect, got 'anomally'.*anomaly"):
        parse({"task": "anomally", "data": "x"}, source="r.yaml")


def test_every_builtin_task_declares_its_stages_and_head():
    for name in ("classify", "anomaly"):
        t = tasks.get(name)
        assert t.stages[0] == t.first_stage
        assert t.stages[1:] == ("prune", "export", "quantize", "build", "ship", "bench")
    assert tasks.of({}).name == "classify"  # artifacts from before tasks are classifiers
    assert tasks.stage_owner("anomaly") == "anomaly" and tasks.stage_owner("finetune") == "classify"
