"""Ingest domain metrics against the fake exchange, real PostgreSQL and real Kafka: backfill
counts the candles it writes and the exchange errors it retried, repair counts the gaps it found
and the candles it recovered, and a live ingest that resumes after downtime counts that gap.
(The features and signals series are proven on real data by their services' unit tests.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from meridian_common import config, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_fake_exchange import FakeClock, FakeExchange
from meridian_ingest import commands
from meridian_ingest.exchange.client import ExchangeCallError
from meridian_ingest.ingest_metrics import IngestMetrics
from meridian_ingest.settings import IngestSettings, parse_time_ms

pytestmark = pytest.mark.integration

HOUR = 3_600_000


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
async def spot() -> AsyncIterator[FakeExchange]:
    clock = FakeClock(parse_time_ms("2021-05-01T00:30:00Z"), paused=True)
    server = FakeExchange(symbols=("BTCUSDT",), timeframes=("1h",), clock=clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_backfill_and_repair_count_candles_errors_gaps_and_repairs(
        spot: FakeExchange, new_database) -> None:
    """Binance spot BTC, 2021-03: the source misses 2021-03-06 02:00 (maintenance); deleting
    three more candles and one more from the table makes three gaps, two of them repairable."""
    url = new_database("metrics_gaps")
    common = config.load(config.CommonSettings, environ={}, exchange="binance", database_url=url)
    settings = config.load(IngestSettings, environ={}, api_base_url=spot.base_url,
                           ccxt_rate_limit=False, market_type="spot", funding=False,
                           symbols="BTCUSDT", start="2021-03-01", end="2021-04-01",
                           backoff_s=0.02, backoff_max_s=0.1)
    metrics = IngestMetrics(timeframe="1h", symbols=("BTCUSDT",), modes=("backfill",))
    spot.rate_limit(3)
    spot.server_error(2)
    await commands.run_backfill(common, settings, ingest_metrics=metrics)
    source = list(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(
        parse_time_ms("2021-03-01"), parse_time_ms("2021-04-01")))
    registry = metrics.registry
    assert len(source) == 31 * 24 - 1
    assert sample(registry, "meridian_ingest_candles_total", symbol="BTCUSDT",
                  mode="backfill") == len(source)
    assert sample(registry, "meridian_ingest_last_candle_seconds", symbol="BTCUSDT",
                  mode="backfill") == (source[-1].open_time_ms + HOUR) / 1000
    assert sample(registry, "meridian_ingest_exchange_errors_total", kind="retryable") == 5
    assert sample(registry, "meridian_ingest_exchange_errors_total", kind="fatal") == 0

    cut_a, cut_b = parse_time_ms("2021-03-10T05:00:00Z"), parse_time_ms("2021-03-20T00:00:00Z")
    with psycopg.connect(url) as conn:
        conn.execute("delete from candles where open_time >= to_timestamp(%s / 1000.0) and "
                     "open_time < to_timestamp(%s / 1000.0)", (cut_a, cut_a + 3 * HOUR))
        conn.execute("delete from candles where open_time = to_timestamp(%s / 1000.0)", (cut_b,))
    repaired = await commands.run_repair(common, settings, metrics)
    assert [(r.recovered, r.still_missing) for r in repaired] == [(0, 1), (3, 0), (1, 0)]
    assert sample(registry, "meridian_ingest_gaps_detected_total", symbol="BTCUSDT") == 3
    assert sample(registry, "meridian_ingest_gaps_repaired_total", symbol="BTCUSDT") == 4


async def test_a_bad_request_is_one_fatal_exchange_error(spot: FakeExchange,
                                                         new_database) -> None:
    url = new_database("metrics_fatal")
    common = config.load(config.CommonSettings, environ={}, exchange="binance", database_url=url)
    settings = config.load(IngestSettings, environ={}, api_base_url=spot.base_url,
                           ccxt_rate_limit=False, market_type="spot", funding=False,
                           symbols="BTCUSDT", start="2021-03-01", timeframe="4h")
    metrics = IngestMetrics()
    with pytest.raises(ExchangeCallError):
        await commands.run_backfill(common, settings, ingest_metrics=metrics)
    assert sample(metrics.registry, "meridian_ingest_exchange_errors_total", kind="fatal") == 1
    assert sample(metrics.registry, "meridian_ingest_exchange_errors_total",
                  kind="retryable") == 0


async def _published(bus: KafkaBus, topic: str, n: int, task: asyncio.Task[object]) -> None:
    """Until the topic holds n records (the resume's catch-up is done by then)."""
    for _ in range(600):
        assert not task.done(), task.result()
        with contextlib.suppress(KeyError):  # the topic is created by the ingest
            if sum(await bus.topic_ends(topic)) >= n:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic} did not reach {n} records")


async def test_live_resume_after_downtime_counts_the_gap_and_its_candles(
        kafka_bootstrap: str, new_database, topic_prefix: str) -> None:
    """Live ingest publishes a day of candles and stops; ten exchange hours later a new run
    resumes from the topic: one gap, ten candles repaired, ten live candles published."""
    start = parse_time_ms("2022-03-01")
    clock = FakeClock(start + 24 * HOUR + HOUR // 2, speed=0.0, paused=True)
    server = FakeExchange(symbols=("BTCUSDT",), timeframes=("1h",), clock=clock)
    await server.start()
    url = new_database("metrics_live")
    bus = KafkaBus(kafka_bootstrap)
    common = config.load(config.CommonSettings, environ={}, exchange="bybit", database_url=url,
                         kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix,
                         partitions=3)
    settings = config.load(IngestSettings, environ={}, market_type="linear",
                           api_base_url=server.base_url, ccxt_rate_limit=False, timeframe="1h",
                           backoff_s=0.02, backoff_max_s=0.3, stale_after_s=1.5, poll_s=0.2,
                           grace_s=0.05, mode="live", symbols="BTCUSDT", start="2022-03-01",
                           funding=False)
    try:
        runs = []
        for on_topic in (24, 34):
            stop = asyncio.Event()
            task = asyncio.create_task(commands.run_live(common, settings, stop))
            await _published(bus, topic_prefix + topics.CANDLE, on_topic, task)
            stop.set()
            runs.append((await task).metrics.registry)
            clock.advance(10 * HOUR)
    finally:
        await server.stop()
    first, second = runs
    count = {"symbol": "BTCUSDT", "mode": "live"}
    assert sample(first, "meridian_ingest_candles_total", **count) == 24
    assert sample(first, "meridian_ingest_gaps_detected_total", symbol="BTCUSDT") == 0  # fresh
    assert sample(second, "meridian_ingest_candles_total", **count) == 10
    assert sample(second, "meridian_ingest_gaps_detected_total", symbol="BTCUSDT") == 1
    assert sample(second, "meridian_ingest_gaps_repaired_total", symbol="BTCUSDT") == 10
    assert sample(second, "meridian_ingest_last_candle_seconds", **count) == \
        (start + 34 * HOUR) / 1000
    assert sample(second, "meridian_ingest_timeframe_seconds") == 3600
