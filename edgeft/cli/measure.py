"""Commands that measure speed and guard it in CI: bench, compare (a dedicated device against a committed
baseline), gate (two models side by side on a shared runner)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeft.bench.gate import GateConfig
from edgeft.bench.harness import BenchConfig
from edgeft.cli.base import THREADS_HELP, cli, fraction, int_list, write_json


@cli.command("bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--backend", "backends", multiple=True, default=BenchConfig().backends, show_default=True,
              help="auto, ort-cpu, ov-cpu, ov-gpu, ort-cuda, ort-trt, tensorrt, torch, torch-cuda (repeatable). "
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
