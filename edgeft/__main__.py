"""``python -m edgeft``: the same command line as ``edgeft``."""

from edgeft.cli import main

main()
