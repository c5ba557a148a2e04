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
