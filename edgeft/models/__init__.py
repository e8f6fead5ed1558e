"""Model creation over timm: any timm architecture, weights from a local file or an installed package.

``create("efficientnet_lite0", weights="package:efficientnet_lite0", num_classes=2)`` loads the real
ImageNet checkpoint with a strict key/shape check, then replaces only the classifier, keeping the backbone.
Checkpoints are read with ``weights_only=True``: a checkpoint cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeft.contract import InputContract
from edgeft.errors import DependencyError, ModelError
from edgeft.models import packaged
from edgeft.runtime.torch_model import check_arch, from_artifact, head_of, load_state_dict_strict  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
WEIGHTS_HELP = "pass a .pth/.pt/.safetensors file or 'package:efficientnet_lite0'"


def read_state_dict(path: str | os.PathLike) -> dict:
    """Read a checkpoint file into a flat state dict (timm-style wrappers and DDP prefixes removed)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"--weights path not found: {p}; {WEIGHTS_HELP}")
    if p.suffix.lower() == ".onnx":
        raise ModelError(f"--weights {p} is an ONNX file, which carries no PyTorch weights to fine-tune or adapt "
                         "(LoRA); pass the PyTorch checkpoint, or import the ONNX file for the deploy-only path "
                         "(edgeft import)")
    if p.suffix not in WEIGHT_SUFFIXES:
        raise ModelError(f"--weights {p} has suffix {p.suffix!r}; {WEIGHTS_HELP}")
    problem = _not_a_checkpoint(p)
    if problem:
        raise ModelError(f"--weights {p} is not a checkpoint: {problem}; {WEIGHTS_HELP} (a state dict saved with "
                         "torch.save(model.state_dict()) or safetensors)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p), device="cpu")
        else:
            import argparse

            # torchvision's reference scripts keep their argparse arguments beside the weights: plain values, allowed
            with torch.serialization.safe_globals([argparse.Namespace]):
                sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled code refused by weights_only, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot read checkpoint {p}: {first[:300]}; it must be a plain state dict "
                         "(torch.save(model.state_dict())) or safetensors file") from None
    for wrapper in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
            break
    if not isinstance(sd, dict) or not all(hasattr(v, "shape") for v in sd.values()):
        raise ModelError(f"checkpoint {p} is not a state dict of tensors; save it with torch.save(model.state_dict())")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def _not_a_checkpoint(path: Path) -> str:
    """Why ``path`` cannot be a checkpoint, judged from its first bytes ('' when it may be one): torch.save writes
    a zip archive (legacy: a pickle, first byte 0x80), safetensors an 8-byte header length and a JSON header."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "the file is empty"
    if path.suffix == ".safetensors":
        size = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
        return "" if head[8:9] == b"{" and 0 < size < path.stat().st_size else "it has no safetensors header"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return ""
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"it is a text file (it starts with {head.decode('ascii', 'replace').strip()[:16]!r})"
    return "it is neither a zip archive written by torch.save nor a pickle"


def classifier_outputs(model: "nn.Module", state_dict: dict) -> int | None:
    """The class count of a checkpoint's classifier: the rows of the weight of the layer ``head_of(model)`` is (timm's
    classifier, or a torchvision model's last Linear); None when the checkpoint has no such weight."""
    head = head_of(model)
    name = next(n for n, m in model.named_modules() if m is head)
    w = state_dict.get(f"{name}.weight")
    return int(w.shape[0]) if w is not None and w.ndim >= 1 else None


def default_contract(arch: str) -> InputContract:
    """The preprocessing timm registers for ``arch`` (size, mean, std, crop, interpolation)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return InputContract()
    _, h, w = cfg.input_size
    interp = cfg.interpolation if cfg.interpolation in ("bicubic", "bilinear", "nearest") else "bilinear"
    return InputContract(size=(h, w), mean=cfg.mean, std=cfg.std, crop_pct=min(1.0, cfg.crop_pct),
                         interpolation=interp)


def resolve_weights(arch: str, weights: str | os.PathLike | None) -> str | os.PathLike | None:
    """``auto`` becomes the weights an installed package ships for ``arch``; an architecture without them must
    name its weights, and is told so before anything is loaded or decoded."""
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights) != "auto":
        return weights
    if arch in packaged.PACKAGED:
        return f"package:{arch}"
    raise ModelError(f"no pretrained weights ship for {arch} (packaged: {', '.join(packaged.PACKAGED)}); pass "
                     f"--weights FILE (a .pth/.pt/.safetensors state dict for {arch}) or --weights none to train "
                     "from random initialisation")


def create(arch: str, weights: str | os.PathLike | None = None, num_classes: int | None = None,
           **timm_kwargs: Any) -> tuple["nn.Module", InputContract]:
    """Build ``arch`` with ``weights`` and a head of ``num_classes``; return the model and its input contract.

    ``weights``: None (random init), ``package:NAME`` (a checkpoint shipped by an installed package), ``auto``
    (the package's weights for ``arch``, see :func:`resolve_weights`), or a local .pth/.pt/.safetensors state dict. The contract is the preprocessing the weights were trained with.
    """
    import timm

    check_arch(arch)
    weights = resolve_weights(arch, weights)
    if num_classes is not None and num_classes < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}")
    if weights is None:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes or 1000, **timm_kwargs)
        return model, default_contract(arch)

    weights = str(weights)
    if weights.startswith("package:"):
        pw = packaged.lookup(weights.split(":", 1)[1])
        if pw.arch != arch:
            raise ModelError(f"weights {weights} are for {pw.arch}, not {arch!r}; pass --model {pw.arch} to use "
                             f"them, or for {arch} --weights FILE (a .pth/.pt/.safetensors state dict) or --weights "
                             "none (random initialisation)")
        sd = pw.remap(read_state_dict(pw.file()))
        source_classes, contract = pw.num_classes, pw.contract
    else:
        sd = read_state_dict(weights)
        source_classes, contract = None, default_contract(arch)

    model = timm.create_model(arch, pretrained=False, num_classes=source_classes or 1000, **timm_kwargs)
    if source_classes is None:  # a local file: its head says how many classes it was trained for
        source_classes = classifier_outputs(model, sd)
        if source_classes and source_classes != 1000:
            model.reset_classifier(source_classes)
    load_state_dict_strict(model, sd, weights)
    if num_classes is not None and num_classes != source_classes:
        model.reset_classifier(num_classes)
    return model, contract


def count_params(model: "nn.Module") -> int:
    return sum(p.numel() for p in model.parameters())


def torch_pruning():
    """torch-pruning, the dependency graph pruning and MAC counting use, with an actionable error."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise DependencyError("pruning and MAC counts need torch-pruning: pip install 'edgeft[prune]'") from None
    return tp


def count_macs(model: "nn.Module", example) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass of ``model`` on ``example``, counted by torch-pruning."""
    macs, params = torch_pruning().utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def save_artifact(model: "nn.Module", out, meta, force: bool = False,
                  extra_files: dict[str, str | bytes] | None = None):
    """Write a ``torch`` artifact: the state dict (loadable with weights_only=True) and meta.json, atomically."""
    import torch

    from edgeft import artifact as art

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return art.save(out, meta, lambda p: torch.save(state, p), force=force, extra_files=extra_files)
