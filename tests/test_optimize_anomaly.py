"""``edgeft optimize`` with ``task: anomaly``: the recipe, the run (fit -> pruned -> ONNX -> INT8 -> bench), the gates
at each model's own threshold, and the report's gallery of test parts with their heatmaps. Tiny timm model on the
synthetic plates of tests/test_anomaly.py (bright strokes in known quadrants)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeft.errors import ConfigError, DataError
from edgeft.optimize import pipeline
from edgeft.optimize.recipe import parse
from tests.conftest import assert_one_line_error
from tests.test_anomaly import write_anomaly_folder


def anomaly_recipe(data) -> dict:
    return {
        "name": "tiny-anomaly", "task": "anomaly", "data": str(data), "threads": 2,
        "anomaly": {"good": "good", "model": "test_efficientnet", "weights": None, "image_size": 32,
                    "layers": [1, 2], "target_recall": 0.9},
        "prune": {"target_macs": 0.6, "steps": 4, "round_to": 2, "recover_epochs": 2, "recover_lr": 1e-3},
        "export": {"parity_images": 8},
        "quantize": {"calib_images": 16, "calib_method": "minmax"},
        "bench": {"backends": ["ort-cpu", "torch"], "duration_s": 0.1, "warmup_s": 0.05, "rounds": 2,
                  "memory": False},
        "gates": {"max_auroc_drop": 1.0, "max_recall_drop_pp": 100, "max_p50_ms": {"ort-cpu": 10000}},
    }


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    return write_anomaly_folder(tmp_path_factory.mktemp("plates") / "data")


@pytest.fixture(scope="module")
def anomaly_run(plates, tmp_path_factory):
    run = tmp_path_factory.mktemp("opt-anomaly") / "run"
    return run, pipeline.optimize(parse(anomaly_recipe(plates), source="a.yaml"), run)


def test_the_run_fits_exports_quantizes_and_benches_an_anomaly_model(anomaly_run):
    run, result = anomaly_run
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [
        "01-anomaly", "02-prune", "03-export-anomaly", "04-export-prune", "05-quantize", "06-bench", "gallery"]
    assert [r.status for r in result.steps] == ["done"] * 6
    fit, pruned, onnx, pruned_onnx, int8 = result.rows
    assert fit.anomaly.test is not None and fit.accuracy is None
    assert fit.anomaly.test.auroc >= 0.9  # the strokes are found on unseen test plates
    assert pruned.macs < 0.65 * fit.macs and pruned.pruning.reached < 0.65 and pruned.anomaly.test.auroc >= 0.9
    assert onnx.anomaly.test.auroc == fit.anomaly.test.auroc  # the export carries the fit's numbers (parity checked)
    assert pruned_onnx.anomaly.test.auroc == pruned.anomaly.test.auroc
    assert int8.precision.startswith("INT8") and int8.policy is not None and int8.macs == pruned.macs
    manifest = json.loads((run / "05-quantize-calibration.json").read_text())  # calibrated on good parts only
    assert {e["label"] for e in manifest["images"]} == {"good"} and len(manifest["images"]) == 16
    assert "ort-cpu@1" in int8.latency and "torch@1" in fit.latency


def test_gates_compare_the_final_model_with_the_fitted_one_at_their_own_thresholds(anomaly_run, plates):
    run, result = anomaly_run
    gates = {g.gate: g.to_dict() for g in result.gates}
    assert set(gates) == {"max_auroc_drop", "max_recall_drop_pp", "max_p50_ms.ort-cpu"}
    assert all(g["status"] == "pass" and g["model"] == "05-quantize" for g in gates.values())
    fit = json.loads((run / "01-anomaly" / "meta.json").read_text())["metrics"]["anomaly"]
    int8 = json.loads((run / "05-quantize" / "meta.json").read_text())["metrics"]["anomaly"]
    assert gates["max_auroc_drop"]["value"] == round(fit["test"]["auroc"] - int8["test"]["auroc"], 4)
    assert gates["max_recall_drop_pp"]["value"] == round(
        (fit["test_policy"]["recall"] - int8["test_policy"]["recall"]) * 100, 2)
    # the AUROC gate says how much of the drop the 16 test plates can resolve: a paired bootstrap interval around it
    detail = gates["max_auroc_drop"]["detail"]
    lo, hi = (float(x) for x in detail.split("interval of the drop ")[1].split(" (")[0].split(" to "))
    assert lo <= gates["max_auroc_drop"]["value"] <= hi
    # benchmarks/anomaly_auroc_drop.py scores through the same function: the gate's interval, to its printed digits
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "anomaly_auroc_drop.py"  # from any directory
    out = subprocess.run([sys.executable, str(script), str(run / "01-anomaly"),
                          str(run / "05-quantize"), "--data", str(plates)], capture_output=True, text=True, check=True)
    bench = json.loads(out.stdout)
    assert bench["images"] == 16 and bench["drop_95"] == pytest.approx([lo, hi], abs=5e-4)


def test_a_gate_the_final_model_misses_fails_the_run(plates, anomaly_run, tmp_path):
    import shutil

    run, _ = anomaly_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    d = anomaly_recipe(plates)
    d["gates"]["max_p50_ms"] = {"ort-cpu": 1e-6}  # nothing runs in a nanosecond
    result = pipeline.optimize(parse(d, source="a.yaml"), copy, resume=True)
    assert all(s.status == "reused" for s in result.steps)
    assert result.failed and {g.gate: g.status for g in result.gates}["max_p50_ms.ort-cpu"] == "fail"


def test_the_report_shows_the_most_anomalous_test_parts_with_their_heatmaps(anomaly_run, plates):
    from edgeft.images import read_image
    from edgeft.runtime.predictor import Predictor

    run, _ = anomaly_run
    page = (run / "report.html").read_text()
    md = (run / "report.md").read_text()
    tiles = sorted((run / "gallery").glob("*.png"))
    assert 8 <= len(tiles) <= 12
    assert page.count("data:image/png;base64,") == len(tiles)  # embedded: the page is one file
    assert all(f"gallery/{t.name}" in md for t in tiles)
    assert "<h2>ROC on the held-out split</h2>" in page and "<h2>AUROC vs latency</h2>" in page
    roc = (run / "roc.svg").read_text()
    assert roc.count("<polyline") == 5 and roc.count("<circle") == 5  # every model's curve and operating point
    assert "Confusion matrices" not in page  # a classifier's table, not an anomaly model's
    # the tiles are the final model's highest scores, in order; on these plates, the stroked ones
    with Predictor(run / "05-quantize") as p:
        scores = {f: p.predict(read_image(f))[0].score for f in sorted((plates / "test").rglob("*.png"))}
    ranked = sorted(scores, key=scores.get, reverse=True)[:8]
    assert [t.name.split("-", 1)[1] for t in tiles[:8]] == [f.name for f in ranked]
    assert sum(f.parent.name == "crack" for f in ranked) >= 7
    assert read_image(tiles[0]).shape == (32, 32, 3)  # the model's view of the part, coloured


@pytest.fixture(scope="module")
def shipped_run(plates, anomaly_run, tmp_path_factory):
    """The anomaly run's finished models, resumed with a ship step over ONNX Runtime and OpenVINO."""
    import shutil

    run = tmp_path_factory.mktemp("opt-anomaly-ship") / "run"
    shutil.copytree(anomaly_run[0], run)
    d = anomaly_recipe(plates)
    d["ship"] = {"runtimes": ["ort-cpu", "ov-cpu"], "latency_rounds": 3}
    d["gates"]["max_p50_ms"] = {"ort-cpu": 10000, "ov-cpu": 10000}
    return run, d, pipeline.optimize(parse(d, source="a.yaml"), run, resume=True)


def test_the_ship_step_judges_each_model_on_each_runtime_on_val_and_ships_the_fastest_passing(shipped_run, plates):
    from edgeft import artifact as art
    from edgeft.metrics import anomalous_mask, anomaly_decisions
    from edgeft.data.imagefolder import load_split
    from edgeft.optimize.search import fastest
    from edgeft.optimize.rows import load_choice
    from edgeft.optimize.ship import Choice
    from edgeft.runtime.logits import onnx_outputs
    from edgeft.runtime.predictor import Predictor

    run, _, result = shipped_run
    assert [(r.step.name, r.status) for r in result.steps] == [
        ("01-anomaly", "reused"), ("02-prune", "reused"), ("03-export-anomaly", "reused"),
        ("04-export-prune", "reused"), ("05-quantize", "reused"), ("06-ship", "done"), ("07-bench", "done")]
    doc = load_choice(run / "06-ship")
    assert doc["base"] == "03-export-anomaly" and [c["key"] for c in doc["choices"]] == [
        "int8@ort-cpu", "int8@ov-cpu", "fp32@ort-cpu", "fp32@ov-cpu"]
    choices = [Choice(**c) for c in doc["choices"]]
    assert all(c.status in ("pass", "fail") and len(c.speedups) == 3 and c.quality_name == "AUROC" and c.policy
               for c in choices)
    # the fastest of those that met every gate on val (the gates here pass every one), one speed within 2%
    assert doc["passed"] and doc["chosen"] == fastest([c for c in choices if c.status == "pass"]).key
    chosen = next(c for c in choices if c.key == doc["chosen"])
    a = art.load(run / "06-ship")
    # INT8 statistics re-fitted on each runtime's features; the other models ship as they are
    assert [c.adapted for c in choices] == [False, True, False, False]
    assert [e["params"]["backend"] for e in art.load(run / "06-ship" / "candidates" / "int8@ov-cpu").meta.lineage
            if e["stage"] == "refit"] == ["ov-cpu"]
    source = run / "06-ship" / "candidates" / chosen.key if chosen.adapted else run / chosen.step
    assert a.meta.model_sha256 == art.load(source).meta.model_sha256 == art.sha256_file(a.model_path)
    assert a.meta.extra["runtime"]["backend"] == chosen.runtime and a.meta.extra["runtime"]["chosen_by"] == "ship"
    assert a.meta.lineage[-1]["stage"] == "ship" and a.meta.lineage[-1]["params"]["candidate"] == chosen.key
    assert a.meta.extra["decision"]["reject_at"] == chosen.policy["reject_at"]  # chosen on that runtime's val scores
    # its test numbers are that runtime's: scored here again on it, the same AUROC
    test = load_split(plates, "test", a.meta.input)
    scores = onnx_outputs(a.model_path, test.images, a.meta.input, backend=chosen.runtime)[0].reshape(-1)
    y = anomalous_mask(test.labels, test.classes, "good")
    assert a.meta.metrics["anomaly"]["test"]["auroc"] == anomaly_decisions(y, scores, "good").auroc
    assert a.meta.metrics["scored_on"] == chosen.runtime
    with Predictor(run / "06-ship") as p:  # the camera's auto runs where it ships
        assert p.backend.name == chosen.runtime
    gates = {g.gate: g for g in result.gates}
    assert gates["max_auroc_drop"].model == "06-ship" and gates["max_auroc_drop"].status == "pass"
    other = "ov-cpu" if chosen.runtime == "ort-cpu" else "ort-cpu"
    assert gates[f"max_p50_ms.{chosen.runtime}"].status == "pass"
    assert gates[f"max_p50_ms.{other}"].status == "not evaluated" and f"ships on {chosen.runtime}" in \
        gates[f"max_p50_ms.{other}"].detail
    md = (run / "report.md").read_text()
    assert "## Where it ships (runtime and precision, chosen on val)" in md and f"Shipped {chosen.key}" in md
    assert f"Ships on {chosen.runtime}" in md and "chosen by the ship step" in md


def test_a_runtime_that_misses_a_gate_on_val_is_not_shipped(shipped_run, tmp_path):
    import shutil

    from edgeft.optimize.rows import load_choice

    run, d, _ = shipped_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    d = {**d, "gates": {**d["gates"], "max_p50_ms": {"ort-cpu": 1e-6, "ov-cpu": 10000}}}  # nothing runs in 1 ns
    result = pipeline.optimize(parse(d, source="a.yaml"), copy, resume=True)
    doc = load_choice(copy / "06-ship")  # the gates changed: the choice is made again
    status = {c["key"]: c["status"] for c in doc["choices"]}
    assert status["int8@ort-cpu"] == status["fp32@ort-cpu"] == "fail" and doc["chosen"].endswith("@ov-cpu")
    assert not result.failed  # the shipped model meets its own runtime's budget; ort-cpu's is not where it ships


def test_a_ship_step_whose_runtimes_this_machine_lacks_is_refused_before_any_stage(plates, tmp_path, monkeypatch):
    from edgeft.runtime import openvino as ov_mod

    monkeypatch.setattr(ov_mod, "available_devices", lambda: ())  # as without OpenVINO (both are cached per process)
    monkeypatch.setattr(ov_mod, "cpu_capabilities", lambda: ())
    d = anomaly_recipe(plates)
    d["ship"] = {"runtimes": ["ov-cpu"]}
    d["gates"]["max_p50_ms"] = {"ov-cpu": 10000}
    with pytest.raises(ConfigError, match="ship.runtimes: none can run on this machine .ov-cpu: OpenVINO"):
        pipeline.optimize(parse(d, source="a.yaml"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_search_refuses_ship_it_chooses_the_runtime_itself(tiny_data):
    from tests.test_optimize import tiny_recipe

    d = tiny_recipe(tiny_data)
    d["ship"] = {"runtimes": ["ort-cpu"]}
    d["search"] = {"target_macs": [0.5]}
    with pytest.raises(ConfigError, match="ship: the search chooses the runtime.*search.runtimes"):
        parse(d, source="r.yaml")


def test_escapes_are_the_defects_the_policy_passed_lowest_score_first():
    from edgeft.tasks.anomaly.gallery import _picks

    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3])
    anomalous = np.array([True, True, False, True, False, True])
    passed = scores < 0.4
    picks = _picks(scores, anomalous, passed, top=2, escapes=2)
    assert picks == [(0, "most anomalous"), (4, "most anomalous"), (1, "escaped"), (3, "escaped")]
    assert _picks(scores, anomalous, np.zeros(6, bool), top=3, escapes=4)[3:] == []  # nothing passed, none escaped


def test_calibration_of_one_class_samples_only_that_class(plates):
    from edgeft.data import calibration

    m = calibration.create(plates, n=16, split="val", only="good")
    assert {e["label"] for e in m.entries} == {"good"} and len(m.entries) == 8  # val has 8 good plates
    assert m.source["only"] == "good"
    with pytest.raises(DataError, match="no class folder 'god'"):
        calibration.create(plates, n=16, only="god")


@pytest.mark.parametrize("change, fragments", [
    ({"prune": {"importance": "taylor"}}, ["prune.importance taylor", "labels", "l2"]),
    ({"prune": {"recover_mode": "partial"}}, ["prune.recover_mode partial", "distilling its own features"]),
    ({"prune": {"distill": False}}, ["prune.distill false", "no labels"]),
    ({"finetune": {}}, ["finetune is the first stage of task: classify", "set task: classify"]),
    ({"decision": {"positive": ["crack"], "target_recall": 0.9}}, ["decision:", "anomaly:", "target_recall"]),
    ({"search": {"target_macs": [0.5]}}, ["search:", "classifiers"]),
    ({"gates": {"max_accuracy_drop_pp": 1}}, ["max_accuracy_drop_pp", "no accuracy", "max_auroc_drop"]),
    ({"quantize": {"method": "qat"}}, ["quantize.method qat", "ptq"]),
    ({"anomaly": {"good": "good", "layers": 2}}, ["anomaly.layers must be a list"]),
    ({"anomaly": {"good": "good", "methd": "padim"}}, ["unknown field anomaly.methd", "method"]),
    ({"anomaly": {"good": "good", "target_recall": None}, "gates": {"max_recall_drop_pp": 1}},
     ["gates.max_recall_drop_pp", "give anomaly: a rule"]),
    ({"task": "anomally"}, ["task must be one of", "did you mean: anomaly"]),
    ({"stages": ["export", "anomaly"]}, ["anomaly cannot come after export"]),
    ({"ship": {"runtimes": ["ov-gpu"]}}, ["ship.runtimes: 'ov-gpu' is not a CPU runtime"]),
    ({"ship": {"models": ["int4"]}}, ["ship.models must list int8, fp32"]),
    ({"ship": {"latency_rounds": 0}}, ["ship.latency_rounds must be an integer >= 1"]),
    ({"ship": {"runtimes": ["ort-cpu", "ov-cpu"]}}, ["ship.runtimes also ships on ov-cpu", "give each runtime"]),
    ({"ship": {}, "stages": ["anomaly", "ship", "bench"]}, ["ship chooses among the run's ONNX models", "add export"]),
    ({"ship": {"models": ["int8"]}, "stages": ["anomaly", "export", "ship", "bench"]},
     ["ship.models int8", "add quantize"]),
    ({"ship": {}, "quantize": {"target": "tensorrt"}}, ["quantize.target tensorrt", "ship chooses among CPU"]),
])
def test_anomaly_recipe_errors_name_the_field(plates, change, fragments):
    d = anomaly_recipe(plates)
    d.update(change)
    for stage in ("prune", "export", "quantize"):  # a recipe listing fewer stages has no sections for the others
        if stage not in d.get("stages", [stage]) and "anomaly" in d.get("stages", []):
            del d[stage]
    with pytest.raises(ConfigError) as e:
        parse(d, source="a.yaml")
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_a_classifier_recipe_refuses_an_anomaly_section(tiny_data):
    from tests.test_optimize import tiny_recipe

    d = tiny_recipe(tiny_data)
    d["anomaly"] = {"good": "good"}
    with pytest.raises(ConfigError, match="anomaly is the first stage of task: anomaly.*set task: anomaly"):
        parse(d, source="r.yaml")


def test_bad_data_is_one_line_before_anything_is_written(cli, plates, tmp_path):
    import shutil

    d = anomaly_recipe(plates)
    d["anomaly"]["good"] = "goood"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(d))
    assert_one_line_error(cli("optimize", tmp_path / "a.yaml", "--out", tmp_path / "run"),
                          "anomaly.good: 'goood' is not a class folder", "did you mean: good")
    no_val = tmp_path / "no-val"
    shutil.copytree(plates, no_val)
    shutil.rmtree(no_val / "val")
    d = anomaly_recipe(no_val)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(d))
    assert_one_line_error(cli("optimize", tmp_path / "a.yaml", "--out", tmp_path / "run"),
                          "thresholds chosen on val/", "lacks val/")
    d = {**d, "gates": {}, "ship": {"runtimes": ["ort-cpu"]}}  # no gate needs val, the ship step does
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(d))
    assert_one_line_error(cli("optimize", tmp_path / "a.yaml", "--out", tmp_path / "run"),
                          "ship judges each model on each runtime by its AUROC on val/", "is missing")
    assert not (tmp_path / "run").exists()


def test_the_custom_anomaly_recipe_runs_on_your_own_parts(cli, plates, tmp_path):
    """The documented own-parts path, `edgeft optimize examples/custom-anomaly.yaml --set data=DIR`, made small with
    --set."""
    sets = ["data=" + str(plates), "anomaly.model=test_efficientnet", "anomaly.weights=none", "anomaly.image_size=32",
            "anomaly.layers=[1, 2]", "anomaly.dims=20", "prune.round_to=2", "prune.steps=4",
            "prune.max_layer_ratio=0.8", "prune.recover_epochs=1", "quantize.calib_images=16", "bench.rounds=1", "bench.duration_s=0.1", "bench.warmup_s=0.05",
            "bench.memory=false"]
    r = cli("optimize", "examples/custom-anomaly.yaml", "--out", tmp_path / "run",
            *[a for s in sets for a in ("--set", s)])
    assert r.exit_code in (0, 1), r.output  # 1: a gate failed on this tiny model, after the report was written
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())["steps"]
    assert all(state[s]["status"] == "done" for s in ("01-anomaly", "02-prune", "03-export-anomaly", "04-export-prune",
                                                       "05-quantize", "06-bench")), state
    assert (tmp_path / "run" / "report.html").is_file() and list((tmp_path / "run" / "gallery").glob("*.png"))
    import onnx  # the recipe's FP16 statistics reach the shipped INT8 graph, through the pruned backbone's re-fit

    shipped = onnx.load(str(tmp_path / "run" / "05-quantize" / "model.onnx")).graph
    assert [list(i.dims) for i in shipped.initializer if i.data_type == onnx.TensorProto.FLOAT16] == [[16, 20, 20]]
