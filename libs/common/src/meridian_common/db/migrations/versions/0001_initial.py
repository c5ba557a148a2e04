"""Initial schema: candles, fills, positions, equity, trades.

Creates ordinary tables; when the timescaledb extension is available they become hypertables,
otherwise one log line says so and nothing fails (plain PostgreSQL in tests and embedded runs).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy import text

from meridian_common.db.schema import metadata

revision = "0001"
down_revision = None

log = logging.getLogger("meridian.migrations")

# This revision's tables and hypertables; later revisions add theirs (the schema module holds
# the current shape of every table, so naming them here keeps this revision fixed).
TABLES = ("candles", "fills", "positions", "equity", "trades")
HYPERTABLES = (("candles", "open_time"), ("fills", "ts"), ("equity", "ts"))


def upgrade() -> None:
    bind = op.get_bind()
    for name in TABLES:
        metadata.tables[name].create(bind, checkfirst=True)
    available = bind.execute(
        text("select 1 from pg_available_extensions where name = 'timescaledb'")
    ).scalar()
    if not available:
        log.info("timescaledb extension not available: plain tables, no hypertables")
        return
    op.execute("create extension if not exists timescaledb")
    for table, column in HYPERTABLES:
        op.execute(
            f"select create_hypertable('{table}', '{column}', migrate_data => true, "
            "if_not_exists => true)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    for name in reversed(TABLES):
        metadata.tables[name].drop(bind, checkfirst=True)
