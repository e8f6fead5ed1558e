"""INT8 quantization: calibration manifests and post-training quantization to QDQ ONNX."""
