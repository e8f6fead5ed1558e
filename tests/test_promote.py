"""The loop's last step: a retrained model is judged against the deployed one on the frozen test split and the new
parts, promoted into the station's model directory only when the rule holds, and rolled back with one command."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, write_folder


@pytest.fixture(scope="module")
def loop(tiny_onnx, tmp_path_factory) -> dict[str, Path]:
    """A deployed model (the tiny random-weight ONNX model with a policy chosen on val), data with a new-test slice,
    and a candidate made the loop's way: fine-tuned from the deployed model's weights, exported, decided."""
    from click.testing import CliRunner

    from edgeft.cli import cli as entry

    root = tmp_path_factory.mktemp("loop")
    data = write_folder(root / "data", {"train": 24, "val": 10, "test": 10}, seed=11)
    write_folder(root / "data", {"new-test": 10}, seed=12)
    deployed = root / "deployed"
    shutil.copytree(tiny_onnx.path, deployed)
    run = CliRunner()

    def ok(*args):
        r = run.invoke(entry, ["-q", *map(str, args)], catch_exceptions=False)
        assert r.exit_code == 0, r.output

    ok("decide", deployed, "--data", data, "--positive", "bad", "--target-recall", "0.99")
    ok("finetune", "--from", deployed, "--data", data, "--out", root / "next", "--epochs", "4", "--lr", "3e-3",
       "--threads", "2")
    ok("export", root / "next", "--out", root / "candidate", "--data", data, "--dynamic-batch")
    ok("decide", root / "candidate", "--data", data, "--positive", "bad", "--target-recall", "0.99")
    return {"root": root, "data": data, "deployed": deployed, "candidate": root / "candidate"}


def sha(path: Path) -> str:
    return json.loads((path / "meta.json").read_text())["model_sha256"]


def test_a_better_candidate_is_promoted_into_the_model_directory_and_rolled_back(cli, loop, tmp_path):
    from edgeft.station.swap import model_hash_at

    models, report = tmp_path / "models", tmp_path / "report"
    r = cli("promote", loop["candidate"], "--deployed", loop["deployed"], "--data", loop["data"], "--into", models,
            "--report", report, "--no-latency")
    assert r.exit_code == 0, r.output
    assert "promotion: PROMOTE (exit 0)" in r.stdout
    doc = json.loads((report / "promotion.json").read_text())
    assert doc["verdict"] == "promote" and doc["exit_code"] == 0 and doc["latency"] is None
    assert all(b["status"] == "met" for b in doc["bounds"])
    new = next(s for s in doc["slices"] if s["name"] == "new-test")
    assert new["n_defective"] == 10 and new["n_good"] == 10
    assert new["candidate"]["false_reject"] < new["deployed"]["false_reject"]
    assert new["changes"]["false_reject"]["high"] < 0  # the whole interval: fewer false rejects
    assert len(new["flips"]["false_reject_now_passed"]) == round(-new["changes"]["false_reject"]["value"] * 10) + \
        len(new["flips"]["passed_now_false_reject"])
    md = (report / "promotion.md").read_text()
    assert "# Promotion: PROMOTE" in md and "new-test" in md and "False rejects now passed" in md
    assert "- note: test: recall change >= -3 pp (max_recall_drop_pp): 3 pp of 10 defective parts" in md
    # the deployed model is kept as v0001, the candidate is v0002, and the station's watched link serves it
    assert sha(models / "v0001") == sha(loop["deployed"]) and sha(models / "v0002") == sha(loop["candidate"])
    assert (models / "current").is_symlink() and model_hash_at(models / "current") == sha(loop["candidate"])
    shipped = json.loads((models / "v0002" / "meta.json").read_text())["extra"]["decision"]
    assert shipped["reject_at"] == pytest.approx(doc["thresholds"]["candidate"])
    running = json.loads((loop["deployed"] / "meta.json").read_text())["extra"]["decision"]
    assert doc["thresholds"]["deployed"] == pytest.approx(running["reject_at"])  # judged as it runs today
    # a station watching models/current swaps to what the link points at: the rollback's model, between two frames
    from edgeft.runtime import Predictor
    from edgeft.station.swap import ModelSlot

    slot = ModelSlot(Predictor(models / "current"), lambda p: Predictor(p), models / "current", poll_s=0.05)
    slot.watch()
    try:
        r = cli("rollback", models, "--reason", "scratches missed on line 2")
        assert r.exit_code == 0 and "current -> v0001 (was v0002)" in r.stdout
        deadline = time.time() + 30
        while time.time() < deadline and slot._next is None:
            time.sleep(0.02)
        slot.swap_if_due()
        assert slot.swaps == 1 and slot.current.model_hash == sha(loop["deployed"])[:12]
    finally:
        slot.close()
    assert model_hash_at(models / "current") == sha(loop["deployed"])
    events = [json.loads(x) for x in (models / "history.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["adopt", "promote", "rollback"]
    assert events[-1]["reason"] == "scratches missed on line 2"
    assert_one_line_error(cli("rollback", models), "the oldest version")
    assert cli("rollback", models, "--to", "2").exit_code == 0 and model_hash_at(models / "current") == \
        sha(loop["candidate"])


def test_a_worse_candidate_is_kept_out_and_nothing_is_installed(cli, loop, tmp_path):
    models, report = tmp_path / "models", tmp_path / "report"
    r = cli("promote", loop["deployed"], "--deployed", loop["candidate"], "--data", loop["data"], "--into", models,
            "--report", report, "--no-latency")
    assert r.exit_code == 1, r.output
    doc = json.loads((report / "promotion.json").read_text())
    assert doc["verdict"] == "keep" and doc["installed"] is None
    assert any(b["status"] == "missed" for b in doc["bounds"]) and "missed:" in doc["reason"]
    assert not models.exists()


def test_a_line_of_two_products_is_compared_at_each_product_s_operating_point(cli, loop, tmp_path):
    """The deployed model decided per product (products.csv in the data, an also-folder with its own): the candidate
    gets a point per product on today's val, and every slice's parts are decided at their product's point (the
    deployed model's points set where no single threshold could imitate them: a rejects everything, b nothing)."""
    from edgeft import artifact
    from edgeft.decision import read_policy

    data, deployed, candidate = tmp_path / "data", tmp_path / "deployed", tmp_path / "candidate"
    shutil.copytree(loop["data"], data)
    (data / "products.csv").write_text("pattern,product\n*_00[0-4].png,a\n*,b\n")  # half of each class is a
    golden = tmp_path / "golden"
    shutil.copytree(loop["data"] / "test", golden)
    (golden / "products.csv").write_text("pattern,product\n*,b\n")
    shutil.copytree(loop["deployed"], deployed)
    shutil.copytree(loop["candidate"], candidate)
    assert cli("decide", deployed, "--data", data, "--positive", "bad", "--target-recall", "0.9",
               "--by-product").exit_code == 0
    d = read_policy(artifact.load(deployed).meta.extra).to_dict()
    d["products"]["a"].update(pass_below=0.0, reject_at=0.0)
    d["products"]["b"].update(pass_below=1.01, reject_at=1.01)
    artifact.update_metrics(artifact.load(deployed), {}, extra={"decision": d})
    r = cli("promote", candidate, "--deployed", deployed, "--data", data, "--report", tmp_path / "report", "--also",
            f"golden={golden}", "--no-latency")
    assert r.exit_code in (0, 1, 3), r.output
    doc = json.loads((tmp_path / "report" / "promotion.json").read_text())
    dep = {s["name"]: s["deployed"] for s in doc["slices"]}
    assert [(dep[k]["recall"], dep[k]["false_reject"]) for k in ("test", "new-test", "golden")] == \
        [(0.5, 0.5), (0.5, 0.5), (0.0, 0.0)]
    assert doc["thresholds"]["deployed (a)"] == 0.0 and doc["thresholds"]["deployed (b)"] == 1.01
    assert {"candidate (a)", "candidate (b)"} <= set(doc["thresholds"]) and "per product" in doc["decision_rule"]
    assert sorted(doc["candidate_policy"]["products"]) == ["a", "b"]
    assert "candidate (b)" in (tmp_path / "report" / "promotion.md").read_text()


def test_latency_is_judged_by_the_paired_gate(cli, loop, tmp_path):
    rule = tmp_path / "rule.yaml"
    rule.write_text("promote:\n  max_latency_regression: 1.0\n  latency_time_cap_s: 30\n")
    r = cli("promote", loop["candidate"], "--deployed", loop["deployed"], "--data", loop["data"], "--rule", rule,
            "--report", tmp_path / "report")
    assert r.exit_code == 0, r.output
    lat = json.loads((tmp_path / "report" / "promotion.json").read_text())["latency"]
    assert lat["verdict"] == "pass" and lat["rounds"] >= 15 and lat["backend"] == "ort-cpu"
    assert lat["interval"][0] <= lat["ratio"] <= lat["interval"][1] < 2.0


def write_rule(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("breakage, fragments", [
    ("no new slice", ["has no new-test/ split", "edgeft data collect"]),
    ("no defective new parts", ["new-test has no defective parts"]),
    ("other classes", ["are not the deployed model's"]),
    ("other contract", ["input contract differs from the deployed model's in size"]),
    ("unknown metric", ["unknown field promote.new-test.max_map_drop"]),
    ("into serves another", ["serves another model"]),
])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(cli, loop, tmp_path, breakage, fragments):
    data = tmp_path / "data"
    shutil.copytree(loop["data"], data)
    candidate, deployed = loop["candidate"], loop["deployed"]
    args = []
    models = tmp_path / "models"
    if breakage == "no new slice":
        shutil.rmtree(data / "new-test")
    elif breakage == "no defective new parts":
        shutil.rmtree(data / "new-test" / "bad")
    elif breakage == "other classes":
        candidate = tmp_path / "other"
        shutil.copytree(loop["candidate"], candidate)
        meta = json.loads((candidate / "meta.json").read_text())
        meta["class_names"] = ["crack", "ok"]
        (candidate / "meta.json").write_text(json.dumps(meta))
    elif breakage == "other contract":
        candidate = tmp_path / "other"
        shutil.copytree(loop["candidate"], candidate)
        meta = json.loads((candidate / "meta.json").read_text())
        meta["input"]["size"] = [48, 48]
        (candidate / "meta.json").write_text(json.dumps(meta))
    elif breakage == "unknown metric":
        args = ["--rule", write_rule(tmp_path / "r.yaml", "promote:\n  new-test:\n    max_map_drop: 1\n")]
    elif breakage == "into serves another":
        models.mkdir()
        shutil.copytree(loop["candidate"], models / "v0001")
        (models / "current").symlink_to("v0001")
    before = sorted(p.name for p in models.iterdir()) if models.exists() else None
    r = cli("promote", candidate, "--deployed", deployed, "--data", data, "--into", models, "--report",
            tmp_path / "report", "--no-latency", *args)
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "report").exists()
    assert (sorted(p.name for p in models.iterdir()) if models.exists() else None) == before


def test_a_bound_is_met_only_when_its_whole_interval_clears_it():
    """met: the interval on the good side; missed: the measured change on the bad side; inconclusive: between, with
    about how many more parts would narrow the interval past the bound (half-width ~ 1/sqrt(n))."""
    from edgeft.promote.compare import Change, judge, verdict_of
    from edgeft.promote.rule import parse

    keep_recall, drop_fr = parse({"new-test": {"min_false_reject_drop_pp": 2, "max_recall_drop_pp": 1}}).bounds()[2:]
    assert drop_fr.field == "min_false_reject_drop_pp" and drop_fr.value == pytest.approx(-0.02)
    assert judge(drop_fr, Change(-0.10, -0.15, -0.05), 100, "good").status == "met"
    assert judge(drop_fr, Change(-0.01, -0.05, 0.03), 100, "good").status == "missed"
    unsure = judge(drop_fr, Change(-0.06, -0.12, 0.0), 100, "good")
    # half-width 0.06 on the bad side, 0.04 of room to the bound: n * (0.06 / 0.04)^2 = 225 parts, 125 more
    assert unsure.status == "inconclusive" and unsure.more_parts == 125 and unsure.of_class == "good"
    assert keep_recall.value == pytest.approx(-0.01)
    assert judge(keep_recall, Change(0.0, 0.0, 0.0), 50, "defective").status == "met"
    assert verdict_of([judge(keep_recall, Change(0.0, 0.0, 0.0), 50, "defective"), unsure], None)[0] == "inconclusive"
    at_bound = judge(keep_recall, Change(-0.0099, -0.08, 0.06), 50, "defective")  # a hair inside its bound
    assert at_bound.status == "inconclusive" and at_bound.at_bound and at_bound.more_parts is None
    assert "sits at the bound" in verdict_of([at_bound], None)[1]
    assert verdict_of([judge(keep_recall, Change(0.0, 0.0, 0.0), 50, "defective")],
                      {"verdict": "regression", "reason": "slower"})[0] == "keep"
    no_gain = parse({"new-test": {"min_recall_gain_pp": 0}}).bounds()[-1]
    assert judge(no_gain, Change(0.0, 0.0, 0.0), 50, "defective").status == "missed"  # no change is no gain
    floor = parse({"new-test": {"min_recall": 0.9}}).bounds()[-1]  # the candidate's own recall, whatever ran before
    assert floor.absolute and "candidate's recall >= 90%" in floor.text()
    assert judge(floor, Change(0.957, 0.902, 0.981), 115, "defective").status == "met"
    assert judge(floor, Change(0.88, 0.81, 0.93), 115, "defective").status == "missed"
    assert judge(floor, Change(0.93, 0.87, 0.96), 115, "defective").status == "inconclusive"


def test_paired_changes_resample_the_same_parts_for_both_models():
    from edgeft.promote.compare import paired_changes

    y = np.array([True] * 20 + [False] * 30)
    dep = np.where(y, "reject", "reject")  # catches all, rejects every good part
    cand = np.where(y, "reject", "pass")  # catches all, rejects none
    score_dep = np.r_[np.linspace(0.5, 1, 20), np.linspace(0.4, 0.9, 30)]
    score_cand = np.r_[np.linspace(0.6, 1, 20), np.linspace(0.0, 0.5, 30)]
    c = paired_changes(y, (dep, score_dep), (cand, score_cand), resamples=500, level=0.95, seed=0)
    assert c["recall"].value == 0 and c["recall"].low == 0 == c["recall"].high  # the same parts: no noise at all
    assert c["false_reject"].value == -1.0 and c["false_reject"].high == -1.0
    assert c["auroc"].value > 0 and c["auroc"].low > 0


def test_the_rule_is_checked_before_anything_runs():
    from edgeft.errors import ConfigError
    from edgeft.promote.rule import parse

    for bad, fragment in [({"new_test": {}}, "spelled new-test"), ({"tset": {}}, "did you mean: test"),
                          ({"test": {"max_recall_drop_pp": -1}}, "must be >= 0"), ({"level": 2}, "between 0.5 and 1"),
                          ({"new-test": {"min_recall": 95}}, "a share between 0 and 1"),
                          ({"max_latency_regression": 0}, "a fraction like 0.10"),
                          ({"test": {}, "new-test": {}, "max_latency_regression": None}, "states no bound")]:
        with pytest.raises(ConfigError, match=fragment):
            parse(bad)


def test_a_bound_narrower_than_its_slice_can_resolve_is_noted():
    """ELPV's frozen mono test (55 defective, 106 good): 3 pp is 1.6 defective parts, met only if none changes
    decision; 10 pp (5.5 parts) and a slice of 1,000 are fine."""
    from edgeft.promote.compare import resolution_notes
    from edgeft.promote.rule import PromoteRule, SliceBounds

    rule = PromoteRule(test=SliceBounds(max_recall_drop_pp=3, max_false_reject_rise_pp=10),
                       new_test=SliceBounds(max_recall_drop_pp=3))
    notes = resolution_notes(rule.bounds(), {"test": (55, 106), "new-test": (1000, 1000)})
    assert len(notes) == 1 and "3 pp of 55 defective parts is 1.6 part(s)" in notes[0]
    assert "at most 0 of them" in notes[0]
    assert "max_auroc_drop" in notes[0]


def recipe_file(path: Path, data: Path, deployed: Path | None, extra: str = "") -> Path:
    text = (f"name: retrain\ndata: {data}\nthreads: 2\n" + (f"from: {deployed}\n" if deployed else "") +
            "finetune:\n  epochs: 4\n  lr: 0.003\n  mode: full\nexport:\n  opset: 17\n"
            "decision:\n  positive: [bad]\n  target_recall: 0.99\n" + extra)
    path.write_text(text)
    return path


def test_a_recipe_retrains_the_deployed_model_and_promotes_the_result(cli, loop, tmp_path):
    """`edgeft optimize` with from: fine-tunes the deployed model again (its lineage says so), exports and decides the
    result like any run, and its promote: section judges it and installs it into the model directory."""
    from edgeft import artifact

    models = tmp_path / "models"
    recipe = recipe_file(tmp_path / "r.yaml", loop["data"], None,
                         f"promote:\n  max_latency_regression: null\n  into: {models}\n")
    run = tmp_path / "run"
    r = cli("optimize", recipe, "--from", loop["deployed"], "--out", run)
    assert r.exit_code == 0, r.output
    assert "promotion: PROMOTE (exit 0)" in r.stdout
    first = artifact.load(run / "01-finetune")
    assert first.meta.lineage[-1]["params"]["from"] == str(loop["deployed"])
    assert first.meta.lineage[-1]["params"]["retrain"]["epochs"] == 4
    doc = json.loads((run / "promotion" / "promotion.json").read_text())
    assert doc["candidate"]["path"] == str(run / "02-export") and doc["verdict"] == "promote"
    assert sha(models / "v0002") == sha(run / "02-export")


@pytest.mark.parametrize("extra, deployed, fragments", [
    ("promote: {}\n", False, ["promote: judges the run's model against the deployed one", "from:"]),
    ("", "with weights", ["unknown field finetune.weights", "takes only epochs, lr, mode, threads and seed"]),
    ("", "other model", ["finetune.model resnet18 is not the deployed model's architecture"]),
    ("", "by product", ["decision.by_product", "val split names no products", "products.csv"]),
])
def test_a_retraining_recipe_is_checked_before_anything_runs(cli, loop, tmp_path, extra, deployed, fragments):
    recipe = recipe_file(tmp_path / "r.yaml", loop["data"], loop["deployed"] if deployed else None, extra)
    if deployed == "with weights":
        recipe.write_text(recipe.read_text().replace("  epochs: 4\n", "  epochs: 4\n  weights: auto\n"))
    elif deployed == "other model":
        recipe.write_text(recipe.read_text().replace("  epochs: 4\n", "  epochs: 4\n  model: resnet18\n"))
    elif deployed == "by product":
        recipe.write_text(recipe.read_text().replace("  target_recall: 0.99\n",
                                                      "  target_recall: 0.99\n  by_product: true\n"))
    assert_one_line_error(cli("optimize", recipe, "--out", tmp_path / "run"), *fragments)
    assert not (tmp_path / "run").exists()
