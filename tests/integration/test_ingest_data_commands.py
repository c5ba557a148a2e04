"""`meridian data gaps|repair`, the ingest command line, and replay from a Kafka topic range."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal

import psycopg
import pytest

from meridian.v1 import candle_pb2
from meridian_common import codec, config, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_fake_exchange import FakeClock, FakeExchange
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings, parse_time_ms

pytestmark = pytest.mark.integration

HOUR = 3_600_000


@pytest.fixture
async def spot() -> AsyncIterator[FakeExchange]:
    clock = FakeClock(parse_time_ms("2021-05-01T00:30:00Z"), paused=True)
    server = FakeExchange(symbols=("BTCUSDT", "ETHUSDT"), timeframes=("1h",), clock=clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _settings(server: FakeExchange, **over: object) -> IngestSettings:
    return config.load(IngestSettings, environ={}, api_base_url=server.base_url,
                       ccxt_rate_limit=False, market_type="spot", funding=False, **over)


def _common(url: str, exchange: str = "binance", **over: object) -> config.CommonSettings:
    return config.load(config.CommonSettings, environ={}, exchange=exchange, database_url=url,
                       **over)


def _opens(url: str, venue: str, symbol: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [int(r[0]) for r in conn.execute(
            "select (extract(epoch from open_time) * 1000)::bigint from candles where "
            "exchange = %s and symbol = %s order by open_time", (venue, symbol)).fetchall()]


async def test_gaps_lists_missing_runs_and_repair_refetches_what_the_exchange_has(
        spot: FakeExchange, new_database) -> None:
    """Binance spot, 2021-03..04: the source itself misses 2021-03-06 02:00, 2021-04-20
    02:00-03:00 and 2021-04-25 05:00-07:00 (exchange maintenance). Deleting two more runs from
    the table gives five gaps; repair recovers the deleted ones and reports the exchange's own
    as missing."""
    url = new_database("gaps")
    common = _common(url)
    settings = _settings(spot, symbols="BTCUSDT", start="2021-03-01", end="2021-05-01")
    await commands.run_backfill(common, settings)
    source = [r.open_time_ms for r in CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(
        parse_time_ms("2021-03-01"), parse_time_ms("2021-05-01"))]
    assert _opens(url, "binance", "BTCUSDT") == source
    cut_a = parse_time_ms("2021-03-10T05:00:00Z")
    cut_b = parse_time_ms("2021-04-02T00:00:00Z")
    with psycopg.connect(url) as conn:
        conn.execute("delete from candles where open_time >= to_timestamp(%s / 1000.0) and "
                     "open_time < to_timestamp(%s / 1000.0)", (cut_a, cut_a + 3 * HOUR))
        conn.execute("delete from candles where open_time = to_timestamp(%s / 1000.0)", (cut_b,))
    found = commands.find_gaps(common, settings)
    assert [(g.first_missing_ms, g.missing) for g in found] == [
        (parse_time_ms("2021-03-06T02:00:00Z"), 1), (cut_a, 3), (cut_b, 1),
        (parse_time_ms("2021-04-20T02:00:00Z"), 2), (parse_time_ms("2021-04-25T05:00:00Z"), 3)]
    repaired = await commands.run_repair(common, settings)
    assert [(r.recovered, r.still_missing) for r in repaired] == [
        (0, 1), (3, 0), (1, 0), (0, 2), (0, 3)]
    assert _opens(url, "binance", "BTCUSDT") == source
    assert [g.missing for g in commands.find_gaps(common, settings)] == [1, 2, 3]


def _ingest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meridian_ingest", *args], capture_output=True, text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, timeout=120, check=False)


async def test_bad_symbol_stops_the_command_with_one_line_naming_it(
        spot: FakeExchange, new_database) -> None:
    url = new_database("cli")
    env = {"MERIDIAN_EXCHANGE": "binance", "MERIDIAN_DATABASE_URL": url,
           "MERIDIAN_INGEST_API_BASE_URL": spot.base_url, "MERIDIAN_INGEST_SYMBOLS": "NOPEUSDT",
           "MERIDIAN_INGEST_START": "2021-04-01", "MERIDIAN_INGEST_FUNDING": "false"}
    proc = await asyncio.to_thread(_ingest, env, "backfill")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("meridian-ingest:")]
    assert lines == ["meridian-ingest: symbol 'NOPEUSDT' is not a spot market on binance "
                     "(MERIDIAN_INGEST_SYMBOLS takes exchange ids such as BTCUSDT)"]
    assert "Traceback" not in proc.stderr
    assert "postgres@" not in proc.stderr  # the database URL never reaches the output


async def test_replay_from_a_kafka_topic_range_into_another_prefix(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    source_prefix, target_prefix = topic_prefix + "src.", topic_prefix + "dst."
    base = dict(symbols="BTCUSDT,ETHUSDT", start="2021-01-01", end="2021-02-01")
    to_source = config.load(IngestSettings, environ={}, source="csv", **base)
    common_src = config.load(config.CommonSettings, environ={}, kafka_bootstrap=kafka_bootstrap,
                             topic_prefix=source_prefix)
    assert await commands.run_replay(common_src, to_source) > 1400
    window = dict(base, start="2021-01-10", end="2021-01-20")
    from_kafka = config.load(IngestSettings, environ={}, source="kafka",
                             source_prefix=source_prefix, **window)
    common_dst = config.load(config.CommonSettings, environ={}, kafka_bootstrap=kafka_bootstrap,
                             topic_prefix=target_prefix)
    sent = await commands.run_replay(common_dst, from_kafka)
    from_csv = config.load(IngestSettings, environ={}, source="csv", **window)
    expected = [codec.encode(c)[0] for c in commands.candle_stream(common_dst, from_csv)
                if isinstance(c, candle_pb2.Candle)]
    assert sent == len(expected) == 2 * 10 * 24  # no source gap in that window
    bus = KafkaBus(kafka_bootstrap)
    got: list[candle_pb2.Candle] = []
    for partition, end in enumerate(await bus.topic_ends(target_prefix + topics.CANDLE)):
        for record in await bus.read_partition(target_prefix + topics.CANDLE, partition, 0, end):
            got.append(codec.decode(topics.CANDLE, record.value,
                                    record.header(codec.TYPE_HEADER)))  # type: ignore[arg-type]
    starts = [m for m in got if not isinstance(m, candle_pb2.Candle)]
    assert sorted(m.key for m in starts) == [f"binance:{s}" for s in sorted(from_csv.symbols)]  # type: ignore[attr-defined]
    got = [m for m in got if isinstance(m, candle_pb2.Candle)]
    got.sort(key=lambda c: (c.open_time_ms, c.symbol))
    assert [codec.encode(c)[0] for c in got] == expected
    assert all(Decimal(c.close) > 0 for c in got)


async def test_a_replay_never_writes_into_the_topic_it_reads(kafka_bootstrap: str) -> None:
    same = config.load(IngestSettings, environ={}, source="kafka", source_prefix="x.")
    common = config.load(config.CommonSettings, environ={}, kafka_bootstrap=kafka_bootstrap,
                         topic_prefix="x.")
    with pytest.raises(config.ConfigError, match="must not write into the topic it reads"):
        await commands.run_replay(common, same)
