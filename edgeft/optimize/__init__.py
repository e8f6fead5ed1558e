"""``edgeft optimize``: one recipe from a pretrained model to a gated, benchmarked edge model, with a report."""

from edgeft.optimize.recipe import Recipe, load, parse

__all__ = ["Recipe", "load", "parse", "optimize"]


def optimize(*args, **kwargs):
    """See :func:`edgeft.optimize.pipeline.optimize`."""
    from edgeft.optimize.pipeline import optimize as _optimize

    return _optimize(*args, **kwargs)
