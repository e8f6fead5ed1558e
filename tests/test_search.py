"""``edgeft optimize`` with a ``search:`` section: the fastest candidate that meets every gate on val ships, the test
split is read only after the choice, a constraint that cannot be met is explained, and bad spaces are refused."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from edgeft.errors import ConfigError
from edgeft.optimize import pipeline
from edgeft.optimize import search as srch
from edgeft.optimize.recipe import parse
from edgeft.optimize.gates import GateVerdict
from edgeft.optimize.report import search_lines
from tests.conftest import assert_one_line_error, write_folder
from tests.test_optimize import tiny_recipe, write_recipe


def search_recipe(data, **search) -> dict:
    d = tiny_recipe(data)
    d.pop("build")
    d["prune"].update(recover_epochs=2, recover_patience=1)
    d["search"] = {"target_macs": [0.4, 0.7], "method": ["ptq"], "budget_min": 30, "latency_rounds": 2, **search}
    return d


@pytest.fixture(scope="module")
def sealed_data(tmp_path_factory):
    """A data folder whose test images are not images until the seal lifts: any read of test during the search
    fails the run ("no readable images in split 'test'"); ``restore()`` puts the real files back."""
    # test has 6 images a class, val 8: a number measured on test cannot pass for one measured on val
    root = write_folder(tmp_path_factory.mktemp("sealed") / "data", {"train": 24, "val": 8, "test": 6})
    originals = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (root / "test").rglob("*.png")}

    def scramble():  # with fixed times, so a run on scrambled data can be resumed on scrambled data
        for p, (_, t) in originals.items():
            p.write_bytes(b"not an image until the search has chosen")
            os.utime(p, ns=(t + 1, t + 1))

    def restore():  # the same bytes and times: the data's fingerprint is the one the run started with
        for p, (b, t) in originals.items():
            p.write_bytes(b)
            os.utime(p, ns=(t, t))
    return root, scramble, restore


@pytest.fixture(scope="module")
def searched(sealed_data, tmp_path_factory):
    """One search run whose test split is unreadable until ``measure_holdout`` (the end) is called."""
    data, scramble, restore = sealed_data
    run = tmp_path_factory.mktemp("search") / "run"
    seen = {"holdout_calls": 0}
    real = pipeline.measure_holdout

    def holdout(*a, **k):
        seen["holdout_calls"] += 1
        seen["search_done"] = srch.load_result(run) is not None and "result" in srch.load_result(run)
        restore()
        return real(*a, **k)

    scramble()
    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline, "measure_holdout", holdout)
    try:
        result = pipeline.optimize(parse(search_recipe(data), source="search.yaml"), run)
    finally:
        mp.undo()
        restore()
    return run, result, seen


def test_test_split_is_read_only_after_the_search_has_chosen(searched):
    run, result, seen = searched
    assert seen == {"holdout_calls": 1, "search_done": True}  # the run got through every stage with test unreadable
    rows = {r.step: r for r in result.rows}
    for step in ("01-finetune", "05-quantize"):  # then judged on test
        assert rows[step].split == "test" and rows[step].accuracy.n == 12
    assert {g.status for g in result.gates} == {"pass"}
    doc = srch.load_result(run)["result"]
    for c in doc["candidates"]:  # every candidate's numbers are val numbers
        assert c["val"] is None or c["val"]["n"] == 16


def test_the_fastest_passing_candidate_ships_and_the_report_lists_every_candidate(searched):
    run, result, _ = searched
    doc = srch.load_result(run)["result"]
    by_key = {c["key"]: c for c in doc["candidates"]}
    assert doc["passed"] and doc["chosen"] == "macs0.40-ptq@ort-cpu"  # the fewest MACs passed: nothing slower paid for
    assert by_key["macs0.70-ptq@ort-cpu"]["status"] == "not run"
    assert "no faster than macs0.40-ptq@ort-cpu" in by_key["macs0.70-ptq@ort-cpu"]["reason"]
    shipped = json.loads((run / "05-quantize" / "meta.json").read_text())
    made = json.loads((run / "search" / "macs0.40-ptq" / "quantize" / "meta.json").read_text())
    assert shipped["model_sha256"] == made["model_sha256"]
    assert by_key["macs0.40-ptq@ort-cpu"]["macs_ratio"] < by_key["macs0.70-ptq@ort-cpu"]["macs_ratio"] <= 0.7
    assert len(by_key["macs0.40-ptq@ort-cpu"]["speedups"]) == 2  # the candidate timed in interleaved rounds
    assert shipped["extra"]["runtime"]["backend"] == "ort-cpu"  # what the camera's auto runs
    md = (run / "report.md").read_text()
    assert "## Search (on val)" in md and "macs0.70-ptq@ort-cpu" in md and "**shipped** pass" in md
    assert "test split sealed" in md and (run / "search.svg").read_text().count("(shipped)") == 1
    # Markdown and HTML come from the same data: the shipped mark is emphasis in both, and no Markdown reaches the HTML
    page = (run / "report.html").read_text()
    assert "<strong>shipped</strong> pass" in page and "**" not in page


def fake_space(monkeypatch, outcomes):
    """Candidates whose val accuracy and latency are given (key -> (accuracy, p50 ms)), to test the choice alone;
    the pruning schedule, the fine-tuned model's val metrics and the gates are the real ones. Returns the models
    paid for, in order."""
    ran = []

    def run_candidate(recipe, c, finetuned, snapshot, root):
        ran.append(c.model)
        return root

    def measure(recipe, group, model_dir, baseline_onnx):
        for c in group:
            acc, p50 = outcomes[c.key]
            c.val = {"accuracy": acc, "balanced_accuracy": acc, "n": 16, "per_class": {},
                     "confusion": [[8, 0], [0, 8]]}
            c.p50_ms, c.baseline_p50_ms, c.speedups = p50, 2.0, [2.0 / p50] * 2
    monkeypatch.setattr(srch, "_run_candidate", run_candidate)
    monkeypatch.setattr(srch, "_measure", measure)
    monkeypatch.setattr(srch, "_ship", lambda c, root: None)
    return ran


def plain_recipe(data, gates, **search):
    d = search_recipe(data, **search)
    d.pop("decision")
    d["gates"] = gates
    return parse(d, source="s.yaml")


@pytest.fixture(scope="module")
def finetuned(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("ft") / "run"
    d = {k: v for k, v in search_recipe(tiny_data).items() if k in ("name", "data", "threads", "finetune")}
    pipeline.optimize(parse(d, source="ft.yaml"), run)
    return run / "01-finetune"


def fresh_run(tmp_path, finetuned):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(finetuned, run / "01-finetune")
    return run


def test_a_faster_candidate_that_misses_a_gate_is_passed_over_for_the_next_fastest(tiny_data, finetuned, tmp_path,
                                                                                     monkeypatch):
    base = srch._baseline  # the fine-tuned model's real val accuracy is the reference
    recipe = plain_recipe(tiny_data, {"max_accuracy_drop_pp": 1.0, "max_p50_ms": {"ort-cpu": 1.5}},
                          target_macs=[0.4, 0.55, 0.7])
    run = fresh_run(tmp_path, finetuned)
    ref = base(recipe, finetuned, run / "search")[0]["accuracy"]
    ran = fake_space(monkeypatch, {"macs0.40-ptq@ort-cpu": (ref - 0.05, 0.9), "macs0.55-ptq@ort-cpu": (ref, 1.2),
                                   "macs0.70-ptq@ort-cpu": (ref + 0.05, 1.4)})
    res = srch.search(recipe, run, run / "01-finetune")
    assert ran == ["macs0.40-ptq", "macs0.55-ptq"] and res.chosen.key == "macs0.55-ptq@ort-cpu" and res.passed
    missed = next(v for v in res.candidates[0].verdicts if v["status"] == "fail")
    assert missed["gate"] == "max_accuracy_drop_pp" and missed["value"] == pytest.approx(5.0)


def test_a_constraint_no_candidate_meets_is_explained_and_the_best_compromise_ships(tiny_data, finetuned, tmp_path,
                                                                                     monkeypatch):
    recipe = plain_recipe(tiny_data, {"max_accuracy_drop_pp": 1.0, "max_p50_ms": {"ort-cpu": 0.5}},
                          target_macs=[0.4, 0.7])
    run = fresh_run(tmp_path, finetuned)
    ref = srch._baseline(recipe, finetuned, run / "search")[0]["accuracy"]
    ran = fake_space(monkeypatch, {"macs0.40-ptq@ort-cpu": (ref - 0.1, 0.9), "macs0.70-ptq@ort-cpu": (ref, 1.4)})
    res = srch.search(recipe, run, run / "01-finetune")
    # 0.4 misses accuracy (and latency): 0.7 is tried; it misses latency, and nothing slower could help
    assert ran == ["macs0.40-ptq", "macs0.70-ptq"] and not res.passed
    assert res.chosen.key == "macs0.70-ptq@ort-cpu"  # worst miss 1.8x its latency limit, against 0.4's 10 pp over 1
    lines = [GateVerdict.from_dict(v).line() for v in res.chosen.verdicts]
    assert any(line.startswith("max_p50_ms.ort-cpu: missed by 0.9 ms") and "try: add smaller ratios" in line
               for line in lines)
    assert "the best compromise" in " ".join(search_lines({**res.to_dict()}))


def test_resume_reuses_finished_candidates_and_rejudges_them_when_the_gates_change(searched, tmp_path, monkeypatch,
                                                                                   sealed_data):
    run0, _, _ = searched
    data, scramble, restore = sealed_data
    run = tmp_path / "run"
    shutil.copytree(run0, run)

    def must_not_run(*a, **k):
        raise AssertionError("a finished candidate was paid for again")
    monkeypatch.setattr(srch, "_run_candidate", must_not_run)
    real = pipeline.measure_holdout
    monkeypatch.setattr(pipeline, "measure_holdout", lambda *a, **k: (restore(), real(*a, **k)))
    d = search_recipe(data)
    d["gates"]["max_accuracy_drop_pp"] = 99.0  # a changed gate: the search re-judges its candidates
    scramble()  # the data as the first run saw it (its fingerprint is part of what a resume compares)
    try:
        result = pipeline.optimize(parse(d, source="search.yaml"), run, resume=True)
    finally:
        restore()
    assert not result.failed and srch.load_result(run)["result"]["chosen"] == "macs0.40-ptq@ort-cpu"


@pytest.mark.parametrize("change, fragments", [
    ({"target_macs": []}, ("search.target_macs is empty",)),
    ({"method": []}, ("search.method is empty",)),
    ({"target_macs": [0.5, 1.5]}, ("search.target_macs: 1.5", "fraction in (0, 1)")),
    ({"target_macs": [0.5, 0.5]}, ("lists a ratio twice",)),
    ({"method": ["ptq", "int4"]}, ("unknown method 'int4'",)),
    ({"budget_min": 0}, ("search.budget_min must be a positive",)),
    ({"ratios": [0.5]}, ("unknown field search.ratios",)),
])
def test_an_empty_or_contradictory_space_is_refused(tiny_data, change, fragments):
    with pytest.raises(ConfigError) as e:
        parse(search_recipe(tiny_data, **change))
    for f in fragments:
        assert f in str(e.value)


def test_contradictions_with_the_recipe_and_unevaluable_gates_are_refused(tiny_data):
    d = search_recipe(tiny_data)
    d["prune"].pop("target_macs")
    d["prune"]["target_params"] = 0.5
    with pytest.raises(ConfigError, match="contradicts prune.target_params"):
        parse(d)
    d = search_recipe(tiny_data)
    d.pop("quantize")
    d["stages"] = ["finetune", "prune", "export", "bench"]
    with pytest.raises(ConfigError, match="add quantize"):
        parse(d)
    d = search_recipe(tiny_data)
    d["gates"]["max_p50_ms"] = {"tensorrt": 2.0}  # no TensorRT here: say so, do not pass it silently
    with pytest.raises(ConfigError, match="tensorrt is not available on this machine"):
        parse(d)
    d["gates"]["max_p50_ms"] = {"ort-cpu@8": 2.0}
    with pytest.raises(ConfigError, match="ort-cpu at batch 1 only"):
        parse(d)


def test_a_budget_smaller_than_one_candidate_is_refused_before_any_candidate(cli, tiny_data, tmp_path):
    run = tmp_path / "run"
    r = cli("optimize", write_recipe(tmp_path / "r.yaml", search_recipe(tiny_data, budget_min=0.0001)), "--out",
            str(run))
    # the estimate comes from the fine-tuning's measured time, so the refusal follows it; nothing of the search
    # is left behind, and the finished fine-tuning is kept for a --resume with a larger budget
    assert_one_line_error(r, "search.budget_min 0.0001 is smaller than one candidate", "raise search.budget_min")
    assert not (run / "02-prune").exists() and not (run / "search" / "snapshots").exists()
    assert (run / "01-finetune" / "meta.json").is_file()


def test_a_resumed_search_with_a_changed_space_is_refused_before_anything_runs(cli, searched, sealed_data, tmp_path):
    run0, _, _ = searched
    run = tmp_path / "run"
    shutil.copytree(run0, run)
    before = (run / "pipeline.json").read_text()
    d = search_recipe(sealed_data[0], target_macs=[0.3, 0.7])
    r = cli("optimize", write_recipe(tmp_path / "r.yaml", d), "--out", str(run), "--resume")
    assert_one_line_error(r, "search: --resume with a changed space", "--force")
    assert (run / "pipeline.json").read_text() == before


def test_the_compromise_does_not_pay_speed_for_a_difference_val_cannot_resolve():
    labels = [0] * 50 + [1] * 50
    base = list(labels)

    def cand(key, p50, wrong):  # wrong on the first `wrong` images
        c = srch.Candidate(key, 0.5, "ptq", status="fail", p50_ms=p50, speedups=[3.0 / p50],
                           val_predictions=[1 - y if i < wrong else y for i, y in enumerate(labels)])
        c.verdicts = [{"gate": "max_accuracy_drop_pp", "limit": 1.0, "value": wrong * 1.0, "status": "fail"}]
        return c
    baseline = {"labels": labels, "predictions": base}
    fast, slow = cand("fast", 2.0, 4), cand("slow", 3.0, 3)  # 4 vs 3 points lost: one SE here is about 1.7
    assert srch.compromise([fast, slow], baseline).key == "fast"
    far = cand("far", 1.0, 12)  # clearly worse than the others: not chosen for its speed
    assert srch.compromise([far, fast, slow], baseline).key == "fast"


def test_every_runtime_is_scored_and_timed_and_a_model_is_paid_for_only_while_it_could_be_faster(
        tiny_data, finetuned, tmp_path, monkeypatch):
    """Candidates are a model on a runtime. The fastest passing one ships, whatever its MACs: a less pruned model
    is paid for only while a runtime that was faster at fewer MACs (and failed on accuracy) could still beat the
    best passing candidate; a runtime this CPU lacks is listed as not run, naming the missing unit."""
    from edgeft.runtime import openvino as ov_mod

    monkeypatch.setattr(ov_mod, "cpu_capabilities", lambda: ("FP32", "INT8"))  # an EPYC without bf16
    monkeypatch.setattr("edgeft.host.cpu_flags", lambda cpuinfo=None: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    recipe = plain_recipe(tiny_data, {"max_accuracy_drop_pp": 1.0}, target_macs=[0.4, 0.55, 0.7],
                          runtimes=["ort-cpu", "ov-cpu", "ov-cpu-bf16"])
    run = fresh_run(tmp_path, finetuned)
    ref = srch._baseline(recipe, finetuned, run / "search")[0]["accuracy"]
    # p50 against a 2 ms baseline: ov-cpu is faster at every ratio but misses accuracy at 0.4
    ran = fake_space(monkeypatch, {"macs0.40-ptq@ort-cpu": (ref, 1.0), "macs0.40-ptq@ov-cpu": (ref - 0.05, 0.5),
                                   "macs0.55-ptq@ort-cpu": (ref, 1.2), "macs0.55-ptq@ov-cpu": (ref, 0.8),
                                   "macs0.70-ptq@ort-cpu": (ref, 1.4), "macs0.70-ptq@ov-cpu": (ref, 0.9)})
    res = srch.search(recipe, run, run / "01-finetune")
    by = {c.key: c for c in res.candidates}
    assert ran == ["macs0.40-ptq", "macs0.55-ptq"] and res.passed
    assert res.chosen.key == "macs0.55-ptq@ov-cpu"  # 2.5x: faster than 0.4 on ort-cpu (2.0x), which passed first
    assert by["macs0.40-ptq@ort-cpu"].status == "pass" and by["macs0.40-ptq@ov-cpu"].status == "fail"
    assert "no faster than macs0.55-ptq@ov-cpu" in by["macs0.70-ptq@ov-cpu"].reason  # 0.55 bounds it at 2.5x
    assert by["macs0.40-ptq@ov-cpu-bf16"].status == "not run"
    assert "no bf16 unit" in by["macs0.40-ptq@ov-cpu-bf16"].reason
    doc = res.to_dict()
    assert doc["runtime"] == "ov-cpu" and doc["model"] == "macs0.55-ptq"
    # the trade-offs: 4x a little less accurate, and 2.5x as accurate as any (ort-cpu's are as accurate, slower)
    assert srch.pareto_front(doc["candidates"]) == ["macs0.40-ptq@ov-cpu", "macs0.55-ptq@ov-cpu"]
    lines = " ".join(search_lines(doc))
    assert "Runtimes scored and timed: ort-cpu, ov-cpu" in lines and "Pareto front on val" in lines


@pytest.fixture(scope="module")
def bf16_fragile(finetuned, tmp_path_factory):
    """The fine-tuned model with a large vector added to both classes' weights of its classifier: its two logits
    then differ by a small part of their size. FP32 keeps the difference (its decisions do not change); bf16 keeps
    8 bits of mantissa and loses it. A real model whose bf16 decisions are wrong, for the search to measure."""
    import torch

    from edgeft import artifact as art

    out = tmp_path_factory.mktemp("fragile") / "01-finetune"
    shutil.copytree(finetuned, out)
    a = art.load(out)
    sd = torch.load(a.model_path, weights_only=True)
    w = sd["classifier.weight"]
    sd["classifier.weight"] = w + torch.randn(w.shape[1], generator=torch.Generator().manual_seed(0)) \
        * w.abs().mean() * 3e4
    torch.save(sd, a.model_path)
    meta = json.loads((out / "meta.json").read_text())
    meta["model_sha256"] = art.sha256_file(a.model_path)
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def test_bf16_that_moves_val_decisions_past_a_gate_is_refused_by_the_search(tiny_data, bf16_fragile, tmp_path):
    """bf16 accuracy is measured, never assumed: each runtime scores val itself, so a model whose bf16 decisions
    are wrong fails the gates there and the FP32 runtime ships, recorded as what the camera's auto runs."""
    from edgeft import artifact as art
    from edgeft.decision import read_policy
    from edgeft.runtime import Predictor
    from edgeft.runtime.backends import BACKENDS

    if not BACKENDS["ov-cpu-bf16"].available():
        pytest.skip("this CPU has no bf16 unit (OpenVINO lists no BF16): bf16 cannot be measured here")
    d = search_recipe(tiny_data, target_macs=[0.7], method=["fp32"], runtimes=["ort-cpu", "ov-cpu-bf16"])
    d["gates"] = {"max_accuracy_drop_pp": 10.0}
    recipe = parse(d, source="s.yaml")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(bf16_fragile, run / "01-finetune")
    res = srch.search(recipe, run, run / "01-finetune")
    by = {c.key: c for c in res.candidates}
    bf16, fp32 = by["macs0.70-fp32@ov-cpu-bf16"], by["macs0.70-fp32@ort-cpu"]
    assert bf16.status == "fail" and [v["gate"] for v in bf16.verdicts if v["status"] == "fail"] == \
        ["max_accuracy_drop_pp"]
    assert fp32.status == "pass" and res.chosen.key == fp32.key
    predictions = fp32.val_predictions
    assert sum(p != q for p, q in zip(predictions, bf16.val_predictions)) >= 3  # bf16 really scored val itself
    shipped = art.load(run / "search" / "macs0.70" / "export")  # fp32: the ratio's pruned ONNX model ships
    assert shipped.meta.extra["runtime"]["backend"] == "ort-cpu"
    assert shipped.meta.extra["runtime"]["model_precision"] == "fp32"
    assert read_policy(shipped.meta.extra).scored_with is None  # chosen on ort-cpu's scores, its kind's default
    assert srch.chosen_dir(run, "quantize") is None
    with Predictor(shipped.path) as p:
        assert p.backend_name == "ort-cpu" and "ships on ort-cpu" in p.backend_reason


def test_an_unquantized_model_on_openvino_ships_recorded_and_the_camera_runs_it_there(tiny_data, tmp_path):
    """The whole run with the space fp32 x ov-cpu: the quantize step is skipped with the reason, the pruned FP32
    model ships recording its runtime, its threshold is chosen on OpenVINO's scores, the bench times it there, the
    report says where it ships, and the Predictor's auto runs it there (another backend by name says it may differ)."""
    from edgeft import artifact as art
    from edgeft.decision import read_policy
    from edgeft.runtime import Predictor

    d = search_recipe(tiny_data, target_macs=[0.5], method=["fp32"], runtimes=["ov-cpu"])
    d["gates"] = {"max_accuracy_drop_pp": 100, "max_p50_ms": {"ov-cpu": 10000}}
    d["bench"]["profile"] = True
    run = tmp_path / "run"
    result = pipeline.optimize(parse(d, source="s.yaml"), run)
    state = json.loads((run / "pipeline.json").read_text())["steps"]
    assert state["05-quantize"]["status"] == "skipped" and "unquantized" in state["05-quantize"]["reason"]
    assert not (run / "05-quantize").exists()
    shipped = art.load(run / "04-export-prune")
    assert shipped.meta.extra["runtime"]["backend"] == "ov-cpu"
    assert read_policy(shipped.meta.extra).scored_with == "ov-cpu"
    bench = json.loads((run / "06-bench" / "results.json").read_text())["results"]
    assert any(r["model"].endswith("04-export-prune") and r["backend"] == "ov-cpu" and r["status"] == "ok"
               for r in bench)
    assert [(g.gate, g.status) for g in result.gates] == [("max_accuracy_drop_pp", "pass"),
                                                           ("max_p50_ms.ov-cpu", "pass")]
    md = (run / "report.md").read_text()
    assert "Ships on ov-cpu (fp32 model, fp32 inference" in md
    where = md.split("## Where the time goes")[1].split("## Gates")[0]  # its operators, on the runtime it ships on
    assert "04-export-prune on ov-cpu" in where and "of a profiled call" in where and "Floor about" in where
    assert "what any call costs the runtime (a no-op graph with this input" in where
    with Predictor(shipped.path) as p:
        assert p.backend_name == "ov-cpu" and "ships on ov-cpu" in p.backend_reason
    with Predictor(shipped.path, backend="ort-cpu") as p:
        assert p.backend_name == "ort-cpu" and "may differ on ort-cpu" in p.backend_reason


def test_a_space_whose_runtimes_this_machine_lacks_is_refused_before_the_fine_tuning(cli, tiny_data, tmp_path,
                                                                                     monkeypatch):
    """OpenVINO missing and only its runtimes listed: one line naming what is missing, nothing run or written."""
    from edgeft.runtime import openvino as ov_mod

    monkeypatch.setattr(ov_mod, "available_devices", lambda: ())
    monkeypatch.setattr(ov_mod, "cpu_capabilities", lambda: ())  # both are cached per process: as without OpenVINO
    d = search_recipe(tiny_data, runtimes=["ov-cpu", "ov-cpu-bf16"])
    d["gates"] = {"max_accuracy_drop_pp": 1.0}
    run = tmp_path / "run"
    r = cli("optimize", write_recipe(tmp_path / "r.yaml", d), "--out", run)
    assert_one_line_error(r, "search.runtimes: none can run on this machine", "pip install 'edgeft[openvino]'",
                          "add ort-cpu")
    assert not (run / "01-finetune").exists()


def test_a_reduced_precision_ships_only_when_it_is_measurably_faster():
    """An INT8 model on ov-cpu-bf16 runs its unquantized layers in bf16: within 2% of ov-cpu's speed-up (one speed,
    to the rounds) the plainer path ships; clearly faster, it ships."""
    def cand(runtime, speedup):
        return srch.Candidate(f"macs0.50-ptq@{runtime}", 0.5, "ptq", runtime, status="pass", speedups=[speedup] * 3)

    plain, bf16, ort = cand("ov-cpu", 4.194), cand("ov-cpu-bf16", 4.199), cand("ort-cpu", 3.72)
    assert srch.fastest([ort, plain, bf16]) is plain
    faster = cand("ov-cpu-bf16", 4.5)
    assert srch.fastest([ort, plain, faster]) is faster
    assert srch.fastest([]) is None
    # a larger ratio on bf16 is bounded by 4.199x, one speed with the 4.194x that ships: not paid for
    bigger = srch.Candidate("macs0.60-ptq@ov-cpu-bf16", 0.6, "ptq", "ov-cpu-bf16")
    assert "no faster than macs0.50-ptq@ov-cpu" in srch.skip_reason(bigger, [ort, plain, bf16], plain)
    assert srch.skip_reason(bigger, [ort, plain, faster], faster) != ""
    missed = cand("ov-cpu-bf16", 4.4)
    missed.status = "fail"  # measurably faster, but it missed a gate: more MACs there may pass, and still be faster
    assert srch.skip_reason(bigger, [ort, plain, missed], plain) == ""


def test_among_one_speed_the_fewer_val_false_rejects_ship():
    """Speed-ups within 2% are one speed to the rounds: what the line pays at each one's own val operating point
    breaks the tie (fewer false rejects, then more recall), not a speed difference the rounds cannot resolve; a
    measurably faster candidate still ships with more false rejects (the gates said what it may cost)."""
    from edgeft.optimize.ship import Choice

    def cand(key, method, runtime, speedup, recall, false_reject):
        return srch.Candidate(key, 0.5, method, runtime, status="pass", speedups=[speedup] * 3,
                              val={"accuracy": 0.86, "policy": {"recall": recall, "false_reject": false_reject}})

    int8_ov = cand("macs0.50-ptq@ov-cpu", "ptq", "ov-cpu", 1.67, 0.951, 0.657)
    fp32_ort = cand("macs0.50-fp32@ort-cpu", "fp32", "ort-cpu", 1.66, 0.951, 0.627)
    assert (fp32_ort.recall, fp32_ort.false_reject) == (0.951, 0.627)
    assert srch.fastest([int8_ov, fp32_ort]) is fp32_ort
    more_recall = cand("macs0.50-ptq@ort-cpu", "ptq", "ort-cpu", 1.665, 0.97, 0.627)
    assert srch.fastest([int8_ov, fp32_ort, more_recall]) is more_recall
    clearly_faster = cand("macs0.50-ptq@ov-cpu", "ptq", "ov-cpu", 1.80, 0.951, 0.657)
    assert srch.fastest([clearly_faster, fp32_ort]) is clearly_faster
    # without a decision section there is no operating point: the faster of one speed ships
    slow, fast = (srch.Candidate(k, 0.5, m, rt, status="pass", speedups=[s]) for k, m, rt, s in (
        ("macs0.50-fp32@ort-cpu", "fp32", "ort-cpu", 1.66), ("macs0.50-ptq@ov-cpu", "ptq", "ov-cpu", 1.67)))
    assert slow.recall is None and slow.false_reject is None and srch.fastest([slow, fast]) is fast
    # the ship step's choices carry the same two numbers
    ship_int8 = Choice("int8@ov-cpu", "05-quantize", "int8", "ov-cpu", "pass", recall=0.951, false_reject=0.657,
                       speedups=[1.67])
    ship_fp32 = Choice("fp32@ort-cpu", "04-export", "fp32", "ort-cpu", "pass", recall=0.951, false_reject=0.627,
                       speedups=[1.66])
    assert srch.fastest([ship_int8, ship_fp32]) is ship_fp32
