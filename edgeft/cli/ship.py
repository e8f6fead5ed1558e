"""Commands that take a model toward the camera: export, calibration, INT8, TensorRT engines, the checks on the
way (eval, decide, compare-backends), and the hand-over to a running station (promote, rollback)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeft.cli.base import DATA_HELP, THREADS_HELP, cli, int_list
from edgeft.runtime.backends import BACKENDS


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
    from edgeft.tasks import registry as tasks

    art = export(artifact, out, opset=opset, dynamic_batch=dynamic_batch, do_simplify=not no_simplify, data=data,
                 n=n_images, force=force, gray_input=gray_input)
    o = read(art.meta.metrics, "onnx")
    click.echo(f"opset {o.opset}, {o.nodes} nodes, {o.size_bytes / 1e6:.2f} MB")
    if art.meta.metrics.get("parity"):
        click.echo(tasks.of(art.meta).parity_line(art.meta.metrics["parity"]))
    click.echo(f"wrote {art.path}")


@cli.command("calibrate")
@click.option("--data", required=True, type=click.Path(path_type=Path), help=DATA_HELP)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Manifest JSON to write.")
@click.option("--n", "n_images", type=int, default=512, show_default=True, help="Images, balanced over classes.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--artifact", "artifact_path", type=click.Path(path_type=Path),
              help="Pin the manifest to this artifact's input contract, and sample as its task does (a detector: "
                   "images with boxes, balanced by their most frequent class).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def calibrate_cmd(data: Path, out: Path, n_images: int, split: str, seed: int, artifact_path: Path | None,
                  force: bool) -> None:
    """Write a class-balanced calibration manifest (paths + content hashes) for reproducible INT8 builds."""
    from edgeft import artifact as art_mod
    from edgeft.data import calibration
    from edgeft.tasks import registry as tasks

    art_mod.refuse_existing(out, force)  # a manifest pins INT8 builds: replacing one is a decision, not a side effect
    if artifact_path:  # the model's task samples its own data (a detector: images with boxes, by their classes)
        meta = art_mod.load(artifact_path).meta
        m = tasks.of(meta).calibration_manifest(data, n_images, meta.class_names, split=split, seed=seed,
                                                contract=meta.input)
    else:
        m = calibration.create(data, n=n_images, split=split, seed=seed)
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
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def quantize_cmd(artifact: Path, out: Path, calib: Path, data: Path, method: str, epochs: int, lr: float, qat_mode: str,
                 target: str, calib_method: str, exclude: tuple[str, ...], no_auto_exclude: bool, threads: int | None,
                 force: bool) -> None:
    """INT8 post-training quantization to a QDQ ONNX artifact, target-aware (ONNX Runtime CPU or TensorRT)."""
    from edgeft.quantize.ptq import QuantizeConfig, quantize, summary

    cfg = QuantizeConfig(method=method, target=target, calib_method=calib_method, exclude=list(exclude),
                         auto_exclude=not no_auto_exclude, threads=threads)
    if method == "qat":
        from edgeft import artifact as art_mod
        from edgeft.errors import ConfigError
        from edgeft.tasks import registry as tasks

        task = tasks.of(art_mod.load(artifact).meta)
        if not task.supports_qat:
            raise ConfigError(f"{artifact} is an {task.name} model: QAT trains on labels it does not have; use --method "
                              "ptq (calibrated on good parts)")
        art = task.qat(artifact, out, cfg, calib, data, epochs=epochs, lr=lr, mode=qat_mode, force=force)
    else:
        art = quantize(artifact, out, cfg, calib, data, force=force)
    click.echo(summary(art))
    click.echo(f"wrote {art.path}")


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

    b = int_list(batch, "--batch")
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


@cli.command("eval")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help=DATA_HELP)
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test", "new-test"]),
              help="new-test: the slice of new parts `edgeft data collect` set aside.")
@click.option("--tta-views", type=click.Choice(["1", "2", "4", "8"]), default=None,
              help="Override the artifact's recorded test-time views.")
@click.option("--backend", default=None,
              help="Runtime backend that runs the model (auto, " + ", ".join(BACKENDS) + ")"
                   "  [default: torch for PyTorch artifacts, ort-cpu for ONNX, tensorrt for engines]")
@click.option("--positive", multiple=True, metavar="CLASS",
              help="A 'not OK' class (repeatable): AUROC, average precision and operating points (recall at fixed "
                   "false-reject rates, false rejects at fixed recalls) for it.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics as JSON.")
@click.option("--record", "record_store", default=None, metavar="STORE",
              help="Also append the numbers to a results store (edgeft history), as SPLIT.METRIC of this model.")
@click.option("--commit", default=None, help="With --record: the commit measured  [default: $GITHUB_SHA or git's HEAD]")
def eval_cmd(artifact: Path, data: Path, split: str, tta_views: str | None, backend: str | None,
             positive: tuple[str, ...], as_json: bool, record_store: str | None, commit: str | None) -> None:
    """The metrics of ARTIFACT's task on a split, run by any backend of the runtime (PyTorch, ONNX, a TensorRT engine
    where TensorRT exists): a classifier's accuracy, per-class precision/recall/F1, confusion matrix, and with a
    positive class or a policy its AUROC and operating points."""
    from edgeft import artifact as art_mod
    from edgeft.evaluate import scoring_backend
    from edgeft.tasks import registry as tasks

    art = art_mod.load(artifact)
    task = tasks.of(art.meta)  # each task measures its models its own way
    m = task.evaluate(art, data, split, backend=backend, positive=list(positive),
                      tta_views=int(tta_views) if tta_views else None)
    used = scoring_backend(art, backend)  # the runtime the artifact ships on unless another is named
    click.echo(json.dumps(m.to_dict(), indent=2) if as_json
               else task.eval_text(m, art, f"{artifact} on {data}/{split}, run on {used}"))
    if record_store is not None:
        from edgeft.cli.measure import commit_of
        from edgeft.history.records import eval_rows
        from edgeft.history.store import open_store

        rows = eval_rows(Path(artifact).name, art.meta.model_sha256, split, used, m.to_dict(), commit_of(commit))
        s = open_store(record_store)
        try:
            s.append(rows)
        finally:
            s.close()
        click.echo(f"recorded {len(rows)} number(s) in the results store", err=as_json)


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
@click.option("--by-product", is_flag=True, help="An operating point per product the data names (its products.csv "
              "or a manifest's product column), each chosen on that product's val parts.")
@click.option("--backend", default=None, help="Runtime backend that scores val (default: as `edgeft eval`).")
def decide_cmd(artifact: Path, data: Path, positive: tuple[str, ...], target_recall: float | None,
               max_false_reject: float | None, escape_cost: float | None, false_reject_cost: float,
               review_budget: float | None, by_product: bool, backend: str | None) -> None:
    """Choose ARTIFACT's decision policy (pass / review / reject) on the val split and write it into the artifact,
    where `edgeft infer` and Predictor apply it. With a test/ split, prints what it does there. A classifier's
    "not OK" score is its positive classes' probability; a detector's, an image's best box of a positive class."""
    from edgeft import artifact as art_mod
    from edgeft.decision import Rule
    from edgeft.tasks import registry as tasks

    rule = Rule(target_recall=target_recall, max_false_reject=max_false_reject, escape_cost=escape_cost,
                false_reject_cost=false_reject_cost, review_budget=review_budget, by_product=by_product)
    art = art_mod.load(artifact)
    for line in tasks.of(art.meta).decide(art, data, rule, list(positive), backend):
        click.echo(line)


@cli.command("compare-backends")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="ImageFolder with real images.")
@click.option("--reference", "reference_dir", type=click.Path(path_type=Path),
              help="PyTorch artifact to compare against (default: the first torch artifact given or in the lineage; "
                   "for an imported ONNX model, the file as brought).")
@click.option("--n", "n_images", type=int, default=64, show_default=True)
def compare_backends_cmd(artifacts: tuple[Path, ...], data: Path, reference_dir: Path | None, n_images: int) -> None:
    """The same real images through every available backend vs the PyTorch reference (an imported ONNX model: the
    file as brought, on ONNX Runtime's CPU kernels); exit 1 on a failure."""
    from edgeft import artifact as art_mod
    from edgeft.data import load_split
    from edgeft.data.imagefolder import find_splits
    from edgeft.errors import ArtifactError
    from edgeft.models.inference import torch_logits
    from edgeft.models import from_artifact
    from edgeft.runtime.compare_backends import compare_backends, precision_of, render, torch_reference

    loaded = [art_mod.load(a) for a in artifacts]
    reference_dir = reference_dir or torch_reference(loaded)
    if reference_dir is None:
        raise ArtifactError("no PyTorch reference found; pass --reference with the fine-tuned artifact")
    ref = art_mod.load(reference_dir)
    if ref.meta.kind != "torch" and not ref.meta.imported_onnx:
        raise ArtifactError(f"--reference {reference_dir} holds a {ref.meta.kind} model; pass the fine-tuned PyTorch "
                            "artifact (or an imported ONNX model, the FP32 file as you brought it)")
    split = "test" if "test" in find_splits(data) else "val"
    prepared: dict[str, object] = {}

    def images_for(contract):  # the same files, prepared per each model's contract (gray input, other sizes)
        key = json.dumps(contract.to_dict(), sort_keys=True)
        if key not in prepared:
            prepared[key] = load_split(data, split, contract, classes=ref.meta.class_names, limit=n_images).images
        return prepared[key]

    images = images_for(ref.meta.input)
    if ref.meta.kind == "torch":
        reference = torch_logits(from_artifact(ref), images, ref.meta.input, 32, 1, "cpu", False, desc="reference")
    else:  # an imported ONNX file: the user's FP32 model on ONNX Runtime's CPU kernels
        from edgeft.runtime.logits import onnx_logits

        reference = onnx_logits(ref.model_path, images, ref.meta.input)
    precision = max((precision_of(a.meta) for a in loaded), key=["fp32", "fp16", "int8"].index)
    rows = compare_backends([a.path for a in loaded], images_for, reference, precision)
    click.echo(render(rows, precision))
    if any(r.status == "fail" for r in rows):
        sys.exit(1)


@cli.command("promote")
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--deployed", required=True, type=click.Path(path_type=Path),
              help="The model the station runs (an artifact, or the model directory's current link).")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="The data folder with val/ (operating points), the frozen test/ and new-test/ (edgeft data collect).")
@click.option("--rule", "rule_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="YAML with a promote: section (a recipe, or that section alone)  [default: the rule's defaults, "
                   "see edgeft.promote.rule]")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for promotion.md and promotion.json  [default: beside CANDIDATE, CANDIDATE.promotion]")
@click.option("--into", type=click.Path(path_type=Path), default=None,
              help="A model directory the station watches (DIR/current): on a promote the candidate becomes its next "
                   "version and current points at it.")
@click.option("--also", multiple=True, metavar="NAME=DIR",
              help="Another labelled folder (class subfolders) to report both models on, e.g. a golden set; not judged.")
@click.option("--no-latency", is_flag=True, help="Do not judge latency (the rule's max_latency_regression).")
def promote_cmd(candidate: Path, deployed: Path, data: Path, rule_path: Path | None, report_dir: Path | None,
                into: Path | None, also: tuple[str, ...], no_latency: bool) -> None:
    """Judge CANDIDATE (a retrained model) against the deployed one on the frozen test split and the new parts, each
    at its own operating point chosen on val, with paired bootstrap intervals and the paired latency gate; write the
    promotion report, and on a promote install CANDIDATE as the next version of --into.

    Exit 0: promote; 1: keep the deployed model; 3: inconclusive (how many more parts would settle it is printed);
    2: bad input (nothing is installed)."""
    from edgeft.errors import ConfigError
    from edgeft.promote.stage import promote, rule_from_file, summary

    extra = {}
    for item in also:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--also {item!r}: give NAME=DIR (a folder with one subfolder per class)")
        if name in ("val", "test", "new-test") or name in extra:
            raise ConfigError(f"--also {name}: the name is taken; call the folder something else")
        if not Path(folder).is_dir():
            raise ConfigError(f"--also {item}: {folder} is not a folder")
        extra[name] = Path(folder)
    rule = rule_from_file(rule_path)
    report = report_dir or candidate.parent / f"{candidate.name}.promotion"
    result = promote(deployed, candidate, data, rule, report, extra=extra, into=into, latency=not no_latency)
    for line in summary(result):
        click.echo(line)
    click.echo(f"wrote {report / 'promotion.md'}")
    sys.exit(result.exit_code)


@cli.command("rollback")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--to", "to", type=int, default=None, help="The version number to serve  [default: the one before]")
@click.option("--reason", default="", help="Why, for the directory's history.jsonl.")
def rollback_cmd(model_dir: Path, to: int | None, reason: str) -> None:
    """Point MODEL_DIR/current back at an earlier version (a station watching it swaps between two frames)."""
    from edgeft.promote.versions import rollback, versions

    r = rollback(model_dir, to, reason)
    click.echo(f"{model_dir}/current -> {r['version']} (was {r['previous']}); versions: "
               + ", ".join(p.name for _, p in versions(model_dir)))
