"""Data: ImageFolder splits decoded with OpenCV, augmentation, and the ELPV demo set builder."""

from edgeft.data.imagefolder import (IMAGE_SUFFIXES, Dataset, ImageSet, find_splits, load_dataset, load_split,
                                     read_image, scan_split)

__all__ = ["IMAGE_SUFFIXES", "Dataset", "ImageSet", "find_splits", "load_dataset", "load_split", "read_image",
           "scan_split"]
