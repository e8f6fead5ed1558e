"""Benchmark harness, regression gate, and tegrastats parsing."""

import json
import os
import stat

import pytest

from edgeft.bench import compare as cmp
from edgeft.bench.harness import SCHEMA, BenchConfig, bench, load_results
from edgeft.bench.tegrastats import TegrastatsSampler, parse_line
from edgeft.errors import EdgeftError
from tests.conftest import assert_one_line_error

# Orin AGX, Orin Nano and Xavier NX lines as recorded on devices by public projects; the JetPack 4 Nano line
# is written in that release's documented format (rails without units), not a recording.
ORIN_AGX = ("04-11-2025 10:36:27 RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU [0%@729,0%@729,"
            "0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] "
            "VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C Tboard@32C SOC2@40.093C Tdiode@33C SOC0@41.093C CV1@-256C "
            "GPU@-256C tj@44.343C SOC1@41.25C CV2@-256C VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW "
            "VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW")
ORIN_NANO = ("10-08-2026 04:38:21 RAM 1343/7620MB (lfb 157x4MB) SWAP 165/3810MB (cached 3MB) "
             "CPU [0%@1497,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 15%@204 GR3D_FREQ 0%@[305] NVDEC off NVJPG off "
             "VIC off OFA off APE 200 cpu@48.562C soc2@46.593C soc0@48.625C gpu@49.625C tj@49.312C soc1@47.937C "
             "VDD_IN 5251mW/8535mW VDD_CPU_GPU_CV 512mW/1944mW VDD_SOC 2720mW/3659mW")
XAVIER_NX = ("07-09-2024 13:31:31 RAM 3168/6851MB (lfb 2x4MB) SWAP 161/3426MB (cached 0MB) CPU [23%@1397,17%@1192,"
             "16%@1190,13%@1190,23%@1190,10%@1190] EMC_FREQ 2%@204 GR3D_FREQ 0%@[114] VIC_FREQ 115 APE 150 AUX@45C "
             "CPU@46.5C thermal@45.6C AO@45C GPU@45.5C PMIC@50C VDD_IN 2763mW/2846mW VDD_CPU_GPU_CV 650mW/670mW "
             "VDD_SOC 650mW/711mW")
NANO_JP4 = ("RAM 1424/3964MB (lfb 75x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [5%@102,3%@102,off,off] "
            "EMC_FREQ 0%@1600 GR3D_FREQ 12%@76 APE 25 PLL@21C CPU@23.5C PMIC@100C GPU@22C AO@29.5C thermal@22.75C "
            "POM_5V_IN 2164/2164 POM_5V_GPU 0/0 POM_5V_CPU 408/408")


def test_parse_orin_agx():
    s = parse_line(ORIN_AGX)
    assert (s["ram_used_mb"], s["ram_total_mb"], s["swap_used_mb"]) == (4321, 62801, 19)
    assert len(s["cpu"]) == 12 and s["cpu"][0] == {"load_pct": 0, "freq_mhz": 729}
    assert s["gpu_load_pct"] == 0 and s["gpu_freq_mhz"] == [0, 0]
    assert s["temps_c"]["tj"] == 44.343 and "CV0" not in s["temps_c"]  # -256C: sensor absent
    assert s["power_mw"]["VDD_GPU_SOC"] == {"now_mw": 2340, "avg_mw": 2340}


def test_parse_orin_nano_and_xavier_nx():
    s = parse_line(ORIN_NANO)
    assert s["ram_used_mb"] == 1343 and s["gpu_freq_mhz"] == [305] and s["temps_c"]["gpu"] == 49.625
    assert s["power_mw"]["VDD_IN"] == {"now_mw": 5251, "avg_mw": 8535}
    x = parse_line(XAVIER_NX)
    assert x["ram_total_mb"] == 6851 and x["temps_c"]["PMIC"] == 50.0 and x["power_mw"]["VDD_SOC"]["avg_mw"] == 711


def test_parse_jetpack4_without_units_and_offline_cores():
    s = parse_line(NANO_JP4)
    assert s["cpu"][2] is None and s["cpu"][1] == {"load_pct": 3, "freq_mhz": 102}
    assert s["gpu_load_pct"] == 12 and s["gpu_freq_mhz"] == [76]
    assert s["power_mw"] == {"POM_5V_IN": {"now_mw": 2164, "avg_mw": 2164}, "POM_5V_GPU": {"now_mw": 0, "avg_mw": 0},
                             "POM_5V_CPU": {"now_mw": 408, "avg_mw": 408}}


def test_sampler_drives_a_fake_tegrastats(tmp_path):
    fake = tmp_path / "tegrastats"
    fake.write_text("#!/bin/sh\nwhile true; do\n"
                    f"echo '{ORIN_NANO}'\n"
                    f"echo '{ORIN_NANO.replace('RAM 1343/', 'RAM 2000/')}'\n"
                    "sleep 0.05\ndone\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with TegrastatsSampler(interval_ms=50, executable=str(fake)) as s:
        import time

        time.sleep(0.5)
    summary = s.summary()
    assert summary["samples"] >= 2 and summary["ram_used_peak_mb"] == 2000 and summary["ram_total_mb"] == 7620
    assert summary["power_mean_mw"]["VDD_IN"] == 5251


def test_power_mode_from_a_fake_nvpmodel(tmp_path, monkeypatch):
    from edgeft.bench.harness import jetson_power_mode

    fake = tmp_path / "nvpmodel"
    fake.write_text("#!/bin/sh\necho 'NVPM WARN: fan mode is not set!'\necho 'NV Power Mode: 15W'\necho 2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert jetson_power_mode() == {"power_mode": "15W", "power_mode_id": 2}


def test_clocks_locked_reads_cpufreq_and_devfreq(tmp_path):
    from edgeft.bench.harness import clocks_locked

    def write(d, **files):
        d.mkdir(parents=True)
        for name, value in files.items():
            (d / name).write_text(f"{value}\n")

    for i in range(2):
        write(tmp_path / f"devices/system/cpu/cpu{i}/cpufreq", scaling_min_freq=2201600, scaling_max_freq=2201600)
    write(tmp_path / "class/devfreq/17000000.gpu", min_freq=306000000, max_freq=1300500000)
    assert clocks_locked(tmp_path) == {"cpu": True, "gpu": False}  # jetson_clocks not run for the GPU
    assert clocks_locked(tmp_path / "nothing") == {"cpu": None, "gpu": None}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    from edgeft.export.stage import export
    from tests.conftest import make_artifact

    root = tmp_path_factory.mktemp("bench")
    return export(make_artifact(root / "t").path, root / "onnx", dynamic_batch=True)


def test_bench_rows_and_schema(onnx_model, tmp_path):
    doc = bench([str(onnx_model.path)],
                BenchConfig(backends=["ort-cpu", "ort-cuda"], batches=[1, 4], warmup_s=0.05, duration_s=None, iters=15))
    assert doc["schema"] == SCHEMA and doc["device"]["reference_ms"] > 0 and doc["device"]["cpu"]
    rows = doc["results"]
    assert len(rows) == 4
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["backend"], r["batch"]) for r in ok} >= {("ort-cpu", 1), ("ort-cpu", 4)}
    for r in ok:
        lat = r["latency_ms"]
        assert len(r["samples_ms"]) == r["iters"] >= 15
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["model_sha256"] and r["input_shape"][0] == r["batch"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert {r["status"] for r in rows if r["backend"] == "ort-cuda"} == {"skipped"}  # the other rows still ran
    assert all(r["memory"]["footprint"]["model_mb"] > 0 for r in ok if r["backend"] == "ort-cpu")


def test_bench_refuses_a_wrong_model_path_or_backend_name_before_measuring(cli, onnx_model, tmp_path):
    out = tmp_path / "r.json"
    r = cli("bench", onnx_model.path, tmp_path / "typo", "--backend", "ort-cpu", "--iters", "10", "--out", out)
    assert_one_line_error(r, "model not found")
    (tmp_path / "not-an-artifact").mkdir()
    assert_one_line_error(cli("bench", tmp_path / "not-an-artifact", "--iters", "10", "--out", out), "not-an-artifact")
    assert not out.exists() and "p50" not in r.output  # nothing measured, nothing written
    r = cli("bench", onnx_model.path, "--backend", "ort-gpu", "--iters", "10", "--out", out)
    assert_one_line_error(r, "unknown backend 'ort-gpu'", "did you mean: ort-cpu")
    assert not out.exists()


def _matmul_onnx(path, n_out):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1024, n_out)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_memory_is_the_models_own_measured_in_a_fresh_process(tmp_path):
    """A 64 MB weight shows up as >= 50 MB more than a 64 kB one; the runtime's own memory is not counted."""
    from edgeft.bench.footprint import footprints

    small, big, other = footprints([(str(_matmul_onnx(tmp_path / "small.onnx", 16)), "ort-cpu", (1, 1024)),
                                    (str(_matmul_onnx(tmp_path / "big.onnx", 16384)), "ort-cpu", (1, 1024)),
                                    (str(tmp_path / "small.onnx"), "ort-cuda", (1, 1024))], 1)
    assert small is not None and big is not None and other is None  # GPU backends: device memory instead
    assert small["model_mb"] < 30 < small["runtime_baseline_mb"]
    assert big["model_mb"] - small["model_mb"] >= 50


def _doc(samples_by_key, reference=1.0, cpu="cpu-A"):
    results = []
    for (model, backend, batch), samples in samples_by_key.items():
        from edgeft.bench.harness import latency_stats

        results.append({"model": model, "backend": backend, "batch": batch, "status": "ok", "samples_ms": samples,
                        "latency_ms": latency_stats(samples, batch),
                        "memory": {"peak_rss_mb": 100.0}})
    return {"schema": SCHEMA, "schema_version": 1, "device": {"cpu": cpu, "cpu_count": 2, "reference_ms": reference},
            "results": results}


def _noisy(center, n=200, seed=0, spread=0.05):
    import numpy as np

    return list(center * (1 + spread * np.abs(np.random.default_rng(seed).standard_normal(n))))


def test_gate_flags_a_real_slowdown_and_passes_noise():
    key = ("m", "ort-cpu", 1)
    base = _doc({key: _noisy(10.0, seed=1)})
    rows, s = cmp.compare(base, _doc({key: _noisy(10.2, seed=2)}))
    assert rows[0].verdict == "ok" and not s["failed"]
    rows, s = cmp.compare(base, _doc({key: _noisy(13.0, seed=3)}))
    assert rows[0].verdict == "regression" and s["failed"] and rows[0].ci[0] > 1.0
    rows, s = cmp.compare(base, _doc({key: _noisy(7.0, seed=4)}))
    assert rows[0].verdict == "improvement" and not s["failed"]


def test_gate_divides_out_a_slower_machine():
    key = ("m", "ort-cpu", 1)
    base = _doc({key: _noisy(10.0, seed=1)}, reference=1.0)
    slower_machine = _doc({key: _noisy(13.0, seed=2)}, reference=1.3)
    assert not cmp.compare(base, slower_machine)[1]["failed"]
    assert cmp.compare(base, slower_machine, normalize=False)[1]["failed"]


def test_memory_gate_compares_like_with_like():
    """A baseline from before per-model memory (process peak only) against a newer result: process peaks on both
    sides, not the newer file's 20 MB model against the older file's 700 MB process."""
    key = ("m", "ort-cpu", 1)
    old, new = _doc({key: _noisy(10.0)}), _doc({key: _noisy(10.0)})
    old["results"][0]["memory"] = {"peak_rss_mb": 700.0}
    new["results"][0]["memory"] = {"peak_rss_mb": 700.0, "footprint": {"model_mb": 20.0}}
    rows, _ = cmp.compare(old, new, metric="memory")
    assert rows[0].verdict == "ok" and (rows[0].baseline, rows[0].current) == (700.0, 700.0)
    grown = _doc({key: _noisy(10.0)})
    grown["results"][0]["memory"] = {"peak_rss_mb": 700.0, "footprint": {"model_mb": 30.0}}
    rows, s = cmp.compare(new, grown, metric="memory")
    assert rows[0].verdict == "regression" and s["failed"] and (rows[0].baseline, rows[0].current) == (20.0, 30.0)


def test_gate_needs_evidence_beyond_noise():
    key = ("m", "ort-cpu", 1)
    base = _doc({key: [10.0, 30.0, 10.0, 30.0, 10.0]})
    cur = _doc({key: [12.0, 30.0, 11.5, 30.0, 12.0]})  # median +20%, but the samples overlap wildly
    rows, s = cmp.compare(base, cur)
    assert rows[0].verdict == "noise" and not s["failed"]


def _rounds_doc(centers, seed):
    """A result benched in rounds: each round's samples around its own centre (drift between rounds)."""
    import numpy as np

    key = ("m", "ort-cpu", 1)
    rounds = [_noisy(c, n=100, seed=seed + i, spread=0.02) for i, c in enumerate(centers)]
    doc = _doc({key: [v for r in rounds for v in r]})
    row = doc["results"][0]
    row["round_n"] = [len(r) for r in rounds]
    row["latency_ms"]["p50"] = float(np.median([np.median(r) for r in rounds]))
    return doc


def test_gate_counts_drift_between_rounds_as_noise():
    base = _rounds_doc([10.0, 12.5, 10.2, 12.8, 10.1], seed=0)
    drifted = _rounds_doc([12.6, 10.3, 12.9, 11.6, 12.7], seed=10)  # same model, the machine drifted: p50 +14%
    rows, s = cmp.compare(base, drifted)
    assert rows[0].ratio > 1.1 and rows[0].verdict == "noise" and not s["failed"]
    # pooled samples alone would have called it a regression: the within-run interval is too narrow
    pooled = {k: v for k, v in drifted["results"][0].items() if k != "round_n"}
    rows, _ = cmp.compare(base, {**drifted, "results": [pooled]})
    assert rows[0].verdict == "regression"
    slower = _rounds_doc([15.8, 17.5, 16.0, 18.1, 15.9], seed=20)  # every round ~1.4x slower
    rows, s = cmp.compare(base, slower)
    assert rows[0].verdict == "regression" and s["failed"]


def test_gate_refuses_other_devices_and_reports_missing_rows():
    a = _doc({("m", "ort-cpu", 1): _noisy(10)})
    with pytest.raises(EdgeftError, match="different devices"):
        cmp.compare(a, _doc({("m", "ort-cpu", 1): _noisy(10)}, cpu="cpu-B"))
    # one CPU name, other INT8/bf16 units (an EPYC Zen 3 against a Zen 4): other devices; a result from before the
    # units were recorded still compares
    zen3, zen4 = ({**d, "device": {**d["device"], "cpu_units": u}} for d, u in
                  ((a, []), (_doc({("m", "ort-cpu", 1): _noisy(10)}), ["avx512_vnni", "avx512_bf16"])))
    with pytest.raises(EdgeftError, match=r"different devices \(cpu-A \(no INT8 or bf16 unit\) vs cpu-A "
                                          r"\(avx512_vnni, avx512_bf16\)\)"):
        cmp.compare(zen3, zen4)
    assert not cmp.compare(a, zen4)[1]["failed"]
    rows, s = cmp.compare(a, _doc({("n", "ort-cpu", 1): _noisy(10)}))
    assert [r.verdict for r in rows] == ["missing", "missing"] and not s["failed"]


def test_gate_warns_when_the_runtime_version_changed(capsys, monkeypatch):
    monkeypatch.delenv("EDGEFT_QUIET", raising=False)
    a = _doc({("m", "ort-cpu", 1): _noisy(10)})
    b = _doc({("m", "ort-cpu", 1): _noisy(10)})
    a["device"]["onnxruntime"], b["device"]["onnxruntime"] = "1.31.0", "1.32.0"
    _, s = cmp.compare(a, b)
    assert s["runtime_changed"] == ["onnxruntime 1.31.0 -> 1.32.0"]
    assert "different runtime versions (onnxruntime 1.31.0 -> 1.32.0)" in capsys.readouterr().err


def test_gate_fails_a_model_that_ran_before_and_fails_now():
    key = ("m", "ort-cpu", 1)
    base = _doc({key: _noisy(10)})
    crashed = _doc({key: _noisy(10)})
    crashed["results"][0].update(status="failed", reason="RuntimeException: unsupported op")
    rows, s = cmp.compare(base, crashed)
    assert rows[0].verdict == "failed" and s["failed"] and s["counts"]["failed"] == 1
    assert "FAILED (RuntimeException: unsupported op)" in cmp.render(rows, s) and "FAIL" in cmp.render(rows, s)
    missing_backend = _doc({key: _noisy(10)})
    missing_backend["results"][0].update(status="skipped", reason="backend ort-cuda is not available here")
    rows, s = cmp.compare(base, missing_backend)
    assert rows[0].verdict == "skipped" and not s["failed"]


def test_compare_cli(cli, tmp_path):
    key = ("m", "ort-cpu", 1)
    (tmp_path / "base.json").write_text(json.dumps(_doc({key: _noisy(10.0, seed=1)})))
    (tmp_path / "slow.json").write_text(json.dumps(_doc({key: _noisy(14.0, seed=2)})))
    r = cli("compare", tmp_path / "base.json", tmp_path / "slow.json", "--markdown")
    assert r.exit_code == 1 and "REGRESSION" in r.output and r.output.startswith("| model")
    r = cli("compare", tmp_path / "base.json", tmp_path / "base.json")
    assert r.exit_code == 0 and "pass" in r.output
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    assert_one_line_error(cli("compare", tmp_path / "base.json", tmp_path / "foreign.json"), "not an edgeft bench")
    (tmp_path / "old.json").write_text(json.dumps({**_doc({}), "schema_version": 0}))
    assert_one_line_error(cli("compare", tmp_path / "old.json", tmp_path / "base.json"), "schema_version")
    (tmp_path / "empty.json").write_text("")
    assert_one_line_error(cli("compare", tmp_path / "empty.json", tmp_path / "base.json"), "not valid JSON")


def test_bench_cli_writes_json(cli, onnx_model, tmp_path):
    out = tmp_path / "r.json"
    r = cli("bench", onnx_model.path, "--backend", "ort-cpu", "--iters", "10", "--warmup-s", "0.05", "--out", out)
    assert r.exit_code == 0 and "p50 ms" in r.output
    assert load_results(out)["results"][0]["status"] == "ok"
    (tmp_path / "a-file").write_text("")  # --out under a file: one line, no traceback
    r = cli("bench", onnx_model.path, "--backend", "ort-cpu", "--iters", "5", "--warmup-s", "0", "--no-memory",
            "--out", tmp_path / "a-file" / "r.json")
    assert_one_line_error(r, str(tmp_path / "a-file"), "check the path")
    assert "p50" not in r.output  # refused before measuring


@pytest.mark.cuda
def test_torch_cuda_rows_time_the_device(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    from tests.conftest import make_artifact

    a = make_artifact(tmp_path / "t")
    doc = bench([str(a.path)], BenchConfig(backends=["torch-cuda"], batches=[1, 8], warmup_s=0.2, duration_s=None,
                                           iters=30, cuda_graph=True))
    for r in doc["results"]:
        assert r["status"] == "ok", r
        assert 0 < r["gpu_compute_ms"]["p50"] <= r["latency_ms"]["p50"]
        assert r["cuda_graph_ms"]["p50"] > 0 and r["memory"]["device"]["device_total_mb"] > 0


def test_latency_gate_workflow_runs_as_written(cli, onnx_model, tmp_path):
    """The example workflow gated against a baseline that did not exist; its gate step now makes the baseline on
    the first run and gates against it on the next, run here exactly as GitHub Actions runs a step."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    workflow = yaml.safe_load((Path(__file__).parents[1] / "benchmarks/ci/latency-gate.yml").read_text())
    gate = next(s["run"] for s in workflow["jobs"]["gate"]["steps"] if s.get("name", "").startswith("Gate"))
    r = cli("bench", onnx_model.path, "--backend", "ort-cpu", "--iters", "20", "--rounds", "2", "--no-memory",
            "--out", tmp_path / "bench.json")
    assert r.exit_code == 0, r.output
    env = {**os.environ, "BASELINE": workflow["env"]["BASELINE"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def step() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", gate], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    first = step()
    baseline = tmp_path / workflow["env"]["BASELINE"]
    assert first.returncode == 0, first.stderr
    assert baseline.read_bytes() == (tmp_path / "bench.json").read_bytes()
    assert "No baseline for this device yet" in (tmp_path / "gate.md").read_text()
    second = step()
    assert second.returncode == 0, second.stderr + second.stdout
    assert "ort-cpu" in (tmp_path / "gate.md").read_text() and "No baseline" not in (tmp_path / "gate.md").read_text()


def test_a_batch_8_row_is_one_batch_8_call_or_says_it_is_eight(onnx_model, tmp_path):
    """A graph exported for batch 1 ran 'batch 8' as eight batch-1 calls (8.1x the batch-1 time) under a batch-8
    label. The row now says how many calls a batch took, the table says why, and a recipe that benches batch 8
    exports graphs that take any batch."""
    from pathlib import Path

    from edgeft.bench.harness import table
    from edgeft.export.stage import export
    from edgeft.optimize.recipe import parse
    from tests.conftest import make_artifact

    fixed = export(make_artifact(tmp_path / "t").path, tmp_path / "fixed")
    doc = bench([str(onnx_model.path), str(fixed.path)],
                BenchConfig(backends=["ort-cpu"], batches=[8], warmup_s=0.02, duration_s=None, iters=5, memory=False))
    calls = {Path(r["model"]).name: r["calls_per_batch"] for r in doc["results"]}
    assert calls == {"onnx": 1, "fixed": 8}
    assert "8 sequential calls: the graph's batch is fixed" in table(doc)
    from tests.test_optimize import tiny_recipe

    d = tiny_recipe(tmp_path)
    assert parse(d, source="r.yaml").dynamic_batch is False  # the tiny recipe benches batch 1 only
    d["bench"]["batches"] = [1, 8]
    assert parse(d, source="r.yaml").dynamic_batch is True
