"""Paper stops, take-profits, limit orders and reduce-only rules, hand-checked on small candles;
and fills that do not depend on how candles and orders interleave when stops are in play."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, order_approved_pb2, order_event_pb2
from meridian_common import codec, ids, orders, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.money import cash
from meridian_common.testing import interleave
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
FEES = ExecutionSettings(taker_fee=Decimal("0.001"), maker_fee=Decimal("0.0002"))


def bar(i: int, o: str, h: str, low: str, c: str | None = None) -> candle_pb2.Candle:
    return make_candle("binance", "BTCUSDT", "1h",
                       RawCandle(T0 + i * HOUR, o, h, low, c or o, "1"), "ingest")


def order(i: int, side: int = BUY, qty: str = "1", *, sl: str = "", tp: str = "",
          reduce_only: bool = False, limit: str = "", trailing: str = "", leverage: str = "",
          mmr: str = "", name: str | None = None) -> order_approved_pb2.ApprovedOrder:
    sid = name or f"sig:{i}:{side}"
    coid = ids.client_order_id(sid)
    return order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=coid, event_time_ms=T0 + i * HOUR, producer="risk"),
        client_order_id=coid, signal_id=sid, exchange="binance", symbol="BTCUSDT", side=side,
        order_type=order_approved_pb2.ORDER_TYPE_LIMIT if limit else
        order_approved_pb2.ORDER_TYPE_MARKET,
        quantity=qty, limit_price=limit, stop_loss=sl, take_profit=tp,
        reduce_only=reduce_only, trailing_stop=trailing, leverage=leverage,
        maintenance_margin_rate=mmr, strategy="t")


def wm(i: int) -> common_pb2.Watermark:
    """The risk gate's promise: no order at or before candle i's open is still to come."""
    return common_pb2.Watermark(key=KEY, event_time_ms=T0 + i * HOUR, producer="risk")


def run(handler: ExecutionHandler, msgs: list[object]) -> list[tuple[str, str, object]]:
    out = Outbox(handler.name)
    for m in msgs:
        topic = topics.CANDLE if isinstance(m, candle_pb2.Candle) else topics.ORDER_APPROVED
        handler.handle(Inbound(topic, KEY, m), out)  # type: ignore[arg-type]
    return out.items


def fills(items: list[tuple[str, str, object]]) -> list[fill_pb2.Fill]:
    return [m for t, _, m in items if t == topics.FILL and isinstance(m, fill_pb2.Fill)]


def statuses(items: list[tuple[str, str, object]], coid: str) -> list[str]:
    return [orders.name(m.status) for t, _, m in items  # type: ignore[attr-defined]
            if t == topics.ORDER_EVENT and m.client_order_id == coid]  # type: ignore[attr-defined]


def test_stop_loss_fills_at_the_stop_as_a_slipped_taker() -> None:
    s = ExecutionSettings(taker_fee=Decimal("0.001"), slippage_bps=Decimal(10))
    entry = order(1, sl="29000", tp="32000")
    items = run(ExecutionHandler(s), [
        entry, bar(1, "30000", "30500", "29500"), wm(2), bar(2, "29600", "29700", "28900")])
    entry_fill, stop_fill = fills(items)
    assert Decimal(entry_fill.price) == Decimal("30030")  # 30000 + 10 bps
    stop_coid = ids.client_order_id(f"{entry.client_order_id}:stop_loss")
    assert stop_fill.client_order_id == stop_coid
    assert (stop_fill.side, stop_fill.quantity) == (SELL, "1")
    assert Decimal(stop_fill.price) == Decimal("28971")  # 29000 - 10 bps
    assert stop_fill.meta.event_time_ms == T0 + 2 * HOUR
    assert stop_fill.liquidity == fill_pb2.LIQUIDITY_TAKER
    assert statuses(items, stop_coid) == ["PENDING_SUBMIT", "OPEN", "FILLED"]


def test_both_in_range_the_stop_wins_and_a_gap_exits_at_the_open() -> None:
    both = run(ExecutionHandler(FEES), [
        order(1, sl="29000", tp="31000"), bar(1, "30000", "31500", "28500")])
    assert [f.price for f in fills(both)] == ["30000", "29000"]
    gap = run(ExecutionHandler(FEES), [
        order(1, sl="29000"), bar(1, "30000", "30100", "29900"), wm(2),
        bar(2, "28000", "28200", "27500")])
    assert [f.price for f in fills(gap)][:2] == ["30000", "28000"]


def test_take_profit_is_a_maker_fill_at_its_price() -> None:
    items = run(ExecutionHandler(FEES), [
        order(1, side=SELL, sl="31000", tp="29000"), bar(1, "30000", "30100", "28900")])
    entry, target = fills(items)
    assert (target.side, target.price, target.liquidity) == (BUY, "29000",
                                                             fill_pb2.LIQUIDITY_MAKER)
    assert Decimal(target.fee) == cash(Decimal("29000") * Decimal("0.0002"))
    assert Decimal(entry.fee) == cash(Decimal("30000") * Decimal("0.001"))


def test_a_touch_of_the_take_profit_is_not_a_fill() -> None:
    items = run(ExecutionHandler(FEES), [order(1, tp="30500"), bar(1, "30000", "30500",
                                                                    "29900")])
    assert len(fills(items)) == 1


def test_exit_after_the_stop_is_refused_and_a_big_exit_is_capped() -> None:
    handler = ExecutionHandler(FEES)
    late_exit = order(2, side=SELL, reduce_only=True, name="exit")
    items = run(handler, [order(1, qty="2", sl="29000"), bar(1, "30000", "30100", "28000"),
                          late_exit, bar(2, "29000", "29100", "28900")])
    assert statuses(items, late_exit.client_order_id) == ["PENDING_SUBMIT", "OPEN", "REJECTED"]
    handler = ExecutionHandler(FEES)
    big = order(2, side=SELL, qty="5", reduce_only=True, name="big")
    items = run(handler, [order(1, qty="2"), bar(1, "30000", "30100", "29900"), big,
                          bar(2, "30050", "30100", "30000")])
    assert fills(items)[-1].quantity == "2"
    assert statuses(items, big.client_order_id) == ["PENDING_SUBMIT", "OPEN",
                                                    "PARTIALLY_FILLED", "CANCELED"]
    assert handler.books[KEY].position == 0


def test_limit_buy_rests_then_fills_as_maker_when_traded_through() -> None:
    handler = ExecutionHandler(FEES)
    buy = order(1, limit="29500", name="lim")
    items = run(handler, [buy, bar(1, "30000", "30100", "29500"),  # touch only
                          wm(2), bar(2, "29800", "29900", "29400")])
    (f,) = [x for x in fills(items) if x.client_order_id == buy.client_order_id]
    assert (f.price, f.liquidity, f.meta.event_time_ms) == ("29500", fill_pb2.LIQUIDITY_MAKER,
                                                            T0 + 2 * HOUR)
    marketable = order(1, limit="31000", name="mkt")
    (g,) = fills(run(ExecutionHandler(FEES), [marketable, bar(1, "30000", "30100", "29900")]))
    assert (g.price, g.liquidity) == ("30000", fill_pb2.LIQUIDITY_TAKER)


def test_limit_entry_is_protected_from_the_next_candle_on() -> None:
    handler = ExecutionHandler(FEES)
    buy = order(1, limit="29500", sl="29200", name="lim")
    # fills inside candle 1, whose low also passes the stop: unknown order inside the candle
    items = run(handler, [buy, bar(1, "30000", "30100", "29100"), wm(2),
                          bar(2, "29300", "29400", "29150")])
    assert [f.price for f in fills(items)] == ["29500", "29200"]
    assert fills(items)[1].meta.event_time_ms == T0 + 2 * HOUR


def test_trailing_stop_trails_the_best_price_before_each_candle() -> None:
    entry = order(1, trailing="0.05")
    items = run(ExecutionHandler(FEES), [
        entry, bar(1, "100", "110", "99"),  # trails from the open 100: level 95, not hit
        wm(2), bar(2, "108", "109", "104.6"),  # level from 110: 104.5, low 104.6: not hit
        wm(3), bar(3, "105", "106", "104")])  # hit at 104.5
    assert [f.price for f in fills(items)] == ["100", "104.5"]
    exit_ = fills(items)[-1]
    assert exit_.client_order_id == ids.client_order_id(f"{entry.client_order_id}:trailing_stop")
    assert exit_.meta.event_time_ms == T0 + 3 * HOUR


def test_isolated_leverage_liquidates_before_a_stop_beyond_it_and_loses_the_margin() -> None:
    # 10x isolated, mmr 0.5 %: liquidation at 100 x (1 - 0.1 + 0.005) = 90.5
    entry = order(1, sl="80", leverage="10", mmr="0.005")
    items = run(ExecutionHandler(FEES), [entry, bar(1, "100", "101", "99"),
                                         wm(2), bar(2, "95", "96", "90")])
    opened, closed = fills(items)
    assert closed.client_order_id == ids.client_order_id(f"{entry.client_order_id}:liquidation")
    assert (closed.side, closed.price, closed.liquidity) == (SELL, "90.5",
                                                             fill_pb2.LIQUIDITY_TAKER)
    assert Decimal(closed.fee) == Decimal("0.5")  # the maintenance margin left at 90.5
    loss = (Decimal(closed.price) - Decimal(opened.price)) - Decimal(closed.fee)
    assert loss == Decimal("-10")  # exactly the initial margin, 100 / 10
    # a gap through the stop and the liquidation still ends at the liquidation price
    gap = run(ExecutionHandler(FEES), [order(1, sl="80", leverage="10", mmr="0.005", name="g"),
                                       bar(1, "100", "101", "99"), wm(2),
                                       bar(2, "70", "71", "69")])
    assert fills(gap)[-1].price == "90.5"
    # a stop before the liquidation is hit first on the way down
    safe = run(ExecutionHandler(FEES), [order(1, sl="95", leverage="10", mmr="0.005", name="s"),
                                        bar(1, "100", "101", "99"), wm(2),
                                        bar(2, "97", "98", "90")])
    assert fills(safe)[-1].price == "95"


def test_stop_checked_on_the_entry_candle_itself() -> None:
    items = run(ExecutionHandler(FEES), [order(1, sl="29800"), bar(1, "30000", "30050",
                                                                    "29700")])
    assert [f.price for f in fills(items)] == ["30000", "29800"]


# -- determinism ---------------------------------------------------------------------------------


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[object], list[object], list[bool]]:
    n = draw(st.integers(min_value=2, max_value=10))
    cs: list[object] = []
    price = 30000
    for i in range(n):
        price += draw(st.integers(-800, 800))
        lo, hi = price - draw(st.integers(0, 900)), price + draw(st.integers(0, 900))
        cs.append(bar(i, str(price), str(hi), str(lo)))
    orders_: list[object] = []
    for i in range(n + 1):
        kind = draw(st.sampled_from(["entry", "exit", "none", "limit"]))
        side = draw(st.sampled_from([BUY, SELL]))
        sign = 1 if side == BUY else -1
        if kind == "entry":
            orders_.append(order(i, side, "1", sl=str(price - sign * 700),
                                 tp=str(price + sign * 900), name=f"e{i}"))
        elif kind == "exit":
            orders_.append(order(i, side, "1", reduce_only=True, name=f"x{i}"))
        elif kind == "limit":
            orders_.append(order(i, side, "1", limit=str(price - sign * 300), name=f"l{i}"))
        else:
            orders_.append(common_pb2.Watermark(key=KEY, event_time_ms=T0 + i * HOUR))
    picks = draw(st.lists(st.booleans(), min_size=len(cs) + len(orders_),
                          max_size=len(cs) + len(orders_)))
    return cs, orders_, picks


@settings(max_examples=150, deadline=None)
@given(scenario())
def test_fills_with_stops_do_not_depend_on_interleaving(
        case: tuple[list[object], list[object], list[bool]]) -> None:
    cs, orders_, picks = case
    reference = run(ExecutionHandler(FEES), cs + orders_)
    mixed = run(ExecutionHandler(FEES), interleave(cs, orders_, picks))
    assert [codec.encode(f) for f in fills(mixed)] == [codec.encode(f) for f in fills(reference)]
    events = [m for t, _, m in mixed if isinstance(m, order_event_pb2.OrderEvent)]
    ref_events = [m for t, _, m in reference if isinstance(m, order_event_pb2.OrderEvent)]
    assert sorted(codec.encode(e)[0] for e in events) == \
        sorted(codec.encode(e)[0] for e in ref_events)
    # the position never flips through a reduce-only order
    position = Decimal(0)
    reduce_only = {o.client_order_id for o in orders_
                   if isinstance(o, order_approved_pb2.ApprovedOrder) and o.reduce_only}
    for f in fills(reference):
        signed = Decimal(f.quantity) * (1 if f.side == BUY else -1)
        if f.client_order_id in reduce_only:
            assert abs(position + signed) < abs(position)
        position += signed
