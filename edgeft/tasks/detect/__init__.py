"""Object detection: which defect and where. An FCOS head (torchvision's) on a timm backbone's feature levels, trained
on box-labelled images (COCO JSON or YOLO txt), measured by the COCO evaluator, exported as one graph whose NMS is
inside (ONNX NonMaxSuppression).

Where each piece is, by what it does:
- ``data``: COCO JSON and YOLO txt layouts, bad boxes clipped or dropped with a count, boxes following the image
  through the input contract;
- ``model``: the network (backbone levels, feature pyramid, FCOS head) and its shape (:class:`DetectSpec`);
- ``nms``: the graph the camera runs: decoding, scores, NMS in the graph, and its one output ``detections``;
- ``boxes``: boxes back on the frame, matched between two models (export parity), drawn over a frame;
- ``metrics``: mAP by pycocotools, boxes found at an operating confidence, each image's not-OK score;
- ``config``, ``training`` and ``train``: ``edgeft detect`` (a recipe's ``detect:`` section) through the one
  training engine: the detector's objective for the loop (FCOS's loss, val mAP), and the stage;
- ``prune``: its backbone pruned, recovered with its own training settings (distilling the parent's head);
- ``qat``: its quantization-aware training on FCOS's loss, then PTQ's path;
- ``checkpoint``: a torchvision FCOS checkpoint brought in with its own weights;
- ``gallery``: the report's test images, the most missed boxes first.
This module is the task object that the stages, the predictor and ``edgeft eval`` ask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import ConfigError, close_matches
from edgeft.tasks.registry import Task, register


@dataclass
class ScoredSplit:
    """A split run through a detector on one runtime: its images, the detections, and per image whether it has a
    true box of a "not OK" class (``y``), its "not OK" score (its best such box; None without such classes) and its
    product."""

    images: Any
    detections: list
    y: np.ndarray
    score: np.ndarray | None
    products: Any


class DetectHead:
    """The runtime's post-processing of ``detections`` (numpy only): each frame's boxes moved back onto the frame,
    its label the best box's class (``none`` without a box), and, with a policy, the decision on its highest
    defect-class score."""

    places_boxes = True  # the predictor passes each frame's size and the contract, to put boxes back on the frame

    def predict(self, runner: Any, x: np.ndarray, policy: Any, class_names: list[str],
                sizes: list[tuple[int, int]] | None = None, contract: Any = None) -> list[Any]:
        from edgeft.runtime.predictor import Prediction
        from edgeft.tasks.detect.boxes import to_frame
        from edgeft.tasks.detect.nms import split_detections

        per = split_detections(runner.infer_outputs(x)[0], len(x))
        out = []
        for k, (b, s, c) in enumerate(per):
            if sizes is not None and contract is not None:
                b = to_frame(b, contract, *sizes[k])
            boxes = [{"box": [round(float(v), 1) for v in bb], "score": round(float(ss), 4),
                      "class": class_names[int(cc)] if int(cc) < len(class_names) else str(int(cc))}
                     for bb, ss, cc in zip(b, s, c)]
            top = int(c[0]) if len(c) else -1
            label = (class_names[top] if 0 <= top < len(class_names) else "none")
            not_ok = decision = None
            if policy is not None:
                positive = [class_names.index(p) for p in policy.positive if p in class_names]
                sel = s[np.isin(c, positive)]
                not_ok = float(sel.max()) if len(sel) else 0.0
                decision = str(policy.decide(np.array([not_ok]))[0])
            out.append(Prediction(label, top, float(s[0]) if len(s) else 0.0, [], decision=decision, not_ok=not_ok,
                                  extras={"boxes": boxes}))
        return out

    def draw(self, frame: np.ndarray, prediction: Any, policy: Any, class_names: list[str]) -> np.ndarray:
        """The frame's boxes with their classes and scores (``edgeft infer --overlays``), 8-bit BGR; a class's colour
        is its index among the model's classes, the same in every frame."""
        from edgeft.tasks.detect.boxes import draw

        boxes = prediction.extras.get("boxes", [])
        names = list(class_names) + sorted({b["class"] for b in boxes} - set(class_names))
        frame8 = frame if frame.dtype == np.uint8 else (frame / max(float(frame.max()), 1.0) * 255).astype(np.uint8)
        return draw(frame8, np.array([b["box"] for b in boxes], np.float32).reshape(-1, 4),
                    np.array([b["score"] for b in boxes]), np.array([names.index(b["class"]) for b in boxes]), names)


class Detect(Task):
    name = "detect"
    first_stage = "detect"
    stages = ("detect", "prune", "export", "quantize", "build", "ship", "bench")
    graph_outputs = ("detections",)
    supports_qat = True  # FCOS's loss on the boxes, the decoding and NMS left FP32 (edgeft.tasks.detect.qat)
    summary = "an object detector trained on box-labelled images"
    importable = True  # an ONNX detector with a raw output in a declared layout (decoding and NMS added)
    imports_checkpoints = True  # a torchvision FCOS checkpoint (torchvision:fcos_resnet50_fpn)
    extra_carried = ("task", "detect", "decision")

    # ------------------------------------------------------------------------------------------- recipe and data
    def first_config(self, section: dict[str, Any]) -> Any:
        from edgeft.tasks.detect.config import DetectConfig

        return DetectConfig.from_dict(section or {})

    def check_recipe(self, recipe_dict: dict[str, Any], sections: dict[str, Any]) -> None:
        """What a classifier recipe has and a detection recipe cannot (yet): one line each, with what to use."""
        if recipe_dict.get("search") is not None:
            raise ConfigError("search: the search prunes and quantizes classifiers; a detection recipe runs its "
                              "prune: and quantize: sections as written")
        q = sections.get("quantize")
        if q is not None and q.method == "qat" and q.qat_mode != "full":
            raise ConfigError(f"quantize.qat_mode {q.qat_mode}: a detector's QAT trains as its parent trained (its "
                              "frozen first stages stay frozen); use full")

    def check_gates(self, gates: Any, decision: Any, sections: dict[str, Any]) -> None:
        if gates.max_accuracy_drop_pp is not None:
            raise ConfigError("gates.max_accuracy_drop_pp: a detector has no accuracy; gate its mAP "
                              "(max_map_drop_points), latency (max_p50_ms) and, with a decision: section, its recall "
                              "and false rejects")
        for name in gates.DECISION_GATES:
            if getattr(gates, name) is not None and decision is None:
                raise ConfigError(f"gates.{name} compares models at their operating points: add a decision: section "
                                  "(positive: [a defect class] and a rule such as target_recall: 0.95)")

    def check_data(self, recipe: Any, splits: dict[str, Path]) -> None:
        from edgeft.tasks.detect.data import read_split

        train = read_split(recipe.data, "train")  # refuse bad annotations before any stage runs
        if "val" not in splits:
            raise ConfigError(f"{recipe.data} has no val split: a detector's best epoch is chosen on val")
        if recipe.decision is not None:
            unknown = [c for c in recipe.decision.positive if c not in train.classes]
            if unknown:
                raise ConfigError(f"decision.positive: {unknown[0]!r} is not a class of {recipe.data} "
                                  f"({', '.join(train.classes)}){close_matches(unknown[0], train.classes)}")
        if recipe.gates.max_map_drop_points is not None and "test" not in splits:
            raise ConfigError(f"gates.max_map_drop_points compares models on a test split no stage trains or "
                              f"selects on, and {recipe.data} has none; add one, or remove the gate")

    def splits(self, data: Path) -> dict[str, Any]:
        from edgeft.tasks.detect.data import find_layout

        return find_layout(data)[1]

    def data_classes(self, data: Path) -> list[str]:
        from edgeft.tasks.detect.data import class_names

        return class_names(data)

    def adopt_onnx(self, model: Any, names: list[str], contract: Any, layout: str | None) -> tuple[Any, dict]:
        """An ONNX detector with a raw output in a declared ``layout`` gets decoding and NMS appended: ``yolo``
        (Ultralytics' export without NMS: (1, 4 + classes, anchors), centre x, centre y, width, height in input pixels,
        then class scores in [0, 1])."""
        from edgeft.tasks.detect.model import DetectSpec
        from edgeft.tasks.detect.nms import YoloPostprocess, add_postprocess

        if layout != "yolo":
            raise ConfigError(f"import.layout must say how the detector's raw output is laid out: yolo ((1, 4 + "
                              f"classes, anchors), Ultralytics' export); got {layout!r}")
        outs = model.graph.output
        dims = [d.dim_value if d.HasField("dim_value") else None for d in outs[0].type.tensor_type.shape.dim]
        if len(outs) != 1 or len(dims) != 3 or not dims[1] or not dims[2] or dims[1] != 4 + len(names):
            raise ConfigError(f"import.layout yolo expects one output (1, 4 + {len(names)} classes, anchors); the file "
                              f"has {len(outs)} output(s), the first {dims}: check --classes (one per class score) "
                              "and the layout")
        spec = DetectSpec(levels=(0,), strides=())
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        post = YoloPostprocess(spec, contract.size, len(names), dims[2])
        return add_postprocess(model, outs[0].name, post, opset), {"task": "detect", "detect": spec.to_dict(),
                                                                   "layout": layout}

    def import_checkpoint(self, cfg: Any, source: Path, names: list[str] | None) -> tuple[Any, int, Any, str, dict]:
        """A torchvision FCOS checkpoint (a state dict, or the reference scripts' ``{"model": ...}``) as a detector
        graph with edgeft's decoding and NMS. torchvision's detection recipes number classes from 1 (0 is the
        background, never a box): a head with one output more than the class names loses that output."""
        from edgeft.importer.stage import declared_contract
        from edgeft.tasks.detect.checkpoint import load_torchvision_fcos

        graph, outputs, contract, spec = load_torchvision_fcos(source, cfg.arch, names,
                                                               lambda base: declared_contract(cfg, base))
        return graph, outputs, contract, "torchvision detector checkpoint", {"task": "detect",
                                                                              "detect": spec.to_dict()}

    def read_images(self, data: Path, split: str, contract: Any, class_names: list[str],
                    limit: int | None = None) -> Any:
        from edgeft.tasks.detect.data import decode, read_split

        return decode(read_split(data, split, classes=class_names), contract, limit=limit)

    def calibration_manifest(self, data: Path, n: int, class_names: list[str], split: str = "train", seed: int = 0,
                             contract: Any = None) -> Any:
        """Images with boxes (their activations are what INT8 must keep), balanced by each image's most frequent
        class; images without boxes are not sampled."""
        from edgeft.data import calibration
        from edgeft.tasks.detect.data import read_split

        ds = read_split(data, split, classes=class_names)
        dominant = np.array([np.bincount(lab).argmax() if len(lab) else -1 for lab in ds.labels])
        if not (dominant >= 0).any():
            raise ConfigError(f"{data}'s {split} split has no boxes to calibrate INT8 on")
        return calibration.from_files(ds.paths, dominant, class_names, data, n, seed, contract,
                                      {"split": split, "sampled": "images with boxes, by their most frequent class"})

    def first_label(self, recipe: Any) -> str:
        return "detector FP32"

    def measure(self, recipe: Any, stage: str, out: Path, always: bool) -> None:
        """With a decision section: this model's own policy chosen on val (pruning and INT8 move scores), and what it
        does on the held-out split, kept beside that split's mAP (the stages measure mAP themselves)."""
        from edgeft import artifact as art

        d = recipe.decision
        if d is None:
            return
        a = art.load(out)
        self._policy(a, recipe.data, d.rule(), list(d.positive), None)

    # ------------------------------------------------------------------------------------------- stages
    def run_first(self, recipe: Any, out: Path, resume: bool) -> None:
        from edgeft.tasks.detect.train import train_detector

        train_detector(recipe.sections["detect"].with_threads(recipe.threads), recipe.data, out, force=True,
                       resume=resume)

    def torch_model(self, artifact: Any) -> Any:
        from edgeft.tasks.detect.model import DetectSpec, build
        from edgeft.tasks.detect.nms import DetectorGraph

        meta = artifact.meta
        spec = DetectSpec.from_dict(meta.extra.get("detect"), f"{artifact.path}/meta.json extra.detect")
        return DetectorGraph(build(meta.arch, meta.num_classes, spec), spec, meta.input.size)

    own_pruning = True  # backbone channels only (the pyramid and head keep theirs), recovered by FCOS's loss

    def prune(self, parent: Any, data: Path, out: Path, cfg: Any, force: bool, measure_latency: bool) -> Any:
        from edgeft.tasks.detect.prune import prune_detector

        return prune_detector(parent, data, out, cfg, force=force)

    def prune_summary(self, metrics: dict[str, Any]) -> str:
        from edgeft.tasks.detect.metrics import DetectionMetrics

        p = metrics["detect_prune"]
        s = metrics["eval_split"]
        return (f"MACs {p['macs_before'] / 1e6:.0f}M -> {p['macs_after'] / 1e6:.0f}M ({p['macs_ratio']:.3f}), params "
                f"{p['params_ratio']:.3f}; val mAP {p['val_map_before']:.4f} -> {p['val_map_after_prune']:.4f} pruned"
                f" -> {metrics['val']['map']:.4f} recovered\n"
                + DetectionMetrics.from_dict(metrics[s]).summary(f"{s}:"))

    # ------------------------------------------------------------------------------------------- export
    def onnx_metadata(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {"task": "detect", "detect": extra.get("detect")}

    def carried_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: metrics[k] for k in ("val", "test", "eval_split") if k in metrics}  # the FP32 graph's own

    def parity(self, model: Any, path: Path, images: Any, onnx_images: Any, contract: Any, onnx_contract: Any,
               split: str, names: list[str], gray_input: bool) -> dict[str, Any]:
        from edgeft import progress
        from edgeft.errors import EdgeftError
        from edgeft.tasks.detect.boxes import match
        from edgeft.tasks.detect.training import torch_detections

        ref = torch_detections(model, images, contract, desc="parity torch")
        got = onnx_detections(path, onnx_images, onnx_contract)
        unmatched, ious, diffs, worst = 0, [], [], None
        for k, (r, g) in enumerate(zip(ref, got)):
            u, i, d = match(r, g)
            unmatched += u
            ious += list(i)
            diffs += list(d)
            if u and worst is None:
                worst = names[k]
        min_iou = float(min(ious)) if ious else 1.0
        max_diff = float(max(diffs)) if diffs else 0.0
        record = {"n": len(images), "boxes": int(sum(len(r[0]) for r in ref)), "unmatched": unmatched,
                  "min_iou": round(min_iou, 6), "max_score_diff": float(f"{max_diff:.3g}"),
                  "rule": "every box matched, same class, IoU >= 0.99, score within 1e-3", "split": split}
        if unmatched or min_iou < 0.99 or max_diff > 1e-3:
            raise EdgeftError(f"ONNX Runtime's boxes differ from PyTorch's on {len(images)} real {split} images: "
                              f"{unmatched} unmatched (first in {worst}), least IoU {min_iou:.4f}, largest score "
                              f"difference {max_diff:.1e}; try another --opset, or report it")
        progress.info(f"parity on {len(images)} {split} images: {record['boxes']} boxes all matched, IoU >= "
                      f"{min_iou:.5f}, scores within {max_diff:.1e}")
        return record

    def parity_line(self, record: dict[str, Any]) -> str:
        return (f"parity vs PyTorch on {record['n']} {record['split']} images: {record['boxes']} boxes, "
                f"{record['unmatched']} unmatched, IoU >= {record['min_iou']:.5f}, scores within "
                f"{record['max_score_diff']:.1e}")

    # ------------------------------------------------------------------------------------------- quantize
    def qat(self, parent: Path, out: Path, cfg: Any, calib: Path, data: Path, epochs: int, lr: float, mode: str,
            force: bool) -> Any:
        from edgeft.tasks.detect.qat import qat_detector

        if mode != "full":
            raise ConfigError(f"--qat-mode {mode}: a detector's QAT trains as its parent trained (its frozen first "
                              "stages stay frozen); use full")
        return qat_detector(Path(parent), Path(out), cfg, Path(calib), Path(data), epochs, lr, force=force)

    def int8_excluded(self, pre: Path) -> list[str]:
        """Decoding, scores and NMS stay FP32: a box's corners in 8 bits would move it by pixels, and NMS compares
        scores that differ in the third decimal."""
        from edgeft.tasks.detect.nms import tail_nodes

        return tail_nodes(pre)

    def int8_metrics(self, fp32: Path, int8: Path, eval_set: Any, data: Path, parent: Any, cfg: Any,
                     graph: dict[str, Any], meta: Any) -> None:
        from edgeft.tasks.detect.training import evaluate_set

        contract, split = parent.meta.input, eval_set.name
        m_fp32 = evaluate_set(onnx_detections(fp32, eval_set.images, contract, cfg.threads), eval_set, contract)
        m_int8 = evaluate_set(onnx_detections(int8, eval_set.images, contract, cfg.threads), eval_set, contract)
        meta.metrics = {split: m_int8.to_dict(), f"{split}_fp32": m_fp32.to_dict(), "eval_split": split,
                        "map_drop_points": round((m_fp32.map - m_int8.map) * 100, 2), **graph}
        meta.extra.update(task="detect", detect=parent.meta.extra["detect"])

    def int8_summary(self, metrics: dict[str, Any]) -> list[str]:
        from edgeft.tasks.detect.metrics import DetectionMetrics

        s = metrics["eval_split"]
        int8, fp32 = DetectionMetrics.from_dict(metrics[s]), DetectionMetrics.from_dict(metrics[f"{s}_fp32"])
        lines = [f"{s} mAP@[.5:.95]: FP32 {fp32.map:.4f}, INT8 {int8.map:.4f} (drop {metrics['map_drop_points']:.2f} "
                 f"AP points); mAP@.5: FP32 {fp32.map50:.4f}, INT8 {int8.map50:.4f}"]
        parent = metrics.get(f"{s}_fp32_parent")
        if parent is not None:  # QAT: the FP32 graph above is the QAT weights'; the parent is what it started from
            lines.append(f"against the FP32 parent before QAT: mAP@[.5:.95] {parent['map']:.4f} -> INT8 {int8.map:.4f} "
                         f"(drop {metrics['map_drop_vs_parent_points']:.2f} AP points)")
        return lines

    # ------------------------------------------------------------------------------------------- runtime
    def head(self, extra: dict[str, Any], where: str) -> Any:
        from edgeft.tasks.detect.model import DetectSpec

        DetectSpec.from_dict(extra.get("detect"), f"{where} detect")  # refuse a file that is not an edgeft detector
        return DetectHead()

    # ------------------------------------------------------------------------------------------- measure
    def require_logits(self, artifact: Any) -> None:
        raise ConfigError(f"{artifact.path} is a detector: its numbers are mAP (`edgeft eval` measures them); "
                          "decide and compare-backends read a classifier's logits")

    def evaluate(self, artifact: Any, data: Path, split: str, backend: str | None = None,
                 positive: list[str] | None = None, tta_views: int | None = None) -> Any:
        """mAP of the artifact (PyTorch or ONNX) on ``split``, in the images' own pixels."""
        from edgeft.tasks.detect.training import evaluate_set

        meta = artifact.meta
        s = self.read_images(data, split, meta.input, meta.class_names)
        dets = self.detections(artifact, s, backend)
        return evaluate_set(dets, s, meta.input)

    def detections(self, artifact: Any, s: Any, backend: str | None = None) -> list:
        """Per image of the decoded split ``s``: (boxes in model-input pixels, scores, classes) from the artifact, run
        by PyTorch (a ``torch`` artifact) or by a runtime backend (ONNX: ONNX Runtime by default, ``ov-cpu`` OpenVINO;
        an engine: TensorRT), as the camera runs it."""
        meta = artifact.meta
        if meta.kind == "torch":
            if backend not in (None, "auto", "torch"):
                raise ConfigError(f"--backend {backend}: {artifact.path} holds PyTorch weights; export it to run it "
                                  "on a runtime, or leave out --backend")
            from edgeft.models import from_artifact
            from edgeft.tasks.detect.training import torch_detections

            return torch_detections(from_artifact(artifact), s.images, meta.input)
        from edgeft.runtime.backends import choose

        files = {meta.model_file: artifact.model_path}  # (an import measures its artifact before meta.json exists)
        chosen = choose("ort-cpu" if backend in (None, "auto") and meta.kind == "onnx" else backend or "auto", files)
        return runner_detections(chosen.make(files[chosen.model_file], artifact.path, None), s.images, meta.input,
                                 chosen.name)

    def decide(self, artifact: Any, data: Path, rule: Any, positive: list[str], backend: str | None) -> list[str]:
        """A part is rejected when a box of a positive class scores above the threshold: an image's "not OK" score
        is its best such box, and it is "not OK" when it has a true box of such a class."""
        policy, held_out = self._policy(artifact, data, rule, positive, backend)
        lines = [f"{artifact.path}: {policy.text()}"]
        if held_out is not None:
            lines.append(f"  on {held_out[0]}: {held_out[1].text()}")
        return lines

    def _policy(self, artifact: Any, data: Path, rule: Any, positive: list[str], backend: str | None
                ) -> tuple[Any, tuple[str, Any] | None]:
        """The policy ``rule`` asks for, chosen on val and written into the artifact; on the held-out split (test,
        else val), its outcome and the image-level AUROC kept in the artifact's metrics beside that split's mAP.
        Returns the policy and, where there is a test split, (its name, the outcome there)."""
        from edgeft import artifact as art
        from edgeft.metrics import score_decisions

        found = self.splits(data)
        if "val" not in found:
            raise ConfigError(f"{data} has no val split: a policy is chosen on val, never on test; add one")
        v = self._scored(artifact, data, "val", positive, backend)
        policy = self._choose(rule, v, artifact, positive, backend)
        split = "test" if "test" in found else "val"  # the held-out split, as the stages report mAP on it
        t = self._scored(artifact, data, "test", positive, backend) if split == "test" else v
        outcome = policy.outcome(t.y, t.score, t.products)
        metrics: dict[str, Any] = {}
        record = dict(artifact.meta.metrics.get(split) or {})
        if record:  # the split's mAP record, measured by the stage that made the model
            both = bool(t.y.any() and not t.y.all())  # AUROC needs good and defective parts
            record.update(policy=outcome.to_dict(),
                          decisions=score_decisions(t.y, t.score, positive).to_dict() if both else None)
            metrics[split] = record
        art.update_metrics(artifact, metrics, extra={"decision": policy.to_dict()})
        return policy, (split, outcome) if split == "test" else None

    def _scored(self, artifact: Any, data: Path, split: str, positive: list[str], backend: str | None
                ) -> "ScoredSplit":
        """A split through the artifact on ``backend``: the decoded images, the detections, and per image whether it
        has a true box of a ``positive`` class, its "not OK" score (its best such box) and its product."""
        from edgeft.data.products import products_of
        from edgeft.tasks.detect.metrics import image_scores

        names = artifact.meta.class_names
        unknown = [c for c in positive if c not in names]
        if unknown:
            raise ConfigError(f"--positive {unknown[0]!r} is not a class of the detector ({', '.join(names)})"
                              f"{close_matches(unknown[0], names)}")
        idx = [names.index(c) for c in positive]
        s = self.read_images(data, split, artifact.meta.input, names)
        dets = self.detections(artifact, s, backend)
        y = np.array([bool(np.isin(lab, idx).any()) for _, lab in s.truth])
        return ScoredSplit(s, dets, y, image_scores(dets, idx) if idx else None, products_of(data, s.paths))

    @staticmethod
    def _choose(rule: Any, v: "ScoredSplit", artifact: Any, positive: list[str], backend: str | None) -> Any:
        """The policy ``rule`` chooses on val's image scores ``v``, said to be ``backend``'s where that is not the
        artifact's default runtime (the camera's auto then runs it there)."""
        from edgeft.decision import choose_on_scores
        from edgeft.runtime.backends import scored_on

        policy = choose_on_scores(rule, v.y, v.score, artifact.meta.class_names, positive, "val", v.products)
        return scored_on(policy, backend, artifact.meta.kind)

    # ------------------------------------------------------------------------------------------- ship
    ships_per_runtime = True

    def val_row(self, recipe: Any, artifact: Any, backend: str) -> tuple[dict[str, Any], Any]:
        """mAP on val as ``backend`` computes the detections; with a decision section, the image-level operating point
        its rule chooses on those scores."""
        from edgeft.metrics import score_decisions
        from edgeft.tasks.detect.training import evaluate_set

        d = recipe.decision
        positive = list(d.positive) if d else []
        v = self._scored(artifact, recipe.data, "val", positive, backend)
        m = evaluate_set(v.detections, v.images, artifact.meta.input)
        fields: dict[str, Any] = {"task_metrics": m.to_dict(), "quality": m.map, "quality_name": "mAP@[.5:.95]"}
        if d is None:
            return fields, None
        policy = self._choose(d.rule(), v, artifact, positive, backend)
        fields["image_policy"] = policy.outcome(v.y, v.score, v.products)
        fields["image_decisions"] = score_decisions(v.y, v.score, positive) if v.y.any() and not v.y.all() else None
        return fields, policy

    def measure_shipped(self, recipe: Any, out: Path, backend: str) -> None:
        """The held-out split's mAP on ``backend``, and with a decision section the policy chosen on val there and its
        outcome on the held-out split."""
        from edgeft import artifact as art

        a = art.load(out)
        split = "test" if "test" in self.splits(recipe.data) else "val"
        m = self.evaluate(a, recipe.data, split, backend)
        art.update_metrics(a, {split: m.to_dict(), "eval_split": split, "scored_on": backend})
        if recipe.decision is not None:
            self._policy(a, recipe.data, recipe.decision.rule(), list(recipe.decision.positive), backend)

    def eval_text(self, record: Any, artifact: Any, title: str) -> str:
        return record.summary(title + ":")

    def report_extras(self, recipe: Any, run: Path, rows: list[Any]) -> tuple[Any, Any]:
        """The final model's test images, the most missed boxes first."""
        from edgeft.tasks.detect.gallery import detector_gallery

        return detector_gallery(recipe, run, rows), None

    def read_row(self, meta: Any) -> dict[str, Any]:
        from edgeft.tasks.detect.metrics import DetectionMetrics

        split = meta.metrics.get("eval_split") or ("test" if "test" in meta.metrics else "val")
        m = DetectionMetrics.from_dict(meta.metrics[split]) if isinstance(meta.metrics.get(split), dict) else None
        return {"split": split, "quality": m.map if m else None, "quality_name": "mAP@[.5:.95]",
                "task_metrics": m.to_dict() if m else None,
                "image_decisions": m.image_decisions() if m else None, "image_policy": m.image_policy() if m else None}


def onnx_detections(path: Path, images: np.ndarray, contract: Any, threads: int | None = None
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (boxes in model-input pixels, scores, classes) from ONNX Runtime on the CPU."""
    from edgeft.runtime.backends import OrtRunner

    return runner_detections(OrtRunner(Path(path), "CPUExecutionProvider", threads), images, contract, "onnx")


def runner_detections(runner: Any, images: np.ndarray, contract: Any, name: str
                      ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: (boxes in model-input pixels, scores, classes) from a runtime's runner (ONNX Runtime, OpenVINO,
    TensorRT), one image a call where its input has a fixed batch."""
    from edgeft import progress
    from edgeft.tasks.detect.nms import split_detections

    out = []
    with runner:
        batch = 16 if getattr(runner, "fixed_batch", 1) is None else 1  # an engine's profile: one image a call
        for i in progress.bar(range(0, len(images), batch), desc=f"detect {name}", unit="batch"):
            x = contract.normalize(images[i:i + batch])
            out += split_detections(runner.infer_outputs(x)[0], len(x))
    return out


register(Detect())
