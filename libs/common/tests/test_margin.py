"""Margin and liquidation prices for linear perpetuals: hand-checked numbers and invariants."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import common_pb2
from meridian_common.margin import (
    initial_margin,
    liquidation_price_cross,
    liquidation_price_isolated,
    maintenance_margin,
    stop_before_liquidation,
    unrealized_pnl,
)
from meridian_common.money import MONEY_CONTEXT

D = Decimal
TOLERANCE = D("1e-20")


def test_initial_and_maintenance_margin() -> None:
    assert initial_margin(D(30000), D(10)) == D(3000)
    assert initial_margin(D(100), D(3)) == MONEY_CONTEXT.divide(D(100), D(3))
    assert maintenance_margin(D(30000), D("0.005")) == D(150)
    with pytest.raises(ValueError, match="leverage"):
        initial_margin(D(100), D("0.5"))
    with pytest.raises(ValueError, match="leverage"):
        initial_margin(D(100), D(126))
    with pytest.raises(ValueError, match="notional"):
        initial_margin(D(-1), D(2))
    with pytest.raises(ValueError, match="mmr"):
        maintenance_margin(D(100), D(1))


def test_unrealized_pnl() -> None:
    assert unrealized_pnl("long", D(30000), D(2), D(31000)) == D(2000)
    assert unrealized_pnl("short", D(30000), D(2), D(31000)) == D(-2000)
    assert unrealized_pnl(common_pb2.DIRECTION_SHORT, D(30000), D(2), D(29000)) == D(2000)


def test_isolated_btc_long_10x() -> None:
    # 30000 x (1 - 1/10 + 0.005) = 30000 x 0.905
    assert liquidation_price_isolated("long", D(30000), D(1), D(10), D("0.005")) == D(27150)


def test_isolated_btc_short_10x() -> None:
    # 30000 x (1 + 1/10 - 0.005) = 30000 x 1.095
    assert liquidation_price_isolated("short", D(30000), D("0.5"), D(10), D("0.005")) \
        == D(32850)


def test_isolated_accepts_proto_directions() -> None:
    assert liquidation_price_isolated(common_pb2.DIRECTION_LONG, D(2000), D(1), D(20),
                                      D("0.01")) == D(1920)  # 2000 x (1 - 0.05 + 0.01)
    assert liquidation_price_isolated(common_pb2.DIRECTION_SHORT, D(2000), D(1), D(20),
                                      D("0.01")) == D(2080)


def test_isolated_equity_equals_maintenance_at_liquidation_example() -> None:
    entry, qty, lev, mmr = D(30000), D("0.2"), D(10), D("0.005")
    liq = liquidation_price_isolated("long", entry, qty, lev, mmr)
    equity = initial_margin(qty * entry, lev) + unrealized_pnl("long", entry, qty, liq)
    assert equity == maintenance_margin(qty * entry, mmr) == D(30)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"side": "up"}, "side"),
    ({"side": common_pb2.DIRECTION_FLAT}, "side"),
    ({"entry": D(0)}, "entry"),
    ({"qty": D(0)}, "qty"),
    ({"leverage": D("0.9")}, "leverage"),
    ({"leverage": D(200)}, "leverage"),
    ({"mmr": D("-0.01")}, "mmr"),
    ({"mmr": D("0.1")}, "liquidated at entry"),  # mmr == 1/leverage
    ({"mmr": D("0.2")}, "liquidated at entry"),
])
def test_isolated_validation(kwargs: dict, field: str) -> None:
    args = {"side": "long", "entry": D(30000), "qty": D(1), "leverage": D(10),
            "mmr": D("0.005"), **kwargs}
    with pytest.raises(ValueError, match=field):
        liquidation_price_isolated(**args)


def test_cross_equals_isolated_example() -> None:
    # wallet = initial margin 3000, no other positions
    assert liquidation_price_cross("long", D(30000), D(1), D(3000), D("0.005")) == D(27150)
    assert liquidation_price_cross("short", D(30000), D(1), D(3000), D("0.005")) == D(32850)


def test_cross_with_other_positions() -> None:
    # wallet 5000, other positions: MM 100, uPnL -400. Long 1 @ 30000, mmr 0.005 (MM 150):
    # 5000 - 400 + (P - 30000) = 150 + 100  ->  P = 25650
    assert liquidation_price_cross("long", D(30000), D(1), D(5000), D("0.005"),
                                   other_maintenance=D(100),
                                   other_unrealized_pnl=D(-400)) == D(25650)
    # short 2 @ 30000 (MM 300): 5000 + 600 + 2 x (30000 - P) = 300 + 100 -> P = 32600
    assert liquidation_price_cross("short", D(30000), D(2), D(5000), D("0.005"),
                                   other_maintenance=D(100),
                                   other_unrealized_pnl=D(600)) == D(32600)


def test_cross_long_fully_covered_has_no_liquidation_price() -> None:
    assert liquidation_price_cross("long", D(30000), D(1), D(40000), D("0.005")) == 0


def test_cross_short_below_maintenance_everywhere_is_an_error() -> None:
    with pytest.raises(ValueError, match="wallet_balance"):
        liquidation_price_cross("short", D(30000), D(1), D(0), D("0.005"),
                                other_maintenance=D(100), other_unrealized_pnl=D(-40000))


def test_cross_validation() -> None:
    with pytest.raises(ValueError, match="wallet_balance"):
        liquidation_price_cross("long", D(30000), D(1), D(-1), D("0.005"))
    with pytest.raises(ValueError, match="other_maintenance"):
        liquidation_price_cross("long", D(30000), D(1), D(1), D("0.005"),
                                other_maintenance=D(-1))
    with pytest.raises(ValueError, match="qty"):
        liquidation_price_cross("long", D(30000), D(0), D(1), D("0.005"))


def test_stop_before_liquidation() -> None:
    assert stop_before_liquidation("long", D(28000), D(27150))
    assert not stop_before_liquidation("long", D(27000), D(27150))
    assert not stop_before_liquidation("long", D(27150), D(27150))
    assert stop_before_liquidation("short", D(32000), D(32850))
    assert not stop_before_liquidation(common_pb2.DIRECTION_SHORT, D(33000), D(32850))
    assert stop_before_liquidation("long", D(1), D(0))  # fully covered cross long


# --------------------------------------------------------------------------- properties

entries = st.decimals(min_value=D("0.0001"), max_value=D(1000000), places=4)
qtys = st.decimals(min_value=D("0.001"), max_value=D(10000), places=3)
sides = st.sampled_from(["long", "short"])
fast = settings(max_examples=200, deadline=None)


@st.composite
def leverage_and_mmr(draw: st.DrawFn) -> tuple[Decimal, Decimal]:
    leverage = D(draw(st.integers(min_value=1, max_value=125)))
    # mmr strictly below 1/leverage, in steps of 0.0001
    top = int(MONEY_CONTEXT.divide_int(D(10000), leverage)) - 1
    mmr = D(draw(st.integers(min_value=0, max_value=top))) / D(10000)
    return leverage, mmr


@fast
@given(sides, entries, qtys, leverage_and_mmr())
def test_isolated_equity_equals_maintenance(side: str, entry: Decimal, qty: Decimal,
                                            lev_mmr: tuple[Decimal, Decimal]) -> None:
    leverage, mmr = lev_mmr
    liq = liquidation_price_isolated(side, entry, qty, leverage, mmr)
    notional = MONEY_CONTEXT.multiply(qty, entry)
    equity = initial_margin(notional, leverage) + unrealized_pnl(side, entry, qty, liq)
    assert abs(equity - maintenance_margin(notional, mmr)) <= TOLERANCE
    if side == "long":
        assert 0 <= liq < entry
    else:
        assert liq > entry


@fast
@given(entries, qtys, leverage_and_mmr())
def test_isolated_long_liquidation_rises_with_leverage(entry: Decimal, qty: Decimal,
                                                       lev_mmr: tuple[Decimal, Decimal]) -> None:
    leverage, mmr = lev_mmr
    if leverage == 1:
        return
    lower = leverage - 1  # mmr < 1/leverage < 1/(leverage - 1): still valid
    assert liquidation_price_isolated("long", entry, qty, lower, mmr) \
        < liquidation_price_isolated("long", entry, qty, leverage, mmr)
    assert liquidation_price_isolated("short", entry, qty, lower, mmr) \
        > liquidation_price_isolated("short", entry, qty, leverage, mmr)


@fast
@given(sides, entries, qtys, leverage_and_mmr())
def test_cross_alone_with_initial_margin_equals_isolated(
        side: str, entry: Decimal, qty: Decimal, lev_mmr: tuple[Decimal, Decimal]) -> None:
    leverage, mmr = lev_mmr
    wallet = initial_margin(MONEY_CONTEXT.multiply(qty, entry), leverage)
    cross = liquidation_price_cross(side, entry, qty, wallet, mmr)
    isolated = liquidation_price_isolated(side, entry, qty, leverage, mmr)
    assert abs(cross - isolated) <= TOLERANCE


@fast
@given(sides, entries, qtys, st.decimals(min_value=D(0), max_value=D(1000000), places=2),
       st.decimals(min_value=D(0), max_value=D("0.05"), places=4),
       st.decimals(min_value=D(0), max_value=D(10000), places=2),
       st.decimals(min_value=D(-10000), max_value=D(10000), places=2))
def test_cross_account_equity_equals_maintenance(side: str, entry: Decimal, qty: Decimal,
                                                 wallet: Decimal, mmr: Decimal,
                                                 other_mm: Decimal, other_pnl: Decimal) -> None:
    try:
        liq = liquidation_price_cross(side, entry, qty, wallet, mmr, other_mm, other_pnl)
    except ValueError:
        assert side == "short"  # only an underwater short has no price at all
        return
    if liq == 0:
        assert side == "long"  # covered all the way down: equity stays above maintenance
        equity = wallet + other_pnl + unrealized_pnl(side, entry, qty, D(0))
        assert equity >= maintenance_margin(qty * entry, mmr) + other_mm
        return
    equity = wallet + other_pnl + unrealized_pnl(side, entry, qty, liq)
    total_mm = maintenance_margin(qty * entry, mmr) + other_mm
    assert abs(equity - total_mm) <= TOLERANCE


@fast
@given(sides, entries, qtys, leverage_and_mmr(),
       st.decimals(min_value=D("0.0001"), max_value=D(2000000), places=4))
def test_stop_before_liquidation_agrees(side: str, entry: Decimal, qty: Decimal,
                                        lev_mmr: tuple[Decimal, Decimal], stop: Decimal) -> None:
    leverage, mmr = lev_mmr
    liq = liquidation_price_isolated(side, entry, qty, leverage, mmr)
    safe = stop_before_liquidation(side, stop, liq)
    # the stop is safe exactly when the position's equity at the stop is still above maintenance
    notional = MONEY_CONTEXT.multiply(qty, entry)
    equity_at_stop = initial_margin(notional, leverage) + unrealized_pnl(side, entry, qty, stop)
    margin_left = equity_at_stop - maintenance_margin(notional, mmr)
    if abs(margin_left) > TOLERANCE:
        assert safe == (margin_left > 0)
