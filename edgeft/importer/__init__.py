"""Importing: the user's own fine-tuned checkpoint (timm, torchvision) or ONNX classifier as an artifact."""

from edgeft.importer.stage import ImportConfig, import_model

__all__ = ["ImportConfig", "import_model"]
