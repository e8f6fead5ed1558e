"""Structured channel pruning with recovery fine-tuning (on torch-pruning's dependency graph)."""

from edgeft.prune.config import PruneConfig

__all__ = ["PruneConfig", "prune"]


def prune(*args, **kwargs):
    """See :func:`edgeft.prune.pruner.prune` (imported lazily: it needs torch and torch-pruning)."""
    from edgeft.prune.pruner import prune as _prune

    return _prune(*args, **kwargs)
