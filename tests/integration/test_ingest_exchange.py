"""Ingest against the local fake exchange, real Kafka and real PostgreSQL.

The fake serves the shared real candles and funding history through the Bybit v5 API that ccxt
calls, with an exchange clock running fast (hours per second), so a live stream of a hundred
hourly candles takes seconds. Each test compares what ingest wrote (topic and table) with the
source files row for row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import psycopg
import pytest

from meridian.v1 import candle_pb2, common_pb2, funding_pb2
from meridian_common import codec, config, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.marketdata import CsvCandleSource, CsvFundingSource, default_data_dir
from meridian_fake_exchange import FakeClock, FakeExchange
from meridian_ingest import commands
from meridian_ingest.exchange.client import ConfigurationError, ExchangeCallError
from meridian_ingest.settings import IngestSettings, parse_time_ms

pytestmark = pytest.mark.integration

HOUR = 3_600_000
VENUE = "bybit-linear"
Row = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal]


def source_rows(symbol: str, start_ms: int, end_ms: int) -> list[Row]:
    rows = CsvCandleSource(default_data_dir(), symbol, "1h").rows(start_ms, end_ms)
    return [(r.open_time_ms, Decimal(r.open), Decimal(r.high), Decimal(r.low), Decimal(r.close),
             Decimal(r.volume)) for r in rows]


def source_funding(symbol: str, start_ms: int, end_ms: int) -> list[tuple[int, Decimal]]:
    source = CsvFundingSource(default_data_dir(), symbol)
    if not source.exists():
        return []
    return [(t, Decimal(rate)) for t, rate in source.rows(start_ms, end_ms)]


def table_rows(url: str, symbol: str, venue: str = VENUE) -> list[Row]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select (extract(epoch from open_time) * 1000)::bigint, open, high, low, close, "
            "volume from candles where exchange = %s and symbol = %s and timeframe = '1h' "
            "order by open_time", (venue, symbol)).fetchall()
    return [(int(r[0]), *r[1:]) for r in rows]


def table_funding(url: str, symbol: str, venue: str = VENUE) -> list[tuple[int, Decimal]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select (extract(epoch from funding_time) * 1000)::bigint, rate from funding "
            "where exchange = %s and symbol = %s order by funding_time", (venue, symbol)).fetchall()
    return [(int(t), rate) for t, rate in rows]


async def topic_messages(bootstrap: str, topic: str) -> list[object]:
    bus = KafkaBus(bootstrap)
    out = []
    try:
        ends = await bus.topic_ends(topic)
    except KeyError:
        return []
    for partition, end in enumerate(ends):
        for record in await bus.read_partition(topic, partition, 0, end):
            out.append(codec.decode(_bare(topic), record.value,
                                    record.header(codec.TYPE_HEADER)))
    return out


def _bare(topic: str) -> str:
    for name in (topics.CANDLE, topics.FUNDING):
        if topic.endswith(name):
            return name
    raise AssertionError(topic)


def candle_row(c: candle_pb2.Candle) -> Row:
    return (c.open_time_ms, Decimal(c.open), Decimal(c.high), Decimal(c.low), Decimal(c.close),
            Decimal(c.volume))


async def published(bootstrap: str, prefix: str) -> dict[str, list[candle_pb2.Candle]]:
    by_symbol: dict[str, list[candle_pb2.Candle]] = {}
    for message in await topic_messages(bootstrap, prefix + topics.CANDLE):
        assert isinstance(message, candle_pb2.Candle)
        by_symbol.setdefault(message.symbol, []).append(message)
    return by_symbol


def settings_for(server: FakeExchange, **overrides: object) -> IngestSettings:
    base: dict[str, object] = dict(
        market_type="linear", api_base_url=server.base_url, ccxt_rate_limit=False,
        timeframe="1h", backoff_s=0.02, backoff_max_s=0.3, stale_after_s=1.5, poll_s=0.2,
        grace_s=0.05)
    base.update(overrides)
    return config.load(IngestSettings, environ={}, **base)


def common_for(url: str, bootstrap: str = "127.0.0.1:1", prefix: str = "",
               exchange: str = "bybit") -> config.CommonSettings:
    return config.load(config.CommonSettings, environ={}, exchange=exchange, database_url=url,
                       kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=3)


@pytest.fixture
async def exchange() -> AsyncIterator[tuple[FakeExchange, FakeClock]]:
    clock = FakeClock(parse_time_ms("2022-04-01T00:30:00Z"), speed=0.0, paused=True)
    server = FakeExchange(symbols=("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT"),
                          timeframes=("1h",), clock=clock)
    await server.start()
    try:
        yield server, clock
    finally:
        await server.stop()


# -- backfill -----------------------------------------------------------------------------------

@pytest.mark.parametrize("exchange_id", ["bybit", "binance"])
async def test_backfill_of_three_months_equals_the_source_and_resumes(
        exchange: tuple[FakeExchange, FakeClock], new_database, exchange_id: str) -> None:
    """USDT perpetuals: candles and funding, paginated at each exchange's own page limits."""
    server, clock = exchange
    url = new_database("backfill")
    venue = f"{exchange_id}-linear"
    common = common_for(url, exchange=exchange_id)
    start, now = parse_time_ms("2022-01-01"), clock.now_ms()
    settings = settings_for(server, symbols="BTCUSDT,ETHUSDT", start="2022-01-01")
    results = await commands.run_backfill(common, settings)
    last_closed = (now // HOUR) * HOUR  # the forming candle is not written
    for symbol in ("BTCUSDT", "ETHUSDT"):
        expected = source_rows(symbol, start, last_closed)
        assert len(expected) > 2000
        assert table_rows(url, symbol, venue) == expected
        assert table_funding(url, symbol, venue) == source_funding(symbol, start, now)
    assert {r.symbol: r.candles for r in results} == {
        s: len(source_rows(s, start, last_closed)) for s in ("BTCUSDT", "ETHUSDT")}
    assert table_funding(url, "BTCUSDT", venue), "BTC funding exists from 2022 on"

    # a week later: only the new week is fetched
    clock.set(now + 7 * 24 * HOUR)
    server.stats.reset()
    again = await commands.run_backfill(common, settings)
    assert {r.symbol: r.candles for r in again} == {"BTCUSDT": 168, "ETHUSDT": 168}
    kline_requests = sum(n for (_, path), n in server.stats.requests.items()
                         if path.endswith(("/kline", "/klines")))
    assert kline_requests == 2  # one window per symbol
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert table_rows(url, symbol, venue) == source_rows(symbol, start,
                                                             last_closed + 168 * HOUR)


async def test_rate_limit_burst_slows_the_backfill_but_loses_nothing(
        exchange: tuple[FakeExchange, FakeClock], new_database) -> None:
    server, clock = exchange
    url = new_database("ratelimit")
    start = parse_time_ms("2021-06-01")
    settings = settings_for(server, symbols="BTCUSDT", start="2021-06-01", funding=False)
    server.rate_limit(12)
    server.server_error(3)
    await commands.run_backfill(common_for(url), settings)
    assert sum(server.stats.rate_limited.values()) == 12
    assert table_rows(url, "BTCUSDT") == source_rows("BTCUSDT", start,
                                                     (clock.now_ms() // HOUR) * HOUR)


@pytest.mark.parametrize(("override", "message"), [
    ({"symbols": "DOGEUSDT"}, "symbol 'DOGEUSDT' is not a linear market on bybit"),
    ({"timeframe": "7m"}, "MERIDIAN_INGEST_TIMEFRAME='7m' is not offered by bybit"),
])
async def test_bad_symbol_or_timeframe_is_one_clear_error(
        exchange: tuple[FakeExchange, FakeClock], new_database, override: dict[str, str],
        message: str) -> None:
    server, _ = exchange
    url = new_database("bad")
    settings = settings_for(server, **{"symbols": "BTCUSDT", "start": "2022-01-01", **override})
    with pytest.raises(ConfigurationError) as info:
        await commands.run_backfill(common_for(url), settings)
    assert message in str(info.value)
    assert table_rows(url, "BTCUSDT") == []


async def test_exchange_side_bad_request_is_not_retried(
        exchange: tuple[FakeExchange, FakeClock], new_database) -> None:
    """A timeframe ccxt knows but this exchange deployment rejects: one request, one error."""
    server, _ = exchange
    url = new_database("badtf")
    settings = settings_for(server, symbols="BTCUSDT", start="2022-01-01", timeframe="4h",
                            funding=False)
    server.stats.reset()
    with pytest.raises(ExchangeCallError, match=r"BadRequest|BadSymbol|ExchangeError"):
        await commands.run_backfill(common_for(url), settings)
    kline = [n for (host, path), n in server.stats.requests.items() if path.endswith('/kline')]
    assert kline == [1], server.stats.snapshot()  # asked once, not retried


# -- live ---------------------------------------------------------------------------------------

async def _wait_until(predicate, timeout_s: float,
                      *tasks: asyncio.Task[object]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for task in tasks:
            if task.done():
                task.result()  # raises the ingest's own error
                raise AssertionError("live ingest stopped by itself")
        if await predicate():
            return True
        await asyncio.sleep(0.3)
    return False


def _streaming(server: FakeExchange) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return server.stats.ws_open > 0
    return check


async def _complete(bootstrap: str, prefix: str, expected: dict[str, list[Row]]) -> bool:
    got = await published(bootstrap, prefix)
    return all(len({c.open_time_ms for c in got.get(s, [])}) >= len(rows)
               for s, rows in expected.items())


def _assert_exact(got: dict[str, list[candle_pb2.Candle]], expected: dict[str, list[Row]],
                  corrected: set[tuple[str, int]] = frozenset()) -> None:  # type: ignore[assignment]
    for symbol, rows in expected.items():
        messages = got[symbol]
        firsts = [m for m in messages if m.revision == 0]
        opens = [m.open_time_ms for m in firsts]
        assert opens == sorted(set(opens)), f"{symbol}: duplicate or out-of-order candle"
        latest: dict[int, candle_pb2.Candle] = {}
        for m in messages:
            assert (m.symbol, m.open_time_ms) in corrected or m.revision == 0
            if m.open_time_ms not in latest or m.revision > latest[m.open_time_ms].revision:
                latest[m.open_time_ms] = m
        assert [candle_row(latest[o]) for o in sorted(latest)] == rows, symbol


async def test_disconnect_storm_loses_and_doubles_nothing(
        kafka_bootstrap: str, new_database, topic_prefix: str) -> None:
    start = parse_time_ms("2022-03-01")
    clock = FakeClock(start + HOUR // 2, speed=20 * 3600)  # 20 hourly candles per second
    server = FakeExchange(symbols=("BTCUSDT", "ETHUSDT"), timeframes=("1h",), clock=clock)
    await server.start()
    url = new_database("storm")
    try:
        server.drop_ws_every(4)
        server.duplicate_ws(0.2)
        server.reorder_ws(0.2)
        settings = settings_for(server, mode="live", symbols="BTCUSDT,ETHUSDT",
                                start="2022-03-01")
        stop = asyncio.Event()
        task = asyncio.create_task(commands.run_live(
            common_for(url, kafka_bootstrap, topic_prefix), settings, stop))
        await asyncio.sleep(8)
        clock.pause()
        end = clock.now_ms()
        expected = {s: source_rows(s, start, (end // HOUR) * HOUR)
                    for s in ("BTCUSDT", "ETHUSDT")}
        assert await _wait_until(lambda: _complete(kafka_bootstrap, topic_prefix, expected), 30,
                                task)
        await asyncio.sleep(1)  # anything extra would show up now
        stop.set()
        live = await task
    finally:
        await server.stop()
    assert server.stats.ws_dropped >= 50, server.stats.snapshot()  # TARGETS: >= 50 drops
    assert live.stats.reconnects >= 50, live.stats
    got = await published(kafka_bootstrap, topic_prefix)
    _assert_exact(got, expected)
    for symbol, rows in expected.items():
        assert table_rows(url, symbol) == rows
    on_topic = await topic_messages(kafka_bootstrap, topic_prefix + topics.FUNDING)
    funding = [m for m in on_topic
               if isinstance(m, funding_pb2.FundingRate) and m.symbol == "BTCUSDT"]
    assert [(m.funding_time_ms, Decimal(m.rate)) for m in funding] == \
        source_funding("BTCUSDT", start, end)
    # funding watermarks keep their promise: no settlement at or before one comes after it
    btc = [m for m in on_topic if getattr(m, "symbol", None) == "BTCUSDT"
           or getattr(m, "key", "").endswith(":BTCUSDT")]
    marks = [m.event_time_ms for m in btc if isinstance(m, common_pb2.Watermark)]
    assert marks, "live ingest publishes funding watermarks"
    assert marks == sorted(set(marks))
    assert all(t % HOUR == 0 and t <= end for t in marks)
    promised = 0
    for m in btc:
        if isinstance(m, common_pb2.Watermark):
            promised = m.event_time_ms
        else:
            assert m.funding_time_ms > promised, (m.funding_time_ms, promised)


async def _live_run(kafka_bootstrap: str, url: str, prefix: str, server: FakeExchange,
                    stop: asyncio.Event, **overrides: object) -> asyncio.Task[object]:
    settings = settings_for(server, mode="live", **overrides)
    return asyncio.create_task(commands.run_live(common_for(url, kafka_bootstrap, prefix),
                                                 settings, stop))


async def test_a_corrected_candle_is_republished_as_a_new_revision(
        kafka_bootstrap: str, new_database, topic_prefix: str) -> None:
    start = parse_time_ms("2022-05-01")
    clock = FakeClock(start + HOUR // 2, speed=20 * 3600, paused=True)
    server = FakeExchange(symbols=("BTCUSDT",), timeframes=("1h",), clock=clock)
    await server.start()
    url = new_database("correct")
    wrong_at = start + 5 * HOUR
    try:
        correction = server.correction("BTCUSDT", "1h", wrong_at)
        stop = asyncio.Event()
        task = await _live_run(kafka_bootstrap, url, topic_prefix, server, stop,
                               symbols="BTCUSDT", start="2022-05-01", funding=False)
        # the exchange clock starts once ingest streams, so the wrong version is seen first
        assert await _wait_until(_streaming(server), 20, task)
        clock.resume()
        await asyncio.sleep(4)
        clock.pause()
        end = clock.now_ms()
        expected = {"BTCUSDT": source_rows("BTCUSDT", start, (end // HOUR) * HOUR)}
        assert await _wait_until(lambda: _complete(kafka_bootstrap, topic_prefix, expected), 30,
                                 task)
        await asyncio.sleep(1)
        stop.set()
        live = await task
    finally:
        await server.stop()
    got = await published(kafka_bootstrap, topic_prefix)
    _assert_exact(got, expected, corrected={("BTCUSDT", wrong_at)})
    versions = [m for m in got["BTCUSDT"] if m.open_time_ms == wrong_at]
    assert [m.revision for m in versions] == [0, 1]
    assert Decimal(versions[0].close) == Decimal(correction.wrong.close) != \
        Decimal(versions[1].close)
    assert live.stats.revisions == 1
    with psycopg.connect(url) as conn:
        revision = conn.execute("select revision from candles where open_time = "
                                "to_timestamp(%s / 1000.0)", (wrong_at,)).fetchone()
    assert revision == (1,)
    assert table_rows(url, "BTCUSDT") == expected["BTCUSDT"]


async def test_resharding_from_one_to_two_replicas_loses_and_doubles_nothing(
        kafka_bootstrap: str, new_database, topic_prefix: str) -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
    start = parse_time_ms("2022-06-01")
    clock = FakeClock(start + HOUR // 2, speed=10 * 3600)
    server = FakeExchange(symbols=symbols, timeframes=("1h",), clock=clock)
    await server.start()
    url = new_database("reshard")
    common = dict(symbols=",".join(symbols), start="2022-06-01", funding=False)
    try:
        stop_old = asyncio.Event()
        old = await _live_run(kafka_bootstrap, url, topic_prefix, server, stop_old,
                              replicas=1, replica_index=0, **common)
        await asyncio.sleep(3)
        # the new layout's replica 1 starts first and waits for its symbols' locks
        stop_new = asyncio.Event()
        second = await _live_run(kafka_bootstrap, url, topic_prefix, server, stop_new,
                                 replicas=2, replica_index=1, **common)
        await asyncio.sleep(1.5)
        assert not second.done()
        stop_old.set()
        first_live = await old
        await asyncio.sleep(1.5)  # replica 1 runs alone for a while: replica 0's symbols wait
        first = await _live_run(kafka_bootstrap, url, topic_prefix, server, stop_new,
                                replicas=2, replica_index=0, **common)
        await asyncio.sleep(3)
        clock.pause()
        end = clock.now_ms()
        expected = {s: source_rows(s, start, (end // HOUR) * HOUR) for s in symbols}
        assert await _wait_until(lambda: _complete(kafka_bootstrap, topic_prefix, expected), 30,
                                 first, second)
        await asyncio.sleep(1)
        stop_new.set()
        lives = [await first, await second]
    finally:
        await server.stop()
    assert first_live.stats.published > 0
    assert sorted(s for live in lives for s in live.states) == sorted(symbols)
    assert all(len(live.states) == 2 for live in lives)
    _assert_exact(await published(kafka_bootstrap, topic_prefix), expected)
    for symbol, rows in expected.items():
        assert table_rows(url, symbol) == rows


async def test_a_silent_stream_is_reconnected_and_nothing_is_missed(
        kafka_bootstrap: str, new_database, topic_prefix: str) -> None:
    """The exchange stops sending (its clock stands still) for longer than stale_after_s: the
    stream is dropped and reopened, and once time moves again every candle arrives."""
    start = parse_time_ms("2022-07-01")
    clock = FakeClock(start + HOUR // 2, speed=10 * 3600)
    server = FakeExchange(symbols=("ETHUSDT",), timeframes=("1h",), clock=clock)
    await server.start()
    url = new_database("stale")
    try:
        stop = asyncio.Event()
        task = await _live_run(kafka_bootstrap, url, topic_prefix, server, stop,
                               symbols="ETHUSDT", start="2022-07-01", funding=False,
                               stale_after_s=0.5)
        await asyncio.sleep(2)
        clock.pause()
        connections = server.stats.ws_connections
        await asyncio.sleep(2)  # silence: about four stale periods
        assert server.stats.ws_connections > connections  # it reconnected while silent
        clock.resume()
        await asyncio.sleep(2)
        clock.pause()
        end = clock.now_ms()
        expected = {"ETHUSDT": source_rows("ETHUSDT", start, (end // HOUR) * HOUR)}
        assert await _wait_until(lambda: _complete(kafka_bootstrap, topic_prefix, expected), 30,
                                 task)
        stop.set()
        live = await task
    finally:
        await server.stop()
    assert live.stats.stale >= 2
    _assert_exact(await published(kafka_bootstrap, topic_prefix), expected)


async def test_exchange_credentials_never_reach_logs_errors_or_reprs(
        exchange: tuple[FakeExchange, FakeClock], new_database,
        caplog: pytest.LogCaptureFixture) -> None:
    server, _ = exchange
    url = new_database("secrets")
    key, secret = "AKIA-not-a-real-key-7731", "s3cr3t-not-a-real-secret-0042"
    settings = settings_for(server, symbols="BTCUSDT,NOPEUSDT", start="2022-03-01",
                            api_key=key, api_secret=secret, funding=False)
    server.rate_limit(3)
    caplog.set_level("DEBUG")
    with pytest.raises(ConfigurationError) as info:
        await commands.run_backfill(common_for(url), settings)
    texts = [str(info.value), repr(info.value), repr(settings), str(settings),
             settings.model_dump_json(), caplog.text]
    for text in texts:
        assert key not in text
        assert secret not in text
