"""edgeft: fine-tune a pretrained image model and ship it, pruned and INT8, to edge GPUs.

Importing the package is deliberately cheap: no torch, onnxruntime, tensorrt or CUDA is touched here,
so a camera process can use :mod:`edgeft.runtime` without them and ``edgeft --help`` starts fast.
"""

__version__ = "0.1.0"

from edgeft.errors import EdgeftError

__all__ = ["EdgeftError", "__version__"]
