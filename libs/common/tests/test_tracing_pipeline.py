"""One trace from candle to fill through the real handlers, hosted on the in-process bus, on real
candles (BTCUSDT and ETHUSDT, January 2021, the shared data), published as ingest publishes, the
features, signals, risk, execution and ledger handlers run as the embedded pipeline runs them
(`meridian_cli.pipeline`, without the database). And tracing changes no output: a run with
tracing off publishes exactly the same records, and no span."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, Tracer
from opentelemetry.trace import SpanKind

from meridian.v1 import candle_pb2
from meridian_common import codec, config, host, propagation, testing, topics, tracing
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.handler import Item
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.metrics import NullSensor
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ingest.commands import candle_stream
from meridian_ingest.settings import IngestSettings
from meridian_ingest.sources import Routed
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

SLICE = {"symbols": "BTCUSDT,ETHUSDT", "start": "2021-01-01", "end": "2021-02-01"}
OUTPUTS = (topics.CANDLE, topics.FEATURES, topics.SIGNAL, topics.RISK_DECISION,
           topics.ORDER_APPROVED, topics.ORDER_EVENT, topics.FILL, topics.PORTFOLIO)


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "POLL_TIMEOUT_S", 0.01)


async def run_pipeline(model_dir: Path) -> InProcessBus:
    """The slice through every service; returns the bus once every record is handled.

    Live-like: one candle close at a time (ETH's candle before BTC's), each handled everywhere
    before the next is published. So an order reaches the executor before the candle that
    fills it, ETH's row waits for BTC's return and the gate holds one symbol's signal for the
    other's: every place where an output is emitted while a later record is handled."""
    common = config.load(config.CommonSettings, environ={})
    ingest = config.load(IngestSettings, environ={}, **SLICE)
    bus = InProcessBus(common.partitions)
    await bus.ensure_topics(all_topic_configs("", common.partitions))
    handlers = [
        FeaturesHandler(config.load(FeaturesSettings, environ={})),
        SignalsHandler(config.load(SignalsSettings, environ={}, model_dir=str(model_dir))),
        RiskHandler(config.load(RiskSettings, environ={})),
        ExecutionHandler(config.load(ExecutionSettings, environ={})),
        LedgerHandler(config.load(LedgerSettings, environ={}), None),
    ]
    hosts = [ServiceHost(h, bus) for h in handlers]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(h.run(stop)) for h in hosts]
    try:
        await asyncio.wait_for(asyncio.gather(*(h.ready.wait() for h in hosts)), 30)
        for step in _steps(candle_stream(common, ingest)):
            await publish(bus.producer(), "", step, NullSensor())  # ingest's path
            await _drained(bus, tasks)
    finally:
        stop.set()
        for subs in bus._subscribers.values():
            for consumer in subs:
                consumer.wake.set()
        await asyncio.gather(*tasks)
    assert sum(h.dead_letters for h in hosts) == 0
    return bus


def _steps(stream: Iterable[candle_pb2.Candle | Routed]) -> Iterator[list[Item]]:
    """The replay's items, one candle close at a time, the symbols in reverse order."""
    step: list[Item] = []
    for item in stream:
        if isinstance(item, Routed):
            yield [(item.topic, item.key, item.message)]
            continue
        if step and step[0][2].meta.event_time_ms != item.meta.event_time_ms:  # type: ignore[attr-defined]
            yield step[::-1]
            step = []
        step.append((topics.CANDLE, topics.market_key(item.exchange, item.symbol), item))
    if step:
        yield step[::-1]


async def _drained(bus: InProcessBus, tasks: list[asyncio.Task[None]]) -> None:
    for _ in range(10_000):
        for task in tasks:
            if task.done():
                task.result()  # a service failed: raise its error
        consumers = [c for subs in bus._subscribers.values() for c in subs]
        if bus.lag() == 0 and all(c.idle for c in consumers):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the pipeline did not drain")


@dataclass(frozen=True)
class Traced:
    bus: InProcessBus
    spans: tuple[ReadableSpan, ...]
    # (span name, consumer group or "", meridian.message.id) -> spans
    index: dict[tuple[str, str, str], list[ReadableSpan]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for s in self.spans:
            attrs = s.attributes or {}
            key = (s.name, str(attrs.get("messaging.consumer.group.name", "")),
                   str(attrs.get("meridian.message.id", "")))
            self.index.setdefault(key, []).append(s)

    def _one(self, key: tuple[str, str, str]) -> ReadableSpan:
        found = self.index.get(key, [])
        assert len(found) == 1, (key, len(found))
        return found[0]

    def consumed(self, service: str, topic: str, message_id: str) -> ReadableSpan:
        """The span of `service` handling the message `message_id` on `topic`."""
        return self._one((f"{topic} process", f"meridian-{service}", message_id))

    def published(self, topic: str, message_id: str) -> ReadableSpan:
        """The root span of a message published outside any span (ingest's candles)."""
        return self._one((f"{topic} publish", "", message_id))

    def messages(self, topic: str) -> list[tuple[object, bytes | None]]:
        """(decoded message, traceparent) of every record of a topic but Watermarks."""
        out = []
        for r in self.bus.read(topic):
            m = codec.decode(topic, r.value, r.header(codec.TYPE_HEADER))
            if not isinstance(m, topics.WATERMARK):
                out.append((m, r.header(propagation.TRACEPARENT)))
        return out


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Traced:
    """The slice with every span recorded (tracing is off again once it has run)."""
    with testing.recording_spans() as exporter:
        bus = asyncio.run(run_pipeline(tmp_path_factory.mktemp("models")))
        spans = exporter.get_finished_spans()
    return Traced(bus, spans)


def _traceparent(span: ReadableSpan) -> bytes:
    ctx = span.context
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}".encode()


def _child_of(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent is not None
    assert child.parent.span_id == parent.context.span_id, (child.name, parent.name)


def test_one_trace_from_candle_to_fill(traced: Traced) -> None:
    fills = [m for m, _ in traced.messages(topics.FILL)]
    assert fills, "the slice must trade"
    decisions = {m.meta.cause_id: m for m, _ in traced.messages(topics.RISK_DECISION)}  # type: ignore[attr-defined]
    orders = {m.client_order_id: m for m, _ in traced.messages(topics.ORDER_APPROVED)}  # type: ignore[attr-defined]
    signals = {m.meta.id: m for m, _ in traced.messages(topics.SIGNAL)}  # type: ignore[attr-defined]
    entries = [f for f in fills if f.client_order_id in orders]  # type: ignore[attr-defined]
    assert entries
    checked = 0
    for fill in entries:
        order = orders[fill.client_order_id]  # type: ignore[attr-defined]
        signal = signals[order.signal_id]
        features_id = signal.meta.cause_id
        candle_id = features_id.removeprefix("feat:")
        # candle -> features -> signal -> risk -> execution -> ledger, each the previous' child
        root = traced.published(topics.CANDLE, candle_id)
        features = traced.consumed("features", topics.CANDLE, candle_id)
        signals_span = traced.consumed("signals", topics.FEATURES, features_id)
        risk = traced.consumed("risk", topics.SIGNAL, signal.meta.id)
        decision = traced.consumed("ledger", topics.RISK_DECISION, decisions[signal.meta.id]
                                   .meta.id)
        order_span = traced.consumed("execution", topics.ORDER_APPROVED, order.meta.id)
        fill_span = traced.consumed("ledger", topics.FILL, fill.fill_id)  # type: ignore[attr-defined]
        assert root.parent is None
        assert root.kind == SpanKind.PRODUCER
        _child_of(features, root)
        _child_of(signals_span, features)
        _child_of(risk, signals_span)
        _child_of(decision, risk)
        _child_of(order_span, risk)
        _child_of(fill_span, order_span)  # not the later candle's: the order's
        assert all(s.kind == SpanKind.CONSUMER for s in (features, signals_span, risk,
                                                           decision, order_span, fill_span))
        # the order's events, the last (FILLED) emitted with the fill, are in the order's trace
        events = [tp for m, tp in traced.messages(topics.ORDER_EVENT)
                  if m.client_order_id == order.client_order_id]  # type: ignore[attr-defined]
        assert len(events) >= 3  # created, open, filled
        assert set(events) == {_traceparent(order_span)}
        checked += 1
    assert checked == len(entries)


def test_the_fill_is_in_the_orders_trace_not_the_filling_candles(traced: Traced) -> None:
    """Live-like arrival: the executor makes the fill while it handles the next candle, yet
    the fill is not in that candle's trace."""
    orders = {m.client_order_id for m, _ in traced.messages(topics.ORDER_APPROVED)}  # type: ignore[attr-defined]
    checked = 0
    for fill, tp in traced.messages(topics.FILL):
        if fill.client_order_id not in orders:  # type: ignore[attr-defined]
            continue  # a protective exit: made on (and traced with) its candle
        candle_id = (f"{fill.exchange}:{fill.symbol}:1h:"  # type: ignore[attr-defined]
                     f"{fill.meta.event_time_ms}:r0")  # type: ignore[attr-defined]
        filling = traced.consumed("execution", topics.CANDLE, candle_id)
        assert tp is not None
        assert tp.split(b"-")[1].decode() != f"{filling.context.trace_id:032x}"
        checked += 1
    assert checked


def test_marks_continue_their_candles_trace(traced: Traced) -> None:
    marks = traced.messages(topics.PORTFOLIO)
    assert marks
    for mark, tp in marks[:200]:
        candle = traced.published(topics.CANDLE, mark.meta.cause_id)  # type: ignore[attr-defined]
        assert tp is not None
        assert tp.split(b"-")[1].decode() == f"{candle.context.trace_id:032x}"


def test_tracing_off_publishes_the_same_records_and_no_span(
        traced: Traced, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("trace work with tracing off")

    assert tracing.tracer() is None
    for name in ("extract", "inject", "Consuming", "Remote", "Stamper"):
        monkeypatch.setattr(propagation, name, never)
    monkeypatch.setattr(Tracer, "start_span", never)
    plain = asyncio.run(run_pipeline(tmp_path / "models"))
    for topic in OUTPUTS:
        for bus in (traced.bus, plain):  # every record is still there to compare (no trim)
            assert len(bus.read(topic)) == sum(bus.end_offsets(topic)), topic
        with_tracing = [(r.partition, r.offset, r.key, r.value, r.header(codec.TYPE_HEADER))
                        for r in traced.bus.read(topic)]
        without = [(r.partition, r.offset, r.key, r.value, r.header(codec.TYPE_HEADER))
                   for r in plain.read(topic)]
        assert with_tracing, topic
        assert with_tracing == without, topic
        assert all(r.header(propagation.TRACEPARENT) is not None for r in traced.bus.read(topic))
        assert all([n for n, _ in r.headers] == [codec.TYPE_HEADER] for r in plain.read(topic))
