"""Fees are exact to the cash quantum; paper market fills move against the taker."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meridian.v1 import common_pb2, fill_pb2
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.money import cash


def test_fee_is_exact() -> None:
    fees = FeeSchedule(maker=Decimal("0.0002"), taker=Decimal("0.001"))
    # 0.12345 * 30000.5 = 3703.561725; * 0.001 = 3.703561725 -> banker's rounding to 1e-8
    assert fees.fee(Decimal("0.12345"), Decimal("30000.5"), fill_pb2.LIQUIDITY_TAKER) == \
        Decimal("3.70356172")
    # maker: 3703.561725 * 0.0002 = 0.740712345 -> 0.74071234 (half-even)
    assert fees.fee(Decimal("0.12345"), Decimal("30000.5"), fill_pb2.LIQUIDITY_MAKER) == \
        Decimal("0.74071234")


def test_fee_of_a_sell_is_positive() -> None:
    fees = FeeSchedule()
    assert fees.fee(Decimal("-2"), Decimal("100"), fill_pb2.LIQUIDITY_TAKER) == Decimal("0.2")


def test_negative_maker_rebate() -> None:
    fees = FeeSchedule(maker=Decimal("-0.0001"), taker=Decimal("0.0004"))
    assert fees.fee(Decimal("1"), Decimal("1000"), fill_pb2.LIQUIDITY_MAKER) == Decimal("-0.1")


@pytest.mark.parametrize("rate", [Decimal("0.02"), Decimal("-0.011")])
def test_fee_rate_bounds(rate: Decimal) -> None:
    with pytest.raises(ValueError, match="taker"):
        FeeSchedule(taker=rate)


@given(st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("1000"), places=5),
       st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2))
def test_fee_matches_exact_product(qty: Decimal, price: Decimal) -> None:
    fee = FeeSchedule().fee(qty, price, fill_pb2.LIQUIDITY_TAKER)
    exact = qty * price * Decimal("0.001")  # at most 5+2+3 decimals and 13 digits: exact
    assert fee == cash(exact)
    assert abs(fee - exact) <= Decimal("0.000000005")


def test_market_fill_without_slippage_is_the_open() -> None:
    sim = PaperFillModel().market(common_pb2.SIDE_BUY, Decimal("0.5"), Decimal("30000.5"))
    assert sim.price == Decimal("30000.5")
    assert sim.liquidity == fill_pb2.LIQUIDITY_TAKER
    assert sim.fee == Decimal("15.00025")


def test_slippage_moves_against_the_taker() -> None:
    model = PaperFillModel(FeeSchedule(taker=Decimal("0.001")), slippage_bps=Decimal("5"))
    buy = model.market(common_pb2.SIDE_BUY, Decimal("1"), Decimal("20000"))
    sell = model.market(common_pb2.SIDE_SELL, Decimal("1"), Decimal("20000"))
    assert buy.price == Decimal("20010")  # 20000 * 1.0005
    assert sell.price == Decimal("19990")  # 20000 * 0.9995
    assert buy.fee == Decimal("20.01")
    assert sell.fee == Decimal("19.99")


@given(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("100000"), places=4),
       st.decimals(min_value=Decimal(0), max_value=Decimal(1000), places=2))
def test_slippage_direction_property(open_: Decimal, bps: Decimal) -> None:
    model = PaperFillModel(slippage_bps=bps)
    buy = model.market(common_pb2.SIDE_BUY, Decimal(1), open_)
    sell = model.market(common_pb2.SIDE_SELL, Decimal(1), open_)
    assert sell.price <= open_ <= buy.price
    assert buy.price - open_ == open_ - sell.price


@pytest.mark.parametrize("bps", [Decimal("-1"), Decimal("1000.01")])
def test_slippage_bounds(bps: Decimal) -> None:
    with pytest.raises(ValueError, match="slippage_bps"):
        PaperFillModel(slippage_bps=bps)
