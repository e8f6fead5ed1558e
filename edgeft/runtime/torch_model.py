"""The PyTorch runner's model: rebuild a ``torch`` artifact's network from its architecture name, shape spec
and state dict (timm or torchvision + torch, no training code), so the runtime can run a PyTorch artifact and every
stage can load one without importing another stage.

An architecture is a timm name (``efficientnet_lite0``) or ``torchvision:NAME`` (``torchvision:mobilenet_v3_small``)
for the torchvision classifiers timm cannot load with their own keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeft.errors import ModelError, close_matches

if TYPE_CHECKING:
    import torch.nn as nn


TORCHVISION = "torchvision:"


def torchvision_name(arch: str) -> str | None:
    """``NAME`` of a ``torchvision:NAME`` architecture, None for a timm one."""
    return arch[len(TORCHVISION):] if arch.startswith(TORCHVISION) else None


def check_arch(arch: str) -> None:
    """Refuse an architecture neither timm nor torchvision's classifiers know, naming the close ones."""
    tv = torchvision_name(arch)
    if tv is not None:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if tv not in known:
            raise ModelError(f"unknown torchvision classifier {tv!r}{close_matches(tv, known)}; any name of "
                             "torchvision.models.list_models(module=torchvision.models) works")
        return
    import timm

    if not timm.is_model(arch):
        raise ModelError(f"unknown architecture {arch!r}{close_matches(arch, timm.list_models())}; "
                         "any timm model name works (timm.list_models()), or torchvision:NAME for a torchvision "
                         "classifier")


def build(arch: str, num_classes: int) -> "nn.Module":
    """An untrained ``arch`` with a head of ``num_classes`` (random weights; a state dict is loaded after)."""
    check_arch(arch)
    tv = torchvision_name(arch)
    if tv is not None:
        import torchvision

        return torchvision.models.get_model(tv, weights=None, num_classes=num_classes)
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


def head_of(model: "nn.Module") -> "nn.Module":
    """The classifier layer of ``model``: timm's ``get_classifier()``, else the last ``nn.Linear`` (torchvision's
    classifiers end in one); pruning keeps its outputs and training gives it the head's learning rate."""
    import torch.nn as nn

    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ModelError(f"{type(model).__name__} has no nn.Linear classifier layer; edgeft trains and prunes "
                         "classifiers that end in one")
    return last


def load_state_dict_strict(model: "nn.Module", state_dict: dict, source: str) -> None:
    """Load with a strict check whose error names missing and unexpected keys and shape conflicts."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    conflicts = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or conflicts:
        def few(items: list[str]) -> str:
            return ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")

        parts = [f"{label} {len(items)}: {few(items)}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape conflicts", conflicts)) if items]
        raise ModelError(f"checkpoint {source} does not match {type(model).__name__}: " + "; ".join(parts)
                         + "; check --model matches the checkpoint's architecture")
    model.load_state_dict(state_dict, strict=True)


def refuse_imported_onnx(artifact, step: str) -> None:
    """One line for a step that needs PyTorch weights (pruning, recovery, QAT) given an imported ONNX model."""
    from edgeft.errors import ArtifactError

    if artifact.meta.imported_onnx:
        raise ArtifactError(f"{artifact.path} is an imported ONNX model, and {step} needs the PyTorch weights an "
                            "ONNX file does not carry; import the PyTorch checkpoint instead (edgeft import FILE.pth "
                            "--model ARCH), or quantize this one with PTQ")


def from_artifact(artifact) -> "nn.Module":
    """Rebuild the PyTorch model of a ``torch`` artifact from its architecture and state dict (eval mode): its task
    builds the network (a classifier, an anomaly graph, ...), then pruned shapes and weights are applied."""
    import torch

    from edgeft.tasks import registry as tasks

    from edgeft.errors import ArtifactError

    meta = artifact.meta
    refuse_imported_onnx(artifact, "rebuilding the PyTorch network")
    if meta.kind != "torch":
        raise ArtifactError(f"{artifact.path} holds a {meta.kind} model; a PyTorch (model.pt) artifact is needed")
    sd = torch.load(artifact.model_path, map_location="cpu", weights_only=True)
    model = tasks.of(meta).torch_model(artifact)  # its task builds the network: a classifier, an anomaly graph, ...
    spec = meta.extra.get("pruned_spec")
    if spec:
        from edgeft.runtime.torch_shapes import apply_spec

        apply_spec(model, spec, sd)
    load_state_dict_strict(model, sd, str(artifact.model_path))
    return model.eval()
