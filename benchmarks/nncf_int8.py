"""OpenVINO-native INT8 (NNCF's post-training quantization) against edgeft's INT8 QDQ graph, on this host; JSON.

    pip install nncf   # not an edgeft dependency: this script measures whether it should become one
    python benchmarks/nncf_int8.py --fp32 RUN/04-export-prune --int8 RUN/05-quantize --reference RUN/03-export-finetune

NNCF quantizes the pruned FP32 ONNX model for OpenVINO (``nncf.quantize``, the performance preset, on the same
class-balanced train images edgeft calibrates with); it is then timed on ov-cpu beside edgeft's INT8 QDQ graph on
ov-cpu and ort-cpu, against the fine-tuned FP32 model on ONNX Runtime in the same interleaved rounds (batch 1; each
speed-up the median of the per-round p50 ratios, with the range), and scored on val and test: accuracy, AUROC of
P(positive class), and recall / false rejects at the threshold chosen on val for 95% recall. OpenVINO-native INT8
would be a candidate of the search only where this measures it faster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def nncf_model(fp32, data: Path, n: int, out: Path) -> tuple[Path, float]:
    """NNCF's INT8 OpenVINO model of the ``fp32`` artifact, calibrated on ``n`` class-balanced train images, saved as
    OpenVINO IR in ``out``; (its path, seconds it took)."""
    import time

    import nncf
    import openvino as ov

    from edgeft.data import calibration

    contract = fp32.meta.input
    images = calibration.load_images(calibration.create(data, n, contract=contract), data, contract).images
    samples = [contract.normalize(images[i:i + 1]) for i in range(len(images))]
    t0 = time.time()
    model = ov.Core().read_model(str(fp32.model_path))
    with contextlib.redirect_stdout(sys.stderr):  # its progress bar: stdout is this script's JSON
        quantized = nncf.quantize(model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(samples))
    path = out / "model.xml"
    ov.save_model(quantized, str(path))
    return path, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", type=Path, required=True, help="the pruned FP32 ONNX artifact NNCF quantizes")
    ap.add_argument("--int8", type=Path, required=True, help="edgeft's INT8 QDQ artifact of the same model")
    ap.add_argument("--reference", type=Path, required=True, help="the fine-tuned FP32 ONNX artifact (speed-up 1)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "elpv")
    ap.add_argument("--positive", nargs="+", default=["defective"])
    ap.add_argument("--calib-images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    try:
        import nncf  # noqa: F401
    except ImportError:
        sys.exit("nncf is not installed: pip install nncf (this benchmark measures it; edgeft does not need it)")

    from edgeft import artifact
    from edgeft.bench.harness import reference_workload_ms
    from edgeft.host import cpu_model, precision_units
    from edgeft.runtime.backends import OrtRunner
    from edgeft.runtime.openvino import OpenVINORunner
    from int8_saturation import paired, scores

    fp32, int8, ref = artifact.load(a.fp32), artifact.load(a.int8), artifact.load(a.reference)
    with tempfile.TemporaryDirectory() as tmp:
        nncf_path, nncf_s = nncf_model(fp32, a.data, a.calib_images, Path(tmp))

        def runners():
            return {"nncf-int8@ov-cpu": OpenVINORunner(nncf_path, "CPU", a.threads),
                    "qdq-int8@ov-cpu": OpenVINORunner(int8.model_path, "CPU", a.threads),
                    "qdq-int8@ort-cpu": OrtRunner(int8.model_path, "CPUExecutionProvider", a.threads)}

        quality_of = {k: scores(r, int8.meta, a.data, a.positive) for k, r in runners().items()}
        speed = paired({"base": OrtRunner(ref.model_path, "CPUExecutionProvider", a.threads), **runners()}, "base",
                       ref.meta.input, a.rounds)
    print(json.dumps({"cpu": cpu_model(), "units": precision_units(), "reference_ms": reference_workload_ms(),
                      "nncf": nncf.__version__, "nncf_seconds": round(nncf_s, 1),
                      "calib_images": a.calib_images, "speed": speed, "quality": quality_of}, indent=1))


if __name__ == "__main__":
    main()
