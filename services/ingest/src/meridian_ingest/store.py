"""The candles table: load the shared CSV files into it (idempotent upsert) and read ranges back.

Synchronous psycopg: these are bulk jobs where COPY is the fast path and async buys nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from meridian_common.db import sync_url
from meridian_common.marketdata import RawCandle
from meridian_ingest.sources import csv_rows


def _conninfo(url: str) -> str:
    return sync_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


def load_csv(url: str, exchange: str, symbols: tuple[str, ...], timeframe: str,
             data_dir: Path | None, start_ms: int | None = None,
             end_ms: int | None = None) -> int:
    """Upsert the CSV candles into the candles table; returns the rows written."""
    total = 0
    with psycopg.connect(_conninfo(url)) as conn, conn.cursor() as cur:
        cur.execute("create temp table candles_in (like candles including defaults) "
                    "on commit drop")
        with cur.copy("copy candles_in (exchange, symbol, timeframe, open_time, open, high, low, "
                      "close, volume) from stdin") as copy:
            for symbol in symbols:
                for raw in csv_rows(data_dir, symbol, timeframe, start_ms, end_ms):
                    copy.write_row((exchange, symbol, timeframe,
                                    datetime.fromtimestamp(raw.open_time_ms / 1000, tz=UTC),
                                    raw.open, raw.high, raw.low, raw.close, raw.volume))
                    total += 1
        cur.execute(
            "insert into candles select * from candles_in on conflict "
            "(exchange, symbol, timeframe, open_time) do update set open = excluded.open, "
            "high = excluded.high, low = excluded.low, close = excluded.close, "
            "volume = excluded.volume, revision = excluded.revision"
        )
    return total


def db_rows(url: str, exchange: str, symbol: str, timeframe: str, start_ms: int | None,
            end_ms: int | None) -> Iterator[RawCandle]:
    """Stored candles of a range, ascending, as the exchange's decimal strings."""
    lo = datetime.fromtimestamp((start_ms or 0) / 1000, tz=UTC)
    hi = datetime.fromtimestamp((end_ms or 32503680000000) / 1000, tz=UTC)
    with psycopg.connect(_conninfo(url)) as conn, conn.cursor(name="candle_range") as cur:
        cur.itersize = 5000
        cur.execute(
            "select (extract(epoch from open_time) * 1000)::bigint, open::text, high::text, "
            "low::text, close::text, volume::text from candles where exchange = %s and "
            "symbol = %s and timeframe = %s and open_time >= %s and open_time < %s "
            "order by open_time", (exchange, symbol, timeframe, lo, hi))
        for row in cur:
            yield RawCandle(*row)
