"""LoRA fine-tuning (training floor): low-rank adapters from Hugging Face's ``peft`` on the layers the fine-tuning
adapts, merged into the weights before the chain, so the deployed model costs nothing extra.

``mode: lora`` adapts the same last ``trainable_blocks`` blocks ``partial`` trains (the frozen first blocks are
cached the same way), but instead of every weight of those blocks it trains, per target layer, two small matrices
``B @ A`` of rank ``lora_rank`` scaled by ``lora_alpha / lora_rank``, plus the classifier head in full. Targets default
to the pointwise (1x1) convolutions and linear layers of those blocks and the layers after them (the head excluded):
the layers that hold most of an inverted-residual network's weights. After training the adapters are merged
(``W + B @ A * scale``) and removed: the artifact's model is a plain network of the same architecture, and the
adapter itself is kept beside it (``adapter.safetensors``, a few hundred kilobytes) for a per-variant library.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from edgeft.errors import ConfigError, DependencyError, close_matches
from edgeft.runtime.torch_model import head_of

ADAPTER_FILE = "adapter.safetensors"


def _peft():
    try:
        import peft
    except ImportError:
        raise DependencyError("mode lora needs the peft library: pip install 'edgeft[lora]'") from None
    return peft


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    """The layers LoRA can adapt: every Conv2d and Linear except the classifier head (trained in full)."""
    head = head_of(model)
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head}


def _max_rank(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return min(m.in_features, m.out_features)
    k = m.kernel_size[0] * m.kernel_size[1]
    return min(m.in_channels // m.groups * k, m.out_channels)


def targets(model: nn.Module, tail: list[nn.Module], names: list[str] | None, rank: int) -> list[str]:
    """The layer names adapters go on: ``names`` (each a layer name, or a suffix such as ``conv_pw`` that matches every
    layer ending in it), else the pointwise convolutions and linear layers inside ``tail`` (the modules partial mode
    would train). Refuses a name the model does not have (naming the closest), one in the frozen first blocks (their
    outputs are cached, so an adapter there would never train) and a rank a layer cannot hold."""
    layers = _candidates(model)
    inside = {id(m) for t in tail for m in t.modules()}
    if names:
        chosen: list[str] = []
        for want in names:
            hit = [n for n in layers if n == want or n.endswith("." + want)]
            if not hit:
                known = list(layers) + sorted({n.rsplit(".", 1)[-1] for n in layers})
                raise ConfigError(f"lora_targets: {want!r} is not a Conv2d or Linear layer of the model"
                                  f"{close_matches(want, known)}")
            chosen += [n for n in hit if n not in chosen]
        frozen = [n for n in chosen if id(layers[n]) not in inside]
        if frozen:
            raise ConfigError(f"lora_targets: {frozen[0]} lies in the frozen first blocks, whose outputs are cached "
                              "and never trained; raise trainable_blocks to include it, or leave it out")
    else:
        chosen = [n for n, m in layers.items() if id(m) in inside
                  and (isinstance(m, nn.Linear) or m.kernel_size == (1, 1))]
        if not chosen:
            raise ConfigError("mode lora found no pointwise convolution or linear layer to adapt in the trainable "
                              "blocks; name them with lora_targets")
    too_small = [(n, _max_rank(layers[n])) for n in chosen if _max_rank(layers[n]) < rank]
    if too_small:
        n, most = too_small[0]
        raise ConfigError(f"lora_rank {rank} is larger than layer {n} allows ({most}); use lora_rank <= {most}, or "
                          "leave such small layers out of lora_targets")
    return chosen


def inject(model: nn.Module, names: list[str], rank: int, alpha: float, dropout: float) -> nn.Module:
    """``model`` with LoRA adapters on ``names`` (peft's layers in place of the originals, B initialised to zero so
    the adapted model starts equal to the original)."""
    peft = _peft()
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none")
    return peft.inject_adapter_in_model(config, model)


def adapter_state(model: nn.Module) -> dict[str, Any]:
    """The adapters' own tensors (what a per-variant library keeps), detached on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if ".lora_" in k}


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight (``W + B @ A * alpha / rank``) and put the plain layer back."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    return model


def adapter_bytes(state: dict[str, Any], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save(state, metadata=metadata)
