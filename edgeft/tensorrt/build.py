"""``edgeft build``: a TensorRT engine from an ONNX artifact.

- FP32 / FP16 from an FP32 ONNX; INT8 from a QDQ ONNX (explicit quantization: the scales are in the
  graph). TensorRT 10 deprecated and TensorRT 11 removed implicit INT8 calibrators; older JetPack
  releases ship TensorRT 8.x, where an FP32 ONNX can still be calibrated with the legacy entropy
  calibrator fed from a calibration manifest (cache written next to the engine).
- One optimisation profile for the batch dimension (min, opt, max); a timing cache reused across builds.
- The engine is tied to one GPU and one TensorRT version: both are stored with it, and loading it
  anywhere else is refused with a message to rebuild, instead of failing obscurely or mis-running.

``tensorrt`` is imported here and in the runtime's engine runner (``edgeft.runtime.tensorrt``) only, never by
``import edgeft``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft import progress
from edgeft.errors import ConfigError, DependencyError, EdgeftError
from edgeft.runtime.tensorrt import current_device, trt_module, version_tuple

PRECISIONS = ("fp32", "fp16", "int8")


def unquantized_residual_adds(onnx_path: str | os.PathLike) -> list[str]:
    """Add nodes fed by two tensors where at least one does not come through DequantizeLinear.

    TensorRT fuses a residual Add into the preceding INT8 convolution only when both inputs are
    quantized; otherwise the branch stays in higher precision and INT8 may be no faster than FP16.
    """
    import onnx

    g = onnx.load(str(onnx_path)).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    consts = {i.name for i in g.initializer}
    bad = []
    for n in g.node:
        if n.op_type != "Add" or len(n.input) != 2 or any(i in consts for i in n.input):
            continue
        if not all(producer.get(i) == "DequantizeLinear" for i in n.input):
            bad.append(n.name or n.output[0])
    return bad


@dataclass
class BuildConfig:
    precision: str = "fp16"
    batch: tuple[int, int, int] = (1, 1, 1)  # min, opt, max
    workspace_mb: int = 1024
    timing_cache: str | None = None  # path; created if missing, updated after the build

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise ConfigError(f"--batch must be MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, got {self.batch}")
        if self.workspace_mb < 16:
            raise ConfigError(f"--workspace-mb must be at least 16, got {self.workspace_mb}")


def build(artifact_path: str | os.PathLike, out: str | os.PathLike, cfg: BuildConfig,
          calib: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
          force: bool = False) -> art.Artifact:
    """Build a TensorRT engine artifact from an ONNX artifact."""
    out = art.refuse_existing(out, force)
    parent = art.load(artifact_path, kind="onnx")
    quantized = parent.meta.extra.get("quantized") == "int8"
    if cfg.precision == "int8" and not quantized and not calib:
        raise ConfigError("INT8 needs a QDQ model (`edgeft quantize --target tensorrt`) or, on TensorRT < 10 only, "
                          "--calib with a calibration manifest")
    if quantized and parent.meta.extra.get("target") != "tensorrt":
        progress.warn(f"{parent.path} was quantized for {parent.meta.extra.get('target')}; for TensorRT quantize with "
                      "--target tensorrt (symmetric activations, quantized residual adds)")
    trt = trt_module()
    here = current_device(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = version_tuple(trt.__version__)[0]
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(parent.model_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeftError(f"TensorRT cannot parse {parent.model_path}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    notes = _precision_flags(trt, config, cfg, parent, quantized, calib, data, out)
    _batch_profile(builder, config, network.get_input(0), cfg, parent)
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.exists() else b"")
    config.set_timing_cache(cache, False)
    progress.info(f"building a {cfg.precision} TensorRT {trt.__version__} engine for {here.gpu} (may take minutes)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeftError("TensorRT failed to build the engine; rerun with --debug and see the TensorRT log above")
    if cache_path:
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        os.replace(tmp, cache_path)
    meta = art.Meta(kind="engine", arch=parent.meta.arch, class_names=parent.meta.class_names, input=parent.meta.input,
                    lineage=parent.stage_record("build", {"precision": cfg.precision, "batch": list(cfg.batch),
                                                          "workspace_mb": cfg.workspace_mb}),
                    metrics={k: v for k, v in parent.meta.metrics.items() if k in ("test", "val", "eval_split")},
                    extra={"precision": cfg.precision, "engine": {**here.to_dict(), "batch": list(cfg.batch), **notes},
                           "quantized": parent.meta.extra.get("quantized")})
    return art.save(out, meta, lambda p: p.write_bytes(bytes(serialized)), force=force)


def _precision_flags(trt, config, cfg: BuildConfig, parent: art.Artifact, quantized: bool, calib, data,
                     out: Path) -> dict[str, Any]:
    """Set the builder flags for ``cfg.precision`` (INT8 from Q/DQ, or the legacy calibrator on TensorRT < 10);
    return notes for the engine's metadata (residual adds left unquantized)."""
    major = version_tuple(trt.__version__)[0]
    if cfg.precision in ("fp16", "int8"):
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)  # layers left unquantized run in FP16 rather than FP32
        elif cfg.precision == "fp16":
            raise DependencyError(f"TensorRT {trt.__version__} has no FP16 builder flag (strongly typed networks "
                                  "only): export the model in FP16 instead")
    notes: dict[str, Any] = {}
    if cfg.precision == "int8":
        if quantized:
            if hasattr(trt.BuilderFlag, "INT8"):
                config.set_flag(trt.BuilderFlag.INT8)  # TensorRT < 11 needs the flag to honour Q/DQ nodes
            bad = unquantized_residual_adds(parent.model_path)
            notes["unquantized_residual_adds"] = bad
            if bad:
                progress.warn(f"{len(bad)} residual Add(s) have an unquantized input and will not fuse into INT8 "
                              f"convolutions (e.g. {bad[0]})")
        else:
            if major >= 10:
                raise ConfigError(f"TensorRT {trt.__version__} builds INT8 only from Q/DQ models (implicit "
                                  "calibration was removed); run `edgeft quantize --target tensorrt` first")
            from edgeft.tensorrt.calibrator import legacy_calibrator

            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = legacy_calibrator(trt, parent, calib, data, out.parent / f"{out.name}.calib.cache")
    return notes


def _batch_profile(builder, config, inp, cfg: BuildConfig, parent: art.Artifact) -> None:
    """The optimisation profile for a dynamic batch dimension, or a check that a fixed batch is the one asked."""
    lo, opt, hi = cfg.batch
    chw = tuple(inp.shape[1:])
    if any(d < 0 for d in chw):
        c = parent.meta.input
        chw = (c.channels, *c.size)
    if inp.shape[0] < 0:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (lo, *chw), (opt, *chw), (hi, *chw))
        config.add_optimization_profile(profile)
    elif cfg.batch != (inp.shape[0],) * 3:
        raise ConfigError(f"the ONNX model has a fixed batch of {inp.shape[0]}; export with --dynamic-batch to build "
                          f"for batch {cfg.batch}")
