"""Paper executor and bots' orders: cancels, several limits filling on one candle in the shared
path order, reduce-only take-profits, rebuild after a restart; and a grid bot run through the
executor fills exactly as `bot_sim` simulates it.

Real data where prices matter: BTCUSDT 1h (Binance spot) from the shared data directory, the
window the grid bot tests use (from 2021-07-09 16:00 UTC). Rows used, `cK: open high low`:
    c1  33527.24 33574.03 33421.68
    c2  33481.06 33496.71 33342.57   first low under 33400
    c3  33382.02 33490.00 33287.00
    c4  33445.31 33549.55 33374.83
    c5  33528.03 34053.69 33444.50   first high over 34000
Hand-made candles where the test is about ordering only.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, order_approved_pb2, order_event_pb2
from meridian_common import codec, orders, topics
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.marketdata.csvfiles import CsvCandleSource, default_data_dir
from meridian_common.sizing import MarketRules
from meridian_common.strategy.bot_sim import BotSimulation
from meridian_common.strategy.grid import GridBot, GridParams
from meridian_common.strategy.intents import Bar, BotFill, CancelOrder, Intent, PlaceOrder
from meridian_common.testing import interleave
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings

KEY = "binance:BTCUSDT"
H = 3_600_000
T0 = 1_625_846_400_000  # 2021-07-09 16:00 UTC
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
MAKER, TAKER = fill_pb2.LIQUIDITY_MAKER, fill_pb2.LIQUIDITY_TAKER
FEES = ExecutionSettings(maker_fee=Decimal("0.0005"), taker_fee=Decimal("0.001"))
Q = "0.01"
Item = tuple[str, str, object]


def real(start: int, n: int) -> list[candle_pb2.Candle]:
    """Candles start .. start+n-1 of the window (index = hours from T0)."""
    source = CsvCandleSource(default_data_dir(), "BTCUSDT", "1h")
    rows = list(source.rows(T0 + start * H, T0 + (start + n) * H))
    assert len(rows) == n
    return [make_candle("binance", "BTCUSDT", "1h", raw, "ingest") for raw in rows]


def bar(i: int, o: str, h: str, low: str) -> candle_pb2.Candle:
    return make_candle("binance", "BTCUSDT", "1h", RawCandle(T0 + i * H, o, h, low, o, "1"),
                       "ingest")


def place(coid: str, side: int, at_ms: int, limit: str | None, qty: str = Q, *,
          reduce_only: bool = False, bot: str = "g1") -> order_approved_pb2.ApprovedOrder:
    """An approved placement as the gate makes it from a bot's intent (meta.id = its id)."""
    return order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=coid, cause_id=f"dec:{coid}", event_time_ms=at_ms,
                             producer="risk"),
        client_order_id=coid, signal_id=f"intent:{coid}", exchange="binance", symbol="BTCUSDT",
        side=side, order_type=order_approved_pb2.ORDER_TYPE_LIMIT if limit else
        order_approved_pb2.ORDER_TYPE_MARKET, quantity=qty, limit_price=limit or "",
        reduce_only=reduce_only, strategy=f"bot:{bot}",
        action=order_approved_pb2.ORDER_ACTION_PLACE)


def cancel(coid: str, at_ms: int, bot: str = "g1") -> order_approved_pb2.ApprovedOrder:
    """An approved cancel as the gate makes it: the target's id, meta.id '<coid>:cancel'."""
    return order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=f"{coid}:cancel", cause_id=f"dec:{coid}:cancel",
                             event_time_ms=at_ms, producer="risk"),
        client_order_id=coid, exchange="binance", symbol="BTCUSDT", strategy=f"bot:{bot}",
        action=order_approved_pb2.ORDER_ACTION_CANCEL)


def wm(at_ms: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=KEY, event_time_ms=at_ms, producer="risk")


def run(handler: ExecutionHandler, msgs: list[object]) -> list[Item]:
    out = Outbox(handler.name)
    for m in msgs:
        topic = topics.CANDLE if isinstance(m, candle_pb2.Candle) else topics.ORDER_APPROVED
        handler.handle(Inbound(topic, KEY, m), out)  # type: ignore[arg-type]
    return out.items


def fills(items: list[Item]) -> list[fill_pb2.Fill]:
    return [m for t, _, m in items if t == topics.FILL and isinstance(m, fill_pb2.Fill)]


def events(items: list[Item], coid: str | None = None) -> list[order_event_pb2.OrderEvent]:
    return [m for t, _, m in items if isinstance(m, order_event_pb2.OrderEvent)
            and (coid is None or m.client_order_id == coid)]


def statuses(items: list[Item], coid: str) -> list[str]:
    return [orders.name(e.status) for e in events(items, coid)]


def stream(candles: list[candle_pb2.Candle],
           asks: dict[int, list[order_approved_pb2.ApprovedOrder]]) -> list[object]:
    """What the executor sees from the gate and md: candle k, then what the bots asked for
    at its close c_k (`asks[k]`), then the gate's watermark c_k."""
    msgs: list[object] = []
    for c in candles:
        k = (c.open_time_ms - T0) // H
        close = c.open_time_ms + H
        msgs += [c, *asks.get(k, []), wm(close)]
    return msgs


# -- (a) cancel one of two resting limits ----------------------------------------------------


def test_a_canceled_limit_never_fills_and_the_other_one_does() -> None:
    buy, sell = place("g1-1-1", BUY, T0 + H, "33400"), place("g1-3-2", SELL, T0 + H, "34000")
    asks = {0: [buy, sell], 1: [cancel("g1-1-1", T0 + 2 * H)]}
    items = run(ExecutionHandler(FEES), stream(real(0, 6), asks))
    assert statuses(items, "g1-1-1") == ["PENDING_SUBMIT", "OPEN", "CANCELED"]
    canceled = events(items, "g1-1-1")[-1]
    assert canceled.previous_status == order_event_pb2.ORDER_STATUS_OPEN
    assert canceled.meta.event_time_ms == T0 + 2 * H  # the cancel's event time: c1's close
    assert canceled.reason == "canceled by bot:g1"
    assert canceled.meta.id == "g1-1-1:3"  # the order's own sequence, no second order
    assert canceled.filled_quantity == "0"
    # c2 trades through 33400 but the buy is gone; the sell fills as a maker on c5
    (f,) = fills(items)
    assert (f.client_order_id, f.price, f.liquidity, f.meta.event_time_ms) == \
        ("g1-3-2", "34000", MAKER, T0 + 5 * H)
    assert statuses(items, "g1-3-2") == ["PENDING_SUBMIT", "OPEN", "FILLED"]
    # the same stream without the cancel: the buy fills on c2 (the cancel is what stopped it)
    control = run(ExecutionHandler(FEES), stream(real(0, 6), {0: [buy, sell]}))
    assert [(x.client_order_id, x.price, x.meta.event_time_ms) for x in fills(control)] == \
        [("g1-1-1", "33400", T0 + 2 * H), ("g1-3-2", "34000", T0 + 5 * H)]


def test_a_canceled_market_order_never_fills() -> None:
    handler = ExecutionHandler(FEES)
    items = run(handler, [*real(0, 1), place("g1-init-1", BUY, T0 + H, None),
                          cancel("g1-init-1", T0 + H), wm(T0 + H), *real(1, 2)])
    assert fills(items) == []
    assert statuses(items, "g1-init-1") == ["PENDING_SUBMIT", "OPEN", "CANCELED"]
    assert handler.books[KEY].pending == []


def test_a_cancel_never_undoes_a_fill_on_a_candle_before_it() -> None:
    """A market order between two opens, its candle received but not evaluated yet (the order
    stream had not reached its open), then a cancel one candle later: the candle before the
    cancel is final, the order fills there and the cancel finds nothing."""
    handler = ExecutionHandler(FEES)
    items = run(handler, [*real(0, 1), place("g1-init-1", BUY, T0 + H - 1, None), *real(1, 1)])
    assert fills(items) == []  # c1 waits: an order before its open could still come
    items = run(handler, [cancel("g1-init-1", T0 + 2 * H)])
    (f,) = fills(items)
    assert (f.client_order_id, f.price, f.meta.event_time_ms) == \
        ("g1-init-1", "33527.24", T0 + H)
    assert statuses(items, "g1-init-1") == ["FILLED"]


def test_a_cancel_ahead_of_the_candles_acts_from_its_own_time() -> None:
    """Orders and cancels ahead of the market data (a replay): the buy at 33300 placed at c0's
    close and canceled at c3's close fills on c3 (low 33287, before the cancel); the buy at 33400
    canceled at c1's close is gone before c2 could fill it, and says so at c1's close."""
    handler = ExecutionHandler(FEES)
    asks = run(handler, [place("g1-0-1", BUY, T0 + H, "33300"),
                         place("g1-1-2", BUY, T0 + H, "33400"), wm(T0 + H),
                         cancel("g1-1-2", T0 + 2 * H), wm(T0 + 2 * H), wm(T0 + 3 * H),
                         cancel("g1-0-1", T0 + 4 * H), wm(T0 + 4 * H)])
    assert events(asks) == events(asks, "g1-0-1")[:2] + events(asks, "g1-1-2")[:2]
    items = run(handler, real(0, 6))
    assert [(f.client_order_id, f.meta.event_time_ms) for f in fills(items)] == \
        [("g1-0-1", T0 + 3 * H)]
    assert statuses(items, "g1-1-2") == ["CANCELED"]
    assert events(items, "g1-1-2")[0].meta.event_time_ms == T0 + 2 * H
    assert statuses(items, "g1-0-1") == ["FILLED"]


def test_several_bot_orders_at_one_time_all_count_when_their_candle_is_already_in() -> None:
    """A bot asks for several orders at once (one event time); with the candle at that time
    already received (a replay), the first must not release it before the others came."""
    handler = ExecutionHandler(FEES)
    run(handler, real(0, 3))
    items = run(handler, [place("g1-init-1", BUY, T0 + H, None),
                          place("g1-1-2", BUY, T0 + H, "33400"),
                          place("g1-init-3", BUY, T0 + H, None)])
    assert fills(items) == []  # c1 waits for the gate's watermark
    items = run(handler, [wm(T0 + H)])
    assert [(f.client_order_id, f.price) for f in fills(items)] == \
        [("g1-init-1", "33527.24"), ("g1-init-3", "33527.24")]
    assert not [e for e in events(items) if e.status == orders.REJECTED]
    items = run(handler, [wm(T0 + 2 * H)])
    assert [(f.client_order_id, f.price) for f in fills(items)] == [("g1-1-2", "33400")]


# -- (b) several limits on one candle: the shared path order ------------------------------------


def test_limits_filling_on_one_candle_come_in_path_order() -> None:
    """Placed: a buy at 29500, a sell at 30200, a buy at 29800, a marketable buy at 30100.
    Candle 1 (open 30000, high 30300, low 29400) fills all four: the one at the open first, then
    the buys from the highest down, then the sell, whatever the placement order."""
    t = T0 + H
    placed = [place("g1-0-1", BUY, t, "29500"), place("g1-2-2", SELL, t, "30200"),
              place("g1-1-3", BUY, t, "29800"), place("g1-3-4", BUY, t, "30100")]
    items = run(ExecutionHandler(FEES), [bar(0, "30000", "30000", "30000"), *placed, wm(t),
                                         bar(1, "30000", "30300", "29400")])
    got = [(f.client_order_id, f.price, f.liquidity) for f in fills(items)]
    assert got == [("g1-3-4", "30000", TAKER), ("g1-1-3", "29800", MAKER),
                   ("g1-0-1", "29500", MAKER), ("g1-2-2", "30200", MAKER)]
    assert all(f.meta.event_time_ms == t for f in fills(items))
    # every FILLED event right after its own fill, in the same order
    filled = [e.client_order_id for e in events(items) if e.status == orders.FILLED]
    assert filled == [c for c, _, _ in got]
    sequence = [("fill" if isinstance(m, fill_pb2.Fill) else "FILLED", m.client_order_id)
                for _, _, m in items if isinstance(m, fill_pb2.Fill) or (
                    isinstance(m, order_event_pb2.OrderEvent) and m.status == orders.FILLED)]
    assert sequence == [x for c, _, _ in got for x in (("fill", c), ("FILLED", c))]


def test_a_single_resting_limit_is_unchanged() -> None:
    handler = ExecutionHandler(FEES)
    items = run(handler, stream(real(0, 3), {0: [place("g1-1-1", BUY, T0 + H, "33400")]}))
    (f,) = fills(items)
    assert (f.price, f.liquidity, f.fee, f.meta.event_time_ms) == \
        ("33400", MAKER, "0.167", T0 + 2 * H)
    assert handler.books[KEY].position == Decimal(Q)


# -- reduce-only take-profit ----------------------------------------------------------------------


def test_a_reduce_only_take_profit_rests_and_is_capped_to_the_position() -> None:
    """Bought 0.01 at c1's open; a reduce-only limit sell of 0.02 at 34000 rests until c5 and
    sells only the 0.01 held."""
    asks = {0: [place("d1-1-b", BUY, T0 + H, None)],
            1: [place("d1-1-tp", SELL, T0 + 2 * H, "34000", "0.02", reduce_only=True)]}
    handler = ExecutionHandler(FEES)
    items = run(handler, stream(real(0, 6), asks))
    assert [(f.client_order_id, f.quantity, f.price, f.meta.event_time_ms)
            for f in fills(items)] == [("d1-1-b", Q, "33527.24", T0 + H),
                                       ("d1-1-tp", Q, "34000", T0 + 5 * H)]
    assert statuses(items, "d1-1-tp") == ["PENDING_SUBMIT", "OPEN", "PARTIALLY_FILLED",
                                          "CANCELED"]
    assert handler.books[KEY].position == 0


def test_a_reduce_only_take_profit_with_nothing_to_reduce_is_refused_at_its_fill() -> None:
    items = run(ExecutionHandler(FEES), stream(real(0, 6), {
        0: [place("d1-1-tp", SELL, T0 + H, "34000", reduce_only=True)]}))
    assert fills(items) == []
    assert statuses(items, "d1-1-tp") == ["PENDING_SUBMIT", "OPEN", "REJECTED"]
    assert events(items, "d1-1-tp")[-1].meta.event_time_ms == T0 + 5 * H


# -- (c), (d) cancels that find nothing ---------------------------------------------------------


def test_a_cancel_of_an_unknown_id_only_advances_the_watermark(
        caplog: pytest.LogCaptureFixture) -> None:
    handler = ExecutionHandler(FEES)
    run(handler, [*real(0, 3), wm(T0 + H)])
    with caplog.at_level(logging.INFO, logger="meridian_execution.handler"):
        items = run(handler, [cancel("g1-nope-1", T0 + 2 * H)])
    # a bot's record vouches for the time before it (more records at t may follow): the fill
    # watermark moves to t - 1 at once, and to t with the gate's watermark, as for any order
    (topic, key, mark), = items  # the fill watermark, nothing else
    assert (topic, key) == (topics.FILL, KEY)
    assert isinstance(mark, common_pb2.Watermark)
    assert mark.event_time_ms == T0 + 2 * H - 1
    assert handler.books[KEY].order_wm == T0 + 2 * H - 1
    (topic, key, mark), = run(handler, [wm(T0 + 2 * H)])
    assert (topic, mark.event_time_ms) == (topics.FILL, T0 + 2 * H)  # type: ignore[attr-defined]
    assert handler.books[KEY].done_open == T0 + 2 * H
    assert [r.client_order_id for r in caplog.records  # type: ignore[attr-defined]
            if "cancel" in r.getMessage()] == ["g1-nope-1"]


def test_a_cancel_after_the_fill_or_a_second_cancel_emits_nothing() -> None:
    handler = ExecutionHandler(FEES)
    run(handler, stream(real(0, 3), {0: [place("g1-1-1", BUY, T0 + H, "33400"),
                                         place("g1-3-2", SELL, T0 + H, "34000")]}))
    assert handler.books[KEY].position == Decimal(Q)  # the buy filled on c2
    late = run(handler, [cancel("g1-1-1", T0 + 3 * H)])  # the bot's cancel raced the fill
    assert events(late) == []
    assert fills(late) == []
    assert [r.order.client_order_id for r in handler.books[KEY].resting] == ["g1-3-2"]
    first = run(handler, [cancel("g1-3-2", T0 + 3 * H)])
    assert statuses(first, "g1-3-2") == ["CANCELED"]
    again = run(handler, [cancel("g1-3-2", T0 + 3 * H)])  # redelivered
    assert events(again) == []
    assert handler.books[KEY].resting == []


# -- (e) rebuild after a restart ------------------------------------------------------------------


def _bot_stream() -> list[object]:
    return stream(real(0, 8), {
        0: [place("g1-init-1", BUY, T0 + H, None, "0.02"), place("g1-1-2", BUY, T0 + H, "33400"),
            place("g1-3-3", SELL, T0 + H, "34000", reduce_only=True)],
        1: [cancel("g1-1-2", T0 + 2 * H), place("g1-0-4", BUY, T0 + 2 * H, "33300")],
        2: [cancel("g1-nope", T0 + 3 * H)],
        4: [cancel("g1-3-3", T0 + 5 * H)],  # before c5, whose high would have filled it
    })


def test_a_rebuild_from_the_inputs_equals_the_live_state_and_continues_alike() -> None:
    msgs = _bot_stream()
    live = ExecutionHandler(FEES)
    live_items = run(live, msgs)
    assert statuses(live_items, "g1-1-2") == ["PENDING_SUBMIT", "OPEN", "CANCELED"]
    assert statuses(live_items, "g1-3-3") == ["PENDING_SUBMIT", "OPEN", "CANCELED"]
    assert statuses(live_items, "g1-0-4") == ["PENDING_SUBMIT", "OPEN", "FILLED"]  # c3 < 33300
    for cut in range(1, len(msgs)):
        rebuilt = ExecutionHandler(FEES)
        rebuilt.replaying = True  # type: ignore[attr-defined]  # the host's rebuild
        run(rebuilt, msgs[:cut])
        rebuilt.replaying = False  # type: ignore[attr-defined]
        reference = ExecutionHandler(FEES)
        run(reference, msgs[:cut])
        assert rebuilt.books == reference.books
        assert rebuilt.fills == reference.fills
        # records after the committed offset handled again: the same bytes as the first time
        after = run(rebuilt, msgs[cut:])
        first_time = run(reference, msgs[cut:])
        assert [codec.encode(m)[0] for _, _, m in after] == \
            [codec.encode(m)[0] for _, _, m in first_time]  # type: ignore[arg-type]
    assert rebuilt.books == live.books


# -- determinism with cancels --------------------------------------------------------------------


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[object], list[object], list[bool]]:
    n = draw(st.integers(min_value=2, max_value=8))
    cs: list[object] = []
    price = 30000
    for i in range(n):
        price += draw(st.integers(-600, 600))
        lo, hi = price - draw(st.integers(0, 700)), price + draw(st.integers(0, 700))
        cs.append(bar(i, str(price), str(hi), str(lo)))
    asks: list[object] = []
    made: list[str] = []
    for i in range(1, n + 1):
        t = T0 + i * H
        for j in range(draw(st.integers(0, 3))):
            if made and draw(st.integers(0, 2)) == 0:
                asks.append(cancel(draw(st.sampled_from(made)), t))
                continue
            coid = f"g1-{i}-{j}"
            side = draw(st.sampled_from([BUY, SELL]))
            limit = None if draw(st.integers(0, 4)) == 0 else \
                str(30000 + draw(st.integers(-1200, 1200)))
            asks.append(place(coid, side, t, limit, str(draw(st.integers(1, 3))),
                              reduce_only=side == SELL and draw(st.booleans())))
            made.append(coid)
        asks.append(wm(t))
    picks = draw(st.lists(st.booleans(), min_size=len(cs) + len(asks),
                          max_size=len(cs) + len(asks)))
    return cs, asks, picks


@settings(max_examples=150, deadline=None)
@given(scenario())
def test_cancels_and_fills_do_not_depend_on_interleaving(
        case: tuple[list[object], list[object], list[bool]]) -> None:
    cs, asks, picks = case
    reference = run(ExecutionHandler(FEES), cs + asks)
    mixed = run(ExecutionHandler(FEES), interleave(cs, asks, picks))
    assert [codec.encode(f)[0] for f in fills(mixed)] == \
        [codec.encode(f)[0] for f in fills(reference)]
    assert sorted(codec.encode(e)[0] for e in events(mixed)) == \
        sorted(codec.encode(e)[0] for e in events(reference))


# -- a grid bot through the executor fills as bot_sim simulates it ---------------------------------


def _approved(intent: Intent, at_ms: int) -> order_approved_pb2.ApprovedOrder:
    """What a pass-through gate approves for an intent (no limits)."""
    if isinstance(intent, CancelOrder):
        return cancel(intent.client_order_id, at_ms)
    assert isinstance(intent, PlaceOrder)
    limit = None if intent.limit_price is None else str(intent.limit_price)
    return place(intent.client_order_id, intent.side, at_ms, limit, str(intent.quantity))


@pytest.mark.parametrize("trailing", [False, True])
def test_a_grid_bot_through_the_executor_fills_as_bot_sim(trailing: bool) -> None:
    rules = MarketRules(tick=Decimal("0.01"), lot=Decimal("0.00001"), min_notional=Decimal(5))
    params = GridParams("g1", Decimal(33000), Decimal(33800), 5, rules, quantity=Decimal(Q),
                        trailing_up=trailing, trailing_down=trailing,
                        max_shifts=4 if trailing else 0)
    candles = real(0, 120)
    bars = [Bar.from_raw(RawCandle(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume), H)
            for c in candles]
    model = PaperFillModel(FeeSchedule(FEES.maker_fee, FEES.taker_fee))
    expected = BotSimulation(GridBot(params), model).run(bars).fills

    bot, executor = GridBot(params), ExecutionHandler(FEES)
    got: list[BotFill] = []
    cancels = 0
    for candle, b in zip(candles, bars, strict=True):
        intents: list[Intent] = []
        for f in fills(run(executor, [candle])):  # in the candle's path order
            fill = BotFill(f.client_order_id, f.side, Decimal(f.quantity), Decimal(f.price),
                           Decimal(f.fee), f.liquidity, f.meta.event_time_ms)
            got.append(fill)
            intents += bot.on_fill(fill)
        intents += bot.on_candle(b)
        cancels += sum(isinstance(i, CancelOrder) for i in intents)
        run(executor, [_approved(i, b.close_ms) for i in intents] + [wm(b.close_ms)])
    assert len(expected) > 10
    assert (cancels > 0) == trailing  # the trailing grid cancels the slot it drops
    assert got == expected
