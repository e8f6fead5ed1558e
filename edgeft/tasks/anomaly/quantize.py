"""INT8 of an anomaly graph (``edgeft quantize`` on an ``edgeft anomaly`` artifact).

The backbone runs in INT8, calibrated on good parts only; the patch-feature pooling and the distances stay in
FP32 (``edgeft.tasks.anomaly.graph.distance_nodes``): a Mahalanobis or nearest-neighbour distance in 8 bits
would lose the small differences that separate a fine crack from the good parts' spread. INT8 moves the scores,
so the threshold is chosen again on val, with the FP32 model's rule; what INT8 costs is measured on the scores,
the heatmaps and the AUROC.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeft import artifact as art
from edgeft import progress
from edgeft.decision import Policy


def read_unrounded(path: Path, fp32_nodes: list[str]) -> None:
    """Rewire the FP32 nodes of a quantized anomaly graph that read a feature tensor through a Q/DQ pair (a level's
    output that INT8 layers also read) to read the tensor itself: the distances then see the backbone's features,
    not their 8-bit rounding. In place."""
    import onnx

    m = onnx.load(str(path))
    producers = {o: n for n in m.graph.node for o in n.output}
    keep = set(fp32_nodes)
    for n in m.graph.node:
        if n.name not in keep:
            continue
        for k, name in enumerate(n.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[k] = q.input[0]
    onnx.save(m, str(path))


def refit_padim(path: Path, images: np.ndarray, contract, eps: float, threads: int, backend: str = "ort-cpu") -> int:
    """Re-estimate a PaDiM graph's per-position mean and inverse covariance from the features its (INT8) backbone
    computes on good images as ``backend`` runs it, and write them into the graph; returns the images used. The
    statistics then describe the features the camera's model produces: fitted on FP32 features, the Mahalanobis
    distance magnified INT8's small, systematic feature shifts along low-variance directions (scores moved ~3x,
    heatmaps decorrelated); fitted on ONNX Runtime's INT8 features, OpenVINO's (rounded otherwise) moved ELPV's val
    scores up to 89% and its val AUROC from 0.869 to 0.849."""
    import onnx
    from onnx import numpy_helper

    from edgeft.runtime.backends import lookup

    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    subs = {n.output[0]: n for n in m.graph.node if n.op_type == "Sub"}
    casts = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Cast" and n.input[0] in inits}

    def constant(name: str):  # the initializer behind an operand: itself, or an FP16 store read through a Cast
        return inits.get(name) or inits.get(casts.get(name, ""))

    # the Mahalanobis product: (features - mean) @ the (P, D, D) inverse covariances: an FP32 constant while
    # quantizing (the pre-quantization passes fold an FP16 store's Cast), an FP16 one in a finished artifact stored
    # so (refit_for_int8 stores it again). Found by its shape, not its name: the exporter names it ``inv_cov`` or
    # ``onnx::MatMul_N``.
    matmul = next(n for n in m.graph.node if n.op_type == "MatMul" and n.input[0] in subs
                  and len(getattr(constant(n.input[1]), "dims", ())) == 3)
    inv = constant(matmul.input[1])
    sub = subs[matmul.input[0]]
    feat, mean_name = sub.input  # (P, N, D) features, (P, 1, D) mean
    probe = onnx.load(str(path))  # its one output the features: the runtime computes the backbone, not the distances
    del probe.graph.output[:]
    probe.graph.output.append(onnx.helper.make_tensor_value_info(feat, onnx.TensorProto.FLOAT, None))
    probe_path = path.with_name("refit-probe.onnx")
    onnx.save(probe, str(probe_path))
    runner = lookup(backend).require().make(probe_path, None, threads)
    runner.activate()
    p, d = numpy_helper.to_array(inits[mean_name]).shape[::2]
    s1, s2, n = np.zeros((p, d)), np.zeros((p, d, d)), 0
    rows: list[np.ndarray] = []

    def add() -> None:  # one (P, D, B) x (P, B, D) product per 64 images, not an outer product per image
        nonlocal s1, s2
        f = np.concatenate(rows, axis=1).astype(np.float64)  # (P, B, D)
        s1 += f.sum(1)
        s2 += f.transpose(0, 2, 1) @ f
        rows.clear()

    try:
        for i in progress.bar(range(len(images)), desc=f"refit on {backend}'s features", unit="img"):  # any batch
            rows.append(runner.infer(contract.normalize(images[i:i + 1])))  # (P, 1, D)
            n += 1
            if len(rows) == 64:
                add()
        if rows:
            add()
    finally:
        runner.deactivate()
        probe_path.unlink(missing_ok=True)
    mean = s1 / n
    cov = (s2 - n * mean[:, :, None] * mean[:, None, :]) / max(1, n - 1) + eps * np.eye(mean.shape[1])
    inits[mean_name].CopyFrom(numpy_helper.from_array(mean[:, None, :].astype(np.float32), mean_name))
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inv.data_type)  # as stored: FP32, or FP16 read through its Cast
    inv.CopyFrom(numpy_helper.from_array(np.linalg.inv(cov).astype(dtype), inv.name))
    onnx.save(m, str(path))
    return n


def refit_for_int8(int8: Path, data, parent: art.Artifact, threads: int, backend: str = "ort-cpu"
                   ) -> dict[str, Any] | None:
    """PaDiM: re-estimate the statistics on the INT8 backbone's features of the good training images, as ``backend``
    computes them (returns what was used). PatchCore keeps the FP32 graph's bank (a coreset chosen again would be a
    new fit). Either way the statistics end stored as the fit stores them (ONNX Runtime's passes before quantizing
    fold an FP16 store into FP32 constants)."""
    import onnx

    from edgeft.tasks.anomaly.graph import store_statistics

    spec = parent.meta.extra["anomaly"]
    refit = _refit_padim_on(int8, data, parent, threads, backend) if spec["method"] == "padim" else None
    m = onnx.load(str(int8))
    if store_statistics(m, spec.get("storage", "fp32")):
        onnx.save(m, str(int8))
    return refit


def _refit_padim_on(int8: Path, data, parent: art.Artifact, threads: int, backend: str) -> dict[str, Any]:
    """:func:`refit_padim` on the good training images of ``data`` (the fit's good class)."""
    from edgeft.data.imagefolder import load_split

    spec = parent.meta.extra["anomaly"]
    good = parent.meta.class_names[0]
    train = load_split(data, "train", parent.meta.input)
    images = train.images[train.labels == train.classes.index(good)] if good in train.classes else train.images[:0]
    if len(images) == 0:
        from edgeft.errors import DataError

        raise DataError(f"{data}/train has no {good}/ images to re-fit the anomaly statistics on the INT8 backbone; "
                        "pass the data folder the model was fitted on")
    eps = float(spec.get("extra", {}).get("eps", 0.01))
    n = refit_padim(int8, images, parent.meta.input, eps, threads, backend)
    progress.info(f"statistics re-fitted on the INT8 backbone's features of {n} good training images ({backend})")
    return {"images": n, "eps": eps, "backend": backend}


def for_runtime(a: art.Artifact, runtime: str, data, out: Path, threads: int) -> Path | None:
    """An INT8 PaDiM graph on another runtime than the one its statistics were re-fitted on (each rounds the INT8
    backbone's features its own way): a copy at ``out`` with the statistics re-fitted on ``runtime``'s features (its
    lineage says so); None when the model runs there unchanged. An FP32 graph keeps the statistics of the FP32 fit
    (at bf16 the ship step's val scores judge what that costs); PatchCore's bank is never re-chosen."""
    spec = a.meta.extra["anomaly"]
    fitted_on = (a.meta.extra.get("refit_on_int8") or {}).get("backend", "ort-cpu")
    if spec["method"] != "padim" or a.meta.extra.get("quantized") != "int8" or runtime == fitted_on:
        return None
    with art.staging_dir(out, force=True) as tmp:
        for f in a.path.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        copy = art.load(tmp)
        refit = refit_for_int8(copy.model_path, data, a, threads, runtime)
        copy.meta.model_sha256 = art.sha256_file(copy.model_path)
        copy.meta.lineage = a.stage_record("refit", {"backend": runtime, **(refit or {})})
        art.update_metrics(copy, {}, extra={"refit_on_int8": refit})
    return out


def _val_policy(int8: Path, data, parent: art.Artifact, threads: int):
    """(the INT8 model's policy chosen on val with the parent's rule, val decisions, its heatmap scale from val's
    good parts: (floor, ceiling) as the fit sets it), each None where val cannot give it; on ONNX Runtime, where the
    quantize stage's INT8 graph runs (the ship step scores it again on each runtime it tries)."""
    from edgeft.tasks.anomaly.scoring import on_val, rule_of

    v = on_val(int8, data, parent.meta.input, parent.meta.class_names[0], rule_of(parent), threads=threads,
               desc="int8 val")
    if v is None:
        return None, None, None
    if v.policy is not None:
        progress.info(f"INT8 policy: {v.policy.text()}")
    return v.policy, v.decisions, v.scale


def int8_anomaly_metrics(fp32: Path, int8: Path, eval_set, data, parent: art.Artifact, cfg,
                         graph: dict[str, Any]) -> tuple[dict[str, Any], Policy | None, dict[str, Any]]:
    """The INT8 graph's metrics (its own ``anomaly`` record, the FP32 graph's decisions on the same split, how far
    scores and heatmaps moved; ``graph``: sizes, Q/DQ summary, latency), its policy re-chosen on val, and its anomaly
    spec with the heatmap's scale measured on its own val scores (the parent's where val has no good parts)."""
    from edgeft.metrics import AnomalyFit, anomalous_mask, anomaly_decisions, read
    from edgeft.parity import compare_maps
    from edgeft.runtime.logits import onnx_outputs
    from edgeft.tasks.anomaly.scoring import both

    contract, good, split = parent.meta.input, parent.meta.class_names[0], eval_set.name
    f_scores, f_maps = onnx_outputs(fp32, eval_set.images, contract, threads=cfg.threads, desc="fp32 graph")
    i_scores, i_maps = onnx_outputs(int8, eval_set.images, contract, threads=cfg.threads, desc="int8 graph")
    moved = compare_maps(f_scores, i_scores, f_maps, i_maps)
    policy, val_dec, scale = _val_policy(int8, data, parent, cfg.threads)
    y = anomalous_mask(eval_set.labels, eval_set.classes, good)
    dec = anomaly_decisions(y, i_scores, good) if both(y) else None
    dec_fp32 = anomaly_decisions(y, f_scores, good) if both(y) else None
    fit = read(parent.meta.metrics, "anomaly")
    record = AnomalyFit(method=parent.meta.extra["anomaly"]["method"], good_images=fit.good_images if fit else 0,
                        fit_s=fit.fit_s if fit else 0.0, bank_bytes=fit.bank_bytes if fit else 0, val=val_dec,
                        test=dec if split == "test" else None,
                        test_policy=policy.outcome(y, i_scores) if policy is not None and dec is not None
                        and split == "test" else None)
    metrics = {"anomaly": record.to_dict(), "eval_split": split,
               "anomaly_fp32": dec_fp32.to_dict() if dec_fp32 else None,
               "auroc_drop": round(dec_fp32.auroc - dec.auroc, 4) if dec else None,
               "int8_vs_fp32": {"max_rel_score_diff": moved.max_rel_diff, "min_map_correlation":
                                moved.min_map_correlation, "median_map_correlation": moved.median_map_correlation,
                                "n": moved.n},
               **graph}
    if dec is not None:
        progress.info(f"{split} AUROC: FP32 {dec_fp32.auroc:.4f}, INT8 {dec.auroc:.4f}; heatmaps correlated "
                      f"{moved.median_map_correlation:.4f} (median), >= {moved.min_map_correlation:.4f}")
    spec = dict(parent.meta.extra["anomaly"])
    if scale is not None:
        spec["map_floor"], spec["map_ceiling"] = scale
    return metrics, policy, spec
