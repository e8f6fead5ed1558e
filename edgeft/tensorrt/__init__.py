"""TensorRT: engine building (build.py), the legacy INT8 calibrator for TensorRT < 10, and the engine runner.

Nothing here is imported by ``import edgeft``; tensorrt itself is imported only when a function runs.
"""
