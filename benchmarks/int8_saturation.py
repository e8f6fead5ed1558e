"""Does ONNX Runtime's INT8 move a model's scores on this CPU? The run's INT8 QDQ graph against its FP32 parent; JSON.

    python benchmarks/int8_saturation.py --run RUN [--data data/elpv] [--rounds 15]

On an x86 CPU without VNNI or AMX, ONNX Runtime runs uint8 x int8 convolutions on ``vpmaddubsw``, whose 16-bit sums
of products saturate (ONNX Runtime's quantization docs: "reduce_range or U8U8 ... if you encounter a large accuracy
drop"). This scores the run's FP32 model (``RUN/04-export-prune``) and its INT8 graph (``RUN/05-quantize``: edgeft's
uint8 activations x int8 per-channel weights) on ort-cpu and ov-cpu, and the two remedies ONNX Runtime names,
quantized here from the same FP32 file on the same calibration images (7-bit weights, ``reduce_range``; uint8
weights, U8U8): on val and test, accuracy, the AUROC of P(positive class), and recall and false rejects at the
threshold chosen on val for 95% recall. Then it times all of them in interleaved rounds against the FP32 model on
ONNX Runtime (batch 1; median of the per-round ratios, with the range).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def remedies(fp32, calibration_manifest: Path, data: Path, out: Path) -> dict[str, Path]:
    """The FP32 model quantized as edgeft does (MinMax, per-channel symmetric weights) but with 7-bit weights
    (``reduce_range``) and with uint8 weights (U8U8)."""
    import onnx
    from onnxruntime import quantization as q

    from edgeft.data import calibration
    from edgeft.quantize.ptq import _Reader, minmax_chunk, pre_process

    c = fp32.meta.input
    x = c.normalize(calibration.load_images(calibration.load(calibration_manifest), data, c).images)
    pre = out / "pre.onnx"
    pre_process(fp32.model_path, pre)
    name = onnx.load(str(pre)).graph.input[0].name
    files = {}
    for key, weights, reduce in (("int8-reduce-range", q.QuantType.QInt8, True), ("int8-u8u8", q.QuantType.QUInt8,
                                                                                     False)):
        files[key] = out / f"{key}.onnx"
        q.quantize_static(str(pre), str(files[key]), _Reader(x, name), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, reduce_range=reduce, activation_type=q.QuantType.QUInt8,
                          weight_type=weights, calibrate_method=q.CalibrationMethod.MinMax,
                          extra_options={"WeightSymmetric": weights == q.QuantType.QInt8,
                                         "CalibMaxIntermediateOutputs": minmax_chunk(len(x))})
    return files


def scores(runner, meta, data: Path, positive: list[str]) -> dict[str, dict[str, float]]:
    """Accuracy, AUROC, and recall / false rejects at the threshold chosen on val for 95% recall, on val and test,
    through an (inactive) runner."""
    import numpy as np

    from edgeft.data import load_split
    from edgeft.metrics.scores import labelled_not_ok, score_decisions
    from edgeft.runtime.logits import runner_logits
    from edgeft.runtime.predictor import softmax

    out, threshold = {}, None
    with runner:
        for name in ("val", "test"):
            split = load_split(data, name, meta.input, classes=meta.class_names)
            p = softmax(runner_logits(runner, split.images, meta.input, desc=f"{name} {runner.name}")
                        .astype(np.float64))
            y, s = labelled_not_ok(split.labels, p, meta.class_names, positive, name)
            d = score_decisions(y, s, positive)
            threshold = d.false_reject_at_recall["0.95"].threshold if threshold is None else threshold
            out[name] = {"accuracy": round(float((p.argmax(1) == split.labels).mean()), 4),
                         "auroc": round(d.auroc, 4), "recall": round(float((s >= threshold)[y].mean()), 4),
                         "false_reject": round(float((s >= threshold)[~y].mean()), 4)}
    return out


def paired(runners: dict, base: str, contract, rounds: int) -> dict[str, dict]:
    """Each (inactive) runner timed in ``rounds`` interleaved rounds (batch 1): its p50 and its speed-up over
    ``runners[base]``, the median of the per-round ratios, with the range."""
    from edgeft.runtime.timing import paired_rounds

    times = paired_rounds(runners, (1, contract.channels, *contract.size), rounds)
    out = {}
    for k, t in times.items():
        ratios = [b / x for b, x in zip(times[base], t)]
        out[k] = {"p50_ms": round(statistics.median(t), 3), "speedup": round(statistics.median(ratios), 3),
                  "range": [round(min(ratios), 3), round(max(ratios), 3)], "rounds": len(ratios)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "elpv")
    ap.add_argument("--positive", nargs="+", default=["defective"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from edgeft import artifact
    from edgeft.bench.harness import reference_workload_ms
    from edgeft.host import cpu_model, int8_may_saturate, unit_flags
    from edgeft.runtime.backends import OrtRunner
    from edgeft.runtime.openvino import OpenVINORunner

    fp32, int8 = artifact.load(a.run / "04-export-prune"), artifact.load(a.run / "05-quantize")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": fp32.model_path, "int8": int8.model_path,
                 **remedies(fp32, a.run / "05-quantize-calibration.json", a.data, Path(tmp))}

        def runners():
            return {f"{k}@{rt}": (OrtRunner(f, "CPUExecutionProvider", a.threads) if rt == "ort-cpu" else
                                  OpenVINORunner(f, "CPU", a.threads))
                    for k, f in files.items() for rt in ("ort-cpu", "ov-cpu")}

        quality = {k: scores(r, fp32.meta, a.data, a.positive) for k, r in runners().items()}
        for k, speed in paired(runners(), "fp32@ort-cpu", fp32.meta.input, a.rounds).items():
            quality[k].update(speed)
    print(json.dumps({"cpu": cpu_model(), "units": unit_flags(), "int8_may_saturate": int8_may_saturate(),
                      "reference_ms": reference_workload_ms(), "rounds": a.rounds, "paths": quality}, indent=1))


if __name__ == "__main__":
    main()
