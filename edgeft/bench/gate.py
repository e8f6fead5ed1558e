"""``edgeft gate``: a latency regression gate that holds on a noisy shared runner.

The baseline model (a file or artifact: the one built from the target branch, or the last release) and the
candidate are loaded in one process and measured **paired**: round by round, a short block of calls of one
then of the other, in ABBA order (A B, B A, A B, ...), so a burst of load from a neighbour slows both sides of
a round alike and a trend over the run cancels. The verdict is on the per-round ratios candidate / baseline
(each side's median call time in its block), never on two numbers taken minutes apart.

**Rounds until the answer is clear.** After ``min_rounds``, and after every round from then on, the
distribution-free confidence interval of the median ratio (order statistics; the ratios need not be normal)
is compared with ``1 + max_regression``: entirely below it, no regression (exit 0); entirely above it, a
regression (exit 1); still straddling it when ``time_cap_s`` is spent, **inconclusive** (exit 3) with the
interval and what to do about it. A candidate that fails to run is a failure, not a skip.

A committed per-device baseline results file (``edgeft compare``) stays the way for a dedicated device (a
Jetson runner) where the old model cannot be built beside the new one.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeft import progress
from edgeft.errors import ConfigError, EdgeftError

EXIT = {"pass": 0, "regression": 1, "failed": 1, "inconclusive": 3}


@dataclass
class GateConfig:
    max_regression: float = 0.10  # a candidate more than 10% slower (median paired ratio) is a regression
    backend: str = "ort-cpu"
    batch: int = 1
    threads: int | None = None
    time_cap_s: float = 60.0  # measuring stops here at the latest; straddling then is "inconclusive"
    block_s: float = 0.25  # timed seconds per model and round
    min_block_calls: int = 5
    min_rounds: int = 10
    level: float = 0.95  # of the median ratio's confidence interval
    warmup_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.max_regression < 10:
            raise ConfigError(f"--max-regression must be a positive fraction like 0.10 (10%), got {self.max_regression}")
        if self.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {self.batch}")
        if self.min_rounds < 6:
            raise ConfigError(f"--min-rounds must be >= 6 (fewer paired ratios cannot bound a median at 95%), got "
                              f"{self.min_rounds}")
        if not 0.5 < self.level < 1:
            raise ConfigError(f"the interval's level must be between 0.5 and 1, got {self.level}")
        if self.block_s <= 0 or self.warmup_s < 0:
            raise ConfigError("--block-s must be positive and the warm-up >= 0")
        need = self.warmup_s + self.min_rounds * 2 * self.block_s
        if self.time_cap_s < need:
            raise ConfigError(f"--time-cap-s {self.time_cap_s:g} is too short for the {self.min_rounds} paired rounds "
                              f"a verdict needs ({need:.1f} s of {self.block_s:g} s blocks after {self.warmup_s:g} s of "
                              f"warm-up); give at least {math.ceil(need)} s")


@dataclass
class GateResult:
    verdict: str  # pass | regression | inconclusive | failed
    ratio: float | None  # median of the per-round ratios candidate / baseline (> 1: slower)
    interval: tuple[float, float] | None
    rounds: int
    seconds: float
    ratios: list[float] = field(default_factory=list)
    baseline_ms: list[float] = field(default_factory=list)  # per-round median call time
    candidate_ms: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d


def median_interval(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: the order statistics (k, n-k+1) with k the largest
    such that P(Binomial(n, 1/2) < k) <= (1 - level) / 2. Needs enough values (6 at 95%)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    alpha, cdf, k = (1 - level) / 2, 0.0, 0
    while True:  # cdf = P(B <= k - 1 + 1) as k grows; stop before it exceeds alpha
        nxt = cdf + math.comb(n, k) / 2 ** n
        if nxt > alpha:
            break
        cdf, k = nxt, k + 1
    if k == 0:
        raise ConfigError(f"{n} paired rounds cannot bound a median at {level:.0%}; measure more rounds")
    return float(x[k - 1]), float(x[n - k])


def judge(ratios: list[float], limit: float, level: float) -> tuple[str | None, float, tuple[float, float]]:
    """(verdict or None while undecided, median ratio, interval) of the per-round ratios against ``limit``."""
    lo, hi = median_interval(ratios, level)
    med = float(statistics.median(ratios))
    if hi < limit:
        return "pass", med, (lo, hi)
    if lo > limit:
        return "regression", med, (lo, hi)
    return None, med, (lo, hi)


def _block(fn: Callable[[], Any], seconds: float, min_calls: int, clock: Callable[[], float]) -> float:
    """Median wall time in ms of calls to ``fn`` over ``seconds`` (at least ``min_calls``)."""
    samples = []
    end = clock() + seconds
    while len(samples) < min_calls or clock() < end:
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000.0)
    return float(statistics.median(samples))


def measure(baseline: Callable[[], Any], candidate: Callable[[], Any], cfg: GateConfig,
            on_round: Callable[[int, float, tuple[float, float] | None], None] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> GateResult:
    """The sequential paired measurement of two callables (one inference each), ABBA, until the interval
    clears the limit or the time cap; the models and device fields are the caller's to fill. ``clock``: seconds
    (a test passes a simulated one)."""
    limit = 1 + cfg.max_regression
    t_start = clock()
    end_warm = t_start + cfg.warmup_s
    while clock() < end_warm:
        baseline()
        candidate()
    base_ms: list[float] = []
    cand_ms: list[float] = []
    ratios: list[float] = []
    verdict, med, interval = None, None, None
    while True:
        if len(ratios) % 2 == 0:  # ABBA: who goes first alternates, so a trend within a round cancels
            b = _block(baseline, cfg.block_s, cfg.min_block_calls, clock)
            c = _block(candidate, cfg.block_s, cfg.min_block_calls, clock)
        else:
            c = _block(candidate, cfg.block_s, cfg.min_block_calls, clock)
            b = _block(baseline, cfg.block_s, cfg.min_block_calls, clock)
        base_ms.append(b)
        cand_ms.append(c)
        ratios.append(cand_ms[-1] / base_ms[-1])
        if len(ratios) >= cfg.min_rounds:
            verdict, med, interval = judge(ratios, limit, cfg.level)
        if on_round:
            on_round(len(ratios), ratios[-1], interval)
        spent = clock() - t_start
        if verdict is not None or spent + 2 * cfg.block_s > cfg.time_cap_s:
            break
    return GateResult(verdict=verdict or "inconclusive", ratio=med, interval=interval, rounds=len(ratios),
                      seconds=round(clock() - t_start, 2), ratios=[round(r, 5) for r in ratios],
                      baseline_ms=[round(v, 4) for v in base_ms], candidate_ms=[round(v, 4) for v in cand_ms],
                      config=asdict(cfg))


def _describe(spec: str) -> dict[str, Any]:
    """What must match between baseline and candidate, and what identifies each: input shape, classes, hash."""
    from edgeft.artifact import sha256_file
    from edgeft.runtime.backends import model_files

    files, artifact_dir, chw = model_files(spec)
    classes = None
    if artifact_dir is not None:
        from edgeft import artifact

        classes = list(artifact.load(artifact_dir).meta.class_names)
    return {"spec": spec, "files": files, "artifact_dir": artifact_dir, "chw": chw, "classes": classes,
            "sha256": {k: sha256_file(v) for k, v in files.items()}}


def _runner(desc: dict[str, Any], cfg: GateConfig, side: str):
    from edgeft.runtime.backends import choose

    b = choose(cfg.backend, desc["files"])
    try:
        r = b.make(desc["files"][b.model_file], desc["artifact_dir"], cfg.threads)
        r.activate()
    except EdgeftError:
        raise
    except Exception as e:  # noqa: BLE001 (a model the runtime cannot load is the side's failure)
        raise _SideFailed(side, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return b.name, r


class _SideFailed(Exception):
    def __init__(self, side: str, reason: str) -> None:
        super().__init__(reason)
        self.side, self.reason = side, reason


def _input(runner, chw: tuple[int, ...] | None, batch: int) -> np.ndarray:
    dims: tuple = tuple(chw) if chw else ()
    session = getattr(runner, "session", None)
    if not dims and session is not None:
        dims = tuple(session.get_inputs()[0].shape[1:])
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        raise ConfigError("the model's input has free dimensions; gate artifacts (their input contract gives the "
                          "shape) or ONNX files with a fixed input shape")
    return np.random.default_rng(0).standard_normal((batch, *dims)).astype(np.float32)


def gate(baseline: str, candidate: str, cfg: GateConfig) -> GateResult:
    """Judge ``candidate`` against ``baseline`` (artifact directories or model files) on one backend, paired."""
    from edgeft.bench.harness import fingerprint

    base, cand = _describe(baseline), _describe(candidate)
    if base["chw"] and cand["chw"] and base["chw"] != cand["chw"]:
        raise ConfigError(f"baseline and candidate take different inputs ({'x'.join(map(str, base['chw']))} vs "
                          f"{'x'.join(map(str, cand['chw']))}): their latencies are not comparable; gate models of "
                          "one input contract")
    if base["classes"] and cand["classes"] and base["classes"] != cand["classes"]:
        raise ConfigError(f"baseline and candidate have different classes ({', '.join(base['classes'])} vs "
                          f"{', '.join(cand['classes'])}): gate two versions of the same model")
    models = {side: {"spec": d["spec"], "sha256": d["sha256"]} for side, d in (("baseline", base), ("candidate", cand))}
    device = fingerprint()
    runners = []
    try:
        name, rb = _runner(base, cfg, "baseline")
        runners.append(rb)
        _, rc = _runner(cand, cfg, "candidate")
        runners.append(rc)
        xb = _input(rb, base["chw"], cfg.batch)
        xc = _input(rc, cand["chw"], cfg.batch)
        if xb.shape != xc.shape:
            raise ConfigError(f"baseline and candidate take different inputs ({xb.shape[1:]} vs {xc.shape[1:]}); gate "
                              "models of one input contract")
        calls = {}
        for side, r, x in (("baseline", rb, xb), ("candidate", rc, xc)):
            try:
                r.infer(x)
            except Exception as e:  # noqa: BLE001
                raise _SideFailed(side, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
            calls[side] = (lambda r=r, x=x: r.infer(x))
        models["backend"] = name

        def show(n: int, ratio: float, interval) -> None:
            if n % 10 == 0:
                progress.info(f"round {n}: ratio {ratio:.3f}" + (f", median's interval {interval[0]:.3f}-"
                                                                 f"{interval[1]:.3f}" if interval else ""))

        result = measure(calls["baseline"], calls["candidate"], cfg, show)
    except _SideFailed as e:
        if e.side == "baseline":
            raise EdgeftError(f"the baseline {baseline} does not run on {cfg.backend}: {e.reason}; the gate needs a "
                              "baseline that runs") from None
        return GateResult(verdict="failed", ratio=None, interval=None, rounds=0, seconds=0.0, config=asdict(cfg),
                          models=models, device=device, reason=f"the candidate did not run on {cfg.backend}: {e.reason}")
    finally:
        for r in runners:
            r.deactivate()
    result.models, result.device = models, device
    result.reason = advice(result)
    return result


def advice(r: GateResult) -> str:
    """One sentence on what the verdict means and, when inconclusive, what to do."""
    limit = 1 + r.config["max_regression"]
    lo, hi = r.interval
    spread = f"median ratio {r.ratio:.3f}, {r.config['level']:.0%} interval {lo:.3f}-{hi:.3f} over {r.rounds} rounds"
    if r.verdict == "pass":
        return f"no regression beyond {r.config['max_regression']:.0%}: {spread}, all below {limit:.3f}"
    if r.verdict == "regression":
        return f"slower by more than {r.config['max_regression']:.0%}: {spread}, all above {limit:.3f}"
    return (f"cannot tell within {r.config['time_cap_s']:g} s: {spread} straddles {limit:.3f}; give it more time "
            "(--time-cap-s), run on a quieter runner, lock the clocks, or gate with a wider --max-regression")


def render(r: GateResult, markdown: bool = False) -> str:
    head = {"pass": "pass", "regression": "REGRESSION", "failed": "FAILED", "inconclusive": "INCONCLUSIVE"}[r.verdict]
    ratios = ", ".join(f"{v:.3f}" for v in r.ratios[:40]) + (" ..." if len(r.ratios) > 40 else "")
    lines = [f"latency gate: {head} (exit {r.exit_code})", f"  {r.reason}"]
    if r.ratios:
        lines += [f"  baseline {statistics.median(r.baseline_ms):.3f} ms, candidate {statistics.median(r.candidate_ms):.3f}"
                  f" ms per call (medians of rounds), {r.models.get('backend')} batch {r.config['batch']}, "
                  f"{r.seconds:.0f} s", f"  per-round ratios (candidate / baseline, ABBA): {ratios}"]
    lines.append(f"  machine: {r.device.get('cpu')} ({r.device.get('cpu_count')} CPUs), both sides in one process; "
                 f"baseline {Path(r.models['baseline']['spec']).name}, candidate {Path(r.models['candidate']['spec']).name}")
    if markdown:
        return "\n".join(["### " + lines[0], ""] + [f"- {line.strip()}" for line in lines[1:]])
    return "\n".join(lines)
