"""Order sizing: lot rounding, exchange market rules and the sizing methods (all Decimal)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import common_pb2
from meridian_common.money import MONEY_CONTEXT
from meridian_common.sizing import (
    MarketRules,
    Sizing,
    confidence_scaled,
    fixed_fraction,
    fractional_kelly,
    kelly_fraction,
    quantity_for_notional,
    volatility_adjusted,
)

prices = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000000"), places=8,
                     allow_nan=False, allow_infinity=False)
notionals = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000000"), places=2,
                        allow_nan=False, allow_infinity=False)
steps = st.sampled_from([Decimal(s) for s in ("1", "0.1", "0.01", "0.001", "0.00001",
                                              "0.00000001", "0.003", "0.25", "5")])


def test_example_btc() -> None:
    q = quantity_for_notional(Decimal("1000"), Decimal("35050.75"), Decimal("0.00001"))
    # 1000 / 35050.75 = 0.0285300...
    assert q == Decimal("0.02853")
    assert q * Decimal("35050.75") == Decimal("999.9978975")


def test_exact_division_is_kept() -> None:
    assert quantity_for_notional(Decimal("1000"), Decimal("250"), Decimal("0.001")) == 4


def test_notional_below_one_step_gives_zero() -> None:
    assert quantity_for_notional(Decimal("0.3"), Decimal("35000"), Decimal("0.00001")) == 0


@pytest.mark.parametrize("notional", [Decimal(0), Decimal("-5")])
def test_non_positive_notional_gives_zero(notional: Decimal) -> None:
    assert quantity_for_notional(notional, Decimal("100"), Decimal("0.01")) == 0


@pytest.mark.parametrize("price", [Decimal(0), Decimal("-1")])
def test_non_positive_price_rejected(price: Decimal) -> None:
    with pytest.raises(ValueError, match="price"):
        quantity_for_notional(Decimal("1000"), price, Decimal("0.01"))


@settings(max_examples=400)
@given(notionals, prices, steps)
def test_value_never_exceeds_notional_and_is_largest(notional: Decimal, price: Decimal,
                                                     step: Decimal) -> None:
    q = quantity_for_notional(notional, price, step)
    assert q >= 0
    assert MONEY_CONTEXT.remainder(q, step) == 0
    assert MONEY_CONTEXT.multiply(q, price) <= notional
    # one more step would exceed the notional
    assert MONEY_CONTEXT.multiply(MONEY_CONTEXT.add(q, step), price) > notional


# --------------------------------------------------------------------------- market rules

D = Decimal
BTC = MarketRules(tick=D("0.1"), lot=D("0.001"), min_qty=D("0.001"), min_notional=D("5"),
                  max_leverage=D("100"))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"tick": D(0), "lot": D("0.1")}, "tick"),
    ({"tick": D("0.1"), "lot": D("-1")}, "lot"),
    ({"tick": D("0.1"), "lot": D("0.1"), "min_qty": D("-1")}, "min_qty"),
    ({"tick": D("0.1"), "lot": D("0.1"), "min_notional": D("-5")}, "min_notional"),
    ({"tick": D("0.1"), "lot": D("0.1"), "max_leverage": D("0.5")}, "max_leverage"),
    ({"tick": 0.1, "lot": D("0.1")}, "tick"),  # floats never enter money paths
])
def test_rules_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MarketRules(**kwargs)


def test_rules_accept_strings_and_ints() -> None:
    rules = MarketRules(tick="0.5", lot=1, min_notional="10")  # type: ignore[arg-type]
    assert rules.tick == D("0.5")
    assert rules.lot == D(1)
    assert rules.max_leverage == 1


@pytest.mark.parametrize(("price", "side", "mode", "expected"), [
    ("30000.05", "buy", None, "30000.0"),
    ("30000.05", "sell", None, "30000.1"),
    ("30000.05", common_pb2.SIDE_BUY, None, "30000.0"),
    ("30000.05", common_pb2.SIDE_SELL, None, "30000.1"),
    ("30000.05", "buy", "up", "30000.1"),  # mode wins over side
    ("30000.05", None, "nearest", "30000.0"),  # tie: even tick
    ("30000.15", None, "nearest", "30000.2"),  # tie: even tick
    ("30000.16", None, "nearest", "30000.2"),
    ("30000.14", None, "nearest", "30000.1"),
    ("30000.1", "sell", None, "30000.1"),  # already on a tick: unchanged
])
def test_round_price(price: str, side: str | int | None, mode: str | None,
                     expected: str) -> None:
    assert BTC.round_price(D(price), side, mode) == D(expected)  # type: ignore[arg-type]


def test_round_price_odd_tick() -> None:
    rules = MarketRules(tick=D("0.003"), lot=D(1))
    assert rules.round_price(D("1.0001"), "buy") == D("0.999")
    assert rules.round_price(D("1.0001"), "sell") == D("1.002")


def test_round_price_errors() -> None:
    with pytest.raises(ValueError, match="side or a mode"):
        BTC.round_price(D(100))
    with pytest.raises(ValueError, match="side"):
        BTC.round_price(D(100), "hold")
    with pytest.raises(ValueError, match="mode"):
        BTC.round_price(D(100), mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounds to 0"):
        BTC.round_price(D("0.05"), "buy")
    with pytest.raises(ValueError, match="price"):
        BTC.round_price(D(0), "sell")


def test_round_qty() -> None:
    assert BTC.round_qty(D("0.0129")) == D("0.012")
    assert BTC.round_qty(D("0.0009")) == 0
    with pytest.raises(ValueError, match="qty"):
        BTC.round_qty(D("-1"))


def test_valid_order_has_no_reasons() -> None:
    assert BTC.valid(D("0.012"), D("30000.1")) == []


def test_valid_lists_every_reason() -> None:
    reasons = BTC.valid(D("0.0015"), D("30000.05"))
    assert any("multiple of lot" in r for r in reasons)
    assert any("multiple of tick" in r for r in reasons)
    rules = MarketRules(tick=D("0.1"), lot=D("0.001"), min_qty=D("0.01"), min_notional=D("5"))
    reasons = rules.valid(D("0.001"), D("100"))
    assert reasons == ["quantity 0.001 is below min_qty 0.01",
                       "notional 0.1 is below min_notional 5"]
    assert BTC.valid(D(0), D(0)) == ["quantity 0 is not positive", "price 0 is not positive"]


def test_from_ccxt_tick_size_floats() -> None:
    market = {"symbol": "BTC/USDT:USDT",
              "precision": {"price": 0.1, "amount": 0.001},
              "limits": {"amount": {"min": 0.001, "max": 1000.0}, "cost": {"min": 5},
                         "leverage": {"min": 1, "max": 100}}}
    assert MarketRules.from_ccxt(market) == BTC


def test_from_ccxt_strings_and_defaults() -> None:
    market = {"symbol": "ETH/USDT", "precision": {"price": "0.01", "amount": "0.0001"},
              "limits": {"amount": {"min": None}, "cost": {}}}
    rules = MarketRules.from_ccxt(market)
    assert rules == MarketRules(tick=D("0.01"), lot=D("0.0001"), min_qty=D("0.0001"),
                                min_notional=D(0), max_leverage=D(1))


def test_from_ccxt_decimal_places() -> None:
    market = {"symbol": "X/USDT", "precision": {"price": 2, "amount": 3}}
    rules = MarketRules.from_ccxt(market, precision_mode="decimal_places")
    assert (rules.tick, rules.lot) == (D("0.01"), D("0.001"))
    with pytest.raises(ValueError, match="decimal places"):
        MarketRules.from_ccxt({"precision": {"price": 0.5, "amount": 3}},
                              precision_mode="decimal_places")


def test_from_ccxt_unknown_precision_mode() -> None:
    with pytest.raises(ValueError, match="precision_mode"):
        MarketRules.from_ccxt({"precision": {"price": 1, "amount": 1}},
                              precision_mode="significant")  # type: ignore[arg-type]


def test_from_ccxt_missing_precision_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"BTC/USDT precision\.amount"):
        MarketRules.from_ccxt({"symbol": "BTC/USDT", "precision": {"price": 0.1}})


# --------------------------------------------------------------------------- sizing methods


def test_fixed_fraction_example() -> None:
    s = fixed_fraction(D(10000), D("0.1"), D(30000), BTC, leverage=D(2))
    # budget 10000 x 0.1 x 2 = 2000; 2000 / 30000 = 0.0666.. -> 0.066
    assert s.ok
    assert (s.quantity, s.notional) == (D("0.066"), D(1980))
    assert s.method == "fixed_fraction"
    assert s.inputs["budget"] == "2000"
    assert s.inputs["price"] == "30000"
    assert s.reason == ""


def test_fixed_fraction_below_min_notional_gives_zero_with_reason() -> None:
    rules = MarketRules(tick=D("0.1"), lot=D("0.00001"), min_notional=D(5))
    s = fixed_fraction(D(100), D("0.01"), D(30000), rules)
    assert (s.quantity, s.notional) == (0, 0)
    assert s.reason == "notional 0.9 is below min_notional 5"
    assert s.inputs["sized_quantity"] == "0.00003"


def test_fixed_fraction_below_min_qty_and_below_one_lot() -> None:
    rules = MarketRules(tick=D("0.1"), lot=D("0.001"), min_qty=D("0.01"))
    s = fixed_fraction(D(1000), D("0.1"), D(30000), rules)  # 0.00333 -> 0.003 < 0.01
    assert s.quantity == 0
    assert "below min_qty" in s.reason
    s = fixed_fraction(D(100), D("0.1"), D(30000), rules)  # 0.000333 -> 0
    assert s.quantity == 0
    assert "less than one lot" in s.reason
    assert not fixed_fraction(D(0), D("0.1"), D(30000), rules).ok


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"equity": D(-1)}, "equity"),
    ({"fraction": D("1.5")}, "fraction"),
    ({"price": D(0)}, "price"),
    ({"leverage": D(101)}, "leverage"),
    ({"leverage": D("0.5")}, "leverage"),
])
def test_fixed_fraction_validation(kwargs: dict, field: str) -> None:
    args = {"equity": D(1000), "fraction": D("0.1"), "price": D(100), "rules": BTC,
            "leverage": D(1), **kwargs}
    with pytest.raises(ValueError, match=field):
        fixed_fraction(**args)


def test_confidence_scaled() -> None:
    s = confidence_scaled(D(10000), D("0.2"), D("0.5"), D("0.15"), D(100), BTC)
    assert s.quantity == D(10)  # fraction 0.1 -> 1000 / 100
    assert s.inputs["fraction"] == "0.1"
    s = confidence_scaled(D(10000), D("0.2"), D("0.9"), D("0.15"), D(100), BTC)
    assert s.quantity == D(15)  # 0.18 capped at 0.15
    assert s.inputs["confidence"] == "0.9"
    assert not confidence_scaled(D(10000), D("0.2"), D(0), D("0.15"), D(100), BTC).ok
    with pytest.raises(ValueError, match="confidence"):
        confidence_scaled(D(10000), D("0.2"), D("1.1"), D("0.15"), D(100), BTC)


def test_volatility_adjusted_long_example() -> None:
    s = volatility_adjusted(D(10000), D("0.01"), D(30000), D(29400), BTC, leverage=D(5))
    # risk 100 / distance 600 = 0.1666.. -> 0.166; loss at stop 0.166 x 600 = 99.6 <= 100
    assert s.quantity == D("0.166")
    assert s.notional == D(4980)
    assert s.inputs["binding"] == "risk"
    assert s.inputs["risk_budget"] == "100"
    assert s.inputs["stop_distance"] == "600"


def test_volatility_adjusted_short_and_caps() -> None:
    s = volatility_adjusted(D(10000), D("0.01"), D(30000), D(30600), BTC, leverage=D(5))
    assert s.quantity == D("0.166")
    # a 1-dollar stop asks for 100 BTC; 1x leverage allows 10000 / 30000 = 0.333
    s = volatility_adjusted(D(10000), D("0.01"), D(30000), D(29999), BTC)
    assert (s.quantity, s.inputs["binding"]) == (D("0.333"), "leverage")
    s = volatility_adjusted(D(10000), D("0.01"), D(30000), D(29999), BTC,
                            max_notional=D(1000))
    assert (s.quantity, s.inputs["binding"]) == (D("0.033"), "max_notional")


def test_volatility_adjusted_refuses_stop_at_entry() -> None:
    with pytest.raises(ValueError, match="stop 30000 equals entry"):
        volatility_adjusted(D(10000), D("0.01"), D(30000), D(30000), BTC)


def test_kelly_fraction_examples() -> None:
    # p = 0.6, b = 1.5: f* = 0.6 - 0.4 / 1.5 = 1/3; half-Kelly 1/6, cut to 1e-8
    assert kelly_fraction(30, 20, D(150), D(100)) == D("0.16666666")
    assert kelly_fraction(30, 20, D(150), D(100), multiplier=D(1)) == D("0.25")  # capped
    assert kelly_fraction(30, 20, D(150), D(100), multiplier=D(1), cap=D(1)) == D("0.33333333")
    assert kelly_fraction(12, 7, D(150), D(100)) == 0  # 19 trades < 20
    assert kelly_fraction(12, 7, D(150), D(100), min_trades=10) > 0
    assert kelly_fraction(20, 30, D(100), D(100)) == 0  # negative edge clipped to 0
    assert kelly_fraction(25, 0, D(10), D(0)) == D("0.25")  # no losses: p = 1, capped
    assert kelly_fraction(0, 25, D(0), D(10)) == 0


def test_kelly_fraction_validation() -> None:
    with pytest.raises(ValueError, match="wins"):
        kelly_fraction(-1, 30, D(1), D(1))
    with pytest.raises(ValueError, match="avg_loss"):
        kelly_fraction(20, 10, D(1), D(0))
    with pytest.raises(ValueError, match="cap"):
        kelly_fraction(20, 10, D(1), D(1), cap=D(2))


def test_fractional_kelly() -> None:
    rules = MarketRules(tick=D("0.01"), lot=D("0.01"))
    s = fractional_kelly(D(10000), 30, 20, D(150), D(100), D(100), rules)
    # budget 10000 x 0.16666666 = 1666.6666 -> 16.66 units
    assert s.quantity == D("16.66")
    assert s.inputs["fraction"] == "0.16666666"
    assert s.inputs["wins"] == "30"
    s = fractional_kelly(D(10000), 5, 5, D(150), D(100), D(100), rules)
    assert s.quantity == 0
    assert "kelly fraction is 0" in s.reason


# --------------------------------------------------------------------------- properties

equities = st.decimals(min_value=D(0), max_value=D("10000000"), places=2)
fractions = st.decimals(min_value=D(0), max_value=D(1), places=4)
leverages = st.integers(min_value=1, max_value=20).map(D)
lot_steps = st.sampled_from([D(s) for s in ("1", "0.1", "0.001", "0.00001", "0.003", "0.25")])
rules_st = st.builds(MarketRules, tick=st.sampled_from([D("0.01"), D("0.5")]), lot=lot_steps,
                     min_qty=st.sampled_from([D(0), D("0.001"), D(1)]),
                     min_notional=st.sampled_from([D(0), D(5), D(100)]),
                     max_leverage=st.just(D(20)))
fast = settings(max_examples=200, deadline=None)


def _check_result(s: Sizing, rules: MarketRules) -> None:
    assert s.quantity >= 0
    assert MONEY_CONTEXT.remainder(s.quantity, rules.lot) == 0
    if s.ok:
        assert s.reason == ""
        assert s.quantity >= rules.min_qty
        assert s.notional >= rules.min_notional
    else:
        assert s.reason
        assert s.notional == 0


@fast
@given(equities, fractions, prices, rules_st, leverages)
def test_fixed_fraction_never_exceeds_budget(equity: Decimal, fraction: Decimal, price: Decimal,
                                             rules: MarketRules, leverage: Decimal) -> None:
    s = fixed_fraction(equity, fraction, price, rules, leverage)
    _check_result(s, rules)
    assert s.notional <= equity * fraction * leverage
    assert s.notional == s.quantity * price


@fast
@given(equities, fractions, fractions, fractions, prices, rules_st, leverages)
def test_confidence_scaled_never_exceeds_cap(equity: Decimal, base: Decimal, confidence: Decimal,
                                             cap: Decimal, price: Decimal, rules: MarketRules,
                                             leverage: Decimal) -> None:
    s = confidence_scaled(equity, base, confidence, cap, price, rules, leverage)
    _check_result(s, rules)
    assert s.notional <= equity * cap * leverage
    assert s.notional <= equity * base * confidence * leverage


@fast
@given(equities, st.decimals(min_value=D(0), max_value=D("0.1"), places=4), prices,
       st.decimals(min_value=D("0.0001"), max_value=D("0.5"), places=4), st.booleans(),
       rules_st, leverages)
def test_volatility_adjusted_loss_at_stop_within_budget(
        equity: Decimal, risk: Decimal, entry: Decimal, stop_pct: Decimal, is_long: bool,
        rules: MarketRules, leverage: Decimal) -> None:
    distance = MONEY_CONTEXT.multiply(entry, stop_pct)
    stop = entry - distance if is_long else entry + distance
    if stop <= 0 or stop == entry:
        return
    s = volatility_adjusted(equity, risk, entry, stop, rules, leverage)
    _check_result(s, rules)
    assert s.quantity * abs(entry - stop) <= equity * risk
    assert s.notional <= equity * leverage


@fast
@given(st.integers(0, 200), st.integers(0, 200),
       st.decimals(min_value=D(0), max_value=D(10000), places=2),
       st.decimals(min_value=D("0.01"), max_value=D(10000), places=2),
       st.decimals(min_value=D(0), max_value=D(2), places=2), fractions)
def test_kelly_fraction_within_bounds(wins: int, losses: int, avg_win: Decimal,
                                      avg_loss: Decimal, multiplier: Decimal,
                                      cap: Decimal) -> None:
    f = kelly_fraction(wins, losses, avg_win, avg_loss, multiplier, cap)
    assert 0 <= f <= cap
    if wins + losses < 20:
        assert f == 0


@fast
@given(prices, st.sampled_from([D("0.01"), D("0.5"), D("0.003"), D(5)]))
def test_round_price_properties(price: Decimal, tick: Decimal) -> None:
    rules = MarketRules(tick=tick, lot=D(1))
    if price < tick:
        return
    down, up = rules.round_price(price, "buy"), rules.round_price(price, "sell")
    nearest = rules.round_price(price, mode="nearest")
    for p in (down, up, nearest):
        assert MONEY_CONTEXT.remainder(p, tick) == 0
    assert down <= price <= up
    assert up - down in (0, tick)
    assert abs(nearest - price) * 2 <= tick
