"""Training curves in the field's tracker: MLflow (``pip install 'edgeft[track]'``, its logging client
mlflow-skinny; docs/experiments.md says why MLflow and not TensorBoard).

Off unless asked: ``edgeft --track URI`` (or ``$EDGEFT_TRACK``, or a recipe's ``track:``), where URI is a SQLite file
(``mlflow.db``: a local store, nothing to start) or a tracking server (``http://mlflow.plant:5000``: a team's). Every
run of the one epoch loop (fine-tuning, pruning recovery, QAT, a detector's training) is then an MLflow run named
after its output folder, in the experiment ``$EDGEFT_TRACK_EXPERIMENT`` (a recipe's name; ``edgeft`` otherwise):
its settings as parameters, each epoch's record (loss, val accuracy and AUROC, learning rate, seconds) as metrics at
that step, and the final metrics when training ends; an anomaly model's fit (no epochs) logs its settings and numbers. The artifact's meta.json keeps the same history either way.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from edgeft.errors import ConfigError, DependencyError

ENV, ENV_EXPERIMENT = "EDGEFT_TRACK", "EDGEFT_TRACK_EXPERIMENT"
DEFAULT_EXPERIMENT = "edgeft"


def tracking_uri(value: str | None = None) -> str | None:
    """The MLflow tracking URI of ``value`` or ``$EDGEFT_TRACK`` (a file path becomes ``sqlite:///ABS``); None: off."""
    v = value if value is not None else os.environ.get(ENV)
    if not v:
        return None
    if "://" in v:
        return v
    p = Path(v).expanduser().resolve()
    if p.is_dir():
        raise ConfigError(f"--track {v} is a folder; name the tracker's store file (mlflow.db) or a server URL")
    return f"sqlite:///{p}"


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise DependencyError("--track logs to MLflow, which is not installed here: pip install 'edgeft[track]'") \
            from None
    return mlflow


def _scalars(d: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a (nested) record, keys joined with '.' (MLflow metrics are flat floats)."""
    return {k.replace("@", "_at_"): float(v) for k, v in _flatten(d).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Run:
    """An MLflow run of one training (a no-op when tracking is off)."""

    def __init__(self, name: str, params: dict[str, Any], uri: str | None = None, off: bool = False) -> None:
        self.uri = None if off else tracking_uri(uri)  # off: a process that does not log (a DDP worker)
        self.run_id: str | None = None
        if self.uri is None:
            return
        mlflow = _mlflow()
        self._entities = mlflow.entities
        self._client = client = mlflow.tracking.MlflowClient(tracking_uri=self.uri)
        experiment = os.environ.get(ENV_EXPERIMENT) or DEFAULT_EXPERIMENT
        try:
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
            run = client.create_run(exp_id, run_name=name, tags={"edgeft.output": name})
        except Exception as e:  # noqa: BLE001: MLflow raises its own and the driver's errors
            raise ConfigError(f"the tracker at {_shown(self.uri)} cannot be written: {str(e).splitlines()[0][:200]}") \
                from None
        self.run_id = run.info.run_id
        flat = {k: (str(v)[:500]) for k, v in _flatten(params).items()}
        for i in range(0, len(flat), 100):  # MLflow takes at most 100 parameters a call
            items = list(flat.items())[i:i + 100]
            client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v) for k, v in items])

    def log(self, step: int, record: dict[str, Any]) -> None:
        """One epoch's record as metrics at ``step``."""
        if self.run_id is None:
            return
        import time

        now = int(time.time() * 1000)
        metrics = [self._entities.Metric(k, v, now, step) for k, v in _scalars(record).items() if k != "epoch"]
        self._client.log_batch(self.run_id, metrics=metrics)

    def final(self, metrics: dict[str, Any]) -> None:
        """Metrics measured after training (``final.``-prefixed: val and test of the best epoch's weights)."""
        if self.run_id is None:
            return
        import time

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[self._entities.Metric(f"final.{k}", v, now, 0)
                                                     for k, v in _scalars(metrics).items()])

    def finish(self, status: str = "FINISHED") -> None:
        """The run closed (FAILED when training stopped on an error); :meth:`final` may still add to it."""
        if self.run_id is not None:
            self._client.set_terminated(self.run_id, status=status)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _shown(uri: str) -> str:
    from edgeft.redact import redact_text

    return redact_text(uri)
