"""Metrics (ground floor): the typed records stages write and readers read (:mod:`edgeft.metrics.records` for a
split's numbers, :mod:`edgeft.metrics.stages` for what each stage did), and the scores computed from predictions
(:mod:`edgeft.metrics.scores`, numpy only). All are re-exported here, so ``from edgeft.metrics import Classification,
auroc`` reads as one vocabulary."""

from edgeft.metrics.records import *  # noqa: F401,F403
from edgeft.metrics.records import METRICS_SCHEMA, MetricsError, _from_dict, _Record  # noqa: F401
from edgeft.metrics.scores import *  # noqa: F401,F403
from edgeft.metrics.stages import *  # noqa: F401,F403
