"""Anomaly detection from good parts only (``edgeft anomaly``): fit a patch-feature model of the good images of a
folder, choose its decision threshold on val, and write an artifact whose graph returns a score and a heatmap.

The graph itself (what the camera runs) is ``edgeft.runtime.anomaly_graph``; its heatmap overlays are
``edgeft.runtime.heatmap``."""

from edgeft.anomaly.config import AnomalyConfig
from edgeft.anomaly.fit import fit

__all__ = ["AnomalyConfig", "fit"]
