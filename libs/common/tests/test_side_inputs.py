"""Side inputs (`meridian_common.side_inputs`): replicas of one group that each see only their
partitions still release rows that join another partition's key, with every side record fed
once, its outputs published by the key's owner only, and nothing counted as consumed.

Replicas run on the in-process bus, each consumer given its share of the group's partitions
(`InProcessConsumer.assign`); moving shares is a rebalance at a chosen point.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence

import pytest
from opentelemetry import context as otel_context

from meridian.v1 import candle_pb2, features_pb2
from meridian_common import codec, host, topics
from meridian_common.bus import partition_for
from meridian_common.bus.base import TopicPartition
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.handler import Handler, Inbound, Outbox
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.metrics import NullSensor, PrometheusSensor
from meridian_common.side_inputs import SideInputs, keep_owned
from meridian_common.testing import Running, SharedBus, features_by_candle, feed, until
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings

HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
PARTITIONS = 3
CANDLE = topics.CANDLE
FUNDING = topics.FUNDING
BTC, ETH, LTC, XRP = (f"binance:{s}" for s in ("BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT"))
BASE = {BTC: 30_000, ETH: 2_000, LTC: 90, XRP: 1}


def _part(key: str) -> int:
    return partition_for(key.encode(), PARTITIONS)


def test_the_keys_used_here_fall_where_the_tests_assume() -> None:
    assert (_part(BTC), _part(ETH), _part(LTC), _part(XRP)) == (2, 1, 1, 0)


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "POLL_TIMEOUT_S", 0.01)



def share(*candle_partitions: int) -> set[TopicPartition]:
    """Candle partitions and the funding partitions of the same numbers."""
    return {(t, p) for p in candle_partitions for t in (CANDLE, FUNDING)}


def candle(key: str, i: int) -> candle_pb2.Candle:
    # a wave, so every return differs and the joined column is not a constant
    close = BASE[key] * (1 + 0.01 * ((i * 7) % 5 - 2) + 0.001 * i)
    price = f"{close:.4f}"
    return make_candle("binance", key.split(":")[1], "1h",
                       RawCandle(T0 + i * HOUR, price, price, price, price, "1"), "test")


def candles(keys: Iterable[str], hours: range) -> list[candle_pb2.Candle]:
    return [candle(k, i) for i in hours for k in keys]


async def put(bus: InProcessBus, items: Sequence[candle_pb2.Candle]) -> None:
    await publish(bus.producer(), "", [(CANDLE, f"{c.exchange}:{c.symbol}", c) for c in items],
                  NullSensor())


def expected(items: Sequence[candle_pb2.Candle]) -> dict[tuple[str, int], bytes]:
    return features_by_candle(feed(FeaturesHandler(FeaturesSettings()), CANDLE, items))


def rows(bus: InProcessBus) -> list[features_pb2.Features]:
    return [codec.decode(topics.FEATURES, r.value, r.header(codec.TYPE_HEADER))  # type: ignore[misc]
            for r in bus.read(topics.FEATURES)]


def keys_of(found: Iterable[features_pb2.Features]) -> list[tuple[str, int]]:
    return [(m.symbol, m.candle_open_time_ms) for m in found]


def assert_equal_rows(bus: InProcessBus, want: Mapping[tuple[str, int], bytes]) -> None:
    found = rows(bus)
    for m in found:  # every copy, duplicates included, is the single consumer's row
        assert codec.encode(m)[0] == want[(m.symbol, m.candle_open_time_ms)]
    assert set(keys_of(found)) == set(want)


def features_host(bus: InProcessBus, sensor: PrometheusSensor | None = None) -> ServiceHost:
    return ServiceHost(FeaturesHandler(FeaturesSettings()), bus, group="g", batch=7,
                       sensor=sensor)


def has_rows(bus: InProcessBus, want: Collection[tuple[str, int]]) -> bool:
    return set(want) <= set(keys_of(rows(bus)))


# -- replicas -------------------------------------------------------------------------------


async def test_a_replica_without_the_reference_releases_its_rows_from_side_records() -> None:
    bus = SharedBus(PARTITIONS, share(0, 1), share(2))  # A: XRP, ETH, LTC; B: the reference (BTC)
    await bus.ensure_topics(all_topic_configs("", PARTITIONS))
    sensor = PrometheusSensor("features")
    a, b = features_host(bus, sensor), features_host(bus)
    a.handler.bind_metrics(sensor.registry)
    theirs = candles((ETH, XRP), range(12))
    btc = candles((BTC,), range(12))
    async with Running(a), Running(b):
        await put(bus, theirs)
        # every candle of A's partitions handled and held: A's own records alone release nothing
        await until(lambda: a.handler.waiting == len(theirs))  # type: ignore[attr-defined]
        assert rows(bus) == []
        await put(bus, btc)  # only B is assigned them; A's partitions stay idle
        await until(lambda: has_rows(bus, expected(theirs + btc)))
        # A's commit moves past the candles the side records released
        await until(lambda: bus.committed("g", CANDLE, 1) == 12)
    want = expected(theirs + btc)
    assert_equal_rows(bus, want)
    assert sorted(keys_of(rows(bus))) == sorted(want)  # exactly once: A dropped its BTC rows
    assert a.side_fed == len(btc)  # each reference candle fed to A once
    assert b.side_fed == 0  # B is assigned the reference's partition
    assert a.handled == len(theirs)  # side records are not A's consumed records...
    consumed = sensor.registry.get_sample_value(
        "meridian_messages_consumed_total", {"service": "features", "topic": CANDLE})
    assert consumed == len(theirs)  # ...nor counted as consumed
    assert a.clock.now_ms() == theirs[-1].meta.event_time_ms  # nor move A's event time
    assert row_count(sensor, "ETHUSDT") == 12  # A counts the rows it published...
    assert row_count(sensor, "BTCUSDT") == 0  # ...not its dropped copies of the reference's
    joined = [m for m in rows(bus) if m.symbol != "BTCUSDT" and math.isfinite(
        next(v.value for v in m.values if v.name == "btc_ret_1"))]
    assert len(joined) == len(theirs) - 2  # the reference's return: all but the first hour


def row_count(sensor: PrometheusSensor, symbol: str) -> float:
    return sum(sensor.registry.get_sample_value(name, {"symbol": symbol}) or 0.0
               for name in ("meridian_features_rows_total",
                            "meridian_features_warmup_rows_total"))


async def test_a_revoked_reference_partition_is_followed_from_where_the_state_is() -> None:
    bus = SharedBus(PARTITIONS, share(0, 1, 2), share())  # A owns everything, B nothing yet
    await bus.ensure_topics(all_topic_configs("", PARTITIONS))
    a, b = features_host(bus), features_host(bus)
    first = candles((BTC, ETH), range(10))
    rest = candles((BTC, ETH), range(10, 20))
    async with Running(a), Running(b):
        await put(bus, first)
        await until(lambda: has_rows(bus, expected(first)))
        await until(lambda: bus.committed("g", CANDLE, 2) == 10)
        bus.members[0].assign(share(0, 1))  # the reference's partition moves to B
        bus.members[1].assign(share(2))
        await until(lambda: b.rebuilds == 2)  # B gained partitions A advanced
        await put(bus, rest)
        await until(lambda: has_rows(bus, expected(first + rest)))
    assert a.rebuilds == 1  # A's state was exactly at its remaining partitions
    assert a.side_fed == 10  # from offset 10, where A's state of BTC was: none twice or skipped
    assert_equal_rows(bus, expected(first + rest))
    assert sorted(keys_of(rows(bus))) == sorted(expected(first + rest))  # each row once


async def _regain(bus: SharedBus) -> ServiceHost:
    """A owns everything, loses the reference's partition to a member that never handles it
    (so its committed offset stays where A left it), follows it as a side input, then is
    given it back."""
    a = features_host(bus)
    first = candles((BTC, ETH), range(10))
    rest = candles((BTC, ETH), range(10, 15))
    async with Running(a):
        await put(bus, first)
        await until(lambda: has_rows(bus, expected(first)))
        await until(lambda: bus.committed("g", CANDLE, 2) == 10)
        bus.members[0].assign(share(0, 1))
        await until(lambda: a._assigned == frozenset(share(0, 1)))
        await put(bus, rest)
        await until(lambda: a.side_fed == 5)
        # ETH's rows are out; BTC's own rows are the absent owner's to publish
        await until(lambda: has_rows(bus, [k for k in expected(first + rest) if k[0] != "BTCUSDT"]))
        assert not has_rows(bus, expected(first + rest))
        assert bus.committed("g", CANDLE, 2) == 10
        bus.members[0].assign(share(0, 1, 2))
        await until(lambda: a._assigned == frozenset(share(0, 1, 2)))
        await until(lambda: bus.committed("g", CANDLE, 2) == 15)
    return a


async def test_regaining_a_followed_partition_rebuilds_rather_than_feed_it_twice() -> None:
    bus = SharedBus(PARTITIONS, share(0, 1, 2))
    await bus.ensure_topics(all_topic_configs("", PARTITIONS))
    a = await _regain(bus)
    assert a.rebuilds == 2  # committed offset unchanged, but side records were fed past it
    assert_equal_rows(bus, expected(candles((BTC, ETH), range(15))))


async def test_control_without_that_rebuild_the_reference_rows_are_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SideInputs, "fed_beyond", lambda self, tp, at: False)
    bus = SharedBus(PARTITIONS, share(0, 1, 2))
    await bus.ensure_topics(all_topic_configs("", PARTITIONS))
    a = await _regain(bus)
    assert a.rebuilds == 1
    # the group delivered BTC 10..14 again: skipped as redelivered, so their rows never came
    assert a.handler.skipped == 5  # type: ignore[attr-defined]
    missing = set(expected(candles((BTC, ETH), range(15)))) - set(keys_of(rows(bus)))
    assert missing == {("BTCUSDT", T0 + i * HOUR) for i in range(10, 15)}


async def test_a_rebuild_follows_the_reference_again_from_the_committed_offset() -> None:
    """Nobody handles the reference's partition (its committed offset stays 0); A and B follow
    it. B stops and A takes its partition over, which B advanced: A rebuilds from the
    committed offsets, so its state of the reference is empty again and the reference is
    followed again from offset 0 (a cursor kept at 10 would leave every return missing)."""
    # A: ETH; B: XRP; the reference's partition: no one
    bus = SharedBus(PARTITIONS, share(1), share(0))
    await bus.ensure_topics(all_topic_configs("", PARTITIONS))
    a = features_host(bus)
    first = candles((BTC, ETH, XRP), range(10))
    rest = candles((BTC, ETH, XRP), range(10, 15))
    theirs = [k for k in expected(first + rest) if k[0] != "BTCUSDT"]
    async with Running(a):
        b = features_host(bus)
        async with Running(b):
            await put(bus, first)
            await until(lambda: bus.committed("g", CANDLE, 0) == 10)
        assert b.side_fed == 10
        bus.members[0].assign(share(0, 1))
        await until(lambda: a.rebuilds == 2)
        await put(bus, rest)
        await until(lambda: has_rows(bus, theirs))
    assert a.side_fed == 10 + 15  # all of it again after the rebuild, then the rest
    want = expected(first + rest)
    for m in rows(bus):
        assert codec.encode(m)[0] == want[(m.symbol, m.candle_open_time_ms)]


# -- SideInputs alone -----------------------------------------------------------------------


class Joiner(Handler):
    """Declares whatever side keys a test sets."""

    name = "joiner"
    inputs = (CANDLE, FUNDING)
    outputs = (topics.FEATURES,)
    rebuild_from_inputs = True

    def __init__(self) -> None:
        self.keys: dict[str, list[str]] = {}

    def side_keys(self) -> Mapping[str, Collection[str]]:
        return self.keys

    def handle(self, msg: Inbound, out: Outbox) -> None:
        return None


async def _bus_with(items: Sequence[candle_pb2.Candle]) -> InProcessBus:
    bus = InProcessBus(PARTITIONS)
    await bus.ensure_topics(all_topic_configs("", PARTITIONS))
    await put(bus, items)
    return bus


def offsets(side: Sequence[tuple[str, object]], key: str) -> list[int]:
    return [r.offset for _, r in side if r.key == key.encode()]  # type: ignore[attr-defined]


async def test_each_key_has_its_own_cursor_in_a_shared_partition() -> None:
    bus = await _bus_with(candles((ETH, LTC), range(3)))  # partition 1: ETH 0,2,4  LTC 1,3,5
    handler = Joiner()
    side = SideInputs(handler, bus, "")
    mine = share(0, 2)
    handler.keys = {CANDLE: [ETH]}
    got = await side.read(mine, {}, 100)
    assert offsets(got, ETH) == [0, 2, 4]
    assert offsets(got, LTC) == []
    assert {logical for logical, _ in got} == {CANDLE}
    assert await side.read(mine, {}, 100) == []  # nothing new: nothing again
    handler.keys = {CANDLE: [ETH, LTC]}  # LTC becomes a side key: from where the state is
    got = await side.read(mine, {(CANDLE, 1): 2}, 100)
    assert offsets(got, LTC) == [3, 5]
    assert offsets(got, ETH) == []  # not fed twice
    await put(bus, candles((ETH, LTC), range(3, 4)))
    got = await side.read(mine, {(CANDLE, 1): 2}, 100)
    assert (offsets(got, ETH), offsets(got, LTC)) == ([6], [7])
    assert side.fed_beyond((CANDLE, 1), 7)
    assert not side.fed_beyond((CANDLE, 1), 8)


async def test_reads_are_bounded_and_resume() -> None:
    bus = await _bus_with(candles((BTC,), range(5)))
    handler = Joiner()
    handler.keys = {CANDLE: [BTC]}
    side = SideInputs(handler, bus, "")
    assert offsets(await side.read(share(0), {(CANDLE, 2): 1}, 2), BTC) == [1, 2]
    assert offsets(await side.read(share(0), {(CANDLE, 2): 1}, 2), BTC) == [3, 4]
    assert side.followed() == {(CANDLE, 2): {BTC.encode(): 5}}


async def test_assigned_and_reset_end_or_restart_the_following() -> None:
    bus = await _bus_with(candles((BTC,), range(3)))
    handler = Joiner()
    handler.keys = {CANDLE: [BTC], FUNDING: [BTC]}
    side = SideInputs(handler, bus, "")
    assert len(await side.read(share(0), {}, 100)) == 3
    assert set(side.followed()) == {(CANDLE, 2), (FUNDING, 2)}
    assert await side.read(share(0, 2), {}, 100) == []  # the group delivers them now
    side.assigned(share(2))
    assert side.followed() == {}
    assert not side.fed_beyond((CANDLE, 2), 0)
    assert len(await side.read(share(0), {}, 100)) == 3  # revoked again: from `at` (0)
    side.reset()
    assert offsets(await side.read(share(0), {(CANDLE, 2): 2}, 100), BTC) == [2]


async def test_a_side_key_must_be_an_input_of_a_rebuilt_handler() -> None:
    bus = await _bus_with([])
    handler = Joiner()
    handler.keys = {topics.FEATURES: [BTC]}
    with pytest.raises(ValueError, match="not one of its inputs"):
        await SideInputs(handler, bus, "").read(share(0), {}, 10)
    handler.keys = {CANDLE: [BTC]}
    handler.rebuild_from_inputs = False  # type: ignore[misc]
    assert await SideInputs(handler, bus, "").read(share(2), {}, 10) == []  # its own: fine
    with pytest.raises(TypeError, match="rebuild_from_inputs"):
        await SideInputs(handler, bus, "").read(share(0), {}, 10)


async def test_ownership_is_the_keys_partition_of_the_first_input() -> None:
    bus = await _bus_with([])
    side = SideInputs(Joiner(), bus, "")
    owner = await side.owner()
    assert owner == CANDLE
    assert side.owns(owner, BTC, share(2))
    assert not side.owns(owner, BTC, share(0, 1))
    assert side.owns(owner, ETH, share(1))


def test_keep_owned_moves_owned_outputs_with_their_trace_contexts() -> None:
    side, out = Outbox("x", traced=True), Outbox("x", traced=True)
    cause = otel_context.set_value("marker", 1)
    side.emit(topics.FEATURES, ETH, features_pb2.Features(symbol="ETHUSDT"), cause)
    side.emit(topics.FEATURES, BTC, features_pb2.Features(symbol="BTCUSDT"))
    assert keep_owned(side, out, lambda key: key == ETH) == 1
    assert [k for _, k, _ in out.items] == [ETH]
    assert out.causes == [cause]
    assert side.items == []
