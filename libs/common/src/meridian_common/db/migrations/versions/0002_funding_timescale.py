"""Funding history; with TimescaleDB also compression and 4h/1d continuous aggregates of candles.

On plain PostgreSQL only the funding table is created; one log line says what was skipped.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy import text

from meridian_common.db.schema import metadata

revision = "0002"
down_revision = "0001"

log = logging.getLogger("meridian.migrations")

# Continuous aggregates of candles (view name, bucket). Rolled up from the stored timeframe:
# first/last by open time, so an aggregate equals the exchange's own higher-timeframe candle
# whenever no source candle is missing.
AGGREGATES = (("candles_4h", "4 hours"), ("candles_1d", "1 day"))
COMPRESS_AFTER = (("candles", "exchange, symbol, timeframe", "30 days"),
                  ("funding", "exchange, symbol", "90 days"))


def _timescale(bind) -> bool:  # type: ignore[no-untyped-def]
    return bool(bind.execute(text(
        "select 1 from pg_extension where extname = 'timescaledb'")).scalar())


def upgrade() -> None:
    bind = op.get_bind()
    metadata.tables["funding"].create(bind, checkfirst=True)
    if not _timescale(bind):
        log.info("timescaledb not installed: funding is a plain table; no compression, "
                 "no continuous aggregates")
        return
    op.execute("select create_hypertable('funding', 'funding_time', migrate_data => true, "
               "if_not_exists => true)")
    for table, segment_by, after in COMPRESS_AFTER:
        op.execute(f"alter table {table} set (timescaledb.compress, "
                   f"timescaledb.compress_segmentby = '{segment_by}')")
        op.execute(f"select add_compression_policy('{table}', interval '{after}', "
                   "if_not_exists => true)")
    for view, bucket in AGGREGATES:
        op.execute(
            f"create materialized view if not exists {view} with (timescaledb.continuous) as "  # noqa: S608
            f"select exchange, symbol, time_bucket(interval '{bucket}', open_time) as open_time, "
            "first(open, open_time) as open, max(high) as high, min(low) as low, "
            "last(close, open_time) as close, sum(volume) as volume, count(*) as candles "
            "from candles where timeframe = '1h' "
            f"group by exchange, symbol, time_bucket(interval '{bucket}', open_time) "
            "with no data")
        op.execute(f"select add_continuous_aggregate_policy('{view}', "
                   "start_offset => interval '7 days', end_offset => interval '1 hour', "
                   "schedule_interval => interval '1 hour', if_not_exists => true)")


def downgrade() -> None:
    bind = op.get_bind()
    if _timescale(bind):
        for view, _ in AGGREGATES:
            op.execute(f"drop materialized view if exists {view}")
    metadata.tables["funding"].drop(bind, checkfirst=True)
