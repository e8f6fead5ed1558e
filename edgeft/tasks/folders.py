"""What the tasks that read class folders share (classify, anomaly): their data's splits and images, as
:mod:`edgeft.data.imagefolder` reads them (class folders or a manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class FolderData:
    """The :class:`~edgeft.tasks.registry.Task` hooks ``splits`` and ``read_images`` for class-folder data."""

    def splits(self, data: Path) -> dict[str, Any]:
        from edgeft.data.imagefolder import find_splits

        return find_splits(data)

    def read_images(self, data: Path, split: str, contract: Any, class_names: list[str],
                    limit: int | None = None) -> Any:
        from edgeft.data import load_split

        return load_split(data, split, contract, classes=self.parity_classes(class_names), limit=limit)
