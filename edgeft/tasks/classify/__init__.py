"""The classifier task: a timm model fine-tuned on labelled class folders; its graph outputs logits, its numbers are
accuracy, per-class recall and, with "not OK" classes, AUROC and operating points; its policy is chosen on val by
``edgeft decide`` or a recipe's ``decision:`` section.

Its pieces are the shared stages (``edgeft.finetune``, ``edgeft.prune.pruner``, ``edgeft.quantize.qat``, the logits
runners): classification is the task the floors were built for, so this object mostly names them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import ConfigError, DataError, EdgeftError, close_matches
from edgeft.tasks.folders import FolderData
from edgeft.tasks.registry import Task, register


class ClassifierHead:
    """The runtime's post-processing of logits (numpy only): softmax, the top class, and the policy's decision on
    the "not OK" score."""

    def predict(self, runner: Any, x: np.ndarray, policy: Any, class_names: list[str]) -> list[Any]:
        from edgeft.runtime.predictor import Prediction, softmax

        probs = softmax(runner.infer(x).astype(np.float64))
        not_ok = policy.score(probs) if policy is not None else None
        decisions = policy.decide(not_ok) if policy is not None else None
        out = []
        for k, row in enumerate(probs):
            i = int(row.argmax())
            out.append(Prediction(class_names[i] if i < len(class_names) else str(i), i, float(row[i]),
                                  [float(v) for v in row],
                                  decision=str(decisions[k]) if decisions is not None else None,
                                  not_ok=float(not_ok[k]) if not_ok is not None else None))
        return out


class Classify(FolderData, Task):
    name = "classify"
    first_stage = "finetune"
    stages = ("finetune", "prune", "export", "quantize", "build", "ship", "bench")
    summary = "a classifier fine-tuned on labelled class folders"
    supports_qat = True
    importable = True
    imports_checkpoints = True

    def onnx_metadata(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {}  # a file that names no task is a classifier

    def import_checkpoint(self, cfg: Any, source: Path, names: list[str] | None) -> tuple[Any, int | None, Any, str,
                                                                                          dict[str, Any]]:
        """A timm or torchvision classifier's checkpoint, its class count read from its head."""
        from edgeft.importer.stage import declared_contract, default_contract, load_checkpoint
        from edgeft.runtime.torch_model import torchvision_name

        model, outputs = load_checkpoint(source, cfg.arch)  # build() refuses an unknown architecture first
        fmt = "torchvision checkpoint" if torchvision_name(cfg.arch) else "timm checkpoint"
        return model, outputs, declared_contract(cfg, default_contract(cfg.arch)), fmt, {}

    def qat(self, parent: Path, out: Path, cfg: Any, calib: Path, data: Path, epochs: int, lr: float, mode: str,
            force: bool) -> Any:
        from edgeft.quantize.qat import qat

        return qat(parent, out, cfg, calib, data, epochs=epochs, lr=lr, force=force, mode=mode)

    def first_config(self, section: dict[str, Any]) -> Any:
        from edgeft.training.config import FinetuneConfig

        return FinetuneConfig.from_dict(section or {})

    def check_gates(self, gates: Any, decision: Any, sections: dict[str, Any]) -> None:
        if gates.max_map_drop_points is not None:
            raise ConfigError("gates.max_map_drop_points gates a detector's mAP; this recipe's task has none")
        for name in gates.DECISION_GATES:
            if getattr(gates, name) is not None and decision is None:
                raise ConfigError(f"gates.{name} compares models at their operating points: add a decision: section "
                                  "(positive: [CLASS] and a rule such as target_recall: 0.95)")

    def check_data(self, recipe: Any, splits: dict[str, Path]) -> None:
        from edgeft.data.imagefolder import scan_split

        if recipe.decision is None:
            return
        if "val" not in splits:
            raise DataError(f"decision: the policy is chosen on the val split, and {recipe.data} has none; add val/")
        classes = scan_split(splits["train"]).classes
        unknown = [c for c in recipe.decision.positive if c not in classes]
        if unknown:
            raise ConfigError(f"decision.positive: {unknown[0]!r} is not a class of {recipe.data} "
                              f"({', '.join(classes)})"
                              f"{close_matches(unknown[0], classes)}")
        if recipe.decision.by_product:
            from edgeft.data.products import products_of

            val = scan_split(splits["val"], classes)
            if not any(products_of(recipe.data, val.paths) or []):
                raise DataError(f"decision.by_product: {recipe.data}'s val split names no products; name each image's "
                                "product in its products.csv (pattern,product) or a manifest's product column, or "
                                "drop by_product")

    def first_label(self, recipe: Any) -> str:
        return "fine-tuned FP32"

    def run_first(self, recipe: Any, out: Path, resume: bool) -> None:
        from edgeft.finetune.stage import finetune, finetune_from

        cfg = recipe.sections["finetune"]
        if recipe.threads and not cfg.threads:
            cfg = replace(cfg, threads=recipe.threads)
        if recipe.from_ is not None:  # the retraining loop: the deployed model, not the pretrained weights
            finetune_from(recipe.from_, recipe.data, out, cfg, force=True)
        else:
            finetune(cfg, recipe.data, out, force=True, resume=resume)

    def measure(self, recipe: Any, stage: str, out: Path, always: bool) -> None:
        """With a decision section: choose this model's own policy on val, then measure it on the held-out split with
        the policy applied (pruning and INT8 move scores, so a threshold carried over from another model would
        silently change the escape rate); without one, measure exported models there (the other stages measure
        their models themselves). One view, as the camera runs the model."""
        from edgeft import artifact as art
        from edgeft.data import load_split
        from edgeft.data.imagefolder import find_splits
        from edgeft.evaluate import choose_policy, evaluate

        if recipe.decision is None and stage != "export" and not always:
            return
        a = art.load(out)
        d = recipe.decision
        if d is not None:
            choose_policy(a, load_split(recipe.data, "val", a.meta.input, classes=a.meta.class_names), d.rule(),
                          list(d.positive))
        split = "test" if "test" in find_splits(recipe.data) else "val"
        m = evaluate(a, load_split(recipe.data, split, a.meta.input, classes=a.meta.class_names), tta_views=1)
        art.update_metrics(a, {split: m.to_dict(), "eval_split": split})

    ships_per_runtime = True

    def val_row(self, recipe: Any, artifact: Any, backend: str) -> tuple[dict[str, Any], Any]:
        """Accuracy (and AUROC, recall and false rejects at the policy chosen there) on val as ``backend`` computes
        the logits."""
        from edgeft.data import load_split
        from edgeft.evaluate import score_split

        val = load_split(recipe.data, "val", artifact.meta.input, classes=artifact.meta.class_names)
        d = recipe.decision
        m, _, policy = score_split(artifact, val, d.rule() if d else None, list(d.positive) if d else [], backend)
        return {"accuracy": m, "quality": m.accuracy, "quality_name": "accuracy"}, policy

    def measure_shipped(self, recipe: Any, out: Path, backend: str) -> None:
        self.measure(recipe, "ship", out, always=True)  # eval scores on the runtime the artifact records

    def torch_model(self, artifact: Any) -> Any:
        from edgeft.runtime.torch_model import build

        return build(artifact.meta.arch, artifact.meta.num_classes)

    def parity(self, model: Any, path: Path, images: Any, onnx_images: Any, contract: Any, onnx_contract: Any,
               split: str, names: list[str], gray_input: bool) -> dict[str, Any]:
        from edgeft import progress
        from edgeft.export.stage import parity

        check = parity(model, path, images, contract, onnx_images=onnx_images, onnx_contract=onnx_contract)
        if not check.passed:
            if gray_input:
                raise EdgeftError(f"with gray_input the ONNX model's logits differ from the RGB model's on {check.n} "
                                  f"real {split} images: {check.explain(names)}; the images are not grayscale: export "
                                  "without gray_input")
            raise EdgeftError(f"ONNX Runtime differs from PyTorch on {check.n} real {split} images: "
                              f"{check.explain(names)}; try another --opset, or report the architecture")
        progress.info(f"parity on {check.n} {split} images: max abs diff {check.max_abs_diff:.2e} "
                      f"({check.max_rel_diff:.1e} of the logit scale), top-1 agreement {check.agreement * 100:.1f}%")
        return {**check.to_dict(), "split": split}

    def int8_metrics(self, fp32: Path, int8: Path, eval_set: Any, data: Path, parent: Any, cfg: Any,
                     graph: dict[str, Any], meta: Any) -> None:
        from edgeft.metrics import classification_metrics
        from edgeft.runtime.logits import onnx_logits

        split, contract, classes = eval_set.name, parent.meta.input, parent.meta.class_names
        fp32_logits = onnx_logits(fp32, eval_set.images, contract, threads=cfg.threads)
        int8_logits = onnx_logits(int8, eval_set.images, contract, threads=cfg.threads)
        acc_fp32 = classification_metrics(eval_set.labels, fp32_logits.argmax(1), classes)
        acc_int8 = classification_metrics(eval_set.labels, int8_logits.argmax(1), classes)
        meta.metrics = {
            split: acc_int8.to_dict(), f"{split}_fp32": acc_fp32.to_dict(), "eval_split": split,
            "accuracy_drop_pp": round((acc_fp32.accuracy - acc_int8.accuracy) * 100, 2),
            "top1_agreement_with_fp32": float((fp32_logits.argmax(1) == int8_logits.argmax(1)).mean()), **graph}

    def int8_summary(self, metrics: dict[str, Any]) -> list[str]:
        from edgeft.metrics import split_metrics

        s = metrics["eval_split"]
        int8, fp32, parent = (split_metrics(metrics, k) for k in (s, f"{s}_fp32", f"{s}_fp32_parent"))
        lines = []
        if parent is not None:
            lines.append(f"{s} accuracy of the FP32 parent: {parent.accuracy * 100:.2f}%; after QAT + INT8 "
                         f"{int8.accuracy * 100:.2f}% (drop {metrics.get('accuracy_drop_vs_parent_pp', 0):.2f} pp)")
        lines.append(f"{s} accuracy: FP32 {fp32.accuracy * 100:.2f}%, INT8 {int8.accuracy * 100:.2f}% (drop "
                     f"{metrics.get('accuracy_drop_pp', 0):.2f} pp; balanced {int8.balanced_accuracy * 100:.2f}%)")
        return lines

    def require_logits(self, artifact: Any) -> None:
        return None

    def head(self, extra: dict[str, Any], where: str) -> Any:
        return ClassifierHead()

    def evaluate(self, artifact: Any, data: Path, split: str, backend: str | None = None,
                 positive: list[str] | None = None, tta_views: int | None = None) -> Any:
        from edgeft.data import load_split
        from edgeft.evaluate import evaluate

        s = load_split(data, split, artifact.meta.input, classes=artifact.meta.class_names)
        return evaluate(artifact, s, tta_views=tta_views, backend=backend, positive=positive)

    def decide(self, artifact: Any, data: Path, rule: Any, positive: list[str], backend: str | None) -> list[str]:
        from edgeft.data import load_split
        from edgeft.data.imagefolder import find_splits
        from edgeft.evaluate import choose_policy, evaluate

        found = find_splits(data)
        if "val" not in found:
            raise DataError(f"{data} has no val/ split: a policy is chosen on val, never on test; add one")
        val = load_split(data, "val", artifact.meta.input, classes=artifact.meta.class_names)
        policy = choose_policy(artifact, val, rule, positive, backend=backend)
        lines = [f"{artifact.path}: {policy.text()}"]
        if "test" in found:
            m = evaluate(artifact, load_split(data, "test", artifact.meta.input, classes=artifact.meta.class_names),
                         tta_views=1, backend=backend)
            lines.append(f"  on test: {m.policy.text()}; AUROC {m.decisions.auroc:.3f}")
        return lines

    def eval_text(self, record: Any, artifact: Any, title: str) -> str:
        from edgeft.decision import read_policy

        lines = [record.summary(artifact.meta.class_names, title=f"{title} (tta views {record.tta_views}):")]
        if record.decisions:
            lines.append(record.decisions.summary())
        if record.policy:
            lines += [f"  policy: {read_policy(artifact.meta.extra).text()}",
                      f"  on this split: {record.policy.text()}"]
        return "\n".join(lines)

    def report_extras(self, recipe: Any, run: Path, rows: list[Any]) -> tuple[Any, Any]:
        """The final model's escapes and false rejects on the held-out split, with class activation maps."""
        from edgeft.tasks.classify.gallery import classifier_gallery

        return classifier_gallery(recipe, run, rows), None

    def read_row(self, meta: Any) -> dict[str, Any]:
        from edgeft.metrics import split_metrics

        split = meta.metrics.get("eval_split") or ("test" if "test" in meta.metrics else "val")
        acc = split_metrics(meta.metrics, split)
        return {"accuracy": acc, "split": split, "quality": acc.accuracy if acc else None,
                "quality_name": "accuracy"}


register(Classify())
