"""``edgeft compare-backends``: the same real images through every available backend and the PyTorch reference.

Per backend: top-1 agreement, max abs logit difference and cosine similarity against the reference,
judged by ``edgeft.parity``'s rule for the model's precision (the same rule as the export's check): FP32
must match within a tolerance relative to each image's logit scale; FP16 and INT8 are judged by agreement
and cosine, since their logits legitimately move.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeft.parity import compare
from edgeft.runtime.backends import BACKENDS


@dataclass
class BackendCheck:
    backend: str
    status: str  # pass | fail | skipped
    agreement: float | None = None
    max_abs_diff: float | None = None
    cosine: float | None = None
    reason: str = ""


def compare_backends(model_dirs: list[Path], images_for: Callable[[Any], np.ndarray], reference_logits: np.ndarray,
                     precision: str) -> list[BackendCheck]:
    """Run the same real images through every backend that can run one of ``model_dirs``. ``images_for(contract)``
    gives them prepared (NHWC) per a model's own input contract, in one order: a gray-input ONNX model gets the
    images prepared as its camera would deliver them, not the RGB reference's."""
    from edgeft import artifact
    from edgeft.errors import EdgeftError

    out: list[BackendCheck] = []
    for name, backend in BACKENDS.items():
        art_dir = next((d for d in model_dirs if artifact.load(d).meta.model_file == backend.model_file), None)
        if art_dir is None:
            out.append(BackendCheck(name, "skipped", reason=f"no {backend.model_file} among the artifacts"))
            continue
        if not backend.available():
            out.append(BackendCheck(name, "skipped", reason=f"not available here ({backend.description})"))
            continue
        try:
            a = artifact.load(art_dir)
            x = a.meta.input.normalize(images_for(a.meta.input))
            with backend.make(a.model_path, art_dir, None) as runner:
                got = np.concatenate([runner.infer(x[i:i + 16]) for i in range(0, len(x), 16)])
        except (EdgeftError, RuntimeError) as e:
            out.append(BackendCheck(name, "fail", reason=str(e).splitlines()[0][:200]))
            continue
        rule = backend.precision if backend.precision and precision == "fp32" else precision  # bf16 of an FP32 model
        p = compare(reference_logits, got, rule)
        out.append(BackendCheck(name, "pass" if p.passed else "fail", agreement=p.agreement,
                                max_abs_diff=p.max_abs_diff, cosine=p.cosine, reason=p.explain()))
    return out


def render(rows: list[BackendCheck], precision: str) -> str:
    lines = [f"{'backend':<11} {'status':<8} {'top-1 agree':>11} {'max |diff|':>11} {'min cosine':>11}  (precision "
             f"{precision})"]
    for r in rows:
        if r.status == "skipped" or r.agreement is None:
            lines.append(f"{r.backend:<11} {r.status:<8} {r.reason}")
            continue
        lines.append(f"{r.backend:<11} {r.status:<8} {r.agreement * 100:>10.1f}% {r.max_abs_diff:>11.2e} "
                     f"{r.cosine:>11.6f}")
    return "\n".join(lines)


def precision_of(meta: Any) -> str:
    return "int8" if meta.extra.get("quantized") == "int8" else meta.extra.get("precision", "fp32")


def torch_reference(artifacts: list) -> Path | None:
    """The model to compare ``artifacts`` against: the first of them that is a PyTorch one, else the nearest PyTorch
    ancestor in their lineage (a parent directory that still exists); for a chain that starts from an imported ONNX
    file (no PyTorch weights anywhere), that FP32 file as the user brought it; else None."""
    from edgeft import artifact as art

    direct = next((a.path for a in artifacts if a.meta.kind == "torch"), None)
    if direct is not None:
        return Path(direct)
    for a in artifacts:
        for entry in reversed(a.meta.lineage):
            parent = entry.get("parent")
            if parent and Path(parent).is_dir() and art.load(parent).meta.kind == "torch":
                return Path(parent)
    def as_brought(meta: Any) -> bool:
        return meta.imported_onnx and not meta.extra.get("quantized")

    for a in artifacts:
        if as_brought(a.meta):
            return Path(a.path)
        for entry in a.meta.lineage:
            parent = entry.get("parent")
            if parent and Path(parent).is_dir() and as_brought(art.load(parent).meta):
                return Path(parent)
    return None
