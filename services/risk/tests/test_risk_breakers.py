"""Circuit breakers and the portfolio rules that read candles: each trips on the numbers it
states, escalates pause -> reduce -> close all and stop, and a close-all goes out as reduce-only
orders with the kill switch engaged; canceled or rejected orders give their exposure back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian.v1 import (
    candle_pb2,
    common_pb2,
    control_pb2,
    order_approved_pb2,
    order_event_pb2,
    risk_decision_pb2,
    signal_pb2,
)
from meridian_common import config, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.testing import protective_stop
from meridian_risk.handler import RiskHandler
from meridian_risk.rules import base_asset
from meridian_risk.settings import RiskSettings

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (24 * HOUR)  # a UTC midnight
A, B, C = "bybit:AAAUSDT", "bybit:BBBUSDT", "bybit:CCCUSDT"
LONG, FLAT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_FLAT
Item = tuple[str, str, object]


def candle(key: str, hour: int, close: str) -> candle_pb2.Candle:
    exchange, symbol = key.split(":")
    t = T0 + hour * HOUR
    return candle_pb2.Candle(
        meta=common_pb2.Meta(id=f"c:{key}:{t}", event_time_ms=t, producer="ingest"),
        exchange=exchange, symbol=symbol, timeframe="1h", open_time_ms=t - HOUR,
        close_time_ms=t, open=close, high=close, low=close, close=close, volume="1")


def signal(key: str, hour: int, direction: int, price: str) -> signal_pb2.Signal:
    exchange, symbol = key.split(":")
    t = T0 + hour * HOUR
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:{key}:{t}", event_time_ms=t, producer="signals"),
        exchange=exchange, symbol=symbol, strategy="trend", direction=direction,
        confidence=1.0, reference_price=price,
        stop_loss=protective_stop(direction, price, "0.3"), reason="test")


def watermark(key: str, hour: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=key, event_time_ms=T0 + hour * HOUR, producer="signals")


class Gate:
    """A gate fed hour by hour: candles for every key, then the hour's signals, then signal
    Watermarks for the keys without one (as the signals service would publish)."""

    def __init__(self, keys: tuple[str, ...] = (A, B), **settings: object) -> None:
        base: dict[str, object] = {"daily_loss_limit": Decimal(1), "max_drawdown": Decimal(1),
                                   "price_spike_pct_per_min": Decimal(0)}
        self.handler = RiskHandler(RiskSettings(**(base | settings)))  # type: ignore[arg-type]
        self.keys = keys
        self.items: list[Item] = []

    def feed(self, topic: str, key: str, msg: object) -> list[Item]:
        out = Outbox("risk")
        self.handler.handle(Inbound(topic, key, msg), out)  # type: ignore[arg-type]
        self.items += out.items
        return out.items

    def hour(self, hour: int, closes: dict[str, str],
             signals: dict[str, tuple[int, str]] | None = None) -> list[Item]:
        out: list[Item] = []
        for key in self.keys:
            out += self.feed(topics.CANDLE, key, candle(key, hour, closes[key]))
        for key in self.keys:
            if signals and key in signals:
                direction, price = signals[key]
                out += self.feed(topics.SIGNAL, key, signal(key, hour, direction, price))
            else:
                out += self.feed(topics.SIGNAL, key, watermark(key, hour))
        return out


def decisions(items: list[Item]) -> list[risk_decision_pb2.RiskDecision]:
    return [m for t, _, m in items if t == topics.RISK_DECISION]  # type: ignore[misc]


def orders(items: list[Item]) -> list[order_approved_pb2.ApprovedOrder]:
    return [m for t, _, m in items if isinstance(m, order_approved_pb2.ApprovedOrder)]


def controls(items: list[Item]) -> list[control_pb2.Control]:
    return [m for t, _, m in items if t == topics.CONTROL]  # type: ignore[misc]


def rule(d: risk_decision_pb2.RiskDecision, name: str) -> tuple[bool, str]:
    r = next(r for r in d.rules if r.rule == name)
    return r.passed, r.detail


# --------------------------------------------------------------------------- escalation


def test_drawdown_escalates_pause_then_reduce_then_close_all_and_stop() -> None:
    gate = Gate(max_drawdown=Decimal("0.05"), pause_hours=Decimal(2), reduce_hours=Decimal(2),
                order_notional=Decimal(5000), max_position_notional=Decimal(5000))
    gate.hour(1, {A: "100", B: "10"}, {A: (LONG, "100")})  # 50 A, equity 10,000
    assert gate.handler.positions == {A: Decimal(50)}
    out = gate.hour(2, {A: "89", B: "10"})  # equity 9,450: 5.5% below the peak
    [pause] = controls(out)
    assert pause.breaker.level == "pause"
    assert pause.meta.event_time_ms == T0 + 2 * HOUR
    assert pause.breaker.until_ms == T0 + 4 * HOUR
    assert pause.breaker.reason == ("portfolio.max_drawdown: equity 9450 is 0.055 below "
                                    "peak 10000 vs max 0.05")
    # paused: an entry on B is refused by the breaker (and by the drawdown rule itself)
    d = decisions(gate.hour(3, {A: "89", B: "10"}, {B: (LONG, "10")}))[0]
    assert not d.approved
    assert rule(d, "system.breaker") == (
        False, "entries paused until 2023-11-14T04:00:00Z: " + pause.breaker.reason)
    assert rule(d, "portfolio.max_drawdown")[0] is False
    # still tripped when the pause ends: reduce
    [reduce] = controls(gate.hour(4, {A: "88", B: "10"}))
    assert reduce.breaker.level == "reduce"
    assert reduce.breaker.until_ms == T0 + 6 * HOUR
    # still tripped when reducing ends: close all, engage the kill switch, stop
    out = gate.hour(6, {A: "87", B: "10"})
    kinds = [(c.WhichOneof("command"), c) for c in controls(out)]
    assert [k for k, _ in kinds] == ["breaker", "kill_switch"]
    assert kinds[0][1].breaker.level == "close"
    assert kinds[1][1].kill_switch.engaged
    assert kinds[1][1].kill_switch.actor == "risk"
    [close] = orders(out)
    assert close.reduce_only
    assert close.side == common_pb2.SIDE_SELL
    assert Decimal(close.quantity) == 50
    assert close.signal_id == f"close-all:{T0 + 6 * HOUR}:{A}"
    [d] = decisions(out)
    assert d.approved
    assert rule(d, "system.kill_switch") == (True, "reduce-only exit: engaged: only "
                                                   "reduce-only orders pass")
    assert gate.handler.positions == {}
    assert gate.handler.kill_switch
    # stopped: nothing opens again, whatever the breakers say later
    d = decisions(gate.hour(30, {A: "87", B: "10"}, {B: (LONG, "10")}))[0]
    assert not d.approved
    assert rule(d, "system.breaker")[1].startswith("closed all and stopped: ")


def test_a_breaker_that_clears_during_the_pause_returns_to_normal() -> None:
    gate = Gate(max_drawdown=Decimal("0.05"), pause_hours=Decimal(2),
                order_notional=Decimal(5000), max_position_notional=Decimal(5000))
    gate.hour(1, {A: "100", B: "10"}, {A: (LONG, "100")})
    assert controls(gate.hour(2, {A: "89", B: "10"}))[0].breaker.level == "pause"
    [normal] = controls(gate.hour(4, {A: "99", B: "10"}))  # 1% below the peak at the end
    assert normal.breaker.level == "normal"
    d = decisions(gate.hour(5, {A: "99", B: "10"}, {B: (LONG, "10")}))[0]
    assert d.approved
    assert rule(d, "system.breaker") == (True, "normal")


def test_reduce_sizes_entries_by_the_factor() -> None:
    gate = Gate(max_drawdown=Decimal("0.05"), pause_hours=Decimal(1), reduce_hours=Decimal(5),
                order_notional=Decimal(5000), max_position_notional=Decimal(5000),
                reduce_factor=Decimal("0.5"), correlation_min=1.0)
    gate.hour(1, {A: "100", B: "10"}, {A: (LONG, "100")})
    gate.hour(2, {A: "89", B: "10"})
    assert controls(gate.hour(3, {A: "89", B: "10"}))[0].breaker.level == "reduce"
    gate.hour(4, {A: "100", B: "10"}, {A: (FLAT, "100")})  # back at the peak; A closed
    d = decisions(gate.hour(5, {A: "100", B: "10"}, {B: (LONG, "10")}))[0]
    assert d.approved
    assert Decimal(d.quantity) == 250  # 5000 / 10 x 0.5
    assert rule(d, "system.breaker")[1].startswith("entries sized x0.5 until ")


def test_an_operator_clearing_the_kill_switch_restarts_from_current_equity() -> None:
    gate = Gate(max_drawdown=Decimal("0.05"), pause_hours=Decimal(1), reduce_hours=Decimal(1),
                order_notional=Decimal(5000), max_position_notional=Decimal(5000))
    gate.hour(1, {A: "100", B: "10"}, {A: (LONG, "100")})
    gate.hour(2, {A: "89", B: "10"})
    gate.hour(3, {A: "89", B: "10"})
    gate.hour(4, {A: "89", B: "10"})
    assert gate.handler.kill_switch
    clear = control_pb2.Control(meta=common_pb2.Meta(id="ops-1", event_time_ms=T0 + 5 * HOUR),
                                kill_switch=control_pb2.KillSwitch(engaged=False, reason="ok",
                                                                   actor="ops"))
    [normal] = controls(gate.feed(topics.CONTROL, "kill_switch", clear))
    assert normal.breaker.level == "normal"
    assert "cleared by ops: ok" in normal.breaker.reason
    d = decisions(gate.hour(6, {A: "89", B: "10"}, {B: (LONG, "10")}))[0]
    assert d.approved  # the peak is re-based at the equity of the clear
    assert rule(d, "portfolio.max_drawdown")[1].startswith("0 below peak equity 9450 ")


# --------------------------------------------------------------------------- other breakers


def test_daily_loss_is_measured_from_the_first_candle_of_the_utc_day() -> None:
    gate = Gate(daily_loss_limit=Decimal("0.02"), order_notional=Decimal(5000),
                max_position_notional=Decimal(5000))
    gate.hour(20, {A: "100", B: "10"}, {A: (LONG, "100")})
    assert controls(gate.hour(23, {A: "97", B: "10"})) == []  # -1.5%: same day, under 2%
    assert controls(gate.hour(24, {A: "97", B: "10"})) == []  # a new day starts at 9,850
    [pause] = controls(gate.hour(25, {A: "92", B: "10"}))  # 9,600: 2.54% below the start
    assert pause.breaker.reason == ("system.daily_loss: equity 9600 is 0.0254 below the "
                                    "day's start 9850 vs max 0.02")


def test_price_spike_pauses_entries_at_that_candle() -> None:
    gate = Gate(price_spike_pct_per_min=Decimal("0.1"))  # 6% an hour
    gate.hour(1, {A: "100", B: "10"})
    out = gate.hour(2, {A: "107", B: "10"}, {B: (LONG, "10")})
    [pause] = controls(out)
    assert pause.breaker.reason == ("system.price_spike: bybit:AAAUSDT 100 -> 107 in 60 min = "
                                    "0.1167 %/min vs max 0.1 %/min")
    d = decisions(out)[0]
    assert not d.approved
    assert rule(d, "system.price_spike")[0] is False


def test_error_rate_from_order_events_trips_at_the_next_candle() -> None:
    gate = Gate(error_rate_window=4, error_rate_max=Decimal("0.5"))
    gate.hour(1, {A: "100", B: "10"})
    for i, status in enumerate([order_event_pb2.ORDER_STATUS_FILLED,
                                order_event_pb2.ORDER_STATUS_REJECTED,
                                order_event_pb2.ORDER_STATUS_UNKNOWN,
                                order_event_pb2.ORDER_STATUS_REJECTED]):
        gate.feed(topics.ORDER_EVENT, A, order_event_pb2.OrderEvent(
            meta=common_pb2.Meta(id=f"o{i}:1", event_time_ms=T0 + HOUR), client_order_id=f"o{i}",
            exchange="bybit", symbol="AAAUSDT", status=status, side=common_pb2.SIDE_BUY,
            quantity="1", filled_quantity="1" if i == 0 else "0"))
    [pause] = controls(gate.hour(2, {A: "100", B: "10"}))
    assert pause.breaker.reason == ("system.error_rate: 3 of the last 4 orders rejected or "
                                    "unknown vs max share 0.5")


def test_stale_signals_cannot_enter() -> None:
    now = [(T0 + HOUR) / 1000 + 400]
    gate = Gate(max_data_lag_s=300.0)
    gate.handler.clock = lambda: now[0]
    d = decisions(gate.hour(1, {A: "100", B: "10"}, {A: (LONG, "100")}))[0]
    assert not d.approved
    assert rule(d, "system.stale_data") == (False, "signal is 400.0 s old vs max 300 s")
    now[0] = (T0 + 2 * HOUR) / 1000 + 5
    d = decisions(gate.hour(2, {A: "100", B: "10"}, {A: (LONG, "100")}))[0]
    assert d.approved


# --------------------------------------------------------------------------- portfolio


def test_correlated_positions_share_one_budget() -> None:
    gate = Gate(keys=(A, B, C), order_notional=Decimal(1000),
                max_correlated_notional=Decimal(1500), correlation_window=20)
    # A and B move together, C against them
    for h in range(1, 25):
        up = h % 2 == 0
        gate.hour(h, {A: "101" if up else "100", B: "20.2" if up else "20",
                      C: "50" if up else "50.5"})
    assert decisions(gate.hour(25, {A: "100", B: "20", C: "50.5"}, {A: (LONG, "100")}))[0].approved
    d = decisions(gate.hour(26, {A: "101", B: "20.2", C: "50"}, {B: (LONG, "20.2")}))[0]
    assert not d.approved
    passed, detail = rule(d, "portfolio.correlated_exposure")
    assert not passed
    assert detail == "2009.99999 vs max 1500 (bybit:AAAUSDT 1.00 at >= 0.8)"
    d = decisions(gate.hour(27, {A: "100", B: "20", C: "50.5"}, {C: (LONG, "50.5")}))[0]
    assert d.approved  # anti-correlated: its own budget
    assert "no open position correlates" in rule(d, "portfolio.correlated_exposure")[1]


def test_a_canceled_or_rejected_order_gives_its_exposure_back() -> None:
    gate = Gate(order_notional=Decimal(1000), max_portfolio_notional=Decimal(1500),
                max_position_notional=Decimal(1000), correlation_min=1.0)
    [o] = orders(gate.hour(1, {A: "100", B: "10"}, {A: (LONG, "100")}))
    assert not decisions(gate.hour(2, {A: "100", B: "10"}, {B: (LONG, "10")}))[0].approved
    gate.feed(topics.ORDER_EVENT, A, order_event_pb2.OrderEvent(
        meta=common_pb2.Meta(id=f"{o.client_order_id}:2", event_time_ms=T0 + HOUR),
        client_order_id=o.client_order_id, exchange="bybit", symbol="AAAUSDT",
        status=order_event_pb2.ORDER_STATUS_REJECTED, side=common_pb2.SIDE_BUY,
        quantity=o.quantity, filled_quantity="0", reason="110007 insufficient balance"))
    assert gate.handler.positions == {}
    assert decisions(gate.hour(3, {A: "100", B: "10"}, {B: (LONG, "10")}))[0].approved


def test_a_partly_filled_cancel_keeps_the_filled_part() -> None:
    gate = Gate(order_notional=Decimal(1000))
    [o] = orders(gate.hour(1, {A: "100", B: "10"}, {A: (LONG, "100")}))
    gate.feed(topics.ORDER_EVENT, A, order_event_pb2.OrderEvent(
        meta=common_pb2.Meta(id=f"{o.client_order_id}:3", event_time_ms=T0 + HOUR),
        client_order_id=o.client_order_id, exchange="bybit", symbol="AAAUSDT",
        status=order_event_pb2.ORDER_STATUS_CANCELED, side=common_pb2.SIDE_BUY,
        quantity="10", filled_quantity="4"))
    assert gate.handler.positions == {A: Decimal(4)}


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("env", "name"), [
    ({"MERIDIAN_RISK_MAX_DRAWDOWN": "0"}, "MERIDIAN_RISK_MAX_DRAWDOWN"),
    ({"MERIDIAN_RISK_DAILY_LOSS_LIMIT": "1.5"}, "MERIDIAN_RISK_DAILY_LOSS_LIMIT"),
    ({"MERIDIAN_RISK_REDUCE_FACTOR": "1"}, "MERIDIAN_RISK_REDUCE_FACTOR"),
    ({"MERIDIAN_RISK_PRICE_SPIKE_PCT_PER_MIN": "-1"}, "MERIDIAN_RISK_PRICE_SPIKE_PCT_PER_MIN"),
    ({"MERIDIAN_RISK_CORRELATION_WINDOW": "3"}, "MERIDIAN_RISK_CORRELATION_WINDOW"),
    ({"MERIDIAN_RISK_MERGE_GRACE_S": "soon"}, "MERIDIAN_RISK_MERGE_GRACE_S"),
])
def test_breaker_settings_errors_name_the_field(env: dict[str, str], name: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load(RiskSettings, environ=env)


def test_one_asset_on_two_venues_shares_its_exposure_limit() -> None:
    btc_bybit, btc_binance = "bybit:BTCUSDT", "binance:BTCUSDC"
    gate = Gate(keys=(btc_bybit, btc_binance), order_notional=Decimal(1000),
                max_asset_notional=Decimal(1500), correlation_min=1.0)
    closes = {btc_bybit: "100", btc_binance: "100"}
    assert decisions(gate.hour(1, closes, {btc_bybit: (LONG, "100")}))[0].approved
    d = decisions(gate.hour(2, closes, {btc_binance: (LONG, "100")}))[0]
    assert not d.approved
    assert rule(d, "portfolio.asset_exposure") == (False, "BTC: 2000 vs max 1500")


@pytest.mark.parametrize(("key", "asset"), [
    ("bybit:BTCUSDT", "BTC"), ("binance:ETHUSDC", "ETH"), ("binance:BTC/USDT:USDT", "BTC"),
    ("kraken:XBTEUR", "XBT"), ("bybit:USDT", "USDT")])
def test_base_asset_of_a_market_key(key: str, asset: str) -> None:
    assert base_asset(key) == asset


def test_fractional_kelly_sizes_from_the_strategy_record_after_warm_up() -> None:
    gate = Gate(sizing="fractional_kelly", sizing_fraction=Decimal("0.1"),
                sizing_max_fraction=Decimal("0.25"), kelly_min_trades=4, kelly_window=4,
                correlation_min=1.0)
    hour = 0
    sizes = []
    for exit_price in ("110", "90", "110", "110"):  # +100, -100, +100, +100 on 10 units
        hour += 1
        [o] = orders(gate.hour(hour, {A: "100", B: "10"}, {A: (LONG, "100")}))
        sizes.append(Decimal(o.quantity))
        hour += 1
        gate.hour(hour, {A: exit_price, B: "10"}, {A: (FLAT, exit_price)})
    assert sizes == [10] * 4  # warming up: sizing_fraction of 10,000 at 100
    # p = 3/4, win/loss = 1: full Kelly 0.5, half Kelly 0.25 (the cap): 2,500 at 100
    [o] = orders(gate.hour(hour + 1, {A: "100", B: "10"}, {A: (LONG, "100")}))
    assert Decimal(o.quantity) == 25


def test_trailing_stop_rides_on_the_entry_and_closes_the_book_where_the_executor_does() -> None:
    """The gate puts its trailing stop on each entry (ApprovedOrder.trailing_stop); the
    executor fills it on the candle whose low comes back the fraction from the best price, and
    the gate books the same exit on the same candle (no order of its own)."""
    gate = Gate(trailing_stop=Decimal("0.05"), correlation_min=1.0)
    [entry] = orders(gate.hour(1, {A: "100", B: "10"}, {A: (LONG, "100")}))
    assert entry.trailing_stop == "0.05"
    assert orders(gate.hour(2, {A: "110", B: "10"})) == []  # first candle checked: trails 110
    gate.hour(3, {A: "104.6", B: "10"})  # 4.9 % below 110: still open
    assert gate.handler.positions == {A: Decimal(entry.quantity)}
    assert orders(gate.hour(4, {A: "104.5", B: "10"})) == []  # 5 % below: the executor's exit
    assert gate.handler.positions == {}
    assert gate.handler.stopped == 1
    # a short trails from its lowest price
    [short] = orders(gate.hour(5, {A: "100", B: "10"}, {B: (common_pb2.DIRECTION_SHORT, "10")}))
    assert short.trailing_stop == "0.05"
    gate.hour(6, {A: "100", B: "9"})
    assert B in gate.handler.positions
    gate.hour(7, {A: "100", B: "9.45"})
    assert gate.handler.positions == {}
    # a FLAT for a position already gone asks for nothing
    assert orders(gate.hour(8, {A: "100", B: "9.5"}, {B: (FLAT, "9.5")})) == []
