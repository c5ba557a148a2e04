"""Risk gate: sizing, every rule reported, rejections with watermarks, kill switch, order ids."""

from __future__ import annotations

import contextlib
import math
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import (
    candle_pb2,
    common_pb2,
    control_pb2,
    order_approved_pb2,
    risk_decision_pb2,
    signal_pb2,
)
from meridian_common import codec, ids, topics
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.testing import caught_up, protective_stop
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
RULES = ["strategy.direction", "strategy.owner", "strategy.max_trades_per_day",
         "strategy.cooldown", "strategy.max_drawdown", "order.nonzero", "order.reduce_only",
         "order.min_notional", "order.precision",
         "order.max_notional", "order.max_leverage", "order.margin",
         "position.stop_loss_required", "position.stop_before_liquidation",
         "position.max_notional", "portfolio.max_exposure", "portfolio.asset_exposure",
         "portfolio.correlated_exposure",
         "portfolio.max_open_positions", "portfolio.max_drawdown", "system.daily_loss",
         "system.stale_data", "system.price_spike", "system.error_rate", "system.breaker",
         "system.kill_switch"]
LONG, SHORT, FLAT = (common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT,
                     common_pb2.DIRECTION_FLAT)


def signal(i: int, direction: int, price: str = "35050.75") -> signal_pb2.Signal:
    t = T0 + i * HOUR
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:feat:binance:BTCUSDT:1h:{t - HOUR}:r0",
                             cause_id=f"feat:binance:BTCUSDT:1h:{t - HOUR}:r0",
                             event_time_ms=t, producer="signals"),
        exchange="binance", symbol="BTCUSDT", strategy="ema_cross", direction=direction,
        strength=0.5, confidence=1.0, reference_price=price,
        stop_loss=protective_stop(direction, price), reason="test")


def kill(engaged: bool) -> control_pb2.Control:
    return control_pb2.Control(
        meta=common_pb2.Meta(id=f"ctl-{engaged}", event_time_ms=T0, producer="control-plane"),
        kill_switch=control_pb2.KillSwitch(engaged=engaged, reason="test", actor="ops"))


def handle(handler: RiskHandler, msg: object, topic: str = topics.SIGNAL,
           key: str = KEY) -> list[tuple[str, str, object]]:
    out = Outbox(handler.name)
    inbound = Inbound(topic, key, msg)  # type: ignore[arg-type]
    handler.handle(inbound, out)
    if topic == topics.SIGNAL:
        caught_up(handler, handler.merge.progress(), (topic, key), inbound.event_time_ms, out)
    return out.items


def split(items: list[tuple[str, str, object]]):
    decisions = [m for t, _, m in items if t == topics.RISK_DECISION]
    orders = [m for t, _, m in items if t == topics.ORDER_APPROVED
              and isinstance(m, order_approved_pb2.ApprovedOrder)]
    marks = [m for t, _, m in items if t == topics.ORDER_APPROVED
             and isinstance(m, common_pb2.Watermark)]
    return decisions, orders, marks


def rules_of(decision: risk_decision_pb2.RiskDecision) -> dict[str, bool]:
    return {r.rule: r.passed for r in decision.rules}


def test_long_is_sized_and_approved() -> None:
    handler = RiskHandler(RiskSettings())
    sig = signal(1, LONG)
    items = handle(handler, sig)
    decisions, orders, marks = split(items)
    assert len(decisions) == 1
    assert len(orders) == 1
    # after the order: the gate has decided everything up to its time for the key
    assert [(m.key, m.event_time_ms) for m in marks] == [(KEY, sig.meta.event_time_ms)]
    assert isinstance(items[-1][2], common_pb2.Watermark)
    d, o = decisions[0], orders[0]
    assert [r.rule for r in d.rules] == RULES
    assert all(r.passed for r in d.rules)
    assert all(r.detail for r in d.rules)
    assert d.approved
    # floor(1000 / 35050.75 to 0.00001) = 0.02853
    assert d.quantity == o.quantity == "0.02853"
    assert d.side == o.side == common_pb2.SIDE_BUY
    assert not o.reduce_only
    coid = ids.client_order_id(sig.meta.id)
    assert d.client_order_id == o.client_order_id == o.meta.id == coid
    assert d.meta.id == "dec:" + sig.meta.id
    assert d.meta.cause_id == sig.meta.id
    assert o.meta.cause_id == d.meta.id
    assert o.signal_id == sig.meta.id
    assert d.meta.event_time_ms == o.meta.event_time_ms == sig.meta.event_time_ms
    assert o.order_type == order_approved_pb2.ORDER_TYPE_MARKET
    assert (o.exchange, o.symbol, o.strategy) == ("binance", "BTCUSDT", "ema_cross")
    assert items[0][0] == topics.RISK_DECISION  # the decision is published before the order
    for topic, _, m in items:
        assert isinstance(m, common_pb2.Watermark) or topics.spec(topic).message is type(m)
        codec.validate(m)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(price=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("99"), places=4),
       notional=st.decimals(min_value=Decimal("100"), max_value=Decimal("100000"), places=2),
       step=st.sampled_from([Decimal("0.00001"), Decimal("0.001"), Decimal("0.1"),
                             Decimal("1")]))
def test_long_quantity_is_floor_of_notional_over_price(price: Decimal, notional: Decimal,
                                                       step: Decimal) -> None:
    s = RiskSettings(order_notional=notional, max_position_notional=notional * 2,
                     max_portfolio_notional=notional * 2, min_order_notional=Decimal(0),
                     quantity_step=step)
    decisions, orders, _ = split(handle(RiskHandler(s), signal(1, LONG, str(price))))
    steps = math.floor(Fraction(notional) / Fraction(price) / Fraction(step))
    expected = Decimal(steps) * step
    assert Decimal(decisions[0].quantity) == expected
    if orders:
        assert Decimal(orders[0].quantity) == expected
        assert Decimal(orders[0].quantity) * price <= notional


def test_flat_without_position_is_rejected_with_a_watermark() -> None:
    handler = RiskHandler(RiskSettings())
    sig = signal(3, FLAT)
    items = handle(handler, sig)
    decisions, orders, marks = split(items)
    assert orders == []
    assert len(decisions) == 1
    d = decisions[0]
    assert not d.approved
    assert [r.rule for r in d.rules] == RULES
    assert rules_of(d)["order.nonzero"] is False
    assert d.client_order_id == ""
    assert d.quantity == "0"
    assert len(marks) == 1
    assert marks[0].key == KEY
    assert marks[0].event_time_ms == sig.meta.event_time_ms
    assert handler.rejected == 1


def test_second_long_while_long_is_rejected() -> None:
    handler = RiskHandler(RiskSettings())
    handle(handler, signal(1, LONG))
    decisions, orders, marks = split(handle(handler, signal(2, LONG)))
    assert not decisions[0].approved
    assert rules_of(decisions[0])["order.nonzero"] is False
    assert orders == []
    assert len(marks) == 1


def test_long_then_flat_closes_exactly() -> None:
    handler = RiskHandler(RiskSettings())
    _, opened, _ = split(handle(handler, signal(1, LONG, "35050.75")))
    _, closed, _ = split(handle(handler, signal(2, FLAT, "40000")))
    assert closed[0].side == common_pb2.SIDE_SELL
    assert closed[0].quantity == opened[0].quantity
    assert closed[0].reduce_only


def test_kill_switch_blocks_entries_but_lets_exits_pass() -> None:
    handler = RiskHandler(RiskSettings())
    _, opened, _ = split(handle(handler, signal(1, LONG)))
    assert handle(handler, kill(True), topics.CONTROL, "kill_switch") == []
    assert handler.kill_switch

    # another symbol cannot enter
    decisions, orders, marks = split(handle(handler, signal(2, LONG), key="binance:ETHUSDT"))
    assert not decisions[0].approved
    r = rules_of(decisions[0])
    assert r["system.kill_switch"] is False
    assert r["order.nonzero"]
    assert r["order.min_notional"]
    assert r["position.max_notional"]
    assert orders == []
    assert marks[-1].key == "binance:ETHUSDT"
    assert marks[-1].event_time_ms == decisions[0].meta.event_time_ms

    # the open position can be closed (reduce-only)
    decisions, orders, _ = split(handle(handler, signal(3, FLAT)))
    assert decisions[0].approved
    assert orders[0].reduce_only
    assert orders[0].quantity == opened[0].quantity

    handle(handler, kill(False), topics.CONTROL, "kill_switch")
    decisions, orders, _ = split(handle(handler, signal(4, LONG)))
    assert decisions[0].approved
    assert len(orders) == 1


def test_max_position_notional_rejects() -> None:
    s = RiskSettings(order_notional=Decimal(1000), max_position_notional=Decimal(500))
    decisions, orders, marks = split(handle(RiskHandler(s), signal(1, LONG)))
    d = decisions[0]
    assert not d.approved
    failing = [r.rule for r in d.rules if not r.passed]
    assert failing == ["position.max_notional"]
    assert rules_of(d)["position.max_notional"] is False
    assert [r.detail for r in d.rules if r.rule == "position.max_notional"] == [
        "999.9978975 vs max 500"]
    assert orders == []
    assert len(marks) == 1


def test_min_order_notional_rejects() -> None:
    s = RiskSettings(order_notional=Decimal(10), min_order_notional=Decimal(10),
                     quantity_step=Decimal("0.001"))
    # 10 / 35050.75 < 0.001: sizes to zero
    d = split(handle(RiskHandler(s), signal(1, LONG)))[0][0]
    assert not d.approved
    assert [r.rule for r in d.rules if not r.passed] == ["order.nonzero", "order.min_notional"]


def test_short_from_long_when_allowed() -> None:
    handler = RiskHandler(RiskSettings())
    handle(handler, signal(1, LONG, "100"))  # +10
    decisions, orders, _ = split(handle(handler, signal(2, SHORT, "100")))
    assert decisions[0].approved
    assert orders[0].side == common_pb2.SIDE_SELL
    assert orders[0].quantity == "20"  # close 10 and open 10 short
    assert not orders[0].reduce_only
    assert handler.positions[KEY] == Decimal(-10)


def test_client_order_id_deterministic_and_exchange_safe() -> None:
    pattern = re.compile(r"^[a-z0-9-]+$")
    a = split(handle(RiskHandler(RiskSettings()), signal(1, LONG)))[1][0]
    b = split(handle(RiskHandler(RiskSettings()), signal(1, LONG)))[1][0]
    c = split(handle(RiskHandler(RiskSettings()), signal(2, LONG)))[1][0]
    assert a.client_order_id == b.client_order_id
    assert codec.encode(a) == codec.encode(b)
    assert a.client_order_id != c.client_order_id
    for coid in (a.client_order_id, c.client_order_id,
                 ids.client_order_id("x" * 500), ids.client_order_id("ÜNICODE:sig/1")):
        assert len(coid) <= 36
        assert pattern.match(coid), coid


def test_order_watermarks_follow_what_the_merge_released() -> None:
    handler = RiskHandler(RiskSettings())
    wm = common_pb2.Watermark(key=KEY, event_time_ms=T0 + 5 * HOUR, producer="signals")
    assert handle(handler, wm) == []  # progress alone releases nothing, so promises nothing
    candle = candle_pb2.Candle(
        meta=common_pb2.Meta(id="c", event_time_ms=T0 + 5 * HOUR, producer="ingest"),
        exchange="binance", symbol="BTCUSDT", timeframe="1h", open_time_ms=T0 + 4 * HOUR,
        close_time_ms=T0 + 5 * HOUR, open="100", high="101", low="99", close="100",
        volume="1")
    items = handle(handler, candle, topics.CANDLE)
    assert len(items) == 1
    topic, key, msg = items[0]
    assert (topic, key) == (topics.ORDER_APPROVED, KEY)
    assert isinstance(msg, common_pb2.Watermark)
    assert msg.event_time_ms == T0 + 5 * HOUR
    assert msg.producer == "risk"


def test_other_control_commands_leave_kill_switch() -> None:
    handler = RiskHandler(RiskSettings())
    handle(handler, kill(True), topics.CONTROL, "kill_switch")
    halt = control_pb2.Control(meta=common_pb2.Meta(id="h", event_time_ms=T0),
                               halt=control_pb2.Halt(service="risk", halted=False))
    handle(handler, halt, topics.CONTROL, "halt")
    assert handler.kill_switch


def test_watermark_on_control_topic_does_not_crash() -> None:
    """The codec accepts a Watermark on any topic, control.v1 included; the handler must ignore
    it or reject it as InvalidMessage (-> DLQ), not raise an error that stops the service."""
    handler = RiskHandler(RiskSettings())
    handle(handler, kill(True), topics.CONTROL, "kill_switch")
    wm = common_pb2.Watermark(key="kill_switch", event_time_ms=T0 + HOUR, producer="x")
    with contextlib.suppress(InvalidMessage):
        handle(handler, wm, topics.CONTROL, "kill_switch")
    assert handler.kill_switch


@pytest.mark.parametrize("direction", [common_pb2.DIRECTION_UNSPECIFIED, 9])
def test_signal_without_a_known_direction_is_not_traded(direction: int) -> None:
    """A Signal whose direction is unspecified (or a value this version does not know) must not
    become an order; it must certainly not open a short (signals never asked for one)."""
    handler = RiskHandler(RiskSettings())
    items: list[tuple[str, str, object]] = []
    with contextlib.suppress(InvalidMessage):
        items = handle(handler, signal(1, direction))
    decisions, orders, _ = split(items)
    assert orders == []
    assert all(not d.approved for d in decisions)
    assert handler.positions.get(KEY, Decimal(0)) == 0


def test_settings_reject_min_above_order_notional() -> None:
    with pytest.raises(ValueError, match="min_order_notional"):
        RiskSettings(order_notional=Decimal(5), min_order_notional=Decimal(10))
