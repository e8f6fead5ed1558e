# syntax=docker/dockerfile:1
# Slim camera runtime: `edgeft infer` and edgeft.runtime.Predictor on ONNX Runtime (CPU) + OpenCV.
# No torch, no timm. Build from the repository root:
#   docker build -f docker/runtime.Dockerfile -t edgeft-runtime .
# Run on a folder of images, a video file, an RTSP stream or a camera (pass the device through):
#   docker run --rm -v "$PWD/runs/elpv:/models:ro" edgeft-runtime infer /models/05-quantize rtsp://camera/stream
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgeft ./edgeft
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGEFT_QUIET=1
COPY --from=wheel /wheels /wheels
COPY requirements/constraints.txt /tmp/constraints.txt
# The exact versions CI tests with; the runtime extra is onnxruntime + OpenCV + numpy.
RUN wheel="$(ls /wheels/edgeft-*.whl)" \
    && pip install --no-cache-dir -c /tmp/constraints.txt "edgeft[runtime,station] @ file://${wheel}" \
    && rm -rf /wheels /tmp/constraints.txt \
    && useradd --create-home --uid 10001 --groups video edgeft
USER 10001
WORKDIR /home/edgeft
# a station run with EDGEFT_METRICS_PORT set: its /readyz; anything else: the doctor check of the runtime
HEALTHCHECK --interval=5m --timeout=60s --start-period=10s \
    CMD ["edgeft", "-q", "probe", "--require", "ort-cpu"]
ENTRYPOINT ["edgeft"]
CMD ["doctor"]
