"""The host's own series (docs/observability.md) on the in-process bus: created at zero before the
first event, per-record handler time, handler errors counted then re-raised, consumer lag per
partition, and `Handler.replaying` True exactly while the state is rebuilt or restored."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from meridian_common import control, host, topics
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.handler import Handler, Inbound, Outbox
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.metrics import STAGES, NullSensor, PrometheusSensor
from meridian_common.testing import Running, until

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "POLL_TIMEOUT_S", 0.01)
    monkeypatch.setattr(host, "LAG_INTERVAL_S", 0.0)


def candle(i: int, symbol: str = "BTCUSDT"):  # type: ignore[no-untyped-def]
    price = str(30000 + 10 * i)
    return make_candle("binance", symbol, "1h",
                       RawCandle(T0 + i * HOUR, price, price, price, price, "1"), "test")


async def new_bus() -> InProcessBus:
    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs("", 3))
    return bus


async def send_candles(bus: InProcessBus, indices: range, symbol: str = "BTCUSDT") -> None:
    await publish(bus.producer(), "", [(topics.CANDLE, f"binance:{symbol}", candle(i, symbol))
                                       for i in indices], NullSensor())


class Recorder(Handler):
    """Records, for each record it is given, whether the host said it was replaying."""

    name = "recorder"
    inputs = (topics.CANDLE,)
    outputs = ()
    rebuild_from_inputs = True
    restore_from: ClassVar[tuple[str, ...]] = ()
    fail_at: str | None = None

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, bool]] = []  # (how, open time index, replaying)

    def handle(self, msg: Inbound, out: Outbox) -> None:
        if self.fail_at == "handle":
            raise RuntimeError("handler bug")
        self.seen.append(("handle", _index(msg), self.replaying))

    def restore(self, msg: Inbound) -> None:
        self.seen.append(("restore", -1, self.replaying))

    def reset_state(self) -> None:
        self.seen = []

    async def act(self, out: Outbox) -> None:
        if self.fail_at == "act":
            raise RuntimeError("exchange bug")

    async def flush(self) -> None:
        if self.fail_at == "flush":
            raise RuntimeError("database bug")


def _index(msg: Inbound) -> int:
    return -1 if msg.is_watermark else (msg.message.open_time_ms - T0) // HOUR  # type: ignore[attr-defined]


def sample(sensor: PrometheusSensor, name: str, **labels: str) -> float | None:
    return sensor.registry.get_sample_value(name, {"service": sensor.service, **labels})


def test_labelled_series_exist_at_zero_before_any_event() -> None:
    sensor = PrometheusSensor("features")
    for stage in STAGES:
        assert sample(sensor, "meridian_handler_errors_total", stage=stage) == 0.0
    assert sample(sensor, "meridian_rebalances_total") == 0.0
    assert sample(sensor, "meridian_ready") == 0.0
    assert sample(sensor, "meridian_handle_duration_seconds_count", topic=topics.CANDLE) is None
    sensor.subscribed([topics.CANDLE, topics.FUNDING])
    for topic in (topics.CANDLE, topics.FUNDING):
        assert sample(sensor, "meridian_handle_duration_seconds_count", topic=topic) == 0.0
        assert sample(sensor, "meridian_messages_consumed_total", topic=topic) == 0.0
        assert sample(sensor, "meridian_dead_letters_total", topic=topic) == 0.0


async def test_handle_time_per_record_and_lag_per_assigned_partition() -> None:
    bus = await new_bus()
    sensor = PrometheusSensor("recorder")
    h = ServiceHost(Recorder(), bus, sensor=sensor, batch=4)
    await send_candles(bus, range(10))
    await send_candles(bus, range(3), symbol="ETHUSDT")
    async with Running(h):
        await until(lambda: h.handled == 13)
        await until(lambda: sample(sensor, "meridian_consumer_lag_messages",
                                   topic=topics.CANDLE, partition="0") is not None)
    assert sample(sensor, "meridian_handle_duration_seconds_count", topic=topics.CANDLE) == 13
    assert sample(sensor, "meridian_handle_duration_seconds_sum", topic=topics.CANDLE) > 0
    for partition in ("0", "1", "2"):  # every assigned partition, with or without data
        assert sample(sensor, "meridian_consumer_lag_messages", topic=topics.CANDLE,
                      partition=partition) == 0.0
    assert sample(sensor, "meridian_rebalances_total") == 0.0  # one member, one assignment
    assert h.rebalances == 0


async def test_consumer_lag_is_end_offset_minus_position() -> None:
    bus = await new_bus()
    await send_candles(bus, range(7))
    await send_candles(bus, range(5), symbol="ETHUSDT")
    consumer = bus.consumer("g", [topics.CANDLE])
    ends = bus.end_offsets(topics.CANDLE)
    assert await consumer.lag() == {(topics.CANDLE, p): ends[p] for p in range(3)}
    got = await consumer.poll(0.01, 4)
    lag = await consumer.lag()
    assert sum(lag.values()) == 12 - len(got)
    for (topic, partition), n in lag.items():
        assert n == ends[partition] - consumer.position(topic, partition)


def test_lag_series_of_partitions_no_longer_assigned_are_removed() -> None:
    sensor = PrometheusSensor("features")
    sensor.lag({("md.candle.v1", 0): 5, ("md.candle.v1", 1): 2})
    sensor.lag({("md.candle.v1", 1): 1})
    assert sample(sensor, "meridian_consumer_lag_messages", topic="md.candle.v1",
                  partition="0") is None
    assert sample(sensor, "meridian_consumer_lag_messages", topic="md.candle.v1",
                  partition="1") == 1.0


@pytest.mark.parametrize("stage", STAGES)
async def test_handler_errors_are_counted_per_stage_then_stop_the_service(stage: str) -> None:
    bus = await new_bus()
    sensor = PrometheusSensor("recorder")
    handler = Recorder()
    handler.fail_at = stage
    h = ServiceHost(handler, bus, sensor=sensor)
    await send_candles(bus, range(1))
    with pytest.raises(RuntimeError, match="bug"):
        await asyncio.wait_for(h.run(asyncio.Event()), 5)
    for s in STAGES:
        assert sample(sensor, "meridian_handler_errors_total", stage=s) == (s == stage)


async def test_replaying_is_true_only_while_the_state_is_rebuilt() -> None:
    bus = await new_bus()
    first = Recorder()
    h = ServiceHost(first, bus)
    await send_candles(bus, range(3))
    async with Running(h):
        await until(lambda: h.handled == 3)
    assert [r for _, _, r in first.seen] == [False] * 3  # live: not replaying

    second = Recorder()
    h = ServiceHost(second, bus)
    await send_candles(bus, range(3, 5))
    async with Running(h):
        await until(lambda: h.handled == 2)
        assert second.replaying is False
    # rebuilt up to the committed offset while replaying, then live
    assert second.seen == [("handle", 0, True), ("handle", 1, True), ("handle", 2, True),
                           ("handle", 3, False), ("handle", 4, False)]
    assert h.rebuilds == 1


async def test_replaying_is_true_only_while_the_state_is_restored() -> None:
    class Restorer(Recorder):
        rebuild_from_inputs = False
        restore_from = (topics.CONTROL,)

    bus = await new_bus()
    command = control.kill_switch_command(True, "test", "tester", producer="test")
    await publish(bus.producer(), "", [(topics.CONTROL, control.KILL_SWITCH_KEY, command)],
                  NullSensor())
    handler = Restorer()
    h = ServiceHost(handler, bus)
    async with Running(h):
        await send_candles(bus, range(1))
        await until(lambda: h.handled == 1)
    assert handler.seen == [("restore", -1, True), ("handle", 0, False)]
    assert handler.replaying is False


def test_a_rebuild_handler_without_reset_state_names_itself() -> None:
    class Forgetful(Handler):
        name = "forgetful"
        rebuild_from_inputs = True

    with pytest.raises(NotImplementedError, match=r"Forgetful \(forgetful\).*reset_state"):
        Forgetful().reset_state()
