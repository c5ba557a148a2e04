"""PositionBook: average-cost accounting in exact decimals, round trips, partial closes, flips."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import common_pb2
from meridian_common.accounting import ClosedTrade, PositionBook

BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
D = Decimal


def test_long_round_trip() -> None:
    book = PositionBook()
    assert book.apply_fill(BUY, D(2), D(100), D("0.2"), 1000) == []
    assert (book.quantity, book.average_price) == (D(2), D(100))
    assert book.unrealized(D(105)) == D(10)
    assert book.net_pnl(D(105)) == D("9.8")
    closed = book.apply_fill(SELL, D(2), D(110), D("0.22"), 2000)
    assert closed == [ClosedTrade(entry_time_ms=1000, exit_time_ms=2000, direction=1,
                                  quantity=D(2), entry_price=D(100), exit_price=D(110),
                                  gross_pnl=D(20), fees=D("0.42"))]
    assert closed[0].net_pnl == D("19.58")
    assert book.quantity == 0
    assert book.average_price == 0
    assert book.realized_pnl == D(20)
    assert book.fees_paid == D("0.42")
    assert book.trades_closed == 1
    assert book.unrealized(D(1)) == 0
    assert book.net_pnl(D(1)) == D("19.58")


def test_short_round_trip() -> None:
    book = PositionBook()
    book.apply_fill(SELL, D("0.5"), D("30000.5"), D("15.00025"), 1)
    assert book.quantity == D("-0.5")
    assert book.unrealized(D("29000.5")) == D(500)
    closed = book.apply_fill(BUY, D("0.5"), D("29000.5"), D("14.50025"), 2)
    assert len(closed) == 1
    assert closed[0].direction == -1
    assert closed[0].gross_pnl == D(500)
    assert book.realized_pnl == D(500)
    assert book.fees_paid == D("29.5005")


def test_partial_close() -> None:
    book = PositionBook()
    book.apply_fill(BUY, D(3), D(100), D("0.3"), 1)
    assert book.apply_fill(SELL, D(1), D(120), D("0.12"), 2) == []
    assert book.quantity == D(2)
    assert book.average_price == D(100)  # a reduction does not move the average
    assert book.realized_pnl == D(20)
    assert book.trades_closed == 0
    closed = book.apply_fill(SELL, D(2), D(90), D("0.18"), 3)
    assert book.realized_pnl == D(0)
    assert len(closed) == 1
    t = closed[0]
    assert (t.quantity, t.entry_price, t.exit_price) == (D(3), D(100), D(100))
    assert t.gross_pnl == 0
    assert t.fees == D("0.6")
    assert (t.entry_time_ms, t.exit_time_ms) == (1, 3)


def test_adding_moves_average() -> None:
    book = PositionBook()
    book.apply_fill(BUY, D(1), D(100), D(0), 1)
    book.apply_fill(BUY, D(3), D(200), D(0), 2)
    assert book.quantity == D(4)
    assert book.average_price == D(175)
    closed = book.apply_fill(SELL, D(4), D(180), D(0), 3)
    assert closed[0].entry_price == D(175)
    assert closed[0].quantity == D(4)
    assert book.realized_pnl == D(20)


def test_flip_long_to_short_in_one_fill() -> None:
    book = PositionBook()
    book.apply_fill(BUY, D(1), D(100), D("0.1"), 1)
    closed = book.apply_fill(SELL, D(3), D(110), D("0.33"), 2)
    assert len(closed) == 1
    t = closed[0]
    assert t.direction == 1
    assert (t.quantity, t.entry_price, t.exit_price) == (D(1), D(100), D(110))
    assert t.gross_pnl == D(10)
    assert t.fees == D("0.21")  # opening fee + the closing third of the flip's fee
    assert book.quantity == D(-2)
    assert book.average_price == D(110)
    assert book.realized_pnl == D(10)
    assert book.fees_paid == D("0.43")
    assert book.trades_closed == 1
    # close the short: the new trade carries the other two thirds of the flip's fee
    closed = book.apply_fill(BUY, D(2), D(105), D("0.21"), 3)
    assert len(closed) == 1
    t = closed[0]
    assert t.direction == -1
    assert (t.quantity, t.entry_price, t.exit_price) == (D(2), D(110), D(105))
    assert (t.entry_time_ms, t.exit_time_ms) == (2, 3)
    assert t.gross_pnl == D(10)
    assert t.fees == D("0.43")
    assert book.realized_pnl == D(20)
    assert book.trades_closed == 2
    assert book.quantity == 0


def test_flip_short_to_long() -> None:
    book = PositionBook()
    book.apply_fill(SELL, D(2), D(50), D(0), 1)
    closed = book.apply_fill(BUY, D(5), D(40), D(0), 2)
    assert len(closed) == 1
    assert closed[0].gross_pnl == D(20)
    assert book.quantity == D(3)
    assert book.average_price == D(40)


@pytest.mark.parametrize("qty", [D(0), D(-1)])
def test_non_positive_quantity_rejected(qty: Decimal) -> None:
    with pytest.raises(ValueError, match="quantity"):
        PositionBook().apply_fill(BUY, qty, D(1), D(0), 1)


fill_strategy = st.tuples(
    st.booleans(),
    st.decimals(min_value=D("0.001"), max_value=D(10), places=3),
    st.decimals(min_value=D(1), max_value=D(100000), places=2),
    st.decimals(min_value=D(0), max_value=D(5), places=8),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(fill_strategy, min_size=1, max_size=25),
       st.decimals(min_value=D(1), max_value=D(100000), places=2))
def test_flat_book_conserves_cash(fills: list[tuple[bool, Decimal, Decimal, Decimal]],
                                  last_price: Decimal) -> None:
    """Ending flat, realized PnL is what the sells brought in minus what the buys cost.

    Tolerance: each closing fill's PnL is rounded to the 1e-8 cash quantum (half a quantum) and
    is computed from an average price kept to 1e-12 (at most k * 0.5e-12 off after k additions,
    times at most 250 units held), so the total is within one quantum per fill."""
    book = PositionBook()
    position = D(0)
    sells = buys = D(0)
    fees = D(0)
    trades: list[ClosedTrade] = []
    for is_buy, qty, price, fee in fills:
        trades += book.apply_fill(BUY if is_buy else SELL, qty, price, fee, 1)
        position += qty if is_buy else -qty
        if is_buy:
            buys += qty * price
        else:
            sells += qty * price
        fees += fee
    if position != 0:
        qty = abs(position)
        trades += book.apply_fill(SELL if position > 0 else BUY, qty, last_price, D(0), 2)
        if position > 0:
            sells += qty * last_price
        else:
            buys += qty * last_price
    n = len(fills) + 1
    assert book.quantity == 0
    assert abs(book.realized_pnl - (sells - buys)) <= n * D("0.00000001")
    assert book.fees_paid == fees  # fees are kept apart, exactly
    assert book.trades_closed == len(trades)
    assert sum((t.gross_pnl for t in trades), D(0)) == book.realized_pnl
    assert sum((t.fees for t in trades), D(0)) == fees


@given(st.lists(st.tuples(st.decimals(min_value=D("0.01"), max_value=D(10), places=2),
                          st.integers(min_value=1, max_value=100000),
                          st.integers(min_value=1, max_value=100000)),
                min_size=1, max_size=20))
def test_single_entry_round_trips_are_exact(legs: list[tuple[Decimal, int, int]]) -> None:
    """One entry and one exit per trade: no average is rounded, so PnL is exact to the cent."""
    book = PositionBook()
    expected = D(0)
    for qty, entry, exit_ in legs:
        book.apply_fill(BUY, qty, D(entry), D(0), 1)
        book.apply_fill(SELL, qty, D(exit_), D(0), 2)
        expected += qty * (exit_ - entry)
    assert book.realized_pnl == expected
    assert book.trades_closed == len(legs)
