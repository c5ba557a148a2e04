"""The candles and funding tables: idempotent upserts, resume points, ranges and gaps.

Upserts decide the revision in SQL: a row whose values change gets revision + 1, a row written
again with the same values keeps its revision. So any writer (backfill, live, repair, CSV load)
can write any candle any number of times and the table stays the exchange's latest truth.
Bulk CSV loading and range reads are synchronous psycopg (COPY is the fast path); the live and
backfill paths use psycopg's async connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from meridian_common.db import conninfo
from meridian_common.marketdata import RawCandle
from meridian_ingest.sources import csv_rows

_FAR_FUTURE_MS = 32503680000000


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


_CANDLE_UPSERT = (
    "insert into candles (exchange, symbol, timeframe, open_time, open, high, low, close, "
    "volume, revision) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0) "
    "on conflict (exchange, symbol, timeframe, open_time) do update set "
    "open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close, "
    "volume = excluded.volume, revision = candles.revision + 1 "
    "where (candles.open, candles.high, candles.low, candles.close, candles.volume) "
    "is distinct from (excluded.open, excluded.high, excluded.low, excluded.close, "
    "excluded.volume)"
)

_FUNDING_UPSERT = (
    "insert into funding (exchange, symbol, funding_time, rate, revision) "
    "values (%s, %s, %s, %s, 0) on conflict (exchange, symbol, funding_time) do update set "
    "rate = excluded.rate, revision = funding.revision + 1 "
    "where funding.rate is distinct from excluded.rate"
)


async def upsert_candles(conn: psycopg.AsyncConnection, exchange: str, symbol: str,
                         timeframe: str, rows: Sequence[RawCandle]) -> None:
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(_CANDLE_UPSERT, [
            (exchange, symbol, timeframe, _ts(r.open_time_ms), r.open, r.high, r.low, r.close,
             r.volume) for r in rows])
    await conn.commit()


async def upsert_candle(conn: psycopg.AsyncConnection, exchange: str, symbol: str,
                        timeframe: str, raw: RawCandle) -> int | None:
    """Upsert one candle and commit; its revision if inserted or changed, None if unchanged."""
    async with conn.cursor() as cur:
        await cur.execute(_CANDLE_UPSERT + " returning revision", (
            exchange, symbol, timeframe, _ts(raw.open_time_ms), raw.open, raw.high, raw.low,
            raw.close, raw.volume))
        row = await cur.fetchone()
    await conn.commit()
    return None if row is None else int(row[0])


async def upsert_funding(conn: psycopg.AsyncConnection, exchange: str, symbol: str,
                         rows: Sequence[tuple[int, str]]) -> None:
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(_FUNDING_UPSERT,
                              [(exchange, symbol, _ts(t), rate) for t, rate in rows])
    await conn.commit()


async def last_candle_ms(conn: psycopg.AsyncConnection, exchange: str, symbol: str,
                         timeframe: str) -> int | None:
    async with conn.cursor() as cur:
        await cur.execute(
            "select (extract(epoch from max(open_time)) * 1000)::bigint from candles "
            "where exchange = %s and symbol = %s and timeframe = %s",
            (exchange, symbol, timeframe))
        row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def last_funding_ms(conn: psycopg.AsyncConnection, exchange: str,
                          symbol: str) -> int | None:
    async with conn.cursor() as cur:
        await cur.execute(
            "select (extract(epoch from max(funding_time)) * 1000)::bigint from funding "
            "where exchange = %s and symbol = %s", (exchange, symbol))
        row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def candle_values(conn: psycopg.AsyncConnection, exchange: str, symbol: str,
                        timeframe: str, open_ms: int) -> tuple[RawCandle, int] | None:
    """One stored candle and its revision (for checking a correction against the table)."""
    async with conn.cursor() as cur:
        await cur.execute(
            "select open::text, high::text, low::text, close::text, volume::text, revision "
            "from candles where exchange = %s and symbol = %s and timeframe = %s "
            "and open_time = %s", (exchange, symbol, timeframe, _ts(open_ms)))
        row = await cur.fetchone()
    if row is None:
        return None
    return RawCandle(open_ms, *row[:5]), int(row[5])


@dataclass(frozen=True, slots=True)
class Gap:
    """Candles missing between two stored ones: `after` is the last open time present."""

    symbol: str
    after_ms: int
    missing: int
    tf_ms: int

    @property
    def first_missing_ms(self) -> int:
        return self.after_ms + self.tf_ms

    @property
    def end_ms(self) -> int:
        """Open time of the next stored candle."""
        return self.after_ms + (self.missing + 1) * self.tf_ms


def gaps(url: str, exchange: str, symbols: Iterable[str], timeframe: str, tf_ms: int,
         start_ms: int | None = None, end_ms: int | None = None) -> list[Gap]:
    """Every run of missing candles between the first and last stored candle of each symbol."""
    out: list[Gap] = []
    with psycopg.connect(conninfo(url)) as conn, conn.cursor() as cur:
        for symbol in symbols:
            cur.execute(
                "select ms, next_ms from (select (extract(epoch from open_time) * 1000)::bigint "
                "as ms, (extract(epoch from lead(open_time) over (order by open_time)) * 1000)"
                "::bigint as next_ms from candles where exchange = %s and symbol = %s and "
                "timeframe = %s and open_time >= %s and open_time < %s) t "
                "where next_ms - ms > %s order by ms",
                (exchange, symbol, timeframe, _ts(start_ms or 0),
                 _ts(end_ms or _FAR_FUTURE_MS), tf_ms))
            out.extend(Gap(symbol, int(ms), (int(nxt) - int(ms)) // tf_ms - 1, tf_ms)
                       for ms, nxt in cur.fetchall())
    return out


def load_csv(url: str, exchange: str, symbols: tuple[str, ...], timeframe: str,
             data_dir: Path | None, start_ms: int | None = None,
             end_ms: int | None = None) -> int:
    """Upsert the CSV candles into the candles table; returns the rows read."""
    total = 0
    with psycopg.connect(conninfo(url)) as conn, conn.cursor() as cur:
        cur.execute("create temp table candles_in (like candles including defaults) "
                    "on commit drop")
        with cur.copy("copy candles_in (exchange, symbol, timeframe, open_time, open, high, low, "
                      "close, volume) from stdin") as copy:
            for symbol in symbols:
                for raw in csv_rows(data_dir, symbol, timeframe, start_ms, end_ms):
                    copy.write_row((exchange, symbol, timeframe, _ts(raw.open_time_ms),
                                    raw.open, raw.high, raw.low, raw.close, raw.volume))
                    total += 1
        cur.execute(_CANDLE_UPSERT.replace(
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0)",
            "select exchange, symbol, timeframe, open_time, open, high, low, close, volume, 0 "
            "from candles_in"))
    return total


def db_rows(url: str, exchange: str, symbol: str, timeframe: str, start_ms: int | None,
            end_ms: int | None) -> Iterator[RawCandle]:
    """Stored candles of a range, ascending, as the exchange's decimal strings."""
    with psycopg.connect(conninfo(url)) as conn, conn.cursor(name="candle_range") as cur:
        cur.itersize = 5000
        cur.execute(
            "select (extract(epoch from open_time) * 1000)::bigint, open::text, high::text, "
            "low::text, close::text, volume::text from candles where exchange = %s and "
            "symbol = %s and timeframe = %s and open_time >= %s and open_time < %s "
            "order by open_time",
            (exchange, symbol, timeframe, _ts(start_ms or 0), _ts(end_ms or _FAR_FUTURE_MS)))
        for row in cur:
            yield RawCandle(*row)


def db_funding(url: str, exchange: str, symbol: str, start_ms: int | None,
               end_ms: int | None) -> Iterator[tuple[int, str]]:
    """Stored funding settlements of a range, ascending: (settlement ms, rate as stored)."""
    with psycopg.connect(conninfo(url)) as conn, conn.cursor(name="funding_range") as cur:
        cur.itersize = 5000
        cur.execute(
            "select (extract(epoch from funding_time) * 1000)::bigint, rate::text from funding "
            "where exchange = %s and symbol = %s and funding_time >= %s and funding_time <= %s "
            "order by funding_time",
            (exchange, symbol, _ts(start_ms or 0), _ts(end_ms or _FAR_FUTURE_MS)))
        yield from cur
