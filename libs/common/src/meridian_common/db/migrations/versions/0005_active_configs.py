"""Active configs: each strategy's promoted configuration (parameters and the limits the risk
gate applies to it: leverage, margin mode, max position), with the study and trial it came from.

A plain table on every deployment (a few rows per promotion). A partial unique index allows at
most one promoted version per strategy, so two racing promotions cannot both go live.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

from meridian_common.db.schema import metadata

revision = "0005"
down_revision = "0004"

TABLES = ("active_configs",)


def upgrade() -> None:
    bind = op.get_bind()
    for name in TABLES:
        metadata.tables[name].create(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    for name in reversed(TABLES):
        metadata.tables[name].drop(bind, checkfirst=True)
