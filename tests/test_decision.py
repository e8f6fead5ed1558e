"""Decision policies: chosen on val by a rule, applied by the runtime, counted by the camera process."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request

import numpy as np
import pytest

from edgeft.decision import PSI_ALARM, PSI_WARN, Policy, Rule, choose, psi
from edgeft.errors import ArtifactError, ConfigError, DataError
from edgeft.metrics import roc_curve
from tests.conftest import assert_one_line_error
from tests.test_redact import _video

CLASSES = ["defective", "functional"]


def scores(n=400, seed=0, shift=0.0):
    """Labels (0 = defective) and two-class probabilities whose "not OK" score separates the classes partly."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = np.clip(np.where(y, rng.normal(0.7, 0.2, n), rng.normal(0.3, 0.2, n)) + shift, 0, 1)
    return np.where(y, 0, 1), np.stack([s, 1 - s], 1), y, s


def rates(y, s, t):
    """Recall and false reject rejecting every score >= t, computed directly."""
    return float((s[y] >= t).mean()), float((s[~y] >= t).mean())


def test_target_recall_is_the_least_false_reject_that_reaches_it():
    labels, probs, y, s = scores()
    p = choose(Rule(target_recall=0.95), labels, probs, CLASSES, ["defective"])
    recall, fr = rates(y, s, p.reject_at)
    assert recall >= 0.95 and (p.val.recall, p.val.false_reject) == pytest.approx((recall, fr))
    # the next stricter threshold (the lowest score still rejected, excluded) misses the target
    lowest_rejected = s[s >= p.reject_at].min()
    assert rates(y, s, np.nextafter(lowest_rejected, 1))[0] < 0.95
    # the threshold sits between two adjacent val scores, not on one: the same decisions on val, a margin elsewhere
    below = s[s < p.reject_at].max()
    assert p.reject_at == pytest.approx((lowest_rejected + below) / 2)
    assert not p.has_review and p.chosen_on == "val"


def test_max_false_reject_and_cost_rules_against_brute_force():
    labels, probs, y, s = scores(seed=1)
    p = choose(Rule(max_false_reject=0.05), labels, probs, CLASSES, ["defective"])
    candidates = np.unique(s)
    best = max(rates(y, s, t)[0] for t in candidates if rates(y, s, t)[1] <= 0.05)
    assert p.val.false_reject <= 0.05 and p.val.recall == pytest.approx(best)
    c = choose(Rule(escape_cost=10, false_reject_cost=1), labels, probs, CLASSES, ["defective"])
    cost = lambda t: 10 * (s[y] < t).sum() + (s[~y] >= t).sum()  # noqa: E731
    assert cost(c.reject_at) == min(cost(t) for t in np.r_[candidates, 2.0])


def test_review_band_keeps_recall_spends_at_most_the_budget_and_lowers_false_rejects():
    labels, probs, y, s = scores(seed=2)
    plain = choose(Rule(target_recall=0.95), labels, probs, CLASSES, ["defective"])
    band = choose(Rule(target_recall=0.95, review_budget=0.05), labels, probs, CLASSES, ["defective"])
    assert band.has_review and band.pass_below == plain.pass_below
    assert band.val.recall == plain.val.recall
    assert 0 < band.val.review_rate <= 0.05 and band.val.reviewed == int(0.05 * len(s))
    assert band.val.false_reject < plain.val.false_reject
    d = band.decide(s)
    assert set(d) == {"pass", "review", "reject"}
    assert (s[d == "review"] < band.reject_at).all() and (s[d == "review"] >= band.pass_below).all()


def test_policy_round_trips_and_a_damaged_one_is_refused():
    labels, probs, *_ = scores()
    p = choose(Rule(target_recall=0.9, review_budget=0.1), labels, probs, CLASSES, ["defective"])
    assert Policy.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    d = p.to_dict()
    d["drift_expected"] = d["drift_expected"][:-1]
    with pytest.raises(ArtifactError, match="damaged"):
        Policy.from_dict(d)
    d = p.to_dict()
    d["rule"]["target_recall"] = 3.0
    with pytest.raises(ArtifactError, match="edgeft decide"):
        Policy.from_dict(d)


def test_policies_that_cannot_be_chosen_say_why():
    labels, probs, *_ = scores()
    with pytest.raises(DataError, match="no threshold catches 99%.*at most 1% false rejects"):
        choose(Rule(target_recall=0.99, max_false_reject=0.01), labels, probs, CLASSES, ["defective"])
    with pytest.raises(ConfigError, match="review_budget"):
        Rule(target_recall=0.95, review_budget=0.0)
    with pytest.raises(ConfigError, match="name a rule"):
        Rule()
    with pytest.raises(ConfigError, match="between 0 and 1"):
        Rule(target_recall=95)
    with pytest.raises(ConfigError, match="'cracked' is not a class"):
        choose(Rule(target_recall=0.95), labels, probs, CLASSES, ["cracked"])
    with pytest.raises(DataError, match="no defective images"):
        choose(Rule(target_recall=0.95), np.ones(10, int), probs[:10], CLASSES, ["defective"])


def test_psi_is_small_for_the_same_population_and_large_for_a_shifted_one():
    labels, probs, _, s = scores(seed=3)
    p = choose(Rule(target_recall=0.95), labels, probs, CLASSES, ["defective"])

    assert p.drift(s) == pytest.approx(0.0, abs=1e-9)  # the val scores themselves
    _, _, _, same = scores(n=2000, seed=4)
    _, _, _, shifted = scores(n=2000, seed=5, shift=0.25)
    assert p.drift(same) < PSI_WARN < PSI_ALARM < p.drift(shifted)
    # psi itself, on hand-made shares: sum (o - e) ln(o / e)
    assert psi([0.5, 0.5], np.array([30, 10])) == pytest.approx(0.25 * np.log(1.5) - 0.25 * np.log(0.5))


def test_roc_curve_matches_direct_counts():
    _, _, y, s = scores(n=100, seed=6)
    fr, rec, thr = roc_curve(y, s)
    for f, r, t in zip(fr[1:], rec[1:], thr[1:]):
        assert (r, f) == pytest.approx(rates(y, s, t))


def test_line_metrics_count_decisions_and_drift_over_http():
    from edgeft.runtime.monitor import DRIFT_MIN_FRAMES, LineMetrics, MetricsServer

    labels, probs, _, s = scores(seed=7)
    p = choose(Rule(target_recall=0.95, review_budget=0.05), labels, probs, CLASSES, ["defective"])
    m = LineMetrics("cam1", "ort-cpu", CLASSES, p)
    server = MetricsServer(m)
    try:
        for score in s[:DRIFT_MIN_FRAMES - 1]:
            m.record("defective", 1.0, str(p.decide(score)), float(score))
        assert np.isnan(m.window()["psi"])  # too few frames to say
        _, _, _, shifted = scores(n=400, seed=8, shift=0.3)
        for score in shifted:
            m.record("defective", 1.0, str(p.decide(score)), float(score))
        with urllib.request.urlopen(server.url, timeout=5) as r:
            text = r.read().decode()
    finally:
        server.close()
    counts = {k: int(v) for k, v in re.findall(r'edgeft_decisions_total\{.*decision="(\w+)"\} (\d+)', text)}
    assert sum(counts.values()) == 499 and counts["reject"] > counts["pass"]
    value = float(re.search(r"^edgeft_score_psi\{.*\} (\S+)$", text, flags=re.M).group(1))
    assert value > 0.25  # the shifted population raises the alarm
    assert re.search(r"^edgeft_reject_rate\{.*\} 0\.\d+$", text, flags=re.M)


@pytest.fixture
def decided(tiny_onnx, tiny_data, tmp_path, cli):
    """A copy of the tiny ONNX artifact with a policy chosen on tiny_data's val split."""
    path = tmp_path / "model"
    shutil.copytree(tiny_onnx.path, path)
    r = cli("decide", path, "--data", tiny_data, "--positive", "bad", "--target-recall", "0.9")
    assert r.exit_code == 0, r.output
    assert "reject at score >=" in r.stdout and "chosen on val" in r.stdout and "on test: recall" in r.stdout
    return path


def test_decide_writes_the_policy_and_eval_and_infer_apply_it(decided, tiny_data, tmp_path, cli):
    from edgeft import artifact
    from edgeft.decision import read_policy
    from edgeft.runtime import Predictor

    a = artifact.load(decided)
    p = read_policy(a.meta.extra)
    assert p.positive == ["bad"] and p.val.recall >= 0.9
    r = cli("eval", decided, "--data", tiny_data, "--split", "val")
    assert r.exit_code == 0 and "policy: not OK = bad" in r.stdout and "AUROC" in r.stdout
    assert f"recall {p.val.recall * 100:.1f}%" in r.stdout  # eval on val reproduces what decide chose there
    out = tmp_path / "r.jsonl"
    r = cli("infer", decided, str(tiny_data / "test"), "--out", out, "--require-policy")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    with Predictor(decided) as pred:
        assert pred.policy == p
    for line in lines:
        assert line["decision"] == str(p.decide(line["not_ok"])[()])
        assert line["not_ok"] == pytest.approx(line["probabilities"][0], abs=2e-6)


def test_infer_on_a_video_reports_decision_counters(decided, tmp_path, cli):
    r = cli("infer", decided, _video(tmp_path / "clip.avi", frames=30), "--out", tmp_path / "r.jsonl",
            "--stats-every", "10")
    assert r.exit_code == 0, r.output
    stats = [json.loads(x)["stats"] for x in r.stderr.splitlines() if x.startswith('{"stats"')]
    assert [s["frames"] for s in stats] == [10, 20, 30, 30]  # every 10 frames and at the end
    assert sum(stats[-1]["decisions"].values()) == 30 and stats[-1]["window"]["frames"] == 30
    assert stats[-1]["window"]["psi"] is None  # 30 frames are too few for a drift value


def test_bad_decision_input_gets_one_line(tiny_onnx, tiny_data, tmp_path, cli):
    path = tmp_path / "model"
    shutil.copytree(tiny_onnx.path, path)
    before = (path / "meta.json").read_text()
    assert_one_line_error(cli("decide", path, "--data", tiny_data, "--positive", "cracked", "--target-recall", "0.9"),
                          "'cracked' is not a class", "bad, good")
    assert_one_line_error(cli("decide", path, "--data", tiny_data, "--positive", "bad", "--target-recall", "0.9",
                              "--review-budget", "0"), "review_budget")
    assert_one_line_error(cli("decide", path, "--data", tiny_data, "--positive", "bad"), "name a rule")
    no_val = tmp_path / "no-val"
    for split in ("train", "test"):
        shutil.copytree(tiny_data / split, no_val / split)
    assert_one_line_error(cli("decide", path, "--data", no_val, "--positive", "bad", "--target-recall", "0.9"),
                          "no val/ split")
    one_class = tmp_path / "one-class"
    shutil.copytree(tiny_data / "train", one_class / "train")
    shutil.copytree(tiny_data / "val" / "good", one_class / "val" / "good")
    (one_class / "val" / "bad").mkdir()
    r = cli("decide", path, "--data", one_class, "--positive", "bad", "--target-recall", "0.9")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert (path / "meta.json").read_text() == before  # nothing written by a refused policy
    assert_one_line_error(cli("infer", path, str(tiny_data / "test"), "--require-policy"),
                          "carries no decision policy", "edgeft decide")


def test_the_policy_is_chosen_on_one_view_as_the_camera_runs_it(tiny_onnx, tiny_data, tmp_path, cli):
    """An artifact that records test-time views for evaluation still gets its threshold from single-view scores:
    the camera's Predictor runs one view, and averaged views would move the scores the threshold sits on."""
    from edgeft import artifact
    from edgeft.data import load_split
    from edgeft.decision import read_policy
    from edgeft.evaluate import logits
    from edgeft.metrics import positive_mask
    from edgeft.runtime.predictor import softmax

    path = tmp_path / "model"
    shutil.copytree(tiny_onnx.path, path)
    meta = json.loads((path / "meta.json").read_text())
    meta["extra"]["tta_views"] = 4
    (path / "meta.json").write_text(json.dumps(meta))
    assert cli("decide", path, "--data", tiny_data, "--positive", "bad", "--target-recall", "0.9").exit_code == 0
    a = artifact.load(path)
    p = read_policy(a.meta.extra)
    val = load_split(tiny_data, "val", a.meta.input, classes=a.meta.class_names)
    one, views = logits(a, val, tta_views=1)
    assert views == 1
    y = positive_mask(val.labels, a.meta.class_names, ["bad"])
    assert p.outcome(y, p.score(softmax(one.astype(float)))) == p.val


def test_an_operating_point_per_product_holds_each_product_s_own_rule():
    """Two products whose scores sit at different levels (a poly cell scores higher, defective or not): one threshold
    over the mix misses the rule on one product; by_product meets it on each, and parts of no product or of an
    unknown one are decided at the overall point."""
    labels_a, probs_a, y_a, s_a = scores(300, seed=3)
    labels_b, probs_b, y_b, s_b = scores(300, seed=4, shift=0.25)
    labels, probs = np.r_[labels_a, labels_b], np.r_[probs_a, probs_b]
    y, s = np.r_[y_a, y_b], np.r_[s_a, s_b]
    products = ["mono"] * 300 + ["poly"] * 300
    rule = Rule(target_recall=0.95, by_product=True)
    mix = choose(Rule(target_recall=0.95), labels, probs, CLASSES, ["defective"])
    assert rates(y_a, s_a, mix.reject_at)[0] < 0.95  # the mix's threshold escapes mono defects
    p = choose(rule, labels, probs, CLASSES, ["defective"], products=products)
    assert sorted(p.products) == ["mono", "poly"] and "per product" in p.text() and "poly: reject at" in p.text()
    for name, yy, ss in (("mono", y_a, s_a), ("poly", y_b, s_b)):
        point = p.products[name]
        recall, fr = rates(yy, ss, point.reject_at)
        assert recall >= 0.95 and (point.val.recall, point.val.false_reject) == pytest.approx((recall, fr))
        one = p.for_product(name)
        assert one.reject_at == point.reject_at and not one.products
        assert (one.decide(ss) == p.decide(ss, [name] * len(ss))).all()
    assert p.products["poly"].reject_at > p.products["mono"].reject_at
    poly = p.for_product("poly")  # a poly stream measures drift against poly val scores, not the mix's
    assert poly.drift(s_b) < 0.01 < p.drift(s_b)
    assert (p.decide(s, [None] * len(s)) == p.decide(s)).all()
    assert (p.decide(s, ["other"] * len(s)) == p.decide(s)).all()
    assert p.val.recall == pytest.approx(1 - ((p.decide(s, products) == "pass") & y).sum() / y.sum())
    assert Policy.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    old = p.to_dict()
    del old["products"]  # an artifact written before products existed reads as one point
    assert Policy.from_dict(old).products == {}
    with pytest.raises(ConfigError, match="'pol' has no operating point.*mono, poly.*did you mean: poly"):
        p.for_product("pol")
    with pytest.raises(DataError, match="names no products.*products.csv"):
        choose(rule, labels, probs, CLASSES, ["defective"])
    with pytest.raises(DataError, match="the val split's poly parts has no defective parts"):
        choose(rule, labels, probs, CLASSES, ["defective"],
               products=["mono"] * 300 + ["poly" if not yy else "mono" for yy in y_b])


def test_products_are_read_from_a_folder_s_patterns_and_a_manifest_s_column(tmp_path):
    from edgeft.data.products import append_products, products_of

    root = tmp_path / "data"
    files = ["val/bad/cell1.png", "val/bad/kept-line2-7.png", "test/good/kept-line2-[8].png"]
    assert products_of(root, [root / f for f in files]) is None  # no products.csv: the data names none
    root.mkdir()
    (root / "products.csv").write_text("pattern,product\n*/kept-line2-*,poly\n*/good/*,mono\n")
    assert products_of(root, [root / f for f in files]) == [None, "poly", "poly"]
    append_products(root, ["test/good/kept-line2-[8].png"], "poly-b")  # exact paths go first, brackets escaped
    assert products_of(root, [root / f for f in files]) == [None, "poly", "poly-b"]
    (root / "products.csv").write_text("pattern,product\n*/bad/*,x\nval/bad/cell1.png,y\n")
    assert products_of(root, [root / files[0]]) == ["x"]  # the first row that matches, a pattern before a path
    manifest = tmp_path / "m.csv"
    for f in files[:2]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"")
    manifest.write_text(f"path,label,split,product\n{files[0]},bad,val,mono\n{files[1]},bad,val,\n")
    assert products_of(manifest, [tmp_path / f for f in files[:2]]) == ["mono", None]
    (root / "products.csv").write_text("pattern,kind\n*,mono\n")
    with pytest.raises(DataError, match="no 'product' column.*pattern,product"):
        products_of(root, [root / files[0]])


def test_decide_by_product_and_infer_at_each_product_s_point(tiny_onnx, tiny_data, tmp_path, cli):
    """decide --by-product on a folder whose products.csv names two products; infer --product decides each source at
    its product's point; a product the policy lacks, or one without a policy, is refused in one line."""
    from edgeft.decision import read_policy
    from edgeft import artifact

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "products.csv").write_text("pattern,product\n*_00[0-3].png,a\n*,b\n")
    path = tmp_path / "model"
    shutil.copytree(tiny_onnx.path, path)
    r = cli("decide", path, "--data", data, "--positive", "bad", "--target-recall", "0.9", "--by-product")
    assert r.exit_code == 0, r.output
    p = read_policy(artifact.load(path).meta.extra)
    assert sorted(p.products) == ["a", "b"] and "per product" in r.stdout
    r = cli("eval", path, "--data", data, "--split", "val")
    assert r.exit_code == 0 and f"recall {p.val.recall * 100:.1f}%" in r.stdout  # the same parts, each at its point
    # points no overall threshold can imitate: every part of a rejected, every part of b passed
    d = p.to_dict()
    d["products"]["a"].update(pass_below=0.0, reject_at=0.0)
    d["products"]["b"].update(pass_below=1.01, reject_at=1.01)
    artifact.update_metrics(artifact.load(path), {}, extra={"decision": d})
    r = cli("eval", path, "--data", data, "--split", "val")  # _00[0-3] of 8 a class: half of each class is a
    assert r.exit_code == 0 and "recall 50.0%" in r.stdout and "false reject 50.0%" in r.stdout, r.stdout
    out = tmp_path / "r.jsonl"
    for cam in ("cam-a", "cam-b"):
        shutil.copytree(data / "test", tmp_path / cam)
    r = cli("infer", path, tmp_path / "cam-a", tmp_path / "cam-b", "--product", "a", "--product", "b", "--out", out)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 32
    for line in lines:
        product = "a" if "cam-a" in line["source"] else "b"
        assert line["product"] == product and line["decision"] == ("reject" if product == "a" else "pass")
    assert_one_line_error(cli("infer", path, data / "test", "--product", "c"), "'c' has no operating point", "a, b")
    from edgeft.runtime import Predictor
    from edgeft.station.swap import ModelSlot

    with Predictor(path) as running, Predictor(path) as new:  # a hot swap keeps every stream's product decided
        slot = ModelSlot(running, Predictor)
        slot.products = {"a"}
        assert slot.incompatible(new) is None
        slot.products = {"a", "c"}
        assert "'c' has no operating point" in slot.incompatible(new)
    assert_one_line_error(cli("infer", path, data / "test", data / "test", data / "test", "--product", "a",
                              "--product", "b"), "--product was given 2 times for 3 sources")
    plain = tmp_path / "plain"
    shutil.copytree(tiny_onnx.path, plain)
    assert_one_line_error(cli("infer", plain, data / "test", "--product", "a"), "carries none")
    before = (plain / "meta.json").read_text()
    assert_one_line_error(cli("decide", plain, "--data", tiny_data, "--positive", "bad", "--target-recall", "0.9",
                              "--by-product"), "names no products", "products.csv")
    assert (plain / "meta.json").read_text() == before
