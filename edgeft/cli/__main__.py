"""``python -m edgeft.cli`` (torchrun launches fine-tuning this way)."""

from edgeft.cli import main

main()
