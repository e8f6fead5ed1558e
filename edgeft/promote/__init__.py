"""Promotion: a retrained model replaces the deployed one only when it is better on the parts that matter
(:mod:`edgeft.promote.rule` says when, :mod:`edgeft.promote.compare` measures, :mod:`edgeft.promote.versions` keeps
the station's model directory, :mod:`edgeft.promote.stage` is ``edgeft promote``)."""

from edgeft.promote.rule import PromoteRule, parse
from edgeft.promote.stage import promote

__all__ = ["PromoteRule", "parse", "promote"]
