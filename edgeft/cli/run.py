"""Commands that run things: the camera (infer), a whole recipe (optimize), and what this machine can do (doctor)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeft import __version__, progress
from edgeft.cli.base import THREADS_HELP, cli, parse_overrides


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--require", "requirements", multiple=True, metavar="NAME",
              help="Exit 1 unless this check (e.g. tensorrt) or backend (e.g. ort-cuda) is usable; repeatable. "
                   "For container health checks.")
def doctor(as_json: bool, requirements: tuple[str, ...]) -> None:
    """What is installed and usable here, and what each missing piece disables."""
    from edgeft import doctor as doc

    checks = doc.run_checks()
    missing = doc.unmet(list(requirements), checks)
    if as_json:
        click.echo(json.dumps({**doc.as_json(checks), "unmet_requirements": missing}, indent=2))
    else:
        m = doc.machine()
        click.echo(f"edgeft {__version__} on {m['platform']}, Python {m['python']}, {m['cpu']} ({m['cpu_count']} CPUs)")
        click.echo(doc.report(checks))
    if missing:
        click.echo(f"required but not usable here: {', '.join(missing)}", err=True)
        sys.exit(1)


@cli.command("infer")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("source")
@click.option("--backend", default="auto", show_default=True,
              help="auto (the fastest that runs here; on a CPU the runtime `edgeft bench` measured fastest for this "
                   "model on this machine) or one of tensorrt, ort-trt, ort-cuda, ort-cpu, ov-cpu, ov-gpu, torch-cuda, "
                   "torch.")
@click.option("--batch", type=int, default=1, show_default=True, help="Frames per inference call.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="JSON lines file (default: stdout).")
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--queue", "queue_size", type=int, default=8, show_default=True,
              help="Live sources: frames buffered before the oldest are dropped.")
@click.option("--reconnects", type=int, default=10, show_default=True,
              help="Live sources: reopen attempts (with back-off) before giving up.")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--input-size", type=int, default=None,
              help="Bare ONNX without edgeft metadata: square input size, ImageNet-style centre crop (for any other "
                   "preprocessing, import it once: edgeft import FILE.onnx --size HxW --resize ... --out ART).")
@click.option("--mean", default=None, help="Bare ONNX: per-channel mean, e.g. 0.485,0.456,0.406.")
@click.option("--std", default=None, help="Bare ONNX: per-channel std.")
@click.option("--classes", default=None, help="Bare ONNX: class names, comma-separated.")
@click.option("--source-name", default=None,
              help="The name results, logs and metrics give the source (default: the URL without credentials).")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics (frames, classes, latency) at http://HOST:PORT/metrics; 0: a free port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint binds to (0.0.0.0: every interface).")
@click.option("--stats-every", type=int, default=None, metavar="N",
              help="Write the counters (decisions, rates, score drift, latency) as a JSON line to stderr every N "
                   "frames and at the end.")
@click.option("--require-policy", is_flag=True,
              help="Refuse a model without a decision policy (`edgeft decide`): a line that must decide should not "
                   "start without one.")
@click.option("--heatmaps", "--overlays", "heatmaps_dir", type=click.Path(path_type=Path), default=None,
              metavar="DIR",
              help="Write what the model draws over each frame to DIR (PNG): an anomaly model's heatmap (blue = a "
                   "typical good patch, red = the reject threshold), a detector's boxes with their scores.")
def infer_cmd(model: Path, source: str, backend: str, batch: int, out_path: Path | None, threads: int | None,
              queue_size: int, reconnects: int, max_frames: int | None, input_size: int | None, mean: str | None,
              std: str | None, classes: str | None, source_name: str | None, metrics_port: int | None,
              metrics_host: str, stats_every: int | None, require_policy: bool, heatmaps_dir: Path | None) -> None:
    """Run MODEL (artifact directory or .onnx) on SOURCE: image, folder, glob, video, camera index or URL.

    Credentials in a URL are never written: results and logs name the source rtsp://***@host/path (or
    --source-name). Keep them out of shell history with ${VAR} in the URL, or EDGEFT_RTSP_PASSWORD for a URL
    that names only the user (rtsp://admin@camera/stream)."""
    from edgeft.contract import InputContract
    from edgeft.errors import ConfigError
    from edgeft.redact import resolve
    from edgeft.runtime import Predictor
    from edgeft.runtime.infer import run
    from edgeft.runtime.monitor import LineMetrics, MetricsServer

    contract = None
    if input_size or mean or std:
        if not (input_size and mean and std):
            raise ConfigError("--input-size, --mean and --std go together (for ONNX files without edgeft metadata)")
        try:
            m, s = [float(v) for v in mean.split(",")], [float(v) for v in std.split(",")]
        except ValueError:
            raise ConfigError(f"--mean/--std must be comma-separated numbers, got {mean!r} / {std!r}") from None
        contract = InputContract(size=(input_size, input_size), mean=m, std=s, color="GRAY" if len(m) == 1 else "RGB")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    src = resolve(source, source_name)
    if stats_every is not None and stats_every < 1:
        raise ConfigError(f"--stats-every must be >= 1 frames, got {stats_every}")
    predictor = Predictor(model, backend=backend, threads=threads, contract=contract,
                          class_names=classes.split(",") if classes else None, require_policy=require_policy)
    if heatmaps_dir is not None and not hasattr(predictor.head, "draw"):
        predictor.close()
        raise ConfigError(f"--heatmaps needs an anomaly model (`edgeft anomaly`) or a detector (`edgeft detect`); "
                          f"{model} is a {predictor.task.name} model, which draws nothing over its frames")
    progress.info(f"backend: {predictor.backend_name} ({predictor.backend_reason})")
    if predictor.policy is not None:
        progress.info(f"decisions: {predictor.policy.text()}")
    metrics = server = None
    if metrics_port is not None or stats_every:
        metrics = LineMetrics(src.name, predictor.backend_name, predictor.class_names, predictor.policy)
    if metrics_port is not None:
        server = MetricsServer(metrics, metrics_host, metrics_port)
        progress.info(f"metrics: {server.url}")
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(out_path, "w") if out_path else sys.stdout
    try:
        stats = run(predictor, src, out, batch=batch, queue_size=queue_size, max_reconnects=reconnects,
                    max_frames=max_frames, metrics=metrics, stats_every=stats_every, heatmaps=heatmaps_dir)
    finally:
        if out_path:
            out.close()
        predictor.close()
        if server is not None:
            server.close()
    progress.info(f"{stats.frames} frames, {stats.unreadable} unreadable, {stats.dropped} dropped, "
                  f"{stats.reconnects} reconnects")


@cli.command("optimize")
@click.argument("recipe_path", metavar="RECIPE.yaml", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set prune.target_macs=0.6 --set finetune.epochs=4.")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder  [default: runs/<recipe name>]")
@click.option("--resume", is_flag=True, help="Reuse finished stages whose settings and inputs are unchanged.")
@click.option("--force", is_flag=True, help="Delete an existing run folder and start over.")
@click.option("--dry-run", is_flag=True, help="Print the resolved recipe and the plan; run nothing.")
@click.option("--only", multiple=True, metavar="STAGE",
              help="Rerun only these stages (repeatable); the others are reused from the run folder.")
def optimize_cmd(recipe_path: Path, overrides: tuple[str, ...], out: Path | None, resume: bool, force: bool,
                 dry_run: bool, only: tuple[str, ...]) -> None:
    """Run a recipe: finetune -> prune -> export -> quantize -> build -> bench, then gates and a report.

    The recipe's task: names its first stage (task: anomaly: anomaly, fitted on good parts, then prune -> export ->
    quantize -> build -> bench; its report shows the test parts with their heatmaps, examples/elpv-anomaly.yaml).

    Exit 1 when a gate fails (after the report is written), 2 on a user error.
    """
    from edgeft.optimize import recipe as recipe_mod
    from edgeft.optimize.pipeline import check_only, describe, optimize

    recipe = recipe_mod.load(recipe_path, overrides=parse_overrides(overrides))
    check_only(recipe, list(only))
    run_dir = out or Path("runs") / recipe.name
    if dry_run:
        import yaml

        click.echo(yaml.safe_dump(recipe.to_dict(), sort_keys=False).rstrip())
        click.echo(describe(recipe, run_dir, resume=resume, only=list(only)))
        return
    result = optimize(recipe, run_dir, resume=resume, force=force, only=list(only) or None)
    from edgeft.optimize.report import headline
    from edgeft.optimize.rows import table

    header, body = table(result.rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    for line in [header, *body]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    for line in headline(result.rows, result.gates):
        click.echo(line)
    if recipe.search is not None:
        from edgeft.optimize.report import search_lines
        from edgeft.optimize.search import load_result

        for line in search_lines((load_result(result.run) or {}).get("result") or {}):
            click.echo(line)
    for g in result.gates:
        click.echo(f"gate {g.gate}: {g.status} (value {g.value}, limit {g.limit}; {g.detail})")
    click.echo(f"wrote {result.report} and {result.run / 'report.md'}")
    if result.failed:
        sys.exit(1)
