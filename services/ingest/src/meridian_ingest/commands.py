"""The ingest jobs, one function each: replay, live, backfill, gaps, repair, load-csv.

`python -m meridian_ingest [command]` and `meridian data <command>` both call these, so the
service and the CLI cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg

from meridian.v1 import candle_pb2
from meridian_common import config, db, metrics, venues
from meridian_common.host import all_topic_configs
from meridian_common.marketdata import (
    CsvFundingSource,
    RawCandle,
    default_data_dir,
    timeframe_ms,
)
from meridian_common.service import open_bus
from meridian_ingest import kafka_source, sources, store
from meridian_ingest.backfill import BackfillResult, Progress, backfill
from meridian_ingest.exchange.client import MarketData
from meridian_ingest.ingest_metrics import IngestMetrics
from meridian_ingest.live import LiveIngest
from meridian_ingest.replay import replay
from meridian_ingest.settings import IngestSettings
from meridian_ingest.sharding import Leases, owned_symbols
from meridian_ingest.sources import Market

log = logging.getLogger("meridian_ingest")


class LeaseLost(RuntimeError):
    """The lock connection died: another replica may own our symbols now, so we must stop."""


def venue(common: config.CommonSettings, settings: IngestSettings) -> str:
    """The exchange name used in keys and tables: spot keeps the ccxt id, others get a suffix
    (bybit-linear), so a spot and a perpetual market with the same id never share a key."""
    return venues.venue(common.exchange, settings.market_type)


def database_url(common: config.CommonSettings, what: str) -> str:
    if common.database_url is None:
        raise config.ConfigError(f"MERIDIAN_DATABASE_URL is required for {what}")
    return common.database_url.get_secret_value()


# -- replay -------------------------------------------------------------------------------------

async def run_replay(common: config.CommonSettings, settings: IngestSettings,
                     progress: Progress | None = None) -> int:
    bus = open_bus(common, "meridian-ingest")
    await bus.ensure_topics(all_topic_configs(common.topic_prefix, common.partitions))
    if settings.source == "kafka":
        if settings.source_prefix is None:
            raise config.ConfigError(
                "MERIDIAN_INGEST_SOURCE_PREFIX is required with MERIDIAN_INGEST_SOURCE=kafka")
        if settings.source_prefix == common.topic_prefix:
            raise config.ConfigError(
                "MERIDIAN_INGEST_SOURCE_PREFIX equals MERIDIAN_TOPIC_PREFIX: a replay must not "
                "write into the topic it reads")
        stream = iter(sources.with_start_watermarks(await kafka_source.read_candles(
            bus, settings.source_prefix, settings.symbols, settings.timeframe,
            settings.start_ms, settings.end_ms)))
    else:
        stream = candle_stream(common, settings)
    sensor = metrics.PrometheusSensor("ingest")
    metrics.serve(common.metrics_port, sensor, stall_s=common.health_stall_s)
    producer = bus.producer()
    try:
        sent = await replay(stream, producer, common.topic_prefix, progress=progress,
                            sensor=sensor, speed=settings.speed,
                            metrics=_metrics(sensor, settings, settings.symbols, "replay"))
    finally:
        await producer.stop()
    log.info("replay done", extra={"candles": sent, "symbols": list(settings.symbols)})
    return sent


def replay_markets(common: config.CommonSettings, settings: IngestSettings) -> list[Market]:
    """The markets a replay publishes: every symbol on the configured venue, then the
    perpetual copies (MERIDIAN_INGEST_REPLAY_PERPETUALS) on the venue's -linear name."""
    name = venue(common, settings)
    perpetual = venues.venue(common.exchange, venues.LINEAR)
    return ([Market(name, s) for s in settings.symbols]
            + [Market(perpetual, s) for s in settings.replay_perpetuals])


def candle_stream(common: config.CommonSettings,
                  settings: IngestSettings) -> Iterator[candle_pb2.Candle | sources.Routed]:
    """The replay of the configured symbols from CSV or the candles table, with the start
    watermarks and, for perpetual markets with MERIDIAN_INGEST_FUNDING, the funding history.

    MERIDIAN_INGEST_REPLAY_PERPETUALS adds, per listed symbol, the venue's perpetual built from
    the same stored spot candles (no perpetual prices are stored: marked at spot, basis 0)."""
    name = venue(common, settings)

    def rows(symbol: str) -> Iterator[RawCandle]:
        if settings.source == "csv":
            return sources.csv_rows(settings.data_dir, symbol, settings.timeframe,
                                    settings.start_ms, settings.end_ms)
        return store.db_rows(database_url(common, "MERIDIAN_INGEST_SOURCE=db"), name, symbol,
                             settings.timeframe, settings.start_ms, settings.end_ms)

    # a perpetual copy reads the spot rows again: both keys carry the same OHLCV
    per_market = {m: rows(m.symbol) for m in replay_markets(common, settings)}
    funding = None
    if settings.funding:
        # from a day before the start, so the first rows know the last settled rate
        since = None if settings.start_ms is None else settings.start_ms - 86_400_000
        funding = {m: _funding_rows(common, settings, m.venue, m.symbol, since)
                   for m in per_market if venues.is_perpetual(m.venue)} or None
    return sources.replay_stream(settings.timeframe, per_market, funding)


def _funding_rows(common: config.CommonSettings, settings: IngestSettings, name: str,
                  symbol: str, since: int | None) -> Iterator[tuple[int, str]]:
    if settings.source == "csv":
        source = CsvFundingSource(settings.data_dir or default_data_dir(), symbol)
        if not source.exists():
            raise config.ConfigError(
                f"MERIDIAN_INGEST_FUNDING: no funding file {source.path} for {symbol} (set "
                "MERIDIAN_INGEST_FUNDING=false to replay candles only)")
        return source.rows(since, settings.end_ms)
    return store.db_funding(database_url(common, "MERIDIAN_INGEST_SOURCE=db"), name, symbol,
                            since, settings.end_ms)


def _metrics(sensor: metrics.PrometheusSensor, settings: IngestSettings,
             symbols: tuple[str, ...], mode: str) -> IngestMetrics:
    """The domain series next to the host's, in the registry /metrics serves."""
    return IngestMetrics(sensor.registry, timeframe=settings.timeframe, symbols=symbols,
                         modes=(mode,))


# -- backfill, gaps, repair ---------------------------------------------------------------------

async def run_backfill(common: config.CommonSettings, settings: IngestSettings,
                       progress: Callable[[str], Progress] | None = None,
                       ingest_metrics: IngestMetrics | None = None) -> list[BackfillResult]:
    url = database_url(common, "backfill")
    db.migrate(url)
    md = MarketData(common.exchange, settings, ingest_metrics)
    try:
        await md.open(settings.symbols, settings.timeframe)
        async with await psycopg.AsyncConnection.connect(store.conninfo(url)) as conn:
            return await backfill(md, conn, venue(common, settings), settings.symbols,
                                  settings.timeframe, settings.start_ms, settings.end_ms,
                                  funding=settings.funding and settings.market_type != "spot",
                                  progress=progress, metrics=ingest_metrics)
    finally:
        await md.close()


def find_gaps(common: config.CommonSettings, settings: IngestSettings,
              ingest_metrics: IngestMetrics | None = None) -> list[store.Gap]:
    """The runs of missing candles in the table, each counted as a gap detected."""
    found = store.gaps(database_url(common, "gaps"), venue(common, settings), settings.symbols,
                       settings.timeframe, timeframe_ms(settings.timeframe), settings.start_ms,
                       settings.end_ms)
    if ingest_metrics is not None:
        for gap in found:
            ingest_metrics.gap_detected(gap.symbol)
    return found


@dataclass(frozen=True, slots=True)
class Repair:
    gap: store.Gap
    recovered: int

    @property
    def still_missing(self) -> int:
        """Candles the exchange does not have either (maintenance windows): not ours to fill."""
        return self.gap.missing - self.recovered


async def run_repair(common: config.CommonSettings, settings: IngestSettings,
                     ingest_metrics: IngestMetrics | None = None) -> list[Repair]:
    """Refetch every gap over REST and upsert what the exchange has (each recovered candle
    counts as a gap candle repaired)."""
    gaps = find_gaps(common, settings, ingest_metrics)
    if not gaps:
        return []
    url = database_url(common, "repair")
    tf = timeframe_ms(settings.timeframe)
    md = MarketData(common.exchange, settings, ingest_metrics)
    out = []
    try:
        await md.open(tuple(sorted({g.symbol for g in gaps})), settings.timeframe)
        async with await psycopg.AsyncConnection.connect(store.conninfo(url)) as conn:
            for gap in gaps:
                found = []
                since = gap.first_missing_ms
                while since < gap.end_ms:
                    rows = await md.candles(gap.symbol, settings.timeframe, since)
                    found += [r for r in rows
                              if gap.first_missing_ms <= r.open_time_ms < gap.end_ms]
                    since += md.profile.ohlcv_page * tf
                await store.upsert_candles(conn, venue(common, settings), gap.symbol,
                                           settings.timeframe, found)
                if ingest_metrics is not None:
                    ingest_metrics.gap_repaired(gap.symbol, len(found))
                out.append(Repair(gap, len(found)))
    finally:
        await md.close()
    return out


# -- live ---------------------------------------------------------------------------------------

async def run_live(common: config.CommonSettings, settings: IngestSettings,
                   stop: asyncio.Event | None = None) -> LiveIngest:
    """Stream this replica's symbols until `stop` (or SIGTERM); returns the finished ingest."""
    url = database_url(common, "live ingest")
    db.migrate(url)
    index = settings.resolved_replica_index()
    owned = owned_symbols(settings.symbols, settings.replicas, index)
    name = venue(common, settings)
    log.info("live ingest", extra={"replica": index, "replicas": settings.replicas,
                                   "symbols": list(owned)})
    stop = stop or _stop_on_signals()
    bus = open_bus(common, f"meridian-ingest-{index}")
    await bus.ensure_topics(all_topic_configs(common.topic_prefix, common.partitions))
    sensor = metrics.PrometheusSensor("ingest")
    metrics.serve(common.metrics_port, sensor, stall_s=common.health_stall_s)
    counts = _metrics(sensor, settings, owned, "live")
    md = MarketData(common.exchange, settings, counts)
    leases = Leases(store.conninfo(url), name, settings.timeframe)
    producer = bus.producer(low_latency=True)
    try:
        await md.open(owned, settings.timeframe)
        waiter = asyncio.create_task(leases.acquire_all(owned))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not waiter.done():
            waiter.cancel()
            raise asyncio.CancelledError
        async with await psycopg.AsyncConnection.connect(store.conninfo(url)) as conn:
            live = LiveIngest(md, bus, producer, conn, venue=name, prefix=common.topic_prefix,
                              timeframe=settings.timeframe, start_ms=settings.start_ms,
                              stale_after_s=settings.stale_after_s, poll_s=settings.poll_s,
                              grace_s=settings.grace_s,
                              funding=settings.funding and settings.market_type != "spot",
                              sensor=sensor, metrics=counts)
            guard = asyncio.create_task(_guard_leases(leases, stop))
            try:
                await live.run(owned, stop)
            finally:
                guard.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await guard
            if guard.done() and not guard.cancelled() and guard.exception() is not None:
                raise guard.exception()  # type: ignore[misc]
            return live
    finally:
        await producer.stop()
        await leases.close()
        await md.close()


async def _guard_leases(leases: Leases, stop: asyncio.Event, every_s: float = 1.0) -> None:
    while not stop.is_set():
        await asyncio.sleep(every_s)
        if not await leases.alive():
            stop.set()
            raise LeaseLost("lost the symbol locks' database connection: stopping so that no "
                            "two replicas publish the same symbol")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def load_csv(common: config.CommonSettings, settings: IngestSettings) -> int:
    url = database_url(common, "load-csv")
    db.migrate(url)
    return store.load_csv(url, venue(common, settings), settings.symbols, settings.timeframe,
                          settings.data_dir, settings.start_ms, settings.end_ms)
