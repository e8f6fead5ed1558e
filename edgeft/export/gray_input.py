"""Grayscale input: fold a colour model's three identical input channels into its first convolution.

Electroluminescence, X-ray and many surface-inspection cameras are monochrome. edgeft trains on such images by
replicating the one channel three times, because the pretrained stem wants RGB. When the three channels share
one mean and one std, the normalised channels are equal too, so the stem computes conv(x, x, x) = conv1(x) with
its weights summed over the input channels: exact, zero padding included. The exported model then takes 1xHxW:
a third of the input to prepare and copy, a third of the stem's multiply-adds on the largest feature map.

Whether the images really are grayscale is a property of the data, not of the model: the export's parity check
runs PyTorch on the images prepared as RGB and the folded ONNX on the same images prepared as GRAY, so a colour
data set fails it instead of shipping a model that sees luma where it was trained on colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.contract import InputContract
from edgeft.errors import ConfigError, EdgeftError


def gray_contract(contract: InputContract) -> InputContract:
    """The 1-channel contract of a 3-channel one whose channels share mean and std; ConfigError otherwise."""
    if contract.channels != 3:
        raise ConfigError(f"gray_input folds a 3-channel input; this model's input is {contract.color} "
                          f"({contract.channels} channel)")
    if len(set(contract.mean)) != 1 or len(set(contract.std)) != 1:
        raise ConfigError(f"gray_input is exact only when the three channels share mean and std; this model's are "
                          f"mean {list(contract.mean)}, std {list(contract.std)}: export without gray_input")
    return contract.replace(color="GRAY", mean=[contract.mean[0]], std=[contract.std[0]])


def fold_gray_input(path: Path, contract: InputContract) -> InputContract:
    """Rewrite the ONNX file at ``path`` to take one input channel; returns the model's new input contract."""
    import onnx
    from onnx import numpy_helper

    new_contract = gray_contract(contract)
    m = onnx.load(str(path))
    g = m.graph
    name = g.input[0].name
    consumers = [n for n in g.node if name in n.input]
    inits = {i.name: i for i in g.initializer}
    stem = consumers[0] if len(consumers) == 1 else None
    if stem is None or stem.op_type != "Conv" or stem.input[0] != name or stem.input[1] not in inits:
        raise EdgeftError(f"gray_input needs the input to feed exactly one convolution with constant weights; "
                          f"here it feeds {[n.op_type for n in consumers]}: export without gray_input")
    w = numpy_helper.to_array(inits[stem.input[1]])
    group = next((a.i for a in stem.attribute if a.name == "group"), 1)
    shared = sum(stem.input[1] in n.input for n in g.node) > 1
    if group != 1 or w.ndim != 4 or w.shape[1] != 3 or shared:
        raise EdgeftError(f"gray_input cannot fold the first convolution ({stem.name}: weights {list(w.shape)}, "
                          f"group {group}): export without gray_input")
    inits[stem.input[1]].CopyFrom(numpy_helper.from_array(w.sum(axis=1, keepdims=True, dtype=np.float64)
                                                          .astype(w.dtype), stem.input[1]))
    g.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return new_contract
