"""``edgeft build``: a TensorRT engine from an ONNX artifact.

- FP32 / FP16 from an FP32 ONNX; INT8 from a QDQ ONNX (explicit quantization: the scales are in the
  graph). TensorRT 10 deprecated and TensorRT 11 removed implicit INT8 calibrators; older JetPack
  releases ship TensorRT 8.x, where an FP32 ONNX can still be calibrated with the legacy entropy
  calibrator fed from a calibration manifest (cache written next to the engine).
- One optimisation profile for the batch dimension (min, opt, max); a timing cache reused across builds.
- The engine is tied to one GPU and one TensorRT version: both are stored with it, and loading it
  anywhere else is refused with a message to rebuild, instead of failing obscurely or mis-running.

``tensorrt`` is imported here and in the runner only, never by ``import edgeft``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft import progress
from edgeft.errors import ArtifactError, ConfigError, DependencyError, EdgeftError

MIN_VERSION = (8, 6)
PRECISIONS = ("fp32", "fp16", "int8")


def trt_module():
    """Import tensorrt, with a version floor and an actionable error."""
    try:
        import tensorrt as trt
    except ImportError:
        raise DependencyError("TensorRT is not installed: it comes with JetPack on Jetson and from NVIDIA's "
                              "containers or index on x86 GPU machines; `edgeft doctor` shows what is here") from None
    if version_tuple(trt.__version__) < MIN_VERSION:
        raise DependencyError(f"TensorRT {trt.__version__} is older than {'.'.join(map(str, MIN_VERSION))}, "
                              "the oldest this edgeft builds with")
    return trt


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


@dataclass(frozen=True)
class Device:
    gpu: str
    compute_capability: str
    tensorrt: str
    l4t: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_device(tensorrt_version: str) -> Device:
    """The GPU (name, compute capability) this process would run an engine on."""
    name = cc = ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            name, cc = [s.strip() for s in out.stdout.strip().splitlines()[0].split(",")[:2]]
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    if not name:  # Jetson has no nvidia-smi with these fields; torch knows the integrated GPU
        try:
            import torch

            if torch.cuda.is_available():
                name = torch.cuda.get_device_name(0)
                cc = "%d.%d" % torch.cuda.get_device_capability(0)
        except ImportError:
            pass
    tegra = Path("/etc/nv_tegra_release")
    l4t = tegra.read_text(errors="ignore").splitlines()[0].strip() if tegra.exists() else None
    if not name:
        raise DependencyError("no NVIDIA GPU found (nvidia-smi and torch.cuda see none); TensorRT engines are built "
                              "and run on the target GPU")
    return Device(gpu=name, compute_capability=cc, tensorrt=tensorrt_version, l4t=l4t)


def check_compatible(built_for: dict[str, Any], here: Device) -> None:
    """Refuse an engine built for another GPU or TensorRT version (engines are not portable)."""
    problems = []
    if built_for.get("tensorrt") != here.tensorrt:
        problems.append(f"TensorRT {built_for.get('tensorrt')} (here {here.tensorrt})")
    if built_for.get("compute_capability") != here.compute_capability or built_for.get("gpu") != here.gpu:
        problems.append(f"GPU {built_for.get('gpu')} sm {built_for.get('compute_capability')} "
                        f"(here {here.gpu} sm {here.compute_capability})")
    if problems:
        raise ArtifactError("this engine was built for " + " and ".join(problems) + "; rebuild it on this device with "
                            "`edgeft build` from the ONNX artifact in its lineage")


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
    inp = network.get_input(0)
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
