"""What runs inside the camera: a Predictor over backends, with preprocessing from the input contract.

This package needs numpy, OpenCV and one backend (onnxruntime, or TensorRT): no torch on this path.
"""

from edgeft.runtime.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
