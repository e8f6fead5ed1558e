"""Commands that measure speed and guard it in CI: bench, compare (a dedicated device against a committed
baseline), gate (two models side by side on a shared runner), history (results kept per device, and their drift)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeft.bench.gate import GateConfig
from edgeft.bench.harness import BenchConfig
from edgeft.cli.base import THREADS_HELP, Group, cli, fraction, int_list, write_json
from edgeft.history.drift import MIN_CHANGE
from edgeft.runtime.backends import BACKENDS, CPU_PATHS


@cli.command("bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--backend", "backends", multiple=True, default=BenchConfig().backends, show_default=True,
              help="auto, " + ", ".join(BACKENDS) + " (repeatable). "
                   "An artifact measured on ort-cpu and ov-cpu keeps which ran it faster on this machine.")
@click.option("--batch", "batches", default=",".join(map(str, BenchConfig().batches)), show_default=True,
              help="Batch sizes, e.g. 1,8.")
@click.option("--warmup-s", type=float, default=BenchConfig.warmup_s, show_default=True)
@click.option("--duration-s", type=float, default=BenchConfig.duration_s, show_default=True,
              help="Timed seconds per row and round.")
@click.option("--iters", type=int, default=None, help="Timed iterations per row (instead of --duration-s).")
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--input-shape", default=None, help="C,H,W for models with free input dimensions.")
@click.option("--cuda-graph", is_flag=True, help="GPU backends: also time CUDA-graph replay.")
@click.option("--rounds", type=int, default=BenchConfig.rounds, show_default=True,
              help="Repeat the whole plan this many times, interleaved; p50 is the median of the rounds' p50s.")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="CPU backends: measure each model's resident memory in a process of its own.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Write the results JSON here.")
def bench_cmd(models: tuple[str, ...], backends: tuple[str, ...], batches: str, warmup_s: float, duration_s: float,
              iters: int | None, threads: int | None, input_shape: str | None, cuda_graph: bool, rounds: int,
              memory: bool, out_path: Path | None) -> None:
    """Latency percentiles, throughput and memory of MODELS (artifacts or .onnx files) per backend and batch."""
    from edgeft.bench.harness import BenchConfig, bench, table

    cfg = BenchConfig(backends=list(backends), batches=int_list(batches, "--batch"), warmup_s=warmup_s,
                      duration_s=None if iters else duration_s, iters=iters, threads=threads,
                      input_shape=tuple(int_list(input_shape, "--input-shape")) if input_shape else None,
                      cuda_graph=cuda_graph, rounds=rounds, memory=memory)
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)  # a bad --out fails now, not after the measuring
    doc = bench(list(models), cfg)
    click.echo(table(doc))
    if out_path:
        write_json(out_path, doc)
        click.echo(f"wrote {out_path}")


@cli.command("compare")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option("--metric", type=click.Choice(["p50", "p90", "throughput", "memory"]), default="p50", show_default=True)
@click.option("--max-regression", default="10%", show_default=True, help="Allowed slowdown, e.g. 10% or 0.1.")
@click.option("--allow-different-device", is_flag=True, help="Compare results from different device fingerprints.")
@click.option("--no-normalize", is_flag=True, help="Do not divide out the machine's speed change (reference workload).")
@click.option("--markdown", is_flag=True, help="A Markdown table, for a pull-request comment.")
def compare_cmd(baseline: Path, current: Path, metric: str, max_regression: str, allow_different_device: bool,
                no_normalize: bool, markdown: bool) -> None:
    """Fail (exit 1) when CURRENT is slower than BASELINE beyond the threshold and beyond the measured noise."""
    from edgeft.bench.compare import compare, render
    from edgeft.bench.harness import load_results

    threshold = fraction(max_regression, "--max-regression")
    rows, summary = compare(load_results(baseline), load_results(current), metric=metric, max_regression=threshold,
                            allow_different_device=allow_different_device, normalize=not no_normalize)
    click.echo(render(rows, summary, markdown=markdown))
    if summary["failed"]:
        sys.exit(1)


@cli.command("profile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--backend", default=None, type=click.Choice(CPU_PATHS),
              help="CPU runtime to profile on (default: the one the artifact ships on, else ort-cpu).")
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--calls", type=int, default=200, show_default=True, help="Profiled calls (after 20 warm-up calls).")
@click.option("--floor/--no-floor", "with_floor", default=True, show_default=True,
              help="Also estimate this CPU's floor for the model (its MACs at the rate measured on large 1x1 "
                   "convolutions, its bytes at the measured copy bandwidth).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write the profile here.")
def profile_cmd(model: Path, backend: str | None, threads: int | None, calls: int, with_floor: bool,
                json_out: Path | None) -> None:
    """Where MODEL's time goes on a CPU runtime (batch 1): each operator's time per call from the runtime's own
    profiler (ONNX Runtime's profiler, OpenVINO's per-layer counters), grouped (depthwise, pointwise, elementwise,
    Q/DQ, layout, ...), the share of the p50 measured without profiling they account for, and the floor."""
    import os

    from edgeft import artifact
    from edgeft.bench.floor import floor
    from edgeft.bench.profile import profile
    from edgeft.errors import ConfigError
    from edgeft.runtime.backends import lookup, model_files

    if calls < 1:
        raise ConfigError(f"--calls must be >= 1, got {calls}")
    files, art_dir, chw = model_files(str(model))
    if "model.onnx" not in files:
        raise ConfigError(f"{model} has no ONNX model (it has {', '.join(files)}); profile an exported artifact")
    if chw is None:
        raise ConfigError(f"{model} is a bare ONNX file; profile its artifact directory (its input size is there)")
    meta = artifact.load(art_dir).meta
    backend = backend or (meta.extra.get("runtime") or {}).get("backend") or "ort-cpu"
    lookup(backend).require()
    n = threads or os.cpu_count() or 1
    p = profile(files["model.onnx"], (1, *chw), backend, n, calls=calls)
    click.echo(p.text())
    doc = {"profile": p.to_dict()}
    if with_floor:
        f = floor(files["model.onnx"], (1, *chw), backend, "int8" if meta.extra.get("quantized") == "int8" else "fp32",
                  n)
        click.echo(f.text(p.p50_us / 1000))
        doc["floor"] = f.to_dict()
    if json_out is not None:
        write_json(json_out, doc)


@cli.command("gate")
@click.argument("baseline")
@click.argument("candidate")
@click.option("--max-regression", default="10%", show_default=True,
              help="Fail when the candidate is slower than this (median of paired per-round ratios): 10% or 0.10.")
@click.option("--backend", default=GateConfig.backend, show_default=True, help="Runtime backend both run on.")
@click.option("--batch", type=int, default=GateConfig.batch, show_default=True)
@click.option("--threads", type=int, default=None, help=THREADS_HELP + " (both sides)")
@click.option("--time-cap-s", type=float, default=GateConfig.time_cap_s, show_default=True,
              help="Measure at most this long; an interval still straddling the threshold then is 'inconclusive'.")
@click.option("--block-s", type=float, default=GateConfig.block_s, show_default=True,
              help="Timed seconds per model and round.")
@click.option("--min-rounds", type=int, default=GateConfig.min_rounds, show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="Write the verdict with every round as JSON.")
@click.option("--markdown", is_flag=True, help="Print the verdict as Markdown (a CI job summary).")
def gate_cmd(baseline: str, candidate: str, max_regression: str, backend: str, batch: int, threads: int | None,
             time_cap_s: float, block_s: float, min_rounds: int, out_path: Path | None, markdown: bool) -> None:
    """The latency gate for a shared CI runner: BASELINE (e.g. the model built from the target branch) and
    CANDIDATE measured in one process, interleaved round by round (ABBA), until the median paired ratio's interval
    is clearly below or above the threshold. Exit 0 no regression, 1 regression (or a candidate that does not
    run), 3 inconclusive within the time cap, 2 bad input."""
    from edgeft.bench.gate import gate, render

    cfg = GateConfig(max_regression=fraction(max_regression, "--max-regression"), backend=backend, batch=batch,
                     threads=threads, time_cap_s=time_cap_s, block_s=block_s, min_rounds=min_rounds)
    result = gate(baseline, candidate, cfg)
    if out_path:
        write_json(out_path, result.to_dict())
    click.echo(render(result, markdown))
    sys.exit(result.exit_code)


@cli.group("history", cls=Group)
def history() -> None:
    """Results that are kept: bench and gate results appended to one store (SQLite file or SQLAlchemy URL), per
    device and model, with a change detector that flags a slow drift each change's gate passed."""


STORE_HELP = "The results store: a SQLite file, or a SQLAlchemy URL (postgresql+psycopg://...)  [default: $EDGEFT_HISTORY]"


def commit_of(commit: str | None) -> str:
    """The commit results belong to: ``--commit``, the CI's variable, or git's HEAD here."""
    import os
    import subprocess

    from edgeft.errors import ConfigError

    if commit:
        return commit
    for var in ("GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    raise ConfigError("which commit are these results of? name it with --commit (no git checkout here)")


@history.command("record")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--commit", default=None, help="The commit measured  [default: $GITHUB_SHA, $CI_COMMIT_SHA, or git's HEAD]")
@click.option("--name", default=None, help="The model's name in its series  [default: its file or folder name]")
def history_record(files: tuple[Path, ...], store: str | None, commit: str | None, name: str | None) -> None:
    """Append results files (edgeft bench --out, edgeft gate --out, an optimize run's NN-bench/results.json) to the
    store, all of them in one transaction."""
    from edgeft.history.records import rows_of
    from edgeft.history.store import open_store

    sha = commit_of(commit)
    rows = [r for f in files for r in rows_of(f, sha, name)]
    s = open_store(store)
    try:
        n = s.append(rows)
    finally:
        s.close()
    click.echo(f"recorded {n} result(s) of {len({(r.model, r.backend, r.batch) for r in rows})} model/backend/batch "
               f"series at commit {sha[:12]} in {s.url.split('@')[-1]}")


@history.command("show")
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--model", default=None, help="Only this model's series.")
@click.option("--device", default=None, help="Only this device key.")
@click.option("--backend", default=None, help="Only this backend.")
@click.option("--metric", default="p50_ms", show_default=True, help="p50_ms, p99_ms, throughput_ips, gate_ratio.")
@click.option("--reference", type=int, default=10, show_default=True,
              help="The series' first N points are its reference level.")
@click.option("--recent", type=int, default=3, show_default=True, help="The last N points are its current level.")
@click.option("--min-change", default=f"{MIN_CHANGE:.0%}", show_default=True,
              help="Smaller changes are never flagged; above it the series' own noise decides.")
@click.option("--check", "fail_on_drift", is_flag=True, help="Exit 1 when a series is flagged (a CI step).")
@click.option("--json", "as_json", is_flag=True, help="Print the series and verdicts as JSON.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None,
              help="Also write every series as a chart on one HTML page (SVG inside; nothing fetched).")
def history_show(store: str | None, model: str | None, device: str | None, backend: str | None, metric: str,
                 reference: int, recent: int, min_change: str, fail_on_drift: bool, as_json: bool,
                 html_out: Path | None) -> None:
    """Each series (model, device, backend, batch) of METRIC: its points, its reference and current level, and
    whether it has drifted (edgeft.history.drift states the method)."""
    from dataclasses import asdict

    from edgeft.history.series import group
    from edgeft.history.store import open_store

    s = open_store(store)
    try:
        rows = s.rows(model=model, device=device, backend=backend, metric=metric)
    finally:
        s.close()
    series = group(rows)
    verdicts = [(x, x.judge(reference, recent, fraction(min_change, "--min-change"))) for x in series]
    if as_json:
        click.echo(json.dumps([{"kind": x.kind, "device": x.device, "model": x.model, "backend": x.backend, "batch": x.batch,
                                "metric": x.metric, "points": [[r.commit, r.recorded_at, r.value] for r in x.rows],
                                "verdict": asdict(v)} for x, v in verdicts], indent=1))
    else:
        if not series:
            click.echo(f"no {metric} results in the store{' for these filters' if model or device or backend else ''}")
        for x, v in verdicts:
            flag = "DRIFT" if v.flagged else "ok"
            click.echo(f"{flag:<5} {x.title()}: {len(x.rows)} points, last {x.values[-1]:.4g} at "
                       f"{x.rows[-1].commit[:12]}; {v.reason}")
    if html_out is not None:
        from edgeft.history.plot import write

        click.echo(f"wrote {write(verdicts, html_out, reference, recent)}", err=as_json)
    if fail_on_drift and any(v.flagged for _, v in verdicts):
        sys.exit(1)
