"""The implicit INT8 calibrator, for TensorRT 8.x only (older JetPack releases; deprecated in 10, removed in 11).

Fed from a calibration manifest through the artifact's input contract, so the scales are computed on
exactly the images and preprocessing that training used; the cache file makes rebuilds reproducible.
"""

from __future__ import annotations

import os
from pathlib import Path


def legacy_calibrator(trt, parent, calib: str | os.PathLike, data: str | os.PathLike | None, cache: Path,
                      batch_size: int = 8):
    import numpy as np
    import torch  # device buffers come from torch's CUDA allocator

    from edgeft.errors import ConfigError
    from edgeft.data import calibration

    if data is None:
        raise ConfigError("--calib needs --data: the folder the manifest's image paths are relative to")
    contract = parent.meta.input
    x = contract.normalize(calibration.load_images(calibration.load(calib), data, contract).images)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.i = 0
            self.buffer = torch.empty((batch_size, *x.shape[1:]), dtype=torch.float32, device="cuda")

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            if self.i + batch_size > len(x):
                return None
            self.buffer.copy_(torch.from_numpy(np.ascontiguousarray(x[self.i:self.i + batch_size])))
            self.i += batch_size
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data):
            cache.write_bytes(bytes(data))

    return EntropyCalibrator()
