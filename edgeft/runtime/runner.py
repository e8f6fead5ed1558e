"""The protocol every backend's runner implements (Polygraphy's runner shape): a context manager whose
``activate()`` loads the model, ``infer(x)`` maps a float32 NCHW batch to logits, and ``deactivate()``
releases it."""

from __future__ import annotations

import numpy as np


class Runner:
    """The protocol every backend implements."""

    name = "runner"

    def activate(self) -> None:
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def deactivate(self) -> None:
        pass

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()
