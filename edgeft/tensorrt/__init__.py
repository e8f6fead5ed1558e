"""TensorRT: engine building (build.py) and the legacy INT8 calibrator for TensorRT < 10; the engine runner
lives in the runtime (``edgeft.runtime.tensorrt``), since the camera runs it.

Nothing here is imported by ``import edgeft``; tensorrt itself is imported only when a function runs.
"""
