"""The paired, sequential latency gate: its interval, its three verdicts, and its bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeft.bench.gate import GateConfig, judge, measure, median_interval
from edgeft.errors import ConfigError
from tests.conftest import assert_one_line_error


def test_median_interval_is_the_binomial_order_statistics():
    x = list(range(1, 11))  # n = 10: P(B <= 1) = 11/1024 <= 0.025 < P(B <= 2) = 56/1024, so (x_2, x_9)
    assert median_interval(x, 0.95) == (2.0, 9.0)
    assert median_interval(list(range(6)), 0.95) == (0.0, 5.0)  # the smallest n that bounds a median at 95%
    with pytest.raises(ConfigError, match="cannot bound a median"):
        median_interval(list(range(5)), 0.95)
    # coverage: intervals of samples from a known distribution hold its median about 95% of the time or more
    rng = np.random.default_rng(0)
    hits = sum(lo <= 1.0 <= hi for lo, hi in (median_interval(rng.lognormal(0, 0.2, 20)) for _ in range(2000)))
    assert 0.94 <= hits / 2000 <= 0.99


def test_judge_needs_the_whole_interval_on_one_side():
    assert judge([0.98, 1.0, 1.02] * 4, 1.10, 0.95)[0] == "pass"
    assert judge([1.2, 1.25, 1.3] * 4, 1.10, 0.95)[0] == "regression"
    assert judge([1.0, 1.1, 1.2] * 4, 1.10, 0.95)[0] is None  # straddles: keep measuring


class Machine:
    """A simulated shared runner: a call of a model takes its cost times the machine's load factor, which jumps
    every few dozen calls (a neighbour's job starting and stopping) and jitters per call. Deterministic, so the
    gate's logic is tested without timing anything."""

    def __init__(self, seed: int = 0, burst: float = 2.0) -> None:
        self.t, self.calls, self.load = 0.0, 0, 1.0
        self.rng, self.burst = np.random.default_rng(seed), burst

    def clock(self) -> float:
        return self.t

    def model(self, ms: float):
        def call() -> None:
            self.calls += 1
            if self.calls % 37 == 0:
                self.load = self.burst if self.rng.random() < 0.3 else 1.0
            self.t += ms / 1000 * self.load * self.rng.lognormal(0, 0.05)
        return call


FAST = dict(block_s=0.02, min_block_calls=3, min_rounds=10, warmup_s=0.0)


def test_unchanged_passes_and_a_planted_slowdown_is_flagged_despite_load_bursts():
    m = Machine(seed=1)
    model = m.model(2)
    same = measure(model, model, GateConfig(time_cap_s=60, **FAST), clock=m.clock)  # one callable on both sides
    assert same.verdict == "pass" and same.rounds >= 10 and same.interval[1] < 1.10
    # the bursts doubled some blocks' times: unpaired, they would look like +100% changes
    assert max(same.baseline_ms) / min(same.baseline_ms) > 1.5
    assert same.baseline_ms != same.candidate_ms  # each side timed in its own block, even with one callable
    m = Machine(seed=2)
    slow = measure(m.model(2), m.model(2.5), GateConfig(time_cap_s=60, **FAST), clock=m.clock)
    assert slow.verdict == "regression" and slow.interval[0] > 1.10 and slow.ratio == pytest.approx(1.25, rel=0.05)
    assert len(slow.ratios) == slow.rounds == len(slow.baseline_ms) == len(slow.candidate_ms)


def test_a_slowdown_at_the_threshold_is_inconclusive_not_a_pass():
    m = Machine(seed=3)
    r = measure(m.model(2), m.model(2.2), GateConfig(max_regression=0.10, time_cap_s=1.0, **FAST), clock=m.clock)
    assert r.verdict == "inconclusive" and r.exit_code == 3
    assert r.interval[0] <= 1.10 <= r.interval[1] and r.seconds <= 1.0


def test_config_refuses_a_cap_too_short_for_a_verdict():
    with pytest.raises(ConfigError, match="too short for the 10 paired rounds"):
        GateConfig(time_cap_s=2.0)
    with pytest.raises(ConfigError, match="--max-regression"):
        GateConfig(max_regression=0)


def test_gate_cli_on_real_models(cli, tiny_onnx, tmp_path):
    out = tmp_path / "gate.json"
    r = cli("gate", tiny_onnx.path, tiny_onnx.path, "--time-cap-s", "30", "--block-s", "0.05", "--out", out)
    assert r.exit_code == 0, r.output
    assert "latency gate: pass (exit 0)" in r.stdout and "per-round ratios" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "pass" and doc["rounds"] == len(doc["ratios"]) >= 10 and doc["exit_code"] == 0
    assert doc["models"]["baseline"]["sha256"] == doc["models"]["candidate"]["sha256"] and doc["device"]["cpu"]
    assert doc["ratio"] == pytest.approx(float(np.median(doc["ratios"])), abs=1e-4)


def test_gate_bad_input_is_one_line(cli, tiny_onnx, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_onnx.path, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["input"]["size"] = [40, 40]
    (other / "meta.json").write_text(json.dumps(meta))
    assert_one_line_error(cli("gate", tiny_onnx.path, other), "different inputs", "3x32x32 vs 3x40x40")
    meta["input"]["size"] = [32, 32]
    meta["class_names"] = ["ok", "scratch"]
    (other / "meta.json").write_text(json.dumps(meta))
    assert_one_line_error(cli("gate", tiny_onnx.path, other), "different classes")
    assert_one_line_error(cli("gate", tiny_onnx.path, tiny_onnx.path, "--time-cap-s", "1"), "too short")
    assert_one_line_error(cli("gate", tiny_onnx.path, tmp_path / "missing.onnx"), "model not found")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    r = cli("gate", tiny_onnx.path, broken, "--time-cap-s", "10", "--out", tmp_path / "g.json")
    assert r.exit_code == 1 and "FAILED" in r.stdout and "the candidate did not run" in r.stdout, r.output
    assert json.loads((tmp_path / "g.json").read_text())["verdict"] == "failed"
