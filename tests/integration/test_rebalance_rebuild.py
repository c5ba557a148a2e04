"""Two features replicas in one consumer group on real Kafka (what a Kubernetes HPA runs): one
stops mid-stream, its partitions move to the other, and every row the survivor emits for them
equals the uninterrupted single-consumer run's.

The survivor started when the topics were empty, so its state of the moved symbols is what it
rebuilt then: nothing. Only the rebuild on the new assignment (reset, then every partition
replayed up to the committed offsets) gives it the indicator history the stopped replica had
built; the second test runs the same handover with that rebuild switched off and shows the rows
go stale, so the first test is known to detect it.

The same handover runs with cross-asset joins on: every other symbol's row waits for the
reference symbol's (BTCUSDT's) candle of its time, which the group delivers to one replica
only. The other replica follows the reference's partition as a side input
(`meridian_common.side_inputs`) and its rows still equal the single consumer's, none missing;
the control runs it with side inputs switched off and shows that replica's rows never come
(every candle it handled stays held).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

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


REFERENCE = "BTCUSDT"


def _settings(cross_asset: bool = False) -> FeaturesSettings:
    return FeaturesSettings(cross_asset=cross_asset)


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


@dataclass
class Handover:
    published: list[features_pb2.Features]  # every row on the topic, duplicates included
    expected: dict[tuple[str, int], bytes]  # the single consumer's rows
    a: ServiceHost
    b: ServiceHost
    moved: set[str]  # symbols whose candles A handled until it stopped
    side_fed: dict[str, int]  # side records each replica was fed before A stopped


def _owned(host: ServiceHost, prefix: str) -> set[str]:
    """The symbols whose candle partition the host is assigned."""
    return {s for s in SYMBOLS
            if (prefix + topics.CANDLE, partition_for(f"binance:{s}".encode(), PARTITIONS))
            in (host._assigned or ())}


async def _handover(kafka_bootstrap: str, prefix: str, cross_asset: bool = False) -> Handover:
    """Replica A alone, then B joins (topics still empty), the first part is handled by both,
    A stops, the rest is published and handled by B."""
    candles = _candles(kafka_bootstrap, prefix)
    first, rest = _split(candles)
    settings = _settings(cross_asset)
    expected = features_by_candle(feed(FeaturesHandler(settings), topics.CANDLE, candles))
    expected_first = features_by_candle(feed(FeaturesHandler(settings), topics.CANDLE, first))
    bus = KafkaBus(kafka_bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, PARTITIONS))
    a = ServiceHost(FeaturesHandler(settings), bus, prefix=prefix, batch=50)
    b = ServiceHost(FeaturesHandler(settings), bus, prefix=prefix, batch=50)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    tasks = [task_a]
    try:
        await _until("A's assignment", _assigned(a), tasks)
        tasks.append(asyncio.create_task(b.run(stop_b)))
        await _until("A and B sharing the partitions", _shared(a, b), tasks)
        moved = _owned(a, prefix)
        await _publish(bus, prefix, first)
        await _until("the first part's rows", _complete(bus, prefix, set(expected_first)), tasks)
        side_fed = {"a": a.side_fed, "b": b.side_fed}
        stop_a.set()
        await asyncio.wait_for(task_a, 30)
        tasks.remove(task_a)
        await _publish(bus, prefix, rest)
        await _until("every row", _complete(bus, prefix, set(expected)), tasks)
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    return Handover(await _rows(bus, prefix), expected, a, b, moved, side_fed)


def _assigned(host: ServiceHost) -> Cond:
    async def cond() -> bool:
        return bool(host._assigned)
    return cond


def _shared(a: ServiceHost, b: ServiceHost) -> Cond:
    async def cond() -> bool:
        return bool(a._assigned) and bool(b._assigned) and not (a._assigned & b._assigned) \
            and len(a._assigned | b._assigned) == 2 * PARTITIONS  # candles and funding
    return cond


def _complete(bus: KafkaBus, prefix: str, keys: set[tuple[str, int]]) -> Cond:
    """Every row in `keys` is on the topic (duplicates do not count twice)."""
    async def cond() -> bool:
        if sum(await bus.topic_ends(prefix + topics.FEATURES)) < len(keys):
            return False
        return keys <= {(m.symbol, m.candle_open_time_ms) for m in await _rows(bus, prefix)}
    return cond


def _assert_rows_equal(run: Handover) -> None:
    for msg in run.published:  # every copy, duplicates included, equals the uninterrupted row
        assert codec.encode(msg)[0] == run.expected[(msg.symbol, msg.candle_open_time_ms)], (
            msg.symbol, msg.candle_open_time_ms)
    assert {(m.symbol, m.candle_open_time_ms) for m in run.published} == set(run.expected)


async def test_rows_after_a_handover_equal_the_uninterrupted_run(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    run = await _handover(kafka_bootstrap, topic_prefix)
    assert run.moved  # A owned some symbols' candles...
    assert run.moved != set(SYMBOLS)  # ...and B the others
    assert run.b.rebalances >= 1  # A left: B's assignment changed
    assert run.b.rebuilds >= 2  # start, then after gaining A's partitions
    assert run.side_fed == {"a": 0, "b": 0}  # nothing joined, nothing followed
    _assert_rows_equal(run)


async def test_without_the_rebuild_on_assignment_the_moved_symbols_go_stale(
        kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_stale(*_: object) -> bool:
        return False

    monkeypatch.setattr(ServiceHost, "_stale", never_stale)
    run = await _handover(kafka_bootstrap, topic_prefix)
    assert run.b.rebuilds == 1  # only the one at start
    stale = {m.symbol for m in run.published
             if codec.encode(m)[0] != run.expected[(m.symbol, m.candle_open_time_ms)]}
    assert stale == run.moved  # exactly the symbols B took over, and only after the handover


async def test_cross_asset_rows_after_a_handover_equal_the_uninterrupted_run(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    run = await _handover(kafka_bootstrap, topic_prefix, cross_asset=True)
    assert run.moved
    assert run.moved != set(SYMBOLS)
    # the replica without the reference's partition followed it, the other did not need to
    follower, owner = ("b", "a") if REFERENCE in run.moved else ("a", "b")
    assert run.side_fed[follower] > 0
    assert run.side_fed[owner] == 0
    assert run.b.rebuilds >= 2
    # the join really happened: other symbols' rows carry the reference's return
    joined = [m for m in run.published if m.symbol != REFERENCE
              and math.isfinite(next(v.value for v in m.values if v.name == "btc_ret_1"))]
    assert len(joined) > len(run.expected) // 2
    _assert_rows_equal(run)


async def test_without_side_inputs_the_other_replicas_rows_never_come(
        kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: side inputs switched off, the replica that is not assigned the reference's
    partition handles every candle of its partitions and releases not one row (nothing else
    can release them), while the reference's owner publishes all of its own."""
    monkeypatch.setattr(FeaturesHandler, "side_keys", lambda self: {})
    prefix = topic_prefix
    first, _ = _split(_candles(kafka_bootstrap, prefix))
    settings = _settings(cross_asset=True)
    expected_first = features_by_candle(feed(FeaturesHandler(settings), topics.CANDLE, first))
    bus = KafkaBus(kafka_bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, PARTITIONS))
    a = ServiceHost(FeaturesHandler(settings), bus, prefix=prefix, batch=50)
    b = ServiceHost(FeaturesHandler(settings), bus, prefix=prefix, batch=50)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.run(stop))]
    try:
        await _until("A's assignment", _assigned(a), tasks)
        tasks.append(asyncio.create_task(b.run(stop)))
        await _until("A and B sharing the partitions", _shared(a, b), tasks)
        owner, other = (a, b) if REFERENCE in _owned(a, prefix) else (b, a)
        theirs = _owned(other, prefix)
        mine = {k for k in expected_first if k[0] not in theirs}
        their_candles = sum(1 for c in first if c.symbol in theirs)
        await _publish(bus, prefix, first)
        await _until("the reference owner's rows", _complete(bus, prefix, mine), tasks)
        await _until("the other replica's candles handled", _handled(other, their_candles),
                     tasks)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert theirs
    assert REFERENCE not in theirs
    assert any(k[0] in theirs for k in expected_first)  # the single consumer has their rows
    published = {(m.symbol, m.candle_open_time_ms) for m in await _rows(bus, prefix)}
    assert not {k for k in published if k[0] in theirs}  # ...this group none
    assert other.handler.waiting == their_candles  # each one held for the reference
    assert other.side_fed == 0
    assert owner.side_fed == 0


def _handled(host: ServiceHost, n: int) -> Cond:
    async def cond() -> bool:
        return host.handled >= n
    return cond
