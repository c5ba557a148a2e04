"""The host's series and probes on real Kafka: consumer lag from the aiokafka consumer (highwater
or end offsets, minus position) per assigned partition, per-record handler time, readiness once
the consumer has joined and the state is loaded, all through the HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest

from meridian_common import host, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.health import Health
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.metrics import NullSensor, PrometheusSensor, serve
from meridian_common.testing import free_port
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")  # partitions 2, 1, 0 of 3


def _candles(n: int) -> list[tuple[str, str, object]]:
    out: list[tuple[str, str, object]] = []
    for i in range(n):
        for symbol in SYMBOLS:
            price = str(100 + i)
            out.append((topics.CANDLE, f"binance:{symbol}", make_candle(
                "binance", symbol, "1h", RawCandle(T0 + i * HOUR, price, price, price, price, "1"),
                "test")))
    return out


async def _setup(bootstrap: str, prefix: str, n: int) -> KafkaBus:
    bus = KafkaBus(bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, 3))
    producer = bus.producer()
    await publish(producer, prefix, _candles(n), NullSensor())  # type: ignore[arg-type]
    await producer.stop()
    return bus


async def test_kafka_consumer_lag_is_end_offset_minus_position_per_partition(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    bus = await _setup(kafka_bootstrap, topic_prefix, 20)  # 60 records, 20 per partition
    topic = topic_prefix + topics.CANDLE
    consumer = bus.consumer(f"{topic_prefix}lag", [topic])
    try:
        got: list[object] = []
        deadline = time.monotonic() + 60
        while not got:
            assert time.monotonic() < deadline, "no records polled"
            got = await consumer.poll(0.5, 7)  # type: ignore[assignment]
        assert consumer.take_assignment() == {(topic, p) for p in range(3)}
        assert consumer.take_assignment() is None  # reported once
        lag = await consumer.lag()
        assert set(lag) == {(topic, p) for p in range(3)}
        assert sum(lag.values()) == 60 - len(got)
        assert max(lag.values()) == 20  # a partition not polled yet lags by all of it
    finally:
        await consumer.stop()



def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read().decode()


async def test_host_series_and_probes_over_kafka(
        kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "LAG_INTERVAL_S", 0.2)
    bus = await _setup(kafka_bootstrap, topic_prefix, 30)
    sensor = PrometheusSensor("features")
    handler = FeaturesHandler(FeaturesSettings(cross_asset=False))
    h = ServiceHost(handler, bus, prefix=topic_prefix, sensor=sensor, batch=25,
                    health=Health("features", on_ready=sensor.ready))
    port = free_port()
    server = serve(port, sensor, "127.0.0.1", health=h.health)
    assert server is not None
    stop = asyncio.Event()
    task = asyncio.create_task(h.run(stop))
    lag_series = [{"service": "features", "topic": topics.CANDLE, "partition": str(p)}
                  for p in range(3)]
    try:
        deadline = time.monotonic() + 90
        while h.handled < 90 or any(
                sensor.registry.get_sample_value("meridian_consumer_lag_messages", s) != 0
                for s in lag_series):
            assert not task.done(), task.result()
            assert time.monotonic() < deadline, "host did not drain its input"
            await asyncio.sleep(0.1)
        status, body = await asyncio.to_thread(_get, port, "/readyz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        status, body = await asyncio.to_thread(_get, port, "/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        _, metrics = await asyncio.to_thread(_get, port, "/metrics")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        server.shutdown()
        server.server_close()
    assert 'meridian_ready{service="features"} 1.0' in metrics
    assert (f'meridian_handle_duration_seconds_count{{service="features",'
            f'topic="{topics.CANDLE}"}} 90.0') in metrics
    assert 'meridian_rebalances_total{service="features"} 0.0' in metrics
    for stage in ("handle", "act", "flush"):
        assert f'meridian_handler_errors_total{{service="features",stage="{stage}"}} 0.0' \
            in metrics


async def test_group_members_get_the_same_partition_numbers_of_every_input(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    """Range assignment: two members over candles and funding (3 partitions each) each get
    partition i of both topics, so a key's candles and funding meet on one replica. aiokafka's
    default (round robin over all six) splits them: member A gets candles 0 and 2 with funding 1."""
    bus = await _setup(kafka_bootstrap, topic_prefix, 0)
    inputs = [topic_prefix + topics.CANDLE, topic_prefix + topics.FUNDING]
    group = f"{topic_prefix}copartition"
    a, b = bus.consumer(group, inputs), bus.consumer(group, inputs)
    try:
        deadline = time.monotonic() + 90
        while True:
            await asyncio.gather(a.poll(0.2, 1), b.poll(0.2, 1))
            shares = [frozenset(m._consumer.assignment()) for m in (a, b)]  # type: ignore[attr-defined]
            if len(shares[0]) + len(shares[1]) == 6 and all(shares):
                break
            assert time.monotonic() < deadline, f"group did not settle: {shares}"
        for share in shares:
            numbers = {t: {tp.partition for tp in share if tp.topic == t} for t in inputs}
            assert numbers[inputs[0]] == numbers[inputs[1]], share
    finally:
        await asyncio.gather(a.stop(), b.stop())
