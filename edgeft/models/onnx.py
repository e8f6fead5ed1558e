"""PyTorch → ONNX (training floor): the legacy (TorchScript) exporter at a stated opset, simplification, and the
metadata that carries the class names and input contract inside the file.

The legacy exporter is used on purpose: the dynamo exporter asked for opset 17 silently returns opset 18
(its down-conversion fails and is only logged, FINDINGS), and edge runtimes pin opsets. The opset of the
written file is checked, not assumed.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

from edgeft import artifact as art
from edgeft.contract import InputContract
from edgeft.errors import DependencyError, EdgeftError
from edgeft.runtime.runner import ONNX_META_KEY  # noqa: F401 (the key the runtime reads)


def export_onnx(model, contract: InputContract, path: str | os.PathLike, opset: int = 17,
                dynamic_batch: bool = False, batch: int = 1, outputs: tuple[str, ...] = ("logits",)) -> Path:
    """Write ``model`` (eval mode, CPU) as ONNX with input ``input`` (N, C, H, W) and ``outputs`` (a classifier:
    ``logits``; an anomaly graph: ``score`` and ``heatmap``), the batch dimension of each free with
    ``dynamic_batch``."""
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
            torch.onnx.export(model, (x,), tmp, opset_version=opset, input_names=["input"], output_names=list(outputs),
                              dynamic_axes={name: {0: "batch"} for name in ("input", *outputs)} if dynamic_batch
                              else None,
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


def onnx_metadata(meta: art.Meta) -> str:
    """What a bare .onnx file says of itself: class names and input contract, and what its task adds (an anomaly
    graph: its task and spec, the heatmap's grid and colour scale)."""
    d = {"arch": meta.arch, "class_names": meta.class_names, "input": meta.input.to_dict(),
         "schema_version": art.SCHEMA_VERSION}
    from edgeft.tasks import registry as tasks

    d.update(tasks.of(meta).onnx_metadata(meta.extra))
    return json.dumps(d)


def simplify(path: Path) -> None:
    """Fold constants and fuse (Conv+BN, ...) with onnxslim, in place; the file is left unchanged on failure."""
    try:
        import onnx
        import onnxslim
    except ImportError:
        raise DependencyError("simplification needs onnxslim: pip install 'edgeft[onnx]', or pass --no-simplify") from None
    slim = onnxslim.slim(onnx.load(str(path)))
    if slim is None:
        raise EdgeftError(f"onnxslim could not simplify {path}; pass --no-simplify")
    onnx.checker.check_model(slim)
    onnx.save(slim, str(path))
