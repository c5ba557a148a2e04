"""Paper execution: fills at the first candle open at/after the order, in any arrival order."""

from __future__ import annotations

import contextlib
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, order_approved_pb2, order_event_pb2
from meridian_common import codec, ids, topics
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.money import cash
from meridian_common.testing import interleave
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
S = order_event_pb2


def candle(i: int, open_: str | None = None) -> candle_pb2.Candle:
    o = open_ or str(30000 + 10 * i)
    return make_candle("binance", "BTCUSDT", "1h", RawCandle(T0 + i * HOUR, o, o, o, o, "1"),
                       "ingest")


def order(t: int, side: int = BUY, qty: str = "0.02853",
          signal_id: str | None = None) -> order_approved_pb2.ApprovedOrder:
    sid = signal_id or f"sig:{t}"
    coid = ids.client_order_id(sid)
    return order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=coid, cause_id="dec:" + sid, event_time_ms=t, producer="risk"),
        client_order_id=coid, signal_id=sid, exchange="binance", symbol="BTCUSDT", side=side,
        order_type=order_approved_pb2.ORDER_TYPE_MARKET, quantity=qty, strategy="ema_cross")


def wm(t: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=KEY, event_time_ms=t, producer="risk")


def inbound(msg: object) -> Inbound:
    topic = topics.CANDLE if isinstance(msg, candle_pb2.Candle) else topics.ORDER_APPROVED
    return Inbound(topic, KEY, msg)  # type: ignore[arg-type]


def run(handler: ExecutionHandler, msgs: list[object]) -> list[tuple[str, str, object]]:
    out = Outbox(handler.name)
    for m in msgs:
        handler.handle(inbound(m), out)
    return out.items


def fills(items: list[tuple[str, str, object]]) -> list[fill_pb2.Fill]:
    return [m for t, _, m in items if t == topics.FILL and isinstance(m, fill_pb2.Fill)]


def events(items: list[tuple[str, str, object]]) -> list[order_event_pb2.OrderEvent]:
    return [m for t, _, m in items if t == topics.ORDER_EVENT]  # type: ignore[misc]


def fill_watermarks(items: list[tuple[str, str, object]]) -> list[int]:
    return [m.event_time_ms for t, _, m in items
            if t == topics.FILL and isinstance(m, common_pb2.Watermark)]


def test_order_before_its_candle_fills_at_the_candle_open() -> None:
    handler = ExecutionHandler(ExecutionSettings())
    o = order(T0 + HOUR)  # decided at candle 0's close
    items = run(handler, [candle(0), o])
    assert fills(items) == []
    items = run(handler, [candle(1, "30012.5")])
    (f,) = fills(items)
    assert f.price == "30012.5"
    assert f.meta.event_time_ms == T0 + HOUR
    assert f.quantity == "0.02853"
    assert f.side == BUY
    assert f.fill_id == f.meta.id == ids.fill_id(o.client_order_id, 1)
    assert f.meta.cause_id == o.client_order_id
    assert f.client_order_id == o.client_order_id
    assert (f.exchange, f.symbol, f.fee_currency) == ("binance", "BTCUSDT", "USDT")
    assert f.liquidity == fill_pb2.LIQUIDITY_TAKER
    codec.validate(f)


def test_late_order_fills_at_the_same_buffered_candle() -> None:
    o = order(T0 + HOUR)
    early = run(ExecutionHandler(ExecutionSettings()),
                [candle(0), o, candle(1, "30012.5"), candle(2, "31000")])
    late = run(ExecutionHandler(ExecutionSettings()),
               [candle(0), candle(1, "30012.5"), candle(2, "31000"), o])
    assert len(fills(early)) == 1
    assert [codec.encode(f) for f in fills(early)] == [codec.encode(f) for f in fills(late)]
    assert fills(late)[0].price == "30012.5"


def test_order_between_opens_fills_at_next_open() -> None:
    handler = ExecutionHandler(ExecutionSettings())
    items = run(handler, [candle(0), candle(1), candle(2), order(T0 + HOUR + 1)])
    # candle 2 waits until no order before its open can still come (an exit there would
    # change the position its stops act on)
    assert fills(items) == []
    items = run(handler, [wm(T0 + 2 * HOUR)])
    assert fills(items)[0].meta.event_time_ms == T0 + 2 * HOUR
    assert fills(items)[0].price == "30020"


def test_fee_is_quantity_times_price_times_taker_fee() -> None:
    s = ExecutionSettings(taker_fee=Decimal("0.001"), maker_fee=Decimal("0.0002"))
    (f,) = fills(run(ExecutionHandler(s), [candle(1, "30010"), order(T0 + HOUR)]))
    expected = cash(Decimal("0.02853") * Decimal("30010") * Decimal("0.001"))
    assert Decimal(f.fee) == expected == Decimal("0.8561853")


def test_slippage_against_the_taker() -> None:
    s = ExecutionSettings(slippage_bps=Decimal(10))
    buy = fills(run(ExecutionHandler(s), [candle(1, "30000"), order(T0 + HOUR, BUY)]))[0]
    sell = fills(run(ExecutionHandler(s), [candle(1, "30000"), order(T0 + HOUR, SELL)]))[0]
    assert Decimal(buy.price) == Decimal("30030")
    assert Decimal(sell.price) == Decimal("29970")


def test_order_events_created_open_then_filled() -> None:
    o = order(T0 + HOUR)
    items = run(ExecutionHandler(ExecutionSettings()), [o, candle(1, "30010")])
    created, opened, filled = events(items)
    assert created.status == S.ORDER_STATUS_PENDING_SUBMIT
    assert created.previous_status == S.ORDER_STATUS_UNSPECIFIED
    assert created.meta.id == f"{o.client_order_id}:1"
    assert opened.status == S.ORDER_STATUS_OPEN
    assert opened.previous_status == S.ORDER_STATUS_PENDING_SUBMIT
    assert opened.sequence == 2
    assert opened.meta.id == f"{o.client_order_id}:2"
    assert opened.meta.cause_id == o.meta.id
    assert opened.meta.event_time_ms == T0 + HOUR
    assert opened.filled_quantity == "0"
    assert filled.status == S.ORDER_STATUS_FILLED
    assert filled.previous_status == S.ORDER_STATUS_OPEN
    assert filled.sequence == 3
    assert filled.meta.id == f"{o.client_order_id}:3"
    assert filled.filled_quantity == o.quantity
    assert filled.average_price == "30010"
    assert filled.meta.event_time_ms == T0 + HOUR
    order_in_outbox = [t for t, _, _ in items]
    # the fill is published before the FILLED event that reports it
    assert order_in_outbox.index(topics.FILL) < order_in_outbox.index(topics.ORDER_EVENT, 2)


def test_fill_watermark_is_min_of_order_watermark_and_last_open() -> None:
    handler = ExecutionHandler(ExecutionSettings())
    assert fill_watermarks(run(handler, [candle(0), candle(1)])) == []  # no order input yet
    assert fill_watermarks(run(handler, [wm(T0 + HOUR)])) == [T0 + HOUR]
    assert fill_watermarks(run(handler, [wm(T0 + 5 * HOUR)])) == []  # candles are behind
    assert fill_watermarks(run(handler, [candle(2)])) == [T0 + 2 * HOUR]
    assert fill_watermarks(run(handler, [candle(3), candle(4)])) == [T0 + 3 * HOUR,
                                                                    T0 + 4 * HOUR]
    assert fill_watermarks(run(handler, [candle(5), candle(6)])) == [T0 + 5 * HOUR]
    assert fill_watermarks(run(handler, [wm(T0 + 4 * HOUR)])) == []  # never backwards
    assert handler.books[KEY].fill_wm == T0 + 5 * HOUR


def test_redelivered_candle_is_ignored() -> None:
    handler = ExecutionHandler(ExecutionSettings())
    run(handler, [candle(0), candle(1)])
    items = run(handler, [order(T0 + 2 * HOUR), candle(1, "1"), candle(0, "1")])
    assert fills(items) == []
    (f,) = fills(run(handler, [candle(2, "30020")]))
    assert f.price == "30020"


def test_order_whose_candle_left_the_buffer_is_rejected() -> None:
    handler = ExecutionHandler(ExecutionSettings(candle_buffer=10))
    run(handler, [candle(i) for i in range(15)])
    items = run(handler, [order(T0 + HOUR)])
    assert fills(items) == []
    created, opened, rejected = events(items)
    assert created.status == S.ORDER_STATUS_PENDING_SUBMIT
    assert opened.status == S.ORDER_STATUS_OPEN
    assert rejected.status == S.ORDER_STATUS_REJECTED
    assert rejected.previous_status == S.ORDER_STATUS_OPEN
    assert rejected.reason


def test_watermark_on_candle_topic_does_not_crash() -> None:
    """The codec lets a Watermark through on md.candle.v1 (features ignores one); execution must
    ignore it or reject it as InvalidMessage (-> DLQ), not raise an error that stops the host."""
    handler = ExecutionHandler(ExecutionSettings())
    out = Outbox("execution")
    run(handler, [order(T0 + HOUR)])
    with contextlib.suppress(InvalidMessage):
        handler.handle(Inbound(topics.CANDLE, KEY, wm(T0 + 2 * HOUR)), out)
    assert fills(out.items) == []
    (f,) = fills(run(handler, [candle(1, "30010")]))
    assert f.price == "30010"


# --- determinism over interleavings ---------------------------------------------------------


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[object], list[object], list[bool]]:
    n = draw(st.integers(min_value=1, max_value=10))
    prices = draw(st.lists(st.integers(min_value=20000, max_value=40000), min_size=n,
                           max_size=n))
    cs: list[object] = []
    for i, p in enumerate(prices):
        cs.append(candle(i, f"{p}.{i}"))
        if draw(st.integers(0, 4)) == 0:
            cs.append(candle(i, "1"))  # a redelivery (or late revision): must be ignored
    orders: list[object] = []
    t = T0 - HOUR  # the first order may precede every candle
    for _ in range(draw(st.integers(min_value=1, max_value=n + 2))):
        t += draw(st.sampled_from([HOUR, HOUR, 2 * HOUR, HOUR // 2, 1]))
        if draw(st.booleans()):
            side = draw(st.sampled_from([BUY, SELL]))
            qty = str(draw(st.integers(min_value=1, max_value=10**6)) / Decimal(10**5))
            orders.append(order(t, side, qty))
        else:
            orders.append(wm(t))
    picks = draw(st.lists(st.booleans(), min_size=len(cs) + len(orders),
                          max_size=len(cs) + len(orders)))
    return cs, orders, picks


@settings(max_examples=200, deadline=None)
@given(scenario())
def test_fills_do_not_depend_on_interleaving(case: tuple[list[object], list[object],
                                                         list[bool]]) -> None:
    cs, orders, picks = case
    mixed = interleave(cs, orders, picks)
    assert len(mixed) == len(cs) + len(orders)
    reference = ExecutionHandler(ExecutionSettings(slippage_bps=Decimal(3)))
    ref_items = run(reference, cs + orders)  # every candle first: orders fill on arrival
    handler = ExecutionHandler(ExecutionSettings(slippage_bps=Decimal(3)))
    items = run(handler, mixed)
    assert [codec.encode(f) for f in fills(items)] == [codec.encode(f) for f in fills(ref_items)]

    def by_order(evs: list[order_event_pb2.OrderEvent]) -> dict[str, list[bytes]]:
        grouped: dict[str, list[bytes]] = {}
        for e in evs:
            grouped.setdefault(e.client_order_id, []).append(codec.encode(e)[0])
        return grouped

    assert by_order(events(items)) == by_order(events(ref_items))
    # every fill is at the first candle open at/after its order
    opens = sorted({c.open_time_ms for c in cs})  # type: ignore[attr-defined]
    times = {o.client_order_id: o.meta.event_time_ms for o in orders
             if isinstance(o, order_approved_pb2.ApprovedOrder)}
    for f in fills(items):
        assert f.meta.event_time_ms == min(x for x in opens if x >= times[f.client_order_id])
    # watermark contract: increasing, and no fill ever at or before an earlier watermark
    low = 0
    for topic, _, m in items:
        if topic != topics.FILL:
            continue
        if isinstance(m, common_pb2.Watermark):
            assert m.event_time_ms > low
            low = m.event_time_ms
        else:
            assert m.meta.event_time_ms > low  # type: ignore[attr-defined]
    assert handler.books[KEY].fill_wm == reference.books[KEY].fill_wm
