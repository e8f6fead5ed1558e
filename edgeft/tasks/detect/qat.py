"""A detector's quantization-aware training (``edgeft quantize --method qat`` on a detector, beside
:mod:`edgeft.quantize.qat`).

The same simulation as a classifier's: every convolution of the backbone, the pyramid and the head sees its input
fake-quantized per tensor, with ranges from the calibration images, and its weight per output channel; the decoding
and NMS after the head are not convolutions and stay FP32, as the INT8 graph keeps them. The detector then trains
through the engine's loop on FCOS's loss with its parent's training settings (flips, photometric changes, frozen
first stages and BatchNorm statistics of a pretrained backbone) at the stage's epochs and learning rate, the best
val mAP epoch, measured with the fake quantization on, kept. The trained weights are exported and quantized by the
same PTQ path and calibration images, so the ranges match; the artifact records the mAP drop against the FP32 parent.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft import progress
from edgeft.errors import ArtifactError


def qat_detector(parent_path: Path, out: Path, cfg: Any, calib: Path, data: Path, epochs: int, lr: float,
                 force: bool = False) -> art.Artifact:
    """QAT of the FP32 detector ``parent_path`` on ``data``, then INT8 export to ``out``; see the module docstring."""
    from edgeft.data import calibration
    from edgeft.models import from_artifact
    from edgeft.quantize.ptq import quantize
    from edgeft.quantize.qat import convert_back, input_ranges, prepare
    from edgeft.tasks.detect.model import DetectSpec
    from edgeft.tasks.detect.training import (fit, frozen_prefix, load_sets, measure, parent_training, parent_weights,
                                              save_detector)
    from edgeft.training.loop import setup

    out = art.refuse_existing(out, force)
    parent = art.load(parent_path)
    if parent.meta.kind != "torch" or parent.meta.extra.get("quantized"):
        raise ArtifactError(f"QAT needs the detector's FP32 PyTorch artifact; {parent.path} holds "
                            f"{parent.meta.extra.get('quantized') or parent.meta.kind}")
    rcfg = parent_training(parent, epochs=epochs, lr=lr, seed=0, threads=cfg.threads)
    contract = parent.meta.input
    device, dist = setup(rcfg.train)
    _, decoded = load_sets(data, contract, rcfg.train.threads, classes=parent.meta.class_names)
    graph = from_artifact(parent)
    split = "test" if "test" in decoded else "val"
    fp32_parent = measure(graph, {split: decoded[split]}, contract)[split]
    calib_set = calibration.load_images(calibration.load(calib), data, contract)
    ranges = input_ranges(graph.model, calib_set.images, contract, percentile=cfg.percentile)
    n = prepare(graph.model, ranges, symmetric=cfg.target == "tensorrt")
    progress.info(f"QAT: {n} convolutions of the detector fake-quantized ({cfg.target}), {epochs} epoch(s) at lr "
                  f"{lr:g}")
    pretrained = parent_weights(parent) is not None
    if pretrained:  # as the parent trained: its pretrained first stages keep their weights
        spec = DetectSpec.from_dict(parent.meta.extra["detect"], f"{parent.path} extra.detect")
        frozen_prefix(graph.model, spec.frozen_stages)
    with tempfile.TemporaryDirectory(prefix="edgeft-qat-", dir=out.parent if out.parent.exists() else None) as d:
        weights = Path(d) / "qat-weights"
        state, metrics, work = fit(graph, rcfg.train, decoded, contract, device, dist, weights, False, pretrained)
        convert_back(graph.model)
        params = {"qat": {"epochs": epochs, "lr": lr, "target": cfg.target, "fake_quantized_layers": n},
                  "train": rcfg.to_dict()}
        meta = art.Meta(kind="torch", arch=parent.meta.arch, class_names=parent.meta.class_names, input=contract,
                        lineage=parent.stage_record("qat", params), metrics=metrics,
                        extra={**parent.meta.extra, "history": state.history})
        trained = save_detector(graph, weights, meta, state, device, dist, work, force=True)
        result = quantize(trained.path, out, cfg, calib, data, force=force,
                          extra_metrics={f"{split}_fp32_parent": fp32_parent})
    m = result.meta.metrics
    m["map_drop_vs_parent_points"] = round((fp32_parent["map"] - m[m["eval_split"]]["map"]) * 100, 2)
    result.meta.lineage[-1]["parent"] = f"{parent.path} (QAT weights, not kept)"
    result.meta.extra["method"] = "qat"
    art.update_metrics(result, {})
    return result
