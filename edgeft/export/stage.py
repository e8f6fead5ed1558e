"""``edgeft export``: a PyTorch artifact becomes a checked, simplified ONNX artifact.

The ONNX file carries the class names and the input contract in its metadata, so a camera process
that only has the ``.onnx`` file still preprocesses exactly as in training. The export is compared
numerically with PyTorch on real images from the data folder (random inputs hide real mismatches
and raise false alarms), judged by the one parity rule of ``edgeft.parity`` (a tolerance relative to each
image's logit scale, top-1 agreement and cosine); a mismatch fails the stage and names the images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeft import artifact as art
from edgeft.tasks import registry as tasks
from edgeft.errors import ArtifactError, ConfigError
from edgeft.parity import Parity
from edgeft.parity import compare as compare_logits
from edgeft.metrics import OnnxGraph
from edgeft.models.onnx import ONNX_META_KEY, onnx_metadata, simplify

def parity(model, onnx_path: Path, images: np.ndarray, contract, threads: int = 2, onnx_images: np.ndarray | None = None,
           onnx_contract=None) -> Parity:
    """PyTorch vs ONNX Runtime logits on the same real images, judged by the FP32 rule of ``edgeft.parity``.
    ``onnx_images`` / ``onnx_contract``: the same images prepared for an ONNX model whose input contract differs
    (gray_input)."""
    from edgeft.runtime.timing import ort_session
    from edgeft.models.inference import torch_logits

    ref = torch_logits(model, images, contract, 32, 1, "cpu", channels_last=False, desc="parity torch")
    sess = ort_session(str(onnx_path), threads)
    name = sess.get_inputs()[0].name
    batch = sess.get_inputs()[0].shape[0]
    x = (onnx_contract or contract).normalize(images if onnx_images is None else onnx_images)
    step = batch if isinstance(batch, int) and batch > 0 else 32
    got = np.concatenate([sess.run(None, {name: x[i:i + step]})[0] for i in range(0, len(x), step)])
    return compare_logits(ref, got, "fp32")


def map_parity(model, onnx_path: Path, images: np.ndarray, contract, threads: int = 2,
               onnx_images: np.ndarray | None = None, onnx_contract=None):
    """An anomaly graph's (score, heatmap) from PyTorch and from ONNX Runtime on the same real images
    (``edgeft.parity.compare_maps``)."""
    from edgeft.models.inference import torch_outputs
    from edgeft.parity import compare_maps
    from edgeft.runtime.logits import onnx_outputs

    ref_scores, ref_maps = torch_outputs(model, images, contract, 8, desc="parity torch")
    got_scores, got_maps = onnx_outputs(onnx_path, images if onnx_images is None else onnx_images,
                                        onnx_contract or contract, threads=threads, desc="parity onnx")
    return compare_maps(ref_scores, got_scores, ref_maps, got_maps)


def _finish(path: Path, meta: art.Meta, task) -> Any:
    """The written graph's last touches, in place: the task's (an anomaly graph's statistics stored as its fit stores
    them), and the artifact's metadata in the file (a bare ``.onnx`` still says what it is). Returns the loaded
    model."""
    import onnx

    m = onnx.load(str(path))
    task.finish_graph(m, meta.extra)
    del m.metadata_props[:]
    m.metadata_props.add(key=ONNX_META_KEY, value=onnx_metadata(meta))
    m.producer_name = "edgeft"
    onnx.save(m, str(path))
    return m


def export(artifact_path: str | os.PathLike, out: str | os.PathLike, opset: int = 17, dynamic_batch: bool = False,
           do_simplify: bool = True, data: str | os.PathLike | None = None, n: int = 64,
           force: bool = False, gray_input: bool = False) -> art.Artifact:
    """Export a PyTorch artifact to an ONNX artifact; with ``data``, check parity on ``n`` real images.

    ``gray_input``: the ONNX model takes one channel, the stem's weights summed over its three identical input
    channels (``edgeft.export.gray_input``); needs ``data``, whose parity check proves the images are grayscale."""
    from edgeft.export.gray_input import fold_gray_input, gray_contract
    from edgeft.models.onnx import export_onnx
    from edgeft.models import from_artifact

    out = art.refuse_existing(out, force)
    parent = art.load(artifact_path)
    if parent.meta.kind != "torch":
        raise ArtifactError(f"{parent.path} already holds a {parent.meta.kind} model; export a PyTorch artifact")
    if gray_input:
        gray_contract(parent.meta.input)  # refuse a contract that cannot be folded before exporting anything
        if data is None:
            raise ConfigError("gray_input needs --data: the parity check on real images is what shows they are "
                              "grayscale")
    model = from_artifact(parent)
    task = tasks.of(parent.meta)
    params: dict[str, Any] = {"opset": opset, "dynamic_batch": dynamic_batch, "simplify": do_simplify}
    if gray_input:
        params["gray_input"] = True
    meta = art.Meta(kind="onnx", arch=parent.meta.arch, class_names=parent.meta.class_names, input=parent.meta.input,
                    lineage=parent.stage_record("export", params),
                    extra={k: v for k, v in parent.meta.extra.items() if k in task.extra_carried})

    def write(path: Path) -> None:
        export_onnx(model, parent.meta.input, path, opset=opset, dynamic_batch=dynamic_batch,
                    outputs=task.graph_outputs)
        if do_simplify:
            simplify(path)
        if gray_input:
            meta.input = fold_gray_input(path, parent.meta.input)
        m = _finish(path, meta, task)
        meta.metrics.update(task.carried_metrics(parent.meta.metrics))
        meta.metrics["onnx"] = OnnxGraph(opset=opset, nodes=len(m.graph.node), size_bytes=path.stat().st_size,
                                         dynamic_batch=dynamic_batch).to_dict()
        if data is not None:
            split = "test" if "test" in task.splits(data) else "val"
            classes = parent.meta.class_names
            found = task.read_images(data, split, parent.meta.input, classes, limit=n)
            onnx_images = found.images if not gray_input else \
                task.read_images(data, split, meta.input, classes, limit=n).images
            names = [f"{split}/{Path(p).parent.name}/{Path(p).name}" for p in found.paths]
            meta.metrics["parity"] = task.parity(model, path, found.images, onnx_images, parent.meta.input,
                                                 meta.input, split, names, gray_input)

    return art.save(out, meta, write, force=force)
