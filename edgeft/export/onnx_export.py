"""PyTorch → ONNX with the legacy (TorchScript) exporter at a stated opset.

The legacy exporter is used on purpose: the dynamo exporter asked for opset 17 silently returns opset 18
(its down-conversion fails and is only logged, FINDINGS), and edge runtimes pin opsets. The opset of the
written file is checked, not assumed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from edgeft.contract import InputContract
from edgeft.errors import DependencyError, EdgeftError


def export_onnx(model, contract: InputContract, path: str | os.PathLike, opset: int = 17,
                dynamic_batch: bool = False, batch: int = 1) -> Path:
    """Write ``model`` (eval mode, CPU) as ONNX with input ``input`` (N, C, H, W) and output ``logits``."""
    import torch

    try:
        import onnx
    except ImportError:
        raise DependencyError("ONNX export needs the onnx package: pip install 'edgeft[onnx]'") from None
    path = Path(path)
    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    x = torch.zeros(batch, contract.channels, *contract.size)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), tmp, opset_version=opset, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
                              do_constant_folding=True, dynamo=False)
        m = onnx.load(tmp)
        onnx.checker.check_model(m)
        got = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
        if got != opset:
            raise EdgeftError(f"the exporter wrote opset {got}, not the requested {opset}; pass --opset {got} "
                              "or use a torch version that supports it")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
