"""Rebuild a pruned model from its architecture, a per-layer shape spec and a state dict.

A channel-pruned model is the original architecture with narrower layers. Pickling the whole module
would tie the artifact to the pruning code and to pickle's arbitrary-code loading; instead the artifact
stores, for every layer whose shape defines the model, the attributes that set it (channels, groups,
features), and loading re-creates the architecture, narrows those layers and loads the weights with a
strict check (as timm does for its pruned EfficientNets).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from edgeft.errors import ModelError

_ATTRS: list[tuple[type, tuple[str, ...]]] = [
    (nn.modules.conv._ConvNd, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._BatchNorm, ("num_features",)),
    (nn.GroupNorm, ("num_groups", "num_channels")),
    (nn.LayerNorm, ("normalized_shape",)),
]


def _attrs_for(m: nn.Module) -> tuple[str, ...]:
    for cls, attrs in _ATTRS:
        if isinstance(m, cls):
            return attrs
    return ()


def shape_spec(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """The shape attributes of ``model``'s layers that differ from the unpruned ``reference``."""
    ref = dict(reference.named_modules())
    spec: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        attrs = _attrs_for(m)
        if not attrs or name not in ref:
            continue
        changed = {a: _jsonable(getattr(m, a)) for a in attrs if getattr(m, a) != getattr(ref[name], a)}
        if changed:
            spec[name] = changed
    return spec


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def apply_spec(model: nn.Module, spec: dict[str, dict[str, Any]], state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Narrow ``model``'s layers per ``spec`` and give their tensors the shapes found in ``state_dict``."""
    modules = dict(model.named_modules())
    for name, attrs in spec.items():
        if name not in modules:
            raise ModelError(f"pruned spec names layer {name!r}, which {type(model).__name__} does not have; "
                             "the artifact was made from another architecture")
        m = modules[name]
        for a, v in attrs.items():
            setattr(m, a, tuple(v) if isinstance(v, list) else v)
        for store in (m._parameters, m._buffers):
            for pname, t in list(store.items()):
                key = f"{name}.{pname}" if name else pname
                if t is None or key not in state_dict or state_dict[key].shape == t.shape:
                    continue
                new = torch.empty(state_dict[key].shape, dtype=t.dtype)
                store[pname] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
    return model
