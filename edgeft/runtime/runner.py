"""The protocol every backend's runner implements (Polygraphy's runner shape): a context manager whose
``activate()`` loads the model, ``infer(x)`` maps a float32 NCHW batch to logits (the first output),
``infer_outputs(x)`` to every output (a model with several: an anomaly graph's score and heatmap), and
``deactivate()`` releases it."""

from __future__ import annotations

import numpy as np

ONNX_META_KEY = "edgeft"  # the metadata_props key of an ONNX file that holds its class names and input contract


class Runner:
    """The protocol every backend implements."""

    name = "runner"

    def activate(self) -> None:
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def infer_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the model, in the graph's order (an anomaly graph: score, heatmap)."""
        return [self.infer(x)]

    def deactivate(self) -> None:
        pass

    def metadata(self) -> dict | None:
        """The edgeft metadata (class names, input contract) the model file carries, where the runtime reads it."""
        return None

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()
