"""The deployed model and a candidate side by side, part by part, on the slices that decide a promotion.

Both models score every part of val, the frozen old ``test`` split, the ``new-test`` slice of new parts (and any extra
labelled folder the user keeps, reported only). The candidate gets its own operating point, chosen on val by the
line's decision rule (a retrained model's scores move, and a threshold carried over from the other model silently
changes its escape rate); the deployed model is judged as it runs today, at its own policy's threshold (keeping it is
the alternative), and the same model re-thresholded on today's val is reported beside it (what a new threshold alone
would do). The differences (candidate minus deployed) in recall, false-reject rate and AUROC come with a **paired**
bootstrap interval: the same parts, resampled with replacement (defective and good ones separately), score both
models in each resample, so the variation the two share cancels; the thresholds stay as chosen (the interval is of
the parts, not of val). The parts whose decision flipped are listed: escapes now caught, false rejects now passed,
and the reverse.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import ConfigError, DataError
from edgeft.promote.rule import Bound, PromoteRule

VERDICT_EXIT = {"promote": 0, "keep": 1, "inconclusive": 3}


@dataclass
class SideOutcome:
    """One model on one slice at its operating point."""

    recall: float
    false_reject: float
    auroc: float
    escapes: int
    false_rejects: int
    recall_interval: tuple[float, float]  # Wilson, of this model alone
    false_reject_interval: tuple[float, float]


@dataclass
class Change:
    """candidate - deployed of one metric on one slice, with its paired bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass
class Flips:
    """Parts whose decision differs between the two models (file names, relative to the data folder)."""

    escape_now_caught: list[str] = field(default_factory=list)
    caught_now_escape: list[str] = field(default_factory=list)
    false_reject_now_passed: list[str] = field(default_factory=list)
    passed_now_false_reject: list[str] = field(default_factory=list)


@dataclass
class SliceResult:
    name: str
    n_defective: int
    n_good: int
    deployed: SideOutcome
    candidate: SideOutcome
    rethresholded: SideOutcome | None  # the deployed model at a threshold chosen on today's val (reported)
    changes: dict[str, Change]  # recall, false_reject, auroc
    flips: Flips
    judged: bool = True  # False: an extra folder, reported only


@dataclass
class BoundResult:
    bound: Bound
    change: Change
    status: str  # met | missed | inconclusive
    more_parts: int | None = None  # inconclusive: about how many more parts of the deciding class would settle it
    of_class: str = ""
    at_bound: bool = False  # inconclusive with the measured change on the bound: more parts would hardly settle it

    def value_text(self, v: float) -> str:
        """A measured value in the bound's unit: a rate in %, a change in pp, an AUROC change as it is."""
        if self.bound.absolute:
            return f"{v * 100:.1f}%"
        return f"{v * 100:+.2f} pp" if self.bound.metric != "auroc" else f"{v:+.4f}"

    def text(self) -> str:
        c = self.change
        s = (f"{self.bound.text()}: {self.value_text(c.value)} [{self.value_text(c.low)}, {self.value_text(c.high)}] "
             f"-> {self.status}")
        if self.more_parts:
            s += f" (about {self.more_parts} more {self.of_class} parts in {self.bound.slice} would settle it)"
        return s


@dataclass
class Promotion:
    """What ``edgeft promote`` (or a recipe's ``promote:``) found: the verdict and everything it rests on."""

    verdict: str  # promote | keep | inconclusive
    reason: str
    deployed: dict[str, Any]  # path, sha256
    candidate: dict[str, Any]
    rule: dict[str, Any]
    decision_rule: str
    thresholds: dict[str, float]  # deployed (as it runs), candidate (chosen on val), deployed_rethresholded
    slices: list[SliceResult]
    bounds: list[BoundResult]
    latency: dict[str, Any] | None = None
    installed: dict[str, Any] | None = None  # the model directory's new version, when promoted into one
    candidate_policy: dict[str, Any] = field(default_factory=dict)  # the operating point a promoted candidate gets
    notes: list[str] = field(default_factory=list)  # bounds tighter than their slice can resolve

    @property
    def exit_code(self) -> int:
        return VERDICT_EXIT[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d


# ----------------------------------------------------------------------------------------------- scoring

def _check_pair(deployed, candidate) -> None:
    from edgeft.tasks import registry as tasks

    for a in (deployed, candidate):
        task = tasks.of(a.meta)
        if task.name != "classify":
            raise ConfigError(f"{a.path} is a {task.name} model; a promotion compares classifiers' per-part decisions "
                              "(recall, false rejects, AUROC)")
    if list(deployed.meta.class_names) != list(candidate.meta.class_names):
        raise ConfigError(f"the candidate's classes {candidate.meta.class_names} are not the deployed model's "
                          f"{deployed.meta.class_names}: a promotion compares two versions of one model")
    a, b = deployed.meta.input.to_dict(), candidate.meta.input.to_dict()
    diff = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
    if diff:
        raise ConfigError(f"the candidate's input contract differs from the deployed model's in {', '.join(diff)} "
                          f"({', '.join(f'{k}: {a.get(k)} vs {b.get(k)}' for k in diff)}): the station could not swap "
                          "it in; retrain from the deployed model (edgeft finetune --from)")


def _scores(artifact, images) -> np.ndarray:
    """The artifact's "not OK" probability of each image (softmax of its logits, one view, its own runtime)."""
    from edgeft.evaluate import logits
    from edgeft.runtime.predictor import softmax

    out, _ = logits(artifact, images, tta_views=1)
    return softmax(out.astype(np.float64))


def _load(data: Path, split: str, artifact, folder: Path | None = None):
    from edgeft.data.imagefolder import decode_split, load_split, scan_split

    if folder is None:
        return load_split(data, split, artifact.meta.input, classes=artifact.meta.class_names)
    from dataclasses import replace

    from edgeft.data.imagefolder import with_products

    s = decode_split(scan_split(folder, artifact.meta.class_names, classes_from="the model"), artifact.meta.input)
    return replace(with_products(folder, s), name=split)  # its products from a products.csv in the folder


def _side(positive: np.ndarray, decisions: np.ndarray, score: np.ndarray) -> SideOutcome:
    from edgeft.decision import outcome
    from edgeft.metrics import auroc

    o = outcome(positive, decisions)
    return SideOutcome(recall=o.recall, false_reject=o.false_reject, auroc=auroc(positive, score), escapes=o.escapes,
                       false_rejects=o.false_rejects, recall_interval=o.recall_interval,
                       false_reject_interval=o.false_reject_interval)


def paired_changes(positive: np.ndarray, dep: tuple[np.ndarray, np.ndarray], cand: tuple[np.ndarray, np.ndarray],
                   resamples: int, level: float, seed: int) -> dict[str, Change]:
    """candidate - deployed in recall, false-reject rate and AUROC, each with the ``level`` interval of a paired,
    stratified bootstrap. ``dep``/``cand``: (decisions, scores) of each model on the same parts."""
    from edgeft.metrics import auroc
    from edgeft.metrics.scores import bootstrap_auroc_drops

    y = np.asarray(positive, dtype=bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    caught = [(d[pos] != "pass").astype(np.float64) for d in (dep[0], cand[0])]
    rejected = [(d[neg] == "reject").astype(np.float64) for d in (dep[0], cand[0])]
    rng = np.random.default_rng(seed)
    ip = rng.integers(0, len(pos), size=(resamples, len(pos)))
    ineg = rng.integers(0, len(neg), size=(resamples, len(neg)))
    d_recall = caught[1][ip].mean(1) - caught[0][ip].mean(1)
    d_fr = rejected[1][ineg].mean(1) - rejected[0][ineg].mean(1)
    d_auroc = bootstrap_auroc_drops(y, cand[1], dep[1], resamples, seed)  # AUROC(candidate) - AUROC(deployed)
    q = [50 * (1 - level), 100 - 50 * (1 - level)]

    def change(point: float, samples: np.ndarray) -> Change:
        lo, hi = np.percentile(samples, q)
        return Change(float(point), float(min(lo, point)), float(max(hi, point)))

    return {"recall": change(caught[1].mean() - caught[0].mean(), d_recall),
            "false_reject": change(rejected[1].mean() - rejected[0].mean(), d_fr),
            "auroc": change(auroc(y, cand[1]) - auroc(y, dep[1]), d_auroc)}


def _flips(paths: list[Path], root: Path, positive: np.ndarray, dep: np.ndarray, cand: np.ndarray) -> Flips:
    def rel(p: Path) -> str:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return str(p)

    f = Flips()
    for p, y, a, b in zip(paths, positive, dep, cand):
        if y and a == "pass" and b != "pass":
            f.escape_now_caught.append(rel(p))
        elif y and a != "pass" and b == "pass":
            f.caught_now_escape.append(rel(p))
        elif not y and a == "reject" and b != "reject":
            f.false_reject_now_passed.append(rel(p))
        elif not y and a != "reject" and b == "reject":
            f.passed_now_false_reject.append(rel(p))
    return f


# ----------------------------------------------------------------------------------------------- judging

MORE_PARTS_CAP = 10  # "about N more parts" up to ten times the slice's count; past it, the change sits at the bound


def judge(b: Bound, c: Change, n: int, of_class: str) -> BoundResult:
    """met: the whole interval on the bound's good side; missed: the measured change itself on the bad side;
    inconclusive: in between, with about how many more parts (of ``n``, the deciding class's count on the slice) would
    narrow the interval past the bound if the change held (the interval's half-width shrinks as 1/sqrt(n))."""
    if not b.good(c.value):
        return BoundResult(b, c, "missed")
    edge = c.low if b.sense == ">=" else c.high
    if b.good(edge):
        return BoundResult(b, c, "met")
    half, room = abs(c.value - edge), abs(c.value - b.value)
    more = None
    if room > 1e-9 and n > 0:
        more = max(1, math.ceil(round(n * (half / room) ** 2, 6)) - n)
    if more is None or more > MORE_PARTS_CAP * n:  # over ten times the slice: no collection settles it
        return BoundResult(b, c, "inconclusive", None, of_class, at_bound=True)
    return BoundResult(b, c, "inconclusive", more, of_class)


def verdict_of(bounds: list[BoundResult], latency: dict[str, Any] | None) -> tuple[str, str]:
    """(verdict, why): keep when a bound or the latency gate is missed, inconclusive when one cannot tell yet, else
    promote."""
    missed = [b for b in bounds if b.status == "missed"]
    unsure = [b for b in bounds if b.status == "inconclusive"]
    lat = (latency or {}).get("verdict")
    if missed or lat in ("regression", "failed"):
        why = [b.bound.text() for b in missed] + ([f"latency: {latency['reason']}"] if lat in ("regression", "failed")
                                                  else [])
        return "keep", "missed: " + "; ".join(why)
    if unsure or lat == "inconclusive":
        why = [b.bound.text() + (f" (about {b.more_parts} more {b.of_class} parts)" if b.more_parts else
                                 " (the measured change sits at the bound: more parts would hardly settle it)"
                                 if b.at_bound else "") for b in unsure]
        if lat == "inconclusive":
            why.append("latency: " + latency["reason"])
        return "inconclusive", "cannot tell yet: " + "; ".join(why)
    return "promote", "every bound met" + (" and latency within the gate" if latency else "")


# ----------------------------------------------------------------------------------------------- the comparison

def compare(deployed: str | Path, candidate: str | Path, data: str | Path, rule: PromoteRule,
            decision=None, extra: dict[str, Path] | None = None, latency: bool = True) -> Promotion:
    """Compare ``candidate`` with ``deployed`` (artifact directories of classifiers) on ``data``'s val (operating
    points), test and new-test (the judged slices) and ``extra`` labelled folders (reported), and judge by ``rule``.
    ``decision``: the line's policy (positive classes and rule) the candidate's threshold is chosen by; by default the
    deployed model's. The deployed model is judged at its own policy (chosen on val by ``decision`` when it has none)."""
    from edgeft import progress
    from edgeft.artifact import load
    from edgeft.data.collect import NEW_TEST
    from edgeft.data.imagefolder import find_splits
    from edgeft.decision import choose, read_policy
    from edgeft.metrics import positive_mask

    data = Path(data)
    dep, cand = load(deployed), load(candidate)
    _check_pair(dep, cand)
    running = read_policy(dep.meta.extra, f"{dep.path}/meta.json extra.decision")
    if decision is None:
        if running is None:
            raise ConfigError(f"{dep.path} has no decision policy, so the line's operating rule is unknown: choose one "
                              "with `edgeft decide`, or name it (--target-recall / --max-false-reject, --positive)")
        decision = (running.positive, running.rule)
    positive, dec_rule = decision
    if running is not None and sorted(running.positive) != sorted(positive):
        raise ConfigError(f"the deployed model's policy calls {', '.join(running.positive)} not OK, the decision rule "
                          f"{', '.join(positive)}: the two would count escapes differently; name the same classes")
    found = find_splits(data)
    for need, why in (("val", "each model's operating point is chosen on val"),
                      ("test", "the old test split shows what the candidate forgot"),
                      (NEW_TEST, "the new parts' slice shows what it learnt; collect the station's kept parts first "
                                 "(edgeft data collect --test-share)")):
        if need not in found:
            raise DataError(f"{data} has no {need}/ split: {why}")
    names = list(dep.meta.class_names)
    splits = [("val", None), ("test", None), (NEW_TEST, None)] + [(k, Path(v)) for k, v in (extra or {}).items()]
    loaded = {}
    for split, folder in splits:
        s = _load(data, split, dep, folder)
        y = positive_mask(s.labels, names, positive)
        if split != "val" and (y.all() or not y.any()):
            kind = "defective" if not y.any() else "good"
            raise DataError(f"{split} has no {kind} parts ({'/'.join(positive)} {'absent' if not y.any() else 'only'}):"
                            f" recall and false rejects cannot both be compared on it; collect parts of both kinds")
        progress.info(f"scoring {split} ({len(s)} parts) with both models")  # one contract (_check_pair): one decode
        loaded[split] = (s, y, _scores(dep, s), _scores(cand, s))
    notes = resolution_notes(rule.bounds(), {k: (int(v[1].sum()), int((~v[1]).sum())) for k, v in loaded.items()})
    for note in notes:
        progress.warn(note)
    val_s, _, val_dep, val_cand = loaded["val"]
    retuned = choose(dec_rule, val_s.labels, val_dep, names, positive, split="val", products=val_s.products)
    pol_dep = running if running is not None else retuned
    pol_cand = choose(dec_rule, val_s.labels, val_cand, names, positive, split="val", products=val_s.products)
    results: list[SliceResult] = []
    for split, folder in splits[1:]:
        s, y, p_dep, p_cand = loaded[split]
        sd, sc = pol_dep.score(p_dep), pol_cand.score(p_cand)
        dd, dc = pol_dep.decide(sd, s.products), pol_cand.decide(sc, s.products)  # each part at its product's point
        changes = paired_changes(y, (dd, sd), (dc, sc), rule.resamples, rule.level, rule.seed)
        rethresholded = _side(y, retuned.decide(sd, s.products), sd) if running is not None else None
        results.append(SliceResult(split, int(y.sum()), int((~y).sum()), _side(y, dd, sd), _side(y, dc, sc),
                                   rethresholded, changes, _flips(s.paths, folder or data, y, dd, dc),
                                   judged=folder is None))
    by_name = {r.name: r for r in results}
    judged = [judge(b, _measured(b, by_name[b.slice], rule.level), *_deciding(b, by_name[b.slice]))
              for b in rule.bounds()]
    lat = _latency(dep.path, cand.path, rule) if latency and rule.max_latency_regression is not None else None
    verdict, reason = verdict_of(judged, lat)
    thresholds = {"deployed": pol_dep.reject_at, "candidate": pol_cand.reject_at}
    if running is not None:
        thresholds["deployed_rethresholded"] = retuned.reject_at
    for side, pol in (("deployed", pol_dep), ("candidate", pol_cand)):
        thresholds.update({f"{side} ({name})": p.reject_at for name, p in sorted(pol.products.items())})
    deployed_at = (f"the deployed model as it runs ({running.rule.text()}, chosen on {running.chosen_on} when it was "
                   "made)" if running is not None else "the deployed model (it has no policy) chosen the same way")
    return Promotion(verdict=verdict, reason=reason,
                     deployed={"path": str(dep.path), "sha256": dep.meta.model_sha256},
                     candidate={"path": str(cand.path), "sha256": cand.meta.model_sha256}, rule=rule.to_dict(),
                     decision_rule=f"not OK = {' + '.join(positive)}; the candidate at {dec_rule.text()}, chosen on "
                                   f"today's val; {deployed_at}",
                     thresholds=thresholds, slices=results, bounds=judged, latency=lat,
                     candidate_policy=pol_cand.to_dict(), notes=notes)


def _measured(b: Bound, r: SliceResult, level: float) -> Change:
    """What a bound judges: the paired change, or (absolute) the candidate's own rate with its Wilson interval."""
    from edgeft.metrics.intervals import wilson_interval

    if not b.absolute:
        return r.changes[b.metric]
    o = r.candidate
    k, n = ((r.n_defective - o.escapes, r.n_defective) if b.metric == "recall" else (o.false_rejects, r.n_good))
    lo, hi = wilson_interval(k, n, level)
    return Change(k / n, lo, hi)


def resolution_notes(bounds: list[Bound], counts: dict[str, tuple[int, int]]) -> list[str]:
    """A note for each tolerance bound (at most so many points worse) narrower than its slice can resolve: the paired
    interval of a change on n parts of which k changed decision is about 1.96 sqrt(k) / n wide each side, so a
    tolerance of m clears only while k <= (m n / 1.96)^2; under 3 parts' worth, a candidate that flips more than two
    of them is never met there, whatever it gained. ``counts``: slice -> (defective, good)."""
    notes = []
    for b in bounds:
        if b.field not in ("max_recall_drop_pp", "max_false_reject_rise_pp") or b.slice not in counts:
            continue
        n, kind = (counts[b.slice][0], "defective") if b.metric == "recall" else (counts[b.slice][1], "good")
        parts = abs(b.value) * n
        if n and parts < 3:
            k = int((parts / 1.96) ** 2)
            notes.append(f"{b.text()}: {abs(b.value) * 100:g} pp of {n} {kind} parts is {parts:.1f} part(s); a paired "
                         f"interval clears it only while at most {k} of them change decision: loosen it, bound "
                         "AUROC on this slice (max_auroc_drop), or add parts to it")
    return notes


def _deciding(b: Bound, r: SliceResult) -> tuple[int, str]:
    """The count of the parts a bound's metric is measured on, and their kind (for "about N more parts")."""
    return {"recall": (r.n_defective, "defective"), "false_reject": (r.n_good, "good"),
            "auroc": (min(r.n_defective, r.n_good), "defective and good")}[b.metric]


def _latency(deployed: Path, candidate: Path, rule: PromoteRule) -> dict[str, Any]:
    """The paired latency gate (:func:`edgeft.bench.gate.gate`), candidate against deployed, on the deployed model's
    runtime: ABBA rounds until the median ratio's interval clears the limit or the time cap is spent."""
    from edgeft.bench.gate import GateConfig, gate

    cfg = GateConfig(max_regression=rule.max_latency_regression, backend=rule.latency_backend,
                     time_cap_s=rule.latency_time_cap_s, min_rounds=15)
    r = gate(str(deployed), str(candidate), cfg)
    return {"verdict": r.verdict, "ratio": r.ratio, "interval": list(r.interval) if r.interval else None,
            "rounds": r.rounds, "reason": r.reason, "backend": r.models.get("backend"),
            "deployed_ms": float(np.median(r.baseline_ms)) if r.baseline_ms else None,
            "candidate_ms": float(np.median(r.candidate_ms)) if r.candidate_ms else None,
            "cpu": r.device.get("cpu")}
