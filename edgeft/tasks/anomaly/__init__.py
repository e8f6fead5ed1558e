"""Anomaly detection from good parts only: a patch-feature model of the good images (PaDiM or PatchCore on a timm
backbone), its threshold chosen on val; its graph returns a score and a heatmap.

Where each piece is, by what it does:
- ``graph``: the torch module the camera runs (backbone cut after its deepest level, the patch distances);
- ``heatmap``: the heatmap drawn over a frame;
- ``config`` and ``fit``: ``edgeft anomaly`` (and a recipe's ``anomaly:`` section) fitting on good parts;
- ``features``: the statistics, the threshold on val, the test scores;
- ``prune``: its backbone pruned and recovered by feature distillation;
- ``quantize``: its INT8 graph, calibrated on good parts, statistics re-fitted on the INT8 backbone;
- ``gallery``: the report's test parts with their heatmaps.
This module is the task object that the stages, the pipeline, the predictor and the report ask."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import ConfigError, DataError, close_matches
from edgeft.tasks.folders import FolderData
from edgeft.tasks.registry import Task, register


class AnomalyHead:
    """The runtime's post-processing of (score, heatmap) (numpy only): the label is the good class or
    ``anomalous`` by the policy's decision (``unknown`` for a model fitted without a threshold)."""

    def __init__(self, spec: Any):
        self.spec = spec

    def predict(self, runner: Any, x: np.ndarray, policy: Any, class_names: list[str]) -> list[Any]:
        from edgeft.metrics import ANOMALOUS
        from edgeft.runtime.predictor import Prediction
        from edgeft.tasks.anomaly.heatmap import hot_spot

        scores, maps = runner.infer_outputs(x)[:2]
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        decisions = policy.decide(scores) if policy is not None else None
        good = class_names[0]
        out = []
        for k, s in enumerate(scores):
            d = str(decisions[k]) if decisions is not None else None
            label = "unknown" if d is None else (good if d == "pass" else ANOMALOUS)
            heat = np.asarray(maps[k], dtype=np.float32).reshape(np.shape(maps)[-2:])
            out.append(Prediction(label, class_names.index(label) if label in class_names else -1, float(s), [],
                                  decision=d, not_ok=float(s) if d is not None else None, heatmap=heat,
                                  extras={"hot_spot": hot_spot(heat)}))
        return out

    def scale(self, policy: Any) -> tuple[float, float]:
        """(floor, ceiling) of the heatmap's colours: a typical good patch, and the reject threshold (without a
        policy: the fit's highest good val score)."""
        return self.spec.map_floor, policy.reject_at if policy is not None else self.spec.map_ceiling

    def draw(self, frame: np.ndarray, prediction: Any, policy: Any, class_names: list[str]) -> np.ndarray:
        """The heatmap over the frame on the fixed scale, as ``edgeft infer --heatmaps`` writes it."""
        from edgeft.tasks.anomaly.heatmap import overlay

        return overlay(frame, prediction.heatmap, *self.scale(policy))


class Anomaly(FolderData, Task):
    name = "anomaly"
    first_stage = "anomaly"
    stages = ("anomaly", "prune", "export", "quantize", "build", "ship", "bench")
    graph_outputs = ("score", "heatmap")
    summary = "an anomaly model fitted on good parts alone"
    extra_carried = ("tta_views", "task", "anomaly", "decision")  # an exported graph keeps what it is and its threshold

    # ------------------------------------------------------------------------------------------- recipe and data
    def first_config(self, section: dict[str, Any]) -> Any:
        from edgeft.settings import section as read_section
        from edgeft.tasks.anomaly.config import AnomalyConfig

        d = section or {}
        layers = d.get("layers") if isinstance(d, dict) else None
        if layers is not None and (not isinstance(layers, list) or not layers or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in layers)):
            raise ConfigError(f"anomaly.layers must be a list of the backbone's feature levels, e.g. [2, 3], got "
                              f"{layers!r}")
        s = read_section(AnomalyConfig, d, "anomaly")  # its own errors name anomaly.<field>
        if not isinstance(s.good, str) or not s.good:
            raise ConfigError(f"anomaly.good must name the folder of good parts, e.g. good: functional, got {s.good!r}")
        return s

    def check_recipe(self, recipe_dict: dict[str, Any], sections: dict[str, Any]) -> None:
        """What a classifier recipe has and an anomaly recipe cannot: one line each, with what to use instead."""
        if recipe_dict.get("decision") is not None:
            raise ConfigError("decision: an anomaly recipe names its rule in anomaly: (target_recall, max_false_reject "
                              "or escape_cost, and review_budget); the parts it flags are every class but anomaly.good")
        if recipe_dict.get("search") is not None:
            raise ConfigError("search: the search prunes and quantizes classifiers; remove it from an anomaly recipe "
                              "(tune anomaly.dims and quantize.calib_method instead)")
        if "prune" in sections:
            from edgeft.prune.config import check_for_anomaly

            check_for_anomaly(sections["prune"])
        q = sections.get("quantize")
        if q is not None and q.method != "ptq":
            raise ConfigError(f"quantize.method {q.method}: an anomaly model is quantized post-training (ptq); QAT "
                              "trains against labels, and an anomaly model is fitted without any")

    def check_gates(self, gates: Any, decision: Any, sections: dict[str, Any]) -> None:
        if gates.max_map_drop_points is not None:
            raise ConfigError("gates.max_map_drop_points gates a detector's mAP; this recipe's task has none")
        a = sections.get("anomaly")
        if gates.max_accuracy_drop_pp is not None:
            raise ConfigError("gates.max_accuracy_drop_pp: an anomaly model has no accuracy; gate its AUROC "
                              "(max_auroc_drop) and its operating point (max_recall_drop_pp, max_false_reject_rise_pp)")
        for name in ("max_recall_drop_pp", "max_false_reject_rise_pp"):
            if getattr(gates, name) is not None and a is not None and a.target_recall is None and \
                    a.max_false_reject is None and a.escape_cost is None:
                raise ConfigError(f"gates.{name} compares models at their operating points: give anomaly: a rule "
                                  "(target_recall, max_false_reject or escape_cost)")

    def check_data(self, recipe: Any, splits: dict[str, Path]) -> None:
        """The good class in train/, and a val/ and test/ where the gates compare models."""
        from edgeft.data.imagefolder import scan_split

        a = recipe.sections["anomaly"]
        classes = scan_split(splits["train"]).classes
        if a.good not in classes:
            raise ConfigError(f"anomaly.good: {a.good!r} is not a class folder of {splits['train']} "
                              f"({', '.join(classes)}){close_matches(a.good, classes)}")
        g = recipe.gates
        gated = any(v is not None for v in (g.max_auroc_drop, g.max_recall_drop_pp, g.max_false_reject_rise_pp))
        if gated and ("val" not in splits or "test" not in splits):
            raise DataError(f"the gates compare models on test/ at thresholds chosen on val/, and {recipe.data} lacks "
                            f"{'val/' if 'val' not in splits else 'test/'}; add it with good and anomalous images, or "
                            "remove the AUROC and operating-point gates")
        if "ship" in recipe.stages and ("val" not in splits or len(scan_split(splits["val"]).classes) < 2):
            raise DataError(f"ship judges each model on each runtime by its AUROC on val/, and {recipe.data}'s val/ "
                            f"{'is missing' if 'val' not in splits else 'has one class'}; add val/ with good and "
                            "anomalous images, or remove ship")

    def first_label(self, recipe: Any) -> str:
        a = recipe.sections["anomaly"]
        return f"{a.method} FP32" + (f", {a.dims} channels" if a.dims else "")

    def calibration_class(self, class_names: list[str]) -> str | None:
        return class_names[0]  # the good parts: the activations INT8 must represent well are theirs

    # ------------------------------------------------------------------------------------------- stages
    def run_first(self, recipe: Any, out: Path, resume: bool) -> None:
        from edgeft.tasks.anomaly.fit import fit

        cfg = recipe.sections["anomaly"]
        if recipe.threads and not cfg.threads:
            cfg = replace(cfg, threads=recipe.threads)
        fit(cfg, recipe.data, out, force=True)

    def torch_model(self, artifact: Any) -> Any:
        """The backbone cut after its deepest level, then the anomaly graph."""
        import timm

        from edgeft.runtime.torch_model import check_arch
        from edgeft.tasks.anomaly.graph import AnomalySpec, cut_backbone, graph

        meta = artifact.meta
        check_arch(meta.arch)
        spec = AnomalySpec.from_dict(meta.extra.get("anomaly"), f"{artifact.path}/meta.json extra.anomaly")
        return graph(cut_backbone(timm.create_model(meta.arch, pretrained=False), spec.layers), spec)

    own_pruning = True  # the feature levels kept, the backbone recovered by distilling its own features

    def prune(self, parent: Any, data: Path, out: Path, cfg: Any, force: bool, measure_latency: bool) -> Any:
        from edgeft.tasks.anomaly.prune import prune_anomaly

        return prune_anomaly(parent, data, out, cfg, force=force)

    def prune_summary(self, metrics: dict[str, Any]) -> str:
        from edgeft.metrics import read

        return read(metrics, "anomaly_prune").summary(metrics)

    # ------------------------------------------------------------------------------------------- export
    def onnx_metadata(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {"task": "anomaly", "anomaly": extra.get("anomaly")}

    def finish_graph(self, model: Any, extra: dict[str, Any]) -> None:
        from edgeft.tasks.anomaly.graph import store_statistics

        store_statistics(model, extra["anomaly"].get("storage", "fp32"))

    def carried_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"anomaly": metrics["anomaly"]} if "anomaly" in metrics else {}  # the FP32 graph computes the same

    def parity(self, model: Any, path: Path, images: Any, onnx_images: Any, contract: Any, onnx_contract: Any,
               split: str, names: list[str], gray_input: bool) -> dict[str, Any]:
        from edgeft import progress
        from edgeft.errors import EdgeftError
        from edgeft.export.stage import map_parity

        mp = map_parity(model, path, images, contract, onnx_images=onnx_images, onnx_contract=onnx_contract)
        if not mp.passed:
            raise EdgeftError(f"ONNX Runtime's anomaly scores or heatmaps differ from PyTorch's on {mp.n} real {split} "
                              f"images: {mp.explain()}; try another --opset, or report it")
        progress.info(f"parity on {mp.n} {split} images: scores within {mp.max_rel_diff:.1e} relative, heatmaps "
                      f"correlated >= {mp.min_map_correlation:.5f}")
        return {**mp.to_dict(), "split": split}

    def parity_line(self, record: dict[str, Any]) -> str:
        from edgeft.metrics import ParityCheck

        p = ParityCheck.from_dict(record, "metrics.parity")
        return (f"parity vs PyTorch on {p.n} {p.split} images: scores within {p.max_rel_diff:.1e} relative, "
                f"heatmaps correlated >= {p.min_map_correlation:.5f}")

    def parity_classes(self, class_names: list[str]) -> list[str] | None:
        return None  # an anomaly model's data has any defect folders

    # ------------------------------------------------------------------------------------------- quantize
    dedicated_qdq = True  # a Q/DQ pair per INT8 consumer, so the FP32 distance part can read the unrounded features

    def after_quantize_file(self, int8: Path, fp32: Path) -> None:
        from edgeft.tasks.anomaly.graph import distance_nodes
        from edgeft.tasks.anomaly.quantize import read_unrounded

        read_unrounded(int8, distance_nodes(fp32))

    def int8_excluded(self, pre: Path) -> list[str]:
        from edgeft.tasks.anomaly.graph import distance_nodes

        return distance_nodes(pre)  # the distances stay FP32

    def after_int8(self, int8: Path, data: Path, parent: Any, threads: int) -> dict[str, Any]:
        from edgeft.tasks.anomaly.quantize import refit_for_int8

        return {"refit_on_int8": refit_for_int8(int8, data, parent, threads)}

    def int8_metrics(self, fp32: Path, int8: Path, eval_set: Any, data: Path, parent: Any, cfg: Any,
                     graph: dict[str, Any], meta: Any) -> None:
        from edgeft.tasks.anomaly.quantize import int8_anomaly_metrics

        meta.metrics, policy, spec = int8_anomaly_metrics(fp32, int8, eval_set, data, parent, cfg, graph)
        meta.extra.update(task="anomaly", anomaly=spec)
        if policy is not None:
            meta.extra["decision"] = policy.to_dict()

    def int8_summary(self, metrics: dict[str, Any]) -> list[str]:
        from edgeft.metrics import Decisions, read

        s, a = metrics["eval_split"], read(metrics, "anomaly")
        d = a.test if s == "test" else a.val
        lines = []
        if d is not None and metrics.get("anomaly_fp32"):
            fp32 = Decisions.from_dict(metrics["anomaly_fp32"], "metrics.anomaly_fp32")
            lines.append(f"{s} image AUROC: FP32 {fp32.auroc:.4f}, INT8 {d.auroc:.4f}")
        moved = metrics.get("int8_vs_fp32") or {}
        if moved:
            lines.append(f"INT8 vs FP32: scores within {moved.get('max_rel_score_diff', 0):.1e} relative, heatmaps "
                         f"correlated {moved.get('median_map_correlation', 0):.4f} (median; least "
                         f"{moved.get('min_map_correlation', 0):.4f})")
        if a.test_policy is not None:
            lines.append(f"test at the INT8 model's own val threshold: {a.test_policy.text()}")
        return lines

    # ------------------------------------------------------------------------------------------- runtime
    def head(self, extra: dict[str, Any], where: str) -> Any:
        from edgeft.tasks.anomaly.graph import AnomalySpec

        return AnomalyHead(AnomalySpec.from_dict(extra.get("anomaly"), f"{where} anomaly"))

    # ------------------------------------------------------------------------------------------- ship
    ships_per_runtime = True

    def val_row(self, recipe: Any, artifact: Any, backend: str) -> tuple[dict[str, Any], Any]:
        """AUROC on val as ``backend`` computes the scores, and the model's own rule's operating point there."""
        from edgeft.tasks.anomaly.scoring import on_val, rule_of

        v = on_val(artifact.model_path, recipe.data, artifact.meta.input, artifact.meta.class_names[0],
                   rule_of(artifact), backend, recipe.threads)
        if v is None or v.decisions is None:
            raise DataError(f"{recipe.data}/val needs good and anomalous parts to judge a model on each runtime (its "
                            "AUROC and threshold); add them, or remove ship:")
        return {"image_decisions": v.decisions, "image_policy": v.outcome, "quality": v.decisions.auroc,
                "quality_name": "AUROC"}, v.policy

    def for_runtime(self, artifact: Any, runtime: str, data: Path, out: Path, threads: int) -> Path | None:
        from edgeft.tasks.anomaly.quantize import for_runtime

        return for_runtime(artifact, runtime, data, out, threads)

    def measure_shipped(self, recipe: Any, out: Path, backend: str) -> None:
        from edgeft.tasks.anomaly.scoring import measure_on

        measure_on(out, recipe.data, backend, recipe.threads)

    # ------------------------------------------------------------------------------------------- measure, report
    def require_logits(self, artifact: Any) -> None:
        raise ConfigError(f"{artifact.path} is an anomaly model: its AUROC and decisions on val and test are measured "
                          "by `edgeft anomaly` (and `edgeft quantize` for INT8) and stored in its meta.json; eval and "
                          "decide read classifiers")

    def evaluate(self, artifact: Any, data: Path, split: str, backend: str | None = None,
                 positive: list[str] | None = None, tta_views: int | None = None) -> Any:
        self.require_logits(artifact)

    def read_row(self, meta: Any) -> dict[str, Any]:
        from edgeft.metrics import read

        fit = read(meta.metrics, "anomaly")  # scored on test once, at its own threshold chosen on val
        return {"anomaly": fit, "split": "test",
                "quality": fit.test.auroc if fit is not None and fit.test is not None else None,
                "quality_name": "AUROC"}

    def report_extras(self, recipe: Any, run: Path, rows: list[Any]) -> tuple[Any, Any]:
        """The gallery of the final model's test parts, and, with an AUROC gate, the paired bootstrap interval of
        the AUROC drop against the run's first model on the same parts (how much of the drop the split's size
        cannot resolve)."""
        from edgeft import artifact as art
        from edgeft import progress
        from edgeft.metrics import auroc_drop_interval
        from edgeft.tasks.anomaly.gallery import gallery, score_test

        final = next((r for r in reversed(rows) if r.anomaly is not None and r.stage != "build"), None)
        if final is None:
            return None, None
        base = rows[0]
        compare = recipe.gates.max_auroc_drop is not None and final is not base
        progress.info(f"drawing the report's gallery: {final.step}'s heatmaps of the test parts")
        test = score_test([run / final.step] + ([run / base.step] if compare else []), recipe.data, recipe.threads)
        if test is None:
            return None, None
        shown = gallery(test, 0, art.load(run / final.step).meta.input, run)
        y = test.anomalous()
        if not compare or y.all() or not y.any():
            return shown, None
        return shown, auroc_drop_interval(y, test.models[1].scores, test.models[0].scores)


register(Anomaly())
