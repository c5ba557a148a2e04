"""Bots' orders through the gate (order.intent.v1): limits on the worst case of resting orders,
the candle mirror that books a limit fill on the executor's candle, cancels, the kill switch,
one owner per bot symbol, the merge waiting for a candle's every intent, and the restore.

Real data: BTCUSDT 1h from 2021-07-09 16:00 UTC (open 1625846400000); rows quoted as
`cK: open high low close` where a test depends on them:
c0: 33558.81 33696.4 33435.0 33527.25   c1: 33527.24 33574.03 33421.68 33481.07
c2: 33481.06 33496.71 33342.57 33382.03 c3: 33382.02 33490.0 33287.0 33445.31
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian.v1 import (
    common_pb2,
    control_pb2,
    order_approved_pb2,
    order_intent_pb2,
    risk_decision_pb2,
    signal_pb2,
)
from meridian_common import topics
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.marketdata.candles import make_candle
from meridian_common.marketdata.csvfiles import CsvCandleSource, default_data_dir
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

H = 3_600_000
T0 = 1_625_846_400_000
KEY = "binance:BTCUSDT"
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
LIMIT, MARKET = order_approved_pb2.ORDER_TYPE_LIMIT, order_approved_pb2.ORDER_TYPE_MARKET
PLACE, CANCEL = order_approved_pb2.ORDER_ACTION_PLACE, order_approved_pb2.ORDER_ACTION_CANCEL
BOT = "bot:g1"
CANDLES = [make_candle("binance", "BTCUSDT", "1h", raw, "ingest", tf_ms=H)
           for raw in CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(T0, T0 + 6 * H)]


def close(k: int) -> int:
    return T0 + (k + 1) * H


def settings(**kw: object) -> RiskSettings:
    base: dict[str, object] = {"signals": False, "intents": True, "require_stop_loss": False,
                               "max_position_notional": Decimal(1000),
                               "min_order_notional": Decimal(5)}
    return RiskSettings(**{**base, **kw})  # type: ignore[arg-type]


def intent(coid: str, side: int, qty: str, limit: str | None, k: int, *,
           reduce_only: bool = False, strategy: str = BOT) -> order_intent_pb2.OrderIntent:
    return order_intent_pb2.OrderIntent(
        meta=common_pb2.Meta(id=f"intent:{coid}", event_time_ms=close(k), producer="bots"),
        exchange="binance", symbol="BTCUSDT", strategy=strategy, client_order_id=coid,
        action=PLACE, side=side, order_type=LIMIT if limit else MARKET, quantity=qty,
        limit_price=limit or "", reduce_only=reduce_only, reason="test")


def cancel(coid: str, k: int) -> order_intent_pb2.OrderIntent:
    return order_intent_pb2.OrderIntent(
        meta=common_pb2.Meta(id=f"intent:{coid}:cancel", event_time_ms=close(k),
                             producer="bots"),
        exchange="binance", symbol="BTCUSDT", strategy=BOT, client_order_id=coid,
        action=CANCEL, reason="test")


def mark(k: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=KEY, event_time_ms=close(k), producer="bots")


class Gate:
    """A gate fed one candle and then the bot's answers to it, as the bots host sends them."""

    def __init__(self, **kw: object) -> None:
        self.handler = RiskHandler(settings(**kw))
        self.out: list[tuple[str, str, object]] = []

    def send(self, topic: str, msg: object, key: str = KEY) -> list[tuple[str, str, object]]:
        out = Outbox(self.handler.name)
        self.handler.handle(Inbound(topic, key, msg), out)  # type: ignore[arg-type]
        self.out.extend(out.items)
        return out.items

    def step(self, k: int, *intents: order_intent_pb2.OrderIntent) -> list[tuple[str, str, object]]:
        """Candle k, then the bot's intents at its close and its Watermark."""
        items = self.send(topics.CANDLE, CANDLES[k])
        for i in intents:
            items += self.send(topics.ORDER_INTENT, i)
        return items + self.send(topics.ORDER_INTENT, mark(k))

    @property
    def position(self) -> Decimal:
        return self.handler.book.quantity(KEY)


def decisions(items: list[tuple[str, str, object]]) -> list[risk_decision_pb2.RiskDecision]:
    return [m for t, _, m in items if t == topics.RISK_DECISION
            and isinstance(m, risk_decision_pb2.RiskDecision)]


def orders(items: list[tuple[str, str, object]]) -> list[order_approved_pb2.ApprovedOrder]:
    return [m for t, _, m in items if t == topics.ORDER_APPROVED
            and isinstance(m, order_approved_pb2.ApprovedOrder)]


def failed(d: risk_decision_pb2.RiskDecision) -> list[str]:
    return [r.rule for r in d.rules if not r.passed]


def test_a_limit_buy_rests_unbooked_until_the_candle_that_trades_through_it() -> None:
    gate = Gate()
    items = gate.step(0, intent("g1-0-1", BUY, "0.01", "33400", 0))
    (d,), (o,) = decisions(items), orders(items)
    assert d.approved
    assert (d.client_order_id, d.meta.cause_id) == ("g1-0-1", "intent:g1-0-1")
    assert (o.client_order_id, o.order_type, o.limit_price, o.quantity, o.action, o.strategy) == (
        "g1-0-1", LIMIT, "33400", "0.01", PLACE, BOT)
    assert o.meta.event_time_ms == close(0)
    assert gate.position == 0  # resting: not a position
    gate.step(1)  # c1 low 33421.68: above the limit
    assert gate.position == 0
    gate.step(2)  # c2 low 33342.57 < 33400: filled at the limit, on the executor's candle
    assert gate.position == Decimal("0.01")
    assert gate.handler.book.positions[KEY].entry == Decimal("33400")
    assert not gate.handler.resting.orders
    # the decisions are closed by Watermarks per key for the bots host
    marks = [m.event_time_ms for t, _, m in gate.out
             if t == topics.RISK_DECISION and isinstance(m, common_pb2.Watermark)]
    assert marks == sorted(marks)
    assert marks[-1] == close(2)


def test_limits_count_every_resting_buy_as_filled() -> None:
    gate = Gate()  # max_position_notional 1000: three 0.01 BTC buys (~334 each) fit, not four
    items = gate.step(0, *(intent(f"g1-{i}-{i}", BUY, "0.01", p, 0) for i, p in
                           enumerate(("33400", "33300", "33200", "33100"))))
    ds = decisions(items)
    assert [d.approved for d in ds] == [True, True, True, False]
    assert failed(ds[3]) == ["position.max_notional"]
    assert ds[3].client_order_id == "g1-3-3"  # the bots host tells the bot which one
    detail = next(r.detail for r in ds[3].rules if r.rule == "position.max_notional")
    assert detail == "1324 vs max 1000"  # 0.04 x 33100: the three resting and this one
    assert [o.client_order_id for o in orders(items)] == ["g1-0-0", "g1-1-1", "g1-2-2"]


def test_a_sell_of_more_than_the_free_position_is_refused() -> None:
    gate = Gate()
    gate.step(0, intent("g1-0-1", BUY, "0.02", None, 0))  # market: booked at approval
    assert gate.position == Decimal("0.02")
    items = gate.step(1, intent("g1-1-2", SELL, "0.015", "34000", 1, reduce_only=True),
                      intent("g1-1-3", SELL, "0.01", "34100", 1, reduce_only=True))
    first, second = decisions(items)
    assert first.approved
    assert not second.approved
    assert failed(second) == ["order.reduce_only"]
    assert next(r.detail for r in second.rules if r.rule == "order.reduce_only") == (
        "0.01 vs position 0.02 - resting exits 0.015 = 0.005")


def test_a_cancel_takes_the_order_out_of_the_mirror_and_is_forwarded() -> None:
    gate = Gate()
    gate.step(0, intent("g1-0-1", BUY, "0.01", "33400", 0))
    items = gate.step(1, cancel("g1-0-1", 1))
    (d,), (o,) = decisions(items), orders(items)
    assert d.approved
    assert [r.rule for r in d.rules] == ["order.cancel"]
    assert (o.action, o.client_order_id, o.meta.id, o.meta.event_time_ms) == (
        CANCEL, "g1-0-1", "g1-0-1:cancel", close(1))
    gate.step(2)  # trades through 33400, but the order is gone
    assert gate.position == 0


def test_the_kill_switch_cancels_resting_entries_and_keeps_exits() -> None:
    gate = Gate()
    gate.step(0, intent("g1-0-1", BUY, "0.02", None, 0),
              intent("g1-0-2", BUY, "0.01", "33000", 0),
              intent("g1-0-3", SELL, "0.02", "34500", 0, reduce_only=True))
    items = gate.send(topics.CONTROL, control_pb2.Control(
        meta=common_pb2.Meta(id="ctl-1", event_time_ms=close(0), producer="control-plane"),
        kill_switch=control_pb2.KillSwitch(engaged=True, reason="test", actor="ops")))
    assert [(o.action, o.client_order_id) for o in orders(items)] == [(CANCEL, "g1-0-2")]
    assert list(gate.handler.resting.orders) == ["g1-0-3"]
    later = decisions(gate.step(1, intent("g1-1-4", BUY, "0.01", "33000", 1)))
    assert failed(later[0]) == ["system.kill_switch"]


def test_a_bots_symbol_is_its_own() -> None:
    gate = Gate(signals=True)
    gate.send(topics.SIGNAL, common_pb2.Watermark(key=KEY, event_time_ms=close(0)))
    gate.step(0, intent("g1-0-1", BUY, "0.01", "33000", 0))
    sig = signal_pb2.Signal(
        meta=common_pb2.Meta(id="sig:1", event_time_ms=close(1), producer="signals"),
        exchange="binance", symbol="BTCUSDT", strategy="trend",
        direction=common_pb2.DIRECTION_LONG, confidence=1.0, reference_price="33481.07")
    items = gate.send(topics.CANDLE, CANDLES[1]) + gate.send(topics.SIGNAL, sig)
    items += gate.send(topics.ORDER_INTENT, mark(1))
    (d,) = decisions(items)
    assert failed(d) == ["strategy.owner"]
    assert "held by 'bot:g1', not 'trend'" in d.rules[1].detail


def test_the_merge_waits_for_the_watermark_that_closes_a_candles_intents() -> None:
    gate = Gate()
    gate.send(topics.CANDLE, CANDLES[0])
    gate.send(topics.CANDLE, CANDLES[1])  # candles ahead: only the intents hold the merge
    assert decisions(gate.send(topics.ORDER_INTENT, intent("g1-0-1", BUY, "0.01", "33000",
                                                           0))) == []
    gate.send(topics.ORDER_INTENT, intent("g1-0-2", BUY, "0.01", "32900", 0))
    ds = decisions(gate.send(topics.ORDER_INTENT, mark(0)))
    assert [d.client_order_id for d in ds] == ["g1-0-1", "g1-0-2"]


def test_intents_are_dead_lettered_when_the_gate_does_not_take_them() -> None:
    handler = RiskHandler(RiskSettings())
    out = Outbox(handler.name)
    handler.handle(Inbound(topics.ORDER_INTENT, KEY, mark(0)), out)  # ignored, never waited for
    with pytest.raises(InvalidMessage, match="MERIDIAN_RISK_INTENTS=true"):
        handler.handle(Inbound(topics.ORDER_INTENT, KEY, intent("g1-0-1", BUY, "0.01",
                                                                 "33000", 0)), out)
    with pytest.raises(ValueError, match="signals and intents are both false"):
        RiskSettings(signals=False)


def test_bad_intents_name_the_field() -> None:
    gate = Gate()
    gate.send(topics.CANDLE, CANDLES[0])
    bad = intent("g1-0-1", BUY, "-1", "33000", 0)
    with pytest.raises(InvalidMessage, match="quantity and limit_price must be positive"):
        gate.send(topics.ORDER_INTENT, bad)
    bad = intent("g1-0-1", BUY, "0.01", "abc", 0)
    with pytest.raises(InvalidMessage, match=r"OrderIntent\.limit_price"):
        gate.send(topics.ORDER_INTENT, bad)


def test_a_restored_gate_has_the_same_book_and_resting_orders() -> None:
    live = Gate(max_position_notional=Decimal(2000))
    live.step(0, intent("g1-0-1", BUY, "0.02", None, 0),
              intent("g1-0-2", BUY, "0.01", "33400", 0),
              intent("g1-0-3", BUY, "0.01", "33300", 0))
    live.step(1, intent("g1-1-4", SELL, "0.02", "34000", 1, reduce_only=True))
    live.step(2, cancel("g1-0-3", 2))  # c2 fills g1-0-2 (low 33342.57); g1-0-3 canceled
    live.step(3)
    restored = RiskHandler(settings(max_position_notional=Decimal(2000)))
    for topic, key, msg in live.out:
        if topic in (topics.RISK_DECISION, topics.ORDER_APPROVED):
            restored.restore(Inbound(topic, key, msg))  # type: ignore[arg-type]
    for candle in CANDLES[:4]:
        restored.restore(Inbound(topics.CANDLE, KEY, candle))
    restored.restored()
    assert live.position == Decimal("0.03")
    assert restored.book.positions == live.handler.book.positions
    assert {c: (o.side, o.quantity, o.limit) for c, o in restored.resting.orders.items()} == {
        c: (o.side, o.quantity, o.limit) for c, o in live.handler.resting.orders.items()}
    assert list(restored.resting.orders) == ["g1-1-4"]
    # a decided intent read again after the restart is not decided twice
    out = Outbox("risk")
    restored.handle(Inbound(topics.ORDER_INTENT, KEY, intent("g1-0-2", BUY, "0.01", "33400",
                                                             0)), out)
    assert decisions(out.items) == []



def test_a_refused_order_asked_again_later_is_decided_again() -> None:
    gate = Gate(max_position_notional=Decimal(300))  # 0.01 x ~33500 = 335: over
    (first,) = decisions(gate.step(0, intent("d1-1-b", BUY, "0.01", None, 0)))
    assert failed(first) == ["position.max_notional"]
    retry = intent("d1-1-b", BUY, "0.005", None, 1)  # the same id on the next candle
    (second,) = decisions(gate.step(1, retry))
    assert second.approved
    assert second.meta.cause_id == first.meta.cause_id == "intent:d1-1-b"


def test_without_the_signals_service_a_signal_is_decided_as_it_comes() -> None:
    """signals=false (a bots-only gate): no signal stream is waited for, so a webhook's rare
    signal cannot stall the merge; it is decided on arrival (on its own symbol here)."""
    gate = Gate(require_stop_loss=True)
    gate.step(0)
    assert gate.send(topics.SIGNAL, common_pb2.Watermark(key=KEY, event_time_ms=close(5))) == []
    sig = signal_pb2.Signal(
        meta=common_pb2.Meta(id="sig:webhook:1", event_time_ms=close(1), producer="webhook"),
        exchange="binance", symbol="ETHUSDT", strategy="webhook:tv",
        direction=common_pb2.DIRECTION_LONG, confidence=1.0, reference_price="2000",
        stop_loss="1900")
    (d,) = decisions(gate.send(topics.SIGNAL, sig, key="binance:ETHUSDT"))
    assert d.approved
    assert not gate.handler.merge.knows((topics.SIGNAL, "binance:ETHUSDT"))
    gate.step(1)  # the bot's symbol goes on: nothing waits for a signal stream
    assert gate.handler.merge.released_to == close(1)
