"""The PyTorch runner's model: rebuild a ``torch`` artifact's network from its architecture name, shape spec
and state dict (timm + torch, no training code), so the runtime can run a PyTorch artifact and every stage
can load one without importing another stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeft.errors import ModelError, close_matches

if TYPE_CHECKING:
    import torch.nn as nn


def check_arch(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        raise ModelError(f"unknown architecture {arch!r}{close_matches(arch, timm.list_models())}; "
                         "any timm model name works (timm.list_models())")


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


def from_artifact(artifact) -> "nn.Module":
    """Rebuild the PyTorch model of a ``torch`` artifact from its architecture and state dict (eval mode): its task
    builds the network (a classifier, an anomaly graph, ...), then pruned shapes and weights are applied."""
    import torch

    from edgeft.tasks import registry as tasks

    from edgeft.errors import ArtifactError

    meta = artifact.meta
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
