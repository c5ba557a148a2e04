"""Risk decisions: the audit trail of every approval and rejection, with each rule's verdict.

A time series (one row per signal the gate decided on), so with TimescaleDB it is a hypertable on
its event time; on plain PostgreSQL an ordinary table, and one log line says so.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy import text

from meridian_common.db.schema import metadata

revision = "0004"
down_revision = "0003"

log = logging.getLogger("meridian.migrations")

TABLES = ("risk_decisions",)
HYPERTABLES = (("risk_decisions", "ts"),)


def _timescale(bind) -> bool:  # type: ignore[no-untyped-def]
    return bool(bind.execute(text(
        "select 1 from pg_extension where extname = 'timescaledb'")).scalar())


def upgrade() -> None:
    bind = op.get_bind()
    for name in TABLES:
        metadata.tables[name].create(bind, checkfirst=True)
    if not _timescale(bind):
        log.info("timescaledb not installed: risk_decisions is a plain table")
        return
    for table, column in HYPERTABLES:
        op.execute(
            f"select create_hypertable('{table}', '{column}', migrate_data => true, "
            "if_not_exists => true)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    for name in reversed(TABLES):
        metadata.tables[name].drop(bind, checkfirst=True)
