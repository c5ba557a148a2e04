"""Model registry index: one row per registered model version, with its promotion time.

A plain table on every deployment (not time series, a few rows per training run). A partial
unique index allows at most one promoted version per model name, so two racing promotions
cannot both go live.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from meridian_common.db.schema import metadata

revision = "0003"
down_revision = "0002"

TABLES = ("models",)


def upgrade() -> None:
    bind = op.get_bind()
    for name in TABLES:
        metadata.tables[name].create(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    for name in reversed(TABLES):
        metadata.tables[name].drop(bind, checkfirst=True)
