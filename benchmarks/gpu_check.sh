#!/usr/bin/env bash
# One prepared run for a machine with an NVIDIA GPU (a few minutes): the CUDA/TensorRT tests, then the demo
# model through every GPU path that exists there. Prints everything; writes JSON under ${OUT:-gpu-check}/.
#   bash benchmarks/gpu_check.sh [FINETUNED_TORCH_ARTIFACT] [DATA]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
ART=${1:-runs/elpv-finetune}
DATA=${2:-data/elpv}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 EDGEFT_QUIET=1
PY=${PY:-python3}
nvidia-smi || true
$PY -m edgeft.cli doctor
echo "== GPU-marked tests"
$PY -m pytest -q -m "cuda or tensorrt" -rs tests 2>&1 | tail -20
if [ -d "$ART" ] && [ -d "$DATA" ]; then
  echo "== demo model"
  $PY -m edgeft.cli export "$ART" --out "$OUT/onnx" --dynamic-batch --data "$DATA" --force
  $PY -m edgeft.cli bench "$ART" "$OUT/onnx" --backend torch-cuda --backend ort-cuda --backend ort-trt \
      --batch 1,8,32 --duration-s 3 --cuda-graph --out "$OUT/bench-gpu.json"
  if $PY -c "import tensorrt" 2>/dev/null; then
    $PY -m edgeft.cli quantize "$ART" --target tensorrt --calib calibration/elpv.json --data "$DATA" \
        --out "$OUT/int8-qdq" --force
    for p in fp32 fp16; do
      $PY -m edgeft.cli build "$OUT/onnx" --precision $p --batch 1,8,32 --timing-cache "$OUT/timing.cache" \
          --out "$OUT/engine-$p" --force
    done
    $PY -m edgeft.cli build "$OUT/int8-qdq" --precision int8 --out "$OUT/engine-int8" --force
    $PY -m edgeft.cli compare-backends "$OUT/engine-fp16" "$OUT/onnx" --reference "$ART" --data "$DATA"
    $PY -m edgeft.cli bench "$OUT"/engine-* --backend tensorrt --batch 1 --duration-s 3 --out "$OUT/bench-trt.json"
  else
    echo "TensorRT not installed here: engine builds skipped"
  fi
else
  echo "no demo artifact at $ART (run 'make demo' first, or pass paths): GPU tests only"
fi
