"""``edgeft bench``: latency, throughput and memory of models on backends, as versioned JSON.

One harness over the runtime's backend table: warm-up by time and count, then timed iterations; every
sample is kept so ``edgeft compare`` can test a change against the measured noise. The device
fingerprint says where the numbers come from; a reference workload (a fixed matrix product) timed in
the same run lets a comparison discount a machine that is simply slower today.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeft import __version__, progress
from edgeft.artifact import sha256_file
from edgeft.bench.footprint import model_mb
from edgeft.errors import ConfigError, EdgeftError
from edgeft.host import cpu_model, unit_flags
from edgeft.metrics import Latency
from edgeft.runtime.backends import model_files
from edgeft.runtime.timing import time_calls

SCHEMA = "edgeft.bench"
SCHEMA_VERSION = 1


@dataclass
class BenchConfig:
    backends: list[str] = field(default_factory=lambda: ["auto"])
    batches: list[int] = field(default_factory=lambda: [1])
    warmup_s: float = 1.0
    warmup_iters: int = 10
    duration_s: float | None = 3.0
    iters: int | None = None
    threads: int | None = None
    input_shape: tuple[int, ...] | None = None  # C,H,W for models whose input has free dimensions
    cuda_graph: bool = False  # GPU backends: also time CUDA-graph replay
    rounds: int = 3  # the whole plan is run this many times, interleaved; per-round p50s are kept (paired ratios)
    memory: bool = True  # CPU backends: each model's resident memory, in a process of its own (edgeft.bench.footprint)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ConfigError("give at least one --backend")
        if any(b < 1 for b in self.batches):
            raise ConfigError(f"--batch values must be >= 1, got {self.batches}")
        if self.iters is not None and self.iters < 1:
            raise ConfigError(f"--iters must be >= 1, got {self.iters}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"--duration-s must be positive, got {self.duration_s}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def reference_workload_ms(rounds: int = 15) -> float:
    """Median time of a fixed float32 matrix product: a yardstick of how fast this machine is right now."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 256), dtype=np.float32), rng.standard_normal((256, 256), dtype=np.float32)
    return time_calls(lambda: a @ b, warmup=5, iters=rounds * 10)["p50_ms"]


def fingerprint() -> dict[str, Any]:
    """Where the numbers were measured: CPU, GPU, drivers and library versions (no imports of heavy libraries)."""
    fp: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_units": unit_flags(),
                          "machine": platform.machine(), "system": platform.system(),
                          "python": platform.python_version(), "edgeft": __version__}
    for dist in ("onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt", "numpy"):
        v = _dist_version(dist)
        if v:
            fp[dist] = v
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            name, driver = [s.strip() for s in out.stdout.strip().splitlines()[0].split(",")[:2]]
            fp.update(gpu=name, driver=driver)
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    tegra = Path("/etc/nv_tegra_release")
    if tegra.exists():
        fp["l4t"] = tegra.read_text(errors="ignore").splitlines()[0].strip()
        model = Path("/proc/device-tree/model")
        if model.exists():
            fp["jetson"] = model.read_text(errors="ignore").strip("\x00\n ")
        fp.update(jetson_power_mode())
    fp["clocks_locked"] = clocks_locked()
    return fp


def jetson_power_mode() -> dict[str, Any]:
    """``nvpmodel -q``: the power mode's name and id (latency differs several-fold between modes)."""
    import subprocess

    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            mode: dict[str, Any] = {"power_mode": line.split(":", 1)[1].strip()}
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                mode["power_mode_id"] = int(lines[i + 1])
            return mode
    return {}


def clocks_locked(sys_root: str | os.PathLike = "/sys") -> dict[str, bool | None]:
    """Whether CPU and GPU clocks are pinned (minimum = maximum frequency, as ``jetson_clocks`` or a fixed
    governor leaves them). Unlocked clocks scale with load, and latency drifts between runs. None: unknown."""
    root = Path(sys_root)

    def pinned(dirs: list[Path], lo: str, hi: str) -> bool | None:
        seen = []
        for d in dirs:
            try:
                seen.append(int((d / lo).read_text()) == int((d / hi).read_text()))
            except (OSError, ValueError):
                continue
        return all(seen) if seen else None

    cpus = sorted(root.glob("devices/system/cpu/cpu[0-9]*/cpufreq"))
    gpus = [d for d in sorted(root.glob("class/devfreq/*")) if "gpu" in d.name or d.name.endswith(("gv11b", "ga10b"))]
    return {"cpu": pinned(cpus, "scaling_min_freq", "scaling_max_freq"), "gpu": pinned(gpus, "min_freq", "max_freq")}


def same_device(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two fingerprints are one device for comparison purposes: CPU name and cores, GPU, Jetson model, and
    the CPU's INT8/bf16 units where both record them (one name, "AMD EPYC", covers a Zen 3 and a Zen 4, about 2x apart;
    results from before edgeft recorded the units still compare)."""
    units = "cpu_units" in a and "cpu_units" in b and a["cpu_units"] != b["cpu_units"]
    return not units and all(a.get(k) == b.get(k) for k in ("cpu", "cpu_count", "gpu", "jetson"))


def _peak_rss_mb() -> float:
    """Peak RSS of this (benchmark) process in MB. A model's own memory is ``edgeft.bench.footprint``'s."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latency_stats(samples: list[float], batch: int) -> dict[str, float]:
    """A bench row's ``latency_ms``: :class:`edgeft.metrics.Latency` of per-iteration samples, as JSON."""
    s = np.asarray(samples)
    p = np.percentile(s, [50, 90, 95, 99])
    return Latency(mean=float(s.mean()), std=float(s.std(ddof=1)) if len(s) > 1 else 0.0, min=float(s.min()),
                   p50=float(p[0]), p90=float(p[1]), p95=float(p[2]), p99=float(p[3]), max=float(s.max()),
                   throughput_ips=float(batch * 1000.0 / statistics.fmean(samples))).to_dict()


def _input_shape(runner, chw: tuple[int, ...] | None, cfg: BenchConfig, batch: int) -> tuple[int, ...]:
    if cfg.input_shape:
        return (batch, *cfg.input_shape)
    if chw:
        return (batch, *chw)
    session = getattr(runner, "session", None)
    dims: tuple = ()
    if session is not None:
        dims = tuple(session.get_inputs()[0].shape[1:])
    elif getattr(runner, "engine", None) is not None:  # TensorRT: the input's shape as built
        dims = tuple(runner.engine.get_tensor_shape(runner.input))[1:]
    if dims and all(isinstance(d, int) and d > 0 for d in dims):
        return (batch, *dims)
    raise ConfigError("the model's input has free dimensions; pass --input-shape C,H,W")


def bench_one(spec: str, backend: str, batch: int, cfg: BenchConfig,
              resolved: tuple[dict[str, Path], Path | None, tuple[int, ...] | None],
              hashes: dict[Path, str]) -> dict[str, Any]:
    """One row: a model (``resolved`` by ``model_files``; ``hashes``: SHA-256 of its files) on a backend at a batch size.
    A backend that is missing gives a 'skipped' row, and one that fails at run time a 'failed' row, so the
    other rows still run."""
    from edgeft.runtime.backends import choose

    files, artifact_dir, chw = resolved
    row: dict[str, Any] = {"model": spec, "backend": backend, "batch": batch}
    try:
        b = choose(backend, files)
    except EdgeftError as e:
        return {**row, "status": "skipped", "reason": str(e)}
    row["backend"] = b.name
    model_file = files[b.model_file]
    row["model_file"] = str(model_file)
    row["model_sha256"] = hashes[model_file]
    try:
        runner = b.make(model_file, artifact_dir, cfg.threads)
        runner.activate()
        shape = _input_shape(runner, chw, cfg, batch)
        fixed = getattr(runner, "fixed_batch", None)  # a graph exported for one batch size runs a larger one in calls
        row["calls_per_batch"] = -(-batch // fixed) if fixed and fixed < batch else 1
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        time_calls(lambda: runner.infer(x), warmup=cfg.warmup_iters, iters=1, min_seconds=cfg.warmup_s)  # warm-up
        timing = time_calls(lambda: runner.infer(x), warmup=0, iters=cfg.iters or 20,
                            min_seconds=0.0 if cfg.iters else (cfg.duration_s or 0.0))
        peak = _peak_rss_mb()
        gpu: dict[str, Any] = {}
        if hasattr(runner, "gpu_times_ms") and getattr(runner, "device", "cpu") != "cpu":
            n = max(20, min(timing["n"], 1000))
            gpu["gpu_compute_ms"] = latency_stats(runner.gpu_times_ms(x, n), batch)
            if cfg.cuda_graph:
                gpu["cuda_graph_ms"] = latency_stats(runner.gpu_times_ms(x, n, cuda_graph=True), batch)
            gpu["device_memory"] = runner.device_memory_mb()
        runner.deactivate()
    except EdgeftError as e:
        return {**row, "status": "skipped", "reason": str(e)}
    except Exception as e:  # a model that fails at run time: mark the row, keep the others
        return {**row, "status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    return {**row, "status": "ok", "input_shape": list(shape), "iters": timing["n"],
            "latency_ms": latency_stats(timing["samples_ms"], batch),
            "samples_ms": [round(v, 4) for v in timing["samples_ms"]],
            "memory": {"peak_rss_mb": round(peak, 1),
                       **({"device": gpu.pop("device_memory")} if "device_memory" in gpu else {})}, **gpu}


def _merge_rounds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same model/backend/batch measured in several interleaved rounds: percentiles from all
    samples pooled, except p50, the median of the rounds' p50s; each round's p50 is kept (their spread is the
    between-run noise a single long run cannot show)."""
    bad = next((r for r in rows if r["status"] != "ok"), None)
    if len(rows) == 1 or bad is not None:
        return bad or rows[0]
    samples = [v for r in rows for v in r["samples_ms"]]
    merged = dict(rows[0])
    round_p50 = [r["latency_ms"]["p50"] for r in rows]
    latency = latency_stats(samples, rows[0]["batch"])
    latency["p50"] = float(statistics.median(round_p50))  # one disturbed round cannot move it
    merged.update(iters=sum(r["iters"] for r in rows), samples_ms=samples, latency_ms=latency,
                  round_p50_ms=[round(v, 4) for v in round_p50], round_n=[len(r["samples_ms"]) for r in rows])
    merged["memory"] = {**rows[0]["memory"], "peak_rss_mb": max(r["memory"]["peak_rss_mb"] for r in rows)}
    return merged


def bench(models: list[str], cfg: BenchConfig, pairs: list[tuple[str, str]] | None = None,
          record: bool = True) -> dict[str, Any]:
    """Every model x backend x batch (or the given (model, backend) ``pairs`` x batch), ``cfg.rounds`` times
    interleaved, so models compared with each other see the same machine state; returns the results document.
    With ``record``, an artifact measured on both CPU runtimes keeps which was faster on this machine."""
    from edgeft.bench.tegrastats import TegrastatsSampler
    from edgeft.runtime.backends import lookup

    if pairs is None:
        pairs = [(m, b) for m in models for b in cfg.backends]
    # resolved once, before measuring: a mistyped path or a broken artifact is the user's to fix, and every round
    # of a row reads the same files
    resolved = {spec: model_files(spec) for spec in dict.fromkeys(m for m, _ in pairs)}
    hashes = {f: sha256_file(f) for files, _, _ in resolved.values() for f in files.values()}
    for name in dict.fromkeys(b for _, b in pairs):
        if name != "auto":
            lookup(name)  # so is a mistyped backend; one that is known but missing here gives a skipped row
    fp = fingerprint()
    ref_before = reference_workload_ms()
    plan = [(m, b, n) for m, b in pairs for n in cfg.batches]
    measured: list[list[dict[str, Any]]] = [[] for _ in plan]
    runs = [(r, i) for r in range(cfg.rounds) for i in range(len(plan))]
    for r, i in progress.bar(runs, desc="bench", unit="run"):
        m, b, n = plan[i]
        if r > 0 and measured[i][0]["status"] != "ok":
            continue  # a skipped or failed row stays so; do not retry it every round
        # Each round opens its own session on purpose (outside the timed loop): thread placement and memory layout
        # are fixed at session creation and are part of the run-to-run spread the rounds exist to measure.
        if TegrastatsSampler.available():
            with TegrastatsSampler() as sampler:
                row = bench_one(m, b, n, cfg, resolved[m], hashes)
            row.setdefault("memory", {})["tegrastats"] = sampler.summary()
        else:
            row = bench_one(m, b, n, cfg, resolved[m], hashes)
        measured[i].append(row)
    rows = [_merge_rounds(rs) for rs in measured]
    if cfg.memory:
        from edgeft.bench.footprint import RUNTIME_MODULES, footprints

        ok = [r for r in rows if r["status"] == "ok" and r["backend"] in RUNTIME_MODULES]
        if ok:
            progress.info(f"measuring the resident memory of {len(ok)} model(s), each in a process of its own")
        for row, fp_row in zip(ok, footprints([(r["model"], r["backend"], tuple(r["input_shape"])) for r in ok],
                                              cfg.threads)):
            row["memory"]["footprint"] = fp_row
    fp["reference_ms"] = round(statistics.median([ref_before, reference_workload_ms()]), 5)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fastest = fastest_cpu_runtimes(rows, created)
    if record:
        _record_cpu_runtimes(fastest, resolved)
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": created, "device": fp,
            "config": asdict(cfg), "results": rows, "cpu_runtime": fastest}


def fastest_cpu_runtimes(rows: list[dict[str, Any]], when: str) -> dict[str, dict[str, Any]]:
    """Per model measured on more than one CPU runtime (ONNX Runtime, OpenVINO) at batch 1: which ran it faster,
    by the median of the per-round paired ratios (each round's rows measured seconds apart, one machine state)."""
    from edgeft.runtime.backends import CPU_BACKENDS, machine_key

    out: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = {r["backend"]: r for r in rows if r["model"] == model and r["batch"] == 1 and r["status"] == "ok"
              and r["backend"] in CPU_BACKENDS and r.get("round_p50_ms")}
        if len(ok) < 2:
            continue
        (a, ra), (b, rb) = sorted(ok.items())[:2]
        if len(ra["round_p50_ms"]) != len(rb["round_p50_ms"]):
            continue
        ratios = [x / y for x, y in zip(ra["round_p50_ms"], rb["round_p50_ms"])]  # > 1: b is faster
        median = statistics.median(ratios)
        fast, slow, ratio = (b, a, median) if median > 1 else (a, b, 1 / median)
        spread = sorted(ratios) if fast == b else sorted(1 / r for r in ratios)
        out[model] = {"machine": machine_key(), "fastest": fast, "other": slow, "ratio": round(ratio, 3),
                      "range": [round(spread[0], 3), round(spread[-1], 3)], "rounds": len(ratios),
                      "p50_ms": {k: round(Latency.from_dict(v["latency_ms"]).p50, 4) for k, v in ok.items()},
                      "measured": when}
    return out


def _record_cpu_runtimes(fastest: dict[str, dict[str, Any]], resolved: dict[str, Any]) -> None:
    """Write each artifact's measured fastest CPU runtime into its meta.json (per machine), where
    ``Predictor(backend="auto")`` finds it; bare .onnx files have nowhere to keep it."""
    from edgeft import artifact

    for model, record in fastest.items():
        artifact_dir = resolved[model][1]
        if artifact_dir is None:
            continue
        a = artifact.load(artifact_dir)
        runtimes = dict(a.meta.extra.get("cpu_runtime") or {})
        runtimes[record["machine"]] = {k: v for k, v in record.items() if k != "machine"}
        artifact.update_metrics(a, {}, extra={"cpu_runtime": runtimes})


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise EdgeftError(f"results file not found: {p}")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeftError(f"{p} is not valid JSON ({e})") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise EdgeftError(f"{p} is not an edgeft bench results file (no \"schema\": \"{SCHEMA}\")")
    if d.get("schema_version") != SCHEMA_VERSION:
        raise EdgeftError(f"{p} has schema_version {d.get('schema_version')!r}; this edgeft reads {SCHEMA_VERSION}: "
                          "re-run the baseline with this version")
    return d


def table(doc: dict[str, Any]) -> str:
    lines = [f"{'model':<40} {'backend':<9} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>9} "
             f"{'model MB':>8}  status"]
    for r in doc["results"]:
        name = Path(r["model"]).name or r["model"]
        if r["status"] != "ok":
            lines.append(f"{name:<40} {r['backend']:<9} {r['batch']:>5} {'':>9} {'':>9} {'':>9} {'':>9} {'':>8}  "
                         f"{r['status']}: {r['reason'][:80]}")
            continue
        lat = Latency.from_dict(r["latency_ms"])
        own = model_mb(r)  # resident memory of the model alone (CPU backends)
        mem = f"{own:>8.0f}" if own is not None else f"{'':>8}"
        calls = r.get("calls_per_batch", 1)
        lines.append(f"{name:<40} {r['backend']:<9} {r['batch']:>5} {lat.p50:>9.3f} {lat.p90:>9.3f} "
                     f"{lat.p99:>9.3f} {lat.throughput_ips:>9.1f} {mem}  ok"
                     + (f" ({calls} sequential calls: the graph's batch is fixed; export with --dynamic-batch)"
                        if calls > 1 else ""))
    for model, f in (doc.get("cpu_runtime") or {}).items():
        lines.append(cpu_runtime_text(Path(model).name or model, f))
    return "\n".join(lines)


def cpu_runtime_text(name: str, record: dict[str, Any]) -> str:
    """One sentence: which CPU runtime ran a model faster here, by how much, over how many paired rounds."""
    return (f"fastest CPU runtime for {name} on this machine: {record['fastest']}, {record['ratio']:.2f}x over "
            f"{record['other']} (median of {record['rounds']} paired rounds, range {record['range'][0]:.2f}-"
            f"{record['range'][1]:.2f})")
