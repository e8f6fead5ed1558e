"""What the tasks that read class folders share (classify, anomaly): their data's splits and images, as
:mod:`edgeft.data.imagefolder` reads them (class folders or a manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class FolderData:
    """The :class:`~edgeft.tasks.registry.Task` hooks ``splits``, ``data_classes``, ``read_images`` and
    ``calibration_manifest`` for class-folder data."""

    def data_classes(self, data: Path) -> list[str]:
        from edgeft.data.imagefolder import find_splits, scan_split

        return scan_split(find_splits(data)["train"]).classes

    def splits(self, data: Path) -> dict[str, Any]:
        from edgeft.data.imagefolder import find_splits

        return find_splits(data)

    def read_images(self, data: Path, split: str, contract: Any, class_names: list[str],
                    limit: int | None = None) -> Any:
        from edgeft.data import load_split

        return load_split(data, split, contract, classes=self.parity_classes(class_names), limit=limit)

    def calibration_manifest(self, data: Path, n: int, class_names: list[str], split: str = "train", seed: int = 0,
                             contract: Any = None) -> Any:
        """Class-balanced; of the good class alone where the task calibrates on it (an anomaly model)."""
        from edgeft.data import calibration

        return calibration.create(data, n=n, split=split, seed=seed, contract=contract,
                                  only=self.calibration_class(class_names))
