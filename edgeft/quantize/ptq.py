"""``edgeft quantize --method ptq``: post-training INT8 quantization to a QDQ ONNX artifact.

Calibration and Q/DQ insertion are ONNX Runtime's (``quantize_static`` with its MinMax, Percentile and
Entropy calibrators); edgeft gives them a typed face and makes the choices that decide whether INT8 is
accurate *and* faster on the target:

- ``target=tensorrt``: int8 activations, symmetric (zero point 0), per-channel symmetric weights, Q/DQ
  on the inputs of Conv/Gemm/MatMul and on both inputs of residual ``Add`` so TensorRT fuses the add
  into the INT8 convolution (explicit quantization; TensorRT 10 deprecated and 11 removed calibrators).
- ``target=ort-cpu``: uint8 activations with int8 per-channel weights (U8S8), which ONNX Runtime's x86
  kernels run fast (the S8S8 form ran *slower* than FP32 here); then groups of layers whose INT8
  kernels are slower than FP32 on this CPU are measured and left in FP32 (the stem unless FP32 is
  clearly slower: its short dot products lose in INT8 on x86), and the result is never slower than FP32.

Weights are stored as int8 initializers behind DequantizeLinear, so the file is about 4x smaller.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import statistics
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeft import artifact as art
from edgeft import progress
from edgeft.errors import ArtifactError, ConfigError, DependencyError

TARGETS = ("ort-cpu", "tensorrt")
CALIB_METHODS = ("minmax", "percentile", "entropy")
METHODS = ("ptq", "qat")
HISTOGRAM_MAX_IMAGES = 128


@dataclass
class QuantizeConfig:
    """INT8 post-training quantization. ``percentile`` applies to ``calib_method=percentile``."""

    method: str = "ptq"
    target: str = "ort-cpu"
    calib_method: str = "percentile"
    percentile: float = 99.999
    per_channel: bool = True
    exclude: list[str] = field(default_factory=list)  # ONNX node names kept in FP32
    auto_exclude: bool = True  # ort-cpu: measure and keep slower-in-INT8 layer groups in FP32
    threads: int | None = None  # ONNX Runtime's threads for calibration and timing; None: all cores

    def __post_init__(self) -> None:
        if self.threads is None:
            self.threads = os.cpu_count() or 1
        for name, allowed in (("method", METHODS), ("target", TARGETS), ("calib_method", CALIB_METHODS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 90.0 <= self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in [90, 100], got {self.percentile}")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over normalised calibration images, one at a time."""

    def __init__(self, x: np.ndarray, input_name: str):
        self.x, self.name, self.i = x, input_name, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.name: self.x[self.i - 1:self.i]}

    def rewind(self):
        self.i = 0


def _ort_quant():
    try:
        from onnxruntime import quantization as q
    except ImportError:
        raise DependencyError("quantization needs onnxruntime: pip install 'edgeft[runtime]' (CPU) or "
                              "'edgeft[gpu]'") from None
    return q


def minmax_chunk(n: int) -> int:
    """Images per range merge for ONNX Runtime's MinMax calibrator, which otherwise holds every activation of
    every image in memory. Not a divisor of ``n``: ONNX Runtime 1.32 raises "No data is collected" when the last
    chunk ends exactly at the last image."""
    return next(c for c in range(16, 64) if n % c)


def quantize_file(fp32: Path, out: Path, x: np.ndarray, cfg: QuantizeConfig, exclude: list[str],
                  cache: Path, task: Any = None) -> None:
    """ONNX Runtime's static QDQ quantization of ``fp32`` to ``out`` for ``cfg.target``, calibrated on ``x``,
    ``exclude`` (node names) left in FP32; ``task`` (``edgeft.tasks``, a classifier by default) may ask for a Q/DQ
    pair per INT8 consumer and rewire the graph after quantizing."""
    q = _ort_quant()
    import onnx

    from edgeft.tasks import registry as tasks

    task = task or tasks.get(None)
    input_name = onnx.load(str(fp32)).graph.input[0].name
    dedicated = task.dedicated_qdq
    method = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile,
              "entropy": q.CalibrationMethod.Entropy}[cfg.calib_method]
    trt = cfg.target == "tensorrt"
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": trt, "CalibPercentile": cfg.percentile,
                             "CalibMaxIntermediateOutputs": minmax_chunk(len(x)), "DedicatedQDQPair": dedicated}
    quiet = _PerChannelFallback()
    logging.getLogger().addFilter(quiet)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress of their own
            q.quantize_static(
                str(fp32), str(out), _Reader(x, input_name), quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=["Conv", "Gemm", "MatMul", "Add"] if trt else None,
                per_channel=cfg.per_channel, activation_type=q.QuantType.QInt8 if trt else q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8, nodes_to_exclude=exclude or None, calibrate_method=method,
                extra_options=extra, calibration_cache_path=str(cache))
    finally:
        logging.getLogger().removeFilter(quiet)
    task.after_quantize_file(out, fp32)


class _PerChannelFallback(logging.Filter):
    """Drops ONNX Runtime's warning, once per calibration batch, that a rank-1 constant (a GroupNorm's scale, as a
    detector's head exports it) cannot be quantized per channel: it is quantized per tensor, as it should be."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Axis ") and "is out-of-range for weight" in record.getMessage())


def pre_process(fp32: Path, out: Path) -> None:
    """ONNX Runtime's pre-quantization pass (shape inference, graph optimization), its own printing silenced."""
    q = _ort_quant()
    with contextlib.redirect_stdout(io.StringIO()):
        q.quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)


def graph_summary(path: Path) -> dict[str, Any]:
    """Q/DQ node counts and which op types take dequantized (INT8) inputs, from the ONNX graph."""
    import onnx

    g = onnx.load(str(path)).graph
    producers = {o: n for n in g.node for o in n.output}
    ops = Counter(n.op_type for n in g.node)
    int8_ops: Counter = Counter()
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input):
            int8_ops[n.op_type] += 1
    return {"quantize_linear": ops.get("QuantizeLinear", 0), "dequantize_linear": ops.get("DequantizeLinear", 0),
            "int8_inputs_by_op": dict(int8_ops), "ops": dict(ops)}


def _graph_ops(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """The graph's nodes as (op type, inputs): equal for two files that run the same computation."""
    import onnx

    return [(n.op_type, tuple(n.input)) for n in onnx.load(str(path)).graph.node]


# A convolution that reads the model's input with an im2col inner dimension (input channels x kernel area) below
# this is an image model's stem (9 for a gray 3x3 stem, 27 for RGB). ONNX Runtime's x86 u8s8 GEMM packs that
# dimension for its VNNI kernels and requantizes every output of the largest feature map, which such a short
# dimension cannot pay for.
SHORT_CONV_K = 32

# Groups kept in FP32 unless FP32 is measured clearly slower (the burden of proof reversed): the stem lost in INT8 on
# every x86 host measured, by less than a shared host's noise (docs/experiments.md, the demo). The measurement still
# runs, so a CPU whose INT8 kernels do better keeps it in INT8.
FP32_BY_DEFAULT = ("input_conv",)
CLEAR_WIN, CLEAR_LOSS = 0.95, 1.05  # per-group trial/base latency ratios that a measurement must pass
WHOLE_GRAPH_WIN, WHOLE_GRAPH_LOSS = 0.97, 1.03  # the same for the final all-exclusions check


def _conv_groups(path: Path) -> dict[str, list[str]]:
    """Node names by kind (input conv, depthwise conv, pointwise conv, other conv, gemm, add): the units of
    exclusion. An input conv reads the model's input with a short im2col dimension (``SHORT_CONV_K``): the stem."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    graph_inputs = {i.name for i in m.graph.input} - set(inits)
    groups: dict[str, list[str]] = {"input_conv": [], "depthwise_conv": [], "pointwise_conv": [], "conv": [],
                                    "gemm": [], "add": []}
    for n in m.graph.node:
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            w = inits.get(n.input[1])
            if group > 1 and w is not None and w[1] == 1:
                groups["depthwise_conv"].append(n.name)
            elif (n.input[0] in graph_inputs and group == 1 and w is not None and len(w) == 4
                  and int(np.prod(w[1:])) < SHORT_CONV_K):
                groups["input_conv"].append(n.name)
            elif w is not None and len(w) == 4 and w[2:] == (1, 1):
                groups["pointwise_conv"].append(n.name)
            else:
                groups["conv"].append(n.name)
        elif n.op_type in ("Gemm", "MatMul"):
            groups["gemm"].append(n.name)
        elif n.op_type == "Add":
            groups["add"].append(n.name)
    return {k: v for k, v in groups.items() if v}


def side_by_side(paths: dict[str, Path], shape: tuple[int, ...], threads: int, rounds: int = 3) -> dict[str, float]:
    """Median p50 latency of several ONNX files, interleaved over ``rounds`` so machine noise hits all alike."""
    from edgeft.runtime.timing import ort_rounds

    return {k: statistics.median(v) for k, v in ort_rounds(paths, shape, threads, rounds).items()}


def paired_ratio(base: Path, trial: Path, shape: tuple[int, ...], threads: int, rounds: int = 7) -> dict[str, float]:
    """Latency of ``trial`` relative to ``base``: the median over interleaved rounds of each round's trial/base
    ratio (a burst of machine noise slows both files of a round alike, so the paired ratio is steadier than a
    ratio of medians), with the median p50 of each."""
    from edgeft.runtime.timing import ort_rounds

    r = ort_rounds({"base": base, "trial": trial}, shape, threads, rounds, iters=30, min_seconds=0.25)
    return {"base": statistics.median(r["base"]), "trial": statistics.median(r["trial"]),
            "ratio": statistics.median(t / b for t, b in zip(r["trial"], r["base"]))}


def _exclude_slow_groups(pre: Path, int8: Path, tmp: Path, x_calib: np.ndarray, cfg: QuantizeConfig,
                         exclude: list[str], cache: Path, shape: tuple[int, ...], task: Any = None
                         ) -> tuple[list[str], list[dict[str, Any]], dict[str, Any] | None]:
    """Leave in FP32 the layer groups whose INT8 kernels are slower than FP32 on this CPU; ``int8`` is replaced.

    On ONNX Runtime's x86 kernels the stem convolution (3 input channels, the largest feature map) ran ~2.7x
    slower in INT8 than in FP32 on the pruned Lite0; which groups lose depends on the CPU, so each is measured.
    A group goes to FP32 on a clear win; one of ``FP32_BY_DEFAULT`` unless FP32 is a clear loss.
    Returns the excluded node names, the groups kept in FP32 with their timings, and the final check."""
    all_int8 = tmp / "all-int8.onnx"
    all_int8.write_bytes(int8.read_bytes())
    base_exclude = list(exclude)
    excluded: list[dict[str, Any]] = []
    groups = _conv_groups(pre)
    for group, nodes in groups.items():
        trial = tmp / f"try-{group}.onnx"
        quantize_file(pre, trial, x_calib, cfg, exclude + nodes, cache, task)
        if _graph_ops(trial) == _graph_ops(int8):
            # The quantizer kept the Q/DQ around these nodes anyway (residual Adds between quantized convs: ONNX
            # Runtime still fuses them into QLinearAdd), so there is nothing to time and nothing to record.
            continue
        t = paired_ratio(int8, trial, shape, cfg.threads)
        by_default = group in FP32_BY_DEFAULT
        if t["ratio"] < (CLEAR_LOSS if by_default else CLEAR_WIN):  # machine noise must not decide
            exclude = exclude + nodes
            os.replace(trial, int8)
            excluded.append({"group": group, "nodes": len(nodes), "int8_ms": round(t["base"], 3),
                             "without_ms": round(t["trial"], 3), "ratio": round(t["ratio"], 3),
                             "rule": "fp32 unless clearly slower" if by_default else "clearly faster in fp32"})
    if not excluded:
        return exclude, [], None
    # Each decision above compared two graphs, in sequence; a noisy win can slip in and add up to a slower graph
    # (un-fused Q/DQ around kept-FP32 layers). The result must be clearly faster than the all-INT8 graph, side by
    # side (not clearly slower, when only FP32-by-default groups are out); if it is not, the single group with the
    # largest win gets the same test.
    def passes(ratio: float, groups_out: list[dict[str, Any]]) -> bool:
        by_default = all(g["group"] in FP32_BY_DEFAULT for g in groups_out)
        return ratio < (WHOLE_GRAPH_LOSS if by_default else WHOLE_GRAPH_WIN)

    t = paired_ratio(all_int8, int8, shape, cfg.threads)
    check: dict[str, Any] = {"all_int8_ms": round(t["base"], 3), "with_exclusions_ms": round(t["trial"], 3),
                             "ratio": round(t["ratio"], 3), "groups": [g["group"] for g in excluded],
                             "kept": passes(t["ratio"], excluded)}
    if check["kept"]:
        return exclude, excluded, check
    progress.info(f"exclusions not kept: {t['trial']:.2f} ms with them vs {t['base']:.2f} ms without")
    if len(excluded) > 1:
        best = min(excluded, key=lambda g: g["ratio"])
        single = tmp / "single.onnx"
        quantize_file(pre, single, x_calib, cfg, base_exclude + groups[best["group"]], cache, task)
        t = paired_ratio(all_int8, single, shape, cfg.threads)
        check["single"] = {"group": best["group"], "all_int8_ms": round(t["base"], 3),
                           "with_exclusion_ms": round(t["trial"], 3), "ratio": round(t["ratio"], 3),
                           "kept": passes(t["ratio"], [best])}
        if check["single"]["kept"]:
            os.replace(single, int8)
            return base_exclude + groups[best["group"]], [best], check
    os.replace(all_int8, int8)
    return base_exclude, [], check


def _calibration_inputs(calib, data, parent: art.Artifact, cfg: QuantizeConfig) -> np.ndarray:
    """The manifest's images, prepared and normalized per the parent's input contract (a subset for histograms); for
    an anomaly model only those of its good class (the activations INT8 must represent well are the good parts')."""
    from edgeft.data import calibration
    from edgeft.tasks import registry as tasks

    contract = parent.meta.input
    manifest = calibration.load(calib)
    good = tasks.of(parent.meta).calibration_class(parent.meta.class_names)
    if good is not None and good not in manifest.classes:
        raise ConfigError(f"the calibration manifest has no images of the good class {good!r} (it has "
                          f"{', '.join(manifest.classes)}); an anomaly model is calibrated on good parts")
    if good is None and manifest.classes != parent.meta.class_names:
        raise ConfigError(f"the calibration manifest's classes {manifest.classes} differ from the model's "
                          f"{parent.meta.class_names}")
    calib_set = calibration.load_images(manifest, data, contract)
    images = calib_set.images if good is None else calib_set.images[calib_set.labels == manifest.classes.index(good)]
    x_calib = contract.normalize(images)
    if cfg.calib_method in ("percentile", "entropy") and len(x_calib) > HISTOGRAM_MAX_IMAGES:
        # ONNX Runtime's histogram calibrators keep every activation of every image in memory before building
        # histograms (512 Lite0 images at 224 px took over 24 GB); an evenly spaced subset of the class-balanced
        # manifest keeps its balance.
        step = -(-len(x_calib) // HISTOGRAM_MAX_IMAGES)
        x_calib = x_calib[::step]
        progress.info(f"{cfg.calib_method} calibration on {len(x_calib)} of the manifest's {len(calib_set)} images "
                      "(memory bound of ONNX Runtime's histogram calibrators)")
    return x_calib


def _fp32_onnx(parent: art.Artifact, path: Path) -> Path:
    """The parent as an FP32 ONNX file: exported and simplified (BatchNorm folded) from PyTorch, or copied."""
    if parent.meta.kind == "torch":
        from edgeft.models import from_artifact
        from edgeft.models.onnx import export_onnx, simplify

        from edgeft.tasks import registry as tasks

        export_onnx(from_artifact(parent), parent.meta.input, path, outputs=tasks.of(parent.meta).graph_outputs)
        simplify(path)  # folds BatchNorm into the convolutions before quantization
    else:
        path.write_bytes(parent.model_path.read_bytes())
    return path


def graph_metrics(fp32: Path, int8: Path, cfg: QuantizeConfig, lat: dict[str, float],
                  fallback: bool) -> dict[str, Any]:
    """Sizes of both files, the INT8 graph's Q/DQ summary, and their latency side by side."""
    from edgeft.metrics import QuantGraph, Size

    sizes = {"fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size}
    return {
        "size": Size(**sizes, ratio=round(sizes["fp32_bytes"] / sizes["int8_bytes"], 2)).to_dict(),
        "graph": QuantGraph(**graph_summary(int8)).to_dict(),
        "ort_cpu_latency": {"fp32_p50_ms": round(lat["fp32"], 3), "int8_p50_ms": round(lat["int8"], 3),
                            "speedup": round(lat["fp32"] / lat["int8"], 3), "threads": cfg.threads, "batch": 1,
                            "int8_not_faster": fallback},
    }


def _int8_extra(parent: art.Artifact, cfg: QuantizeConfig, excluded_groups: list[dict[str, Any]],
                exclude: list[str], exclusion_check: dict[str, Any] | None) -> dict[str, Any]:
    """What the INT8 artifact records about its quantization: format, types, and what stayed in FP32 and why."""
    from edgeft.runtime.backends import machine_key

    return {"quantized": "int8", "target": cfg.target, "format": "QDQ",
            "activations": "int8 symmetric" if cfg.target == "tensorrt" else "uint8 asymmetric",
            "weights": "int8 symmetric per-channel" if cfg.per_channel else "int8 symmetric",
            "excluded_groups": excluded_groups, "excluded_nodes": exclude, "exclusion_check": exclusion_check,
            "pruned_spec": parent.meta.extra.get("pruned_spec"),
            # where its numbers were measured: ONNX Runtime's INT8 computes otherwise on a CPU without VNNI
            "measured_on": machine_key()}


def summary(artifact: art.Artifact) -> str:
    """An INT8 artifact in lines: what its task measured against the FP32 graph, the latency side by side, the size,
    and what stayed in FP32 and why."""
    from edgeft.metrics import read
    from edgeft.tasks import registry as tasks

    m = artifact.meta.metrics
    lines = tasks.of(artifact.meta).int8_summary(m)
    lat = m["ort_cpu_latency"]
    lines.append(f"ONNX Runtime CPU p50 (batch 1, {lat['threads']} threads): FP32 {lat['fp32_p50_ms']:.2f} ms, INT8 "
                 f"{lat['int8_p50_ms']:.2f} ms ({lat['speedup']:.2f}x); size {read(m, 'size').ratio:.1f}x smaller")
    groups = artifact.meta.extra.get("excluded_groups") or []
    if groups:
        lines.append("kept in FP32: " + ", ".join(f"{g['group']} ({g['nodes']} nodes, INT8 took {1 / g['ratio']:.2f}x "
                                                  f"the time; {g['rule']})" for g in groups))
    return "\n".join(lines)


def quantize(artifact_path: str | os.PathLike, out: str | os.PathLike, cfg: QuantizeConfig,
             calib: str | os.PathLike, data: str | os.PathLike, force: bool = False,
             extra_metrics: dict[str, Any] | None = None) -> art.Artifact:
    """Quantize a PyTorch or FP32 ONNX artifact to an INT8 QDQ ONNX artifact for ``cfg.target``.

    Accuracy (FP32 and INT8, on the test split of ``data`` or val), size, Q/DQ counts, the op types
    running in INT8, what was kept in FP32 and why, and side-by-side latency go into the artifact.
    """
    from edgeft.models.onnx import ONNX_META_KEY, onnx_metadata
    from edgeft.tasks import registry as tasks

    out = art.refuse_existing(out, force)
    parent = art.load(artifact_path)
    task = tasks.of(parent.meta)
    if parent.meta.extra.get("quantized"):
        raise ArtifactError(f"{parent.path} is already quantized ({parent.meta.extra['quantized']}); quantize the "
                            "FP32 artifact it came from")
    if parent.meta.kind not in ("torch", "onnx"):
        raise ArtifactError(f"{parent.path} holds a {parent.meta.kind} model; quantize a PyTorch or ONNX artifact")
    contract = parent.meta.input
    x_calib = _calibration_inputs(calib, data, parent, cfg)
    split = "test" if "test" in task.splits(data) else "val"
    eval_set = task.read_images(data, split, contract, parent.meta.class_names)
    shape = (1, contract.channels, *contract.size)
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgeft-quant-") as d:
        tmp = Path(d)
        fp32 = _fp32_onnx(parent, tmp / "fp32.onnx")
        pre = tmp / "pre.onnx"
        pre_process(fp32, pre)
        cache = tmp / "calibration-cache.json"
        progress.info(f"calibrating ({cfg.calib_method}) on {len(x_calib)} images from {calib}")
        int8 = tmp / "int8.onnx"
        exclude = list(cfg.exclude) + task.int8_excluded(pre)  # what the task keeps FP32 whatever is measured
        quantize_file(pre, int8, x_calib, cfg, exclude, cache, task)

        excluded_groups: list[dict[str, Any]] = []
        exclusion_check: dict[str, Any] | None = None
        if cfg.target == "ort-cpu" and cfg.auto_exclude:
            exclude, excluded_groups, exclusion_check = _exclude_slow_groups(pre, int8, tmp, x_calib, cfg, exclude,
                                                                             cache, shape, task)
            progress.info("kept in FP32: " + (", ".join(f"{g['group']} ({g['rule']})" for g in excluded_groups)
                                              or "nothing"))
        adjusted = task.after_int8(int8, data, parent, cfg.threads)  # e.g. statistics re-fitted on INT8 features
        lat = side_by_side({"fp32": fp32, "int8": int8}, shape, cfg.threads)
        fallback = cfg.target == "ort-cpu" and lat["int8"] >= lat["fp32"]
        if fallback:
            progress.warn(f"INT8 ({lat['int8']:.2f} ms) is not faster than FP32 ({lat['fp32']:.2f} ms) on this CPU "
                          "even after exclusions; the artifact keeps the INT8 graph but says so in its metrics")

        meta = art.Meta(kind="onnx", arch=parent.meta.arch, class_names=parent.meta.class_names, input=contract,
                        lineage=parent.stage_record("quantize", {**cfg.to_dict(), "calibration": str(calib),
                                                                 "calibration_images": len(x_calib)}),
                        extra=_int8_extra(parent, cfg, excluded_groups, exclude, exclusion_check))
        task.int8_metrics(fp32, int8, eval_set, data, parent, cfg, graph_metrics(fp32, int8, cfg, lat, fallback), meta)
        meta.extra.update(adjusted)
        for k in ("macs", "prune"):
            if k in parent.meta.metrics:
                meta.metrics[k] = parent.meta.metrics[k]
        meta.metrics.update(extra_metrics or {})
        m = onnx.load(str(int8))
        del m.metadata_props[:]
        m.metadata_props.add(key=ONNX_META_KEY, value=onnx_metadata(meta))
        onnx.save(m, str(int8))
        return art.save(out, meta, lambda p: p.write_bytes(int8.read_bytes()), force=force)
