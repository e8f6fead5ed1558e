# syntax=docker/dockerfile:1
# x86_64 + NVIDIA GPU: build TensorRT engines (`edgeft build`), benchmark (`edgeft bench`), gate
# (`edgeft compare`) and run the full pipeline on the GPU. TensorRT, CUDA and cuDNN come from NVIDIA's
# TensorRT container; ONNX Runtime with the CUDA and TensorRT providers from onnxruntime-gpu.
#   docker build -f docker/gpu.Dockerfile -t edgeft-gpu .
#   docker run --rm --gpus all -v "$PWD:/work" -w /work edgeft-gpu build runs/elpv/04-export-prune --precision fp16 --out runs/elpv/engine
# Engines are tied to the GPU model and TensorRT version: build them in this image on the target GPU.
# Chosen to match the CUDA 13 torch wheels pinned in requirements/constraints.txt; this image has not been built
# here (no Docker engine): check the tag's CUDA in NVIDIA's TensorRT container release notes before relying on it.
ARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:25.10-py3

FROM ${TRT_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    EDGEFT_QUIET=1
WORKDIR /opt/edgeft
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY edgeft ./edgeft
# Versions pinned by requirements/constraints.txt (the set CI tests; torch's PyPI wheel carries CUDA 13);
# the image's own TensorRT Python bindings are used, so the trt extra is not installed from PyPI.
# hadolint ignore=DL3013
RUN pip install -c requirements/constraints.txt ".[train,onnx,gpu,prune,station]" \
    && python -c "import tensorrt, onnxruntime; print(tensorrt.__version__, onnxruntime.get_available_providers())" \
    && useradd --create-home --uid 10001 edgeft
USER 10001
WORKDIR /work
# a station run with EDGEFT_METRICS_PORT set: its /readyz; anything else: the doctor check of the runtime
HEALTHCHECK --interval=5m --timeout=120s --start-period=30s \
    CMD ["edgeft", "-q", "probe", "--require", "tensorrt", "--require", "ort-cuda"]
ENTRYPOINT ["edgeft"]
CMD ["doctor"]
