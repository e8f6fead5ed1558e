"""The ``edgeft`` command line: a thin shell over the stage functions, one module per kind of command
(:mod:`~edgeft.cli.make` models, :mod:`~edgeft.cli.ship` them toward the camera, :mod:`~edgeft.cli.measure` speed,
:mod:`~edgeft.cli.run` the camera and recipes). Summaries are formatted by the records and stages that own the
numbers."""

from __future__ import annotations

import sys

from edgeft.cli import make, measure, run, ship  # noqa: F401 (each registers its commands)
from edgeft.cli.base import cli, parse_overrides  # noqa: F401


def main() -> None:
    cli(prog_name="edgeft")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
