"""``edgeft optimize`` on a tiny recipe: validation, the run folder, gates, report, and --resume."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from edgeft.errors import ConfigError
from edgeft.optimize import pipeline
from edgeft.optimize.recipe import load, parse
from tests.conftest import assert_one_line_error


def tiny_recipe(data) -> dict:
    return {
        "name": "tiny", "data": str(data), "threads": 2,
        "finetune": {"model": "test_efficientnet", "weights": None, "mode": "full", "image_size": 32,
                     "resize": "stretch", "batch_size": 8, "epochs": 4, "lr": 3e-3},
        "prune": {"target_macs": 0.6, "steps": 5, "round_to": 4, "recover_epochs": 1},
        "export": {"parity_images": 8},
        "quantize": {"calib_images": 16, "auto_exclude": False},
        "build": {"precision": "fp16"},
        "bench": {"backends": ["ort-cpu", "torch"], "duration_s": 0.1, "warmup_s": 0.05, "rounds": 2,
                  "profile": False},  # on in the tests of the profile section (a few seconds a run)
        "decision": {"positive": ["bad"], "target_recall": 0.9, "review_budget": 0.1},
        "gates": {"max_accuracy_drop_pp": 100, "max_p50_ms": {"ort-cpu": 10000}, "max_recall_drop_pp": 100,
                  "max_false_reject_rise_pp": 100, "max_auroc_drop": 1.0},
    }


def write_recipe(path, d) -> str:
    path.write_text(yaml.safe_dump(d))
    return str(path)


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    """One complete run of the tiny recipe (copied by tests that change it)."""
    root = tmp_path_factory.mktemp("opt")
    recipe = parse(tiny_recipe(tiny_data), source="tiny.yaml")
    result = pipeline.optimize(recipe, root / "run")
    return root / "run", result


def test_run_folder_report_and_gates(finished_run):
    run, result = finished_run
    names = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert names == ["01-finetune", "02-prune", "03-export-finetune", "04-export-prune", "05-quantize", "07-bench",
                     "gallery"]
    state = json.loads((run / "pipeline.json").read_text())
    assert state["steps"]["06-build"]["status"] == "skipped"  # no TensorRT here: skipped with the reason
    assert "TensorRT" in state["steps"]["06-build"]["reason"]
    assert [g.gate for g in result.gates] == ["max_accuracy_drop_pp", "max_recall_drop_pp",
                                                 "max_false_reject_rise_pp", "max_auroc_drop", "max_p50_ms.ort-cpu"]
    assert {g.status for g in result.gates} == {"pass"}
    rows = {r.step: r for r in result.rows}
    assert rows["05-quantize"].precision == "INT8 (ort-cpu)"
    assert rows["02-prune"].macs < rows["01-finetune"].macs
    assert rows["04-export-prune"].macs == rows["02-prune"].macs
    assert rows["05-quantize"].latency["ort-cpu@1"]["status"] == "ok"
    assert len(rows["05-quantize"].latency["ort-cpu@1"]["round_p50_ms"]) == 2
    assert "torch@1" in rows["01-finetune"].latency and "ort-cpu@1" not in rows["01-finetune"].latency
    md = (run / "report.md").read_text()
    assert "| 05-quantize |" in md and "## Confusion matrices" in md and "## Lineage" in md
    landed = rows["02-prune"].pruning
    assert landed.reached == round(rows["02-prune"].macs / rows["01-finetune"].macs, 4)
    assert f"Pruning (02-prune) kept {landed.reached:.3f} of the MACs for a target of" in md
    assert f"Stage time: {sum(s.get('seconds', 0) for s in state['steps'].values()) / 60:.1f} min." in md
    # the headline's speed-up over eager shows its spread over the bench's interleaved rounds, from those rounds
    eager, int8 = rows["01-finetune"].latency["torch@1"], rows["05-quantize"].latency["ort-cpu@1"]
    per_round = [e / i for e, i in zip(eager["round_p50_ms"], int8["round_p50_ms"])]
    assert f"(per round {min(per_round):.1f}-{max(per_round):.1f}x over 2 interleaved rounds)" in md
    # the memory column is the model's own memory, measured by bench in a process of its own
    from edgeft.optimize.rows import table

    header, body = table(result.rows)
    own = rows["05-quantize"].latency["ort-cpu@1"]["memory"]["footprint"]["model_mb"]
    assert body[[b[0] for b in body].index("05-quantize")][header.index("memory MB")] == f"{own:.0f}"
    html = (run / "report.html").read_text()
    assert "<svg" in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained
    assert "06-build" in html and "skipped" in html
    assert '<span class="pass">pass</span>' in html and "**" not in html  # gate cells styled, no Markdown
    for table_ in ("Stages", "Gates", "Lineage"):  # every table in both formats, from the same rows
        assert f"## {table_}" in md and f"<h2>{table_}</h2>" in html
    # the training curves of the fine-tuning and of the pruning's recovery, each from its meta.json history
    assert "## Training curves" in md and "<h2>Training curves</h2>" in html
    for step in ("01-finetune", "02-prune"):
        assert f"(training-{step}.svg)" in md and (run / f"training-{step}.svg").is_file()
        svg = (run / f"training-{step}.svg").read_text()
        assert svg.count("<polyline") >= 2 and "train_loss" in svg and "val_" in svg


def test_every_model_gets_its_own_policy_chosen_on_val_and_is_reported_at_it(finished_run, tiny_data):
    from edgeft import artifact
    from edgeft.data import load_split
    from edgeft.decision import read_policy
    from edgeft.evaluate import logits
    from edgeft.metrics import positive_mask
    from edgeft.optimize.rows import table
    from edgeft.runtime.predictor import softmax

    run, result = finished_run
    rows = {r.step: r for r in result.rows}
    for step in ("01-finetune", "02-prune", "03-export-finetune", "04-export-prune", "05-quantize"):
        a = artifact.load(run / step)
        p = read_policy(a.meta.extra)
        assert p.positive == ["bad"] and p.chosen_on == "val" and p.rule.review_budget == 0.1
        # the policy reproduces on val what it says, from this model's own val scores
        val = load_split(tiny_data, "val", a.meta.input, classes=a.meta.class_names)
        out, _ = logits(a, val)
        y = positive_mask(val.labels, a.meta.class_names, ["bad"])
        assert p.outcome(y, p.score(softmax(out.astype(float)))) == p.val and p.val.recall >= 0.9
        # and the report row is the held-out split at that policy
        test = rows[step].accuracy
        assert rows[step].split == "test" and test.policy.n_positive + test.policy.n_negative == test.n
        assert test.decisions.roc[0] == [0.0, 0.0] and test.decisions.roc[-1] == [1.0, 1.0]
    header, body = table(result.rows)
    reviewed = any(r.accuracy and r.accuracy.policy and r.accuracy.policy.reviewed for r in result.rows)
    assert header[5:8] == ["AUROC", "recall", "false reject"] and (header[8] == "review") == reviewed
    q = body[[b[0] for b in body].index("05-quantize")]
    assert q[header.index("AUROC")] == f"{rows['05-quantize'].accuracy.decisions.auroc:.3f}"
    roc = (run / "roc.svg").read_text()
    assert roc.count("<polyline") == 5 and "05-quantize AUROC" in roc
    md = (run / "report.md").read_text()
    assert "Decisions on test (not OK = bad; each model's threshold chosen on val; 95% Wilson intervals)" in md


def test_a_changed_decision_section_rechooses_policies_without_rerunning_stages(finished_run, tiny_data, tmp_path):
    from edgeft import artifact
    from edgeft.decision import read_policy

    run, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    d = tiny_recipe(tiny_data)
    # a rule every model meets whatever the tiny model learned (a cap on false rejects may catch no defect on val)
    d["decision"] = {"positive": ["bad"], "target_recall": 0.99}
    result = pipeline.optimize(parse(d, source="tiny.yaml"), copy, resume=True)
    assert {r.status for r in result.steps if r.step.stage != "build"} == {"reused"}
    for step in ("01-finetune", "05-quantize"):
        p = read_policy(artifact.load(copy / step).meta.extra)
        assert p.rule.target_recall == 0.99 and p.rule.review_budget is None and p.val.recall == 1.0


def test_demo_bars_benchmark_reads_a_finished_run(finished_run, monkeypatch):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("demo_bars", Path(__file__).parents[1] / "benchmarks" / "demo_bars.py")
    bars = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bars)
    run, result = finished_run
    out = bars.check(run)
    rows = {r.step: r for r in result.rows}
    p50 = {k: rows[s].latency[b]["latency_ms"]["p50"] for k, s, b in (("int8", "05-quantize", "ort-cpu@1"),
                                                                     ("fp32", "03-export-finetune", "ort-cpu@1"),
                                                                     ("eager", "01-finetune", "torch@1"))}
    assert out["speedup"] == {"vs_fp32_ort": round(p50["fp32"] / p50["int8"], 3),
                              "vs_eager": round(p50["eager"] / p50["int8"], 3)}
    drop = (rows["01-finetune"].accuracy.accuracy - rows["05-quantize"].accuracy.accuracy) * 100
    assert out["accuracy"]["drop_pp"] == round(drop, 2)
    assert out["targets"]["accuracy_drop_le_1pp"] == (round(drop, 2) <= 1.0)
    assert out["speedup_per_round"]["vs_eager"] == [
        round(e / i, 2) for e, i in zip(rows["01-finetune"].latency["torch@1"]["round_p50_ms"],
                                        rows["05-quantize"].latency["ort-cpu@1"]["round_p50_ms"])]
    assert len(out["speedup_per_round"]["vs_fp32_ort"]) == 2
    assert out["macs_ratio"] == round(rows["02-prune"].macs / rows["01-finetune"].macs, 4)
    import edgeft.runtime.timing as timing

    timed = {}

    def rounds(runners, shape, n, **kw):  # known per-round p50s: the arithmetic is what is checked here
        timed.update({k: (r.name, r.path) for k, r in runners.items()})
        return {"fp32": [3.0, 4.0, 5.0], "final": [1.0, 2.0, 1.0]}
    monkeypatch.setattr(timing, "runner_rounds", rounds)
    p = bars.paired(run, rounds=3)
    assert timed == {"fp32": ("ort-cpu", run / "03-export-finetune" / "model.onnx"),  # no search: it ships on ort-cpu
                     "final": ("ort-cpu", run / "05-quantize" / "model.onnx")}
    assert p["median_ratio"] == 3.0 and p["range"] == [2.0, 5.0] and p["p50_ms"] == {"fp32_ort": 4.0, "final": 1.0}
    assert p["final"] == "05-quantize on ort-cpu"


def test_round_ratios_need_rows_measured_in_the_same_rounds():
    from edgeft.optimize.rows import round_ratios

    ok = lambda rounds: {"status": "ok", "round_p50_ms": rounds}  # noqa: E731
    assert round_ratios(ok([30.0, 24.0, 36.0]), ok([3.0, 2.0, 3.0])) == [10.0, 12.0, 12.0]
    assert round_ratios(ok([30.0, 24.0]), ok([3.0, 2.0, 3.0])) == []  # not the same rounds
    assert round_ratios(ok([30.0]), ok([3.0])) == []  # one round: no spread to show
    assert round_ratios({"status": "skipped"}, ok([3.0, 2.0])) == []


def test_latency_gate_fails_a_final_model_that_fails_to_run():

    from edgeft.optimize.gates import evaluate_gates
    from edgeft.optimize.report import headline
    from edgeft.optimize.rows import Row

    from edgeft.optimize.recipe import Gates

    gates = Gates(max_p50_ms={"ort-cpu": 5.0, "tensorrt": 2.0})
    final = Row("05-quantize", "quantize", "INT8", "INT8", "done", latency={
        "ort-cpu@1": {"status": "failed", "reason": "RuntimeException: unsupported op"},
        "tensorrt@1": {"status": "skipped", "reason": "TensorRT is not installed"}})
    evaluated = evaluate_gates(gates, [final])
    by_name = {g.gate: g for g in evaluated}
    assert by_name["max_p50_ms.ort-cpu"].status == "fail" and "unsupported op" in by_name["max_p50_ms.ort-cpu"].detail
    assert by_name["max_p50_ms.tensorrt"].status == "not evaluated"
    assert headline([final], evaluated)[-1] == ("Gates: FAILED — max_p50_ms.ort-cpu: ort-cpu failed: "
                                                "RuntimeException: unsupported op")


def test_a_latency_gate_judges_only_the_runtime_the_model_ships_on():
    """After a search chose OpenVINO, the ort-cpu budget does not judge the model (it does not run there) and the
    bf16 one says so even where nothing was benched on bf16; its own runtime's budget does."""
    from edgeft.metrics import Classification
    from edgeft.optimize.gates import evaluate_gates
    from edgeft.optimize.recipe import Gates
    from edgeft.optimize.rows import Row

    ok = {"status": "ok", "latency_ms": {"p50": 1.2, "p90": 1.4, "p95": 1.6, "p99": 2.0, "mean": 1.3, "min": 1.1,
                                         "max": 2.2, "std": 0.1, "throughput_ips": 800.0}}
    acc = Classification.from_dict({"accuracy": 0.9, "balanced_accuracy": 0.9, "n": 10, "per_class": {},
                                    "confusion": [[5, 0], [1, 4]]}, "test")
    final = Row("05-quantize", "quantize", "INT8", "INT8", "done", accuracy=acc,
                latency={"ort-cpu@1": {**ok, "latency_ms": {**ok["latency_ms"], "p50": 9.0}}, "ov-cpu@1": ok},
                runtime={"backend": "ov-cpu", "model_precision": "int8"})
    by = {g.gate: g for g in evaluate_gates(Gates(max_p50_ms={"ort-cpu": 5.0, "ov-cpu": 5.0, "ov-cpu-bf16": 5.0}),
                                            [final])}
    assert by["max_p50_ms.ov-cpu"].status == "pass" and by["max_p50_ms.ov-cpu"].value == 1.2
    for other in ("ort-cpu", "ov-cpu-bf16"):
        assert by[f"max_p50_ms.{other}"].status == "not evaluated"
        assert by[f"max_p50_ms.{other}"].detail == f"INT8 ships on ov-cpu, not {other}"


def test_failed_gate_exits_1_after_writing_the_report(cli, finished_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    (run / "report.md").unlink()
    d = tiny_recipe(tiny_data)
    d["gates"] = {"max_p50_ms": {"ort-cpu@1": 0.0001}}
    r = cli("optimize", write_recipe(tmp_path / "r.yaml", d), "--out", run, "--resume")
    assert r.exit_code == 1, r.output
    assert "gate max_p50_ms.ort-cpu@1: fail" in r.stdout
    assert (run / "report.md").is_file()  # the report is written before the exit


def test_resume_after_an_interrupted_stage_redoes_only_that_stage(finished_run, tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    recipe = parse(tiny_recipe(tiny_data), source="tiny.yaml")
    shutil.rmtree(run / "05-quantize")  # as if the run had been killed in quantize: the artifact never appeared
    state = json.loads((run / "pipeline.json").read_text())
    state["steps"]["05-quantize"] = {"status": "running", "hash": state["steps"]["05-quantize"]["hash"]}
    (run / "pipeline.json").write_text(json.dumps(state))
    ran = []
    for name in ("_run_first", "_run_prune", "_run_export", "_run_quantize", "_run_build", "_run_bench"):
        real = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name,
                            lambda *a, _real=real, _name=name, **k: (ran.append(_name), _real(*a, **k))[1])
    mtime = (run / "01-finetune" / "meta.json").stat().st_mtime
    result = pipeline.optimize(recipe, run, resume=True)
    # quantize reran and rewrote the same model file, so the bench that read it stays valid; the build that
    # was skipped (no TensorRT) is tried again on every resume, since the machine may have it now
    assert ran == ["_run_quantize", "_run_build"]
    assert (run / "01-finetune" / "meta.json").stat().st_mtime == mtime
    assert {r.step.name: r.status for r in result.steps}["02-prune"] == "reused"
    # a second --resume with nothing changed reuses everything that ran
    ran.clear()
    pipeline.optimize(recipe, run, resume=True)
    assert ran == ["_run_build"]
    ran.clear()
    pipeline.optimize(recipe, run, only=["bench"])
    assert ran == ["_run_bench"]


def test_changed_setting_reruns_that_stage_and_its_dependants(finished_run, tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    d = tiny_recipe(tiny_data)
    d["quantize"]["calib_method"] = "minmax"
    ran = []
    real = pipeline._run_quantize
    monkeypatch.setattr(pipeline, "_run_quantize", lambda *a, **k: (ran.append("quantize"), real(*a, **k))[1])
    monkeypatch.setattr(pipeline, "_run_first", lambda *a, **k: pytest.fail("finetune must be reused"))
    pipeline.optimize(parse(d, source="tiny.yaml"), run, resume=True)
    assert ran == ["quantize"]


def test_interrupted_finetune_leaves_nothing_resume_would_trust(tiny_data, tmp_path, monkeypatch):
    d = tiny_recipe(tiny_data)
    d["stages"] = ["finetune", "export"]
    for k in ("prune", "quantize", "build", "bench"):
        d.pop(k)
    d["gates"] = {}
    recipe = parse(d, source="tiny.yaml")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_run_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.optimize(recipe, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert state["steps"]["01-finetune"]["status"] == "done"
    assert state["steps"]["02-export"]["status"] == "running"  # never trusted by --resume
    assert not (tmp_path / "run" / "02-export").exists()


def test_dry_run_prints_the_plan(cli, tiny_data, tmp_path):
    r = cli("optimize", write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_data)), "--dry-run",
            "--set", "prune.target_macs=0.7")
    assert r.exit_code == 0, r.output
    assert "target_macs: 0.7" in r.stdout
    for step in ("01-finetune", "02-prune", "03-export-finetune", "04-export-prune", "05-quantize", "06-build",
                 "07-bench"):
        assert step in r.stdout
    assert not (tmp_path / "runs").exists()
    r = cli("optimize", tmp_path / "r.yaml", "--dry-run", "--only", "quantise")
    assert_one_line_error(r, "--only quantise: not a stage", "did you mean: quantize?")
    assert r.stdout == ""  # refused before the plan, not after printing it


@pytest.mark.parametrize("change, fragments", [
    ({"finetun": {}}, ["unknown field 'finetun'", "did you mean: finetune"]),
    ({"prune": {"target_mac": 0.5}}, ["unknown field prune.target_mac", "target_macs"]),
    ({"prune": {"target_macs": 1.5}}, ["prune:", "target_macs"]),
    ({"finetune": {"epochs": "ten"}}, ["epochs"]),
    ({"finetune": {"augment": {"hflp": True}}}, ["augment.hflp", "hflip"]),
    ({"quantize": {"calib_method": "entropyy"}}, ["quantize", "calib_method"]),
    ({"quantize": {"calib": "missing.json"}}, ["quantize.calib", "missing.json"]),
    ({"bench": {"backends": ["ort-cpuu"]}}, ["bench.backends", "ort-cpu"]),
    ({"bench": {"rounds": 1.5}}, ["bench.rounds", "integer"]),
    ({"gates": {"max_p50_ms": {"ort-cpu@x": 3}}}, ["gates.max_p50_ms", "ort-cpu@x"]),
    ({"gates": {"max_acc_drop": 1}}, ["gates.max_acc_drop", "max_accuracy_drop_pp"]),
    ({"stages": ["finetune", "quantize", "prune"]}, ["prune cannot come after quantize"]),
    ({"stages": ["prune"]}, ["must start with finetune"]),
    ({"stages": ["finetune", "export"]}, ["section prune: is given"]),
    ({"data": None}, ["data: is required"]),
    ({"decision": {"positive": ["bad"]}}, ["decision: name a rule", "target_recall"]),
    ({"decision": {"positive": [], "target_recall": 0.95}}, ["decision.positive must name"]),
    ({"decision": {"positive": ["bad"], "target_recal": 0.95}}, ["decision.target_recal", "target_recall"]),
    ({"decision": {"positive": ["bad"], "target_recall": 0.9, "review_budget": 0}}, ["decision.review_budget"]),
    ({"decision": None, "gates": {"max_recall_drop_pp": 1}}, ["gates.max_recall_drop_pp", "add a decision:"]),
])
def test_recipe_errors_name_the_field(tiny_data, change, fragments):
    d = tiny_recipe(tiny_data)
    d.update(change)
    with pytest.raises(ConfigError) as e:
        parse(d, source="r.yaml")
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_build_needs_the_model_it_builds_from(tiny_data):
    d = {k: v for k, v in tiny_recipe(tiny_data).items() if k not in ("prune", "export", "bench", "gates")}
    with pytest.raises(ConfigError, match="build.precision fp16 builds from the FP32 ONNX model: add export"):
        parse(d, source="r.yaml")
    d["build"] = {"precision": "int8"}
    with pytest.raises(ConfigError, match="quantize.target: tensorrt"):
        parse(d, source="r.yaml")
    d["quantize"]["target"] = "tensorrt"
    assert parse(d, source="r.yaml").stages == ["finetune", "quantize", "build"]


def test_cli_errors_are_one_line(cli, tiny_data, tmp_path):
    assert_one_line_error(cli("optimize", tmp_path / "nope.yaml"), "recipe not found")
    (tmp_path / "bad.yaml").write_text("finetune: [1, 2\n")
    assert_one_line_error(cli("optimize", tmp_path / "bad.yaml"), "not valid YAML")
    d = tiny_recipe(tiny_data)
    d["data"] = str(tmp_path / "no-data")
    assert_one_line_error(cli("optimize", write_recipe(tmp_path / "r.yaml", d), "--out", tmp_path / "run"),
                          "no-data", "does not exist")
    no_test = tmp_path / "no-test"
    shutil.copytree(tiny_data, no_test)
    shutil.rmtree(no_test / "test")
    d["data"] = str(no_test)
    assert_one_line_error(cli("optimize", write_recipe(tmp_path / "r.yaml", d), "--out", tmp_path / "run"),
                          "gates.max_accuracy_drop_pp needs a test/ split")
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "x").write_text("")
    d["data"] = str(tiny_data)
    assert_one_line_error(cli("optimize", write_recipe(tmp_path / "r.yaml", d), "--out", tmp_path / "run2"),
                          "--resume", "--force")
    assert_one_line_error(cli("optimize", write_recipe(tmp_path / "r.yaml", d), "--set", "prune.steps"),
                          "KEY=VALUE")
    d["decision"]["positive"] = ["bda"]  # checked against the data's classes before any stage runs
    assert_one_line_error(cli("optimize", write_recipe(tmp_path / "r.yaml", d), "--out", tmp_path / "run3"),
                          "decision.positive: 'bda' is not a class", "did you mean: bad")
    assert not (tmp_path / "run3").exists()


def test_demo_recipes_validate(tmp_path):
    from pathlib import Path

    (tmp_path / "mine.pth").write_bytes(b"")  # the import recipe's file must exist to validate; it is read later
    for path in sorted(Path("examples").glob("*.yaml")):
        if path.name.startswith("elpv-finetune"):
            continue  # fine-tuning configs for `edgeft finetune --config`, not recipes
        imported = path.name == "imported.yaml"
        r = load(path, overrides={"import": {"model": str(tmp_path / "mine.pth")}} if imported else None)
        assert r.stages[0] == ("import" if imported else r.plugin.first_stage)


def test_data_fingerprint_sees_a_changed_image(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    before = pipeline.data_fingerprint(data)
    assert pipeline.data_fingerprint(data) == before
    img = next((data / "train" / "good").glob("*.png"))
    img.write_bytes(img.read_bytes() + b"\0")  # same name, different content and size
    assert pipeline.data_fingerprint(data) != before


def test_plot_labels_stay_inside_the_plot():
    """The rightmost point's label ran past the SVG's right edge ('01-finetune to...' in report.html)."""
    import re

    from edgeft.optimize.charts import pareto_svg
    from edgeft.svg import LABEL_CHAR_PX
    from edgeft.optimize.rows import Row

    from edgeft.bench.harness import latency_stats

    bench = lambda ms: {"status": "ok", "latency_ms": latency_stats([ms, ms], 1)}  # noqa: E731
    from edgeft.metrics import classification_metrics

    acc = classification_metrics([0, 1], [0, 1], ["bad", "good"])
    rows = [Row("01-finetune", "finetune", "fine-tuned", "fp32", "done", accuracy=acc, quality=acc.accuracy,
                latency={"ort-cpu@1": bench(8.0), "torch@1": bench(35.0)}),
            Row("05-quantize", "quantize", "INT8", "int8", "done", accuracy=acc, quality=acc.accuracy,
                latency={"ort-cpu@1": bench(2.5)})]
    width = 640
    svg = pareto_svg(rows, width=width)
    labels = re.findall(r'<text x="([\d.]+)" y="[\d.]+"( text-anchor="end")?>(\d\d-[^<]+)</text>', svg)
    assert len(labels) == 3
    for x, end, text in labels:
        left, right = (float(x) - len(text) * LABEL_CHAR_PX, float(x)) if end else \
            (float(x), float(x) + len(text) * LABEL_CHAR_PX)
        assert 0 <= left and right <= width, (text, left, right)
    assert any(end and text == "01-finetune torch" for _, end, text in labels)


def test_the_custom_recipe_runs_end_to_end_on_your_own_images(cli, tmp_path):
    """The documented own-images path, `edgeft optimize examples/custom.yaml --set data=DIR`, on a 3-class set of
    our making, made small with --set (it once stopped at the pruned model's export: see test_export_quantize)."""
    from tests.conftest import write_folder

    data = write_folder(tmp_path / "parts", {"train": 24, "val": 8, "test": 8}, classes=("crack", "ok", "scratch"),
                        channels=3)
    sets = ["data=" + str(data), "finetune.model=test_efficientnet", "finetune.weights=none", "finetune.mode=full",
            "finetune.image_size=32", "finetune.epochs=2", "finetune.batch_size=8", "prune.round_to=4",
            "prune.steps=5", "prune.recover_epochs=1", "quantize.calib_images=16", "quantize.auto_exclude=false",
            "bench.batches=[1]", "bench.rounds=1", "bench.duration_s=0.1", "bench.warmup_s=0.05", "bench.memory=false"]
    r = cli("optimize", "examples/custom.yaml", "--out", tmp_path / "run", *[a for s in sets for a in ("--set", s)])
    assert r.exit_code in (0, 1), r.output  # 1: a gate failed on this tiny model, after the report was written
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())["steps"]
    assert all(state[s]["status"] == "done" for s in ("01-finetune", "02-prune", "03-export-finetune",
                                                       "04-export-prune", "05-quantize", "07-bench")), state
    assert (tmp_path / "run" / "report.html").is_file()


def test_an_accuracy_gate_says_what_one_image_is_worth_and_can_ask_for_significance():
    """96 test images: the INT8 model got one image wrong that the fine-tuned one got right (100% -> 98.96%). The 1-point
    gate fails and says it is one image of 96 (1.04 pp); with accuracy_significance it passes, since one discordant
    image is no evidence (McNemar p = 0.5), and a model worse on 9 images and better on none fails it (p = 0.002)."""
    import dataclasses

    from edgeft.metrics import classification_metrics
    from edgeft.optimize.gates import evaluate_gates
    from edgeft.optimize.recipe import Gates
    from edgeft.optimize.rows import Row

    labels = [0] * 48 + [1] * 48

    def row(step, wrong):
        preds = [1 - y if i in wrong else y for i, y in enumerate(labels)]
        m = classification_metrics(labels, preds, ["bad", "good"])
        m = dataclasses.replace(m, correct=[int(p == y) for p, y in zip(preds, labels)])
        return Row(step, "quantize", step, "FP32", "done", accuracy=m, split="test")

    base, one, nine = row("01-finetune", set()), row("05-quantize", {3}), row("05-quantize", set(range(9)))
    v = evaluate_gates(Gates(max_accuracy_drop_pp=1.0), [base, one])[0]
    assert v.status == "fail" and v.value == 1.04
    assert "a drop of 1 image(s) of 96 (one image = 1.04 pp); worse on 1, better on 0 (McNemar one-sided p = 0.5)" \
        in v.detail
    lenient = Gates(max_accuracy_drop_pp=1.0, accuracy_significance=0.05)
    assert evaluate_gates(lenient, [base, one])[0].status == "pass"
    v = evaluate_gates(lenient, [base, nine])[0]
    assert v.status == "fail" and "p = 0.00195" in v.detail


def test_accuracy_significance_is_refused_without_the_gate_or_outside_0_1(tiny_data):
    from edgeft.errors import ConfigError

    d = tiny_recipe(tiny_data)
    d["gates"]["accuracy_significance"] = 1.5
    with pytest.raises(ConfigError, match="gates.accuracy_significance is a significance level in"):
        parse(d, source="r.yaml")
    d["gates"] = {"accuracy_significance": 0.05}
    with pytest.raises(ConfigError, match="qualifies gates.max_accuracy_drop_pp"):
        parse(d, source="r.yaml")


def test_the_classifier_report_shows_the_escapes_and_false_rejects_with_their_scores(finished_run, tiny_data):
    """The gallery holds exactly the final model's escapes (defective, passed; lowest score first) and false rejects
    (good, rejected; highest first) at its own policy, scored as the camera scores them, with class activation maps
    from its PyTorch ancestor and their cost stated."""
    import numpy as np

    from edgeft.data.imagefolder import find_splits, scan_split
    from edgeft.images import read_image
    from edgeft.runtime import Predictor
    from edgeft.tasks.classify.gallery import picks

    run, _ = finished_run
    files = scan_split(find_splits(tiny_data)["test"])
    with Predictor(run / "05-quantize", backend="ort-cpu") as p:
        preds = [p.predict(read_image(f))[0] for f in files.paths]
    positive = np.array([files.classes[y] == "bad" for y in files.labels])
    chosen = picks(np.array([q.not_ok for q in preds]), positive, [q.decision for q in preds])
    md = (run / "report.md").read_text()
    assert "## Escapes and false rejects on test" in md and "Class activation maps from 02-prune" in md
    shown = [line for line in md.splitlines() if line.startswith("![") and "gallery/" in line]
    assert len(shown) == len(chosen) == len(list((run / "gallery").glob("*.png")))
    for line, (i, group) in zip(shown, chosen):
        assert f"{files.paths[i].parent.name}/{files.paths[i].name}: not OK {preds[i].not_ok:.3f}" in line
        assert (group == "escapes") == (positive[i] and preds[i].decision == "pass")
    assert picks(np.array([0.9, 0.2, 0.1, 0.8, 0.7]), np.array([1, 1, 1, 0, 0], bool),
                 ["reject", "pass", "pass", "reject", "reject"]) == [(2, "escapes"), (1, "escapes"),
                                                                    (3, "false rejects"), (4, "false rejects")]


def test_a_classifier_run_without_search_ships_where_val_chose(finished_run, tiny_data, tmp_path):
    """The ship step on a classifier: the INT8 and pruned FP32 models judged on val on each runtime (accuracy and the
    decision gates at each one's own threshold there), the shipped one measured on test where it ships."""
    import shutil

    from edgeft import artifact as art
    from edgeft.data import load_split
    from edgeft.evaluate import evaluate
    from edgeft.optimize.rows import load_choice

    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    d = tiny_recipe(tiny_data)
    d["ship"] = {"runtimes": ["ort-cpu", "ov-cpu"], "latency_rounds": 3}
    d["stages"] = ["finetune", "prune", "export", "quantize", "build", "ship"]  # the ship step times them itself
    del d["bench"], d["gates"]["max_p50_ms"]
    result = pipeline.optimize(parse(d, source="tiny.yaml"), run, resume=True)
    assert [(r.step.name, r.status) for r in result.steps][-1] == ("07-ship", "done")
    doc = load_choice(run / "07-ship")
    assert doc["base"] == "03-export-finetune" and {c["step"] for c in doc["choices"]} == {"05-quantize",
                                                                                         "04-export-prune"}
    assert all(c["quality_name"] == "accuracy" and c["policy"] for c in doc["choices"])
    chosen = next(c for c in doc["choices"] if c["key"] == doc["chosen"])
    a = art.load(run / "07-ship")
    assert a.meta.extra["runtime"]["backend"] == chosen["runtime"]
    test = load_split(tiny_data, "test", a.meta.input, classes=a.meta.class_names)
    assert a.meta.metrics["test"]["accuracy"] == evaluate(a, test, tta_views=1, backend=chosen["runtime"]).accuracy
    rows = {r.step: r for r in result.rows}
    assert rows["07-ship"].precision == f"{chosen['precision'].upper()} on {chosen['runtime']}"
    assert rows["07-ship"].macs == rows["02-prune"].macs  # the chosen model's own count
    assert {g.model for g in result.gates if g.status == "pass"} == {"07-ship"}
