"""Pending exposure: every approval counts in the book at once, so no burst of simultaneous
signals, in any order, can pass a limit together. The limits are checked against a book rebuilt
from the approved orders alone (quantities) and the signals' prices, after every decision."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import common_pb2, order_approved_pb2, risk_decision_pb2, signal_pb2
from meridian_common import topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.money import ZERO
from meridian_common.testing import caught_up, protective_stop
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

# five markets, two of them the same asset on another venue (per-asset exposure)
KEYS = [f"bybit:S{i}USDT" for i in range(4)] + ["binance:S0USDT"]
DIRECTIONS = [common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT, common_pb2.DIRECTION_FLAT]
T0 = 1_700_000_000_000


def _signal(n: int, key: str, direction: int, price: Decimal) -> signal_pb2.Signal:
    exchange, symbol = key.split(":")
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:{n}:{key}", event_time_ms=T0, producer="signals"),
        exchange=exchange, symbol=symbol, strategy="s", direction=direction, confidence=1.0,
        reference_price=str(price),
        stop_loss=protective_stop(direction, str(price)))


prices = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("500"), places=2)
burst = st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(DIRECTIONS), prices),
                 min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(signals=burst,
       order_notional=st.integers(50, 2000),
       position_cap=st.integers(100, 4000),
       extra_portfolio=st.integers(0, 8000),
       capital=st.integers(500, 20000),
       leverage=st.sampled_from([Decimal(1), Decimal(2), Decimal(5)]),
       max_open=st.integers(1, 5))
def test_no_burst_ever_exceeds_a_limit(signals: list[tuple[str, int, Decimal]],
                                       order_notional: int, position_cap: int,
                                       extra_portfolio: int, capital: int, leverage: Decimal,
                                       max_open: int) -> None:
    s = RiskSettings(order_notional=Decimal(order_notional),
                     max_position_notional=Decimal(position_cap),
                     max_portfolio_notional=Decimal(position_cap + extra_portfolio),
                     max_open_positions=max_open, initial_capital=Decimal(capital),
                     max_asset_notional=Decimal(position_cap + extra_portfolio // 2),
                     leverage=leverage, min_order_notional=Decimal(1),
                     quantity_step=Decimal("0.001"))
    handler = RiskHandler(s)
    qty: dict[str, Decimal] = {}  # from the approved orders alone
    entry: dict[str, Decimal] = {}  # price of the decision that opened the position
    mark: dict[str, Decimal] = {}
    for n, (key, direction, price) in enumerate(signals):
        before = sum((abs(q) * mark.get(k, ZERO) for k, q in qty.items() if k != key), ZERO)
        before += abs(qty.get(key, ZERO)) * price
        out = Outbox("risk")
        handler.handle(Inbound(topics.SIGNAL, key, _signal(n, key, direction, price)), out)
        caught_up(handler, handler.merge.progress(), (topics.SIGNAL, key), T0, out)
        mark[key] = price
        decisions = [m for t, _, m in out.items
                     if isinstance(m, risk_decision_pb2.RiskDecision)]
        orders = [m for t, _, m in out.items if isinstance(m, order_approved_pb2.ApprovedOrder)]
        assert len(decisions) == 1
        d = decisions[0]
        assert d.approved == all(r.passed for r in d.rules)
        if not d.approved:
            assert orders == []
            assert any(not r.passed for r in d.rules)  # a rejection names its failed rule
            continue
        assert len(orders) == 1
        o = orders[0]
        delta = Decimal(o.quantity) * (1 if o.side == common_pb2.SIDE_BUY else -1)
        old = qty.get(key, ZERO)
        new = old + delta
        if new == 0:
            qty.pop(key, None)
            entry.pop(key, None)
        else:
            qty[key] = new
            if old == 0 or (old > 0) != (new > 0):
                entry[key] = price
        exposure = sum((abs(q) * mark[k] for k, q in qty.items()), ZERO)
        margin = sum((abs(q) * entry[k] / leverage for k, q in qty.items()), ZERO)
        assert handler.positions == qty
        if o.reduce_only:
            # an exit is never blocked, and never adds
            assert abs(new) < abs(old)
            assert exposure <= before
            continue
        assert abs(new) * price <= s.max_position_notional
        symbol = key.split(":")[1]  # one asset, whichever venue
        assert sum((abs(q) * mark[k] for k, q in qty.items() if k.split(":")[1] == symbol),
                   ZERO) <= s.max_asset_notional
        assert exposure <= s.max_portfolio_notional, (exposure, s.max_portfolio_notional)
        assert len(qty) <= s.max_open_positions
        assert margin <= s.initial_capital
        assert Decimal(o.quantity) * price <= s.max_order_notional
