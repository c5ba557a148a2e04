"""A signals restart mid-stream over real Kafka changes no signal.

Candles (real BTC and ETH hours) -> features service -> signals service, both hosted on real
Kafka. The signals host is stopped while a position is open and a new one started on the same
consumer group after more candles arrived: it rebuilds its per-key rule state by replaying
features.v1 (and control.v1) up to the committed offsets, so every signal published equals the
uninterrupted run's. The same scenario with a handler that does not rebuild proves the check
can fail: its rules restart flat and its signals after the restart differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from meridian.v1 import candle_pb2, common_pb2, signal_pb2
from meridian_common import codec, testing, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_common.metrics import NullSensor
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

pytestmark = pytest.mark.integration

START = 1_609_459_200_000  # 2021-01-01
HOURS = 1500
SYMBOLS = ("BTCUSDT", "ETHUSDT")


class NoRebuild(SignalsHandler):
    """The handler as it was: state lost on restart (the control case)."""

    rebuild_from_inputs = False


def _candles() -> list[candle_pb2.Candle]:
    out = []
    for symbol in SYMBOLS:
        rows = itertools.islice(
            CsvCandleSource(default_data_dir(), symbol, "1h").rows(start_ms=START), HOURS)
        out += [make_candle("binance", symbol, "1h", raw, "ingest") for raw in rows]
    return sorted(out, key=lambda c: (c.open_time_ms, c.symbol))


def _cut(candles: list[candle_pb2.Candle], outputs: list[Message]) -> int:
    """A candle index (whole hours, in the second half) just after an entry whose exit comes
    later: a restart there that lost the rule state would show."""
    first_open = candles[0].open_time_ms
    sent = [(m.symbol, (m.meta.event_time_ms - first_open) // 3_600_000 - 1, m.direction)
            for m in outputs if isinstance(m, signal_pb2.Signal)]
    for i, (symbol, hour, direction) in enumerate(sent):
        if hour < HOURS // 2 or direction == common_pb2.DIRECTION_FLAT:
            continue
        exit_hour = next((h for s, h, _ in sent[i + 1:] if s == symbol), HOURS)
        if exit_hour > hour + 1:
            return len(SYMBOLS) * (hour + 1)
    raise AssertionError("no open position to restart in")


@contextlib.asynccontextmanager
async def _hosted(host: ServiceHost) -> AsyncIterator[ServiceHost]:
    """A host running as a task; on exit a clean stop (the current batch is committed)."""
    stop = asyncio.Event()
    task = asyncio.create_task(host.run(stop))
    ready = asyncio.create_task(host.ready.wait())
    await asyncio.wait([task, ready], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert host.ready.is_set(), "host not ready within 60 s"
    try:
        yield host
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def _count(bus: KafkaBus, topic: str) -> int:
    return sum(await bus.topic_ends(topic))


async def _until(bus: KafkaBus, topic: str, n: int) -> None:
    for _ in range(1200):
        if await _count(bus, topic) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic} did not reach {n} records")


@dataclass
class Outcome:
    published: dict[str, list[bytes]]  # every signal on the topic, by id
    reference: dict[str, bytes]  # the uninterrupted run's, by id
    before: set[str]  # ids published before the restart
    registry: CollectorRegistry  # the restarted handler's metrics


async def _scenario(handler_type: type[SignalsHandler], bootstrap: str, prefix: str,
                    model_dir: Path) -> Outcome:
    """Run the pipeline with a restart of signals."""
    candles = _candles()
    rows = [m for _, _, m in testing.feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE,
                                          candles)]
    reference_handler = SignalsHandler(SignalsSettings(model_dir=str(model_dir)))
    await reference_handler.start()
    outputs = [m for _, _, m in testing.feed(reference_handler, topics.FEATURES, rows)]
    reference = {m.meta.id: codec.encode(m)[0] for m in outputs
                 if isinstance(m, signal_pb2.Signal)}
    cut = _cut(candles, outputs)

    bus = KafkaBus(bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, 3))
    producer = bus.producer()
    features_topic, signal_topic = prefix + topics.FEATURES, prefix + topics.SIGNAL

    registry = CollectorRegistry()

    def signals_host(metrics: CollectorRegistry | None = None) -> ServiceHost:
        handler = handler_type(SignalsSettings(model_dir=str(model_dir)))
        if metrics is not None:
            handler.bind_metrics(metrics)
        return ServiceHost(handler, bus, prefix=prefix, batch=200)

    try:
        async with _hosted(ServiceHost(FeaturesHandler(FeaturesSettings()), bus, prefix=prefix,
                                       batch=200)):
            async with _hosted(signals_host()):
                await publish(producer, prefix, [(topics.CANDLE, topics.market_key(
                    c.exchange, c.symbol), c) for c in candles[:cut]], NullSensor())
                await producer.flush()
                await _until(bus, signal_topic, cut)  # one output per features row
            assert await _count(bus, features_topic) == cut
            before = set(await _signals(bus, prefix))
            await publish(producer, prefix, [(topics.CANDLE, topics.market_key(
                c.exchange, c.symbol), c) for c in candles[cut:]], NullSensor())
            await producer.flush()
            async with _hosted(signals_host(registry)):
                await _until(bus, signal_topic, len(candles))
    finally:
        await producer.stop()
    return Outcome(await _signals(bus, prefix), reference, before, registry)


async def _signals(bus: KafkaBus, prefix: str) -> dict[str, list[bytes]]:
    published: dict[str, list[bytes]] = {}
    for m in await testing.read_topic(bus, prefix, topics.SIGNAL):
        if isinstance(m, signal_pb2.Signal):
            published.setdefault(m.meta.id, []).append(codec.encode(m)[0])
    return published


async def test_a_restarted_signals_service_emits_the_uninterrupted_signals(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    run = await _scenario(SignalsHandler, kafka_bootstrap, topic_prefix, tmp_path / "models")
    assert len(run.reference) > 20  # entries and exits of both symbols in the slice
    assert set(run.published) == set(run.reference)
    for signal_id, copies in run.published.items():
        assert copies == [run.reference[signal_id]]  # exactly once (clean stop), same bytes
    # the restarted handler counted what it published, not the signals its rebuild replayed
    after = len(run.published) - len(run.before)
    assert 0 < after < len(run.published)
    counted = sum(run.registry.get_sample_value("meridian_signals_total", {
        "direction": d, "model_version": ""}) or 0.0 for d in ("long", "short", "flat"))
    assert counted == after


async def test_without_the_rebuild_the_restart_changes_signals(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """The control case: the same restart with the rule state lost (rules restart flat)."""
    run = await _scenario(NoRebuild, kafka_bootstrap, topic_prefix, tmp_path / "models")
    assert set(run.published) != set(run.reference)
