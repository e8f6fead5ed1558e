"""INT8 post-training quantization figures, measured side by side in one run; prints JSON.

  python benchmarks/quantize_int8.py --artifact runs/elpv-finetune --data data/elpv [--calib calibration/elpv.json]

For the fine-tuned demo model: test accuracy FP32 vs edgeft PTQ (ort-cpu and tensorrt targets) vs
ONNX Runtime's ``quantize_static`` with its defaults on the same calibration set; file sizes; ONNX
Runtime CPU p50 latency at batch 1 (2 threads). For resnet18 (random weights: a speed figure only):
FP32 vs edgeft's ort-cpu INT8 latency.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--calib", default=None, help="manifest; made from --data (256 images, seed 0) if omitted")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-resnet", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("EDGEFT_QUIET", "1")

    import torch
    from onnxruntime import quantization as q

    from edgeft import artifact
    from edgeft.data import load_split
    from edgeft.runtime.logits import onnx_logits
    from edgeft.models.onnx import export_onnx
    from edgeft.models.onnx import simplify
    from edgeft.metrics import classification_metrics
    from edgeft.models import create, from_artifact, save_artifact
    from edgeft.data import calibration
    from edgeft.quantize.ptq import QuantizeConfig, _Reader, minmax_chunk, quantize, side_by_side

    torch.set_num_threads(args.threads)
    parent = artifact.load(args.artifact)
    contract = parent.meta.input
    out: dict = {"artifact": args.artifact, "threads": args.threads, "batch": 1}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        calib = Path(args.calib) if args.calib else tmp / "calib.json"
        if not args.calib:
            calibration.save(calibration.create(args.data, n=256, contract=contract), calib)
        test = load_split(args.data, "test", contract, classes=parent.meta.class_names)

        def acc(path: Path) -> dict:
            logits = onnx_logits(path, test.images, contract, threads=args.threads)
            m = classification_metrics(test.labels, logits.argmax(1), parent.meta.class_names)
            return {"accuracy": m.accuracy, "balanced_accuracy": m.balanced_accuracy, "confusion": m.confusion}

        fp32 = tmp / "fp32.onnx"
        export_onnx(from_artifact(parent), contract, fp32)
        simplify(fp32)
        # ONNX Runtime's quantize_static with its defaults (QDQ, S8S8, per-tensor, MinMax), same calibration images
        x = contract.normalize(calibration.load_images(calibration.load(calib), args.data, contract).images)
        ort_default = tmp / "ort_default.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            q.quantize_static(str(fp32), str(ort_default), _Reader(x, "input"),  # defaults; the option below only
                              extra_options={"CalibMaxIntermediateOutputs": minmax_chunk(len(x))})  # bounds memory, same result
        variants = {"fp32": fp32, "ort_quantize_static_defaults": ort_default}
        for target in ("ort-cpu", "tensorrt"):
            art = quantize(parent.path, tmp / f"edgeft-{target}", QuantizeConfig(target=target, threads=args.threads),
                           calib, args.data)
            variants[f"edgeft_ptq_{target}"] = art.model_path
            out[f"edgeft_ptq_{target}_excluded"] = art.meta.extra["excluded_groups"]
        lat = side_by_side(variants, (1, contract.channels, *contract.size), args.threads, rounds=5)
        out["demo"] = {name: {"p50_ms": round(lat[name], 3), "size_mb": round(p.stat().st_size / 1e6, 3), **acc(p)}
                       for name, p in variants.items()}
        base = out["demo"]["fp32"]
        for name, v in out["demo"].items():
            v["speedup_vs_fp32"] = round(base["p50_ms"] / v["p50_ms"], 3)
            v["size_ratio_vs_fp32"] = round(base["size_mb"] / v["size_mb"], 2)
            v["accuracy_drop_pp"] = round((base["accuracy"] - v["accuracy"]) * 100, 2)

        if not args.skip_resnet:
            model, _ = create("resnet18", num_classes=len(parent.meta.class_names))
            meta = artifact.Meta(kind="torch", arch="resnet18", class_names=parent.meta.class_names, input=contract)
            r18 = save_artifact(model, tmp / "resnet18", meta)
            rq = quantize(r18.path, tmp / "resnet18-int8", QuantizeConfig(target="ort-cpu", threads=args.threads),
                          calib, args.data)
            r_fp32 = tmp / "r18.onnx"
            export_onnx(model, contract, r_fp32)
            simplify(r_fp32)
            lat = side_by_side({"fp32": r_fp32, "int8": rq.model_path}, (1, contract.channels, *contract.size),
                               args.threads, rounds=5)
            out["resnet18_random_weights"] = {"fp32_p50_ms": round(lat["fp32"], 3), "int8_p50_ms": round(lat["int8"], 3),
                                              "speedup": round(lat["fp32"] / lat["int8"], 3),
                                              "excluded": rq.meta.extra["excluded_groups"]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
