"""A detector trained with torchvision, brought in (``edgeft import CKPT --task detect --model
torchvision:fcos_resnet50_fpn``): its weights in :class:`~edgeft.tasks.detect.model.TorchvisionFCOS`, wrapped in the
same graph as a detector trained here (decoding and NMS inside, one ``detections`` output), with the preprocessing
torchvision's detectors normalise with (ImageNet mean and std) at a size the user declares.

torchvision resizes each image so its shorter side is 800 px and pads the batch; a camera's graph has one input size,
so the contract letterboxes to ``size`` (512 x 512 unless ``--size`` says otherwise; the aspect ratio kept, as
torchvision keeps it). Its post-processing settings (a 0.2 score threshold, 1,000 candidates a level) give way to the
graph's own (:class:`~edgeft.tasks.detect.model.DetectSpec`); the scores and boxes are torchvision's formulas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edgeft import progress
from edgeft.contract import InputContract
from edgeft.errors import ConfigError, DataError, ModelError

CLS_WEIGHT = "head.classification_head.cls_logits.weight"
CLS_BIAS = "head.classification_head.cls_logits.bias"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's detection transform


def load_torchvision_fcos(source: Path, arch: str | None, names: list[str] | None,
                          contract_of: Callable[[InputContract], InputContract]) -> tuple[Any, int, InputContract, Any]:
    """(the detector graph, its class count, its input contract, its :class:`DetectSpec`) from a torchvision FCOS
    checkpoint; ``contract_of`` applies the user's declared contract fields to the default."""
    from edgeft.models import read_state_dict
    from edgeft.runtime.torch_model import load_state_dict_strict, torchvision_name
    from edgeft.tasks.detect.model import TORCHVISION_DETECTORS, DetectSpec, TorchvisionFCOS
    from edgeft.tasks.detect.nms import DetectorGraph

    name = torchvision_name(arch or "")
    if name is None:
        raise ConfigError(f"--model {arch}: a detector checkpoint imports as torchvision's "
                          f"({', '.join('torchvision:' + n for n in TORCHVISION_DETECTORS)}); a detector on a timm "
                          "backbone is trained by `edgeft detect`, an ONNX detector imports with --layout")
    sd = dict(read_state_dict(source))
    if CLS_WEIGHT not in sd:
        raise ModelError(f"checkpoint {source} has no {CLS_WEIGHT} (it has {', '.join(list(sd)[:3])}, ...): it is not "
                         f"a torchvision FCOS state dict; save model.state_dict() of a torchvision FCOS")
    if names is None:
        raise ConfigError(f"import.classes: no class names for {source.name}; pass --classes (in the model's class "
                          "order, without torchvision's background) or --data with the model's classes")
    outputs = int(sd[CLS_WEIGHT].shape[0])
    if outputs == len(names) + 1:  # torchvision's detection recipes: class 0 is the background, never a box
        sd[CLS_WEIGHT], sd[CLS_BIAS] = sd[CLS_WEIGHT][1:], sd[CLS_BIAS][1:]
        progress.info(f"{source.name}: {outputs} class outputs for {len(names)} classes; output 0 is torchvision's "
                      "background (never a box) and is dropped")
    elif outputs != len(names):
        raise DataError(f"{source.name} scores {outputs} classes but {len(names)} class names were given "
                        f"({', '.join(names)}); give one name per class, in the model's order (torchvision's "
                        "background, output 0, may be left out)")
    net = TorchvisionFCOS(name, len(names))
    own = net.state_dict()
    for k, v in own.items():  # a FrozenBatchNorm2d checkpoint (a pretrained backbone) has no batch counters
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v.clone()
    load_state_dict_strict(net, sd, str(source))
    contract = contract_of(InputContract(size=(512, 512), resize="letterbox", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                         interpolation="bilinear"))
    if contract.channels != 3:
        raise ConfigError(f"import.input.color {contract.color}: torchvision's detectors take RGB images")
    spec = DetectSpec(levels=(2, 3, 4), fpn_channels=256, head_convs=4, frozen_stages=0,  # ResNet's layer2-4, P6, P7
                      strides=tuple(int(s[0]) for s in net.anchor_generator.sizes))
    graph = DetectorGraph(net, spec, contract.size).eval()
    return graph, len(names), contract, spec
