"""Backfill over REST into the candles and funding tables, resuming from what is stored.

Windows are explicit (`since` .. `since + page * tf`), so an exchange outage inside the range is
an empty window, not the end of the history. Only candles closed at the exchange's clock when
the backfill started are written: the live stream owns everything after. Each candle written
counts in the ingest metrics as published in mode `backfill` (to the table, not the bus).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from meridian_common.marketdata import timeframe_ms
from meridian_ingest import store
from meridian_ingest.exchange.client import ConfigurationError, MarketData
from meridian_ingest.ingest_metrics import IngestMetrics

log = logging.getLogger(__name__)

FUNDING_INTERVAL_MS = 8 * 3_600_000
Progress = Callable[[int, int | None, float], None]


@dataclass(slots=True)
class BackfillResult:
    symbol: str
    candles: int = 0
    funding: int = 0
    first_ms: int | None = None
    last_ms: int | None = None


def log_progress(label: str, every_s: float = 5.0) -> Progress:
    """A progress callback for services: one log line every few seconds."""
    last = [0.0]

    def report(done: int, total: int | None, seconds: float) -> None:
        now = time.monotonic()
        if now - last[0] < every_s and (total is None or done < total):
            return
        last[0] = now
        extra: dict[str, object] = {"what": label, "done": done,
                                    "per_s": round(done / seconds) if seconds > 0 else 0}
        if total:
            extra["total"] = total
            extra["percent"] = round(100 * done / total, 1)
        log.info("backfill progress", extra=extra)

    return report


async def backfill_candles(md: MarketData, conn: psycopg.AsyncConnection, venue: str,
                           symbol: str, timeframe: str, start_ms: int | None,
                           end_ms: int | None, now_ms: int,
                           progress: Progress | None = None,
                           metrics: IngestMetrics | None = None) -> BackfillResult:
    """Fetch [resume point, min(end, last closed)) and upsert it; returns what was written."""
    tf = timeframe_ms(timeframe)
    stored = await store.last_candle_ms(conn, venue, symbol, timeframe)
    since = stored + tf if stored is not None else start_ms
    if since is None:
        raise ConfigurationError(
            f"no {symbol} {timeframe} candles stored yet: set MERIDIAN_INGEST_START (or --from) "
            "for the first backfill")
    if start_ms is not None and since < start_ms:
        since = start_ms
    since = -(-since // tf) * tf  # align up to the timeframe grid
    closed_before = (now_ms // tf) * tf  # open time of the forming candle
    stop = min(end_ms, closed_before) if end_ms is not None else closed_before
    result = BackfillResult(symbol)
    first = since
    total = max((stop - first) // tf, 0)
    started = time.perf_counter()
    while since < stop:
        rows = await md.candles(symbol, timeframe, since)
        window_end = since + md.profile.ohlcv_page * tf
        closed = [r for r in rows if r.open_time_ms < stop]
        await store.upsert_candles(conn, venue, symbol, timeframe, closed)
        if metrics is not None:
            for raw in closed:
                metrics.candle(symbol, "backfill", raw.open_time_ms + tf)
        if closed:
            if result.first_ms is None:
                result.first_ms = closed[0].open_time_ms
            result.last_ms = closed[-1].open_time_ms
            result.candles += len(closed)
        since = window_end
        if progress:
            progress(min((since - first) // tf, total), total, time.perf_counter() - started)
    return result


async def backfill_funding(md: MarketData, conn: psycopg.AsyncConnection, venue: str,
                           symbol: str, start_ms: int | None, end_ms: int | None,
                           now_ms: int) -> int:
    """Funding settlements from the resume point up to min(end, now); returns rows written."""
    stored = await store.last_funding_ms(conn, venue, symbol)
    since = stored + 1 if stored is not None else start_ms
    if since is None:
        raise ConfigurationError(f"no {symbol} funding stored yet: set MERIDIAN_INGEST_START")
    stop = min(end_ms, now_ms + 1) if end_ms is not None else now_ms + 1
    written = 0
    while since < stop:
        rows = [(t, r) for t, r in await md.funding(symbol, since) if t < stop]
        await store.upsert_funding(conn, venue, symbol, rows)
        written += len(rows)
        since = rows[-1][0] + 1 if rows else since + md.profile.funding_page * FUNDING_INTERVAL_MS
    return written


async def backfill(md: MarketData, conn: psycopg.AsyncConnection, venue: str,
                   symbols: tuple[str, ...], timeframe: str, start_ms: int | None,
                   end_ms: int | None, *, funding: bool,
                   progress: Callable[[str], Progress] | None = None,
                   metrics: IngestMetrics | None = None) -> list[BackfillResult]:
    """Backfill every symbol (candles, then funding for perpetuals) up to the exchange's now."""
    now_ms = await md.server_time()
    results = []
    for symbol in symbols:
        result = await backfill_candles(md, conn, venue, symbol, timeframe, start_ms, end_ms,
                                        now_ms, progress(symbol) if progress else None,
                                        metrics)
        if funding:
            result.funding = await backfill_funding(md, conn, venue, symbol, start_ms, end_ms,
                                                    now_ms)
        log.info("backfill done", extra={"symbol": symbol, "candles": result.candles,
                                         "funding": result.funding})
        results.append(result)
    return results
