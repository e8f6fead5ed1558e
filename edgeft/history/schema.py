"""The results store's table as SQLAlchemy Core sees it (migrations/versions/ makes it; they must agree, a test
checks it)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

results = sa.Table(
    "results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("recorded_at", sa.Float, nullable=False),  # unix time the number was measured (or recorded)
    sa.Column("kind", sa.String(16), nullable=False),  # bench | gate | eval | optimize
    sa.Column("model", sa.String(200), nullable=False),  # the series' name for the model (its artifact's, or --name)
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("device", sa.String(16), nullable=False),  # the device fingerprint's key (history.records.device_key)
    sa.Column("device_desc", sa.Text, nullable=False),  # the fingerprint, JSON
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("versions", sa.Text, nullable=False),  # runtime and library versions, JSON
    sa.Column("metric", sa.String(64), nullable=False),  # p50_ms, p99_ms, accuracy, auroc, ...
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("extra", sa.Text, nullable=False),  # JSON
    sa.Index("results_series", "device", "model", "backend", "batch", "metric", "recorded_at"),
)
