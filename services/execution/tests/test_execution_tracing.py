"""Which trace each output of the paper executor continues: an order's events and fill continue
the order's, whatever record is being handled when the fill is made; a protective exit
continues the candle that triggers it. Checked on the outbox's per-output contexts, with
every input given a distinct context, in the arrival order where it matters most (candles
first, released later by the gate's watermarks)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, order_approved_pb2
from meridian_common import ids, topics, tracing
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)


def bar(i: int, o: str, h: str, low: str) -> candle_pb2.Candle:
    return make_candle("binance", "BTCUSDT", "1h", RawCandle(T0 + i * HOUR, o, h, low, o, "1"),
                       "ingest")


def order(i: int, *, sl: str = "", limit: str = "") -> order_approved_pb2.ApprovedOrder:
    coid = ids.client_order_id(f"sig:{i}")
    return order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=coid, event_time_ms=T0 + i * HOUR - 1, producer="risk"),
        client_order_id=coid, signal_id=f"sig:{i}", exchange="binance", symbol="BTCUSDT",
        side=common_pb2.SIDE_BUY, quantity="1", stop_loss=sl, limit_price=limit,
        order_type=order_approved_pb2.ORDER_TYPE_LIMIT if limit else
        order_approved_pb2.ORDER_TYPE_MARKET)


def wm(i: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=KEY, event_time_ms=T0 + i * HOUR, producer="risk")


def context(n: int) -> Context:
    """A distinct trace context per input (trace id n)."""
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(n, n, is_remote=True)))


def trace_of(cause: Context) -> int:
    return trace.get_current_span(cause).get_span_context().trace_id


def run(inputs: list[object]) -> list[tuple[object, int]]:
    """Each input handled with its own context (trace id = its index + 1) current, as the host
    does; returns every output with the trace id it continues."""
    handler = ExecutionHandler(ExecutionSettings())
    out = Outbox(handler.name, traced=True)
    for n, m in enumerate(inputs, start=1):
        topic = topics.CANDLE if isinstance(m, candle_pb2.Candle) else topics.ORDER_APPROVED
        ctx = context(n)
        with tracing.caused_by(ctx):  # current, as the host makes the record's span
            handler.handle(Inbound(topic, KEY, m, trace_context=ctx), out)  # type: ignore[arg-type]
    items, causes = out.drain_traced()
    assert causes is not None
    return [(m, trace_of(c)) for (_, _, m), c in zip(items, causes, strict=True)]


def by_order(outputs: list[tuple[object, int]], coid: str) -> set[int]:
    return {t for m, t in outputs if getattr(m, "client_order_id", None) == coid}


def test_an_orders_fill_continues_the_order_not_the_record_that_released_it() -> None:
    entry = order(1)
    # 1: the order, 2: its candle (held: the order stream has not reached its open), 3: the
    # gate's watermark that releases the candle, and with it the fill
    outputs = run([entry, bar(1, "100", "101", "99"), wm(1)])
    assert any(isinstance(m, fill_pb2.Fill) for m, _ in outputs)
    assert by_order(outputs, entry.client_order_id) == {1}


def test_a_candle_that_arrives_after_the_order_fills_it_in_the_orders_trace() -> None:
    entry = order(1)
    outputs = run([entry, wm(1), bar(1, "100", "101", "99")])
    assert by_order(outputs, entry.client_order_id) == {1}


def test_a_protective_exit_continues_the_candle_that_triggers_it() -> None:
    entry = order(1, sl="95")
    # 1 order, 2 its candle, 3 release; 4 the candle through the stop, 5 its release
    outputs = run([entry, bar(1, "100", "101", "99"), wm(1), bar(2, "98", "99", "90"), wm(2)])
    exit_coid = next(m.client_order_id for m, _ in outputs if isinstance(m, fill_pb2.Fill)
                     and m.client_order_id != entry.client_order_id)
    assert by_order(outputs, entry.client_order_id) == {1}
    assert by_order(outputs, exit_coid) == {4}  # the candle's, not the watermark's (5)


def test_a_resting_limit_order_fills_in_its_own_trace() -> None:
    entry = order(1, limit="95")
    # the limit is below the first candle (rests), the second trades through it
    outputs = run([entry, bar(1, "100", "101", "99"), wm(1), bar(2, "97", "98", "90"), wm(2)])
    assert any(isinstance(m, fill_pb2.Fill) for m, _ in outputs)
    assert by_order(outputs, entry.client_order_id) == {1}
