"""Two features replicas in one consumer group on real Kafka (what a Kubernetes HPA runs): one
stops mid-stream, its partitions move to the other, and every row the survivor emits for them
equals the uninterrupted single-consumer run's.

The survivor started when the topics were empty, so its state of the moved symbols is what it
rebuilt then: nothing. Only the rebuild on the new assignment (reset, then every partition
replayed up to the committed offsets) gives it the indicator history the stopped replica had
built; the second test runs the same handover with that rebuild switched off and shows the rows
go stale, so the first test is known to detect it.

Cross-asset joins are off: a replica that does not own the reference symbol's partition never
sees its candles live, so a joined row could not be released (see the report in the docs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest

from meridian.v1 import candle_pb2, features_pb2
from meridian_common import codec, config, topics
from meridian_common.bus.base import partition_for
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.metrics import NullSensor
from meridian_common.testing import features_by_candle, feed, read_topic
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

PARTITIONS = 3  # BTC -> 2, ETH and LTC -> 1, XRP -> 0: every replica owns data
SYMBOLS = ("BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT")
FIRST_PART = 0.4  # share of each symbol's candles published before the handover
Cond = Callable[[], Awaitable[bool]]


def _settings() -> FeaturesSettings:
    return FeaturesSettings(cross_asset=False)


def _candles(kafka_bootstrap: str, prefix: str) -> list[candle_pb2.Candle]:
    common = config.load(config.CommonSettings, environ={}, kafka_bootstrap=kafka_bootstrap,
                         topic_prefix=prefix, partitions=PARTITIONS)
    ingest = config.load(IngestSettings, environ={}, symbols=",".join(SYMBOLS),
                         start="2021-01-01", end="2021-03-01")
    return [c for c in commands.candle_stream(common, ingest)
            if isinstance(c, candle_pb2.Candle)]


def _split(candles: Sequence[candle_pb2.Candle]) -> tuple[list[candle_pb2.Candle],
                                                           list[candle_pb2.Candle]]:
    """The first FIRST_PART of every symbol's candles, then the rest (each in stream order)."""
    counts = {s: sum(1 for c in candles if c.symbol == s) for s in SYMBOLS}
    seen = dict.fromkeys(SYMBOLS, 0)
    first, rest = [], []
    for c in candles:
        seen[c.symbol] += 1
        (first if seen[c.symbol] <= counts[c.symbol] * FIRST_PART else rest).append(c)
    return first, rest


async def _publish(bus: KafkaBus, prefix: str, candles: Sequence[candle_pb2.Candle]) -> None:
    producer = bus.producer()
    items = [(topics.CANDLE, topics.market_key(c.exchange, c.symbol), c) for c in candles]
    await publish(producer, prefix, items, NullSensor())
    await producer.stop()


async def _until(what: str, cond: Cond, tasks: Sequence[asyncio.Task[None]],
                 timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for task in tasks:
            if task.done():
                task.result()  # a host that died says why
                raise AssertionError(f"a host stopped while waiting for {what}")
        if await cond():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _rows(bus: KafkaBus, prefix: str) -> list[features_pb2.Features]:
    return await read_topic(bus, prefix, topics.FEATURES)  # type: ignore[return-value]


async def _handover(kafka_bootstrap: str, prefix: str,
                    ) -> tuple[list[features_pb2.Features], dict[tuple[str, int], bytes],
                               ServiceHost, set[str]]:
    """Replica A alone, then B joins (topics still empty), the first part is handled by both,
    A stops, the rest is published and handled by B. Returns the rows published, the
    reference rows, B's host and the symbols that moved from A to B."""
    candles = _candles(kafka_bootstrap, prefix)
    first, rest = _split(candles)
    expected = features_by_candle(feed(FeaturesHandler(_settings()), topics.CANDLE, candles))
    expected_first = features_by_candle(feed(FeaturesHandler(_settings()), topics.CANDLE, first))
    bus = KafkaBus(kafka_bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, PARTITIONS))
    a = ServiceHost(FeaturesHandler(_settings()), bus, prefix=prefix, batch=50)
    b = ServiceHost(FeaturesHandler(_settings()), bus, prefix=prefix, batch=50)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    tasks = [task_a]
    try:
        await _until("A's assignment", _assigned(a), tasks)
        tasks.append(asyncio.create_task(b.run(stop_b)))
        await _until("A and B sharing the partitions", _shared(a, b), tasks)
        moved = {s for s in SYMBOLS
                 if (prefix + topics.CANDLE, partition_for(f"binance:{s}".encode(), PARTITIONS))
                 in (a._assigned or ())}
        await _publish(bus, prefix, first)
        await _until("the first part's rows", _count(bus, prefix, len(expected_first)), tasks)
        stop_a.set()
        await asyncio.wait_for(task_a, 30)
        tasks.remove(task_a)
        await _publish(bus, prefix, rest)
        await _until("every row", _count(bus, prefix, len(expected)), tasks)
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    return await _rows(bus, prefix), expected, b, moved


def _assigned(host: ServiceHost) -> Cond:
    async def cond() -> bool:
        return bool(host._assigned)
    return cond


def _shared(a: ServiceHost, b: ServiceHost) -> Cond:
    async def cond() -> bool:
        return bool(a._assigned) and bool(b._assigned) and not (a._assigned & b._assigned) \
            and len(a._assigned | b._assigned) == 2 * PARTITIONS  # candles and funding
    return cond


def _count(bus: KafkaBus, prefix: str, n: int) -> Cond:
    async def cond() -> bool:
        return sum(await bus.topic_ends(prefix + topics.FEATURES)) >= n
    return cond


async def test_rows_after_a_handover_equal_the_uninterrupted_run(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    published, expected, b, moved = await _handover(kafka_bootstrap, topic_prefix)
    assert moved  # A owned some symbols' candles...
    assert moved != set(SYMBOLS)  # ...and B the others
    assert b.rebalances >= 1  # A left: B's assignment changed
    assert b.rebuilds >= 2  # start, then after gaining A's partitions
    for msg in published:  # every copy, duplicates included, equals the uninterrupted row
        assert codec.encode(msg)[0] == expected[(msg.symbol, msg.candle_open_time_ms)], (
            msg.symbol, msg.candle_open_time_ms)
    assert {(m.symbol, m.candle_open_time_ms) for m in published} == set(expected)


async def test_without_the_rebuild_on_assignment_the_moved_symbols_go_stale(
        kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_stale(*_: object) -> bool:
        return False

    monkeypatch.setattr(ServiceHost, "_stale", never_stale)
    published, expected, b, moved = await _handover(kafka_bootstrap, topic_prefix)
    assert b.rebuilds == 1  # only the one at start
    stale = {m.symbol for m in published
             if codec.encode(m)[0] != expected[(m.symbol, m.candle_open_time_ms)]}
    assert stale == moved  # exactly the symbols B took over, and only after the handover
