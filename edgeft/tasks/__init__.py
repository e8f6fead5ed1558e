"""Tasks, found by name: ``edgeft/tasks/<name>`` holds what is specific to one task (classify, anomaly), each piece on
its floor (an anomaly model's graph and heatmap on the runtime floor, its fit and pruning beside the stages, its
gallery beside the report), and one :class:`~edgeft.tasks.registry.Task` object that the stages, the pipeline, the
predictor and the report ask. :mod:`edgeft.tasks.registry` is where a task is registered and looked up."""

from edgeft.tasks.registry import Task, get, names, of, register, stage_owner, unregister  # noqa: F401
