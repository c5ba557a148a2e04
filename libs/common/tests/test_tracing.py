"""Tracing across the bus: set-up from OTEL_* only, consumer spans as children of the record's
traceparent, outputs carrying their cause's context, trace ids in the JSON logs, and nothing at
all when tracing is off."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import ClassVar

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from meridian.v1 import candle_pb2, common_pb2, order_approved_pb2
from meridian_common import codec, host, logs, propagation, testing, topics, tracing
from meridian_common.bus.base import Record
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.config import ConfigError
from meridian_common.handler import Handler, Inbound, Outbox
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.metrics import NullSensor
from meridian_common.testing import Running, until
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
OTEL_VARS = ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
             "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
             "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME",
             "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")
log = logging.getLogger("tests.relay")


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "POLL_TIMEOUT_S", 0.01)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    tracing.shutdown()


def candle(i: int) -> candle_pb2.Candle:
    price = str(30000 + 10 * i)
    return make_candle("binance", "BTCUSDT", "1h",
                       RawCandle(T0 + i * HOUR, price, price, price, price, "1"), "test")


class Relay(Handler):
    """Candles in, a Watermark on signal.v1 per candle out. With `hold`, a candle's output waits
    for the next candle and is emitted as the continuation of the held one (caused_by)."""

    name = "relay"
    inputs: ClassVar[tuple[str, ...]] = (topics.CANDLE,)
    outputs: ClassVar[tuple[str, ...]] = (topics.SIGNAL,)

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.held: tuple[int, Context | None] | None = None

    def handle(self, msg: Inbound, out: Outbox) -> None:
        log.info("relaying", extra={"event_time_ms": msg.event_time_ms})
        if self.held is not None:
            t, cause = self.held
            with tracing.caused_by(cause):
                out.watermark(topics.SIGNAL, msg.key, t)
        if self.hold:
            self.held = (msg.event_time_ms, msg.trace_context)
        else:
            out.watermark(topics.SIGNAL, msg.key, msg.event_time_ms)


async def new_bus() -> InProcessBus:
    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs("", 3))
    return bus


async def send(bus: InProcessBus, topic: str, message: object, headers: tuple = ()) -> None:
    value, mtype = codec.encode(message)  # type: ignore[arg-type]
    await bus.producer().send(topic, KEY.encode(), value, ((codec.TYPE_HEADER, mtype), *headers))


def upstream_span() -> tuple[ReadableSpan, tuple[tuple[str, bytes], ...]]:
    """A span standing for an upstream service, and the headers its output would carry."""
    tracer = tracing.tracer()
    assert tracer is not None
    span = tracer.start_span("upstream", kind=SpanKind.CONSUMER)
    span.end()
    return span, propagation.inject(trace.set_span_in_context(span))  # type: ignore[return-value]


def traceparent(span: ReadableSpan) -> bytes:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}".encode()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


# -- set-up from the environment ----------------------------------------------------------------

def test_off_unless_the_environment_asks() -> None:
    assert tracing.exporter_names({}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "console",
                                   "OTEL_SDK_DISABLED": "true"}) == []
    assert tracing.exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == ["otlp"]
    assert tracing.exporter_names({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/t"}) \
        == ["otlp"]
    assert tracing.exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                   "OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp, console"}) == \
        ["otlp", "console"]


def test_configure_with_nothing_set_installs_no_tracer(clean_env: pytest.MonkeyPatch) -> None:
    assert tracing.configure("risk") is None
    assert tracing.tracer() is None


def test_configure_reads_the_sdk_variables(clean_env: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    clean_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    provider = tracing.configure("risk")
    assert isinstance(provider, TracerProvider)
    assert tracing.tracer() is not None
    assert provider.resource.attributes["service.name"] == "meridian-risk"
    assert isinstance(provider.sampler, ParentBasedTraceIdRatio)
    assert "0.25" in provider.sampler.get_description()
    exporters = [p.span_exporter for p in provider._active_span_processor._span_processors]  # type: ignore[attr-defined]
    assert [type(e) for e in exporters] == [OTLPSpanExporter]
    assert exporters[0]._endpoint == "http://127.0.0.1:1/v1/traces"  # the SDK's own reading

    clean_env.setenv("OTEL_SERVICE_NAME", "gate-7")
    clean_env.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = tracing.configure("risk")
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "gate-7"


@pytest.mark.parametrize(("name", "value", "named_var"), [
    ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc-web", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_TRACES_EXPORTER"),  # not installed
])
def test_a_configuration_that_cannot_work_fails_naming_the_variable(
        clean_env: pytest.MonkeyPatch, name: str, value: str, named_var: str) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=named_var):
        tracing.configure("risk")


# -- across the host ------------------------------------------------------------------------------

async def test_the_consumer_span_continues_the_records_trace_and_outputs_carry_it() -> None:
    bus = await new_bus()
    with testing.recording_spans() as spans:
        parent, headers = upstream_span()
        async with Running(ServiceHost(Relay(), bus, group="g-relay")):
            await send(bus, topics.CANDLE, candle(0), headers)
            await until(lambda: len(bus.read(topics.SIGNAL)) == 1)
        [span] = named(spans.get_finished_spans(), "md.candle.v1 process")
    ctx, up = span.get_span_context(), parent.get_span_context()
    assert span.kind == SpanKind.CONSUMER
    assert ctx.trace_id == up.trace_id
    assert span.parent is not None
    assert span.parent.span_id == up.span_id
    [record] = bus.read(topics.CANDLE)
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka", "messaging.operation.type": "process",
        "messaging.operation.name": "process", "messaging.destination.name": "md.candle.v1",
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": 0, "messaging.consumer.group.name": "g-relay",
        "messaging.kafka.message.key": KEY, "meridian.message.id": candle(0).meta.id,
    }
    [out] = bus.read(topics.SIGNAL)
    assert out.header(propagation.TRACEPARENT) == traceparent(span)


async def test_a_record_without_traceparent_starts_a_trace() -> None:
    bus = await new_bus()
    with testing.recording_spans() as spans:
        async with Running(ServiceHost(Relay(), bus)):
            await send(bus, topics.CANDLE, candle(0))
            await until(lambda: len(bus.read(topics.SIGNAL)) == 1)
        [span] = spans.get_finished_spans()
    assert span.parent is None
    assert bus.read(topics.SIGNAL)[0].header(propagation.TRACEPARENT) == traceparent(span)


async def test_an_output_caused_by_an_earlier_record_continues_that_records_trace() -> None:
    bus = await new_bus()
    with testing.recording_spans() as spans:
        _, first = upstream_span()
        _, second = upstream_span()
        async with Running(ServiceHost(Relay(hold=True), bus)):
            await send(bus, topics.CANDLE, candle(0), first)
            await send(bus, topics.CANDLE, candle(1), second)
            await until(lambda: len(bus.read(topics.SIGNAL)) == 1)
        consumed = named(spans.get_finished_spans(), "md.candle.v1 process")
    by_offset = {s.attributes["messaging.kafka.offset"]: s for s in consumed}  # type: ignore[index]
    [out] = bus.read(topics.SIGNAL)  # candle 0's, emitted while candle 1 was handled
    assert out.header(propagation.TRACEPARENT) == traceparent(by_offset[0])
    assert out.header(propagation.TRACEPARENT) != traceparent(by_offset[1])


async def test_publish_outside_a_span_starts_a_trace_with_a_producer_span() -> None:
    bus = await new_bus()
    with testing.recording_spans() as spans:
        await publish(bus.producer(), "", [(topics.CANDLE, KEY, candle(0)),
                                           (topics.CANDLE, KEY, candle(1))], NullSensor())
        roots = spans.get_finished_spans()
    assert [s.name for s in roots] == ["md.candle.v1 publish"] * 2
    assert all(s.kind == SpanKind.PRODUCER and s.parent is None for s in roots)
    assert roots[0].context.trace_id != roots[1].context.trace_id  # one trace per candle
    assert [s.attributes["meridian.message.id"] for s in roots] == \
        [candle(0).meta.id, candle(1).meta.id]  # type: ignore[index]
    records = sorted(bus.read(topics.CANDLE), key=lambda r: r.offset)
    assert [r.header(propagation.TRACEPARENT) for r in records] == \
        [traceparent(s) for s in roots]


async def test_a_dead_lettered_record_has_an_error_span() -> None:
    bus = await new_bus()
    with testing.recording_spans() as spans:
        async with Running(ServiceHost(Relay(), bus)):
            await bus.producer().send(topics.CANDLE, KEY.encode(), b"\xff\xff",
                                      ((codec.TYPE_HEADER, b"meridian.v1.Candle"),))
            await until(lambda: len(bus.read(topics.dlq(topics.CANDLE))) == 1)
        [span] = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert "cannot parse" in str(span.attributes["meridian.dead_letter.reason"])  # type: ignore[index]


async def test_with_tracing_off_nothing_is_traced_and_no_header_is_written() -> None:
    assert tracing.tracer() is None
    bus = await new_bus()
    h = ServiceHost(Relay(hold=True), bus)
    async with Running(h):
        await send(bus, topics.CANDLE, candle(0), ((propagation.TRACEPARENT, b"00-" + b"1" * 32
                                                    + b"-" + b"2" * 16 + b"-01"),))
        await send(bus, topics.CANDLE, candle(1))
        await until(lambda: len(bus.read(topics.SIGNAL)) == 1)
    [out] = bus.read(topics.SIGNAL)
    assert [name for name, _ in out.headers] == [codec.TYPE_HEADER]  # no trace header at all
    assert h._tracer is None


async def test_a_restarted_executor_fills_a_rebuilt_order_in_the_orders_trace() -> None:
    """The order is consumed (and committed) by one executor, filled by the next after a
    restart: the fill continues the order's trace from the context its record carried."""
    bus = await new_bus()
    order = order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id="o-1", event_time_ms=T0 + HOUR - 1, producer="risk"),
        client_order_id="o-1", exchange="binance", symbol="BTCUSDT",
        side=common_pb2.SIDE_BUY, quantity="0.1")
    watermark = common_pb2.Watermark(key=KEY, event_time_ms=T0 + HOUR, producer="risk")
    with testing.recording_spans():
        risk, headers = upstream_span()
        async with Running(ServiceHost(ExecutionHandler(ExecutionSettings()), bus)):
            await send(bus, topics.ORDER_APPROVED, order, headers)
            await until(lambda: len(bus.read(topics.ORDER_EVENT)) == 2)
        async with Running(ServiceHost(ExecutionHandler(ExecutionSettings()), bus)):
            await send(bus, topics.CANDLE, candle(1))
            await send(bus, topics.ORDER_APPROVED, watermark)
            await until(lambda: any(r.header(codec.TYPE_HEADER) == b"meridian.v1.Fill"
                                    for r in bus.read(topics.FILL)))
    [fill] = [r for r in bus.read(topics.FILL) if r.header(codec.TYPE_HEADER) ==
              b"meridian.v1.Fill"]
    # no span of the first process survives the restart: the fill's parent is the order's producer
    assert fill.header(propagation.TRACEPARENT) == traceparent(risk)


# -- logs -----------------------------------------------------------------------------------------

def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("relay"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield stream
    log.removeHandler(handler)


async def test_log_lines_inside_a_span_carry_its_trace_and_span_ids(
        log_stream: io.StringIO) -> None:
    bus = await new_bus()
    log.info("before any span")
    with testing.recording_spans() as spans:
        async with Running(ServiceHost(Relay(), bus)):
            await send(bus, topics.CANDLE, candle(0))
            await until(lambda: len(bus.read(topics.SIGNAL)) == 1)
        [span] = spans.get_finished_spans()
    outside, inside = _json_lines(log_stream)
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert inside["msg"] == "relaying"
    assert inside["trace_id"] == f"{span.context.trace_id:032x}"
    assert inside["span_id"] == f"{span.context.span_id:016x}"


def test_extract_reads_only_a_valid_traceparent() -> None:
    bad = Record("t", 0, 0, b"k", b"", (("traceparent", b"garbage"),))
    assert propagation.Remote(bad).context is None
    assert not propagation.has_span(propagation.extract(bad.headers))
