"""The trace context crosses a real broker: the traceparent a producer writes is the one the next
service reads, so each consumer span is the child of the span that produced its record.

Two ways: hosts in this process over the Kafka bus with every span recorded in memory (exact
parent links over two hops: ingest's publish -> features -> signals), and the services as their
own processes configured only by OTEL_* variables (console exporter), whose exported spans join
the trace this test started."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from meridian.v1 import candle_pb2
from meridian_cli.kafka_run import KafkaPipeline
from meridian_common import propagation, testing, topics, tracing
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.metrics import NullSensor
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

pytestmark = pytest.mark.integration

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01


def candle(i: int) -> candle_pb2.Candle:
    price = str(29000 + 10 * i)
    return make_candle("binance", "BTCUSDT", "1h",
                       RawCandle(T0 + i * HOUR, price, price, price, price, "1"), "test")


def _traceparent(span: ReadableSpan) -> bytes:
    ctx = span.context
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}".encode()


async def _read(bootstrap: str, topic: str, n: int, timeout_s: float = 60) -> list[object]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: list[object] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            out.extend(m for records in batches.values() for m in records)
    finally:
        await consumer.stop()
    assert len(out) >= n, f"{topic}: {len(out)} of {n} records"
    return out


async def _two_hops(bootstrap: str, prefix: str, model_dir: Path) -> list[object]:
    bus = KafkaBus(bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, 3))
    hosts = [ServiceHost(FeaturesHandler(FeaturesSettings()), bus, prefix=prefix),
             ServiceHost(SignalsHandler(SignalsSettings(model_dir=str(model_dir))), bus,
                         prefix=prefix)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(h.run(stop)) for h in hosts]
    try:
        await asyncio.wait_for(asyncio.gather(*(h.ready.wait() for h in hosts)), 60)
        producer = bus.producer()
        await publish(producer, prefix, [(topics.CANDLE, KEY, candle(i)) for i in range(3)],
                      NullSensor())
        await producer.flush()
        await producer.stop()
        while sum(h.handled for h in hosts) < 6:  # 3 candles, then 3 rows
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.05)
        return await _read(bootstrap, prefix + topics.FEATURES, 3)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


def test_the_consumer_span_is_the_child_of_the_producer_span_across_kafka(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    with testing.recording_spans() as exporter:
        rows = asyncio.run(_two_hops(kafka_bootstrap, topic_prefix, tmp_path / "models"))
        spans = exporter.get_finished_spans()

    def one(name: str, message_id: str) -> ReadableSpan:
        [span] = [s for s in spans if s.name == name
                  and (s.attributes or {}).get("meridian.message.id") == message_id]
        return span

    for i, row in enumerate(sorted(rows, key=lambda r: r.offset)):  # type: ignore[attr-defined]
        c = candle(i)
        produced = one(f"{topics.CANDLE} publish", c.meta.id)
        features = one(f"{topics.CANDLE} process", c.meta.id)
        signals = one(f"{topics.FEATURES} process", "feat:" + c.meta.id)
        assert produced.kind == SpanKind.PRODUCER
        assert produced.parent is None
        assert features.kind == signals.kind == SpanKind.CONSUMER
        # hop 1: ingest's producer span -> features' consumer span
        assert features.context.trace_id == produced.context.trace_id
        assert features.parent is not None
        assert features.parent.span_id == produced.context.span_id
        assert features.parent.is_remote  # it came from the record's header
        # hop 2: the header on the broker is features' span; signals' span is its child
        assert dict(row.headers)[propagation.TRACEPARENT] == _traceparent(features)  # type: ignore[attr-defined]
        assert signals.context.trace_id == produced.context.trace_id
        assert signals.parent is not None
        assert signals.parent.span_id == features.context.span_id
        attrs = signals.attributes or {}
        assert attrs["messaging.destination.name"] == topic_prefix + topics.FEATURES
        assert attrs["messaging.kafka.offset"] == row.offset  # type: ignore[attr-defined]
        assert attrs["messaging.destination.partition.id"] == str(row.partition)  # type: ignore[attr-defined]
        assert attrs["messaging.consumer.group.name"] == f"{topic_prefix}meridian-signals"


def _exported_spans(log: Path) -> Iterator[dict[str, object]]:
    """The console exporter's spans (indented JSON objects) among the JSON log lines."""
    decoder = json.JSONDecoder()
    text = log.read_text(errors="replace")
    i = 0
    while (start := text.find("{", i)) >= 0:
        try:
            obj, i = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            i = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj and "kind" in obj:
            yield obj


def test_services_configured_by_otel_variables_join_the_trace(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    env = {"MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap, "MERIDIAN_TOPIC_PREFIX": topic_prefix,
           "OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "200",
           "MERIDIAN_SIGNALS_MODEL_DIR": str(tmp_path / "models")}
    with testing.recording_spans() as exporter:
        with KafkaPipeline(env, tmp_path / "logs") as pipeline:
            pipeline.start(("features", "signals"))

            async def scenario() -> list[object]:
                bus = KafkaBus(kafka_bootstrap)
                await bus.ensure_topics(all_topic_configs(topic_prefix, 3))
                producer = bus.producer()
                await publish(producer, topic_prefix, [(topics.CANDLE, KEY, candle(0))],
                              NullSensor())
                await producer.stop()
                return await _read(kafka_bootstrap, topic_prefix + topics.SIGNAL, 1)

            asyncio.run(scenario())
            pipeline.check_alive()
        [root] = exporter.get_finished_spans()  # stop() flushed the services' exporters
    assert tracing.tracer() is None
    trace_id = f"0x{root.context.trace_id:032x}"
    by_service: dict[str, dict[str, object]] = {}
    for name in ("features", "signals"):
        spans = [s for s in _exported_spans(tmp_path / "logs" / f"{name}.log")
                 if s["context"]["trace_id"] == trace_id]  # type: ignore[index]
        assert len(spans) == 1, (name, spans)
        by_service[name] = spans[0]
        assert spans[0]["resource"]["attributes"]["service.name"] == f"meridian-{name}"  # type: ignore[index]
        assert spans[0]["kind"] == str(trace.SpanKind.CONSUMER)
    features, signals = by_service["features"], by_service["signals"]
    assert features["parent_id"] == f"0x{root.context.span_id:016x}"
    assert signals["parent_id"] == features["context"]["span_id"]  # type: ignore[index]
