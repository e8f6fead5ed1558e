# syntax=docker/dockerfile:1
# Jetson (Orin, JetPack 6.x / L4T r36): build engines on the device with JetPack's own TensorRT, run
# `edgeft infer` on the camera, and run the latency gate (tegrastats memory, nvpmodel power mode).
# No torch: the image builds engines from ONNX, benchmarks and infers; training happens elsewhere.
#   docker build -f docker/jetson.Dockerfile -t edgeft-jetson .          (on the Jetson, or with buildx arm64)
#   docker run --rm --runtime nvidia -v "$PWD:/work" -w /work edgeft-jetson build runs/elpv/04-export-prune --precision fp16 --out engine
# JetPack 6.1/6.2 = L4T r36.4 = TensorRT 10.3, CUDA 12.6, cuDNN 9.3, Python 3.10 (see docs/deploy.md).
ARG L4T_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0
# onnxruntime-gpu for JetPack 6 / CUDA 12.6 (aarch64) from the Jetson AI Lab index; PyPI has no such wheel.
ARG JETSON_INDEX=https://pypi.jetson-ai-lab.dev/jp6/cu126
ARG ORT_VERSION=1.20.0

FROM ${L4T_IMAGE}
ARG JETSON_INDEX
ARG ORT_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    EDGEFT_QUIET=1
# python3-libnvinfer (TensorRT's Python bindings) ships in l4t-jetpack; pip is added here. The base tag fixes
# the L4T release and its apt sources; pip's Ubuntu point release is not pinned (its exact version would
# only break the build when Ubuntu ships a security fix).
# python3-opencv: the distribution's OpenCV, built with GStreamer, so the documented nvv4l2decoder pipelines open
# (pip's opencv-python-headless has no GStreamer; it is removed below, and the build fails if GStreamer is missing).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip python3-opencv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/edgeft
COPY pyproject.toml README.md ./
COPY edgeft ./edgeft
RUN pip3 install --extra-index-url "${JETSON_INDEX}" "onnxruntime-gpu==${ORT_VERSION}" \
    && pip3 install . "paho-mqtt==2.2.0" \
    && pip3 uninstall -y opencv-python-headless \
    && python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)" \
    && python3 -c "from edgeft.runtime.sources import gstreamer_supported as g; assert g(), 'OpenCV lacks GStreamer'" \
    && useradd --create-home --uid 10001 --groups video edgeft
USER 10001
WORKDIR /work
# a station run with EDGEFT_METRICS_PORT set: its /readyz; anything else: the doctor check of the runtime
HEALTHCHECK --interval=5m --timeout=120s --start-period=30s \
    CMD ["edgeft", "-q", "probe", "--require", "tensorrt"]
ENTRYPOINT ["edgeft"]
CMD ["doctor"]
