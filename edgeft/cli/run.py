"""Commands that run things: the camera (infer), a whole recipe (optimize), and what this machine can do (doctor)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeft import __version__
from edgeft.cli.base import THREADS_HELP, cli, parse_overrides
from edgeft.runtime.backends import BACKENDS


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
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option("--backend", default="auto", show_default=True,
              help="auto (the fastest that runs here; on a CPU the runtime `edgeft bench` measured fastest for this "
                   "model on this machine) or one of " + ", ".join(BACKENDS) + ".")
@click.option("--batch", type=int, default=1, show_default=True, help="Frames per inference call (of one stream).")
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="JSON lines file (default: stdout).")
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--queue", "queue_size", type=int, default=8, show_default=True,
              help="Live sources: frames buffered before the oldest are dropped.")
@click.option("--reconnects", type=int, default=10, show_default=True,
              help="Live sources: reopen attempts (with back-off) before the stream counts as lost (exit 3 when "
                   "every stream has stopped).")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames (all streams together).")
@click.option("--input-size", type=int, default=None,
              help="Bare ONNX without edgeft metadata: square input size, ImageNet-style centre crop (for any other "
                   "preprocessing, import it once: edgeft import FILE.onnx --size HxW --resize ... --out ART).")
@click.option("--mean", default=None, help="Bare ONNX: per-channel mean, e.g. 0.485,0.456,0.406.")
@click.option("--std", default=None, help="Bare ONNX: per-channel std.")
@click.option("--classes", default=None, help="Bare ONNX: class names, comma-separated.")
@click.option("--source-name", "source_names", multiple=True,
              help="The name results, logs, metrics, topics and evidence give a source (default: the URL without "
                   "credentials); once per SOURCE, in order.")
@click.option("--product", "products", multiple=True,
              help="The product a source shows, decided at the policy's operating point for it (a policy chosen "
                   "--by-product); once for every SOURCE, or once per SOURCE in order.")
@click.option("--metrics-port", type=int, default=None, envvar="EDGEFT_METRICS_PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics, and the probes /healthz and /readyz; 0: a "
                   "free port. Default: $EDGEFT_METRICS_PORT (what `edgeft probe` reads too).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint binds to (0.0.0.0: every interface).")
@click.option("--ready-within", type=float, default=10.0, show_default=True, metavar="S",
              help="/readyz answers 503 when a running stream gave no frame for this many seconds.")
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
@click.option("--station", "station_name", default=None,
              help="This station's name in MQTT topics and payloads (default: the host name).")
@click.option("--mqtt", "mqtt_url", default=None, metavar="URL",
              help="Publish every decision to this MQTT broker (mqtt://[user:${PASSWORD}@]host[:port], mqtts:// for "
                   "TLS), QoS 1, on PREFIX/STREAM/decision; events on PREFIX/status.")
@click.option("--mqtt-topic", default=None, metavar="PREFIX", help="Topic prefix  [default: edgeft/STATION]")
@click.option("--mqtt-buffer", type=int, default=10000, show_default=True,
              help="Decisions kept while the broker is away; past it new ones are dropped and counted.")
@click.option("--save", "save", nargs=2, default=None, metavar="KINDS DIR",
              help="Keep the frames of these decisions (e.g. reject,review) in DIR: PNG and a JSON sidecar each.")
@click.option("--save-cap-mb", type=float, default=2048.0, show_default=True,
              help="DIR's size before the oldest kept frames are removed.")
@click.option("--save-pass-share", type=float, default=0.0, show_default=True,
              help="Also keep this share of passed frames, for audit.")
@click.option("--watch", is_flag=True,
              help="Watch MODEL (an artifact directory or a symlink to one) and swap in a new model between frames "
                   "when its meta.json changes (or on SIGHUP); a model that fails its checks is refused.")
@click.option("--opcua", "opcua_url", default=None, metavar="URL",
              help="Write each stream's latest decision to a PLC's OPC UA server (opc.tcp://[user:${PASSWORD}@]host:"
                   "port): variables NODE.Decision and NODE.Seq, see --opcua-node.")
@click.option("--opcua-node", default=None, metavar="NODEID",
              help='The node id of each stream\'s object, {stream} replaced by its name, e.g. "ns=2;s=Cell7.{stream}".')
@click.option("--realtime", is_flag=True,
              help="Read video files at their recorded frame rate, as a camera delivers them (a rehearsal of the "
                   "station with recorded footage); default: as fast as they decode.")
def infer_cmd(model: Path, sources: tuple[str, ...], backend: str, batch: int, out_path: Path | None,
              threads: int | None, queue_size: int, reconnects: int, max_frames: int | None, input_size: int | None,
              mean: str | None, std: str | None, classes: str | None, source_names: tuple[str, ...],
              products: tuple[str, ...], metrics_port: int | None, metrics_host: str, ready_within: float,
              stats_every: int | None, require_policy: bool, heatmaps_dir: Path | None, station_name: str | None,
              mqtt_url: str | None, mqtt_topic: str | None, mqtt_buffer: int, save: tuple[str, str] | None,
              save_cap_mb: float, save_pass_share: float, watch: bool, opcua_url: str | None, opcua_node: str | None,
              realtime: bool) -> None:
    """Run MODEL (artifact directory or .onnx) on each SOURCE: image, folder, glob, video, camera index or URL.

    Several sources share one model session (an inspection station's cameras); each frame's JSON line names its
    source. Exit status: 0 when every source ended, 3 when a live source was lost after --reconnects and no other
    is still running (a supervisor's Restart=on-failure brings the station back), 2 for bad input.

    Credentials in a URL are never written: results and logs name the source rtsp://***@host/path (or
    --source-name). Keep them out of shell history with ${VAR} in the URL, or EDGEFT_RTSP_PASSWORD for a URL
    that names only the user (rtsp://admin@camera/stream)."""
    from edgeft.contract import InputContract
    from edgeft.errors import ConfigError
    from edgeft.station.run import StationConfig, run_station

    contract = None
    if input_size or mean or std:
        if not (input_size and mean and std):
            raise ConfigError("--input-size, --mean and --std go together (for ONNX files without edgeft metadata)")
        try:
            m, s = [float(v) for v in mean.split(",")], [float(v) for v in std.split(",")]
        except ValueError:
            raise ConfigError(f"--mean/--std must be comma-separated numbers, got {mean!r} / {std!r}") from None
        contract = InputContract(size=(input_size, input_size), mean=m, std=s, color="GRAY" if len(m) == 1 else "RGB")
    cfg = StationConfig(model=model, sources=list(sources), names=list(source_names), products=list(products),
                        backend=backend, batch=batch,
                        threads=threads, queue_size=queue_size, reconnects=reconnects, max_frames=max_frames,
                        contract=contract, classes=classes.split(",") if classes else None,
                        metrics_port=metrics_port, metrics_host=metrics_host, ready_within_s=ready_within,
                        stats_every=stats_every, require_policy=require_policy, overlays=heatmaps_dir,
                        station=station_name, mqtt=mqtt_url, mqtt_topic=mqtt_topic, mqtt_buffer=mqtt_buffer,
                        save=save, save_cap_mb=save_cap_mb, save_pass_share=save_pass_share, watch=watch,
                        realtime=realtime, opcua=opcua_url, opcua_node=opcua_node)
    code = run_station(cfg, out_path)
    if code:
        sys.exit(code)


@cli.command("probe")
@click.option("--port", type=int, default=None, envvar="EDGEFT_METRICS_PORT",
              help="The station's metrics port  [default: $EDGEFT_METRICS_PORT]")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--alive", is_flag=True, help="Ask /healthz (the process serves) instead of /readyz (frames flow).")
@click.option("--require", "requirements", multiple=True, metavar="NAME",
              help="Without a port: exit 1 unless this doctor check or backend is usable (as `edgeft doctor --require`).")
@click.option("--timeout", type=float, default=5.0, show_default=True)
def probe_cmd(port: int | None, host: str, alive: bool, requirements: tuple[str, ...], timeout: float) -> None:
    """A container's or supervisor's health check: exit 0 when the station on PORT is ready (/readyz: the model is
    loaded and every running stream gave a frame lately), 1 when it is not or does not answer. Without a port (a
    container running something else than a station), what `edgeft doctor --require` checks."""
    import urllib.error
    import urllib.request

    if port is None:
        from edgeft import doctor as doc

        missing = doc.unmet(list(requirements), doc.run_checks())
        if missing:
            click.echo(f"not usable here: {', '.join(missing)}", err=True)
            sys.exit(1)
        return
    url = f"http://{host}:{port}/{'healthz' if alive else 'readyz'}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            click.echo(r.read().decode().strip())
    except urllib.error.HTTPError as e:
        click.echo(f"{url}: {e.code} {e.read().decode().strip()}", err=True)
        sys.exit(1)
    except (urllib.error.URLError, OSError) as e:
        click.echo(f"{url}: no answer ({getattr(e, 'reason', e)})", err=True)
        sys.exit(1)


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
@click.option("--from", "from_art", type=click.Path(path_type=Path), default=None,
              help="Fine-tune this deployed model again (the recipe's from:) instead of the pretrained weights; with "
                   "a promote: section the run's model is then judged against it.")
def optimize_cmd(recipe_path: Path, overrides: tuple[str, ...], out: Path | None, resume: bool, force: bool,
                 dry_run: bool, only: tuple[str, ...], from_art: Path | None) -> None:
    """Run a recipe: finetune -> prune -> export -> quantize -> build -> bench, then gates and a report.

    The recipe's task: names its first stage (task: anomaly: anomaly, fitted on good parts, then prune -> export ->
    quantize -> build -> bench; its report shows the test parts with their heatmaps, examples/elpv-anomaly.yaml).

    The retraining loop: with from: (or --from) the deployed model is fine-tuned again on old and new parts, and a
    promote: section judges the result against it (RUN/promotion/promotion.md).

    Exit 1 when a gate fails (after the report is written), 2 on a user error; with a promote: section, 0 promote,
    1 keep the deployed model, 3 inconclusive.
    """
    from edgeft.optimize import recipe as recipe_mod
    from edgeft.optimize.pipeline import check_only, describe, optimize

    changes = parse_overrides(overrides)
    if from_art is not None:
        changes["from"] = str(from_art)
    recipe = recipe_mod.load(recipe_path, overrides=changes)
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
    if result.promotion is not None:
        from edgeft.promote.stage import summary

        for line in summary(result.promotion):
            click.echo(line)
        click.echo(f"wrote {result.run / 'promotion' / 'promotion.md'}")
    if result.exit_code:
        sys.exit(result.exit_code)
