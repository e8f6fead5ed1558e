"""Commands that make a model: the demo data, fine-tuning, an anomaly fit, pruning."""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgeft.cli.base import DATA_HELP, THREADS_HELP, Group, cli, default_help, int_list, load_config, parse_overrides
from edgeft.tasks.anomaly.config import AnomalyConfig as AnomalyDefaults
from edgeft.training.config import CLASS_BALANCE, DEVICES, MODES, FinetuneConfig


@cli.group(cls=Group)
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


@data.command("trees")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--tile", default=320, show_default=True, help="Square tile side in pixels.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def data_trees(out: Path, tile: int, force: bool) -> None:
    """Build the detection demo set (tree crowns in aerial tiles, COCO JSON) in OUT from the images and boxes the
    deepforest wheel ships; test tiles come from an image training never sees."""
    from edgeft.data import trees

    counts = trees.build(out, tile=tile, force=force)
    for split, (tiles, boxes) in counts.items():
        click.echo(f"{split:<5} {tiles} tiles, {boxes} boxes")
    click.echo(f"wrote {out} (DeepForest example data, MIT; see {out / 'LICENSE-DATA.txt'})")


@data.command("collect")
@click.argument("saved", type=click.Path(path_type=Path))
@click.option("--into", required=True, type=click.Path(path_type=Path),
              help="The data folder the parts join (train/CLASS/...; its classes are the labels allowed).")
@click.option("--labels", type=click.Path(path_type=Path), help="A CSV with the columns part and label.")
@click.option("--sorted", "sorted_dir", type=click.Path(path_type=Path),
              help="Or: a folder with one subfolder per class, holding the kept PNGs a person sorted.")
@click.option("--test-share", type=float, default=0.3, show_default=True,
              help="Share of each class's new parts kept for the new test slice (new-test/), never trained on.")
@click.option("--val-share", type=float, default=0.0, show_default=True,
              help="Share of each class's new parts for val/, where each model's operating point is chosen (so it "
                   "reflects the line as it is now).")
@click.option("--product", default=None,
              help="The product these parts show, written to DATA/products.csv (default: the one the station's "
                   "stream named with infer --product, if any): operating points per product (decide --by-product).")
@click.option("--seed", default=0, show_default=True)
def data_collect(saved: Path, into: Path, labels: Path | None, sorted_dir: Path | None, test_share: float,
                 val_share: float, product: str | None, seed: int) -> None:
    """Turn the frames a station kept (edgeft infer --save KINDS SAVED), labelled by a person, into training data:
    train/ and a new test slice, with where each part came from in DATA/collected.jsonl."""
    from edgeft.data.collect import collect

    summary = collect(saved, into, labels=labels, sorted_dir=sorted_dir, test_share=test_share, seed=seed,
                      val_share=val_share, product=product)
    for split, c in sorted(summary["splits"].items()):
        click.echo(f"{split:<9} " + "  ".join(f"{k}={v}" for k, v in sorted(c.items())))
    click.echo(f"collected {summary['collected']} part(s) into {into} ({summary['already']} collected before, "
               f"{summary['unlabelled']} not labelled); provenance: {summary['provenance']}")


@cli.command("detect")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Box-labelled data: train/ val/ [test/] each with a COCO JSON file, or the YOLO layout "
                   "(images/SPLIT, labels/SPLIT, data.yaml).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="YAML with the detect: section's fields (a top-level 'detect:' mapping or plain fields).")
@click.option("--model", default=None, help="timm backbone  [default: efficientnet_lite0]")
@click.option("--weights", default=None,
              help="The backbone's weights: auto (a package's), package:NAME, a .pth/.safetensors classifier "
                   "checkpoint of the same architecture, or none  [default: auto]")
@click.option("--epochs", type=int, default=None, help="[default: 30]")
@click.option("--batch-size", type=int, default=None, help="[default: 8]")
@click.option("--lr", type=float, default=None, help="[default: 0.002]")
@click.option("--image-size", type=int, default=None, help="Square input side  [default: 320]")
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other detect: field, e.g. --set fpn_channels=96 --set augment.rot90=false.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--resume", is_flag=True, help="Continue from OUT.work/last.pt (kept after an interruption).")
def detect_cmd(data: Path, out: Path, config_path: Path | None, model: str | None, weights: str | None,
               epochs: int | None, batch_size: int | None, lr: float | None, image_size: int | None,
               threads: int | None, seed: int | None, overrides: tuple[str, ...], force: bool, resume: bool) -> None:
    """Train an object detector (FCOS head on a timm backbone) on box-labelled images; mAP by the COCO evaluator on
    val and test."""
    from edgeft.tasks.detect.config import DetectConfig
    from edgeft.tasks.detect.metrics import DetectionMetrics
    from edgeft.tasks.detect.train import train_detector

    d = load_config(config_path, "detect")
    given = {"model": model, "weights": weights, "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "image_size": image_size, "threads": threads, "seed": seed}
    d.update({k: v for k, v in given.items() if v is not None})
    for k, v in parse_overrides(overrides).items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    a = train_detector(DetectConfig.from_dict(d), data, out, force=force, resume=resume)
    for split in ("val", "test"):
        if split in a.meta.metrics:
            click.echo(DetectionMetrics.from_dict(a.meta.metrics[split]).summary(f"{split}:"))
    click.echo(f"wrote {a.path}")


@cli.command()
@click.option("--model", "model", default=None, help=f"timm architecture{default_help(FinetuneConfig, 'model')}")
@click.option("--weights", default=None,
              help="Pretrained weights: a .pth/.pt/.safetensors file, 'package:efficientnet_lite0', 'none' (random "
                   "initialisation), or 'auto' (the weights a package ships for --model)"
                   f"{default_help(FinetuneConfig, 'weights')}")
@click.option("--data", required=True, type=click.Path(path_type=Path), help=DATA_HELP)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="YAML with FinetuneConfig fields (a top-level 'finetune:' mapping or plain fields).")
@click.option("--mode", type=click.Choice(MODES), default=None, help=f"What trains{default_help(FinetuneConfig, 'mode')}")
@click.option("--trainable-blocks", type=int, default=None,
              help="partial: last N blocks train  [default: half of the model's blocks]")
@click.option("--epochs", type=int, default=None, help=default_help(FinetuneConfig, "epochs"))
@click.option("--batch-size", type=int, default=None, help=default_help(FinetuneConfig, "batch_size"))
@click.option("--lr", type=float, default=None, help=default_help(FinetuneConfig, "lr"))
@click.option("--image-size", type=int, default=None, help="Square input size (overrides the weights' default).")
@click.option("--resize", type=click.Choice(["shorter_side_center_crop", "stretch"]), default=None)
@click.option("--tta-views", type=click.Choice(["1", "2", "4", "8"]), default=None,
              help="Flip/rotation views averaged at evaluation; recorded in the artifact."
                   + default_help(FinetuneConfig, "tta_views"))
@click.option("--class-balance", type=click.Choice(CLASS_BALANCE), default=None,
              help=default_help(FinetuneConfig, "class_balance"))
@click.option("--device", type=click.Choice(DEVICES), default=None, help=default_help(FinetuneConfig, "device"))
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--seed", type=int, default=None, help=default_help(FinetuneConfig, "seed"))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any other FinetuneConfig field, e.g. --set label_smoothing=0.05 --set augment.rotate_deg=10.")
@click.option("--resume", is_flag=True, help="Continue from OUT.work/last.pt (kept after Ctrl-C or a crash).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--from", "from_art", type=click.Path(path_type=Path), default=None,
              help="Fine-tune the deployed model (an artifact: ONNX, INT8 or PyTorch; its PyTorch weights are found "
                   "through its lineage) on DATA, old parts and new, with its own settings at --epochs and --lr "
                   "(defaults: edgeft.training.config.RetrainConfig, 3 epochs at 1e-4).")
def finetune(data: Path, out: Path, config_path: Path | None, overrides: tuple[str, ...], resume: bool, force: bool,
             from_art: Path | None, **options) -> None:
    """Fine-tune a pretrained model on an ImageFolder and write a PyTorch artifact with its metrics."""
    from edgeft.finetune import FinetuneConfig
    from edgeft.finetune import finetune as run
    from edgeft.metrics import TrainingRun, split_metrics

    if from_art is not None:
        from edgeft.errors import ConfigError
        from edgeft.finetune.stage import finetune_from

        asked = [k for k, v in options.items() if v is not None and k not in ("epochs", "lr", "mode", "threads")]
        if asked or config_path or overrides or resume:
            raise ConfigError(f"--from fine-tunes the deployed model with its own settings; only --epochs, --lr, "
                              f"--mode and --threads apply (got {', '.join(asked) or '--config/--set/--resume'})")
        from edgeft.training.config import RetrainConfig

        cfg = RetrainConfig(**{k: options[k] for k in ("epochs", "lr", "mode", "threads")
                               if options.get(k) is not None})
        art = finetune_from(from_art, data, out, cfg, force=force)
        for split in ("val", "test"):
            if split in art.meta.metrics:
                click.echo(split_metrics(art.meta.metrics, split).summary(art.meta.class_names, title=f"{split}:"))
        click.echo(f"wrote {art.path} (fine-tuned from {from_art})")
        return

    d = load_config(config_path)
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
    click.echo(TrainingRun.from_metrics(m).summary())
    if "lora" in m:
        lo = m["lora"]
        click.echo(f"LoRA rank {lo['rank']} on {lo['targets']} layers: {lo['trainable_params']:,} adapter parameters "
                   f"({lo['adapter_bytes'] / 1024:.0f} KiB in adapter.safetensors), merged into the weights (max abs "
                   f"logit change {lo['merge_max_abs_diff']:.1e})")
    click.echo(f"wrote {art.path}")


def _numbers(value: str | None, option: str, kind=float) -> list | None:
    from edgeft.errors import ConfigError

    if value is None:
        return None
    try:
        return [kind(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, got {value!r}") from None


@cli.command("import")
@click.argument("model_file", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--model", "arch", default=None,
              help="Architecture of a checkpoint: a timm name (efficientnet_lite0) or torchvision:NAME "
                   "(torchvision:mobilenet_v3_small); not for an ONNX file.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help=DATA_HELP + " With it, the model is measured on val (--splits): its baseline.")
@click.option("--classes", default=None,
              help="Class names in the model's output order: NAME,NAME or a file with one a line  [default: the ONNX "
                   "file's edgeft metadata, else the data's train/ folders]")
@click.option("--size", default=None, help="Input height and width, e.g. 224 or 240x320  [default: read]")
@click.option("--mean", default=None, help="Per-channel mean of [0, 1] pixels, e.g. 0.485,0.456,0.406")
@click.option("--std", default=None, help="Per-channel std, e.g. 0.229,0.224,0.225")
@click.option("--resize", type=click.Choice(["shorter_side_center_crop", "stretch", "letterbox"]), default=None)
@click.option("--crop-pct", type=float, default=None, help="shorter_side_center_crop: size / crop_pct is resized.")
@click.option("--interpolation", type=click.Choice(["bicubic", "bilinear", "area", "nearest"]), default=None)
@click.option("--color", type=click.Choice(["RGB", "BGR", "GRAY"]), default=None,
              help="Channel order the model was trained on.")
@click.option("--roi", default=None, help="Region of interest x,y,width,height cut from every frame before resizing.")
@click.option("--window", default=None,
              help="How 12/16-bit pixels become [0, 1]: '12 bits', 'min,max' (fixed) or 'p1,p99' (per image "
                   "percentiles)  [default: by the file's type]")
@click.option("--trainable-blocks", type=int, default=None,
              help="The last N blocks a later partial recovery or QAT may retrain.")
@click.option("--splits", default="val", show_default=True,
              help="Where the baseline is measured (with --data): val, or val,test to read test too.")
@click.option("--task", "task_name", default="classify", show_default=True,
              help="What the model is: classify, or detect (an ONNX detector; --layout says its raw output).")
@click.option("--layout", default=None,
              help="--task detect: the ONNX file's raw output, yolo ((1, 4 + classes, anchors), Ultralytics' export "
                   "without NMS); edgeft adds decoding and NMS.")
@click.option("--base", default=None,
              help="MODEL a peft LoRA adapter directory: the weights it adapts (a checkpoint file or package:NAME)  "
                   "[default: auto, the weights a package ships for --model]")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def import_cmd(model_file: Path, out: Path, arch: str | None, data: Path | None, classes: str | None, size: str | None,
               mean: str | None, std: str | None, resize: str | None, crop_pct: float | None,
               interpolation: str | None, color: str | None, roi: str | None, window: str | None,
               trainable_blocks: int | None, splits: str, task_name: str, layout: str | None, base: str | None,
               force: bool) -> None:
    """Import your own fine-tuned model: a timm or torchvision checkpoint, a peft LoRA adapter directory over a timm
    model (merged into its weights), or an ONNX classifier, as an artifact."""
    from edgeft.importer import ImportConfig, import_model

    contract: dict = {}
    if size is not None:
        dims = _numbers(size, "--size", int)
        contract["size"] = dims * 2 if len(dims) == 1 else dims
    for name, value in (("mean", mean), ("std", std)):
        if value is not None:
            contract[name] = _numbers(value, f"--{name}")
    for name, value in (("resize", resize), ("crop_pct", crop_pct), ("interpolation", interpolation),
                        ("color", color)):
        if value is not None:
            contract[name] = value
    if roi is not None:
        contract["roi"] = _numbers(roi, "--roi", int)
    if window is not None:
        text = window.strip()
        if text.startswith("p"):
            contract["window"] = {"percentiles": _numbers(text.replace("p", ""), "--window")}
        elif "bit" in text:
            contract["window"] = text
        else:
            lo_hi = _numbers(text, "--window")
            contract["window"] = {"min": lo_hi[0], "max": lo_hi[-1]} if len(lo_hi) == 2 else text
    cfg = ImportConfig(model=str(model_file), arch=arch, input=contract, classes=classes,
                       trainable_blocks=trainable_blocks, splits=[s.strip() for s in splits.split(",") if s.strip()],
                       base=base, task=task_name, layout=layout)
    a = import_model(cfg, out, data=data, force=force)
    click.echo(f"wrote {a.path} ({a.meta.kind}, {a.meta.arch}, sha256 {a.meta.model_sha256[:12]})")


@cli.command("anomaly")
@click.option("--data", required=True, type=click.Path(path_type=Path), help=DATA_HELP)
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
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def anomaly_cmd(data: Path, out: Path, good: str, model: str, weights: str, method: str, layers: str,
                image_size: int, resize: str, pool: int, grid: int | None, dims: int | None, storage: str,
                coreset: float, max_bank: int,
                target_recall: float | None, max_false_reject: float | None, escape_cost: float | None,
                false_reject_cost: float, review_budget: float | None, threads: int | None, seed: int,
                force: bool) -> None:
    """Fit an anomaly model from the good images of --data's train/GOOD alone (no defect labels): a score and a heatmap per image.
    The threshold is chosen on val (good and anomalous images); test, if present, is scored once at the end."""
    from edgeft.tasks.anomaly.config import AnomalyConfig
    from edgeft.tasks.anomaly.fit import fit
    from edgeft.metrics import read

    if target_recall is None and max_false_reject is None and escape_cost is None:
        target_recall = 0.95
    cfg = AnomalyConfig(good=good, model=model, weights=weights, method=method, layers=int_list(layers, "--layers"),
                        image_size=image_size, resize=resize, pool=pool, grid=grid, dims=dims, storage=storage,
                        coreset=coreset, max_bank=max_bank, target_recall=target_recall,
                        max_false_reject=max_false_reject, escape_cost=escape_cost,
                        false_reject_cost=false_reject_cost, review_budget=review_budget, threads=threads, seed=seed)
    art = fit(cfg, data, out, force=force)
    click.echo(read(art.meta.metrics, "anomaly").summary())
    click.echo(f"wrote {art.path}")


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
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
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
    are fitted again. On a detector (`edgeft detect`) the backbone's channels go, the pyramid and head keep theirs,
    and it recovers with its own training settings and FCOS's loss."""
    from edgeft.prune import PruneConfig, prune
    from edgeft.tasks import registry as tasks

    if target_macs is None and target_params is None:
        target_macs = 0.5
    cfg = PruneConfig(target_macs=target_macs, target_params=target_params, target_tolerance=target_tolerance,
                      importance=importance, steps=steps,
                      round_to=round_to, max_layer_ratio=max_layer_ratio, ignore=list(ignore),
                      recover_epochs=recover_epochs, recover_lr=recover_lr, recover_mode=recover_mode,
                      recover_views=int(recover_views) if recover_views else None, distill=distill, seed=seed,
                      threads=threads)
    art = prune(artifact, data, out, cfg, force=force)
    click.echo(tasks.of(art.meta).prune_summary(art.meta.metrics))
    click.echo(f"wrote {art.path}")
