"""The ``edgeft`` command line: a thin shell over the stage functions.

Every command imports its stage lazily, so ``edgeft --help`` loads neither torch nor onnxruntime nor
tensorrt. A user error (:class:`~edgeft.errors.EdgeftError`, or a path that cannot be read or written)
prints one line and exits 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path

import click

from edgeft import __version__, progress
from edgeft.anomaly.config import AnomalyConfig as AnomalyDefaults
from edgeft.bench.gate import GateConfig
from edgeft.bench.harness import BenchConfig
from edgeft.engine.config import CLASS_BALANCE, DEVICES, MODES, FinetuneConfig
from edgeft.errors import EdgeftError
from edgeft.redact import redact_text


# Optional dependencies and the extra that installs each (the base install is the camera runtime's core).
EXTRAS = {"torch": "train", "torchvision": "train", "timm": "train", "safetensors": "train", "onnx": "onnx",
          "onnxslim": "onnx", "onnxruntime": "runtime", "torch_pruning": "prune", "elpv_dataset": "demo"}


def _default(config, name: str) -> str:
    """An option's "[default: X]" from its stage config, where the option itself defaults to None so that a
    config file or recipe can set it: the default is declared once, in the config."""
    return f"  [default: {getattr(config, name)}]"


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        def debug() -> bool:  # set by the group's callback, which runs inside super().invoke
            return bool(ctx.obj and ctx.obj.get("debug"))

        try:
            return super().invoke(ctx)
        except EdgeftError as e:
            if debug():
                raise
            click.echo(f"error: {redact_text(str(e))}", err=True)
            ctx.exit(e.exit_code)
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            if debug() or top not in EXTRAS:
                raise
            click.echo(f"error: this command needs {top}, which is not installed here: pip install "
                       f"'edgeft[{EXTRAS[top]}]' (the runtime-only install has no training stack)", err=True)
            ctx.exit(2)
        except OSError as e:  # a path the user gave that cannot be read or written, or a full disk
            if debug() or not (e.filename or e.errno == errno.ENOSPC):
                raise
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"error: {e.strerror or e}{where}; check the path, its permissions and the free disk space",
                       err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; no partial artifact was written (fine-tuning keeps its last finished epoch in "
                       "OUT.work/: rerun with --resume to continue)", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgeft")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status lines (for CI logs).")
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors too.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool) -> None:
    """Fine-tune a pretrained image model and ship it, pruned and INT8, to edge GPUs.

    Stages: finetune → prune → quantize → export → build → bench → compare; every stage reads an
    artifact directory and writes a new one.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if quiet:
        progress.set_quiet(True)


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


@cli.group(cls=_Group)
def data() -> None:
    """Prepare data sets."""


@data.command("elpv")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of the stratified split.")
@click.option("--split", "fractions", default="0.70,0.15,0.15", show_default=True,
              help="train,val,test fractions.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def data_elpv(out: Path, seed: int, fractions: str, force: bool) -> None:
    """Build the ELPV solar-cell demo set (functional vs defective) as an ImageFolder in OUT."""
    from edgeft.data import elpv
    from edgeft.errors import ConfigError

    try:
        fr = tuple(float(f) for f in fractions.split(","))
    except ValueError:
        raise ConfigError(f"--split must be three numbers like 0.70,0.15,0.15, got {fractions!r}") from None
    if len(fr) != 3:
        raise ConfigError(f"--split must be three numbers like 0.70,0.15,0.15, got {fractions!r}")
    counts = elpv.build(out, fractions=fr, seed=seed, force=force)  # type: ignore[arg-type]
    for split, c in counts.items():
        click.echo(f"{split:<5} " + "  ".join(f"{k}={c[k]}" for k in elpv.CLASSES))
    click.echo(f"wrote {out} (images CC BY-NC-SA 4.0, see {out / 'LICENSE-DATA.txt'})")


def _load_config(path: Path | None) -> dict:
    if path is None:
        return {}
    import yaml

    from edgeft.errors import ConfigError

    try:
        d = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config {path} must be a mapping of option: value")
    return d.get("finetune", d)


@cli.command()
@click.option("--model", "model", default=None, help=f"timm architecture{_default(FinetuneConfig, 'model')}")
@click.option("--weights", default=None,
              help="Pretrained weights: a .pth/.pt/.safetensors file, 'package:efficientnet_lite0', 'none' (random "
                   "initialisation), or 'auto' (the weights a package ships for --model)"
                   f"{_default(FinetuneConfig, 'weights')}")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="ImageFolder: train/ val/ [test/].")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="YAML with FinetuneConfig fields (a top-level 'finetune:' mapping or plain fields).")
@click.option("--mode", type=click.Choice(MODES), default=None, help=f"What trains{_default(FinetuneConfig, 'mode')}")
@click.option("--trainable-blocks", type=int, default=None,
              help="partial: last N blocks train  [default: half of the model's blocks]")
@click.option("--epochs", type=int, default=None, help=_default(FinetuneConfig, "epochs"))
@click.option("--batch-size", type=int, default=None, help=_default(FinetuneConfig, "batch_size"))
@click.option("--lr", type=float, default=None, help=_default(FinetuneConfig, "lr"))
@click.option("--image-size", type=int, default=None, help="Square input size (overrides the weights' default).")
@click.option("--resize", type=click.Choice(["shorter_side_center_crop", "stretch"]), default=None)
@click.option("--tta-views", type=click.Choice(["1", "2", "4", "8"]), default=None,
              help="Flip/rotation views averaged at evaluation; recorded in the artifact."
                   + _default(FinetuneConfig, "tta_views"))
@click.option("--class-balance", type=click.Choice(CLASS_BALANCE), default=None,
              help=_default(FinetuneConfig, "class_balance"))
@click.option("--device", type=click.Choice(DEVICES), default=None, help=_default(FinetuneConfig, "device"))
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option("--seed", type=int, default=None, help=_default(FinetuneConfig, "seed"))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other FinetuneConfig field, e.g. --set label_smoothing=0.05 --set augment.rotate_deg=10.")
@click.option("--resume", is_flag=True, help="Continue from OUT.work/last.pt (kept after Ctrl-C or a crash).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def finetune(data: Path, out: Path, config_path: Path | None, overrides: tuple[str, ...], resume: bool, force: bool,
             **options) -> None:
    """Fine-tune a pretrained model on an ImageFolder and write a PyTorch artifact with its metrics."""
    from edgeft.finetune import FinetuneConfig
    from edgeft.finetune import finetune as run
    from edgeft.metrics import split_metrics

    d = _load_config(config_path)
    d.update(parse_overrides(overrides))
    cli_names = {"model": "model", "weights": "weights", "mode": "mode", "trainable_blocks": "trainable_blocks",
                 "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "image_size": "image_size",
                 "resize": "resize", "tta_views": "tta_views", "class_balance": "class_balance", "device": "device",
                 "threads": "threads", "seed": "seed"}
    for opt, field_name in cli_names.items():
        if options.get(opt) is not None:
            d[field_name] = int(options[opt]) if opt == "tta_views" else options[opt]
    if str(d.get("weights", "")).lower() == "none":
        d["weights"] = None
    cfg = FinetuneConfig.from_dict(d)
    art = run(cfg, data, out, force=force, resume=resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    m = art.meta.metrics
    for split in ("val", "test", "test_tta"):
        if split in m:
            click.echo(split_metrics(m, split).summary(art.meta.class_names, title=f"{split}:"))
    click.echo(f"trained {m['epochs_run']} epochs (best {m['best_epoch']}) in {m['train_seconds']:.0f}s, "
               f"total {m['total_seconds']:.0f}s, peak memory {m['peak_rss_mb']:.0f} MB")
    click.echo(f"wrote {art.path}")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_overrides(items: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs into a nested dict; values parsed as YAML scalars (never eval'd)."""
    import yaml

    from edgeft.errors import ConfigError

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed = float(value) if _FLOAT.fullmatch(value) else yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a group of options")
        node[parts[-1]] = parsed
    return out


@cli.command("anomaly")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--good", required=True, help="The class folder of good parts in train/ (the only one fitted on).")
@click.option("--model", default=AnomalyDefaults.model, show_default=True, help="timm backbone.")
@click.option("--weights", default="auto", show_default=True,
              help="auto (the weights a package ships), package:NAME, or a .pth/.safetensors file.")
@click.option("--method", type=click.Choice(["padim", "patchcore"]), default=AnomalyDefaults.method,
              show_default=True, help="padim: a Gaussian per position (parts in a fixture); patchcore: nearest good "
                                      "patch anywhere (a coreset bank).")
@click.option("--layers", default=",".join(map(str, AnomalyDefaults().layers)), show_default=True,
              help="timm feature levels of the backbone, comma-separated (Lite0: 2 = stride 8, 3 = stride 16).")
@click.option("--image-size", type=int, default=AnomalyDefaults.image_size, show_default=True)
@click.option("--resize", type=click.Choice(["stretch", "shorter_side_center_crop"]), default="stretch",
              show_default=True)
@click.option("--pool", type=int, default=AnomalyDefaults.pool, show_default=True,
              help="Neighbourhood averaged around each patch.")
@click.option("--grid", type=int, default=None, help="Heatmap side  [default: the deepest level's map]")
@click.option("--dims", type=int, default=None,
              help="Keep this many feature channels (a seeded random subset): smaller statistics  [default: all]")
@click.option("--storage", type=click.Choice(["fp32", "fp16"]), default=AnomalyDefaults.storage,
              show_default=True,
              help="The statistics (inverse covariances / bank) as stored: fp16 halves them; distances stay FP32.")
@click.option("--coreset", type=float, default=AnomalyDefaults.coreset, show_default=True,
              help="patchcore: bank size as a fraction of all good patches.")
@click.option("--max-bank", type=int, default=AnomalyDefaults.max_bank, show_default=True)
@click.option("--target-recall", type=float, default=None,
              help="Threshold on val catching this share of anomalous parts  [default: 0.95 unless another rule]")
@click.option("--max-false-reject", type=float, default=None)
@click.option("--escape-cost", type=float, default=None)
@click.option("--false-reject-cost", type=float, default=1.0, show_default=True)
@click.option("--review-budget", type=float, default=None)
@click.option("--threads", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def anomaly_cmd(data: Path, out: Path, good: str, model: str, weights: str, method: str, layers: str,
                image_size: int, resize: str, pool: int, grid: int | None, dims: int | None, storage: str,
                coreset: float, max_bank: int,
                target_recall: float | None, max_false_reject: float | None, escape_cost: float | None,
                false_reject_cost: float, review_budget: float | None, threads: int | None, seed: int,
                force: bool) -> None:
    """Fit an anomaly model from DATA/train/GOOD alone (no defect labels): a score and a heatmap per image.
    The threshold is chosen on val (good and anomalous images); test, if present, is scored once at the end."""
    from edgeft.anomaly import AnomalyConfig, fit
    from edgeft.metrics import read

    if target_recall is None and max_false_reject is None and escape_cost is None:
        target_recall = 0.95
    cfg = AnomalyConfig(good=good, model=model, weights=weights, method=method, layers=_int_list(layers, "--layers"),
                        image_size=image_size, resize=resize, pool=pool, grid=grid, dims=dims, storage=storage,
                        coreset=coreset, max_bank=max_bank, target_recall=target_recall,
                        max_false_reject=max_false_reject, escape_cost=escape_cost,
                        false_reject_cost=false_reject_cost, review_budget=review_budget, threads=threads, seed=seed)
    art = fit(cfg, data, out, force=force)
    m = read(art.meta.metrics, "anomaly")
    click.echo(f"{m.method} on {m.good_images} good images in {m.fit_s:.0f} s, {m.bank_bytes / 1e6:.1f} MB of "
               "statistics")
    for split, d in (("val", m.val), ("test", m.test)):
        if d is not None:
            click.echo(f"{split}: image AUROC {d.auroc:.3f}, AP {d.average_precision:.3f} ({d.n_positive} anomalous, "
                       f"{d.n_negative} good)")
    if m.test_policy is not None:
        from edgeft.decision import format_outcome

        click.echo(f"test at the val threshold: {format_outcome(m.test_policy)}")
    if m.test_pixel_auroc is not None:
        click.echo(f"test pixel AUROC {m.test_pixel_auroc:.3f} ({m.test_masks} anomalous images with a mask)")
    click.echo(f"wrote {art.path}")


@cli.command("eval")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="ImageFolder with the split.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--tta-views", type=click.Choice(["1", "2", "4", "8"]), default=None,
              help="Override the artifact's recorded test-time views.")
@click.option("--backend", default=None,
              help="Runtime backend that runs the model (auto, ort-cpu, ov-cpu, ov-gpu, ort-cuda, ort-trt, tensorrt, "
                   "torch, torch-cuda)"
                   "  [default: torch for PyTorch artifacts, ort-cpu for ONNX, tensorrt for engines]")
@click.option("--positive", multiple=True, metavar="CLASS",
              help="A 'not OK' class (repeatable): AUROC, average precision and operating points (recall at fixed "
                   "false-reject rates, false rejects at fixed recalls) for it.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics as JSON.")
def eval_cmd(artifact: Path, data: Path, split: str, tta_views: str | None, backend: str | None,
             positive: tuple[str, ...], as_json: bool) -> None:
    """Accuracy, balanced accuracy, per-class precision/recall/F1 and confusion matrix of any artifact a backend of
    the runtime can run (PyTorch, ONNX, a TensorRT engine where TensorRT exists)."""
    from edgeft import artifact as art_mod
    from edgeft.data import load_split
    from edgeft.evaluate import classifier_only, evaluate

    art = art_mod.load(artifact)
    classifier_only(art)
    s = load_split(data, split, art.meta.input, classes=art.meta.class_names)
    m = evaluate(art, s, tta_views=int(tta_views) if tta_views else None, backend=backend, positive=list(positive))
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
    else:
        click.echo(m.summary(art.meta.class_names, title=f"{artifact} on {data}/{split} "
                                                                 f"(tta views {m.tta_views}):"))
        if m.decisions:
            click.echo(m.decisions.summary())
        if m.policy:
            from edgeft.decision import format_outcome, read_policy

            click.echo(f"  policy: {read_policy(art.meta.extra).text()}")
            click.echo(f"  on {split}: {format_outcome(m.policy)}")


@cli.command("decide")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="ImageFolder with a val/ split: the policy is chosen there, never on test.")
@click.option("--positive", multiple=True, required=True, metavar="CLASS",
              help="A 'not OK' class (repeatable); the score is their total probability.")
@click.option("--target-recall", type=float, default=None, help="Catch at least this share of val's defective "
              "parts (0.95) with the fewest false rejects.")
@click.option("--max-false-reject", type=float, default=None, help="Reject at most this share of val's good parts "
              "(0.05) and catch the most defects; with --target-recall, both must hold.")
@click.option("--escape-cost", type=float, default=None, help="The cost of a missed defect, against "
              "--false-reject-cost: the threshold of least total cost on val.")
@click.option("--false-reject-cost", type=float, default=1.0, show_default=True)
@click.option("--review-budget", type=float, default=None, help="A review band: at most this share of parts (0.05) "
              "goes to a person, the least certain of those not passed.")
@click.option("--backend", default=None, help="Runtime backend that scores val (default: as `edgeft eval`).")
def decide_cmd(artifact: Path, data: Path, positive: tuple[str, ...], target_recall: float | None,
               max_false_reject: float | None, escape_cost: float | None, false_reject_cost: float,
               review_budget: float | None, backend: str | None) -> None:
    """Choose ARTIFACT's decision policy (pass / review / reject) on the val split and write it into the artifact,
    where `edgeft infer` and Predictor apply it. With a test/ split, prints what it does there."""
    from edgeft import artifact as art_mod
    from edgeft.data import load_split
    from edgeft.data.imagefolder import find_splits
    from edgeft.decision import Rule, format_outcome
    from edgeft.errors import DataError
    from edgeft.evaluate import choose_policy, classifier_only, evaluate

    rule = Rule(target_recall=target_recall, max_false_reject=max_false_reject, escape_cost=escape_cost,
                false_reject_cost=false_reject_cost, review_budget=review_budget)
    art = art_mod.load(artifact)
    classifier_only(art)
    if "val" not in find_splits(data):
        raise DataError(f"{data} has no val/ split: a policy is chosen on val, never on test; add one")
    val = load_split(data, "val", art.meta.input, classes=art.meta.class_names)
    policy = choose_policy(art, val, rule, list(positive), backend=backend)
    click.echo(f"{artifact}: {policy.text()}")
    if "test" in find_splits(data):
        m = evaluate(art, load_split(data, "test", art.meta.input, classes=art.meta.class_names), tta_views=1,
                     backend=backend)
        click.echo(f"  on test: {format_outcome(m.policy)}; AUROC {m.decisions.auroc:.3f}")


@cli.command("prune")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="ImageFolder the model was tuned on.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--target-macs", type=float, default=None, help="Fraction of MACs to keep  [default: 0.5]")
@click.option("--target-params", type=float, default=None, help="Fraction of parameters to keep (instead of MACs).")
@click.option("--target-tolerance", type=float, default=0.02, show_default=True,
              help="Landing further below the target than this fraction of the parent's is reported, with why.")
@click.option("--importance", type=click.Choice(["l2", "taylor", "bn-scale"]), default="l2", show_default=True)
@click.option("--steps", type=int, default=40, show_default=True, help="Pruning steps; importance re-estimated between.")
@click.option("--round-to", type=int, default=8, show_default=True, help="Keep channel counts multiples of this.")
@click.option("--max-layer-ratio", type=float, default=0.7, show_default=True,
              help="At most this fraction of any layer's channels is removed.")
@click.option("--ignore", multiple=True, metavar="LAYER", help="Layer name to leave unpruned (repeatable).")
@click.option("--recover-epochs", type=int, default=4, show_default=True, help="Recovery fine-tuning epochs (0: none).")
@click.option("--recover-lr", type=float, default=5e-4, show_default=True)
@click.option("--recover-mode", type=click.Choice(["full", "partial"]), default="full", show_default=True,
              help="partial: train only the blocks the parent's fine-tuning trained, on cached features (fast on CPU).")
@click.option("--recover-views", type=click.Choice(["1", "2", "4", "8"]), default=None,
              help="Partial recovery: augmented views cached per image  [default: the parent's]")
@click.option("--distill/--no-distill", default=True, show_default=True,
              help="Distil from the unpruned parent during recovery.")
@click.option("--threads", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def prune_cmd(artifact: Path, data: Path, out: Path, target_macs: float | None, target_params: float | None,
              target_tolerance: float, importance: str, steps: int, round_to: int, max_layer_ratio: float,
              ignore: tuple[str, ...], recover_epochs: int, recover_lr: float, recover_mode: str,
              recover_views: str | None, distill: bool,
              threads: int | None, seed: int, force: bool) -> None:
    """Structured channel pruning to a MACs target, then recovery fine-tuning (torch-pruning).

    On an anomaly model (`edgeft anomaly`) the backbone is pruned except its feature levels' layers, recovers by
    distilling its own unpruned features on the good training images (no label), and its statistics and threshold
    are fitted again."""
    from edgeft.metrics import read, split_metrics
    from edgeft.prune import PruneConfig, prune

    if target_macs is None and target_params is None:
        target_macs = 0.5
    cfg = PruneConfig(target_macs=target_macs, target_params=target_params, target_tolerance=target_tolerance,
                      importance=importance, steps=steps,
                      round_to=round_to, max_layer_ratio=max_layer_ratio, ignore=list(ignore),
                      recover_epochs=recover_epochs, recover_lr=recover_lr, recover_mode=recover_mode,
                      recover_views=int(recover_views) if recover_views else None, distill=distill, seed=seed,
                      threads=threads)
    art = prune(artifact, data, out, cfg, force=force)
    a = read(art.meta.metrics, "anomaly_prune")
    if a is not None:
        fit = read(art.meta.metrics, "anomaly")
        click.echo(f"MACs {a.macs_before / 1e6:.1f}M -> {a.macs_after / 1e6:.1f}M, params {a.params_before / 1e6:.2f}M "
                   f"-> {a.params_after / 1e6:.2f}M: {a.target.text()}")
        if a.distill_loss:
            click.echo(f"feature distillation loss {a.distill_loss[0]:.4f} -> {a.distill_loss[-1]:.4f} in "
                       f"{len(a.distill_loss) - 1} epoch(s)")
        for split, d in (("val", fit.val), ("test", fit.test)):
            if d is not None:
                click.echo(f"{split} AUROC {d.auroc:.4f}")
        click.echo(f"wrote {art.path}")
        return
    p = read(art.meta.metrics, "prune")
    click.echo(f"MACs {p.macs_before / 1e6:.1f}M -> {p.macs_after / 1e6:.1f}M, "
               f"params {p.params_before / 1e6:.2f}M -> {p.params_after / 1e6:.2f}M: {p.target.text()}")
    line = (f"{p.eval_split} accuracy: before {p.accuracy_before.accuracy * 100:.2f}%, "
            f"after pruning {p.accuracy_after_prune.accuracy * 100:.2f}%")
    recovered = split_metrics(art.meta.metrics, p.eval_split)
    if recovered and recover_epochs:
        line += f", after recovery {recovered.accuracy * 100:.2f}%"
    click.echo(line)
    lat = p.ort_cpu_latency
    if lat:
        click.echo(f"ONNX Runtime CPU latency (batch 1, {lat['threads']} threads, p50): parent "
                   f"{lat['parent']['p50_ms']:.2f} ms, pruned {lat['pruned']['p50_ms']:.2f} ms ({lat['speedup']:.2f}x)")
    click.echo(f"wrote {art.path}")


@cli.command("export")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="ONNX artifact directory to write.")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Batch dimension free instead of 1.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim.")
@click.option("--data", type=click.Path(path_type=Path), help="ImageFolder for the parity check on real images.")
@click.option("--n", "n_images", type=int, default=64, show_default=True, help="Images for the parity check.")
@click.option("--gray-input", is_flag=True,
              help="Monochrome cameras: a 1-channel model, the stem folded (exact; parity on --data proves it).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def export_cmd(artifact: Path, out: Path, opset: int, dynamic_batch: bool, no_simplify: bool, data: Path | None,
               n_images: int, gray_input: bool, force: bool) -> None:
    """Export a PyTorch artifact to ONNX: checked, simplified, parity-tested against PyTorch."""
    from edgeft.export.stage import export
    from edgeft.metrics import read

    art = export(artifact, out, opset=opset, dynamic_batch=dynamic_batch, do_simplify=not no_simplify, data=data,
                 n=n_images, force=force, gray_input=gray_input)
    o = read(art.meta.metrics, "onnx")
    click.echo(f"opset {o.opset}, {o.nodes} nodes, {o.size_bytes / 1e6:.2f} MB")
    p = read(art.meta.metrics, "parity")
    if p and p.min_map_correlation is not None:
        click.echo(f"parity vs PyTorch on {p.n} {p.split} images: scores within {p.max_rel_diff:.1e} relative, "
                   f"heatmaps correlated >= {p.min_map_correlation:.5f}")
    elif p:
        click.echo(f"parity vs PyTorch on {p.n} {p.split} images: max abs diff {p.max_abs_diff:.2e} "
                   f"({p.max_rel_diff:.1e} of the logit scale), top-1 agreement {p.top1_agreement * 100:.1f}%")
    click.echo(f"wrote {art.path}")


@cli.command("calibrate")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Manifest JSON to write.")
@click.option("--n", "n_images", type=int, default=512, show_default=True, help="Images, balanced over classes.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--artifact", "artifact_path", type=click.Path(path_type=Path),
              help="Pin the manifest to this artifact's input contract.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def calibrate_cmd(data: Path, out: Path, n_images: int, split: str, seed: int, artifact_path: Path | None,
                  force: bool) -> None:
    """Write a class-balanced calibration manifest (paths + content hashes) for reproducible INT8 builds."""
    from edgeft import artifact as art_mod
    from edgeft.data import calibration

    art_mod.refuse_existing(out, force)  # a manifest pins INT8 builds: replacing one is a decision, not a side effect
    contract = art_mod.load(artifact_path).meta.input if artifact_path else None
    m = calibration.create(data, n=n_images, split=split, seed=seed, contract=contract)
    calibration.save(m, out)
    counts = {c: sum(e["label"] == c for e in m.entries) for c in m.classes}
    click.echo(f"wrote {out}: {len(m.entries)} images ({', '.join(f'{k}={v}' for k, v in counts.items())})")


@cli.command("quantize")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="INT8 ONNX artifact directory to write.")
@click.option("--calib", required=True, type=click.Path(path_type=Path), help="Manifest from `edgeft calibrate`.")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Data folder: calibration images and the split used to report accuracy.")
@click.option("--method", type=click.Choice(["ptq", "qat"]), default="ptq", show_default=True,
              help="ptq: calibrate and quantize; qat: fine-tune with fake quantization first.")
@click.option("--epochs", type=int, default=2, show_default=True, help="QAT fine-tuning epochs.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="QAT learning rate.")
@click.option("--qat-mode", type=click.Choice(["full", "partial"]), default="full", show_default=True,
              help="QAT: train every layer, or only the blocks the parent's fine-tuning trained (cached prefix).")
@click.option("--target", type=click.Choice(["ort-cpu", "tensorrt"]), default="ort-cpu", show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="percentile",
              show_default=True)
@click.option("--exclude", multiple=True, metavar="NODE", help="ONNX node to keep in FP32 (repeatable).")
@click.option("--no-auto-exclude", is_flag=True, help="ort-cpu: do not measure and exclude slow INT8 layers.")
@click.option("--threads", type=int, default=2, show_default=True, help="Threads for latency measurement.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def quantize_cmd(artifact: Path, out: Path, calib: Path, data: Path, method: str, epochs: int, lr: float, qat_mode: str,
                 target: str, calib_method: str, exclude: tuple[str, ...], no_auto_exclude: bool, threads: int,
                 force: bool) -> None:
    """INT8 post-training quantization to a QDQ ONNX artifact, target-aware (ONNX Runtime CPU or TensorRT)."""
    from edgeft.metrics import read, split_metrics
    from edgeft.quantize.ptq import QuantizeConfig, quantize

    cfg = QuantizeConfig(method=method, target=target, calib_method=calib_method, exclude=list(exclude),
                         auto_exclude=not no_auto_exclude, threads=threads)
    if method == "qat":
        from edgeft import artifact as art_mod
        from edgeft.errors import ConfigError
        from edgeft.quantize.qat import qat
        from edgeft.runtime.anomaly_graph import is_anomaly

        if is_anomaly(art_mod.load(artifact).meta.extra):
            raise ConfigError(f"{artifact} is an anomaly model: QAT trains on labels it does not have; use --method ptq "
                              "(calibrated on good parts)")
        art = qat(artifact, out, cfg, calib, data, epochs=epochs, lr=lr, force=force, mode=qat_mode)
    else:
        art = quantize(artifact, out, cfg, calib, data, force=force)
    m = art.meta.metrics
    s = m["eval_split"]
    if "anomaly_fp32" in m:
        a = read(m, "anomaly")
        d = a.test if s == "test" else a.val
        if d is not None:
            click.echo(f"{s} image AUROC: FP32 {m['anomaly_fp32']['auroc']:.4f}, INT8 {d.auroc:.4f}")
        moved = m["int8_vs_fp32"]
        click.echo(f"INT8 vs FP32: scores within {moved['max_rel_score_diff']:.1e} relative, heatmaps correlated "
                   f"{moved['median_map_correlation']:.4f} (median; least {moved['min_map_correlation']:.4f})")
        if a.test_policy is not None:
            from edgeft.decision import format_outcome

            click.echo(f"test at the INT8 model's own val threshold: {format_outcome(a.test_policy)}")
    else:
        int8, fp32 = split_metrics(m, s), split_metrics(m, f"{s}_fp32")
        if f"{s}_fp32_parent" in m:
            click.echo(f"{s} accuracy of the FP32 parent: {split_metrics(m, s + '_fp32_parent').accuracy * 100:.2f}%; "
                       f"after QAT + INT8 {int8.accuracy * 100:.2f}% (drop {m['accuracy_drop_vs_parent_pp']:.2f} pp)")
        click.echo(f"{s} accuracy: FP32 {fp32.accuracy * 100:.2f}%, INT8 {int8.accuracy * 100:.2f}% "
                   f"(drop {m['accuracy_drop_pp']:.2f} pp; balanced {int8.balanced_accuracy * 100:.2f}%)")
    lat = m["ort_cpu_latency"]
    click.echo(f"ONNX Runtime CPU p50 (batch 1, {lat['threads']} threads): FP32 {lat['fp32_p50_ms']:.2f} ms, "
               f"INT8 {lat['int8_p50_ms']:.2f} ms ({lat['speedup']:.2f}x); size {read(m, 'size').ratio:.1f}x smaller")
    groups = art.meta.extra["excluded_groups"]
    if groups:
        click.echo("kept in FP32: " + ", ".join(
            f"{g['group']} ({g['nodes']} nodes, INT8 took {1 / g['ratio']:.2f}x the time; {g['rule']})" for g in groups))
    click.echo(f"wrote {art.path}")


@cli.command("infer")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("source")
@click.option("--backend", default="auto", show_default=True,
              help="auto (the fastest that runs here; on a CPU the runtime `edgeft bench` measured fastest for this "
                   "model on this machine) or one of tensorrt, ort-trt, ort-cuda, ort-cpu, ov-cpu, ov-gpu, torch-cuda, "
                   "torch.")
@click.option("--batch", type=int, default=1, show_default=True, help="Frames per inference call.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), help="JSON lines file (default: stdout).")
@click.option("--threads", type=int, default=None, help="CPU threads for the backend.")
@click.option("--queue", "queue_size", type=int, default=8, show_default=True,
              help="Live sources: frames buffered before the oldest are dropped.")
@click.option("--reconnects", type=int, default=10, show_default=True,
              help="Live sources: reopen attempts (with back-off) before giving up.")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--input-size", type=int, default=None, help="Bare ONNX without edgeft metadata: square input size.")
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
@click.option("--heatmaps", "heatmaps_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Anomaly models: write each frame's heatmap over the part to DIR (PNG; blue = a typical good "
                   "patch, red = the reject threshold).")
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
    if heatmaps_dir is not None and predictor.anomaly is None:
        predictor.close()
        raise ConfigError(f"--heatmaps needs an anomaly model (`edgeft anomaly`); {model} is a classifier")
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


def _int_list(value: str, option: str) -> list[int]:
    from edgeft.errors import ConfigError

    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {value!r}") from None


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
@click.option("--threads", type=int, default=None, help="CPU threads for the backend.")
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

    cfg = BenchConfig(backends=list(backends), batches=_int_list(batches, "--batch"), warmup_s=warmup_s,
                      duration_s=None if iters else duration_s, iters=iters, threads=threads,
                      input_shape=tuple(_int_list(input_shape, "--input-shape")) if input_shape else None,
                      cuda_graph=cuda_graph, rounds=rounds, memory=memory)
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)  # a bad --out fails now, not after the measuring
    doc = bench(list(models), cfg)
    click.echo(table(doc))
    if out_path:
        _write_json(out_path, doc)
        click.echo(f"wrote {out_path}")


def _fraction(value: str, option: str) -> float:
    """A share given as a percentage (10%) or a fraction (0.1)."""
    from edgeft.errors import ConfigError

    text = value.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"{option} takes a percentage like 10% or a fraction like 0.1, got {text!r}") from None


def _write_json(path: Path, doc: dict) -> None:
    """``doc`` as JSON at ``path``, atomically (a temp file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


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

    threshold = _fraction(max_regression, "--max-regression")
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
@click.option("--threads", type=int, default=None, help="CPU threads for the backend (both sides).")
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

    cfg = GateConfig(max_regression=_fraction(max_regression, "--max-regression"), backend=backend, batch=batch,
                     threads=threads, time_cap_s=time_cap_s, block_s=block_s, min_rounds=min_rounds)
    result = gate(baseline, candidate, cfg)
    if out_path:
        _write_json(out_path, result.to_dict())
    click.echo(render(result, markdown))
    sys.exit(result.exit_code)


@cli.command("compare-backends")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="ImageFolder with real images.")
@click.option("--reference", "reference_dir", type=click.Path(path_type=Path),
              help="PyTorch artifact to compare against (default: the first torch artifact given or in the lineage).")
@click.option("--n", "n_images", type=int, default=64, show_default=True)
def compare_backends_cmd(artifacts: tuple[Path, ...], data: Path, reference_dir: Path | None, n_images: int) -> None:
    """The same real images through every available backend vs the PyTorch reference; exit 1 on a failure."""
    from edgeft import artifact as art_mod
    from edgeft.data import load_split
    from edgeft.data.imagefolder import find_splits
    from edgeft.errors import ArtifactError
    from edgeft.models.inference import torch_logits
    from edgeft.models import from_artifact
    from edgeft.runtime.compare_backends import compare_backends, precision_of, render

    loaded = [art_mod.load(a) for a in artifacts]
    if reference_dir is None:
        reference_dir = next((a.path for a in loaded if a.meta.kind == "torch"), None)
        for a in loaded:
            for entry in reversed(a.meta.lineage):
                if reference_dir is None and entry.get("parent") and Path(entry["parent"]).is_dir():
                    if art_mod.load(entry["parent"]).meta.kind == "torch":
                        reference_dir = Path(entry["parent"])
    if reference_dir is None:
        raise ArtifactError("no PyTorch reference found; pass --reference with the fine-tuned artifact")
    ref = art_mod.load(reference_dir, kind="torch")
    split = "test" if "test" in find_splits(data) else "val"
    prepared: dict[str, object] = {}

    def images_for(contract):  # the same files, prepared per each model's contract (gray input, other sizes)
        key = json.dumps(contract.to_dict(), sort_keys=True)
        if key not in prepared:
            prepared[key] = load_split(data, split, contract, classes=ref.meta.class_names, limit=n_images).images
        return prepared[key]

    images = images_for(ref.meta.input)
    reference = torch_logits(from_artifact(ref), images, ref.meta.input, 32, 1, "cpu", False, desc="reference")
    precision = max((precision_of(a.meta) for a in loaded), key=["fp32", "fp16", "int8"].index)
    rows = compare_backends([a.path for a in loaded], images_for, reference, precision)
    click.echo(render(rows, precision))
    if any(r.status == "fail" for r in rows):
        sys.exit(1)


@cli.command("build")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Engine artifact directory to write.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp16", show_default=True)
@click.option("--batch", default="1,1,1", show_default=True, help="MIN,OPT,MAX batch of the optimisation profile.")
@click.option("--workspace-mb", type=int, default=1024, show_default=True)
@click.option("--timing-cache", type=click.Path(path_type=Path), help="Timing cache file, reused and updated.")
@click.option("--calib", type=click.Path(path_type=Path), help="TensorRT < 10 only: manifest for implicit INT8.")
@click.option("--data", type=click.Path(path_type=Path), help="With --calib: the data folder of the manifest.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def build_cmd(artifact: Path, out: Path, precision: str, batch: str, workspace_mb: int, timing_cache: Path | None,
              calib: Path | None, data: Path | None, force: bool) -> None:
    """Build a TensorRT engine from an ONNX artifact (INT8 from a QDQ model); needs TensorRT and an NVIDIA GPU."""
    from edgeft.errors import ConfigError
    from edgeft.tensorrt.build import BuildConfig, build

    b = _int_list(batch, "--batch")
    if len(b) == 1:
        b = b * 3
    if len(b) != 3:
        raise ConfigError(f"--batch takes MIN,OPT,MAX (or one number), got {batch!r}")
    cfg = BuildConfig(precision=precision, batch=(b[0], b[1], b[2]), workspace_mb=workspace_mb,
                      timing_cache=str(timing_cache) if timing_cache else None)
    art = build(artifact, out, cfg, calib=calib, data=data, force=force)
    e = art.meta.extra["engine"]
    click.echo(f"built a {precision} engine for {e['gpu']} (sm {e['compute_capability']}, TensorRT {e['tensorrt']})")
    click.echo(f"wrote {art.path}")


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

    With task: anomaly: anomaly (fitted on good parts) -> prune -> export -> quantize -> build -> bench, and the
    report shows the test parts with their heatmaps (examples/elpv-anomaly.yaml).

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
    from edgeft.optimize.report import headline, table

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
        click.echo(f"gate {g['gate']}: {g['status']} (value {g['value']}, limit {g['limit']}; {g['detail']})")
    click.echo(f"wrote {result.report} and {result.run / 'report.md'}")
    if result.failed:
        sys.exit(1)


def main() -> None:
    cli(prog_name="edgeft")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
